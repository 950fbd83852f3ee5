//! `/1.0/instances` and `/1.0/instances/{name}[/state]`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ctl_api::{
    InstanceFull, InstancePost, InstancePut, InstanceSnapshotPut, InstanceSnapshotsPost,
    InstanceStatePut, InstancesPost, StateAction,
};

use super::{
    ApiError, AppState, instance_resources, parse_json, recursion, spawn_task, spawn_task_with,
    sync,
};
use crate::images::progress::Progress;

/// `GET /1.0/instances?recursion=0|1|2&filter=EXPR`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (rec, fields) = super::recursion_fields(&q)?;
    // `recursion=2;fields=...`: the network is read only when asked for (the disk is
    // never read for a list).
    let with_network = fields.is_none_or(|f| f.iter().any(|x| x == "state.network"));
    let filter = super::filter(&q)?;
    if rec == 0 && filter.is_none() {
        let names = state.instances.names().await?;
        return Ok(sync(
            names
                .iter()
                .map(|n| format!("/1.0/instances/{n}"))
                .collect::<Vec<_>>(),
        ));
    }
    let all = state.instances.list(rec == 2, with_network).await?;
    let mut full: Vec<InstanceFull> = Vec::with_capacity(all.len());
    for (instance, st) in all {
        let snapshots = if rec == 2 {
            let snaps = state.instances.snapshots(&instance.name, false).await?;
            Some(
                snaps
                    .into_iter()
                    .map(|s| serde_json::to_value(s).unwrap_or_default())
                    .collect(),
            )
        } else {
            None
        };
        full.push(InstanceFull {
            instance,
            state: st,
            snapshots,
            backups: None,
        });
    }
    let full = super::apply_filter(full, filter.as_ref());
    Ok(match rec {
        0 => sync(
            full.iter()
                .map(|i| format!("/1.0/instances/{}", i.instance.name))
                .collect::<Vec<_>>(),
        ),
        1 => sync(full.into_iter().map(|i| i.instance).collect::<Vec<_>>()),
        _ => sync(full),
    })
}

/// The largest JSON body of `POST /1.0/instances`.
const MAX_CREATE_JSON: usize = 4 << 20;

/// `POST /1.0/instances`: validate, then create (and start, with `start: true`) in an
/// operation. An `application/octet-stream` body is a backup tarball to import
/// ([`super::backups::import`]).
pub async fn create(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let octets = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.eq_ignore_ascii_case("application/octet-stream"));
    if octets {
        return super::backups::import(state, headers, body).await;
    }
    let body = axum::body::to_bytes(body, MAX_CREATE_JSON)
        .await
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    let req: InstancesPost = parse_json(&body)?;
    let plan = state.instances.plan_create(req).await?;
    let resources = instance_resources(&plan.name);
    let svc = state.instances.clone();
    Ok(spawn_task_with(
        &state,
        "Creating instance",
        resources,
        move |op| async move { svc.create(plan, &Progress::for_op(op)).await },
    ))
}

/// `POST /1.0/instances/{name}`: rename a stopped instance (an operation).
pub async fn rename(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstancePost = parse_json(&body)?;
    state.instances.plan_rename(&name, &req).await?;
    let mut resources = instance_resources(&name);
    if let Some(v) = resources.get_mut("instances") {
        v.push(format!("/1.0/instances/{}", req.name));
    }
    let svc = state.instances.clone();
    Ok(spawn_task_with(
        &state,
        "Renaming instance",
        resources,
        move |_| async move { svc.rename(&name, &req.name).await },
    ))
}

/// `GET /1.0/instances/{name}` (`recursion=1` adds the state).
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let instance = state.instances.get(&name).await?;
    if recursion(&q)? >= 1 {
        let st = state.instances.state(&name).await?;
        let snapshots = state.instances.snapshots(&name, true).await?;
        return Ok(sync(InstanceFull {
            instance,
            state: Some(st),
            snapshots: Some(
                snapshots
                    .into_iter()
                    .map(|s| serde_json::to_value(s).unwrap_or_default())
                    .collect(),
            ),
            backups: None,
        }));
    }
    Ok(sync(instance))
}

/// `PUT /1.0/instances/{name}`: replace the configuration (an operation, as in Incus).
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let put: InstancePut = parse_json(&body)?;
    if let Some(snapshot) = put.restore {
        // Incus and LXD clients name it `INSTANCE/SNAPSHOT`.
        let snapshot = match snapshot.split_once('/') {
            Some((instance, s)) if instance == name => s.to_string(),
            _ => snapshot,
        };
        // Checked now (an unknown snapshot is a 404, never a silent no-op), done in the
        // operation.
        state.instances.snapshot(&name, &snapshot).await?;
        let svc = state.instances.clone();
        let n = name.clone();
        return Ok(spawn_task(
            &state,
            "Restoring snapshot",
            instance_resources(&name),
            async move { svc.restore(&n, &snapshot).await },
        ));
    }
    // Validate and apply synchronously so errors come back as 400s; the operation
    // reports completion.
    state.instances.update(&name, put, false).await?;
    Ok(spawn_task(
        &state,
        "Updating instance",
        instance_resources(&name),
        async { Ok(()) },
    ))
}

/// `PATCH /1.0/instances/{name}`: merge configuration.
pub async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let put: InstancePut = parse_json(&body)?;
    state.instances.update(&name, put, true).await?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/instances/{name}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.instances.check_can_delete(&name).await?;
    let svc = state.instances.clone();
    let n = name.clone();
    Ok(spawn_task(
        &state,
        "Deleting instance",
        instance_resources(&name),
        async move { svc.delete(&n).await },
    ))
}

/// `GET /1.0/instances/{name}/state`.
pub async fn get_state(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.state(&name).await?))
}

/// `PUT /1.0/instances/{name}/state`: start, stop, restart, freeze, unfreeze.
pub async fn put_state(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstanceStatePut = parse_json(&body)?;
    let timeout =
        (req.timeout >= 0).then(|| Duration::from_secs(req.timeout.unsigned_abs().min(86_400)));
    let svc = state.instances.clone();
    let n = name.clone();
    let res = instance_resources(&name);
    Ok(match req.action {
        StateAction::Start => {
            svc.check_can_start(&name).await?;
            spawn_task(&state, "Starting instance", res, async move {
                svc.start(&n).await
            })
        }
        StateAction::Stop => {
            svc.check_running(&name).await?;
            spawn_task(&state, "Stopping instance", res, async move {
                svc.stop(&n, timeout, req.force).await
            })
        }
        StateAction::Restart => {
            svc.check_running(&name).await?;
            spawn_task(&state, "Restarting instance", res, async move {
                svc.restart(&n, timeout, req.force).await
            })
        }
        StateAction::Freeze => {
            svc.check_running(&name).await?;
            spawn_task(&state, "Freezing instance", res, async move {
                svc.set_frozen(&n, true).await
            })
        }
        StateAction::Unfreeze => {
            svc.check_running(&name).await?;
            spawn_task(&state, "Unfreezing instance", res, async move {
                svc.set_frozen(&n, false).await
            })
        }
    })
}

/// `GET /1.0/instances/{name}/snapshots`: the instance's snapshots, oldest first (URLs, or
/// objects with `recursion=1`).
pub async fn list_snapshots(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = state.instances.snapshots(&name, true).await?;
    if recursion(&q)? == 0 {
        return Ok(sync(
            all.iter()
                .map(|s| format!("/1.0/instances/{name}/snapshots/{}", s.name))
                .collect::<Vec<_>>(),
        ));
    }
    Ok(sync(all))
}

/// `POST /1.0/instances/{name}/snapshots`: take a snapshot (an operation).
pub async fn create_snapshot(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstanceSnapshotsPost = if body.is_empty() {
        InstanceSnapshotsPost::default()
    } else {
        parse_json(&body)?
    };
    let plan = state.instances.plan_snapshot(&name, &req).await?;
    let svc = state.instances.clone();
    let mut resources = instance_resources(&name);
    resources.insert(
        "instances_snapshots".into(),
        vec![format!("/1.0/instances/{name}/snapshots/{}", plan.name)],
    );
    Ok(spawn_task(
        &state,
        "Snapshotting instance",
        resources,
        async move { svc.create_snapshot(&name, &plan).await },
    ))
}

/// `PUT /1.0/instances/{name}/snapshots/{snapshot}`: replace what may change of a snapshot
/// (its `expires_at`; absent: never). An operation, as in Incus.
pub async fn put_snapshot(
    state: State<AppState>,
    path: Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_snapshot(state, path, body, false).await
}

/// `PATCH /1.0/instances/{name}/snapshots/{snapshot}`: change the fields given.
pub async fn patch_snapshot(
    state: State<AppState>,
    path: Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update_snapshot(state, path, body, true).await
}

async fn update_snapshot(
    State(state): State<AppState>,
    Path((name, snapshot)): Path<(String, String)>,
    body: Bytes,
    patch: bool,
) -> Result<Response, ApiError> {
    let req: InstanceSnapshotPut = parse_json(&body)?;
    let expires_at = state
        .instances
        .plan_snapshot_update(&name, &snapshot, &req, patch)
        .await?;
    let svc = state.instances.clone();
    let n = name.clone();
    Ok(spawn_task(
        &state,
        "Updating snapshot",
        instance_resources(&name),
        async move { svc.update_snapshot(&n, &snapshot, expires_at).await },
    ))
}

/// `GET /1.0/instances/{name}/snapshots/{snapshot}`.
pub async fn get_snapshot(
    State(state): State<AppState>,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(sync(state.instances.snapshot(&name, &snapshot).await?))
}

/// `POST /1.0/instances/{name}/snapshots/{snapshot}`: rename the snapshot (an operation;
/// `migration` is refused).
pub async fn rename_snapshot(
    State(state): State<AppState>,
    Path((name, snapshot)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstancePost = parse_json(&body)?;
    if req.migration || req.live {
        return Err(crate::instance::InstanceError::Invalid(
            "migration is not supported (one host): only a rename".into(),
        )
        .into());
    }
    state
        .instances
        .check_snapshot_rename(&name, &snapshot, &req.name)
        .await?;
    let svc = state.instances.clone();
    let n = name.clone();
    Ok(spawn_task(
        &state,
        "Renaming snapshot",
        instance_resources(&name),
        async move { svc.rename_snapshot(&n, &snapshot, &req.name).await },
    ))
}

/// `DELETE /1.0/instances/{name}/snapshots/{snapshot}` (an operation).
pub async fn delete_snapshot(
    State(state): State<AppState>,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.instances.snapshot(&name, &snapshot).await?;
    let svc = state.instances.clone();
    let n = name.clone();
    Ok(spawn_task(
        &state,
        "Deleting snapshot",
        instance_resources(&name),
        async move { svc.delete_snapshot(&n, &snapshot).await },
    ))
}

/// `GET /1.0/instances/{name}/logs`: the instance's log files (recorded exec output).
pub async fn list_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let logs = state.instances.logs(&name).await?;
    Ok(sync(
        logs.iter()
            .map(|f| format!("/1.0/instances/{name}/logs/{f}"))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /1.0/instances/{name}/logs/{file}`: one log, raw.
pub async fn get_log(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = state
        .instances
        .log_file(&name, &file)
        .await
        .map_err(log_not_found)?;
    let data = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("read {}: {e}", path.display())))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        data,
    )
        .into_response())
}

/// `DELETE /1.0/instances/{name}/logs/{file}`.
pub async fn delete_log(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = state
        .instances
        .log_file(&name, &file)
        .await
        .map_err(log_not_found)?;
    tokio::fs::remove_file(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("remove {}: {e}", path.display())))?;
    Ok(sync(serde_json::json!({})))
}

fn log_not_found(e: crate::instance::InstanceError) -> ApiError {
    match e {
        crate::instance::InstanceError::Invalid(m) => ApiError::NotFound(m),
        e => e.into(),
    }
}
