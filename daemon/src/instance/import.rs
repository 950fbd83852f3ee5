//! Creating an instance from an uploaded backup tarball (`POST /1.0/instances` with an
//! `application/octet-stream` body, as Incus' `createFromBackup`).
//!
//! Before the request is answered, the upload is unpacked into `$CTL_DIR/tmp` by the
//! hardened image unpacker ([`crate::images::unpack::unpack_backup`]) and its index checked
//! ([`super::backup_index::BackupIndex::plan`]): a hostile or broken tarball is a 400 and
//! leaves nothing (the work directory goes with the request). The operation then moves the
//! unpacked trees into place and writes the records.
//!
//! Layout of an imported instance: its lower layer is the empty image
//! ([`crate::images::ImageStore::ensure_empty`]) and its upper layer the backup's whole
//! rootfs; each snapshot's upper layer is the snapshot's whole rootfs. Start, snapshots,
//! restore, publish, export and delete then work as for any instance. Files keep the
//! owners the tarball gives them (the container's own ids), recorded as unshifted
//! (`volatile.last_state.idmap` `[]`), so the first start shifts them into the new
//! instance's id map. The config is kept as in the backup (volatile MACs included, as
//! Incus does) except what belongs to the old host: its id map (chosen again at start), its
//! host-side NIC names, and a root disk device (ctld has no storage pools).
//!
//! Crash consistency: the instance create intent is written before the directory is moved
//! into `containers/`, and ends after the rows (instance and snapshots, one transaction) and
//! the backup file; the start-up reconcile removes a directory whose import never got its
//! row, as for a create.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::backup_index::{BackupIndex, BackupInstance, ImportRecords};
use super::{InstanceError, Instances, backup, idmap, now_rfc3339};
use crate::db::intents::Kind;
use crate::db::{self, DbError, snapshots::SnapshotRow};
use crate::images::transfer::WorkDir;
use crate::images::unpack::unpack_backup_file;
use crate::worker::WorkerError;

/// An uploaded backup, unpacked and checked, waiting for its operation. The name is
/// reserved until it is imported or dropped.
#[derive(Debug)]
pub struct PreparedImport {
    pub name: String,
    work: WorkDir,
    records: ImportRecords,
}

/// Config keys of the old host, dropped on import.
fn host_specific(key: &str) -> bool {
    key == idmap::VOLATILE_BASE
        || key == idmap::VOLATILE_CURRENT
        || (key.starts_with("volatile.") && key.ends_with(".host_name"))
}

/// The config an imported record gets (see the module docs).
fn imported_config(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut cfg: BTreeMap<String, String> = config
        .iter()
        .filter(|(k, _)| !host_specific(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cfg.insert(idmap::VOLATILE_ON_DISK.into(), idmap::to_json(None));
    // Imports land on the `default` pool (the root disk is dropped too).
    cfg.insert(
        crate::storage::VOLATILE_POOL.into(),
        crate::storage::DEFAULT_POOL.into(),
    );
    cfg
}

/// The devices an imported record gets: without the root disk.
fn imported_devices(
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    devices
        .iter()
        .filter(|(_, d)| {
            !(d.get("type").map(String::as_str) == Some("disk")
                && d.get("path").map(String::as_str) == Some("/"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn profiles_of(b: &BackupInstance) -> Vec<String> {
    if b.profiles.is_empty() {
        vec!["default".to_string()]
    } else {
        b.profiles.clone()
    }
}

fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Instances {
    /// Unpack and check the backup tarball `file` (inside `work`, which goes when the
    /// returned import is dropped), named `rename` or as the backup says. Errors are the
    /// client's (400; 409 when the name is taken) and leave nothing behind.
    pub async fn plan_import(
        &self,
        work: WorkDir,
        file: PathBuf,
        rename: Option<String>,
    ) -> Result<PreparedImport, InstanceError> {
        let dest = work.path().join("unpacked");
        let limits = self.images.limits();
        let unpacked = {
            let dest = dest.clone();
            tokio::task::spawn_blocking(move || unpack_backup_file(&file, &dest, &limits))
                .await
                .map_err(|e| InstanceError::Internal(e.to_string()))??
        };
        if !unpacked.skipped.is_empty() {
            tracing::info!(skipped = ?unpacked.skipped, "backup entries not unpacked");
        }
        let index = unpacked
            .index
            .as_deref()
            .ok_or_else(|| InstanceError::Invalid("invalid backup: no backup/index.yaml".into()))
            .and_then(BackupIndex::parse)?;
        let records = index.plan(
            unpacked.container_yaml.as_deref(),
            rename.as_deref().filter(|n| !n.is_empty()),
            unpacked.has_container,
            &unpacked.snapshots,
        )?;
        let cfg = imported_config(&records.instance.config);
        super::config::validate(&cfg, &cfg, &self.host)?;
        let devices = imported_devices(&records.instance.devices);
        self.check_devices(&records.name, &profiles_of(&records.instance), &devices)
            .await?;
        self.reserve(&records.name).await?;
        Ok(PreparedImport {
            name: records.name.clone(),
            work,
            records,
        })
    }

    /// Create the instance a [`PreparedImport`] holds (the name is released after).
    pub async fn import(&self, prepared: PreparedImport) -> Result<(), InstanceError> {
        let name = prepared.name.clone();
        let result = self.import_inner(&prepared).await;
        self.release(&name);
        result?;
        self.events
            .instance("instance-created", &name, BTreeMap::new());
        Ok(())
    }

    async fn import_inner(&self, prepared: &PreparedImport) -> Result<(), InstanceError> {
        let name = &prepared.name;
        let records = &prepared.records;
        let fingerprint = self.images.ensure_empty().await?;
        // Until the record exists, no profile it names can go or change.
        let _profiles = self.profiles_lock.lock().await;
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let dir = self.paths.container(name);
        if backup::holds_container(&dir) {
            return Err(InstanceError::Unrecorded(name.clone()));
        }
        if dir.exists() {
            // Left over from a create that died before its row: no create finished there.
            let d = dir.clone();
            self.blocking_worker(move |w| w.remove_container_dir(&d))
                .await?;
        }
        db::intents::begin(&self.db, Kind::InstanceCreate, name).await?;
        let moved = {
            let (dir, unpacked) = (dir.clone(), prepared.work.path().join("unpacked"));
            let snapshots: Vec<String> = records.snapshots.iter().map(|s| s.name.clone()).collect();
            self.blocking_worker(move |w| {
                w.prepare_container_dir(&dir, &crate::worker::Placement::default(), None)?;
                let upper = dir.join("upper");
                std::fs::remove_dir(&upper).map_err(io_at(&upper))?;
                let from = unpacked.join("container");
                std::fs::rename(&from, &upper).map_err(io_at(&upper))?;
                let snaps = dir.join("snapshots");
                std::fs::create_dir_all(&snaps).map_err(io_at(&snaps))?;
                for s in snapshots {
                    let to = snaps.join(&s);
                    std::fs::create_dir(&to).map_err(io_at(&to))?;
                    let from = unpacked.join("snapshots").join(&s);
                    let upper = to.join("upper");
                    std::fs::rename(&from, &upper).map_err(io_at(&upper))?;
                }
                Ok(())
            })
            .await
        };
        let undo = |dir: PathBuf| async move {
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&dir))
                .await;
        };
        if let Err(e) = moved {
            undo(dir).await;
            let _ = db::intents::finish(&self.db, Kind::InstanceCreate, name).await;
            return Err(e);
        }
        let b = &records.instance;
        let cfg = imported_config(&b.config);
        let devices = imported_devices(&b.devices);
        let profiles = profiles_of(b);
        let created_at = if b.created_at.is_empty() {
            now_rfc3339()
        } else {
            b.created_at.clone()
        };
        let architecture = if b.architecture.is_empty() {
            crate::images::host_architecture().to_string()
        } else {
            b.architecture.clone()
        };
        let snapshot_rows: Vec<SnapshotRow> = records
            .snapshots
            .iter()
            .map(|s| SnapshotRow {
                instance: name.clone(),
                name: s.name.clone(),
                created_at: if s.created_at.is_empty() {
                    now_rfc3339()
                } else {
                    s.created_at.clone()
                },
                config: imported_config(&s.config),
                devices: imported_devices(&s.devices),
                profiles: profiles_of(s),
                expires_at: String::new(),
            })
            .collect();
        let inserted = async {
            let mut tx = self.db.begin().await?;
            db::instances::insert_row(
                &mut *tx,
                &db::NewInstance {
                    name,
                    description: &b.description,
                    architecture: &architecture,
                    ephemeral: false,
                    image_fingerprint: &fingerprint,
                    config: &cfg,
                    devices: &devices,
                    profiles: &profiles,
                    created_at: &created_at,
                },
            )
            .await?;
            for s in &snapshot_rows {
                db::snapshots::insert(&mut *tx, s).await?;
            }
            tx.commit().await?;
            Ok::<(), DbError>(())
        }
        .await;
        if let Err(e) = inserted {
            undo(dir).await;
            let _ = db::intents::finish(&self.db, Kind::InstanceCreate, name).await;
            return Err(match e {
                DbError::Conflict(_) => InstanceError::AlreadyExists(name.clone()),
                e => e.into(),
            });
        }
        let nics = self.check_devices(name, &profiles, &devices).await?.nics;
        let finished = async {
            self.networks.sync_leases(name, &nics, &cfg).await?;
            self.save_backup(name).await
        }
        .await;
        if let Err(e) = finished {
            let _ = db::instances::delete(&self.db, name).await;
            undo(dir).await;
            let _ = db::intents::finish(&self.db, Kind::InstanceCreate, name).await;
            return Err(e);
        }
        db::intents::finish(&self.db, Kind::InstanceCreate, name).await?;
        tracing::info!(instance = %name, snapshots = records.snapshots.len(), "imported from a backup");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_record_drops_what_belongs_to_the_old_host() {
        let cfg = BTreeMap::from([
            ("limits.memory".to_string(), "64MiB".to_string()),
            (
                "volatile.eth0.hwaddr".to_string(),
                "00:16:3e:00:00:01".to_string(),
            ),
            (
                "volatile.eth0.host_name".to_string(),
                "veth1234".to_string(),
            ),
            (idmap::VOLATILE_BASE.to_string(), "1000000".to_string()),
            (idmap::VOLATILE_CURRENT.to_string(), "[]".to_string()),
            (
                idmap::VOLATILE_ON_DISK.to_string(),
                r#"[{"Isuid":true,"Isgid":true,"Hostid":1000000,"Nsid":0,"Maprange":65536}]"#
                    .to_string(),
            ),
        ]);
        let got = imported_config(&cfg);
        assert_eq!(got["limits.memory"], "64MiB");
        assert_eq!(got["volatile.eth0.hwaddr"], "00:16:3e:00:00:01");
        assert!(!got.contains_key("volatile.eth0.host_name"));
        assert!(!got.contains_key(idmap::VOLATILE_BASE));
        assert!(!got.contains_key(idmap::VOLATILE_CURRENT));
        assert_eq!(got[idmap::VOLATILE_ON_DISK], "[]");
        let devices = BTreeMap::from([
            (
                "root".to_string(),
                BTreeMap::from([
                    ("type".to_string(), "disk".to_string()),
                    ("path".to_string(), "/".to_string()),
                ]),
            ),
            (
                "eth0".to_string(),
                BTreeMap::from([("type".to_string(), "nic".to_string())]),
            ),
        ]);
        assert_eq!(
            imported_devices(&devices).keys().collect::<Vec<_>>(),
            ["eth0"]
        );
    }
}
