//! `GET /`, `GET /1.0` and the server configuration (`PUT`/`PATCH /1.0`).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use ctl_api::{Server, ServerEnvironment, ServerPut};

use super::auth::Caller;
use super::{ApiError, AppState, parse_json, sync};

/// Facts about the host gathered once at start-up.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub environment: ServerEnvironment,
}

/// API extensions ctld implements. Only what really works is listed: clients decide what
/// to use from this.
pub const API_EXTENSIONS: &[&str] = &[
    "api_filtering",
    "backup_compression",
    "backup_compression_algorithm",
    "backup_override_name",
    "certificate_description",
    "certificate_project",
    "certificate_token",
    "certificate_update",
    "cluster_member_state",
    "clustering",
    "clustering_evacuation",
    "clustering_join",
    "clustering_join_token",
    "clustering_roles",
    "container_backup",
    "container_backup_override_pool",
    "console",
    "container_full",
    "container_exec_recording",
    "container_exec_signal_handling",
    "container_exec_user_group_cwd",
    "directory_manipulation",
    "explicit_trust_token",
    "file_append",
    "file_delete",
    "file_symlinks",
    "container_stop_priority",
    "instance_create_start",
    "instance_get_full",
    "instances_state_selective_recursion",
    "instances",
    "metadata_configuration",
    "metrics",
    "network",
    "network_leases",
    "network_state",
    "projects",
    "resources",
    "resources_cpu_socket",
    "resources_system",
    "resources_v2",
    "storage",
    "storage_api_local_volume_handling",
    "storage_api_volume_rename",
    "storage_api_volume_snapshots",
    "storage_volume_state",
    "storage_volume_state_total",
    "warnings",
];

impl StaticInfo {
    /// Gather host facts.
    pub fn gather(cgroup_version: &str) -> Self {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os_field = |key: &str| {
            os_release
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        StaticInfo {
            environment: ServerEnvironment {
                addresses: vec![],
                architectures: vec![crate::images::host_architecture().into()],
                driver: "ctl".into(),
                driver_version: env!("CARGO_PKG_VERSION").into(),
                firewall: String::new(),
                kernel: field(|u| u.sysname()),
                kernel_architecture: field(|u| u.machine()),
                kernel_version: field(|u| u.release()),
                os_name: os_field("NAME"),
                os_version: os_field("VERSION_ID"),
                project: "default".into(),
                server: "ctl".into(),
                server_clustered: false,
                server_name: field(|u| u.nodename()),
                server_pid: i64::from(std::process::id()),
                server_version: env!("CARGO_PKG_VERSION").into(),
                storage: "dir".into(),
                storage_version: String::new(),
                cgroup_version: cgroup_version.into(),
                certificate: String::new(),
                certificate_fingerprint: String::new(),
            },
        }
    }
}

/// `GET /`: the supported API versions.
pub async fn root() -> Response {
    sync(["/1.0"])
}

/// `GET /1.0/resources`: the host's CPUs, memory, network cards and disks.
pub async fn resources() -> Result<Response, super::ApiError> {
    let r = tokio::task::spawn_blocking(|| crate::resources::collect(std::path::Path::new("/")))
        .await
        .map_err(|e| crate::instance::InstanceError::Internal(e.to_string()))?;
    Ok(sync(r))
}

/// `GET /1.0`: everything for trusted callers; the API version, extensions and
/// `auth: untrusted` for anyone else (what a client needs before it joins).
pub async fn get_server(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let api_extensions = API_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    let auth_methods = vec!["tls".into()];
    if !caller.trusted() {
        return sync(Server {
            api_extensions,
            api_status: "stable".into(),
            api_version: ctl_api::API_VERSION.into(),
            auth: "untrusted".into(),
            auth_methods,
            public: false,
            config: Default::default(),
            environment: ServerEnvironment::default(),
        });
    }
    let mut environment = state.info.environment.clone();
    environment.addresses = state.remote.addresses().await;
    environment.certificate = state.remote.identity.certificate_pem.clone();
    environment.certificate_fingerprint = state.remote.identity.fingerprint.clone();
    if let Some(me) = state.cluster.me() {
        environment.server_clustered = true;
        environment.server_name = me;
    }
    sync(Server {
        api_extensions,
        api_status: "stable".into(),
        api_version: ctl_api::API_VERSION.into(),
        auth: "trusted".into(),
        auth_methods,
        public: false,
        config: state.remote.config().await,
        environment,
    })
}

/// `PUT /1.0`: replace the server configuration (applied at once: the HTTPS listener is
/// bound, moved or stopped in the request).
pub async fn put_server(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ServerPut = parse_json(&body)?;
    state.remote.set_config(req.config).await?;
    Ok(sync(serde_json::json!({})))
}

/// `PATCH /1.0`: change the keys given (an empty value unsets one).
pub async fn patch_server(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ServerPut = parse_json(&body)?;
    let mut config = state.remote.config().await;
    config.extend(req.config);
    state.remote.set_config(config).await?;
    Ok(sync(serde_json::json!({})))
}
