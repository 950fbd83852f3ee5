//! Copies and renames of instances.
//!
//! A copy (`POST /1.0/instances` with `source.type=copy`) is a new instance over the same
//! image layer with a copy of the source's own files (its upper layer, or a snapshot's),
//! made as snapshots are (`Worker::copy_tree`: reflinks where the filesystem has them), and
//! of its snapshots unless `instance_only`. Its record is the source's (config, devices,
//! profiles) with the request's keys on top; the daemon's `volatile.*` keys are dropped
//! (new MACs, new NIC names, a new id map chosen at its first start) except the id map its
//! copied files are shifted to, so the first start re-shifts them if the map differs. A
//! running source is frozen while its files are copied.
//!
//! Crash consistency: the copy is a create (the `instance-create` intent covers the new
//! directory until its row, its snapshots' rows and its backup file exist; the rows are
//! one transaction).
//!
//! A rename moves the directory and the rows under an `instance-rename` intent (`old/new`);
//! the start-up reconcile puts the directory where the row is and finishes the backup file.

use std::collections::BTreeMap;

use ctl_api::{InstancePost, InstancesPost};

use super::{
    CreatePlan, InstanceError, Instances, assign_volatile_nics, backup, config, idmap, name,
    now_rfc3339,
};
use crate::db::intents::Kind;
use crate::db::{self, snapshots::SnapshotRow};
use crate::images::ImageRef;
use crate::worker::WorkerError;

/// What a copy copies.
#[derive(Debug, Clone)]
pub struct CopySource {
    pub instance: String,
    /// Copy this snapshot's files and record instead of the instance's.
    pub snapshot: Option<String>,
    /// Leave the source's snapshots behind.
    pub instance_only: bool,
}

/// Whether a daemon-owned key of a source's config goes with its copy: only the base image
/// and the map the copied files are shifted to.
fn kept_volatile(key: &str) -> bool {
    key == "volatile.base_image" || key == idmap::VOLATILE_ON_DISK
}

impl Instances {
    /// Validate a copy request and reserve the new name (nothing is made yet).
    pub(super) async fn plan_copy(
        &self,
        mut req: InstancesPost,
    ) -> Result<CreatePlan, InstanceError> {
        if req.source.live {
            return Err(InstanceError::Invalid(
                "live copies are not supported (no CRIU): copy a stopped instance or a snapshot"
                    .into(),
            ));
        }
        if req.source.refresh {
            return Err(InstanceError::Invalid(
                "refreshing an existing copy is not supported".into(),
            ));
        }
        let (instance, snapshot) = match req.source.source.split_once('/') {
            Some((i, s)) => (i.to_string(), Some(s.to_string())),
            None => (req.source.source.clone(), None),
        };
        if instance.is_empty() {
            return Err(InstanceError::Invalid(
                "source.source is required for a copy (\"NAME\" or \"NAME/SNAPSHOT\")".into(),
            ));
        }
        let source = self.row(&instance).await?;
        let (src_config, src_devices, src_profiles) = match &snapshot {
            Some(s) => {
                let s = self.snapshot_row(&instance, s).await?;
                (s.config, s.devices, s.profiles)
            }
            None => (
                source.config.clone(),
                source.devices.clone(),
                source.profiles.clone(),
            ),
        };
        // Clients send the source's config back (`lxc copy` does, image and volatile keys
        // included): those come from the source here, whatever the request says.
        req.config
            .retain(|k, _| !k.starts_with("image.") && !k.starts_with("volatile."));
        config::validate(&req.config, &BTreeMap::new(), &self.host)?;
        if req.name.is_empty() {
            req.name = self.free_random_name().await?;
        }
        name::validate(&req.name)?;
        // The source's record under the request's: its keys, devices and profiles win.
        let mut cfg: BTreeMap<String, String> = src_config
            .into_iter()
            .filter(|(k, _)| !k.starts_with("volatile.") || kept_volatile(k))
            .collect();
        cfg.extend(std::mem::take(&mut req.config));
        req.config = cfg;
        let mut devices = src_devices;
        devices.extend(std::mem::take(&mut req.devices));
        req.devices = devices;
        let profiles = req.profiles.clone().unwrap_or(src_profiles);
        req.profiles = Some(profiles.clone());
        self.check_devices(&req.name, &profiles, &req.devices)
            .await?;
        self.reserve(&req.name).await?;
        Ok(CreatePlan {
            name: req.name.clone(),
            image: ImageRef::Stored(source.image_fingerprint.clone()),
            copy: Some(CopySource {
                instance,
                instance_only: req.source.instance_only || snapshot.is_some(),
                snapshot,
            }),
            request: req,
        })
    }

    /// Make the copy `plan` describes (see the module docs).
    pub(super) async fn create_copy(
        &self,
        plan: &CreatePlan,
        src: &CopySource,
    ) -> Result<(), InstanceError> {
        // Until the record exists, no profile it names can go or change (profiles first,
        // then instances: the lock order everywhere).
        let _profiles = self.profiles_lock.lock().await;
        // The source holds still (no start, stop, restore or delete) while it is copied.
        let lock = self.lock_for(&src.instance);
        let _g = lock.lock().await;
        let source = self.row(&src.instance).await?;
        let snapshots = match (&src.snapshot, src.instance_only) {
            (Some(s), _) => {
                self.snapshot_row(&src.instance, s).await?;
                Vec::new()
            }
            (None, true) => Vec::new(),
            (None, false) => db::snapshots::list(&self.db, &src.instance).await?,
        };
        let dir = self.paths.container(&plan.name);
        if backup::holds_container(&dir) {
            return Err(InstanceError::Unrecorded(plan.name.clone()));
        }
        if dir.exists() {
            let d = dir.clone();
            self.blocking_worker(move |w| w.remove_container_dir(&d))
                .await?;
        }
        // The copy goes to the pool its root disk names (the source's, unless the request
        // names another), which must be able to enforce its `size`.
        let profiles = plan.request.profiles.clone().unwrap_or_default();
        let (pool, size) = self
            .check_devices(&plan.name, &profiles, &plan.request.devices)
            .await?
            .root
            .unwrap_or_else(|| (crate::storage::DEFAULT_POOL.to_string(), None));
        let pool_info = self.storage.check_root(&pool, size).await?;
        db::intents::begin(&self.db, Kind::InstanceCreate, &plan.name).await?;
        let made = self
            .copy_files(plan, src, &source, &snapshots, &pool_info)
            .await;
        let made = match made {
            Ok(()) => match self.storage.apply_root_quota(&pool, &dir, size).await {
                Ok(()) => self.record_copy(plan, &source, &snapshots, &pool).await,
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            let d = dir.clone();
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&d))
                .await;
            let _ = db::intents::finish(&self.db, Kind::InstanceCreate, &plan.name).await;
            return Err(e);
        }
        db::intents::finish(&self.db, Kind::InstanceCreate, &plan.name).await?;
        tracing::info!(instance = %plan.name, source = %src.instance,
            snapshot = ?src.snapshot, snapshots = snapshots.len(), "copied");
        Ok(())
    }

    /// The copy's directory: the source's (or the snapshot's) upper layer and, unless
    /// `instance_only`, its snapshots' files. A running source is frozen meanwhile.
    async fn copy_files(
        &self,
        plan: &CreatePlan,
        src: &CopySource,
        source: &db::InstanceRow,
        snapshots: &[SnapshotRow],
        pool: &crate::storage::PoolInfo,
    ) -> Result<(), InstanceError> {
        let dir = self.paths.container(&plan.name);
        let place = self.storage.placement(pool, &plan.name);
        let subvolume = place.subvolume;
        let from = match &src.snapshot {
            Some(s) => self.snapshot_dir(&src.instance, s),
            None => self.paths.container(&src.instance),
        };
        let frozen = match src.snapshot {
            None => self.freeze_for_copy(source).await?,
            Some(_) => false,
        };
        let copied = {
            let dir = dir.clone();
            self.blocking_worker(move |w| w.prepare_container_dir(&dir, &place, Some(&from)))
                .await
        };
        self.thaw_after_copy(&src.instance, frozen).await;
        copied?;
        for s in snapshots {
            let from = self.snapshot_dir(&src.instance, &s.name);
            let to = self.snapshot_dir(&plan.name, &s.name);
            self.blocking_worker(move |w| {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| WorkerError::Io {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                w.copy_layer(&from, &to, subvolume)
            })
            .await?;
        }
        Ok(())
    }

    /// The copy's rows (the instance, its snapshots) in one transaction, its leases and its
    /// backup file; a failure removes the rows again (the caller removes the files).
    async fn record_copy(
        &self,
        plan: &CreatePlan,
        source: &db::InstanceRow,
        snapshots: &[SnapshotRow],
        pool: &str,
    ) -> Result<(), InstanceError> {
        let profiles = plan.request.profiles.clone().unwrap_or_default();
        let nics = self
            .check_devices(&plan.name, &profiles, &plan.request.devices)
            .await?
            .nics;
        let mut cfg = plan.request.config.clone();
        cfg.insert(crate::storage::VOLATILE_POOL.into(), pool.to_string());
        assign_volatile_nics(&mut cfg, &nics);
        let t = now_rfc3339();
        let inserted = async {
            let mut tx = self.db.begin().await?;
            db::instances::insert_row(
                &mut *tx,
                &db::NewInstance {
                    name: &plan.name,
                    description: &plan.request.description,
                    architecture: &source.architecture,
                    ephemeral: plan.request.ephemeral,
                    image_fingerprint: &source.image_fingerprint,
                    config: &cfg,
                    devices: &plan.request.devices,
                    profiles: &profiles,
                    created_at: &t,
                },
            )
            .await?;
            for s in snapshots {
                let row = SnapshotRow {
                    instance: plan.name.clone(),
                    ..s.clone()
                };
                db::snapshots::insert(&mut *tx, &row).await?;
            }
            tx.commit().await?;
            Ok::<(), db::DbError>(())
        }
        .await;
        if let Err(e) = inserted {
            return Err(match e {
                db::DbError::Conflict(_) => InstanceError::AlreadyExists(plan.name.clone()),
                e => e.into(),
            });
        }
        let finished = async {
            self.networks.sync_leases(&plan.name, &nics, &cfg).await?;
            self.save_backup(&plan.name).await
        }
        .await;
        if let Err(e) = finished {
            let _ = db::instances::delete(&self.db, &plan.name).await;
            return Err(e);
        }
        let _ = self.images.touch(&source.image_fingerprint).await;
        Ok(())
    }

    /// Check a rename before its operation starts: `name` exists and is stopped, the new
    /// name is valid and free, and nothing but a rename is asked.
    pub async fn plan_rename(&self, name: &str, req: &InstancePost) -> Result<(), InstanceError> {
        if req.migration || req.live {
            return Err(InstanceError::Invalid(
                "migration is not supported (one host): only a rename".into(),
            ));
        }
        if !req.pool.is_empty() {
            return Err(InstanceError::Invalid(
                "moving an instance to another storage pool is not supported".into(),
            ));
        }
        if !req.project.is_empty() && req.project != "default" {
            return Err(InstanceError::Invalid(format!(
                "project \"{}\" does not exist (only \"default\")",
                req.project
            )));
        }
        let row = self.row(name).await?;
        if req.name.is_empty() {
            return Err(InstanceError::Invalid("a new name is required".into()));
        }
        name::validate(&req.name)?;
        self.ensure_stopped(&row, "is running: stop it before renaming it")?;
        if req.name == name {
            return Err(InstanceError::AlreadyExists(req.name.clone()));
        }
        if db::instances::get(&self.db, &req.name).await?.is_some() {
            return Err(InstanceError::AlreadyExists(req.name.clone()));
        }
        if backup::holds_container(&self.paths.container(&req.name)) {
            return Err(InstanceError::Unrecorded(req.name.clone()));
        }
        Ok(())
    }

    /// Rename stopped instance `old` to `new`: its directory and rows (see the module docs).
    pub async fn rename(&self, old: &str, new: &str) -> Result<(), InstanceError> {
        name::validate(new)?;
        self.reserve(new).await?;
        let result = self.rename_reserved(old, new).await;
        self.release(new);
        result?;
        let meta = BTreeMap::from([("old_name".to_string(), serde_json::json!(old))]);
        self.events.instance("instance-renamed", new, meta);
        Ok(())
    }

    async fn rename_reserved(&self, old: &str, new: &str) -> Result<(), InstanceError> {
        let lock = self.lock_for(old);
        let _g = lock.lock().await;
        let row = self.row(old).await?;
        self.ensure_stopped(&row, "is running: stop it before renaming it")?;
        let (from, to) = (self.paths.container(old), self.paths.container(new));
        if to.exists() {
            if backup::holds_container(&to) {
                return Err(InstanceError::Unrecorded(new.to_string()));
            }
            // Left by a create that a crash cut off before its backup file.
            let t = to.clone();
            self.blocking_worker(move |w| w.remove_container_dir(&t))
                .await?;
        }
        // A stopped container's monitor may still be removing its cgroup.
        let n = old.to_string();
        self.blocking_worker(move |w| w.remove_cgroup(&n)).await?;
        let key = format!("{old}/{new}");
        db::intents::begin(&self.db, Kind::InstanceRename, &key).await?;
        let moved = {
            let (from, to) = (from.clone(), to.clone());
            tokio::task::spawn_blocking(move || crate::storage::rename_container_dir(&from, &to))
                .await
                .map_err(|e| InstanceError::Internal(e.to_string()))?
        };
        if let Err(e) = moved {
            let _ = db::intents::finish(&self.db, Kind::InstanceRename, &key).await;
            return Err(InstanceError::Internal(format!(
                "rename {} to {}: {e}",
                from.display(),
                to.display()
            )));
        }
        let renamed = async {
            let mut tx = self.db.begin().await?;
            db::instances::rename(&mut tx, old, new).await?;
            tx.commit().await?;
            Ok::<(), db::DbError>(())
        }
        .await;
        if let Err(e) = renamed {
            let back = {
                let (from, to) = (from.clone(), to.clone());
                tokio::task::spawn_blocking(move || {
                    crate::storage::rename_container_dir(&to, &from)
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
            };
            if back.is_ok() {
                let _ = db::intents::finish(&self.db, Kind::InstanceRename, &key).await;
            }
            return Err(match e {
                db::DbError::Conflict(_) => InstanceError::AlreadyExists(new.to_string()),
                e => e.into(),
            });
        }
        self.finish_rename(old, new).await?;
        tracing::info!(old, new, "renamed");
        Ok(())
    }

    /// The end of a rename whose rows moved: the backup file names the new record, the
    /// networks' host records follow, the intent ends.
    async fn finish_rename(&self, old: &str, new: &str) -> Result<(), InstanceError> {
        self.save_backup(new).await?;
        for n in self.networks.instance_networks(new).await? {
            self.networks.leases_changed(&n).await;
        }
        db::intents::finish(&self.db, Kind::InstanceRename, &format!("{old}/{new}")).await?;
        Ok(())
    }

    /// Start-up: a rename a crash cut off ends where its rows are. Rows renamed: the
    /// directory follows them (if it has not) and the backup file is rewritten. Rows not
    /// renamed: the directory goes back.
    pub(super) async fn reconcile_renames(&self) -> Result<(), InstanceError> {
        for key in db::intents::pending(&self.db, Kind::InstanceRename).await? {
            let Some((old, new)) = key.split_once('/') else {
                db::intents::finish(&self.db, Kind::InstanceRename, &key).await?;
                continue;
            };
            let (from, to) = (self.paths.container(old), self.paths.container(new));
            let renamed = db::instances::get(&self.db, new).await?.is_some();
            let (src, dst) = if renamed { (&from, &to) } else { (&to, &from) };
            if src.exists() && !dst.exists() {
                tracing::warn!(old, new, "finishing a rename that a crash interrupted");
                crate::storage::rename_container_dir(src, dst).map_err(|e| {
                    InstanceError::Internal(format!("rename {}: {e}", src.display()))
                })?;
            }
            if renamed {
                self.finish_rename(old, new).await?;
            } else {
                db::intents::finish(&self.db, Kind::InstanceRename, &key).await?;
            }
        }
        Ok(())
    }
}
