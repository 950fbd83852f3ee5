//! Who may do what: every request is given a [`Caller`] from its connection's
//! [`Peer`] and, over HTTPS, its client certificate (the trust store) or dashboard session
//! cookie, then allowed or refused (403) before it reaches a handler. The trust store is
//! looked up on every request, so a revoked certificate is refused on its next request,
//! also on a connection opened before.
//!
//! Over HTTPS, a request that changes something (any method but GET/HEAD/OPTIONS) or
//! upgrades to a websocket must come from the server's own origin when it names one, and
//! must name one when it rides on a session cookie: browsers send cookies with cross-site
//! websocket handshakes, so a cookie alone proves nothing.
//!
//! Every answer carries the dashboard's security headers.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::server::Peer;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The Unix socket (root).
    Local,
    /// A trusted client certificate (`type: client`).
    Client {
        fingerprint: String,
        /// Restricted certificates may not change the server, its trust store, networks
        /// or storage pools.
        restricted: bool,
    },
    /// Another member of this server's cluster (its server certificate).
    Member,
    /// A `type: metrics` certificate: `/1.0/metrics` only.
    Metrics,
    /// A dashboard session (a browser logged in with a link from `ctl ui`).
    Session,
    /// Anyone else over HTTPS, with the certificate it presented, if any (a token turns
    /// it into a trusted one).
    Untrusted { certificate: Option<Vec<u8>> },
}

impl Caller {
    /// Whether `GET /1.0` says `auth: trusted`.
    pub fn trusted(&self) -> bool {
        !matches!(self, Caller::Untrusted { .. } | Caller::Metrics)
    }

    /// Whether the caller administers the server: it may see and revoke trust tokens
    /// (whose secrets admit new clients), change the server and its trust store.
    pub fn admin(&self) -> bool {
        matches!(
            self,
            Caller::Local
                | Caller::Member
                | Caller::Session
                | Caller::Client {
                    restricted: false,
                    ..
                }
        )
    }
}

/// The dashboard's Content-Security-Policy: nothing but its own files, no inline code.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'self'";

/// Add the security headers every answer carries.
pub fn security_headers(headers: &mut HeaderMap) {
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        // A handler's own (a `CTL_UI` build's policy) stays.
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

fn caller_of(state: &AppState, peer: &Peer, headers: &HeaderMap) -> Caller {
    match peer {
        Peer::Unix => Caller::Local,
        Peer::Public => Caller::Untrusted { certificate: None },
        Peer::Tls {
            fingerprint,
            certificate,
            conn,
        } => {
            if fingerprint
                .as_deref()
                .is_some_and(|fp| state.cluster.is_member_certificate(fp))
            {
                // A member forwarding a restricted client's request says so: the request
                // keeps its restrictions here.
                if headers
                    .get(crate::cluster::forward::FORWARDED_RESTRICTED)
                    .is_some()
                {
                    return Caller::Client {
                        fingerprint: "forwarded".into(),
                        restricted: true,
                    };
                }
                return Caller::Member;
            }
            if let Some(row) = fingerprint
                .as_deref()
                .and_then(|fp| state.remote.trust.lookup(fp))
            {
                return match row.kind.as_str() {
                    "metrics" => Caller::Metrics,
                    _ => Caller::Client {
                        fingerprint: row.fingerprint,
                        restricted: row.restricted,
                    },
                };
            }
            if let Some(id) = state.remote.sessions.cookie_value(headers)
                && state.remote.sessions.check(&id)
            {
                if headers.contains_key(header::UPGRADE) {
                    // A websocket outlives the request: logging out must end it too.
                    state.remote.sessions.watch(&id, conn.clone());
                }
                return Caller::Session;
            }
            Caller::Untrusted {
                certificate: certificate.clone(),
            }
        }
    }
}

/// What anyone may ask: the API's entry points, joining with a token, and the dashboard's
/// files and login.
fn public(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    (read && matches!(path, "/" | "/1.0" | "/1.0/"))
        || (method == Method::POST && path == "/1.0/certificates")
        || path == "/ui"
        || path.starts_with("/ui/")
}

/// What a restricted certificate may not do: change the server, its trust store, networks
/// or storage pools, or open dashboard sessions.
fn admin_only(method: &Method, path: &str) -> bool {
    let write = !(method == Method::GET || method == Method::HEAD);
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    // `/1.0/storage-pools/P` and `/1.0/storage-pools` itself, not the volumes under it.
    let pool_itself = path
        .strip_prefix("/1.0/storage-pools")
        .is_some_and(|rest| rest.trim_matches('/').split('/').count() <= 1);
    let server = path == "/1.0" || under("/1.0/certificates") || under("/1.0/networks");
    // The cluster, even to read: a join token carries the database's password, and the
    // members' list their addresses.
    (write && (server || pool_itself)) || under("/1.0/ui") || under("/1.0/cluster")
}

fn allowed(caller: &Caller, method: &Method, path: &str) -> bool {
    match caller {
        Caller::Local | Caller::Member | Caller::Session => true,
        Caller::Client { restricted, .. } => !restricted || !admin_only(method, path),
        Caller::Metrics => {
            public(method, path) || (method == Method::GET && path == "/1.0/metrics")
        }
        Caller::Untrusted { .. } => public(method, path),
    }
}

/// Whether a request says it carries a body.
fn has_body(req: &Request) -> bool {
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Whether an HTTPS request comes from the server's own origin where that matters.
fn origin_ok(req: &Request, caller: &Caller) -> bool {
    let m = req.method();
    let changes = !(m == Method::GET || m == Method::HEAD || m == Method::OPTIONS);
    let upgrade = req.headers().contains_key(header::UPGRADE);
    if !changes && !upgrade {
        return true;
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Tools (lxc, incus, pylxd, ctl) send no Origin; a browser always does.
        return *caller != Caller::Session;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    !host.is_empty() && origin.to_str().ok() == Some(&format!("https://{host}"))
}

/// The most an untrusted caller may send (a token request is a few hundred bytes).
pub const UNTRUSTED_BODY_MAX: usize = 16 << 10;
/// How long an untrusted caller may take to send it.
pub const UNTRUSTED_BODY_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Read an untrusted caller's body whole, within [`UNTRUSTED_BODY_MAX`] and
/// [`UNTRUSTED_BODY_TIME`], so a stranger cannot hold memory or a connection slot with a
/// slow or large body.
async fn bounded_body(req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, UNTRUSTED_BODY_MAX);
    match tokio::time::timeout(UNTRUSTED_BODY_TIME, read).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Ok(Err(_)) => Err(ApiError::PayloadTooLarge(format!(
            "request body too large (at most {UNTRUSTED_BODY_MAX} bytes before the client is trusted)"
        ))),
        Err(_) => Err(ApiError::RequestTimeout("request body too slow".into())),
    }
}

/// The middleware: decide, refuse or pass on with the [`Caller`] as an extension.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Every connection the daemon serves has its peer set (`server::serve_limited`); one
    // without is nobody's.
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or(Peer::Public);
    let caller = caller_of(&state, &peer, req.headers());
    let refusal = if matches!(peer, Peer::Tls { .. }) && !origin_ok(&req, &caller) {
        Some("cross-origin request refused")
    } else if !allowed(&caller, req.method(), req.uri().path()) {
        Some("not authorized")
    } else {
        None
    };
    let mut resp = match refusal {
        Some(why) => {
            let mut resp = ApiError::Forbidden(why.into()).into_response();
            // The body of a refused request is never read: the connection cannot carry
            // another request, and the client is told so.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        None => {
            let stranger = matches!(caller, Caller::Untrusted { .. } | Caller::Metrics);
            req.extensions_mut().insert(caller);
            let bounded = if stranger && has_body(&req) {
                bounded_body(req).await
            } else {
                Ok(req)
            };
            match bounded {
                Ok(req) => next.run(req).await,
                Err(e) => {
                    let mut resp = e.into_response();
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    resp
                }
            }
        }
    };
    security_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_callers_reach_only_the_entry_points() {
        let u = Caller::Untrusted { certificate: None };
        assert!(allowed(&u, &Method::GET, "/1.0"));
        assert!(allowed(&u, &Method::POST, "/1.0/certificates"));
        assert!(allowed(&u, &Method::GET, "/ui/index.html"));
        for (m, p) in [
            (Method::GET, "/1.0/instances"),
            (Method::PUT, "/1.0"),
            (Method::GET, "/1.0/certificates"),
            (Method::GET, "/1.0/events"),
            (Method::GET, "/1.0/operations/x/websocket"),
            (Method::GET, "/1.0/metrics"),
            (Method::POST, "/1.0/ui/login-links"),
        ] {
            assert!(!allowed(&u, &m, p), "{m} {p}");
        }
    }

    #[test]
    fn restricted_and_metrics_certificates() {
        let r = Caller::Client {
            fingerprint: "f".into(),
            restricted: true,
        };
        assert!(allowed(&r, &Method::POST, "/1.0/instances"));
        assert!(allowed(&r, &Method::GET, "/1.0/networks"));
        assert!(allowed(
            &r,
            &Method::POST,
            "/1.0/storage-pools/p/volumes/custom"
        ));
        assert!(!allowed(&r, &Method::PATCH, "/1.0"));
        assert!(!allowed(&r, &Method::DELETE, "/1.0/certificates/abc"));
        assert!(!allowed(&r, &Method::POST, "/1.0/networks"));
        assert!(!allowed(&r, &Method::DELETE, "/1.0/storage-pools/p"));
        assert!(!allowed(&r, &Method::PATCH, "/1.0/storage-pools/volumes2"));
        assert!(!allowed(&r, &Method::POST, "/1.0/storage-pools"));
        assert!(allowed(
            &r,
            &Method::DELETE,
            "/1.0/storage-pools/p/volumes/custom/v"
        ));
        assert!(!allowed(&r, &Method::POST, "/1.0/ui/login-links"));
        // A join token carries the cluster database's password.
        assert!(!allowed(&r, &Method::POST, "/1.0/cluster/members"));
        assert!(!allowed(&r, &Method::PUT, "/1.0/cluster"));
        assert!(!allowed(&r, &Method::POST, "/1.0/cluster/members/m2/state"));
        assert!(!allowed(&r, &Method::DELETE, "/1.0/cluster/members/m2"));
        assert!(!allowed(&r, &Method::GET, "/1.0/cluster/members"));
        assert!(allowed(&r, &Method::POST, "/1.0/clusterx"), "by segment");
        let member = Caller::Member;
        assert!(member.admin() && allowed(&member, &Method::PUT, "/1.0/cluster"));
        let m = Caller::Metrics;
        assert!(allowed(&m, &Method::GET, "/1.0/metrics"));
        assert!(!allowed(&m, &Method::GET, "/1.0/instances"));
        assert!(!m.trusted());
    }

    fn req(method: Method, origin: Option<&str>, upgrade: bool) -> Request {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri("/1.0/instances")
            .header(header::HOST, "127.0.0.1:8443");
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        if upgrade {
            b = b.header(header::UPGRADE, "websocket");
        }
        b.body(axum::body::Body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_the_own_origin_may_change_things_or_open_websockets() {
        let s = Caller::Session;
        let own = Some("https://127.0.0.1:8443");
        let foreign = Some("https://evil.example");
        assert!(origin_ok(&req(Method::POST, own, false), &s));
        assert!(!origin_ok(&req(Method::POST, foreign, false), &s));
        assert!(
            !origin_ok(&req(Method::POST, None, false), &s),
            "a cookie needs an origin"
        );
        assert!(
            !origin_ok(&req(Method::GET, foreign, true), &s),
            "websocket"
        );
        assert!(!origin_ok(&req(Method::GET, Some("null"), true), &s));
        assert!(
            origin_ok(&req(Method::GET, foreign, false), &s),
            "plain reads"
        );
        let tool = Caller::Client {
            fingerprint: "f".into(),
            restricted: false,
        };
        assert!(origin_ok(&req(Method::POST, None, false), &tool));
        assert!(!origin_ok(&req(Method::POST, foreign, false), &tool));
    }
}
