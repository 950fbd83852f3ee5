//! Dashboard sessions. `ctl ui` asks (over the root-only socket) for a login link holding
//! a single-use token; the browser opening it gets a session cookie in exchange
//! (`HttpOnly; Secure; SameSite=Strict`) and the token is spent. Links last five minutes,
//! sessions twelve hours from their last use. Both live in memory: a restart of the
//! daemon logs every browser out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a login link may wait to be opened.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
/// How long a session lasts without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "ctl_session";

#[derive(Default)]
struct Inner {
    /// Login tokens and when they expire.
    links: HashMap<String, Instant>,
    /// Session ids and when they expire.
    sessions: HashMap<String, Instant>,
}

/// Login links and sessions. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Inner>>,
}

impl Sessions {
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

    /// End a session (logout).
    pub fn end(&self, id: &str) {
        self.lock().sessions.remove(id);
    }
}

/// The session id in a request's `Cookie` headers, if any.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_logs_in_once() {
        let s = Sessions::default();
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
            axum::http::HeaderValue::from_static("a=1; ctl_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&axum::http::HeaderMap::new()), None);
    }
}
