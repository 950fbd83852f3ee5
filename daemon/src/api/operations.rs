//! `/1.0/operations`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{Operation, OperationClass};

use super::auth::Caller;
use super::{ApiError, AppState, recursion, sync};
use crate::operations::OpError;

/// Whether `caller` may see `op`: trust tokens (their secrets admit new clients) are for
/// administrators only; to anyone else they do not exist.
fn visible(caller: &Caller, op: &Operation) -> bool {
    caller.admin() || op.class != OperationClass::Token
}

/// The operation `id` as `caller` may see it.
fn lookup(state: &AppState, caller: &Caller, id: &str) -> Result<Operation, ApiError> {
    let op = state.ops.get(id)?;
    if !visible(caller, &op) {
        return Err(OpError::NotFound.into());
    }
    Ok(op)
}

/// `GET /1.0/operations`: operations grouped by status, as URLs or (recursion=1) objects.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let rec = recursion(&q)?;
    let mut groups: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for op in state
        .ops
        .list()
        .into_iter()
        .filter(|op| visible(&caller, op))
    {
        let key = op.status.to_lowercase();
        let v = if rec >= 1 {
            serde_json::to_value(&op).unwrap_or_default()
        } else {
            serde_json::Value::String(format!("/1.0/operations/{}", op.id))
        };
        groups.entry(key).or_default().push(v);
    }
    Ok(sync(groups))
}

/// `GET /1.0/operations/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(lookup(&state, &caller, &id)?))
}

/// `DELETE /1.0/operations/{id}`: cancel.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    lookup(&state, &caller, &id)?;
    state.ops.cancel(&id)?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/operations/{id}/wait?timeout=N`: block until the operation ends or N seconds
/// pass (-1 or absent: no limit), then return it.
pub async fn wait(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    lookup(&state, &caller, &id)?;
    let timeout = match q.get("timeout").map(String::as_str) {
        None | Some("") | Some("-1") => None,
        Some(t) => {
            let secs: f64 = t
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeout \"{t}\"")))?;
            if !secs.is_finite() {
                return Err(ApiError::BadRequest(format!("invalid timeout \"{t}\"")));
            }
            if secs < 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(secs.min(86_400.0)))
            }
        }
    };
    Ok(sync(state.ops.wait(&id, timeout).await?))
}
