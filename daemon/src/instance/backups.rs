//! Instance backups: Incus-format tarballs of an instance (and its snapshots) kept under
//! `containers/<name>/backups/<backup>` (root's alone, like the rest of the directory, so
//! they go with the instance), recorded in the `backups` table, streamed out by export.
//! The format is [`super::backup_index`]'s; importing one is [`super::import`].
//!
//! What a backup holds: each rootfs is the merged view of the image layer and the upper
//! layer ([`crate::images::tarball::Tree`], as publish reads it), the upper layer's host
//! owners shifted back to the container's own ids, so the tarball is portable. A running
//! instance is frozen while its upper layer is copied aside (as a snapshot is taken), then
//! thawed; the tarball is written from the copy.
//!
//! Crash consistency, with the intent journal: the tarball is written under
//! `backups/.tmp-*` and renamed into place, then its row and the end of its intent are
//! written together. A crash before the rename leaves a `.tmp-*` entry, removed at the next
//! start; one after it leaves an unrecorded file named in the intent, removed then too. A
//! backup file that no intent names and no row records is kept, with a warning.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ctl_api::{InstanceBackup, InstanceBackupsPost};

use super::backup_index::{BACKEND, BackupConfig, BackupIndex, BackupInstance, POOL};
use super::{InstanceError, Instances, idmap, now_rfc3339};
use crate::db::intents::Kind;
use crate::db::{self, backups::BackupRow};
use crate::images::ImageError;
use crate::images::tarball::{Compression, Tree, append_tree};
use crate::paths::overlay_dirs;
use crate::worker::WorkerError;

/// A checked backup request.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupPlan {
    pub name: String,
    pub expires_at: String,
    pub instance_only: bool,
    pub compression: Compression,
}

/// An RFC 3339 time, or empty for never (Go's zero time).
fn expiry(t: &str) -> Result<String, InstanceError> {
    if t.is_empty() || t.starts_with("0001-01-01") {
        return Ok(String::new());
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|_| t.to_string())
        .map_err(|e| InstanceError::Invalid(format!("invalid expires_at \"{t}\": {e}")))
}

fn expired(t: &str) -> bool {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| t < time::OffsetDateTime::now_utc())
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn tar_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<(), ImageError> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(
        u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or_default(),
    );
    h.set_size(data.len() as u64);
    builder
        .append_data(&mut h, path, data)
        .map_err(|e| ImageError::Build(format!("writing {path}: {e}")))
}

/// What one backup tarball is written from.
struct BackupSource {
    index: BackupIndex,
    /// The snapshots' trees (name, tree), oldest first.
    snapshots: Vec<(String, Tree)>,
    container: Tree,
    compression: Compression,
}

/// Write the backup tarball to `file` (synced before it returns).
fn write_backup(file: &Path, src: &BackupSource) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: file.to_path_buf(),
        source,
    };
    let out = std::fs::File::create(file).map_err(io)?;
    let enc = src
        .compression
        .encoder(std::io::BufWriter::with_capacity(256 * 1024, out))
        .map_err(io)?;
    let mut builder = tar::Builder::new(enc);
    let index = src
        .index
        .to_yaml()
        .map_err(|e| ImageError::Build(e.to_string()))?;
    tar_file(&mut builder, "backup/index.yaml", index.as_bytes())?;
    for (name, tree) in &src.snapshots {
        let prefix = PathBuf::from(format!("backup/snapshots/{name}/rootfs"));
        append_tree(&mut builder, tree, &prefix, u64::MAX)?;
    }
    let config = src.index.config.clone().unwrap_or_default();
    let yaml = serde_yaml_ng::to_string(&config)
        .map_err(|e| ImageError::Build(format!("backup.yaml: {e}")))?;
    tar_file(
        &mut builder,
        "backup/container/backup.yaml",
        yaml.as_bytes(),
    )?;
    append_tree(
        &mut builder,
        &src.container,
        Path::new("backup/container/rootfs"),
        u64::MAX,
    )?;
    let enc = builder
        .into_inner()
        .map_err(|e| ImageError::Build(format!("finishing the tarball: {e}")))?;
    let buffered = enc.finish().map_err(io)?;
    let out = buffered
        .into_inner()
        .map_err(|e| ImageError::Build(format!("writing {}: {e}", file.display())))?;
    out.sync_all().map_err(io)
}

impl Instances {
    fn backups_dir(&self, instance: &str) -> PathBuf {
        self.paths.container(instance).join("backups")
    }

    fn backup_file(&self, instance: &str, backup: &str) -> PathBuf {
        self.backups_dir(instance).join(backup)
    }

    async fn backup_row(&self, name: &str, backup: &str) -> Result<BackupRow, InstanceError> {
        self.row(name).await?;
        db::backups::get(&self.db, name, backup)
            .await?
            .ok_or_else(|| InstanceError::BackupNotFound {
                instance: name.to_string(),
                backup: backup.to_string(),
            })
    }

    fn backup_to_api(row: BackupRow) -> InstanceBackup {
        InstanceBackup {
            name: row.name,
            created_at: row.created_at,
            expires_at: if row.expires_at.is_empty() {
                crate::images::ZERO_TIME.into()
            } else {
                row.expires_at
            },
            instance_only: row.instance_only,
            optimized_storage: false,
        }
    }

    /// The backups of instance `name`, oldest first.
    pub async fn backups(&self, name: &str) -> Result<Vec<InstanceBackup>, InstanceError> {
        self.row(name).await?;
        Ok(db::backups::list(&self.db, name)
            .await?
            .into_iter()
            .map(Self::backup_to_api)
            .collect())
    }

    /// One backup of instance `name`.
    pub async fn backup(&self, name: &str, backup: &str) -> Result<InstanceBackup, InstanceError> {
        Ok(Self::backup_to_api(self.backup_row(name, backup).await?))
    }

    /// Check a backup request before its operation starts: the instance exists, the name
    /// is valid and free (empty: the first free `backupN`), the compression is known, the
    /// backup is a portable one (not optimized).
    pub async fn plan_backup(
        &self,
        name: &str,
        req: &InstanceBackupsPost,
    ) -> Result<BackupPlan, InstanceError> {
        self.row(name).await?;
        if req.optimized_storage {
            return Err(InstanceError::Invalid(
                "optimized backups are not supported: ctld writes portable tarballs only".into(),
            ));
        }
        let compression = match req.compression_algorithm.as_str() {
            "" => Compression::DEFAULT,
            c => Compression::parse(c).ok_or_else(|| {
                InstanceError::Invalid(format!(
                    "unknown compression \"{c}\": use gzip, xz, zstd or none"
                ))
            })?,
        };
        let taken: Vec<String> = db::backups::list(&self.db, name)
            .await?
            .into_iter()
            .map(|b| b.name)
            .collect();
        let backup = if req.name.is_empty() {
            (0..)
                .map(|n| format!("backup{n}"))
                .find(|n| !taken.contains(n))
                .unwrap_or_default()
        } else {
            req.name.clone()
        };
        check_backup_name(&backup)?;
        if taken.contains(&backup) {
            return Err(InstanceError::BackupExists {
                instance: name.to_string(),
                backup,
            });
        }
        Ok(BackupPlan {
            name: backup,
            expires_at: expiry(&req.expires_at)?,
            instance_only: req.instance_only,
            compression,
        })
    }

    /// The records a backup of `row` carries.
    async fn backup_records(
        &self,
        row: &db::InstanceRow,
        snapshots: &[db::snapshots::SnapshotRow],
    ) -> Result<BackupConfig, InstanceError> {
        let profiles = db::profiles::list(&self.db).await?;
        let expanded = crate::network::expand(&profiles, &row.profiles, &row.devices);
        let container = BackupInstance {
            name: row.name.clone(),
            description: row.description.clone(),
            architecture: row.architecture.clone(),
            ephemeral: row.ephemeral,
            stateful: false,
            profiles: row.profiles.clone(),
            config: row.config.clone(),
            devices: row.devices.clone(),
            expanded_config: row.config.clone(),
            expanded_devices: expanded,
            created_at: row.created_at.clone(),
            kind: "container".into(),
        };
        let snapshots = snapshots
            .iter()
            .map(|s| BackupInstance {
                name: s.name.clone(),
                architecture: row.architecture.clone(),
                profiles: s.profiles.clone(),
                config: s.config.clone(),
                devices: s.devices.clone(),
                created_at: s.created_at.clone(),
                ..BackupInstance::default()
            })
            .collect();
        let pool =
            serde_yaml_ng::to_value(BTreeMap::from([("name", POOL), ("driver", BACKEND)])).ok();
        Ok(BackupConfig {
            container: Some(container),
            snapshots,
            pool,
            profiles: vec![],
        })
    }

    /// Make backup `plan.name` of instance `name`.
    pub async fn create_backup(&self, name: &str, plan: BackupPlan) -> Result<(), InstanceError> {
        check_backup_name(&plan.name)?;
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let row = self.row(name).await?;
        if db::backups::get(&self.db, name, &plan.name)
            .await?
            .is_some()
        {
            return Err(InstanceError::BackupExists {
                instance: name.to_string(),
                backup: plan.name,
            });
        }
        let snapshots = if plan.instance_only {
            Vec::new()
        } else {
            db::snapshots::list(&self.db, name).await?
        };
        let config = self.backup_records(&row, &snapshots).await?;
        let index = BackupIndex {
            name: name.to_string(),
            backend: BACKEND.into(),
            pool: POOL.into(),
            snapshots: snapshots.iter().map(|s| s.name.clone()).collect(),
            optimized: Some(false),
            optimized_header: Some(false),
            kind: "container".into(),
            config: Some(config),
        };
        let key = format!("{name}/{}", plan.name);
        db::intents::begin(&self.db, Kind::BackupCreate, &key).await?;
        let dir = self.backups_dir(name);
        let work = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        {
            let work = work.clone();
            self.blocking_worker(move |_| {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&work)
                    .map_err(io_at(&work))
            })
            .await?;
        }
        let made = self
            .write_backup_files(name, &row, &snapshots, index, &plan, &work)
            .await;
        let file = self.backup_file(name, &plan.name);
        let placed = match made {
            Ok(tarball) => {
                let file = file.clone();
                self.blocking_worker(move |_| {
                    std::fs::rename(&tarball, &file).map_err(io_at(&file))
                })
                .await
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        if let Err(e) = placed {
            let _ = db::intents::finish(&self.db, Kind::BackupCreate, &key).await;
            return Err(e);
        }
        let record = BackupRow {
            instance: name.to_string(),
            name: plan.name.clone(),
            created_at: now_rfc3339(),
            expires_at: plan.expires_at.clone(),
            instance_only: plan.instance_only,
            compression: plan.compression.name().into(),
        };
        let recorded = async {
            let mut tx = self.db.begin().await?;
            db::backups::insert(&mut *tx, &record).await?;
            db::intents::finish(&mut *tx, Kind::BackupCreate, &key).await?;
            tx.commit().await?;
            Ok::<(), db::DbError>(())
        }
        .await;
        if let Err(e) = recorded {
            let _ = tokio::fs::remove_file(&file).await;
            return Err(e.into());
        }
        tracing::info!(instance = %name, backup = %plan.name, "backup created");
        self.events.instance(
            "instance-backup-created",
            &format!("{name}/backups/{}", plan.name),
            BTreeMap::new(),
        );
        Ok(())
    }

    /// Write the tarball of a backup into `work`; returns its path. A running instance is
    /// frozen while its upper layer is copied into `work`.
    async fn write_backup_files(
        &self,
        name: &str,
        row: &db::InstanceRow,
        snapshots: &[db::snapshots::SnapshotRow],
        index: BackupIndex,
        plan: &BackupPlan,
        work: &Path,
    ) -> Result<PathBuf, InstanceError> {
        let (mut upper, _, _) = overlay_dirs(&self.paths.container(name));
        if self.running_init(row).is_some() {
            let frozen = self.freeze_for_copy(row).await?;
            let copy = work.join("upper");
            let copied = {
                let (from, to) = (upper.clone(), copy.clone());
                self.blocking_worker(move |w| w.copy_tree(&from, &to)).await
            };
            self.thaw_after_copy(name, frozen).await;
            copied?;
            upper = copy;
        }
        let lower = self.images.rootfs(&row.image_fingerprint);
        let source = BackupSource {
            index,
            snapshots: snapshots
                .iter()
                .map(|s| {
                    let snap_dir = self.paths.container(name).join("snapshots").join(&s.name);
                    let tree = Tree::overlay(overlay_dirs(&snap_dir).0, lower.clone())
                        .with_upper_ids(idmap::from_json(s.config.get(idmap::VOLATILE_ON_DISK)));
                    (s.name.clone(), tree)
                })
                .collect(),
            container: Tree::overlay(upper, lower)
                .with_upper_ids(idmap::from_json(row.config.get(idmap::VOLATILE_ON_DISK))),
            compression: plan.compression,
        };
        let file = work.join(format!("backup.{}", plan.compression.extension()));
        let out = file.clone();
        tokio::task::spawn_blocking(move || write_backup(&out, &source))
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))??;
        Ok(file)
    }

    /// Delete backup `backup` of instance `name`: the record, then the file (a file left
    /// by a failure is kept, and said so).
    pub async fn delete_backup(&self, name: &str, backup: &str) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.backup_row(name, backup).await?;
        db::backups::delete(&self.db, name, backup).await?;
        let file = self.backup_file(name, backup);
        if let Err(e) = tokio::fs::remove_file(&file).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(instance = %name, backup, error = %e,
                "backup record deleted; its file could not be removed");
        }
        self.events.instance(
            "instance-backup-deleted",
            &format!("{name}/backups/{backup}"),
            BTreeMap::new(),
        );
        Ok(())
    }

    /// Rename backup `from` of instance `name` to `to`: the file linked under the new name,
    /// the record renamed, the old name unlinked (a crash leaves the backup under one name
    /// or the other, and at worst an extra unrecorded link, kept).
    pub async fn rename_backup(
        &self,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<(), InstanceError> {
        check_backup_name(to)?;
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.backup_row(name, from).await?;
        if db::backups::get(&self.db, name, to).await?.is_some() {
            return Err(InstanceError::BackupExists {
                instance: name.to_string(),
                backup: to.to_string(),
            });
        }
        let (old, new) = (self.backup_file(name, from), self.backup_file(name, to));
        // An unrecorded file of that name (a crash of an earlier rename) is replaced.
        let _ = tokio::fs::remove_file(&new).await;
        tokio::fs::hard_link(&old, &new)
            .await
            .map_err(|e| InstanceError::Internal(format!("{}: {e}", new.display())))?;
        if let Err(e) = db::backups::rename(&self.db, name, from, to).await {
            let _ = tokio::fs::remove_file(&new).await;
            return Err(match e {
                db::DbError::Conflict(_) => InstanceError::BackupExists {
                    instance: name.to_string(),
                    backup: to.to_string(),
                },
                e => e.into(),
            });
        }
        if let Err(e) = tokio::fs::remove_file(&old).await {
            tracing::warn!(instance = %name, backup = from, error = %e,
                "backup renamed; its old name could not be removed");
        }
        Ok(())
    }

    /// The tarball of backup `backup` of instance `name`, opened, with its length.
    pub async fn open_backup(
        &self,
        name: &str,
        backup: &str,
    ) -> Result<(tokio::fs::File, u64, Compression), InstanceError> {
        let row = self.backup_row(name, backup).await?;
        let path = self.backup_file(name, backup);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| InstanceError::Internal(format!("{}: {e}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| InstanceError::Internal(format!("{}: {e}", path.display())))?
            .len();
        let compression = Compression::parse(&row.compression).unwrap_or(Compression::DEFAULT);
        Ok((file, len, compression))
    }

    /// Start-up: remove what interrupted backup creates left (`.tmp-*` work, a tarball
    /// renamed into place but never recorded), and backups past their expiry.
    pub(super) async fn reconcile_backups(&self) -> Result<(), InstanceError> {
        for key in db::intents::pending(&self.db, Kind::BackupCreate).await? {
            if let Some((name, backup)) = key.split_once('/')
                && db::backups::get(&self.db, name, backup).await?.is_none()
            {
                let file = self.backup_file(name, backup);
                if tokio::fs::symlink_metadata(&file).await.is_ok() {
                    tracing::warn!(instance = %name, backup,
                        "removing a backup whose create a crash interrupted");
                    tokio::fs::remove_file(&file)
                        .await
                        .map_err(|e| InstanceError::Internal(format!("{}: {e}", file.display())))?;
                }
            }
            db::intents::finish(&self.db, Kind::BackupCreate, &key).await?;
        }
        for row in db::instances::list(&self.db).await? {
            let recorded = db::backups::list(&self.db, &row.name).await?;
            for b in recorded.iter().filter(|b| expired(&b.expires_at)) {
                tracing::info!(instance = %row.name, backup = %b.name, "expired backup removed");
                self.delete_backup(&row.name, &b.name).await?;
            }
            let Ok(entries) = std::fs::read_dir(self.backups_dir(&row.name)) else {
                continue;
            };
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if file.starts_with(".tmp-") {
                    tracing::info!(instance = %row.name, work = %file,
                        "removing the work of an interrupted backup create");
                    let path = e.path();
                    self.blocking_worker(move |w| w.remove_container_dir(&path))
                        .await?;
                } else if !recorded.iter().any(|b| b.name == file) {
                    tracing::warn!(instance = %row.name, backup = %file,
                        "backup file without a record: kept");
                }
            }
        }
        Ok(())
    }
}

/// A backup name: what a snapshot name may be.
fn check_backup_name(name: &str) -> Result<(), InstanceError> {
    super::snapshots::check_name(name).map_err(|_| {
        InstanceError::Invalid(format!(
            "invalid backup name \"{name}\": 1-63 letters, digits, '-', '_' or '.' (not first)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_are_checked() -> Result<(), InstanceError> {
        assert_eq!(expiry("")?, "");
        assert_eq!(expiry("0001-01-01T00:00:00Z")?, "");
        assert_eq!(expiry("2030-01-02T03:04:05Z")?, "2030-01-02T03:04:05Z");
        assert!(expiry("tomorrow").is_err());
        assert!(expired("2000-01-01T00:00:00Z"));
        assert!(!expired("2999-01-01T00:00:00Z"));
        assert!(!expired(""));
        Ok(())
    }

    #[test]
    fn backup_names_are_plain() {
        for ok in ["backup0", "nightly.1", "a_b-c"] {
            assert!(check_backup_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".tmp-x", "../x", "a/b", &"x".repeat(64)] {
            assert!(check_backup_name(bad).is_err(), "{bad}");
        }
    }
}
