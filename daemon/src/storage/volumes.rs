//! Custom storage volumes (`/1.0/storage-pools/{pool}/volumes/custom/{name}`): directories
//! (btrfs subvolumes on btrfs pools) that instances mount as `disk` devices and that outlive
//! them; their snapshots, copies, renames and quotas. The volumes of instances (`container`)
//! and the pools' image copies (`image`) are listed too, derived from what exists.
//!
//! A volume's files are kept in the ids the container sees (root is 0): an unprivileged
//! container mounts it id-mapped (see `instance/disks.rs`), as Incus does.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ctl_api::{
    StorageVolume, StorageVolumePost, StorageVolumePut, StorageVolumeSnapshot,
    StorageVolumeSnapshotsPost, StorageVolumeState, StorageVolumesPost,
};

use super::{
    PoolInfo, Storage, StorageError, blocking, btrfs, config, instance_pool, io_at, project_id,
    quota,
};
use crate::db::storage::{VolumeRow, VolumeSnapshotRow};
use crate::db::{self};

/// The instances and profiles whose disk devices name a custom volume.
async fn volume_users(
    s: &Storage,
    pool: &str,
    volume: &str,
) -> Result<(Vec<String>, bool), StorageError> {
    let names = |d: &BTreeMap<String, String>| {
        d.get("type").map(String::as_str) == Some("disk")
            && d.get("pool").map(String::as_str) == Some(pool)
            && d.get("source").map(String::as_str) == Some(volume)
            && d.get("path").map(String::as_str) != Some("/")
    };
    let profiles = db::profiles::list(&s.db).await?;
    let mut out = Vec::new();
    let mut running = false;
    for r in db::instances::list(&s.db).await? {
        let devices = crate::network::expand(&profiles, &r.profiles, &r.devices);
        if devices.values().any(names) {
            out.push(format!("/1.0/instances/{}", r.name));
            running |= r.init_pid > 0;
        }
    }
    for p in &profiles {
        if p.devices.values().any(names) {
            out.push(format!("/1.0/profiles/{}", p.name));
        }
    }
    Ok((out, running))
}

/// 409 while an instance or a profile names the volume.
async fn ensure_unused(s: &Storage, pool: &str, volume: &str) -> Result<(), StorageError> {
    let (users, _) = volume_users(s, pool, volume).await?;
    if users.is_empty() {
        return Ok(());
    }
    Err(StorageError::InUse(format!(
        "storage volume \"{volume}\" is in use by {}",
        users.join(", ")
    )))
}

fn to_api(v: &VolumeRow, used_by: Vec<String>) -> StorageVolume {
    StorageVolume {
        name: v.name.clone(),
        kind: "custom".into(),
        description: v.description.clone(),
        config: v.config.clone(),
        used_by,
        location: "none".into(),
        content_type: "filesystem".into(),
        project: "default".into(),
        created_at: v.created_at.clone(),
    }
}

/// Make an empty volume directory (a subvolume on btrfs), owned by the container's root.
fn make_volume_dir(info: &PoolInfo, dir: &Path) -> Result<(), StorageError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    if info.is_btrfs() {
        btrfs::create_subvolume(dir).map_err(io_at(dir))?;
    } else {
        std::fs::create_dir(dir).map_err(io_at(dir))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io_at(dir))
}

/// Copy the volume (or snapshot) directory `from` to `to` (which must not exist): a btrfs
/// snapshot when both are on one btrfs filesystem, a new subvolume filled by `cp -a` when
/// only `to` is on btrfs (so it has a quota of its own), else `cp -a`.
fn copy_volume_dir(from: &Path, to: &Path) -> Result<(), StorageError> {
    let parent = to
        .parent()
        .ok_or_else(|| StorageError::Internal(format!("{}: no parent", to.display())))?;
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(StorageError::Exists(format!("{}", to.display())));
    }
    if btrfs::is_subvolume(from) && btrfs::same_btrfs(from, parent) {
        return btrfs::snapshot(from, to).map_err(io_at(to));
    }
    if btrfs::is_btrfs(parent) {
        btrfs::create_subvolume(to).map_err(io_at(to))?;
        let copied = super::copy_tree(from, to);
        if copied.is_err() {
            let _ = btrfs::remove_tree(to);
        }
        return copied;
    }
    super::copy_tree(from, to)
}

/// Rename each `(from, to)` whose `from` exists and `to` does not (idempotent: a move a
/// crash cut short is finished by running it again).
fn move_dirs(moves: &[(std::path::PathBuf, std::path::PathBuf)]) -> Result<(), StorageError> {
    for (a, b) in moves {
        if std::fs::symlink_metadata(a).is_ok() && std::fs::symlink_metadata(b).is_err() {
            std::fs::rename(a, b).map_err(io_at(a))?;
        }
    }
    Ok(())
}

/// Set or clear a volume's quota.
fn apply_volume_quota(info: &PoolInfo, dir: &Path, size: Option<u64>) -> Result<(), StorageError> {
    if info.is_btrfs() {
        return btrfs::limit(dir, size).map_err(io_at(dir));
    }
    if size.is_none() && !quota::project_quota_supported(dir) {
        return Ok(());
    }
    let id = project_id(dir);
    if quota::project_of(dir).map_err(io_at(dir))? != id {
        quota::set_project(dir, id).map_err(io_at(dir))?;
    }
    quota::set_project_limit(dir, id, size).map_err(io_at(dir))
}

impl Storage {
    async fn volume_row(&self, pool: &str, name: &str) -> Result<VolumeRow, StorageError> {
        db::storage::volume(&self.db, pool, name)
            .await?
            .ok_or_else(|| StorageError::VolumeNotFound {
                pool: pool.to_string(),
                volume: name.to_string(),
            })
    }

    /// Every volume of a pool: custom ones, the instances' and the pool's image copies.
    pub async fn volumes(&self, pool: &str) -> Result<Vec<StorageVolume>, StorageError> {
        let info = self.pool_info(pool).await?;
        let mut out = Vec::new();
        for r in db::instances::list(&self.db).await? {
            if instance_pool(&r.config) == pool {
                out.push(StorageVolume {
                    name: r.name.clone(),
                    kind: "container".into(),
                    used_by: vec![format!("/1.0/instances/{}", r.name)],
                    location: "none".into(),
                    content_type: "filesystem".into(),
                    project: "default".into(),
                    created_at: r.created_at.clone(),
                    ..StorageVolume::default()
                });
            }
        }
        if info.is_btrfs()
            && let Ok(rd) = std::fs::read_dir(info.root.join("images"))
        {
            let images = db::images::list(&self.db).await?;
            for e in rd.flatten() {
                let fp = e.file_name().to_string_lossy().into_owned();
                // Clients parse the time: an image gone from the store shows the epoch.
                let created_at = images
                    .iter()
                    .find(|i| i.fingerprint == fp)
                    .map(|i| i.uploaded_at.clone())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
                if !fp.starts_with('.') {
                    out.push(StorageVolume {
                        name: fp.clone(),
                        kind: "image".into(),
                        used_by: vec![format!("/1.0/images/{fp}")],
                        location: "none".into(),
                        content_type: "filesystem".into(),
                        project: "default".into(),
                        created_at,
                        ..StorageVolume::default()
                    });
                }
            }
        }
        for v in db::storage::volumes(&self.db, Some(pool)).await? {
            let (used, _) = volume_users(self, pool, &v.name).await?;
            out.push(to_api(&v, used));
        }
        Ok(out)
    }

    /// One custom volume.
    pub async fn volume(&self, pool: &str, name: &str) -> Result<StorageVolume, StorageError> {
        self.pool_info(pool).await?;
        let v = self.volume_row(pool, name).await?;
        let (used, _) = volume_users(self, pool, name).await?;
        Ok(to_api(&v, used))
    }

    /// The host directory of custom volume `name` on `pool` (for a disk device).
    pub async fn volume_path(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<std::path::PathBuf, StorageError> {
        let info = self.pool_info(pool).await?;
        self.volume_row(pool, name).await?;
        Ok(info.volume_dir(name))
    }

    /// Create a custom volume, empty or (`source.type=copy`) a copy of another volume or
    /// of one of its snapshots (`VOL/SNAP`), with the source's snapshots unless
    /// `volume_only`.
    pub async fn create_volume(
        &self,
        pool: &str,
        req: StorageVolumesPost,
    ) -> Result<(), StorageError> {
        config::check_name("storage volume", &req.name).map_err(StorageError::Invalid)?;
        if !req.kind.is_empty() && req.kind != "custom" {
            return Err(StorageError::Invalid(format!(
                "volume type \"{}\": only custom volumes can be created",
                req.kind
            )));
        }
        if !req.content_type.is_empty() && req.content_type != "filesystem" {
            return Err(StorageError::Invalid(format!(
                "content type \"{}\" is not supported (only filesystem)",
                req.content_type
            )));
        }
        let size = config::check_volume_config(&req.config).map_err(StorageError::Invalid)?;
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        if size.is_some() && !info.is_btrfs() {
            let root = info.root.clone();
            if !blocking(move || Ok(quota::project_quota_supported(&root))).await? {
                return Err(StorageError::Invalid(format!(
                    "storage pool \"{pool}\" (dir) cannot enforce a volume size: its \
                     filesystem has no project quotas"
                )));
            }
        }
        if db::storage::volume(&self.db, pool, &req.name)
            .await?
            .is_some()
        {
            return Err(StorageError::Exists(format!(
                "storage volume \"{}\" in pool \"{pool}\"",
                req.name
            )));
        }
        // The source, checked before anything is made.
        let copy = match req.source.kind.as_str() {
            "" => None,
            "copy" => {
                let src_pool = if req.source.pool.is_empty() {
                    pool.to_string()
                } else {
                    req.source.pool.clone()
                };
                let src_info = self.pool_info(&src_pool).await?;
                let (vol, snap) = match req.source.name.split_once('/') {
                    Some((v, s)) => (v.to_string(), Some(s.to_string())),
                    None => (req.source.name.clone(), None),
                };
                self.volume_row(&src_pool, &vol).await?;
                let snaps = db::storage::volume_snapshots(&self.db, &src_pool, &vol).await?;
                let from = match &snap {
                    Some(s) => {
                        if !snaps.iter().any(|x| &x.name == s) {
                            return Err(StorageError::SnapshotNotFound {
                                volume: vol.clone(),
                                snapshot: s.clone(),
                            });
                        }
                        src_info.volume_snapshots_dir(&vol).join(s)
                    }
                    None => src_info.volume_dir(&vol),
                };
                let with = if snap.is_none() && !req.source.volume_only {
                    snaps
                } else {
                    Vec::new()
                };
                Some((from, src_info.volume_snapshots_dir(&vol), with))
            }
            other => {
                return Err(StorageError::Invalid(format!(
                    "volume source type \"{other}\" is not supported (only copy)"
                )));
            }
        };
        let dir = info.volume_dir(&req.name);
        let snaps_dir = info.volume_snapshots_dir(&req.name);
        let snapshots = copy.as_ref().map(|c| c.2.clone()).unwrap_or_default();
        for d in [&dir, &snaps_dir] {
            if std::fs::symlink_metadata(d).is_ok() {
                return Err(StorageError::Exists(format!(
                    "files without a record at {} (move them away)",
                    d.display()
                )));
            }
        }
        // From here the directories are this create's: a crash before its rows leaves the
        // intent, and the next start removes them.
        let key = format!("{pool}/{}", req.name);
        db::intents::begin(&self.db, Kind::VolumeCreate, &key).await?;
        {
            let (info, dir, snaps_dir) = (info.clone(), dir.clone(), snaps_dir.clone());
            let made = blocking(move || {
                let made = (|| {
                    match &copy {
                        None => make_volume_dir(&info, &dir)?,
                        Some((from, from_snaps, snaps)) => {
                            copy_volume_dir(from, &dir)?;
                            for s in snaps {
                                copy_volume_dir(
                                    &from_snaps.join(&s.name),
                                    &snaps_dir.join(&s.name),
                                )?;
                            }
                        }
                    }
                    apply_volume_quota(&info, &dir, size)
                })();
                if made.is_err() {
                    let _ = btrfs::remove_tree(&dir);
                    let _ = btrfs::remove_tree(&snaps_dir);
                }
                made
            })
            .await;
            if let Err(e) = made {
                let _ = db::intents::finish(&self.db, Kind::VolumeCreate, &key).await;
                return Err(e);
            }
        }
        let row = VolumeRow {
            pool: pool.to_string(),
            name: req.name.clone(),
            description: req.description.clone(),
            config: req.config.clone(),
            created_at: crate::clock::now_rfc3339(),
        };
        let recorded = async {
            let mut tx = self.db.begin().await?;
            db::storage::insert_volume(&mut *tx, &row).await?;
            for s in &snapshots {
                db::storage::insert_volume_snapshot(&mut *tx, pool, &req.name, s).await?;
            }
            db::intents::finish(&mut *tx, Kind::VolumeCreate, &key).await?;
            tx.commit().await?;
            Ok::<(), DbError>(())
        }
        .await;
        if let Err(e) = recorded {
            let _ = db::storage::delete_volume(&self.db, pool, &req.name).await;
            let removed = blocking(move || {
                btrfs::remove_tree(&dir).map_err(io_at(&dir))?;
                btrfs::remove_tree(&snaps_dir).map_err(io_at(&snaps_dir))
            })
            .await;
            if removed.is_ok() {
                let _ = db::intents::finish(&self.db, Kind::VolumeCreate, &key).await;
            }
            return Err(e.into());
        }
        tracing::info!(pool, volume = %req.name, "storage volume created");
        self.save_record().await;
        Ok(())
    }

    /// Replace (`patch`: merge) a volume's description and config (`size` applied at
    /// once), or restore it to a snapshot (`restore`).
    pub async fn update_volume(
        &self,
        pool: &str,
        name: &str,
        put: StorageVolumePut,
        patch: bool,
    ) -> Result<(), StorageError> {
        if !put.restore.is_empty() {
            return self.restore_volume(pool, name, &put.restore).await;
        }
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        let mut row = self.volume_row(pool, name).await?;
        if let Some(d) = put.description {
            row.description = d;
        }
        if let Some(cfg) = put.config {
            let next = if patch {
                // An empty value unsets the key.
                let mut n = row.config.clone();
                for (k, v) in cfg {
                    if v.is_empty() {
                        n.remove(&k);
                    } else {
                        n.insert(k, v);
                    }
                }
                n
            } else {
                cfg
            };
            let size = config::check_volume_config(&next).map_err(StorageError::Invalid)?;
            if next.get("size") != row.config.get("size") {
                if size.is_some() && !info.is_btrfs() {
                    let root = info.root.clone();
                    if !blocking(move || Ok(quota::project_quota_supported(&root))).await? {
                        return Err(StorageError::Invalid(format!(
                            "storage pool \"{pool}\" (dir) cannot enforce a volume size"
                        )));
                    }
                }
                let (info, dir) = (info.clone(), info.volume_dir(name));
                blocking(move || apply_volume_quota(&info, &dir, size)).await?;
            }
            row.config = next;
        }
        db::storage::update_volume(&self.db, &row).await?;
        self.save_record().await;
        Ok(())
    }

    /// Rename a custom volume (409 while an instance or profile uses it).
    pub async fn rename_volume(
        &self,
        pool: &str,
        name: &str,
        req: StorageVolumePost,
    ) -> Result<(), StorageError> {
        if !req.pool.is_empty() && req.pool != pool {
            // A move to another pool: a copy with its snapshots, then the source goes (a
            // used volume is refused before anything is copied).
            ensure_unused(self, pool, name).await?;
            let row = self.volume_row(pool, name).await?;
            self.create_volume(
                &req.pool,
                StorageVolumesPost {
                    name: req.name.clone(),
                    kind: "custom".into(),
                    description: row.description.clone(),
                    config: row.config.clone(),
                    source: ctl_api::StorageVolumeSource {
                        name: name.to_string(),
                        kind: "copy".into(),
                        pool: pool.to_string(),
                        volume_only: false,
                    },
                    content_type: String::new(),
                },
            )
            .await?;
            return self.delete_volume(pool, name).await;
        }
        config::check_name("storage volume", &req.name).map_err(StorageError::Invalid)?;
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        self.volume_row(pool, name).await?;
        ensure_unused(self, pool, name).await?;
        if db::storage::volume(&self.db, pool, &req.name)
            .await?
            .is_some()
        {
            return Err(StorageError::Exists(format!(
                "storage volume \"{}\" in pool \"{pool}\"",
                req.name
            )));
        }
        let moves = [
            (info.volume_dir(name), info.volume_dir(&req.name)),
            (
                info.volume_snapshots_dir(name),
                info.volume_snapshots_dir(&req.name),
            ),
        ];
        for (_, b) in &moves {
            if std::fs::symlink_metadata(b).is_ok() {
                return Err(StorageError::Exists(format!(
                    "files without a record at {} (move them away)",
                    b.display()
                )));
            }
        }
        // The directories move under an intent; the rows move with its end in one
        // transaction. A crash between: the next start puts the directories where the row
        // is ([`Storage::reconcile_volumes`]).
        let key = format!("{pool}/{name}/{}", req.name);
        db::intents::begin(&self.db, Kind::VolumeRename, &key).await?;
        let moved = {
            let moves = moves.clone();
            blocking(move || move_dirs(&moves)).await
        };
        if let Err(e) = moved {
            let back: Vec<_> = moves.iter().map(|(a, b)| (b.clone(), a.clone())).collect();
            if blocking(move || move_dirs(&back)).await.is_ok() {
                let _ = db::intents::finish(&self.db, Kind::VolumeRename, &key).await;
            }
            return Err(e);
        }
        let renamed = async {
            let mut tx = self.db.begin().await?;
            db::storage::rename_volume(&mut *tx, pool, name, &req.name).await?;
            db::intents::finish(&mut *tx, Kind::VolumeRename, &key).await?;
            tx.commit().await?;
            Ok::<(), DbError>(())
        }
        .await;
        if let Err(e) = renamed {
            let back: Vec<_> = moves.iter().map(|(a, b)| (b.clone(), a.clone())).collect();
            if blocking(move || move_dirs(&back)).await.is_ok() {
                let _ = db::intents::finish(&self.db, Kind::VolumeRename, &key).await;
            }
            return Err(e.into());
        }
        self.save_record().await;
        Ok(())
    }

    /// Delete a custom volume and its snapshots (409 while anything uses it).
    pub async fn delete_volume(&self, pool: &str, name: &str) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        self.volume_row(pool, name).await?;
        ensure_unused(self, pool, name).await?;
        // The row goes first: files without a row are never reused by a new volume of the
        // name (its create refuses an existing directory) and are logged at start-up.
        db::storage::delete_volume(&self.db, pool, name).await?;
        let (dir, snaps) = (info.volume_dir(name), info.volume_snapshots_dir(name));
        blocking(move || {
            btrfs::remove_tree(&snaps).map_err(io_at(&snaps))?;
            btrfs::remove_tree(&dir).map_err(io_at(&dir))
        })
        .await?;
        tracing::info!(pool, volume = %name, "storage volume deleted");
        self.save_record().await;
        Ok(())
    }

    /// A volume's usage and quota.
    pub async fn volume_state(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<StorageVolumeState, StorageError> {
        let info = self.pool_info(pool).await?;
        let row = self.volume_row(pool, name).await?;
        let dir = info.volume_dir(name);
        let total = row
            .config
            .get("size")
            .and_then(|s| config::parse_size(s).ok())
            .map_or(0, |b| b as i64);
        let used = blocking(move || {
            Ok(if info.is_btrfs() {
                btrfs::usage(&dir).unwrap_or(0)
            } else if quota::project_quota_supported(&dir) {
                quota::project_usage(&dir, project_id(&dir)).unwrap_or(0)
            } else {
                crate::worker::usage::disk_usage(&dir)
            })
        })
        .await?;
        Ok(StorageVolumeState {
            usage: Some(ctl_api::storage::StorageVolumeStateUsage { used, total }),
        })
    }

    // ----- snapshots -----

    /// Start-up: finish the volume changes a crash cut off. A create without its rows loses
    /// the directories it made (they held nothing anyone saw); a rename's directories go
    /// where the row is.
    pub async fn reconcile_volumes(&self) -> Result<(), StorageError> {
        for key in db::intents::pending(&self.db, Kind::VolumeCreate).await? {
            if let Some((pool, name)) = key.split_once('/')
                && db::storage::volume(&self.db, pool, name).await?.is_none()
                && let Ok(info) = self.pool_info(pool).await
            {
                tracing::warn!(pool, volume = name, "removing a volume a crash cut off");
                let (dir, snaps) = (info.volume_dir(name), info.volume_snapshots_dir(name));
                blocking(move || {
                    btrfs::remove_tree(&dir).map_err(io_at(&dir))?;
                    btrfs::remove_tree(&snaps).map_err(io_at(&snaps))
                })
                .await?;
            }
            db::intents::finish(&self.db, Kind::VolumeCreate, &key).await?;
        }
        for key in db::intents::pending(&self.db, Kind::VolumeRename).await? {
            let mut parts = key.splitn(3, '/');
            if let (Some(pool), Some(old), Some(new)) = (parts.next(), parts.next(), parts.next())
                && let Ok(info) = self.pool_info(pool).await
            {
                let renamed = db::storage::volume(&self.db, pool, new).await?.is_some();
                let pairs = [
                    (info.volume_dir(old), info.volume_dir(new)),
                    (
                        info.volume_snapshots_dir(old),
                        info.volume_snapshots_dir(new),
                    ),
                ];
                let moves: Vec<_> = if renamed {
                    pairs.to_vec()
                } else {
                    pairs.iter().map(|(a, b)| (b.clone(), a.clone())).collect()
                };
                tracing::warn!(
                    pool,
                    old,
                    new,
                    renamed,
                    "finishing a volume rename a crash cut off"
                );
                blocking(move || move_dirs(&moves)).await?;
            }
            db::intents::finish(&self.db, Kind::VolumeRename, &key).await?;
        }
        Ok(())
    }

    /// The snapshots of a custom volume.
    pub async fn volume_snapshots(
        &self,
        pool: &str,
        name: &str,
    ) -> Result<Vec<StorageVolumeSnapshot>, StorageError> {
        self.pool_info(pool).await?;
        let v = self.volume_row(pool, name).await?;
        Ok(db::storage::volume_snapshots(&self.db, pool, name)
            .await?
            .into_iter()
            .map(|s| snapshot_api(&v, s))
            .collect())
    }

    /// One snapshot of a custom volume.
    pub async fn volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<StorageVolumeSnapshot, StorageError> {
        self.volume_snapshots(pool, name)
            .await?
            .into_iter()
            .find(|s| s.name == snapshot)
            .ok_or_else(|| StorageError::SnapshotNotFound {
                volume: name.to_string(),
                snapshot: snapshot.to_string(),
            })
    }

    /// Snapshot a custom volume (named `snapN` when no name is given).
    pub async fn create_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        req: StorageVolumeSnapshotsPost,
    ) -> Result<String, StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        self.volume_row(pool, name).await?;
        let existing = db::storage::volume_snapshots(&self.db, pool, name).await?;
        let snap = if req.name.is_empty() {
            (0..)
                .map(|i| format!("snap{i}"))
                .find(|n| !existing.iter().any(|s| &s.name == n))
                .unwrap_or_default()
        } else {
            req.name.clone()
        };
        config::check_name("snapshot", &snap).map_err(StorageError::Invalid)?;
        if existing.iter().any(|s| s.name == snap) {
            return Err(StorageError::Exists(format!(
                "snapshot \"{snap}\" of volume \"{name}\""
            )));
        }
        let (from, to) = (
            info.volume_dir(name),
            info.volume_snapshots_dir(name).join(&snap),
        );
        {
            // `copy_volume_dir` refuses an existing directory: files without a record are
            // never overwritten.
            let to = to.clone();
            blocking(move || copy_volume_dir(&from, &to)).await?;
        }
        let row = VolumeSnapshotRow {
            name: snap.clone(),
            description: String::new(),
            created_at: crate::clock::now_rfc3339(),
            expires_at: req.expires_at.clone().unwrap_or_default(),
        };
        if let Err(e) = db::storage::insert_volume_snapshot(&self.db, pool, name, &row).await {
            let _ = blocking(move || btrfs::remove_tree(&to).map_err(io_at(&to))).await;
            return Err(e.into());
        }
        self.save_record().await;
        Ok(snap)
    }

    /// Delete a snapshot of a custom volume.
    pub async fn delete_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        self.volume_snapshot_checked(pool, name, snapshot).await?;
        db::storage::delete_volume_snapshot(&self.db, pool, name, snapshot).await?;
        self.save_record().await;
        let dir = info.volume_snapshots_dir(name).join(snapshot);
        blocking(move || btrfs::remove_tree(&dir).map_err(io_at(&dir))).await
    }

    /// Rename a snapshot of a custom volume.
    pub async fn rename_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snapshot: &str,
        new: &str,
    ) -> Result<(), StorageError> {
        config::check_name("snapshot", new).map_err(StorageError::Invalid)?;
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        self.volume_snapshot_checked(pool, name, snapshot).await?;
        let (a, b) = (
            info.volume_snapshots_dir(name).join(snapshot),
            info.volume_snapshots_dir(name).join(new),
        );
        if b.exists() {
            return Err(StorageError::Exists(format!(
                "snapshot \"{new}\" of volume \"{name}\""
            )));
        }
        // The files first: a crash between leaves the row on the old name and the files on
        // the new one, which a snapshot of the new name refuses to overwrite.
        std::fs::rename(&a, &b).map_err(io_at(&a))?;
        if let Err(e) =
            db::storage::rename_volume_snapshot(&self.db, pool, name, snapshot, new).await
        {
            let _ = std::fs::rename(&b, &a);
            return Err(e.into());
        }
        self.save_record().await;
        Ok(())
    }

    async fn volume_snapshot_checked(
        &self,
        pool: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<(), StorageError> {
        self.volume_row(pool, name).await?;
        if !db::storage::volume_snapshots(&self.db, pool, name)
            .await?
            .iter()
            .any(|s| s.name == snapshot)
        {
            return Err(StorageError::SnapshotNotFound {
                volume: name.to_string(),
                snapshot: snapshot.to_string(),
            });
        }
        Ok(())
    }

    /// Restore a custom volume to a snapshot: a fresh copy of the snapshot takes the
    /// volume's place (409 while a running instance has it mounted: it would keep the old
    /// files).
    async fn restore_volume(
        &self,
        pool: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(pool).await?;
        let row = self.volume_row(pool, name).await?;
        self.volume_snapshot_checked(pool, name, snapshot).await?;
        let (_, running) = volume_users(self, pool, name).await?;
        if running {
            return Err(StorageError::InUse(format!(
                "storage volume \"{name}\" is mounted by a running instance: stop it first"
            )));
        }
        let size = config::check_volume_config(&row.config).map_err(StorageError::Invalid)?;
        let dir = info.volume_dir(name);
        let from = info.volume_snapshots_dir(name).join(snapshot);
        let name = name.to_string();
        blocking(move || {
            // A fresh copy of the snapshot, exchanged with the volume in one step (a crash
            // leaves the volume as it was or as restored, never missing); the old files,
            // now under the fresh copy's name, go after.
            let fresh = dir.with_file_name(format!(".restore-{name}"));
            btrfs::remove_tree(&fresh).map_err(io_at(&fresh))?;
            copy_volume_dir(&from, &fresh)?;
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &fresh,
                nix::fcntl::AT_FDCWD,
                &dir,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(|e| io_at(&dir)(std::io::Error::from(e)))?;
            btrfs::remove_tree(&fresh).map_err(io_at(&fresh))?;
            apply_volume_quota(&info, &dir, size)
        })
        .await
    }
}

use crate::db::DbError;
use crate::db::intents::Kind;

fn snapshot_api(v: &VolumeRow, s: VolumeSnapshotRow) -> StorageVolumeSnapshot {
    StorageVolumeSnapshot {
        name: s.name,
        description: s.description,
        config: v.config.clone(),
        content_type: "filesystem".into(),
        created_at: s.created_at,
        expires_at: (!s.expires_at.is_empty()).then_some(s.expires_at),
    }
}
