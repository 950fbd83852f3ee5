//! `$CTL_DIR/storage.json`: the storage records (pools, custom volumes and their snapshots)
//! kept beside the database, rewritten atomically after every change, so `ctld recover`
//! can bring back a lost database's pools before the instances on them (a pool on a loop
//! file or a device must be mounted again before its instances' directories are reachable).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::instances::Config;
use crate::db::storage::{PoolRow, VolumeRow, VolumeSnapshotRow};

/// The file's name in the state directory.
pub const FILE: &str = "storage.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub pools: Vec<PoolRecord>,
    pub volumes: Vec<VolumeRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub driver: String,
    pub description: String,
    pub config: Config,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub pool: String,
    pub name: String,
    pub description: String,
    pub config: Config,
    pub created_at: String,
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&PoolRow> for PoolRecord {
    fn from(r: &PoolRow) -> Self {
        PoolRecord {
            name: r.name.clone(),
            driver: r.driver.clone(),
            description: r.description.clone(),
            config: r.config.clone(),
        }
    }
}

impl PoolRecord {
    pub fn row(&self) -> PoolRow {
        PoolRow {
            name: self.name.clone(),
            driver: self.driver.clone(),
            description: self.description.clone(),
            config: self.config.clone(),
        }
    }
}

impl VolumeRecord {
    pub fn of(v: &VolumeRow, snapshots: &[VolumeSnapshotRow]) -> Self {
        VolumeRecord {
            pool: v.pool.clone(),
            name: v.name.clone(),
            description: v.description.clone(),
            config: v.config.clone(),
            created_at: v.created_at.clone(),
            snapshots: snapshots
                .iter()
                .map(|s| SnapshotRecord {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    created_at: s.created_at.clone(),
                    expires_at: s.expires_at.clone(),
                })
                .collect(),
        }
    }

    pub fn row(&self) -> VolumeRow {
        VolumeRow {
            pool: self.pool.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            config: self.config.clone(),
            created_at: self.created_at.clone(),
        }
    }

    pub fn snapshot_rows(&self) -> Vec<VolumeSnapshotRow> {
        self.snapshots
            .iter()
            .map(|s| VolumeSnapshotRow {
                name: s.name.clone(),
                description: s.description.clone(),
                created_at: s.created_at.clone(),
                expires_at: s.expires_at.clone(),
            })
            .collect()
    }
}

/// Write `record` to `dir/storage.json` (0600, through a temporary file, synced, renamed).
pub fn write(dir: &Path, record: &Record) -> std::io::Result<()> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The record in `dir`, if there is one.
pub fn read(dir: &Path) -> std::io::Result<Option<Record>> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(read(dir.path())?, None);
        let r = Record {
            pools: vec![PoolRecord {
                name: "bt".into(),
                driver: "btrfs".into(),
                description: String::new(),
                config: Config::from([("size".to_string(), "1073741824".to_string())]),
            }],
            volumes: vec![VolumeRecord {
                pool: "bt".into(),
                name: "db".into(),
                description: String::new(),
                config: Config::new(),
                created_at: "2026-01-01T00:00:00Z".into(),
                snapshots: vec![SnapshotRecord {
                    name: "s0".into(),
                    description: String::new(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                    expires_at: String::new(),
                }],
            }],
        };
        write(dir.path(), &r)?;
        assert_eq!(read(dir.path())?, Some(r));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        Ok(())
    }
}
