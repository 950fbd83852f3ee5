//! `/1.0/storage-pools[/{pool}[/resources|/volumes…]]`: pools and custom volumes.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ctl_api::{
    StoragePoolPut, StoragePoolsPost, StorageVolumePost, StorageVolumePut,
    StorageVolumeSnapshotPost, StorageVolumeSnapshotsPost, StorageVolumesPost,
};

use super::{ApiError, AppState, parse_json, recursion, spawn_task, sync};

fn only_custom(kind: &str) -> Result<(), ApiError> {
    if kind == "custom" {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "volume type \"{kind}\": only custom volumes are managed here"
        )))
    }
}

/// Run `work` as an operation on the custom volume `name` of `pool`.
fn volume_task<F>(state: &AppState, description: &str, pool: &str, name: &str, work: F) -> Response
where
    F: std::future::Future<Output = Result<(), crate::storage::StorageError>> + Send + 'static,
{
    let resources = BTreeMap::from([(
        "storage_volumes".to_string(),
        vec![format!("/1.0/storage-pools/{pool}/volumes/custom/{name}")],
    )]);
    spawn_task(
        state,
        description,
        resources,
        async move { Ok(work.await?) },
    )
}

/// `GET /1.0/storage-pools?recursion=0|1`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = state.instances.storage().pools().await?;
    if recursion(&q)? >= 1 {
        return Ok(sync(all));
    }
    Ok(sync(
        all.iter()
            .map(|p| format!("/1.0/storage-pools/{}", p.name))
            .collect::<Vec<_>>(),
    ))
}

/// `POST /1.0/storage-pools`: 400 for a bad name, driver or config, 409 if taken.
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: StoragePoolsPost = parse_json(&body)?;
    state.instances.storage().create_pool(req).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/storage-pools/{pool}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.storage().pool(&pool).await?))
}

/// `GET /1.0/storage-pools/{pool}/buckets`: ctld has no object storage buckets; an empty
/// list for a pool that exists (web UIs list them without checking an extension).
pub async fn buckets(
    State(state): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    super::recursion(&q)?;
    state.instances.storage().pool(&pool).await?;
    Ok(sync(Vec::<String>::new()))
}

/// `PUT /1.0/storage-pools/{pool}`.
pub async fn put(
    state: State<AppState>,
    pool: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_pool(state, pool, body, false).await
}

/// `PATCH /1.0/storage-pools/{pool}` (an empty value unsets a key).
pub async fn patch(
    state: State<AppState>,
    pool: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_pool(state, pool, body, true).await
}

async fn update_pool(
    State(state): State<AppState>,
    Path(pool): Path<String>,
    body: Bytes,
    patch: bool,
) -> Result<Response, ApiError> {
    let req: StoragePoolPut = parse_json(&body)?;
    state
        .instances
        .storage()
        .update_pool(&pool, req, patch)
        .await?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/storage-pools/{pool}`: 409 while anything uses it.
pub async fn delete(
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    state.instances.storage().delete_pool(&pool).await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/storage-pools/{pool}/resources`.
pub async fn resources(
    State(state): State<AppState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.storage().resources(&pool).await?))
}

/// `GET /1.0/storage-pools/{pool}/volumes[/{type}]?recursion=0|1`.
pub async fn list_volumes(
    State(state): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let pool = params.get("pool").cloned().unwrap_or_default();
    let mut all = state.instances.storage().volumes(&pool).await?;
    if let Some(kind) = params.get("kind") {
        all.retain(|v| &v.kind == kind);
    }
    if recursion(&q)? >= 1 {
        return Ok(sync(all));
    }
    Ok(sync(
        all.iter()
            .map(|v| format!("/1.0/storage-pools/{pool}/volumes/{}/{}", v.kind, v.name))
            .collect::<Vec<_>>(),
    ))
}

/// `POST /1.0/storage-pools/{pool}/volumes[/custom]`: an empty volume (synchronous) or a
/// copy (`source.type=copy`, an operation, as clients expect).
pub async fn create_volume(
    State(state): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pool = params.get("pool").cloned().unwrap_or_default();
    if let Some(kind) = params.get("kind") {
        only_custom(kind)?;
    }
    let req: StorageVolumesPost = parse_json(&body)?;
    if req.source.kind != "copy" {
        state.instances.storage().create_volume(&pool, req).await?;
        return Ok(sync(serde_json::json!({})));
    }
    let storage = state.instances.storage().clone();
    // Checked now, so bad input is a 4xx and not a failed operation.
    crate::storage::config::check_name("storage volume", &req.name)
        .map_err(ApiError::BadRequest)?;
    let src_pool = if req.source.pool.is_empty() {
        pool.clone()
    } else {
        req.source.pool.clone()
    };
    let src_volume = req.source.name.split('/').next().unwrap_or_default();
    storage.volume(&src_pool, src_volume).await?;
    let resources = BTreeMap::from([(
        "storage_volumes".to_string(),
        vec![format!(
            "/1.0/storage-pools/{pool}/volumes/custom/{}",
            req.name
        )],
    )]);
    Ok(spawn_task(
        &state,
        "Copying storage volume",
        resources,
        async move { Ok(storage.create_volume(&pool, req).await?) },
    ))
}

/// `GET /1.0/storage-pools/{pool}/volumes/{type}/{name}`.
pub async fn get_volume(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    if kind != "custom" {
        let v = state
            .instances
            .storage()
            .volumes(&pool)
            .await?
            .into_iter()
            .find(|v| v.kind == kind && v.name == name)
            .ok_or_else(|| {
                ApiError::NotFound(format!("storage volume \"{kind}/{name}\" not found"))
            })?;
        return Ok(sync(v));
    }
    Ok(sync(state.instances.storage().volume(&pool, &name).await?))
}

/// `PUT /1.0/storage-pools/{pool}/volumes/custom/{name}` (a `restore` restores).
pub async fn put_volume(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_volume(state, path, body, false).await
}

/// `PATCH /1.0/storage-pools/{pool}/volumes/custom/{name}`.
pub async fn patch_volume(
    state: State<AppState>,
    path: Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_volume(state, path, body, true).await
}

async fn update_volume(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
    body: Bytes,
    patch: bool,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let req: StorageVolumePut = parse_json(&body)?;
    state
        .instances
        .storage()
        .update_volume(&pool, &name, req, patch)
        .await?;
    Ok(sync(serde_json::json!({})))
}

/// `POST /1.0/storage-pools/{pool}/volumes/custom/{name}`: rename (an operation).
pub async fn rename_volume(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let req: StorageVolumePost = parse_json(&body)?;
    let storage = state.instances.storage().clone();
    // Checked now so a bad name or an unknown volume is a 4xx, not a failed operation.
    storage.volume(&pool, &name).await?;
    crate::storage::config::check_name("storage volume", &req.name)
        .map_err(ApiError::BadRequest)?;
    let (p, n) = (pool.clone(), name.clone());
    Ok(volume_task(
        &state,
        "Renaming storage volume",
        &p,
        &n,
        async move { storage.rename_volume(&pool, &name, req).await },
    ))
}

/// `DELETE /1.0/storage-pools/{pool}/volumes/custom/{name}`: 409 while in use.
pub async fn delete_volume(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    state
        .instances
        .storage()
        .delete_volume(&pool, &name)
        .await?;
    Ok(sync(serde_json::json!({})))
}

/// `GET /1.0/storage-pools/{pool}/volumes/custom/{name}/state`.
pub async fn volume_state(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    if kind == "container" {
        return Ok(sync(container_volume_state(&state, &pool, &name).await?));
    }
    only_custom(&kind)?;
    Ok(sync(
        state.instances.storage().volume_state(&pool, &name).await?,
    ))
}

/// The state of an instance's root volume (`…/volumes/container/NAME/state`, as Incus):
/// its root disk's usage, and its size when it has one (`-1`: none).
async fn container_volume_state(
    state: &AppState,
    pool: &str,
    name: &str,
) -> Result<serde_json::Value, ApiError> {
    state.instances.storage().pool(pool).await?;
    let instance = state.instances.get(name).await?;
    let on = instance
        .config
        .get(crate::storage::VOLATILE_POOL)
        .map(String::as_str)
        .unwrap_or("default");
    if on != pool {
        return Err(ApiError::NotFound(format!(
            "storage volume \"container/{name}\" not found in pool \"{pool}\""
        )));
    }
    let st = state.instances.state(name).await?;
    let root = st.disk.get("root");
    let used = root.and_then(|r| r["usage"].as_i64()).unwrap_or(0);
    let total = root.and_then(|r| r["total"].as_i64()).unwrap_or(-1);
    Ok(serde_json::json!({"usage": {"used": used, "total": total}}))
}

/// `GET …/volumes/custom/{name}/snapshots?recursion=0|1`.
pub async fn list_snapshots(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let all = state
        .instances
        .storage()
        .volume_snapshots(&pool, &name)
        .await?;
    if recursion(&q)? >= 1 {
        return Ok(sync(all));
    }
    Ok(sync(
        all.iter()
            .map(|s| {
                format!(
                    "/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots/{}",
                    s.name
                )
            })
            .collect::<Vec<_>>(),
    ))
}

/// `POST …/volumes/custom/{name}/snapshots` (an operation).
pub async fn create_snapshot(
    State(state): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let req: StorageVolumeSnapshotsPost = if body.is_empty() {
        StorageVolumeSnapshotsPost::default()
    } else {
        parse_json(&body)?
    };
    let storage = state.instances.storage().clone();
    storage.volume(&pool, &name).await?;
    if !req.name.is_empty() {
        crate::storage::config::check_name("snapshot", &req.name).map_err(ApiError::BadRequest)?;
    }
    let (p, n) = (pool.clone(), name.clone());
    Ok(volume_task(
        &state,
        "Snapshotting storage volume",
        &p,
        &n,
        async move {
            storage
                .create_volume_snapshot(&pool, &name, req)
                .await
                .map(|_| ())
        },
    ))
}

/// `GET …/volumes/custom/{name}/snapshots/{snap}`.
pub async fn get_snapshot(
    State(state): State<AppState>,
    Path((pool, kind, name, snap)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    Ok(sync(
        state
            .instances
            .storage()
            .volume_snapshot(&pool, &name, &snap)
            .await?,
    ))
}

/// `POST …/volumes/custom/{name}/snapshots/{snap}`: rename (an operation).
pub async fn rename_snapshot(
    State(state): State<AppState>,
    Path((pool, kind, name, snap)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let req: StorageVolumeSnapshotPost = parse_json(&body)?;
    let storage = state.instances.storage().clone();
    storage.volume_snapshot(&pool, &name, &snap).await?;
    let (p, n) = (pool.clone(), name.clone());
    Ok(volume_task(
        &state,
        "Renaming storage volume snapshot",
        &p,
        &n,
        async move {
            storage
                .rename_volume_snapshot(&pool, &name, &snap, &req.name)
                .await
        },
    ))
}

/// `DELETE …/volumes/custom/{name}/snapshots/{snap}` (an operation).
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path((pool, kind, name, snap)): Path<(String, String, String, String)>,
) -> Result<Response, ApiError> {
    only_custom(&kind)?;
    let storage = state.instances.storage().clone();
    storage.volume_snapshot(&pool, &name, &snap).await?;
    let (p, n) = (pool.clone(), name.clone());
    Ok(volume_task(
        &state,
        "Deleting storage volume snapshot",
        &p,
        &n,
        async move { storage.delete_volume_snapshot(&pool, &name, &snap).await },
    ))
}
