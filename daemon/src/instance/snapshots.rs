//! Instance snapshots: a copy of the container's own files (its overlay upper layer, with
//! whiteouts and opaque-directory marks) and of its record, taken while it is stopped or
//! frozen; restored by swapping the upper layer for a copy of the snapshot's.
//!
//! On disk: `containers/<name>/snapshots/<snapshot>/upper`. The copy shares extents where
//! the filesystem can (reflink), else it costs what the container changed.
//!
//! Crash consistency, with the intent journal: a snapshot's files are copied under a
//! temporary name, renamed into place, then its row and the end of its intent are written
//! together; a crash before that leaves the intent, and the next start removes the files.
//! A restore copies the snapshot beside the upper layer (`upper.restore`), then swaps the
//! two by renames under an intent; the next start finishes a swap that began (the copy is
//! complete once its intent is written) or drops a copy that never got there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ctl_api::{InstanceSnapshot, InstanceSnapshotPut, InstanceSnapshotsPost};

use super::expiry;
use super::snapshot_name::{self, MAX_NAME};
use super::{InstanceError, Instances, idmap, now_rfc3339};
use crate::db::intents::Kind;
use crate::db::{self, snapshots::SnapshotRow};
use crate::paths::overlay_dirs;

/// The mark of a snapshot being deleted (see [`Instances::delete_snapshot`]).
const DELETING: &str = ".deleting";

/// A snapshot name: letters, digits, `-`, `_`, `.` (not first), as Incus takes them.
pub(super) fn check_name(name: &str) -> Result<(), InstanceError> {
    if snapshot_name::valid(name) {
        Ok(())
    } else {
        Err(InstanceError::Invalid(format!(
            "invalid snapshot name \"{name}\": 1-{MAX_NAME} letters, digits, '-', '_' or '.' \
             (not first)"
        )))
    }
}

/// A snapshot to take: its name and expiry (RFC 3339 in UTC, `""` never), both checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    pub name: String,
    pub expires_at: String,
}

/// Where a restore puts the fresh copy of a snapshot's layer before it takes the instance's
/// place (in the instance's directory, so on its pool).
const RESTORE_DIR: &str = ".restore";

impl Instances {
    pub(super) fn snapshots_dir(&self, instance: &str) -> PathBuf {
        self.paths.container(instance).join("snapshots")
    }

    pub(super) fn snapshot_dir(&self, instance: &str, snapshot: &str) -> PathBuf {
        self.snapshots_dir(instance).join(snapshot)
    }

    pub(super) async fn snapshot_row(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<SnapshotRow, InstanceError> {
        self.row(name).await?;
        db::snapshots::get(&self.db, name, snapshot)
            .await?
            .ok_or_else(|| InstanceError::SnapshotNotFound {
                instance: name.to_string(),
                snapshot: snapshot.to_string(),
            })
    }

    fn snapshot_to_api(
        &self,
        row: &super::InstanceRow,
        s: SnapshotRow,
        with_size: bool,
    ) -> InstanceSnapshot {
        let (upper, _, _) = overlay_dirs(&self.snapshot_dir(&s.instance, &s.name));
        let size = if with_size {
            self.worker.disk_usage(&upper) as i64
        } else {
            0
        };
        InstanceSnapshot {
            name: s.name,
            created_at: s.created_at,
            expires_at: if s.expires_at.is_empty() {
                crate::images::ZERO_TIME.into()
            } else {
                s.expires_at
            },
            last_used_at: crate::images::ZERO_TIME.into(),
            architecture: row.architecture.clone(),
            ephemeral: false,
            stateful: false,
            profiles: s.profiles,
            expanded_config: s.config.clone(),
            config: s.config,
            expanded_devices: s.devices.clone(),
            devices: s.devices,
            size,
        }
    }

    /// The snapshots of instance `name`, oldest first; `with_size` walks each one's files
    /// for its size (listings of many instances leave it 0).
    pub async fn snapshots(
        &self,
        name: &str,
        with_size: bool,
    ) -> Result<Vec<InstanceSnapshot>, InstanceError> {
        let row = self.row(name).await?;
        let rows = db::snapshots::list(&self.db, name).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .map(|s| me.snapshot_to_api(&row, s, with_size))
                .collect()
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// One snapshot of instance `name`.
    pub async fn snapshot(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<InstanceSnapshot, InstanceError> {
        let row = self.row(name).await?;
        let s = self.snapshot_row(name, snapshot).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.snapshot_to_api(&row, s, true))
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// Check a snapshot request before its operation starts: the instance exists, the name
    /// is valid and free (an empty name comes from `snapshots.pattern`, by default the next
    /// `snapN`), the expiry readable (absent: from `snapshots.expiry.manual`, else
    /// `snapshots.expiry`). Stateful snapshots are refused (no CRIU).
    pub async fn plan_snapshot(
        &self,
        name: &str,
        req: &InstanceSnapshotsPost,
    ) -> Result<SnapshotPlan, InstanceError> {
        let row = self.expanded_row(name).await?;
        if req.stateful {
            return Err(InstanceError::Invalid(
                "stateful snapshots are not supported".into(),
            ));
        }
        let expires_at = match &req.expires_at {
            Some(t) => expiry::from_request(t),
            None => {
                let span = row
                    .config
                    .get("snapshots.expiry.manual")
                    .filter(|v| !v.trim().is_empty())
                    .or_else(|| row.config.get("snapshots.expiry"))
                    .map(String::as_str)
                    .unwrap_or_default();
                expiry::from_span(span, time::OffsetDateTime::now_utc())
            }
        }
        .map_err(|e| InstanceError::Invalid(e.to_string()))?;
        let snapshot = if req.name.is_empty() {
            self.next_snapshot_name(&row).await?
        } else {
            req.name.clone()
        };
        check_name(&snapshot)?;
        if db::snapshots::get(&self.db, name, &snapshot)
            .await?
            .is_some()
        {
            return Err(InstanceError::SnapshotExists {
                instance: name.to_string(),
                snapshot,
            });
        }
        Ok(SnapshotPlan {
            name: snapshot,
            expires_at,
        })
    }

    /// The next name `snapshots.pattern` gives instance `row` (its expanded record) now.
    pub(super) async fn next_snapshot_name(
        &self,
        row: &super::InstanceRow,
    ) -> Result<String, InstanceError> {
        let taken: Vec<String> = db::snapshots::list(&self.db, &row.name)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        let pattern = row
            .config
            .get("snapshots.pattern")
            .map(String::as_str)
            .unwrap_or_default();
        let now = chrono::Local::now().fixed_offset();
        snapshot_name::next_name(pattern, &now, &taken)
            .map_err(|e| InstanceError::Invalid(e.to_string()))
    }

    /// Take the snapshot `plan` names of instance `name`: a running instance is frozen for
    /// the copy (and thawed after, unless it was frozen already).
    pub async fn create_snapshot(
        &self,
        name: &str,
        plan: &SnapshotPlan,
    ) -> Result<(), InstanceError> {
        let snapshot = plan.name.as_str();
        check_name(snapshot)?;
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let row = self.row(name).await?;
        if db::snapshots::get(&self.db, name, snapshot)
            .await?
            .is_some()
        {
            return Err(InstanceError::SnapshotExists {
                instance: name.to_string(),
                snapshot: snapshot.to_string(),
            });
        }
        let key = format!("{name}/{snapshot}");
        db::intents::begin(&self.db, Kind::SnapshotCreate, &key).await?;
        let frozen = match self.freeze_for_copy(&row).await {
            Ok(f) => f,
            Err(e) => {
                let _ = db::intents::finish(&self.db, Kind::SnapshotCreate, &key).await;
                return Err(e);
            }
        };
        let container = self.paths.container(name);
        let subvolume = self.on_btrfs(&row).await?;
        let dir = self.snapshot_dir(name, snapshot);
        let tmp = self
            .snapshots_dir(name)
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let copied = {
            let (tmp, dir) = (tmp.clone(), dir.clone());
            self.blocking_worker(move |w| {
                std::fs::create_dir_all(&tmp).map_err(|source| crate::worker::WorkerError::Io {
                    path: tmp.clone(),
                    source,
                })?;
                w.copy_layer(&container, &tmp, subvolume)?;
                std::fs::rename(&tmp, &dir).map_err(|source| crate::worker::WorkerError::Io {
                    path: dir.clone(),
                    source,
                })
            })
            .await
        };
        self.thaw_after_copy(name, frozen).await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            let _ = db::intents::finish(&self.db, Kind::SnapshotCreate, &key).await;
            return Err(e);
        }
        let record = SnapshotRow {
            instance: name.to_string(),
            name: snapshot.to_string(),
            created_at: now_rfc3339(),
            config: row.config.clone(),
            devices: row.devices.clone(),
            profiles: row.profiles.clone(),
            expires_at: plan.expires_at.clone(),
        };
        let recorded = async {
            let mut tx = self.db.begin().await?;
            db::snapshots::insert(&mut *tx, &record).await?;
            db::intents::finish(&mut *tx, Kind::SnapshotCreate, &key).await?;
            tx.commit().await?;
            Ok::<(), db::DbError>(())
        }
        .await;
        if let Err(e) = recorded {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(e.into());
        }
        tracing::info!(instance = %name, snapshot, expires_at = %plan.expires_at, "snapshot taken");
        self.events.instance(
            "instance-snapshot-created",
            &format!("{name}/{snapshot}"),
            BTreeMap::new(),
        );
        Ok(())
    }

    /// Delete snapshot `snapshot` of instance `name`: its files are marked as being
    /// deleted, then the record goes, then the files (a crash in between leaves marked files
    /// that the next start removes; unmarked files are never removed for want of a record).
    pub async fn delete_snapshot(&self, name: &str, snapshot: &str) -> Result<(), InstanceError> {
        self.delete_snapshot_if(name, snapshot, None)
            .await
            .map(|_| ())
    }

    /// [`Self::delete_snapshot`], only if the snapshot has expired at `expired_at` when
    /// `Some` (checked under the instance's lock, so an expiry moved meanwhile is kept);
    /// whether it was deleted.
    pub(super) async fn delete_snapshot_if(
        &self,
        name: &str,
        snapshot: &str,
        expired_at: Option<time::OffsetDateTime>,
    ) -> Result<bool, InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let row = self.snapshot_row(name, snapshot).await?;
        if let Some(now) = expired_at
            && !expiry::has_passed(&row.expires_at, now)
        {
            return Ok(false);
        }
        let dir = self.snapshot_dir(name, snapshot);
        let marker = dir.join(DELETING);
        tokio::fs::write(&marker, b"")
            .await
            .map_err(|e| InstanceError::Internal(format!("{}: {e}", marker.display())))?;
        db::snapshots::delete(&self.db, name, snapshot).await?;
        if let Err(e) = self
            .blocking_worker(move |w| w.remove_container_dir(&dir))
            .await
        {
            tracing::warn!(instance = %name, snapshot, error = %e,
                "snapshot deleted; its files go at the next start");
        }
        self.events.instance(
            "instance-snapshot-deleted",
            &format!("{name}/{snapshot}"),
            BTreeMap::new(),
        );
        Ok(true)
    }

    /// Check a snapshot update (`PUT`/`PATCH`) before its operation starts; the expiry to
    /// store (`None`: unchanged, which only a `PATCH` without `expires_at` gives).
    pub async fn plan_snapshot_update(
        &self,
        name: &str,
        snapshot: &str,
        req: &InstanceSnapshotPut,
        patch: bool,
    ) -> Result<Option<String>, InstanceError> {
        self.snapshot_row(name, snapshot).await?;
        match (&req.expires_at, patch) {
            (None, true) => Ok(None),
            (None, false) => Ok(Some(String::new())),
            (Some(t), _) => expiry::from_request(t)
                .map(Some)
                .map_err(|e| InstanceError::Invalid(e.to_string())),
        }
    }

    /// Set when snapshot `snapshot` of `name` expires (`""`: never; `None`: unchanged, as
    /// [`Self::plan_snapshot_update`] gives it).
    pub async fn update_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        expires_at: Option<String>,
    ) -> Result<(), InstanceError> {
        let Some(expires_at) = expires_at else {
            return Ok(());
        };
        let expires_at = expires_at.as_str();
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.snapshot_row(name, snapshot).await?;
        db::snapshots::set_expiry(&self.db, name, snapshot, expires_at).await?;
        tracing::info!(instance = %name, snapshot, expires_at, "snapshot expiry set");
        self.events.instance(
            "instance-snapshot-updated",
            &format!("{name}/{snapshot}"),
            BTreeMap::new(),
        );
        Ok(())
    }

    /// Check a snapshot rename before its operation starts.
    pub async fn check_snapshot_rename(
        &self,
        name: &str,
        snapshot: &str,
        new: &str,
    ) -> Result<(), InstanceError> {
        self.snapshot_row(name, snapshot).await?;
        check_name(new)?;
        if db::snapshots::get(&self.db, name, new).await?.is_some() {
            return Err(InstanceError::SnapshotExists {
                instance: name.to_string(),
                snapshot: new.to_string(),
            });
        }
        Ok(())
    }

    /// Rename snapshot `snapshot` of `name` to `new`: its directory, then its row, under an
    /// intent (the start-up reconcile puts the directory where the row is).
    pub async fn rename_snapshot(
        &self,
        name: &str,
        snapshot: &str,
        new: &str,
    ) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.check_snapshot_rename(name, snapshot, new).await?;
        let (from, to) = (
            self.snapshot_dir(name, snapshot),
            self.snapshot_dir(name, new),
        );
        if to.exists() {
            return Err(InstanceError::Internal(format!(
                "{} exists without a record: move it away first",
                to.display()
            )));
        }
        let key = format!("{name}/{snapshot}/{new}");
        db::intents::begin(&self.db, Kind::SnapshotRename, &key).await?;
        if let Err(e) = tokio::fs::rename(&from, &to).await {
            let _ = db::intents::finish(&self.db, Kind::SnapshotRename, &key).await;
            return Err(InstanceError::Internal(format!(
                "rename {}: {e}",
                from.display()
            )));
        }
        let renamed = async {
            let mut tx = self.db.begin().await?;
            db::snapshots::rename(&mut *tx, name, snapshot, new).await?;
            db::intents::finish(&mut *tx, Kind::SnapshotRename, &key).await?;
            tx.commit().await?;
            Ok::<(), db::DbError>(())
        }
        .await;
        if let Err(e) = renamed {
            if tokio::fs::rename(&to, &from).await.is_ok() {
                let _ = db::intents::finish(&self.db, Kind::SnapshotRename, &key).await;
            }
            return Err(e.into());
        }
        tracing::info!(instance = %name, snapshot, new, "snapshot renamed");
        self.events.instance(
            "instance-snapshot-renamed",
            &format!("{name}/{new}"),
            BTreeMap::from([("old_name".to_string(), serde_json::json!(snapshot))]),
        );
        Ok(())
    }

    /// Restore instance `name` to snapshot `snapshot`: its files and its record (config,
    /// devices, profiles; the daemon's volatile keys stay). A running instance is stopped
    /// first and started again after.
    pub async fn restore(&self, name: &str, snapshot: &str) -> Result<(), InstanceError> {
        // The profile list changes: no profile may go meanwhile (profiles lock first, as
        // every taker of both).
        let profiles_guard = self.profiles_lock.lock().await;
        let lock = self.lock_for(name);
        let guard = lock.lock().await;
        let s = self.snapshot_row(name, snapshot).await?;
        let row = self.row(name).await?;
        let was_running = self.running_init(&row).is_some();
        if was_running {
            self.stop_locked(name, None, false, None).await?;
        }
        let fresh = self.paths.container(name).join(RESTORE_DIR);
        let from = self.snapshot_dir(name, snapshot);
        let subvolume = self.on_btrfs(&row).await?;
        {
            let (fresh, from) = (fresh.clone(), from.clone());
            self.blocking_worker(move |w| {
                // A copy a failed restore left behind.
                let _ = crate::worker::btrfs::remove_tree(&fresh);
                w.copy_layer(&from, &fresh, subvolume)
            })
            .await?;
        }
        // From here the copy is complete: a crash finishes the swap at the next start.
        db::intents::begin(&self.db, Kind::InstanceRestore, name).await?;
        self.swap_in_restored(name).await?;
        // The record as it was, keeping the daemon's volatile keys (NIC names, id maps) and
        // saying the files are in the map they were in when the snapshot was taken.
        let mut cfg: BTreeMap<String, String> = s
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in row
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("volatile."))
        {
            cfg.insert(k.clone(), v.clone());
        }
        match s.config.get(idmap::VOLATILE_ON_DISK) {
            Some(m) => cfg.insert(idmap::VOLATILE_ON_DISK.into(), m.clone()),
            None => cfg.remove(idmap::VOLATILE_ON_DISK),
        };
        // Profiles deleted since the snapshot are left out (as `ctld recover` does).
        let existing = db::profiles::list(&self.db).await?;
        let (profiles, gone): (Vec<String>, Vec<String>) = s
            .profiles
            .iter()
            .cloned()
            .partition(|p| existing.iter().any(|e| &e.name == p));
        if !gone.is_empty() {
            tracing::warn!(instance = %name, snapshot, profiles = ?gone,
                "profiles of the snapshot no longer exist: left out");
        }
        db::instances::update(
            &self.db,
            name,
            &db::InstanceUpdate {
                description: &row.description,
                ephemeral: row.ephemeral,
                config: &cfg,
                devices: &s.devices,
                profiles: &profiles,
            },
        )
        .await?;
        self.save_backup_or_warn(name).await;
        // The restored layer is a new one (a fresh subvolume or copy): its root disk quota,
        // at once, so nothing written while it is stopped (file pushes) goes past it.
        if !was_running {
            let restored = self.row(name).await?;
            let all = db::profiles::list(&self.db).await?;
            let devices = crate::network::expand(&all, &restored.profiles, &restored.devices);
            if let Ok(Some((_, Some(size)))) = crate::storage::config::root_disk(&devices) {
                self.storage
                    .apply_root_quota(
                        crate::storage::instance_pool(&restored.config),
                        &self.paths.container(name),
                        Some(size),
                    )
                    .await?;
            }
        }
        tracing::info!(instance = %name, snapshot, "restored");
        drop(guard);
        drop(profiles_guard);
        if was_running {
            self.start(name).await?;
        }
        self.events.instance(
            "instance-restored",
            name,
            BTreeMap::from([("snapshot".to_string(), serde_json::json!(snapshot))]),
        );
        Ok(())
    }

    /// Put `upper.restore` in place of `upper` (the old one to the trash) and end the
    /// restore's intent. Idempotent: a swap that a crash cut off is finished by running it
    /// again.
    async fn swap_in_restored(&self, name: &str) -> Result<(), InstanceError> {
        let container = self.paths.container(name);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // `upper.restore`: the fresh `upper` of a restore an older ctld began.
            let legacy = container.join("upper.restore");
            let fresh = container.join(RESTORE_DIR);
            let units: Vec<(std::path::PathBuf, &str)> = if legacy.exists() {
                vec![(legacy, "upper")]
            } else {
                // The fresh copy's layer: a `layer` subvolume, or `upper` (its `work` is
                // not needed: the container keeps its own).
                ["layer", "upper"]
                    .into_iter()
                    .map(|u| (fresh.join(u), u))
                    .filter(|(p, _)| p.exists())
                    .take(1)
                    .collect()
            };
            for (from, unit) in units {
                let target = container.join(unit);
                if target.exists() {
                    // Set aside inside the container's own directory: it may be on a pool
                    // other than the state directory's filesystem.
                    let aside = container.join(format!(".old-{}", uuid::Uuid::new_v4().simple()));
                    std::fs::rename(&target, &aside)?;
                    let _ = crate::worker::btrfs::remove_tree(&aside);
                }
                std::fs::rename(&from, &target)?;
            }
            crate::worker::btrfs::remove_tree(&fresh)
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))?
        .map_err(|e| InstanceError::Internal(format!("restore of \"{name}\": {e}")))?;
        db::intents::finish(&self.db, Kind::InstanceRestore, name).await?;
        Ok(())
    }

    /// Start-up: finish the restores a crash cut off, remove the files of snapshots whose
    /// create never recorded them, and of snapshots whose delete removed the record only.
    pub(super) async fn reconcile_snapshots(&self) -> Result<(), InstanceError> {
        for name in db::intents::pending(&self.db, Kind::InstanceRestore).await? {
            tracing::warn!(instance = %name, "finishing a restore that a crash interrupted");
            self.swap_in_restored(&name).await?;
        }
        // A snapshot rename a crash cut off: the directory goes where the row is.
        for key in db::intents::pending(&self.db, Kind::SnapshotRename).await? {
            let mut parts = key.splitn(3, '/');
            if let (Some(name), Some(old), Some(new)) = (parts.next(), parts.next(), parts.next()) {
                let renamed = db::snapshots::get(&self.db, name, new).await?.is_some();
                let (a, b) = (self.snapshot_dir(name, old), self.snapshot_dir(name, new));
                let (src, dst) = if renamed { (a, b) } else { (b, a) };
                if src.exists() && !dst.exists() {
                    tracing::warn!(instance = %name, old, new,
                        "finishing a snapshot rename that a crash interrupted");
                    std::fs::rename(&src, &dst).map_err(|e| {
                        InstanceError::Internal(format!("rename {}: {e}", src.display()))
                    })?;
                }
            }
            db::intents::finish(&self.db, Kind::SnapshotRename, &key).await?;
        }
        for key in db::intents::pending(&self.db, Kind::SnapshotCreate).await? {
            if let Some((name, snapshot)) = key.split_once('/')
                && db::snapshots::get(&self.db, name, snapshot)
                    .await?
                    .is_none()
            {
                let dir = self.snapshot_dir(name, snapshot);
                if dir.exists() {
                    tracing::warn!(instance = %name, snapshot,
                        "removing a snapshot whose create a crash interrupted");
                    self.blocking_worker(move |w| w.remove_container_dir(&dir))
                        .await?;
                }
            }
            db::intents::finish(&self.db, Kind::SnapshotCreate, &key).await?;
        }
        for row in db::instances::list(&self.db).await? {
            let recorded: Vec<String> = db::snapshots::list(&self.db, &row.name)
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect();
            let dir = self.snapshots_dir(&row.name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if recorded.contains(&file) {
                    continue;
                }
                let path: PathBuf = e.path();
                // A copy cut short, or a delete that removed the record: garbage. Anything
                // else is a snapshot whose record was lost: kept.
                if file.starts_with(".tmp-") || path.join(DELETING).exists() {
                    tracing::info!(instance = %row.name, snapshot = %file,
                        "removing the files of an interrupted snapshot create or delete");
                    self.blocking_worker(move |w| w.remove_container_dir(&path))
                        .await?;
                } else {
                    tracing::warn!(instance = %row.name, snapshot = %file,
                        "snapshot files without a record: kept");
                }
            }
        }
        Ok(())
    }
}
