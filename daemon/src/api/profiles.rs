//! `/1.0/profiles[/{name}]`: list, create, read, replace, patch, rename, delete.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{ProfilePost, ProfilePut, ProfilesPost};

use super::{ApiError, AppState, parse_json, recursion, sync};

/// `GET /1.0/profiles?recursion=0|1`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let recursive = recursion(&q)? >= 1;
    let all = state.instances.profiles().await?;
    if !recursive {
        return Ok(sync(
            all.iter()
                .map(|p| format!("/1.0/profiles/{}", p.name))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(sync(all))
}

/// `POST /1.0/profiles`: 400 for a bad name, key or device, 409 if the name is taken.
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ProfilesPost = parse_json(&body)?;
    state.instances.create_profile(req).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/profiles/{name}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.profile(&name).await?))
}

/// `PUT /1.0/profiles/{name}`: applied to every instance using it, or to none.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ProfilePut = parse_json(&body)?;
    state.instances.update_profile(&name, req, false).await?;
    Ok(sync(serde_json::json!({})))
}

/// `PATCH /1.0/profiles/{name}`.
pub async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ProfilePut = parse_json(&body)?;
    state.instances.update_profile(&name, req, true).await?;
    Ok(sync(serde_json::json!({})))
}

/// `POST /1.0/profiles/{name}`: rename (403 for `default`, 409 if the new name is taken).
pub async fn rename(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ProfilePost = parse_json(&body)?;
    state.instances.rename_profile(&name, &req.name).await?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/profiles/{name}`: 403 for `default`, 400 while an instance uses it.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.instances.delete_profile(&name).await?;
    Ok(sync(serde_json::json!({})))
}
