//! `/1.0/instances/{name}/backups[/{backup}[/export]]`, and `POST /1.0/instances` with a
//! backup tarball as its body (`application/octet-stream`: create from a backup).

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ctl_api::{InstanceBackupPost, InstanceBackupsPost};
use futures_util::StreamExt;
use std::collections::HashMap;

use super::images_transfer::{download, file_chunks};
use super::{ApiError, AppState, instance_resources, parse_json, recursion, spawn_task, sync};

/// A request header, `X-Incus-<name>` or else `X-LXD-<name>`.
fn incus_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    [format!("x-incus-{name}"), format!("x-lxd-{name}")]
        .iter()
        .find_map(|h| headers.get(h.as_str()))
        .and_then(|v| v.to_str().ok())
}

/// `GET /1.0/instances/{name}/backups[?recursion=1]`.
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let backups = state.instances.backups(&name).await?;
    if recursion(&q)? == 0 {
        return Ok(sync(
            backups
                .iter()
                .map(|b| format!("/1.0/instances/{name}/backups/{}", b.name))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(sync(backups))
}

/// `POST /1.0/instances/{name}/backups`: checked now, made in an operation whose
/// `resources.backups` names it (what `incus export` reads).
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstanceBackupsPost = if body.iter().all(u8::is_ascii_whitespace) {
        InstanceBackupsPost::default()
    } else {
        parse_json(&body)?
    };
    let plan = state.instances.plan_backup(&name, &req).await?;
    let mut resources = instance_resources(&name);
    resources.insert(
        "backups".into(),
        // LXD 5.0's `lxc export` strips `/1.0/backups/` to find the name; Incus takes the
        // last segment: this form suits both.
        vec![format!("/1.0/backups/{}", plan.name)],
    );
    let svc = state.instances.clone();
    Ok(spawn_task(
        &state,
        "Backing up instance",
        resources,
        async move { svc.create_backup(&name, plan).await },
    ))
}

/// `GET /1.0/instances/{name}/backups/{backup}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.backup(&name, &backup).await?))
}

/// `POST /1.0/instances/{name}/backups/{backup}`: rename (an operation, as in Incus).
pub async fn rename(
    State(state): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstanceBackupPost = parse_json(&body)?;
    state
        .instances
        .rename_backup(&name, &backup, &req.name)
        .await?;
    Ok(spawn_task(
        &state,
        "Renaming instance backup",
        instance_resources(&name),
        async { Ok(()) },
    ))
}

/// `DELETE /1.0/instances/{name}/backups/{backup}` (an operation).
pub async fn delete(
    State(state): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.instances.backup(&name, &backup).await?;
    let svc = state.instances.clone();
    let n = name.clone();
    Ok(spawn_task(
        &state,
        "Deleting instance backup",
        instance_resources(&name),
        async move { svc.delete_backup(&n, &backup).await },
    ))
}

/// `GET /1.0/instances/{name}/backups/{backup}/export`: the tarball, streamed, with its
/// length (clients show progress from it).
pub async fn export(
    State(state): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (file, len, compression) = state.instances.open_backup(&name, &backup).await?;
    let file_name = format!("{name}-{backup}.{}", compression.extension());
    Ok(download(
        Body::from_stream(file_chunks(file)),
        "application/octet-stream",
        Some(len),
        Some(&file_name),
    ))
}

/// `POST /1.0/instances` with a backup tarball: the upload is received, unpacked and
/// checked before the answer (a bad tarball is a 400 and leaves nothing), then the instance
/// is made in an operation. `X-Incus-name`/`X-LXD-name` renames it; a pool other than
/// `default` is refused (ctld has one).
pub async fn import(state: AppState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if let Some(pool) = incus_header(&headers, "pool").filter(|p| !p.is_empty() && *p != "default")
    {
        return Err(ApiError::BadRequest(format!(
            "storage pool \"{pool}\" not found (ctld has one pool, \"default\")"
        )));
    }
    let rename = incus_header(&headers, "name").map(str::to_string);
    let mut upload = state.images.upload().await?;
    upload.receive(body.into_data_stream().boxed()).await?;
    let file = upload
        .files
        .first()
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("the backup file is empty".into()))?;
    let prepared = state
        .instances
        .plan_import(upload.work, file, rename)
        .await?;
    let svc = state.instances.clone();
    let resources = instance_resources(&prepared.name);
    Ok(spawn_task(
        &state,
        "Creating instance from backup",
        resources,
        async move { svc.import(prepared).await },
    ))
}
