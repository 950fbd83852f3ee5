//! Projects and warnings, as far as ctl has them: one project, `default`, that holds
//! everything (Incus clients and web UIs load nothing without it), and no warnings. A
//! request that names another project (`?project=NAME`) is refused with 404 everywhere
//! (see [`only_default_project`]); `all-projects=true` lists the one there is.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, AppState, recursion, sync};

/// The one project.
pub const DEFAULT: &str = "default";

/// `GET /1.0/projects/{name}` (Incus' shape).
#[derive(Debug, Serialize)]
pub struct Project {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub used_by: Vec<String>,
}

/// Refuse a request for any project but `default` (LXD's 404 "Project not found"), before
/// it reaches a handler.
pub async fn only_default_project(req: Request, next: Next) -> Response {
    let named = Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(mut q)| q.remove("project"));
    match named {
        Some(p) if !p.is_empty() && p != DEFAULT => {
            ApiError::NotFound(format!("Project \"{p}\" not found")).into_response()
        }
        _ => next.run(req).await,
    }
}

async fn default_project(state: &AppState) -> Result<Project, ApiError> {
    let mut used_by: Vec<String> = state
        .instances
        .names()
        .await?
        .into_iter()
        .map(|n| format!("/1.0/instances/{n}"))
        .collect();
    used_by.extend(
        state
            .instances
            .profiles()
            .await?
            .into_iter()
            .map(|p| format!("/1.0/profiles/{}", p.name)),
    );
    used_by.extend(
        state
            .images
            .list()
            .await?
            .into_iter()
            .map(|i| format!("/1.0/images/{}", i.fingerprint)),
    );
    // Everything is shared: the project has every feature of its own.
    let config = [
        "features.images",
        "features.networks",
        "features.profiles",
        "features.storage.buckets",
        "features.storage.volumes",
    ]
    .into_iter()
    .map(|k| (k.to_string(), "true".to_string()))
    .collect();
    Ok(Project {
        name: DEFAULT.into(),
        description: "Default project".into(),
        config,
        used_by,
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name == DEFAULT {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("Project \"{name}\" not found")))
    }
}

/// `GET /1.0/projects`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if recursion(&q)? == 0 {
        return Ok(sync(vec![format!("/1.0/projects/{DEFAULT}")]));
    }
    Ok(sync(vec![default_project(&state).await?]))
}

/// `GET /1.0/projects/{name}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    Ok(sync(default_project(&state).await?))
}

/// `GET /1.0/projects/{name}/state`: what the project uses, without limits.
pub async fn get_state(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let instances = state.instances.names().await?.len();
    let networks = state.networks.names().await?.len();
    // Capitalized, as Incus' `ProjectStateResource` (Go fields without JSON tags).
    let usage = |n: usize| serde_json::json!({"Limit": -1, "Usage": n});
    Ok(sync(serde_json::json!({
        "resources": {
            "containers": usage(instances),
            "instances": usage(instances),
            "networks": usage(networks),
            "virtual-machines": usage(0),
        }
    })))
}

/// Collections of features ctld does not have, empty (as an Incus server without any):
/// `/1.0/network-acls`, `/1.0/network-allocations`, `/1.0/storage-pools/P/buckets`. Web
/// UIs list them without checking an extension first.
pub async fn none(Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    recursion(&q)?;
    Ok(sync(Vec::<String>::new()))
}

/// `GET /1.0/warnings`: ctl records none.
pub async fn warnings(Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    recursion(&q)?;
    Ok(sync(Vec::<String>::new()))
}
