//! `GET /1.0`: what the server is and what it supports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `environment` block of [`Server`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvironment {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub driver_version: String,
    #[serde(default)]
    pub firewall: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub kernel_architecture: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub os_name: String,
    #[serde(default)]
    pub os_version: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub server_clustered: bool,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub server_pid: i64,
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub storage: String,
    #[serde(default)]
    pub storage_version: String,
    /// `v1`, `v2` or `hybrid`: what the daemon detected at start.
    #[serde(default)]
    pub cgroup_version: String,
    /// The server's TLS certificate (PEM), once it has one.
    #[serde(default)]
    pub certificate: String,
    #[serde(default)]
    pub certificate_fingerprint: String,
}

/// `GET /1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub api_extensions: Vec<String>,
    pub api_status: String,
    pub api_version: String,
    pub auth: String,
    #[serde(default)]
    pub auth_methods: Vec<String>,
    pub public: bool,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub environment: ServerEnvironment,
}
