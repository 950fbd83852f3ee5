//! `backup/index.yaml` of an Incus instance backup tarball: what the backup holds (name,
//! storage backend, snapshot names) and, under `config`, the instance's and its snapshots'
//! records. Pure: parsed and generated here, checked by [`BackupIndex::plan`].
//!
//! The tarball around it (Incus' `dir` backend layout, non-optimized):
//!
//! ```text
//! backup/index.yaml
//! backup/snapshots/<snapshot>/rootfs/...   (oldest first)
//! backup/container/backup.yaml             (the same records, for older readers)
//! backup/container/rootfs/...
//! ```
//!
//! Each rootfs is the instance's whole filesystem as the container sees it (image layer and
//! its own changes merged), owned by the ids inside the container.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::InstanceError;

/// The backend ctld writes (the layout of Incus' `dir` storage driver).
pub const BACKEND: &str = "dir";
/// The storage pool name written (ctld has one, unnamed).
pub const POOL: &str = "default";

/// `backup/index.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupIndex {
    pub name: String,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub pool: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized_header: Option<bool>,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BackupConfig>,
}

/// The records a backup carries (Incus' `backup.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<BackupInstance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<BackupInstance>,
    /// The pool the instance was on (written for Incus; ignored on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<serde_yaml_ng::Value>,
    /// The profiles applied (written for Incus; the importing host's own are used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<serde_yaml_ng::Value>,
}

/// An instance's or a snapshot's record, as Incus writes `api.Instance` and
/// `api.InstanceSnapshot` (the fields ctld reads; the others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupInstance {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub stateful: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub profiles: Vec<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "device_map")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(
        default,
        skip_deserializing,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub expanded_config: BTreeMap<String, String>,
    #[serde(
        default,
        skip_deserializing,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub expanded_devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "scalar_string")]
    pub created_at: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A YAML scalar as the string Incus meant (`limits.cpu: 2` is `"2"`); null is empty.
fn scalar(v: serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(serde_yaml_ng::Value::deserialize(d)?)
        .ok_or_else(|| serde::de::Error::custom("expected a scalar"))
}

fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, serde_yaml_ng::Value>> = Option::deserialize(d)?;
    m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            scalar(v).map(|v| (k.clone(), v)).ok_or_else(|| {
                serde::de::Error::custom(format!("config key \"{k}\": not a scalar"))
            })
        })
        .collect()
}

fn device_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, D::Error> {
    let m: Option<BTreeMap<String, Option<BTreeMap<String, serde_yaml_ng::Value>>>> =
        Option::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (dev, keys) in m.unwrap_or_default() {
        let mut dm = BTreeMap::new();
        for (k, v) in keys.unwrap_or_default() {
            let v = scalar(v).ok_or_else(|| {
                serde::de::Error::custom(format!("device \"{dev}\" key \"{k}\": not a scalar"))
            })?;
            dm.insert(k, v);
        }
        out.insert(dev, dm);
    }
    Ok(out)
}

/// What an import makes, from a checked index.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRecords {
    /// The new instance's name.
    pub name: String,
    pub instance: BackupInstance,
    /// The snapshots, in the index's order, each with its record.
    pub snapshots: Vec<BackupInstance>,
}

fn invalid(msg: impl Into<String>) -> InstanceError {
    InstanceError::Invalid(format!("invalid backup: {}", msg.into()))
}

/// A snapshot name as a backup may carry it: Incus writes `snap0`, older ones
/// `instance/snap0`.
fn short_snapshot_name(name: &str) -> &str {
    name.rsplit_once('/').map_or(name, |(_, s)| s)
}

impl BackupIndex {
    /// Parse `index.yaml`.
    pub fn parse(text: &[u8]) -> Result<BackupIndex, InstanceError> {
        serde_yaml_ng::from_slice(text).map_err(|e| invalid(format!("index.yaml: {e}")))
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> Result<String, InstanceError> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| InstanceError::Internal(format!("index.yaml: {e}")))
    }

    /// Check the index of an uploaded backup against what its tarball held and decide the
    /// records: a container (not a VM, not optimized), a valid instance name (`rename`
    /// replaces the backup's), valid snapshot names each with its rootfs in the tarball and
    /// none without a listing. `container_yaml` (`backup/container/backup.yaml`) stands in
    /// for a missing `config`, as older Incus and LXD backups have it.
    pub fn plan(
        &self,
        container_yaml: Option<&[u8]>,
        rename: Option<&str>,
        has_rootfs: bool,
        rootfs_snapshots: &[String],
    ) -> Result<ImportRecords, InstanceError> {
        if !self.kind.is_empty() && self.kind != "container" {
            return Err(invalid(format!(
                "type \"{}\" is not supported (only container)",
                self.kind
            )));
        }
        if self.optimized == Some(true) {
            return Err(invalid(
                "optimized (storage driver) backups are not supported",
            ));
        }
        let config = match (&self.config, container_yaml) {
            (Some(c), _) if c.container.is_some() => c.clone(),
            (_, Some(text)) => serde_yaml_ng::from_slice(text)
                .map_err(|e| invalid(format!("container/backup.yaml: {e}")))?,
            _ => BackupConfig::default(),
        };
        let Some(instance) = config.container else {
            return Err(invalid("it has no instance record (config.container)"));
        };
        let name = rename.unwrap_or(&self.name).to_string();
        super::name::validate(&name)?;
        if !has_rootfs {
            return Err(invalid("it has no backup/container/rootfs"));
        }
        let mut snapshots = Vec::new();
        for listed in &self.snapshots {
            let snap = short_snapshot_name(listed);
            super::snapshots::check_name(snap)?;
            if snapshots.iter().any(|s: &BackupInstance| s.name == snap) {
                return Err(invalid(format!("snapshot \"{snap}\" is listed twice")));
            }
            if !rootfs_snapshots.iter().any(|s| s == snap) {
                return Err(invalid(format!(
                    "snapshot \"{snap}\" has no backup/snapshots/{snap}/rootfs"
                )));
            }
            let mut record = config
                .snapshots
                .iter()
                .find(|s| short_snapshot_name(&s.name) == snap)
                .cloned()
                .unwrap_or_else(|| BackupInstance {
                    config: instance.config.clone(),
                    devices: instance.devices.clone(),
                    profiles: instance.profiles.clone(),
                    ..BackupInstance::default()
                });
            record.name = snap.to_string();
            snapshots.push(record);
        }
        if let Some(extra) = rootfs_snapshots
            .iter()
            .find(|s| !snapshots.iter().any(|r| &r.name == *s))
        {
            return Err(invalid(format!(
                "backup/snapshots/{extra} is not listed in index.yaml"
            )));
        }
        Ok(ImportRecords {
            name,
            instance,
            snapshots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index as Incus 6 writes it for a `dir` pool (abridged, real field names).
    const INCUS_INDEX: &str = r#"name: c1
backend: dir
pool: default
snapshots:
- snap0
optimized: false
optimized_header: false
type: container
config:
  container:
    architecture: x86_64
    config:
      image.os: Alpine
      limits.cpu: 2
      volatile.eth0.hwaddr: 00:16:3e:aa:bb:cc
      volatile.last_state.idmap: '[{"Isuid":true,"Isgid":false,"Hostid":1000000,"Nsid":0,"Maprange":1000000000}]'
    devices:
      root:
        path: /
        pool: default
        type: disk
    ephemeral: false
    profiles:
    - default
    stateful: false
    description: ""
    created_at: 2024-05-01T10:00:00.123456789Z
    name: c1
    status: Stopped
    status_code: 102
    type: container
  snapshots:
  - architecture: x86_64
    config:
      image.os: Alpine
    created_at: 2024-05-01T11:00:00Z
    devices: {}
    ephemeral: false
    profiles:
    - default
    name: snap0
    stateful: false
    size: -1
  pool:
    name: default
    driver: dir
  profiles:
  - name: default
    config: {}
"#;

    #[test]
    fn an_incus_index_is_read() -> Result<(), InstanceError> {
        let index = BackupIndex::parse(INCUS_INDEX.as_bytes())?;
        assert_eq!(index.name, "c1");
        assert_eq!(index.backend, "dir");
        assert_eq!(index.snapshots, ["snap0"]);
        let plan = index.plan(None, None, true, &["snap0".to_string()])?;
        assert_eq!(plan.name, "c1");
        assert_eq!(plan.instance.config["limits.cpu"], "2");
        assert_eq!(
            plan.instance.config["volatile.eth0.hwaddr"],
            "00:16:3e:aa:bb:cc"
        );
        assert_eq!(plan.instance.devices["root"]["type"], "disk");
        assert_eq!(plan.instance.created_at, "2024-05-01T10:00:00.123456789Z");
        assert_eq!(plan.snapshots.len(), 1);
        assert_eq!(plan.snapshots[0].name, "snap0");
        assert_eq!(plan.snapshots[0].config["image.os"], "Alpine");
        // A new name replaces the backup's.
        assert_eq!(
            index.plan(None, Some("c2"), true, &["snap0".into()])?.name,
            "c2"
        );
        Ok(())
    }

    #[test]
    fn a_generated_index_reads_back_the_same() -> Result<(), InstanceError> {
        let instance = BackupInstance {
            name: "web".into(),
            architecture: "x86_64".into(),
            profiles: vec!["default".into()],
            config: BTreeMap::from([("limits.memory".into(), "64MiB".into())]),
            created_at: "2025-01-01T00:00:00Z".into(),
            kind: "container".into(),
            ..BackupInstance::default()
        };
        let snap = BackupInstance {
            name: "s1".into(),
            config: BTreeMap::from([("limits.memory".into(), "32MiB".into())]),
            ..BackupInstance::default()
        };
        let index = BackupIndex {
            name: "web".into(),
            backend: BACKEND.into(),
            pool: POOL.into(),
            snapshots: vec!["s1".into()],
            optimized: Some(false),
            optimized_header: Some(false),
            kind: "container".into(),
            config: Some(BackupConfig {
                container: Some(instance.clone()),
                snapshots: vec![snap.clone()],
                pool: None,
                profiles: vec![],
            }),
        };
        let yaml = index.to_yaml()?;
        assert!(yaml.contains("type: container"), "{yaml}");
        assert!(yaml.contains("backend: dir"), "{yaml}");
        let back = BackupIndex::parse(yaml.as_bytes())?;
        assert_eq!(back, index);
        let plan = back.plan(None, None, true, &["s1".into()])?;
        assert_eq!(plan.instance, instance);
        assert_eq!(plan.snapshots, [snap]);
        Ok(())
    }

    #[test]
    fn bad_indexes_are_refused() -> Result<(), InstanceError> {
        let ok = BackupIndex::parse(INCUS_INDEX.as_bytes())?;
        let snaps = ["snap0".to_string()];
        let refused = |index: &BackupIndex, rename: Option<&str>, snaps: &[String]| {
            index.plan(None, rename, true, snaps).is_err()
        };
        // A name that is a path, or no hostname.
        for name in ["../c2", "c1/../../etc", "", "UPPER", "a/b"] {
            let mut i = ok.clone();
            i.name = name.into();
            assert!(refused(&i, None, &snaps), "{name}");
            assert!(refused(&ok, Some(name), &snaps), "{name}");
        }
        // Snapshot names that are paths, listed without a rootfs, or a rootfs not listed.
        for snap in ["../x", ".hidden", "a/../../b/c"] {
            let mut i = ok.clone();
            i.snapshots = vec![snap.into()];
            assert!(refused(&i, None, &[snap.to_string()]), "{snap}");
        }
        assert!(refused(&ok, None, &[]));
        assert!(refused(&ok, None, &["snap0".into(), "snap1".into()]));
        let mut twice = ok.clone();
        twice.snapshots = vec!["snap0".into(), "snap0".into()];
        assert!(refused(&twice, None, &snaps));
        // Not a container, optimized, no record, no rootfs.
        let mut vm = ok.clone();
        vm.kind = "virtual-machine".into();
        assert!(refused(&vm, None, &snaps));
        let mut opt = ok.clone();
        opt.optimized = Some(true);
        assert!(refused(&opt, None, &snaps));
        let mut bare = ok.clone();
        bare.config = None;
        assert!(refused(&bare, None, &snaps));
        assert!(ok.plan(None, None, false, &snaps).is_err());
        assert!(BackupIndex::parse(b"name: [unclosed").is_err());
        assert!(
            BackupIndex::parse(b"config:\n  container:\n    name: c\n    config:\n      k: [1]\n")
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn an_older_backup_describes_the_instance_in_container_backup_yaml() -> Result<(), InstanceError>
    {
        let index = BackupIndex::parse(b"name: old\nbackend: dir\npool: default\n")?;
        let yaml =
            b"container:\n  name: old\n  architecture: x86_64\n  config:\n    limits.cpu: \"1\"\n";
        let plan = index.plan(Some(yaml), None, true, &[])?;
        assert_eq!(plan.name, "old");
        assert_eq!(plan.instance.config["limits.cpu"], "1");
        Ok(())
    }
}
