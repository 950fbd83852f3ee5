//! `/ui/`: the web dashboard's static files. By default they are the build in `ui/dist`,
//! embedded in the binary at compile time; `CTL_UI=/dir` (`--ui-dir`) serves another build
//! from a directory instead, as Incus' `INCUS_UI` does. A path that names no file gets
//! `index.html` (the app routes in the browser). `GET /ui/login` and `POST /ui/logout` are
//! the session's, not this module's.
//!
//! Nothing outside the build is ever served: a request path with a `..`, `.`, empty or
//! backslash component, a NUL or a leading dot is refused before any lookup, and a
//! directory build is read through `worker::beneath`, where the kernel keeps the resolution
//! (symlinks included) beneath the directory.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;

/// Hashed file names live here; their content never changes under a name.
const IMMUTABLE_DIR: &str = "assets/";
const INDEX: &str = "index.html";

#[derive(rust_embed::Embed)]
#[folder = "../ui/dist"]
struct Embedded;

/// Where the UI's files come from.
#[derive(Clone, Debug, Default)]
pub struct UiAssets {
    /// `None`: the build embedded in the binary.
    dir: Option<Arc<PathBuf>>,
}

impl UiAssets {
    /// Serve the build in `dir` (`CTL_UI`) instead of the embedded one.
    pub fn from_dir(dir: PathBuf) -> UiAssets {
        UiAssets {
            dir: Some(Arc::new(dir)),
        }
    }

    /// The file at `rel` (checked by [`clean_path`]): `Ok(None)` when there is none.
    async fn load(&self, rel: &str) -> Result<Option<Cow<'static, [u8]>>, std::io::Error> {
        let Some(dir) = &self.dir else {
            return Ok(Embedded::get(rel).map(|f| f.data));
        };
        let (dir, rel) = (dir.clone(), rel.to_string());
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            match crate::worker::beneath::open_regular(&dir, &rel) {
                Ok(mut file) => {
                    let mut data = Vec::new();
                    file.read_to_end(&mut data)?;
                    Ok(Some(Cow::Owned(data)))
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | crate::worker::beneath::NOT_A_FILE)
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// A request path made safe to look up: `None` when any component is empty, `.`, `..`,
/// starts with a dot, or holds a backslash or a NUL (no build has such files; a browser
/// never asks for them).
pub fn clean_path(path: &str) -> Option<&str> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Some("");
    }
    path.split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.contains(['\\', '\0']))
        .then_some(path)
}

/// The `Content-Type` of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /ui`: the app lives at `/ui/` (its relative asset URLs need the slash).
pub async fn redirect(uri: Uri) -> Redirect {
    match uri.query() {
        Some(q) => Redirect::permanent(&format!("/ui/?{q}")),
        None => Redirect::permanent("/ui/"),
    }
}

/// `GET /ui/`: the app.
pub async fn index(State(state): State<AppState>) -> Response {
    serve(&state.ui, "").await
}

/// `GET /ui/{*path}`: a file of the build, else the app.
pub async fn asset(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    serve(&state.ui, &path).await
}

async fn serve(assets: &UiAssets, path: &str) -> Response {
    let Some(rel) = clean_path(path) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let found = if rel.is_empty() {
        Ok(None)
    } else {
        assets.load(rel).await
    };
    let (name, data) = match found {
        Ok(Some(data)) => (rel, data),
        Ok(None) => match assets.load(INDEX).await {
            Ok(Some(data)) => (INDEX, data),
            Ok(None) => {
                return plain(StatusCode::NOT_FOUND, "the web UI is not built");
            }
            Err(e) => return failed(&e),
        },
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::ELOOP)) => {
            tracing::warn!(path = rel, error = %e, "UI path leaves the UI directory");
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        Err(e) => return failed(&e),
    };
    let cache = if name.starts_with(IMMUTABLE_DIR) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut headers = security_headers();
    if assets.dir.is_some() {
        // Another build (an LXD/Incus UI): its own inline scripts by hash, the styles and
        // workers such UIs make at run time. The embedded build keeps the strict policy.
        let index = match name {
            INDEX => Some(data.clone()),
            _ => assets.load(INDEX).await.ok().flatten(),
        };
        let policy = foreign_policy(&String::from_utf8_lossy(index.as_deref().unwrap_or(b"")));
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    (StatusCode::OK, headers, data.into_owned()).into_response()
}

/// The Content-Security-Policy of a build served from `CTL_UI`: scripts from the origin
/// and the inline ones of its `index.html` (by their SHA-256, so nothing injected runs),
/// inline styles and `blob:` workers (what LXD's and Incus' UIs create at run time), no
/// framing, a `<base>` of its own origin only.
pub fn foreign_policy(index_html: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut scripts = String::new();
    let mut rest = index_html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let tag = &after[..open_end];
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") && !body[..close].trim().is_empty() {
            let digest = sha2::Sha256::digest(&body.as_bytes()[..close]);
            let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            scripts.push_str(&format!(" 'sha256-{b64}'"));
        }
        rest = &body[close..];
    }
    format!(
        "default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; \
         worker-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'; \
         base-uri 'self'; form-action 'self'"
    )
}

fn failed(e: &std::io::Error) -> Response {
    tracing::error!(error = %e, "reading the web UI");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut headers = security_headers();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (status, headers, text).into_response()
}

/// The security headers ([`super::auth::security_headers`]: CSP `default-src 'self'`
/// without inline code, no framing, `nosniff`, no referrer). The authentication middleware
/// adds them too; the UI carries them on any listener.
fn security_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    super::auth::security_headers(&mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_build_may_run_its_own_inline_scripts_only() {
        let html = "<html><head><script>const global = globalThis;</script>\
                    <script type=\"module\" src=\"/ui/assets/a.js\"></script>\
                    <script>\n  load();\n</script></head></html>";
        let p = foreign_policy(html);
        // The browser's hash of the script's text, exactly as written between the tags.
        assert!(
            p.contains("'sha256-ivKZt7n1dtDruu0A4NKNpVoGWL9M8TE1yoPuekUvxFU='"),
            "{p}"
        );
        assert_eq!(p.matches("'sha256-").count(), 2, "{p}");
        assert!(
            p.starts_with("default-src 'self'; script-src 'self' 'sha256-"),
            "{p}"
        );
        assert!(!p.contains("script-src 'self' 'unsafe"), "{p}");
        assert!(p.contains("frame-ancestors 'none'"));
        assert_eq!(
            foreign_policy("<p>no scripts</p>"),
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             worker-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'; \
             base-uri 'self'; form-action 'self'"
        );
    }

    #[test]
    fn paths_that_could_leave_the_build_are_refused() {
        for (path, want) in [
            ("", Some("")),
            ("index.html", Some("index.html")),
            ("assets/app-ABC123.js", Some("assets/app-ABC123.js")),
            ("instances/c1/", Some("instances/c1")),
            ("../etc/passwd", None),
            ("assets/../../x", None),
            ("./index.html", None),
            ("a//b", None),
            (".git/config", None),
            ("assets\\..\\x", None),
            ("a\0b", None),
            ("/etc/passwd", None),
        ] {
            assert_eq!(clean_path(path), want, "{path:?}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("assets/app-X.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("assets/app-X.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn the_embedded_build_has_an_index_that_names_its_assets() {
        let index = Embedded::get(INDEX).map(|f| f.data.into_owned());
        let index = String::from_utf8(index.unwrap_or_default()).unwrap_or_default();
        assert!(index.contains("<html"), "ui/dist/index.html is missing");
        for asset in Embedded::iter().filter(|n| n.starts_with(IMMUTABLE_DIR)) {
            if asset.ends_with(".js") || asset.ends_with(".css") {
                assert!(index.contains(asset.as_ref()), "index.html misses {asset}");
            }
        }
    }
}
