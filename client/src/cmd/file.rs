//! `ctl file push|pull|delete|edit`: files in a running instance, over
//! `/1.0/instances/{name}/files` (the Incus file API).
//!
//! Content streams both ways: a push sends a local file chunk by chunk as the connection
//! takes it, a pull writes each chunk as it arrives, so no file is ever held whole in memory.
//! Instance paths are written `NAME/PATH` (`c1/etc/hosts`). As with `cp`, a target that is an
//! existing directory, ends in `/` or receives several sources gets each source under its own
//! name. `-r` walks directories (symlinks are copied as symlinks), `-p` creates missing
//! parent directories first.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use tokio::io::AsyncWriteExt;

use super::{Error, collect};
use crate::Client;
use crate::client::{encode_segment, envelope_of, reader_body};

/// `ctl file` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum FileCommand {
    /// Push local files into an instance: LOCAL... NAME/PATH ("-" reads stdin)
    Push(PushArgs),
    /// Pull files out of an instance: NAME/PATH... LOCAL ("-" writes to stdout)
    Pull(PullArgs),
    /// Delete files, symlinks or empty directories in an instance
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Edit a file in an instance in $VISUAL/$EDITOR (from stdin when it is not a terminal)
    Edit(EditArgs),
}

/// Arguments of `ctl file push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Local files or directories, then the target NAME/PATH
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<String>,
    /// Push directories and everything in them
    #[arg(short, long)]
    pub recursive: bool,
    /// Create missing parent directories in the instance
    #[arg(short = 'p', long)]
    pub create_dirs: bool,
    /// Owner of what is pushed (default: root for new files; existing ones keep theirs)
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Group of what is pushed (default: root for new files; existing ones keep theirs)
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Permissions, in octal (default: the local file's for new files; with -r only the
    /// top directory gets it)
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<u32>,
}

/// Arguments of `ctl file pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Instance paths NAME/PATH, then the local target
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    pub paths: Vec<String>,
    /// Pull directories and everything in them
    #[arg(short, long)]
    pub recursive: bool,
    /// Create missing local parent directories
    #[arg(short = 'p', long)]
    pub create_dirs: bool,
}

/// Arguments of `ctl file delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Instance paths NAME/PATH
    #[arg(required = true, value_name = "NAME/PATH")]
    pub paths: Vec<String>,
}

/// Arguments of `ctl file edit`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// The instance path NAME/PATH
    #[arg(value_name = "NAME/PATH")]
    pub target: String,
}

/// Run a `ctl file` subcommand; `out` receives what `pull ... -` prints.
pub async fn run(
    client: &Client,
    command: &FileCommand,
    stdin_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        FileCommand::Push(args) => push(client, args).await,
        FileCommand::Pull(args) => pull(client, args, out).await,
        FileCommand::Delete(args) => delete(client, args).await,
        FileCommand::Edit(args) => edit(client, args, stdin_is_terminal).await,
    }
}

/// Parse an octal mode (`0644`, `644`, `0o644`; at most `07777`).
pub fn parse_mode(arg: &str) -> Result<u32, String> {
    let digits = arg.strip_prefix("0o").unwrap_or(arg);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("expected an octal mode such as 0644, got {arg:?}"));
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("expected an octal mode of at most 07777, got {arg:?}"))
}

/// An instance path: `c1/etc/hosts` is instance `c1`, path `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub path: String,
}

/// Split `NAME/PATH`; the path keeps a trailing `/` (it says "a directory").
pub fn parse_target(arg: &str) -> Result<Target, Error> {
    match arg.split_once('/') {
        Some((name, path)) if !name.is_empty() => Ok(Target {
            name: name.to_string(),
            path: format!("/{path}"),
        }),
        _ => Err(Error::Usage(format!(
            "expected an instance path NAME/PATH, got {arg:?}"
        ))),
    }
}

/// `dir/name` for instance paths.
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The last component of an instance path (empty for `/`).
fn remote_name(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// The name a local path is pushed under (`.` and `..` by their real names).
fn local_name(path: &Path) -> Result<String, Error> {
    let real;
    let named = match path.file_name() {
        Some(n) => n,
        None => {
            real = path.canonicalize().map_err(local_err(path))?;
            real.file_name().unwrap_or_default()
        }
    };
    Ok(named.to_string_lossy().into_owned())
}

fn local_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::LocalFile {
        path: path.to_path_buf(),
        source,
    }
}

// ----- the wire -----

fn files_uri(name: &str, path: &str) -> String {
    format!(
        "/1.0/instances/{}/files?path={}",
        encode_segment(name),
        encode_segment(path)
    )
}

/// What `X-Incus-*` says about an entry in the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// `file`, `directory` or `symlink`.
    pub kind: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl RemoteEntry {
    /// Read the `X-Incus-*` headers (or the `X-LXD-*` ones).
    pub fn from_headers(headers: &hyper::HeaderMap) -> Result<RemoteEntry, crate::Error> {
        let get = |field: &str| {
            ["X-Incus-", "X-LXD-"]
                .iter()
                .find_map(|p| headers.get(format!("{p}{field}")))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let bad = |field: &str| {
            crate::Error::Protocol(format!("bad X-Incus-{field} header {:?}", get(field)))
        };
        Ok(RemoteEntry {
            kind: match get("type") {
                "" => return Err(bad("type")),
                kind => kind.to_string(),
            },
            uid: get("uid").parse().map_err(|_| bad("uid"))?,
            gid: get("gid").parse().map_err(|_| bad("gid"))?,
            mode: parse_mode(get("mode")).map_err(|_| bad("mode"))?,
        })
    }
}

/// The answer if it is a success, else its error.
async fn success(
    answer: hyper::Response<Incoming>,
) -> Result<hyper::Response<Incoming>, crate::Error> {
    if answer.status().is_success() {
        return Ok(answer);
    }
    let status = answer.status();
    Err(envelope_of(answer)
        .await
        .err()
        .unwrap_or(crate::Error::Api {
            code: status.as_u16(),
            message: status.canonical_reason().unwrap_or("request failed").into(),
        }))
}

fn request<B>(
    method: Method,
    uri: &str,
    headers: &[(String, String)],
    body: B,
) -> Result<Request<B>, crate::Error> {
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    for (k, v) in headers {
        builder = builder.header(k, v);
    }
    builder
        .body(body)
        .map_err(|e| crate::Error::Protocol(format!("invalid request {method} {uri}: {e}")))
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// `HEAD`: what is at `path`, or `None` if nothing is.
async fn stat(
    client: &Client,
    name: &str,
    path: &str,
) -> Result<Option<RemoteEntry>, crate::Error> {
    let answer = client
        .send(request(Method::HEAD, &files_uri(name, path), &[], empty())?)
        .await?;
    if answer.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !answer.status().is_success() {
        // An answer to HEAD has no body to say why: ask again with GET for the message.
        let status = answer.status();
        let again = client
            .send(request(Method::GET, &files_uri(name, path), &[], empty())?)
            .await?;
        success(again).await?;
        return Err(crate::Error::Api {
            code: status.as_u16(),
            message: status.canonical_reason().unwrap_or("request failed").into(),
        });
    }
    RemoteEntry::from_headers(answer.headers()).map(Some)
}

/// `GET`: what is at `path`, and the answer whose body is its content.
async fn fetch(
    client: &Client,
    name: &str,
    path: &str,
) -> Result<(RemoteEntry, hyper::Response<Incoming>), crate::Error> {
    let answer = client
        .send(request(Method::GET, &files_uri(name, path), &[], empty())?)
        .await?;
    let answer = success(answer).await?;
    Ok((RemoteEntry::from_headers(answer.headers())?, answer))
}

/// `POST` `body` to `path` with `headers`.
async fn upload<B>(
    client: &Client,
    name: &str,
    path: &str,
    headers: &[(String, String)],
    body: B,
) -> Result<(), crate::Error>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answer = client
        .send(request(
            Method::POST,
            &files_uri(name, path),
            headers,
            body,
        )?)
        .await?;
    envelope_of(answer).await.map(drop)
}

/// Owner and mode asked for on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

/// The headers of a push: `given` (flags) applies to new and existing entries (it is listed
/// in `X-Incus-modify-perm`), `default_mode` (the local file's) only to new ones.
pub fn push_headers(kind: &str, given: Owner, default_mode: Option<u32>) -> Vec<(String, String)> {
    let mut h = vec![("X-Incus-type".to_string(), kind.to_string())];
    let mut modify = Vec::new();
    if let Some(uid) = given.uid {
        h.push(("X-Incus-uid".into(), uid.to_string()));
        modify.push("uid");
    }
    if let Some(gid) = given.gid {
        h.push(("X-Incus-gid".into(), gid.to_string()));
        modify.push("gid");
    }
    if given.mode.is_some() {
        modify.push("mode");
    }
    if let Some(mode) = given.mode.or(default_mode) {
        h.push(("X-Incus-mode".into(), format!("{mode:04o}")));
    }
    if !modify.is_empty() {
        h.push(("X-Incus-modify-perm".into(), modify.join(",")));
    }
    h
}

/// Stream the answer's body into `out` chunk by chunk.
async fn copy_body<W: tokio::io::AsyncWrite + Unpin>(
    answer: hyper::Response<Incoming>,
    out: &mut W,
) -> Result<(), Error> {
    let mut body = answer.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| crate::Error::Http {
            method: "GET".into(),
            path: "(file content)".into(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .await
                .map_err(|source| crate::Error::Io {
                    what: "cannot write the pulled file",
                    source,
                })?;
        }
    }
    out.flush().await.map_err(|source| crate::Error::Io {
        what: "cannot write the pulled file",
        source,
    })?;
    Ok(())
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

// ----- push -----

async fn push(client: &Client, args: &PushArgs) -> Result<(), Error> {
    let Some((target, sources)) = args.paths.split_last() else {
        return Err(Error::Usage("nothing to push".into()));
    };
    let t = parse_target(target)?;
    let given = Owner {
        uid: args.uid,
        gid: args.gid,
        mode: args.mode,
    };
    let into_dir_syntax = t.path.ends_with('/') || sources.len() > 1;
    if args.create_dirs {
        let last = if into_dir_syntax {
            t.path.as_str()
        } else {
            t.path.rsplit_once('/').map_or("", |(dir, _)| dir)
        };
        make_dirs(client, &t.name, last).await?;
    }
    let into_dir = into_dir_syntax
        || stat(client, &t.name, &t.path)
            .await?
            .is_some_and(|e| e.kind == "directory");
    for source in sources {
        if source == "-" {
            if into_dir {
                return Err(Error::Usage(
                    "standard input needs a target file name, not a directory".into(),
                ));
            }
            let body = reader_body(tokio::io::stdin());
            upload(
                client,
                &t.name,
                &t.path,
                &push_headers("file", given, None),
                body,
            )
            .await?;
            continue;
        }
        let local = Path::new(source);
        let dest = if into_dir {
            join(&t.path, &local_name(local)?)
        } else {
            t.path.clone()
        };
        // Symlinks named on the command line are followed; inside a tree they are copied.
        let md = std::fs::metadata(local).map_err(local_err(local))?;
        if md.is_dir() {
            if !args.recursive {
                return Err(Error::Usage(format!(
                    "{source} is a directory: use -r to push it"
                )));
            }
            push_dir(client, local, &t.name, dest, given).await?;
        } else {
            push_file(client, local, &t.name, &dest, given).await?;
        }
    }
    Ok(())
}

/// Make `path` and every missing directory above it.
async fn make_dirs(client: &Client, name: &str, path: &str) -> Result<(), Error> {
    let mut dir = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        dir = join(&dir, part);
        let headers = push_headers("directory", Owner::default(), None);
        upload(client, name, &dir, &headers, empty()).await?;
    }
    Ok(())
}

async fn push_file(
    client: &Client,
    local: &Path,
    name: &str,
    dest: &str,
    given: Owner,
) -> Result<(), Error> {
    let file = tokio::fs::File::open(local)
        .await
        .map_err(local_err(local))?;
    let md = file.metadata().await.map_err(local_err(local))?;
    let headers = push_headers("file", given, Some(md.permissions().mode() & 0o7777));
    upload(client, name, dest, &headers, reader_body(file)).await?;
    Ok(())
}

/// Push directory `local` as `dest`, then everything in it (children keep their own modes;
/// only the top directory gets `given.mode`).
fn push_dir<'a>(
    client: &'a Client,
    local: &'a Path,
    name: &'a str,
    dest: String,
    given: Owner,
) -> Boxed<'a> {
    Box::pin(async move {
        let md = std::fs::metadata(local).map_err(local_err(local))?;
        let headers = push_headers("directory", given, Some(md.permissions().mode() & 0o7777));
        upload(client, name, &dest, &headers, empty()).await?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(local)
            .map_err(local_err(local))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(local_err(local))?;
        entries.sort();
        let inner = Owner {
            mode: None,
            ..given
        };
        for child in &entries {
            let child_dest = join(&dest, &local_name(child)?);
            let md = std::fs::symlink_metadata(child).map_err(local_err(child))?;
            let kind = md.file_type();
            if kind.is_dir() {
                push_dir(client, child, name, child_dest, inner).await?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(child).map_err(local_err(child))?;
                let body = Full::new(Bytes::from(target.into_os_string().into_encoded_bytes()));
                let headers = push_headers(
                    "symlink",
                    Owner {
                        mode: None,
                        ..inner
                    },
                    None,
                );
                upload(client, name, &child_dest, &headers, body).await?;
            } else if kind.is_file() {
                push_file(client, child, name, &child_dest, inner).await?;
            } else {
                eprintln!(
                    "Skipping {}: not a regular file, directory or symlink",
                    child.display()
                );
            }
        }
        Ok(())
    })
}

// ----- pull -----

async fn pull(client: &Client, args: &PullArgs, out: &mut dyn Write) -> Result<(), Error> {
    let Some((local, sources)) = args.paths.split_last() else {
        return Err(Error::Usage("nothing to pull".into()));
    };
    let targets = sources
        .iter()
        .map(|s| parse_target(s))
        .collect::<Result<Vec<_>, _>>()?;
    if local == "-" {
        if args.recursive {
            return Err(Error::Usage("cannot pull recursively to stdout".into()));
        }
        for t in &targets {
            pull_to_stdout(client, t, out).await?;
        }
        return Ok(());
    }
    let into_dir_syntax = local.ends_with('/') || sources.len() > 1;
    let local = PathBuf::from(local);
    if args.create_dirs {
        let dir = if into_dir_syntax {
            Some(local.as_path())
        } else {
            local.parent().filter(|p| !p.as_os_str().is_empty())
        };
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(local_err(dir))?;
        }
    }
    let into_dir = into_dir_syntax || local.is_dir();
    for t in &targets {
        let dest = if into_dir {
            local.join(remote_name(&t.path))
        } else {
            local.clone()
        };
        pull_entry(client, &t.name, t.path.clone(), dest, args.recursive, false).await?;
    }
    Ok(())
}

async fn pull_to_stdout(client: &Client, t: &Target, out: &mut dyn Write) -> Result<(), Error> {
    let (entry, answer) = fetch(client, &t.name, &t.path).await?;
    if entry.kind != "file" {
        return Err(Error::Usage(format!(
            "{}/{} is a {}: only files can be pulled to stdout",
            t.name,
            t.path.trim_start_matches('/'),
            entry.kind
        )));
    }
    let mut body = answer.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| crate::Error::Http {
            method: "GET".into(),
            path: t.path.clone(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Pull `path` to `dest`: a file with its mode, a symlink as a symlink, a directory (with
/// `recursive`) with everything in it. Modes are applied without setuid, setgid and sticky
/// bits. Inside a tree (`nested`) nothing is written through a local symlink: a symlink or
/// file in the way is replaced, as `tar` does.
fn pull_entry<'a>(
    client: &'a Client,
    name: &'a str,
    path: String,
    dest: PathBuf,
    recursive: bool,
    nested: bool,
) -> Boxed<'a> {
    Box::pin(async move {
        let (entry, answer) = fetch(client, name, &path).await?;
        let in_the_way = std::fs::symlink_metadata(&dest)
            .is_ok_and(|m| m.is_symlink() || (entry.kind != "directory" && !m.is_dir()));
        if nested && in_the_way {
            std::fs::remove_file(&dest).map_err(local_err(&dest))?;
        }
        match entry.kind.as_str() {
            "file" => {
                // In a tree the file is made anew (O_EXCL never follows a symlink).
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(!nested)
                    .create_new(nested)
                    .truncate(!nested)
                    .mode(0o600)
                    .open(&dest)
                    .await
                    .map_err(local_err(&dest))?;
                copy_body(answer, &mut file).await?;
                set_mode(&dest, entry.mode)?;
            }
            "symlink" => {
                let target = answer
                    .into_body()
                    .collect()
                    .await
                    .map_err(|source| crate::Error::Http {
                        method: "GET".into(),
                        path: path.clone(),
                        source,
                    })?
                    .to_bytes();
                if std::fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    std::fs::remove_file(&dest).map_err(local_err(&dest))?;
                }
                let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&target);
                std::os::unix::fs::symlink(target, &dest).map_err(local_err(&dest))?;
            }
            "directory" => {
                if !recursive {
                    return Err(Error::Usage(format!(
                        "{name}{path} is a directory: use -r to pull it"
                    )));
                }
                let names: Vec<String> = serde_json::from_value(
                    envelope_of(answer).await?.metadata,
                )
                .map_err(|source| crate::Error::Decode {
                    what: format!("listing of {path}"),
                    source,
                })?;
                match std::fs::create_dir(&dest) {
                    Ok(()) => set_mode(&dest, entry.mode)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    Err(e) => return Err(local_err(&dest)(e)),
                }
                for child in names {
                    if !is_plain_name(&child) {
                        return Err(crate::Error::Protocol(format!(
                            "{path} lists the entry {child:?}"
                        ))
                        .into());
                    }
                    let child_path = join(&path, &child);
                    pull_entry(client, name, child_path, dest.join(&child), true, true).await?;
                }
            }
            other => {
                return Err(
                    crate::Error::Protocol(format!("{path} has unknown type {other:?}")).into(),
                );
            }
        }
        Ok(())
    })
}

/// A directory entry name that stays in its directory: not empty, `.`, `..`, nor with `/`.
fn is_plain_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains('/'))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(local_err(path))
}

// ----- delete and edit -----

async fn delete(client: &Client, args: &DeleteArgs) -> Result<(), Error> {
    let mut failures = Vec::new();
    for arg in &args.paths {
        let t = parse_target(arg)?;
        let result = async {
            let request = request(Method::DELETE, &files_uri(&t.name, &t.path), &[], empty())?;
            envelope_of(client.send(request).await?).await.map(drop)
        }
        .await;
        if let Err(e) = result {
            failures.push((arg.clone(), e));
        }
    }
    collect(args.paths.len(), failures)
}

async fn edit(client: &Client, args: &EditArgs, stdin_is_terminal: bool) -> Result<(), Error> {
    let t = parse_target(&args.target)?;
    let headers = push_headers("file", Owner::default(), None);
    if !stdin_is_terminal {
        let body = reader_body(tokio::io::stdin());
        return Ok(upload(client, &t.name, &t.path, &headers, body).await?);
    }
    let suffix = Path::new(&t.path)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix("ctl_file_edit_")
        .suffix(&suffix)
        .tempfile()
        .map_err(|source| crate::Error::Io {
            what: "cannot create a temp file for the editor",
            source,
        })?;
    match fetch(client, &t.name, &t.path).await {
        Ok((entry, answer)) if entry.kind == "file" => {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(temp.path())
                .await
                .map_err(local_err(temp.path()))?;
            copy_body(answer, &mut file).await?;
        }
        Ok((entry, _)) => {
            return Err(Error::Usage(format!(
                "{} is a {}: only files can be edited",
                args.target, entry.kind
            )));
        }
        // A new file starts empty.
        Err(crate::Error::Api { code: 404, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let editor =
        super::config::edit::editor_command(std::env::var_os("VISUAL"), std::env::var_os("EDITOR"));
    let shown = editor.join(" ");
    let Some((program, editor_args)) = editor.split_first() else {
        return Err(Error::Usage("no editor to run".into()));
    };
    let status = std::process::Command::new(program)
        .args(editor_args)
        .arg(temp.path())
        .status()
        .map_err(|source| Error::Editor {
            editor: shown.clone(),
            source,
        })?;
    if !status.success() {
        return Err(Error::EditorFailed {
            editor: shown,
            status,
        });
    }
    let file = tokio::fs::File::open(temp.path())
        .await
        .map_err(local_err(temp.path()))?;
    upload(client, &t.name, &t.path, &headers, reader_body(file)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Option<FileCommand> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()));
        match cli.ok()?.command {
            crate::cli::Command::File { command } => Some(command),
            _ => None,
        }
    }

    #[test]
    fn command_lines_parse() {
        let Some(FileCommand::Push(a)) = parse(&[
            "file", "push", "-r", "-p", "--uid", "1000", "--mode", "0600", "a", "b", "c1/tmp/",
        ]) else {
            panic!("push did not parse");
        };
        assert_eq!(a.paths, ["a", "b", "c1/tmp/"]);
        assert!(a.recursive && a.create_dirs);
        assert_eq!((a.uid, a.gid, a.mode), (Some(1000), None, Some(0o600)));
        let Some(FileCommand::Pull(a)) = parse(&["file", "pull", "c1/etc/hosts", "-"]) else {
            panic!("pull did not parse");
        };
        assert_eq!(
            (a.paths.len(), a.recursive, a.create_dirs),
            (2, false, false)
        );
        assert!(matches!(
            parse(&["file", "rm", "c1/a", "c1/b"]),
            Some(FileCommand::Delete(DeleteArgs { paths })) if paths.len() == 2
        ));
        assert!(matches!(
            parse(&["file", "edit", "c1/etc/motd"]),
            Some(FileCommand::Edit(EditArgs { target })) if target == "c1/etc/motd"
        ));
        assert!(parse(&["file", "push", "c1/x"]).is_none());
        assert!(parse(&["file", "pull", "c1/x"]).is_none());
        assert!(parse(&["file", "push", "--mode", "999", "a", "c1/x"]).is_none());
        assert!(parse(&["file", "edit"]).is_none());
    }

    #[test]
    fn targets_split_at_the_first_slash() {
        let t = |s: &str| parse_target(s).ok().map(|t| (t.name, t.path));
        assert_eq!(t("c1/etc/hosts"), Some(("c1".into(), "/etc/hosts".into())));
        assert_eq!(t("c1/tmp/"), Some(("c1".into(), "/tmp/".into())));
        assert_eq!(t("c1/"), Some(("c1".into(), "/".into())));
        assert_eq!(t("c1//x"), Some(("c1".into(), "//x".into())));
        assert!(t("c1").is_none());
        assert!(t("/etc/hosts").is_none());
        assert!(t("").is_none());
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        for bad in ["", "8", "0x1ff", "rwx", "17777", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_join_and_name() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/tmp/", "a"), "/tmp/a");
        assert_eq!(join("", "a"), "/a");
        assert_eq!(remote_name("/etc/hosts"), "hosts");
        assert_eq!(remote_name("/etc/"), "etc");
        assert_eq!(remote_name("/"), "");
        assert_eq!(
            local_name(Path::new("/x/y.txt")).ok().as_deref(),
            Some("y.txt")
        );
        assert_eq!(
            files_uri("c1", "/etc/a b"),
            "/1.0/instances/c1/files?path=%2Fetc%2Fa%20b"
        );
    }

    #[test]
    fn listed_names_must_stay_in_their_directory() {
        for ok in ["a", ".hidden", "..x", "a b"] {
            assert!(is_plain_name(ok), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "/", "../x"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn push_headers_say_what_changes_existing_files() {
        let h = push_headers("file", Owner::default(), Some(0o755));
        assert_eq!(
            h,
            vec![
                ("X-Incus-type".to_string(), "file".to_string()),
                ("X-Incus-mode".to_string(), "0755".to_string()),
            ]
        );
        let h = push_headers(
            "file",
            Owner {
                uid: Some(1000),
                gid: None,
                mode: Some(0o600),
            },
            Some(0o755),
        );
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Incus-uid"), Some("1000"));
        assert_eq!(get("X-Incus-gid"), None);
        assert_eq!(get("X-Incus-mode"), Some("0600"));
        assert_eq!(get("X-Incus-modify-perm"), Some("uid,mode"));
        let h = push_headers("directory", Owner::default(), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn entries_are_read_from_either_header_family() {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in [
            ("X-LXD-type", "file"),
            ("X-LXD-uid", "0"),
            ("X-LXD-gid", "5"),
            ("X-LXD-mode", "0644"),
        ] {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::try_from(k),
                hyper::header::HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        assert_eq!(
            RemoteEntry::from_headers(&h).ok(),
            Some(RemoteEntry {
                kind: "file".into(),
                uid: 0,
                gid: 5,
                mode: 0o644
            })
        );
        h.remove("X-LXD-type");
        assert!(RemoteEntry::from_headers(&h).is_err());
    }
}
