//! Fetching from image servers over HTTP or HTTPS (rustls, the host's CA store): small JSON documents, and image files streamed
//! to disk while hashed, resumed with `Range` after an interruption, and verified.
//!
//! A download goes to `<dest>.part` and becomes `<dest>` only once its size and sha256
//! match what the server's catalog promised; a mismatch removes the partial file. A `.part`
//! left by an interrupted attempt (or a previous daemon) is resumed when the server honours
//! ranges, and restarted from zero when it does not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long connecting, and then each wait for more bytes, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per file (each resuming where the previous one stopped).
const ATTEMPTS: u32 = 4;
const MAX_REDIRECTS: u32 = 5;

/// Fetch errors.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL \"{0}\"")]
    BadUrl(String),
    #[error("{url}: {msg}")]
    Transport { url: String, msg: String },
    #[error("{url}: server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {msg}")]
    Invalid { url: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchError {
    /// Whether the data itself is wrong (checksum, size, format), as opposed to the server
    /// or the network failing.
    pub fn is_bad_data(&self) -> bool {
        matches!(self, FetchError::Invalid { .. })
    }
}

/// Join a server base URL and a path relative to it.
pub fn join(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

fn transport(url: &str, msg: impl std::fmt::Display) -> FetchError {
    FetchError::Transport {
        url: url.to_string(),
        msg: msg.to_string(),
    }
}

/// An answer whose body is still to be read.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: hyper::body::Incoming,
    url: String,
}

/// One GET, following redirects.
async fn get(url: &str, range_from: u64) -> Result<Answer, FetchError> {
    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let uri: Uri = url.parse().map_err(|_| FetchError::BadUrl(url.clone()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {}
            _ => return Err(FetchError::BadUrl(url)),
        }
        let host = uri
            .host()
            .ok_or_else(|| FetchError::BadUrl(url.clone()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| transport(&url, "connection timed out"))?
        .map_err(|e| transport(&url, e))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let mut req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, authority)
            .header(
                header::USER_AGENT,
                concat!("ctld/", env!("CARGO_PKG_VERSION")),
            );
        if range_from > 0 {
            req = req.header(header::RANGE, format!("bytes={range_from}-"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(&url, e))?;
        let resp = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| FetchError::BadUrl(url.clone()))?;
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls_config(&url)?).connect(name, stream),
            )
            .await
            .map_err(|_| transport(&url, "TLS handshake timed out"))?
            .map_err(|e| transport(&url, format!("TLS: {e}")))?;
            send(stream, req, &url).await?
        } else {
            send(stream, req, &url).await?
        };
        if resp.status().is_redirection()
            && let Some(loc) = resp.headers().get(header::LOCATION)
        {
            let loc = loc.to_str().map_err(|_| FetchError::BadUrl(url.clone()))?;
            // Never from https to plain http: the catalog's checksums are what every
            // download is verified against.
            if tls && !loc.starts_with("https://") && loc.contains("://") {
                return Err(transport(
                    &url,
                    format!("refusing a redirect from https to {loc}"),
                ));
            }
            url = if loc.contains("://") {
                loc.to_string()
            } else {
                let scheme = uri.scheme_str().unwrap_or("http");
                let auth = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                join(&format!("{scheme}://{auth}"), loc)
            };
            continue;
        }
        let (parts, body) = resp.into_parts();
        return Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            url,
        });
    }
    Err(transport(&url, "too many redirects"))
}

/// Send one request on a fresh HTTP/1.1 connection over `io`.
async fn send<I>(
    io: I,
    req: Request<Empty<Bytes>>,
    url: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, FetchError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| transport(url, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(READ_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| transport(url, "no answer"))?
        .map_err(|e| transport(url, e))
}

/// The TLS client configuration: the host's trusted CAs (`/etc/ssl/certs`, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), built once.
fn tls_config(url: &str) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no trusted CA certificates found (install ca-certificates)".into());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|msg| transport(url, msg))
}

/// The next chunk of a body, or `None` at its end.
async fn next_chunk(
    body: &mut hyper::body::Incoming,
    url: &str,
) -> Result<Option<Bytes>, FetchError> {
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
            .await
            .map_err(|_| transport(url, "the server stopped sending"))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(transport(url, e)),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// GET `url` and parse it as JSON, refusing bodies over `limit` bytes.
pub async fn json<T: serde::de::DeserializeOwned>(
    url: &str,
    limit: usize,
) -> Result<T, FetchError> {
    let mut a = get(url, 0).await?;
    if a.status != StatusCode::OK {
        return Err(FetchError::Status {
            url: a.url,
            status: a.status.as_u16(),
        });
    }
    let mut buf = Vec::new();
    while let Some(chunk) = next_chunk(&mut a.body, &a.url).await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Err(FetchError::Invalid {
                url: a.url,
                msg: format!("larger than {limit} bytes"),
            });
        }
    }
    serde_json::from_slice(&buf).map_err(|e| FetchError::Invalid {
        url: a.url,
        msg: format!("not valid JSON: {e}"),
    })
}

/// What a file should be.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub sha256: &'a str,
    pub size: u64,
}

/// The partial-download path of `dest`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Download `url` to `dest` (through `dest.part`), calling `progress(done, total)` as bytes
/// arrive; resumes an existing `.part`. Returns the number of bytes fetched over the
/// network (less than the size when resumed). Nothing is left at `dest` unless it matches.
pub async fn download(
    url: &str,
    dest: &Path,
    expected: Expected<'_>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, FetchError> {
    let part = part_path(dest);
    let mut fetched = 0u64;
    let mut last_err = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match attempt_download(url, &part, &expected, &mut progress, &mut fetched).await {
            Ok(()) => {
                let (size, sha) = hash_file(&part).await?;
                if size != expected.size || !sha.eq_ignore_ascii_case(expected.sha256) {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(FetchError::Invalid {
                        url: url.to_string(),
                        msg: format!(
                            "checksum mismatch: got sha256 {sha} ({size} bytes), expected {} ({} bytes)",
                            expected.sha256, expected.size
                        ),
                    });
                }
                tokio::fs::rename(&part, dest).await.map_err(io_at(dest))?;
                return Ok(fetched);
            }
            Err(e @ (FetchError::Invalid { .. } | FetchError::Io { .. })) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
            Err(e @ FetchError::BadUrl(_)) => return Err(e),
            Err(FetchError::Status { status, .. }) if status == 416 => {
                // Our range is past the end of the server's file: restart from zero, and
                // keep the earlier error (a short file) as the one to report.
                let _ = tokio::fs::remove_file(&part).await;
                last_err.get_or_insert(FetchError::Status {
                    url: url.to_string(),
                    status,
                });
            }
            Err(e) => {
                tracing::warn!(url, attempt, error = %e, "download interrupted; will resume");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| transport(url, "download failed")))
}

/// One attempt: resume from the `.part`'s length (or start over), append what arrives.
async fn attempt_download(
    url: &str,
    part: &Path,
    expected: &Expected<'_>,
    progress: &mut impl FnMut(u64, u64),
    fetched: &mut u64,
) -> Result<(), FetchError> {
    let have = match tokio::fs::metadata(part).await {
        Ok(md) if md.len() <= expected.size => md.len(),
        Ok(_) => {
            tokio::fs::remove_file(part).await.map_err(io_at(part))?;
            0
        }
        Err(_) => 0,
    };
    if have == expected.size && have > 0 {
        return Ok(());
    }
    let mut a = get(url, have).await?;
    let mut offset = match a.status {
        StatusCode::PARTIAL_CONTENT if have > 0 => {
            let starts_at_have = a
                .headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
                == Some(have);
            if !starts_at_have {
                return Err(FetchError::Invalid {
                    url: a.url,
                    msg: "the server resumed at another offset".into(),
                });
            }
            tracing::info!(url, from = have, "resuming download");
            have
        }
        StatusCode::OK => 0,
        s => {
            return Err(FetchError::Status {
                url: a.url,
                status: s.as_u16(),
            });
        }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .append(offset > 0)
        .open(part)
        .await
        .map_err(io_at(part))?;
    progress(offset, expected.size);
    while let Some(chunk) = next_chunk(&mut a.body, &a.url).await? {
        offset += chunk.len() as u64;
        *fetched += chunk.len() as u64;
        if offset > expected.size {
            return Err(FetchError::Invalid {
                url: a.url,
                msg: format!("larger than the {} bytes the catalog gives", expected.size),
            });
        }
        file.write_all(&chunk).await.map_err(io_at(part))?;
        progress(offset, expected.size);
    }
    file.flush().await.map_err(io_at(part))?;
    if offset < expected.size {
        return Err(transport(
            &a.url,
            format!(
                "connection closed after {offset} of {} bytes",
                expected.size
            ),
        ));
    }
    Ok(())
}

/// Size and sha256 of a file.
pub async fn hash_file(path: &Path) -> Result<(u64, String), FetchError> {
    let mut f = tokio::fs::File::open(path).await.map_err(io_at(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).await.map_err(io_at(path))?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    Ok((n, super::busybox::hex(&h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_and_relative_paths() {
        assert_eq!(
            join("http://h:1/base/", "/streams/v1/index.json"),
            "http://h:1/base/streams/v1/index.json"
        );
        assert_eq!(join("http://h", "a/b"), "http://h/a/b");
    }

    #[test]
    fn part_path_appends_a_suffix() {
        assert_eq!(
            part_path(Path::new("/x/rootfs.squashfs")),
            PathBuf::from("/x/rootfs.squashfs.part")
        );
    }
}
