//! `/1.0/operations`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{ApiError, AppState, recursion, sync};

/// `GET /1.0/operations`: operations grouped by status, as URLs or (recursion=1) objects.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let rec = recursion(&q)?;
    let mut groups: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for op in state.ops.list() {
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
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.ops.get(&id)?))
}

/// `DELETE /1.0/operations/{id}`: cancel.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.ops.cancel(&id)?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/operations/{id}/wait?timeout=N`: block until the operation ends or N seconds
/// pass (-1 or absent: no limit), then return it.
pub async fn wait(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
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
