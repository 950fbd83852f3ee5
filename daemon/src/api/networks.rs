//! `/1.0/networks[/{name}[/leases|/state]]`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{NetworkPut, NetworksPost};

use super::{ApiError, AppState, parse_json, recursion, sync};

/// `GET /1.0/networks?recursion=0|1`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if recursion(&q)? == 0 {
        let names = state.networks.names().await?;
        return Ok(sync(
            names
                .iter()
                .map(|n| format!("/1.0/networks/{n}"))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(sync(state.networks.list().await?))
}

/// `POST /1.0/networks`.
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: NetworksPost = parse_json(&body)?;
    state.networks.create(req).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/networks/{name}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.networks.get(&name).await?))
}

/// `PUT /1.0/networks/{name}`.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NetworkPut = parse_json(&body)?;
    state.networks.update(&name, req, false).await?;
    Ok(sync(serde_json::json!({})))
}

/// `PATCH /1.0/networks/{name}`.
pub async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NetworkPut = parse_json(&body)?;
    state.networks.update(&name, req, true).await?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/networks/{name}`: 409 while an instance or profile uses it.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.networks.delete(&name).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/networks/{name}/leases`.
pub async fn leases(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.networks.leases(&name).await?))
}

/// `GET /1.0/networks/{name}/state`.
pub async fn get_state(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.networks.state(&name).await?))
}
