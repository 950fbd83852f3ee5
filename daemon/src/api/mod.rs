//! HTTP only: the router, request parsing and response shaping. Handlers parse, call one
//! service function, and shape the answer; errors go through [`error::ApiError`].

pub mod auth;
pub mod backups;
pub mod certificates;
pub mod cluster;
pub mod console;
pub mod error;
pub mod events;
pub mod exec;
pub mod files;
pub mod filter;
pub mod images;
pub mod images_transfer;
pub mod instances;
pub mod metadata;
pub mod metrics;
pub mod networks;
pub mod operations;
pub mod profiles;
pub mod projects;
pub mod server_info;
pub mod sessions;
pub mod sftp;
pub mod simplestreams;
pub mod storage;
#[cfg(test)]
mod tests;
pub mod ui;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ctl_api::{Operation, OperationClass, Response as Envelope};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::images::ImageStore;
use crate::instance::{InstanceError, Instances};
use crate::operations::Operations;
pub use error::ApiError;

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub instances: Instances,
    pub images: ImageStore,
    pub ops: Operations,
    pub execs: exec::ExecRegistry,
    pub info: server_info::StaticInfo,
    /// The event bus behind `/1.0/events`.
    pub events: crate::events::Events,
    /// Managed networks.
    pub networks: crate::network::Networks,
    /// Server configuration, the HTTPS listener, the trust store, dashboard sessions.
    pub remote: crate::remote::Remote,
    /// The web UI's files (`/ui/`).
    pub ui: ui::UiAssets,
    /// Clustering: membership, placement, forwarding.
    pub cluster: crate::cluster::Cluster,
}

/// The full API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(server_info::root))
        .route(
            "/1.0",
            get(server_info::get_server)
                .put(server_info::put_server)
                .patch(server_info::patch_server),
        )
        .route(
            "/1.0/certificates",
            get(certificates::list).post(certificates::create),
        )
        .route(
            "/1.0/certificates/{fingerprint}",
            get(certificates::get_one)
                .put(certificates::put)
                .patch(certificates::patch)
                .delete(certificates::delete),
        )
        .route(
            "/1.0/cluster",
            get(cluster::get_cluster).put(cluster::put_cluster),
        )
        .route(
            "/1.0/cluster/members",
            get(cluster::list_members).post(cluster::add_member),
        )
        .route(
            "/1.0/cluster/members/{name}",
            get(cluster::get_member).delete(cluster::delete_member),
        )
        .route(
            "/1.0/cluster/members/{name}/state",
            axum::routing::post(cluster::member_state),
        )
        .route(
            "/1.0/ui/login-links",
            axum::routing::post(sessions::login_link),
        )
        .route("/ui/login", get(sessions::login))
        .route("/ui/logout", axum::routing::post(sessions::logout))
        .route(
            "/1.0/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            "/1.0/instances/{name}",
            get(instances::get_one)
                .post(instances::rename)
                .put(instances::put)
                .patch(instances::patch)
                .delete(instances::delete),
        )
        .route(
            "/1.0/instances/{name}/state",
            get(instances::get_state).put(instances::put_state),
        )
        .route(
            "/1.0/instances/{name}/exec",
            axum::routing::post(exec::post_exec),
        )
        .route(
            "/1.0/instances/{name}/files",
            get(files::get_file)
                .post(files::post_file)
                .delete(files::delete_file),
        )
        .route("/1.0/instances/{name}/sftp", get(sftp::upgrade))
        .route("/1.0/instances/{name}/logs", get(instances::list_logs))
        .route(
            "/1.0/instances/{name}/logs/{file}",
            get(instances::get_log).delete(instances::delete_log),
        )
        .route(
            "/1.0/instances/{name}/snapshots",
            get(instances::list_snapshots).post(instances::create_snapshot),
        )
        .route(
            "/1.0/instances/{name}/snapshots/{snapshot}",
            get(instances::get_snapshot)
                .post(instances::rename_snapshot)
                .put(instances::put_snapshot)
                .patch(instances::patch_snapshot)
                .delete(instances::delete_snapshot),
        )
        .route(
            "/1.0/instances/{name}/backups",
            get(backups::list).post(backups::create),
        )
        .route(
            "/1.0/instances/{name}/backups/{backup}",
            get(backups::get_one)
                .post(backups::rename)
                .delete(backups::delete),
        )
        .route(
            "/1.0/instances/{name}/backups/{backup}/export",
            get(backups::export),
        )
        .route(
            "/1.0/instances/{name}/console",
            get(console::get_log)
                .post(console::attach)
                .delete(console::clear_log),
        )
        .route("/1.0/networks", get(networks::list).post(networks::create))
        .route(
            "/1.0/networks/{name}",
            get(networks::get_one)
                .put(networks::put)
                .patch(networks::patch)
                .delete(networks::delete),
        )
        .route("/1.0/networks/{name}/leases", get(networks::leases))
        .route("/1.0/networks/{name}/state", get(networks::get_state))
        .route("/1.0/profiles", get(profiles::list).post(profiles::create))
        .route(
            "/1.0/profiles/{name}",
            get(profiles::get_one)
                .put(profiles::put)
                .patch(profiles::patch)
                .post(profiles::rename)
                .delete(profiles::delete),
        )
        .route(
            "/1.0/storage-pools",
            get(storage::list).post(storage::create),
        )
        .route(
            "/1.0/storage-pools/{pool}",
            get(storage::get_one)
                .put(storage::put)
                .patch(storage::patch)
                .delete(storage::delete),
        )
        .route(
            "/1.0/storage-pools/{pool}/resources",
            get(storage::resources),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes",
            get(storage::list_volumes).post(storage::create_volume),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes/{kind}",
            get(storage::list_volumes).post(storage::create_volume),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes/{kind}/{name}",
            get(storage::get_volume)
                .put(storage::put_volume)
                .patch(storage::patch_volume)
                .post(storage::rename_volume)
                .delete(storage::delete_volume),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes/{kind}/{name}/state",
            get(storage::volume_state),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes/{kind}/{name}/snapshots",
            get(storage::list_snapshots).post(storage::create_snapshot),
        )
        .route(
            "/1.0/storage-pools/{pool}/volumes/{kind}/{name}/snapshots/{snap}",
            get(storage::get_snapshot)
                .post(storage::rename_snapshot)
                .delete(storage::delete_snapshot),
        )
        .route("/1.0/resources", get(server_info::resources))
        .route("/1.0/metadata/configuration", get(metadata::configuration))
        .route("/1.0/projects", get(projects::list))
        .route("/1.0/projects/{name}", get(projects::get_one))
        .route("/1.0/projects/{name}/state", get(projects::get_state))
        .route("/1.0/warnings", get(projects::warnings))
        .route("/1.0/network-acls", get(projects::none))
        .route("/1.0/network-allocations", get(projects::none))
        .route("/1.0/storage-pools/{pool}/buckets", get(storage::buckets))
        .route("/1.0/events", get(events::get_events))
        .route("/1.0/metrics", get(metrics::get_metrics))
        .route("/1.0/operations", get(operations::list))
        .route(
            "/1.0/operations/{id}",
            get(operations::get_one).delete(operations::cancel),
        )
        .route("/1.0/operations/{id}/wait", get(operations::wait))
        .route("/1.0/operations/{id}/websocket", get(exec::websocket))
        .route(
            "/1.0/images",
            get(images::list).post(images_transfer::post_images),
        )
        .route(
            "/1.0/images/aliases",
            get(images::list_aliases).post(images_transfer::create_alias),
        )
        .route(
            "/1.0/images/aliases/{*name}",
            get(images::get_alias).delete(images_transfer::delete_alias),
        )
        .route(
            "/1.0/images/{fingerprint}",
            get(images::get_one)
                .put(images::put)
                .patch(images::patch)
                .delete(images::delete),
        )
        .route(
            "/1.0/images/{fingerprint}/export",
            get(images_transfer::export),
        )
        .route("/streams/v1/index.json", get(simplestreams::index))
        .route("/streams/v1/images.json", get(simplestreams::catalog))
        .route("/images/{fingerprint}/{file}", get(simplestreams::file))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(projects::only_default_project))
        // After authentication: another member's instances and operations are its own.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cluster::route::route,
        ))
        // Outermost: who may ask anything at all.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("not found".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed".into())
}

/// A synchronous success with `metadata`.
pub fn sync<T: Serialize>(metadata: T) -> Response {
    let value = serde_json::to_value(metadata).unwrap_or(serde_json::Value::Null);
    axum::Json(Envelope::sync(value)).into_response()
}

/// `202 Accepted` with the operation and its `Location`.
pub fn accepted(op: &Operation) -> Response {
    let url = format!("/1.0/operations/{}", op.id);
    let value = serde_json::to_value(op).unwrap_or(serde_json::Value::Null);
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(Envelope::async_op(url.clone(), value)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Parse a JSON body; malformed JSON is a 400 in the error envelope.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

/// `recursion` from the query (0 when absent).
pub fn recursion(q: &HashMap<String, String>) -> Result<u8, ApiError> {
    recursion_fields(q).map(|(level, _)| level)
}

/// `recursion` and, in LXD's `recursion=2;fields=state.network,state.disk` form
/// (`instances_state_selective_recursion`), the state fields asked for.
pub fn recursion_fields(
    q: &HashMap<String, String>,
) -> Result<(u8, Option<Vec<String>>), ApiError> {
    let raw = q.get("recursion").map(String::as_str).unwrap_or("");
    let (level, fields) = match raw.split_once(';') {
        Some((level, rest)) => {
            let list = rest.strip_prefix("fields=").ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid recursion \"{raw}\": use N or N;fields=a,b"
                ))
            })?;
            let fields = list
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect();
            (level, Some(fields))
        }
        None => (raw, None),
    };
    Ok((recursion_level(level)?, fields))
}

fn recursion_level(v: &str) -> Result<u8, ApiError> {
    match Some(v).filter(|v| !v.is_empty()) {
        None | Some("0") => Ok(0),
        Some("1") => Ok(1),
        Some("2") => Ok(2),
        Some(other) => Err(ApiError::BadRequest(format!(
            "invalid recursion \"{other}\": use 0, 1 or 2"
        ))),
    }
}

/// The `filter` of a collection request (`api_filtering`), if any.
pub fn filter(q: &HashMap<String, String>) -> Result<Option<filter::Filter>, ApiError> {
    filter::parse(q.get("filter").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid filter: {e}")))
}

/// Keep the items of `items` whose JSON passes `filter`.
pub fn apply_filter<T: Serialize>(items: Vec<T>, filter: Option<&filter::Filter>) -> Vec<T> {
    match filter {
        None => items,
        Some(f) => items
            .into_iter()
            .filter(|i| f.matches(&serde_json::to_value(i).unwrap_or_default()))
            .collect(),
    }
}

/// The read-only router served on `--http-address`: the simplestreams tree of public
/// images, nothing else.
pub fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/streams/v1/index.json", get(simplestreams::index))
        .route("/streams/v1/images.json", get(simplestreams::catalog))
        .route("/images/{fingerprint}/{file}", get(simplestreams::file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Run `work` as a background task operation and answer 202 at once.
pub fn spawn_task<F>(
    state: &AppState,
    description: &str,
    resources: BTreeMap<String, Vec<String>>,
    work: F,
) -> Response
where
    F: Future<Output = Result<(), InstanceError>> + Send + 'static,
{
    spawn_task_with(state, description, resources, |_| work)
}

/// Like [`spawn_task`], for work that reports progress through its operation's metadata.
pub fn spawn_task_with<W, F>(
    state: &AppState,
    description: &str,
    resources: BTreeMap<String, Vec<String>>,
    work: W,
) -> Response
where
    W: FnOnce(crate::operations::OpHandle) -> F,
    F: Future<Output = Result<(), InstanceError>> + Send + 'static,
{
    let (handle, op) = state.ops.create(
        OperationClass::Task,
        description,
        resources,
        serde_json::Value::Null,
        None,
    );
    let desc = description.to_string();
    let work = work(handle.clone());
    tokio::spawn(async move {
        match work.await {
            Ok(()) => handle.succeed(),
            Err(e) => {
                tracing::warn!(operation = %handle.id, %desc, error = %e, "operation failed");
                handle.fail(e.to_string());
            }
        }
    });
    accepted(&op)
}

/// `{"instances": ["/1.0/instances/<name>"]}`.
pub fn instance_resources(name: &str) -> BTreeMap<String, Vec<String>> {
    let mut r = BTreeMap::new();
    r.insert(
        "instances".to_string(),
        vec![format!("/1.0/instances/{name}")],
    );
    r
}
