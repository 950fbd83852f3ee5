//! Storage types (`/1.0/storage-pools`, their `resources` and `volumes`), Incus-shaped.

use serde::{Deserialize, Serialize};

use crate::instance::ConfigMap;

/// A storage pool (`GET /1.0/storage-pools/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePool {
    pub name: String,
    /// `dir` or `btrfs`.
    pub driver: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub used_by: Vec<String>,
    /// `Created`, or `Unavailable` when its filesystem is not there.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub locations: Vec<String>,
}

/// Body of `POST /1.0/storage-pools` (create).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolsPost {
    pub name: String,
    pub driver: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: ConfigMap,
}

/// Body of `PUT /1.0/storage-pools/{name}` (and `PATCH`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolPut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigMap>,
}

/// `GET /1.0/storage-pools/{name}/resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolResources {
    pub space: StoragePoolSpace,
    pub inodes: StoragePoolInodes,
}

/// Bytes of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolSpace {
    #[serde(default)]
    pub used: u64,
    #[serde(default)]
    pub total: u64,
}

/// Inodes of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolInodes {
    #[serde(default)]
    pub used: u64,
    #[serde(default)]
    pub total: u64,
}

/// A storage volume (`GET /1.0/storage-pools/{pool}/volumes/{type}/{name}`). `type` is
/// `custom` for volumes users make, `container` for an instance's root and `image` for an
/// image unpacked in the pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolume {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub used_by: Vec<String>,
    #[serde(default)]
    pub location: String,
    /// Always `filesystem`.
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub created_at: String,
}

/// Where a new volume's content comes from (`source` of a create).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSource {
    /// The volume to copy (`VOLUME` or `VOLUME/SNAPSHOT`).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub name: String,
    /// `copy`, or empty for an empty volume.
    #[serde(rename = "type", default, deserialize_with = "crate::null_as_default")]
    pub kind: String,
    /// The pool of the volume to copy (empty: the same pool).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub pool: String,
    /// Copy without the source's snapshots.
    #[serde(default)]
    pub volume_only: bool,
}

/// Body of `POST /1.0/storage-pools/{pool}/volumes[/custom]` (create or copy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumesPost {
    pub name: String,
    /// `custom` (the only type users create).
    #[serde(rename = "type", default, deserialize_with = "crate::null_as_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: ConfigMap,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub source: StorageVolumeSource,
    /// `filesystem` (the default; `block` is refused).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub content_type: String,
}

/// Body of `PUT /1.0/storage-pools/{pool}/volumes/custom/{name}` (and `PATCH`). A
/// `restore` names a snapshot to bring back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumePut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigMap>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore: String,
}

/// Body of `POST /1.0/storage-pools/{pool}/volumes/custom/{name}` (rename, or move to
/// another pool when `pool` is set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumePost {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool: String,
}

/// A snapshot of a custom volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub created_at: String,
    /// `null` (never) or an RFC 3339 time.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Body of `POST …/volumes/custom/{name}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshotsPost {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Body of `POST …/volumes/custom/{name}/snapshots/{snap}` (rename).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshotPost {
    pub name: String,
}

/// `GET …/volumes/{type}/{name}/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeState {
    pub usage: Option<StorageVolumeStateUsage>,
}

/// A volume's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeStateUsage {
    pub used: u64,
    /// The quota (`size`), 0 when there is none.
    #[serde(default)]
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_clients_send_null_maps_and_sources() -> Result<(), serde_json::Error> {
        let v: StorageVolumesPost = serde_json::from_str(
            r#"{"name":"db","type":"custom","config":null,"source":null,"content_type":""}"#,
        )?;
        assert_eq!((v.name.as_str(), v.kind.as_str()), ("db", "custom"));
        assert!(v.config.is_empty() && v.source.kind.is_empty());
        let p: StoragePoolsPost =
            serde_json::from_str(r#"{"name":"p","driver":"btrfs","config":{"size":"1GiB"}}"#)?;
        assert_eq!(p.config.get("size").map(String::as_str), Some("1GiB"));
        Ok(())
    }
}
