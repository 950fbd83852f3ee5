//! `/1.0/images` and `/1.0/images/aliases`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{ApiError, AppState, recursion, sync};
use crate::images::ImageError;

fn not_found_404(e: ImageError) -> ApiError {
    match e {
        e @ (ImageError::NotFound { .. } | ImageError::Ambiguous(_)) => {
            ApiError::NotFound(e.to_string())
        }
        e => e.into(),
    }
}

/// `GET /1.0/images`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let images = state.images.list().await?;
    if recursion(&q)? >= 1 {
        return Ok(sync(images));
    }
    Ok(sync(
        images
            .iter()
            .map(|i| format!("/1.0/images/{}", i.fingerprint))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /1.0/images/{fingerprint}` (a unique prefix works).
pub async fn get_one(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(
        state
            .images
            .get(&fingerprint)
            .await
            .map_err(not_found_404)?,
    ))
}

/// `PUT /1.0/images/{fingerprint}`: replace `public` and `properties`.
pub async fn put(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    update(&state, &fingerprint, &body, true).await
}

/// `PATCH /1.0/images/{fingerprint}`: change the given fields only.
pub async fn patch(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    update(&state, &fingerprint, &body, false).await
}

async fn update(
    state: &AppState,
    fingerprint: &str,
    body: &axum::body::Bytes,
    replace: bool,
) -> Result<Response, ApiError> {
    let req: ctl_api::ImagePut = super::parse_json(body)?;
    state
        .images
        .update(fingerprint, req, replace)
        .await
        .map_err(not_found_404)?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/images/{fingerprint}`: refused with 409 while an instance uses it.
pub async fn delete(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    let image = state
        .images
        .get(&fingerprint)
        .await
        .map_err(not_found_404)?;
    // Check use now so the client gets the 409 directly.
    let store = state.images.clone();
    let fp = image.fingerprint.clone();
    let mut resources = std::collections::BTreeMap::new();
    resources.insert("images".to_string(), vec![format!("/1.0/images/{fp}")]);
    store.check_unused(&fp).await?;
    let storage = state.instances.storage().clone();
    Ok(super::spawn_task(
        &state,
        "Deleting image",
        resources,
        async move {
            store.delete(&fp).await?;
            // And the btrfs pools' copies of it.
            Ok(storage.forget_image(&fp).await?)
        },
    ))
}

/// `GET /1.0/images/aliases`.
pub async fn list_aliases(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let aliases = state.images.aliases().await?;
    if recursion(&q)? >= 1 {
        return Ok(sync(aliases));
    }
    Ok(sync(
        aliases
            .iter()
            .map(|a| {
                format!(
                    "/1.0/images/aliases/{}",
                    percent_encoding::utf8_percent_encode(
                        &a.name,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// `GET /1.0/images/aliases/{name}`; the name may contain `/` (sent as `%2F` or plain).
pub async fn get_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = name.trim_start_matches('/');
    Ok(sync(state.images.alias(name).await.map_err(not_found_404)?))
}
