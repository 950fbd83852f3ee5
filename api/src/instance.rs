//! Instance types (`/1.0/instances`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::StatusCode;

/// Config map: string keys to string values, sorted for stable output.
pub type ConfigMap = BTreeMap<String, String>;
/// Device map: device name to its string key/value config.
pub type DeviceMap = BTreeMap<String, BTreeMap<String, String>>;

/// An instance as `GET /1.0/instances/{name}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub status: String,
    pub status_code: StatusCode,
    pub created_at: String,
    #[serde(default)]
    pub last_used_at: String,
    #[serde(default)]
    pub location: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub architecture: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub stateful: bool,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
    #[serde(default)]
    pub expanded_config: ConfigMap,
    #[serde(default)]
    pub expanded_devices: DeviceMap,
    #[serde(default)]
    pub project: String,
}

/// A snapshot, as `GET /1.0/instances/{name}/snapshots/{snapshot}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshot {
    pub name: String,
    pub created_at: String,
    /// When the snapshot is deleted (RFC 3339), or the zero time: never.
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub last_used_at: String,
    pub architecture: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub stateful: bool,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
    #[serde(default)]
    pub expanded_config: ConfigMap,
    #[serde(default)]
    pub expanded_devices: DeviceMap,
    /// Bytes the snapshot's files take (its copy of the container's changes).
    #[serde(default)]
    pub size: i64,
}

/// `POST /1.0/instances/{name}/snapshots`: a name (empty: from `snapshots.pattern`, by
/// default `snapN`), never stateful, and an optional expiry (absent: from
/// `snapshots.expiry.manual`, else `snapshots.expiry`; the zero time: never).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshotsPost {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub stateful: bool,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `PUT`/`PATCH /1.0/instances/{name}/snapshots/{snapshot}`: what may change of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshotPut {
    /// RFC 3339; the zero time: never. Absent from a `PATCH`: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// An instance with its state, as `recursion=2` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceFull {
    #[serde(flatten)]
    pub instance: Instance,
    pub state: Option<InstanceState>,
    #[serde(default)]
    pub snapshots: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub backups: Option<Vec<serde_json::Value>>,
}

/// Where a new instance's root filesystem comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSource {
    /// `image` or `copy`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `copy`: the instance (`NAME`) or snapshot (`NAME/SNAPSHOT`) copied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `copy`: leave the source's snapshots behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instance_only: bool,
    /// `copy`: a live migration (refused: no CRIU).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
    /// `copy`: refresh an existing copy (refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub alias: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
}

/// Body of `POST /1.0/instances`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancesPost {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source: InstanceSource,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Start the instance once created (Incus `start`).
    #[serde(default)]
    pub start: bool,
}

/// Body of `POST /1.0/instances/{name}`: a rename (`migration` is refused: one host).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePost {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub migration: bool,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub instance_only: bool,
    /// A target storage pool (a move between pools; refused: one pool).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool: String,
    /// A target project (refused: only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
}

/// Body of `PUT /1.0/instances/{name}` (and, with every field optional, `PATCH`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Restore this snapshot (the rest of the request is then ignored, as in Incus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// `action` of `PUT /1.0/instances/{name}/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateAction {
    Start,
    Stop,
    Restart,
    Freeze,
    Unfreeze,
}

/// Body of `PUT /1.0/instances/{name}/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatePut {
    pub action: StateAction,
    /// Seconds to wait for a clean shutdown before killing (-1: the server default).
    #[serde(default = "default_timeout")]
    pub timeout: i64,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub stateful: bool,
}

fn default_timeout() -> i64 {
    -1
}

/// CPU part of [`InstanceState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStateCpu {
    /// CPU time used, in nanoseconds.
    pub usage: i64,
}

/// Memory part of [`InstanceState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStateMemory {
    pub usage: i64,
    pub usage_peak: i64,
    #[serde(default)]
    pub swap_usage: i64,
    #[serde(default)]
    pub swap_usage_peak: i64,
    /// What the instance may use: its `limits.memory`, else the host's memory (0 when
    /// stopped), as Incus.
    #[serde(default)]
    pub total: i64,
}

/// `GET /1.0/instances/{name}/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub status: String,
    pub status_code: StatusCode,
    /// PID of the instance's init as the host sees it (0 when stopped).
    pub pid: i64,
    pub processes: i64,
    pub cpu: InstanceStateCpu,
    pub memory: InstanceStateMemory,
    #[serde(default)]
    pub disk: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub network: Option<BTreeMap<String, serde_json::Value>>,
}

/// Body of `POST /1.0/instances/{name}/exec`. Clients send `null` for fields they leave
/// unset (pylxd does): that means the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceExecPost {
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub interactive: bool,
    #[serde(
        rename = "wait-for-websocket",
        default,
        deserialize_with = "crate::null_as_default"
    )]
    pub wait_for_websocket: bool,
    #[serde(
        rename = "record-output",
        default,
        deserialize_with = "crate::null_as_default"
    )]
    pub record_output: bool,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub width: u32,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub height: u32,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub user: u32,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub group: u32,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub cwd: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exec_post_uses_incus_field_names() {
        let v = json!({"command": ["true"], "wait-for-websocket": true, "interactive": false,
                       "environment": {"A": "b"}});
        let p: InstanceExecPost = serde_json::from_value(v).unwrap_or_default();
        assert!(p.wait_for_websocket);
        assert_eq!(p.command, vec!["true".to_string()]);
        assert_eq!(p.environment.get("A").map(String::as_str), Some("b"));
    }

    #[test]
    fn exec_post_takes_nulls_as_defaults() {
        let v = json!({"command": ["ls"], "environment": null, "user": null, "group": null,
                       "width": null, "height": null, "cwd": null, "interactive": false,
                       "wait-for-websocket": true, "record-output": null});
        let p: Option<InstanceExecPost> = serde_json::from_value(v).ok();
        assert_eq!(
            p.map(|p| (p.user, p.cwd, p.environment.len())),
            Some((0, String::new(), 0))
        );
    }

    #[test]
    fn state_put_defaults_timeout() {
        let p: Option<InstanceStatePut> = serde_json::from_value(json!({"action": "stop"})).ok();
        assert_eq!(
            p.map(|p| (p.action, p.timeout, p.force)),
            Some((StateAction::Stop, -1, false))
        );
        assert!(serde_json::from_value::<InstanceStatePut>(json!({"action": "dance"})).is_err());
    }

    #[test]
    fn instances_post_source_alias() {
        let v = json!({"name": "c1", "source": {"type": "image", "alias": "busybox"}});
        let p: InstancesPost = serde_json::from_value(v).unwrap_or_default();
        assert_eq!(p.source.alias, "busybox");
        assert_eq!(p.source.kind, "image");
    }
}

/// An instance backup, as `GET /1.0/instances/{name}/backups/{backup}` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackup {
    pub name: String,
    pub created_at: String,
    /// When the backup may be removed (the zero time: never).
    #[serde(default)]
    pub expires_at: String,
    /// Whether the backup leaves the instance's snapshots out.
    #[serde(default)]
    pub instance_only: bool,
    /// Always false: backups are portable tarballs, never a storage driver's dump.
    #[serde(default)]
    pub optimized_storage: bool,
}

/// `POST /1.0/instances/{name}/backups`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackupsPost {
    /// Empty: the first free `backupN`.
    #[serde(default)]
    pub name: String,
    /// RFC 3339; empty or the zero time: never expires.
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires_at: String,
    #[serde(default)]
    pub instance_only: bool,
    #[serde(default)]
    pub optimized_storage: bool,
    /// `gzip` (empty), `none`, `xz`, `zstd`...
    #[serde(default, deserialize_with = "null_as_default")]
    pub compression_algorithm: String,
}

/// `POST /1.0/instances/{name}/backups/{backup}`: rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackupPost {
    pub name: String,
}

fn null_as_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}
