//! `GET /` and `GET /1.0`.

use axum::extract::State;
use axum::response::Response;
use ctl_api::{Server, ServerEnvironment};

use super::{AppState, sync};

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
    "container_backup",
    "container_backup_override_pool",
    "console",
    "container_full",
    "container_exec_recording",
    "container_exec_signal_handling",
    "container_exec_user_group_cwd",
    "directory_manipulation",
    "file_append",
    "file_delete",
    "file_symlinks",
    "container_stop_priority",
    "instance_create_start",
    "instance_get_full",
    "instances",
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

/// `GET /1.0`.
pub async fn get_server(State(state): State<AppState>) -> Response {
    sync(Server {
        api_extensions: API_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        api_status: "stable".into(),
        api_version: ctl_api::API_VERSION.into(),
        auth: "trusted".into(),
        auth_methods: vec!["unix".into()],
        public: false,
        config: Default::default(),
        environment: state.info.environment.clone(),
    })
}
