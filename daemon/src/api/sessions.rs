//! Dashboard logins: `POST /1.0/ui/login-links` (for `ctl ui`), `GET /ui/login?token=`
//! (the link a browser opens: the token becomes a session cookie) and `POST /ui/logout`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, sync};
use crate::remote::sessions::{COOKIE, cookie_value};

/// `POST /1.0/ui/login-links`: a single-use login link.
pub async fn login_link(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(sync(state.remote.login_link().await?))
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /ui/login?token=T`: a valid token becomes a session cookie and the browser goes
/// to the dashboard; a spent or expired one is refused.
pub async fn login(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or_default();
    match state.remote.sessions.redeem_link(token) {
        Some(id) => with_cookie(
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response(),
            &format!("{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/"),
        ),
        None => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link is spent or expired. Run `ctl ui` on the server for a new one.\n",
        )
            .into_response(),
    }
}

/// `POST /ui/logout`: end the session and clear its cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers) {
        state.remote.sessions.end(&id);
    }
    with_cookie(
        StatusCode::NO_CONTENT.into_response(),
        &format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
    )
}
