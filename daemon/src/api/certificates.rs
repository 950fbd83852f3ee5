//! `/1.0/certificates[/{fingerprint}]`: the trust store of the HTTPS listener (Incus'
//! shapes). Joining with a token is the one write an untrusted client may make.

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{CertificatePut, CertificatesPost};

use super::auth::Caller;
use super::{ApiError, AppState, parse_json, recursion, sync};
use crate::remote::{Added, Requester};

/// `GET /1.0/certificates?recursion=0|1`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let recursive = recursion(&q)? >= 1;
    let all = state.remote.trust.list().await?;
    if recursive {
        return Ok(sync(all));
    }
    Ok(sync(
        all.iter()
            .map(|c| format!("/1.0/certificates/{}", c.fingerprint))
            .collect::<Vec<_>>(),
    ))
}

/// `POST /1.0/certificates`: add a certificate or issue a token (`202`, an operation of
/// class `token`); an untrusted client presenting a token is added.
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CertificatesPost = parse_json(&body)?;
    let who = match &caller {
        Caller::Local | Caller::Member | Caller::Session => Requester::Admin,
        Caller::Client {
            restricted: false, ..
        } => Requester::Admin,
        Caller::Untrusted { certificate } => Requester::Untrusted(certificate.as_deref()),
        Caller::Client { .. } | Caller::Metrics => Requester::Other,
    };
    match state.remote.add_certificate(&state.ops, req, who).await? {
        Added::Token(op) => Ok(super::accepted(&op)),
        Added::Certificate(_) => Ok(sync(serde_json::json!({}))),
    }
}

/// `GET /1.0/certificates/{fingerprint}` (a unique prefix will do).
pub async fn get_one(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.remote.trust.get(&fingerprint)?))
}

/// `PUT /1.0/certificates/{fingerprint}`, and `PATCH` (the fields given, over the
/// current ones).
async fn update(
    state: &AppState,
    fingerprint: &str,
    body: &Bytes,
    merge: bool,
) -> Result<Response, ApiError> {
    let put: CertificatePut = if merge {
        let current = state.remote.trust.get(fingerprint)?.put;
        let mut value =
            serde_json::to_value(current).map_err(|e| ApiError::Internal(e.to_string()))?;
        let patch: serde_json::Value = parse_json(body)?;
        let (Some(obj), Some(changes)) = (value.as_object_mut(), patch.as_object()) else {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        for (k, v) in changes {
            obj.insert(k.clone(), v.clone());
        }
        serde_json::from_value(value)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    } else {
        parse_json(body)?
    };
    state.remote.trust.update(fingerprint, put).await?;
    Ok(sync(serde_json::json!({})))
}

/// `PUT /1.0/certificates/{fingerprint}`.
pub async fn put(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(&state, &fingerprint, &body, false).await
}

/// `PATCH /1.0/certificates/{fingerprint}`.
pub async fn patch(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(&state, &fingerprint, &body, true).await
}

/// `DELETE /1.0/certificates/{fingerprint}`: its holder is refused from its next request.
pub async fn delete(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    state.remote.trust.remove(&fingerprint).await?;
    Ok(sync(serde_json::json!({})))
}
