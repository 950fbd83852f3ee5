//! Member to member HTTP over mutual TLS: forwarding a client's request (websocket
//! upgrades included) to the member that owns what it names, and short JSON queries to
//! every member (listing).
//!
//! Each side presents its own server certificate; each side accepts the other only by
//! the fingerprint the cluster's database records for it (the caller pins the target
//! here, the target checks its caller in `api::auth`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::remote::ServerIdentity;

/// The header a forwarded request carries: the forwarding member's name. A member answers
/// such a request itself (never forwards it again), and only when it comes from a member.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-ctl-forwarded");

/// Set by a member forwarding the request of a caller that is not an administrator (a
/// restricted client): the target applies the same restrictions.
pub const FORWARDED_RESTRICTED: HeaderName = HeaderName::from_static("x-ctl-forwarded-restricted");

/// The largest answer read whole from a member (listings of thousands of instances fit).
pub const MAX_ANSWER: usize = 256 << 20;

/// How long a member may take to start answering a streamed download.
const STREAM_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to a member may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors reaching another member.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cluster member {member} ({address}) is unreachable: {reason}")]
    Unreachable {
        member: String,
        address: String,
        reason: String,
    },
    #[error("cluster member {member} did not answer within {secs} s")]
    Timeout { member: String, secs: u64 },
    #[error("cluster member {member} answered {status}: {message}")]
    Status {
        member: String,
        status: StatusCode,
        message: String,
    },
}

/// Where a member listens and the certificate it must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// `IP:PORT`.
    pub address: String,
    pub fingerprint: String,
}

/// The client side of member to member connections. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    identity: Arc<ServerIdentity>,
    /// Our own name, sent in [`FORWARDED`].
    me: Arc<str>,
    /// One rustls configuration per pinned peer certificate.
    configs: Arc<Mutex<HashMap<String, Arc<rustls::ClientConfig>>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

impl PeerClient {
    pub fn new(identity: Arc<ServerIdentity>, me: &str) -> PeerClient {
        PeerClient {
            identity,
            me: me.into(),
            configs: Arc::default(),
        }
    }

    fn unreachable(target: &Target, reason: impl ToString) -> ForwardError {
        ForwardError::Unreachable {
            member: target.name.clone(),
            address: target.address.clone(),
            reason: reason.to_string(),
        }
    }

    fn config(&self, target: &Target) -> Result<Arc<rustls::ClientConfig>, ForwardError> {
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = configs.get(&target.fingerprint) {
            return Ok(c.clone());
        }
        let c = self
            .identity
            .member_client_config(&target.fingerprint)
            .map_err(|e| Self::unreachable(target, e))?;
        configs.insert(target.fingerprint.clone(), c.clone());
        Ok(c)
    }

    /// A fresh HTTP/1.1 connection to `target` over mutual TLS, upgrades enabled.
    async fn connect(&self, target: &Target) -> Result<Sender, ForwardError> {
        let config = self.config(target)?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&target.address)
                .await
                .map_err(|e| Self::unreachable(target, e))?;
            let _ = tcp.set_nodelay(true);
            // The name is not checked (the certificate is pinned); any valid one will do.
            let name = rustls::pki_types::ServerName::try_from("ctl-member")
                .map_err(|e| Self::unreachable(target, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Self::unreachable(target, e))?;
            hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| Self::unreachable(target, e))
        };
        let (sender, conn) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ForwardError::Timeout {
                member: target.name.clone(),
                secs: CONNECT_TIMEOUT.as_secs(),
            })??;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "member connection ended");
            }
        });
        Ok(sender)
    }

    /// Send `req` (a client's request, possibly a websocket upgrade) to `target` and give
    /// back its answer. On an upgrade, both upgraded connections are joined.
    pub async fn forward(
        &self,
        target: &Target,
        mut req: Request<Body>,
        restricted: bool,
    ) -> Result<Response<Body>, ForwardError> {
        let client_upgrade = req
            .headers()
            .contains_key(header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
        let mut out = Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .body(body)
            .map_err(|e| Self::unreachable(target, e))?;
        *out.headers_mut() = end_to_end(&parts.headers, client_upgrade.is_some());
        self.mark(out.headers_mut(), target)?;
        if restricted {
            out.headers_mut()
                .insert(FORWARDED_RESTRICTED, HeaderValue::from_static("1"));
        }
        let mut sender = self.connect(target).await?;
        let mut resp = sender
            .send_request(out)
            .await
            .map_err(|e| Self::unreachable(target, e))?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let member_upgrade = hyper::upgrade::on(&mut resp);
            let member = target.name.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, member_upgrade) {
                    Ok((client, member_io)) => {
                        let mut a = TokioIo::new(client);
                        let mut b = TokioIo::new(member_io);
                        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                            tracing::debug!(%member, error = %e, "forwarded websocket ended");
                        }
                    }
                    Err(e) => tracing::debug!(%member, error = %e, "forwarded upgrade failed"),
                }
            });
            let mut answer = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .body(Body::empty())
                .map_err(|e| Self::unreachable(target, e))?;
            *answer.headers_mut() = resp.headers().clone();
            return Ok(answer);
        }
        let (parts, body) = resp.into_parts();
        let mut answer = Response::from_parts(parts, Body::new(body));
        let headers = end_to_end(answer.headers(), false);
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    /// `GET path` on `target`, answered within `timeout`: the envelope's `metadata`.
    pub async fn get_json(
        &self,
        target: &Target,
        path: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, ForwardError> {
        let (status, body) = self
            .request(target, Method::GET, path, None, timeout)
            .await?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Self::unreachable(target, e))?;
        if !status.is_success() {
            return Err(ForwardError::Status {
                member: target.name.clone(),
                status,
                message: value["error"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(value["metadata"].clone())
    }

    /// One request with an optional JSON body to `target`, the whole answer read within
    /// `timeout`.
    pub async fn request(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ForwardError> {
        let work = async {
            let body = match json {
                Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
                None => Body::empty(),
            };
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .body(body)
                .map_err(|e| Self::unreachable(target, e))?;
            if json.is_some() {
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            self.mark(req.headers_mut(), target)?;
            let mut sender = self.connect(target).await?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| Self::unreachable(target, e))?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| Self::unreachable(target, e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ForwardError::Timeout {
                member: target.name.clone(),
                secs: timeout.as_secs().max(1),
            })?
    }

    /// `GET path` on `target` with the answer's body streamed (image exports).
    pub async fn get_stream(
        &self,
        target: &Target,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ForwardError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(Body::empty())
            .map_err(|e| Self::unreachable(target, e))?;
        self.mark(req.headers_mut(), target)?;
        let mut sender = self.connect(target).await?;
        tokio::time::timeout(STREAM_HEADERS_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| ForwardError::Timeout {
                member: target.name.clone(),
                secs: STREAM_HEADERS_TIMEOUT.as_secs(),
            })?
            .map_err(|e| Self::unreachable(target, e))
    }

    fn mark(&self, headers: &mut HeaderMap, target: &Target) -> Result<(), ForwardError> {
        let host =
            HeaderValue::from_str(&target.address).map_err(|e| Self::unreachable(target, e))?;
        headers.insert(header::HOST, host);
        let me = HeaderValue::from_str(&self.me).map_err(|e| Self::unreachable(target, e))?;
        headers.insert(FORWARDED, me);
        Ok(())
    }
}

/// The headers of `headers` that go end to end: hop-by-hop ones dropped, except the
/// upgrade handshake's when `upgrade`. A browser's `Origin` and cookies stay behind: the
/// forwarding member already decided who the caller is.
fn end_to_end(headers: &HeaderMap, upgrade: bool) -> HeaderMap {
    let hop = |n: &HeaderName| {
        matches!(
            n.as_str(),
            "keep-alive" | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "host"
        ) || n == header::PROXY_AUTHORIZATION
            || n == header::PROXY_AUTHENTICATE
            || n == header::ORIGIN
            || n == header::COOKIE
            || n == FORWARDED
            || n == FORWARDED_RESTRICTED
            || (!upgrade && (n == header::CONNECTION || n == header::UPGRADE))
    };
    let mut out = HeaderMap::with_capacity(headers.len());
    for (n, v) in headers {
        if !hop(n) {
            out.append(n.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("client.example"));
        h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://x"));
        h.insert(FORWARDED, HeaderValue::from_static("spoofed"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let plain = end_to_end(&h, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(plain.contains_key(header::CONTENT_TYPE));
        let up = end_to_end(&h, true);
        assert!(up.contains_key(header::UPGRADE) && up.contains_key(header::CONNECTION));
        assert!(!up.contains_key(FORWARDED) && !up.contains_key(header::COOKIE));
    }
}
