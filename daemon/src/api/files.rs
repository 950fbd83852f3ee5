//! `GET|POST|DELETE /1.0/instances/{name}/files?path=/abs/path`, the Incus file API.
//!
//! GET answers a regular file as its raw bytes (streamed), a directory as a sync envelope
//! listing its entry names, a symlink as its target; `X-Incus-uid`, `-gid`, `-mode` (octal,
//! `0644`) and `-type` (`file`, `directory`, `symlink`) describe it, each also sent as
//! `X-LXD-*`. POST writes the body (streamed to disk) as a file, or makes a directory or a
//! symlink (the body is its target), as `X-Incus-type` says; `X-Incus-uid`, `-gid`, `-mode`
//! apply when the entry is created, and to an existing one only for the fields listed in
//! `X-Incus-modify-perm` (`uid,gid,mode`); `X-Incus-write: append` appends. DELETE removes a
//! file, a symlink or an empty directory. The instance must be running.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState, sync};
use crate::worker::files::{
    self, FileContent, FileInfo, FileKind, MAX_LINK_TARGET, Perms, WriteOptions,
};

/// The header prefixes read (first wins) and written (both).
const PREFIXES: [&str; 2] = ["X-Incus-", "X-LXD-"];

/// What the headers of a POST ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeaders {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub kind: FileKind,
    pub append: bool,
    /// Which of uid, gid and mode also change an entry that exists.
    pub modify: [bool; 3],
}

impl FileHeaders {
    /// Read `X-Incus-*` (or `X-LXD-*`) `uid`, `gid`, `mode`, `type`, `write` and
    /// `modify-perm`. Absent (or `-1`) ids and mode are `None`; anything unparsable is a 400.
    pub fn parse(headers: &HeaderMap) -> Result<FileHeaders, ApiError> {
        let kind = match value(headers, "type")? {
            None | Some("file") => FileKind::File,
            Some("directory") => FileKind::Directory,
            Some("symlink") => FileKind::Symlink,
            Some(other) => return Err(bad("type", other, "use file, directory or symlink")),
        };
        let append = match value(headers, "write")? {
            None | Some("overwrite") => false,
            Some("append") => true,
            Some(other) => return Err(bad("write", other, "use overwrite or append")),
        };
        let mut modify = [false; 3];
        for field in value(headers, "modify-perm")?
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            match field {
                "uid" => modify[0] = true,
                "gid" => modify[1] = true,
                "mode" => modify[2] = true,
                other => return Err(bad("modify-perm", other, "use uid, gid and mode")),
            }
        }
        Ok(FileHeaders {
            uid: value(headers, "uid")?
                .map(|v| parse_id("uid", v))
                .transpose()?
                .flatten(),
            gid: value(headers, "gid")?
                .map(|v| parse_id("gid", v))
                .transpose()?
                .flatten(),
            mode: value(headers, "mode")?
                .map(parse_mode)
                .transpose()?
                .flatten(),
            kind,
            append,
            modify,
        })
    }

    /// The write options: everything given applies to a new entry, the `modify-perm` fields
    /// to an existing one.
    pub fn write_options(&self) -> WriteOptions {
        let pick = |on: bool, v: Option<u32>| v.filter(|_| on);
        WriteOptions {
            create: Perms {
                uid: self.uid,
                gid: self.gid,
                mode: self.mode,
            },
            existing: Perms {
                uid: pick(self.modify[0], self.uid),
                gid: pick(self.modify[1], self.gid),
                mode: pick(self.modify[2], self.mode),
            },
            append: self.append,
        }
    }
}

fn bad(field: &str, got: &str, hint: &str) -> ApiError {
    ApiError::BadRequest(format!("invalid X-Incus-{field} \"{got}\": {hint}"))
}

/// The value of `X-Incus-<field>`, else `X-LXD-<field>`; empty counts as absent.
fn value<'a>(headers: &'a HeaderMap, field: &str) -> Result<Option<&'a str>, ApiError> {
    for prefix in PREFIXES {
        if let Some(v) = headers.get(format!("{prefix}{field}")) {
            let v = v
                .to_str()
                .map_err(|_| bad(field, "(not ASCII)", "header values are ASCII"))?
                .trim();
            if !v.is_empty() {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

/// A uid or gid; `-1` means "not given", as Incus clients send it.
pub fn parse_id(field: &str, v: &str) -> Result<Option<u32>, ApiError> {
    if v == "-1" {
        return Ok(None);
    }
    v.parse::<u32>()
        .ok()
        .filter(|id| *id != u32::MAX)
        .map(Some)
        .ok_or_else(|| bad(field, v, "expected a number"))
}

/// A mode in octal (`0644`, `644`, `0o644`, at most `07777`); `-1` means "not given".
pub fn parse_mode(v: &str) -> Result<Option<u32>, ApiError> {
    if v == "-1" {
        return Ok(None);
    }
    let digits = v.strip_prefix("0o").unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad("mode", v, "expected an octal mode such as 0644"));
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .map(Some)
        .ok_or_else(|| bad("mode", v, "expected an octal mode such as 0644"))
}

/// The `path` query parameter, made absolute as Incus does.
fn path_param(q: &HashMap<String, String>) -> Result<String, ApiError> {
    match q.get("path").map(String::as_str) {
        None | Some("") => Err(ApiError::BadRequest("missing path argument".into())),
        Some(p) if p.starts_with('/') => Ok(p.to_string()),
        Some(p) => Ok(format!("/{p}")),
    }
}

/// `X-Incus-*` and `X-LXD-*` describing `info`.
fn describe(resp: &mut Response, info: &FileInfo) {
    let fields = [
        ("uid", info.uid.to_string()),
        ("gid", info.gid.to_string()),
        ("mode", format!("{:04o}", info.mode)),
        ("type", info.kind.as_str().to_string()),
    ];
    for prefix in PREFIXES {
        for (field, v) in &fields {
            if let (Ok(name), Ok(v)) = (
                HeaderName::try_from(format!("{prefix}{field}")),
                HeaderValue::from_str(v),
            ) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
}

fn octet_stream(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// `GET /1.0/instances/{name}/files?path=`.
pub async fn get_file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    let (info, content) = state.instances.file_read(&name, &path).await?;
    let mut resp = match content {
        FileContent::File(file) => octet_stream(Body::from_stream(files::read_stream(file))),
        FileContent::Symlink(target) => octet_stream(Body::from(target)),
        FileContent::Directory(names) => sync(names),
    };
    describe(&mut resp, &info);
    Ok(resp)
}

/// `POST /1.0/instances/{name}/files?path=`: the body is streamed into the file.
pub async fn post_file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    let want = FileHeaders::parse(&headers)?;
    let opts = want.write_options();
    let instances = &state.instances;
    match want.kind {
        FileKind::File => {
            instances
                .file_write(&name, &path, opts, body.into_data_stream())
                .await?;
        }
        FileKind::Directory => instances.file_mkdir(&name, &path, opts).await?,
        FileKind::Symlink => {
            let target = axum::body::to_bytes(body, MAX_LINK_TARGET + 1)
                .await
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "a symlink target must be at most {MAX_LINK_TARGET} bytes"
                    ))
                })?;
            instances
                .file_symlink(&name, &path, target.to_vec(), opts.create)
                .await?;
        }
    }
    Ok(sync(json!({})))
}

/// `DELETE /1.0/instances/{name}/files?path=`.
pub async fn delete_file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = path_param(&q)?;
    state.instances.file_delete(&name, &path).await?;
    Ok(sync(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
                h.insert(k, v);
            }
        }
        h
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<FileHeaders, ApiError> {
        FileHeaders::parse(&headers(pairs))
    }

    #[test]
    fn modes_are_octal() {
        let cases: &[(&str, Option<Option<u32>>)] = &[
            ("0644", Some(Some(0o644))),
            ("644", Some(Some(0o644))),
            ("0o755", Some(Some(0o755))),
            ("04755", Some(Some(0o4755))),
            ("07777", Some(Some(0o7777))),
            ("0", Some(Some(0))),
            ("-1", Some(None)),
            ("10000", None),
            ("0648", None),
            ("rw-r--r--", None),
            ("0x1a4", None),
            ("", None),
            ("+644", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_mode(input).ok(), *want, "{input:?}");
        }
    }

    #[test]
    fn ids_are_numbers_or_minus_one() {
        assert_eq!(parse_id("uid", "0").ok(), Some(Some(0)));
        assert_eq!(parse_id("uid", "1000").ok(), Some(Some(1000)));
        assert_eq!(parse_id("uid", "-1").ok(), Some(None));
        for bad in ["-2", "x", "1.5", "4294967295", "4294967296", " 1"] {
            assert!(parse_id("uid", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers_default_to_an_overwritten_file() {
        let h = parse(&[]).ok();
        assert_eq!(
            h,
            Some(FileHeaders {
                uid: None,
                gid: None,
                mode: None,
                kind: FileKind::File,
                append: false,
                modify: [false; 3],
            })
        );
        assert_eq!(h.map(|h| h.write_options()), Some(WriteOptions::default()));
    }

    #[test]
    fn incus_and_lxd_headers_are_read() {
        let h = parse(&[
            ("X-Incus-uid", "1000"),
            ("X-Incus-gid", "100"),
            ("X-Incus-mode", "0600"),
            ("X-Incus-type", "directory"),
            ("X-Incus-write", "append"),
        ])
        .ok();
        assert_eq!(
            h.map(|h| (h.uid, h.gid, h.mode, h.kind, h.append)),
            Some((
                Some(1000),
                Some(100),
                Some(0o600),
                FileKind::Directory,
                true
            ))
        );
        let h = parse(&[
            ("x-lxd-uid", "5"),
            ("X-LXD-mode", "755"),
            ("X-LXD-type", "symlink"),
        ])
        .ok();
        assert_eq!(
            h.map(|h| (h.uid, h.gid, h.mode, h.kind)),
            Some((Some(5), None, Some(0o755), FileKind::Symlink))
        );
        // Incus wins over LXD; -1 is "not given".
        let h = parse(&[
            ("X-Incus-uid", "-1"),
            ("X-LXD-uid", "7"),
            ("X-Incus-gid", "-1"),
        ])
        .ok();
        assert_eq!(h.map(|h| (h.uid, h.gid)), Some((None, None)));
    }

    #[test]
    fn bad_headers_are_refused() {
        for pairs in [
            [("X-Incus-type", "fifo")],
            [("X-Incus-write", "truncate")],
            [("X-Incus-mode", "999")],
            [("X-Incus-uid", "root")],
            [("X-LXD-gid", "-5")],
            [("X-Incus-modify-perm", "uid,size")],
        ] {
            let res = parse(&pairs);
            assert!(
                matches!(res, Err(ApiError::BadRequest(_))),
                "{pairs:?}: {res:?}"
            );
        }
    }

    #[test]
    fn modify_perm_selects_what_changes_on_existing_entries() {
        let h = parse(&[
            ("X-Incus-uid", "1"),
            ("X-Incus-gid", "2"),
            ("X-Incus-mode", "0700"),
            ("X-Incus-modify-perm", "mode, uid"),
        ]);
        let Ok(h) = h else {
            panic!("refused");
        };
        let opts = h.write_options();
        assert_eq!(
            opts.create,
            Perms {
                uid: Some(1),
                gid: Some(2),
                mode: Some(0o700)
            }
        );
        assert_eq!(
            opts.existing,
            Perms {
                uid: Some(1),
                gid: None,
                mode: Some(0o700)
            }
        );
        assert!(!opts.append);
    }

    #[test]
    fn path_is_required_and_made_absolute() {
        let q = |p: Option<&str>| {
            p.map(|p| HashMap::from([("path".to_string(), p.to_string())]))
                .unwrap_or_default()
        };
        assert!(path_param(&q(None)).is_err());
        assert!(path_param(&q(Some(""))).is_err());
        assert_eq!(
            path_param(&q(Some("etc/x"))).ok().as_deref(),
            Some("/etc/x")
        );
        assert_eq!(
            path_param(&q(Some("/etc/x"))).ok().as_deref(),
            Some("/etc/x")
        );
    }

    #[test]
    fn answers_describe_the_entry_both_ways() {
        let mut resp = sync(json!([]));
        describe(
            &mut resp,
            &FileInfo {
                kind: FileKind::File,
                uid: 1000,
                gid: 50,
                mode: 0o4755,
            },
        );
        let h = resp.headers();
        for prefix in PREFIXES {
            let get = |f: &str| {
                h.get(format!("{prefix}{f}"))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            assert_eq!(get("uid").as_deref(), Some("1000"));
            assert_eq!(get("gid").as_deref(), Some("50"));
            assert_eq!(get("mode").as_deref(), Some("4755"));
            assert_eq!(get("type").as_deref(), Some("file"));
        }
        let mut resp = sync(json!([]));
        describe(
            &mut resp,
            &FileInfo {
                kind: FileKind::Directory,
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
        );
        assert_eq!(
            resp.headers()
                .get("X-Incus-mode")
                .and_then(|v| v.to_str().ok()),
            Some("0755")
        );
    }
}
