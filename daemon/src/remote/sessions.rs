//! Dashboard sessions. `ctl ui` asks (over the root-only socket) for a login link holding
//! a single-use token; the browser opening it gets a session cookie in exchange
//! (`HttpOnly; Secure; SameSite=Strict`) and the token is spent. Links last five minutes,
//! sessions twelve hours from their last use. Both live in memory: a restart of the
//! daemon logs every browser out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a login link may wait to be opened.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
/// How long a session lasts without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// The start of the session cookie's name. `__Host-`: the browser keeps it to this host
/// and path `/`, `Secure`; the rest of the name is the server certificate's, so several
/// ctld on one host name (ports do not separate cookies) never overwrite each other's.
pub const COOKIE_PREFIX: &str = "__Host-ctl_session_";

#[derive(Default)]
struct Inner {
    /// Login tokens and when they expire.
    links: HashMap<String, Instant>,
    /// Session ids and when they expire.
    sessions: HashMap<String, Instant>,
    /// Websocket connections opened with a session, ended at its logout.
    upgraded: HashMap<String, Vec<CancellationToken>>,
}

/// Login links and sessions. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
    cookie: Arc<str>,
}

impl Sessions {
    /// Sessions of the server whose certificate has this fingerprint.
    pub fn new(fingerprint: &str) -> Sessions {
        let short: String = fingerprint.chars().take(12).collect();
        Sessions {
            inner: Arc::default(),
            cookie: format!("{COOKIE_PREFIX}{short}").into(),
        }
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// The session id in a request's `Cookie` headers, if any.
    pub fn cookie_value(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        cookie_value(headers, &self.cookie)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new single-use login token.
    pub fn new_link(&self) -> String {
        let token = super::random_hex(32);
        let now = Instant::now();
        let mut inner = self.lock();
        inner.links.retain(|_, until| *until > now);
        inner.links.insert(token.clone(), now + LINK_LIFETIME);
        token
    }

    /// Spend a login token: a new session id, or `None` if the token is unknown, spent or
    /// expired.
    pub fn redeem_link(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut inner = self.lock();
        let until = inner.links.remove(token)?;
        if until <= now {
            return None;
        }
        let id = super::random_hex(32);
        inner.sessions.retain(|_, until| *until > now);
        inner.sessions.insert(id.clone(), now + SESSION_IDLE);
        Some(id)
    }

    /// Whether `id` is a live session; a use extends it.
    pub fn check(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.sessions.get_mut(id) {
            Some(until) if *until > now => {
                *until = now + SESSION_IDLE;
                true
            }
            Some(_) => {
                inner.sessions.remove(id);
                false
            }
            None => false,
        }
    }

    /// End a session (logout), and the websockets opened with it.
    pub fn end(&self, id: &str) {
        let mut inner = self.lock();
        inner.sessions.remove(id);
        for conn in inner.upgraded.remove(id).unwrap_or_default() {
            conn.cancel();
        }
    }

    /// Remember that connection `conn` upgraded to a websocket with session `id`.
    pub fn watch(&self, id: &str, conn: CancellationToken) {
        let mut inner = self.lock();
        let now = Instant::now();
        let live: Vec<String> = inner.sessions.keys().cloned().collect();
        inner.upgraded.retain(|k, v| {
            v.retain(|c| !c.is_cancelled());
            !v.is_empty() && live.contains(k)
        });
        if inner.sessions.get(id).is_some_and(|until| *until > now) {
            inner.upgraded.entry(id.to_string()).or_default().push(conn);
        }
    }
}

/// The value of cookie `name` in a request's `Cookie` headers, if any.
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_logs_in_once() {
        let s = Sessions::new("ab12");
        let token = s.new_link();
        let id = s.redeem_link(&token);
        assert!(id.is_some());
        assert!(s.redeem_link(&token).is_none(), "single use");
        let id = id.unwrap_or_default();
        assert!(s.check(&id));
        assert!(!s.check("nope"));
        s.end(&id);
        assert!(!s.check(&id), "logged out");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; __Host-ctl_session_ab12=abc; b=2"),
        );
        let s = Sessions::new("ab12cd");
        assert_eq!(s.cookie_name(), "__Host-ctl_session_ab12cd");
        assert_eq!(
            Sessions::new("ab12").cookie_value(&h).as_deref(),
            Some("abc")
        );
        assert_eq!(s.cookie_value(&h), None, "another server's cookie");
        assert_eq!(s.cookie_value(&axum::http::HeaderMap::new()), None);
    }
}
