//! `GET /1.0/instances/{name}/sftp`: the instance's files over SFTP, as Incus serves them to
//! `incus file`. The request carries `Connection: Upgrade` and `Upgrade: sftp`; the answer is
//! `101 Switching Protocols` and the connection then speaks raw SFTP v3
//! ([`crate::instance::sftp`]). Errors (no such instance, not running) come before the
//! upgrade, in the error envelope.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::{ApiError, AppState};

/// The protocol name in `Upgrade`.
const PROTOCOL: &str = "sftp";

/// `GET /1.0/instances/{name}/sftp`: upgrade to an SFTP session.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    if !asked.is_some_and(|p| p.eq_ignore_ascii_case(PROTOCOL)) {
        return Err(ApiError::BadRequest(
            "missing or invalid upgrade header (expected \"Upgrade: sftp\")".into(),
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let session = state.instances.sftp_session(&name).await?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session.serve(TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!(instance = %name, error = %e, "sftp upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    Ok(resp.into_response())
}
