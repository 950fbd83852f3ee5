//! Storage pools: where instances' own layers, custom volumes and (on btrfs) copies of
//! image layers live, and the quotas on them.
//!
//! Every pool keeps the same layout under its root: `containers/<name>/` (an instance's
//! directory; `$CTL_DIR/containers/<name>` is a symlink to it, as in Incus, unless the pool
//! is the `default` one on the state directory itself), `custom/<volume>/`,
//! `custom-snapshots/<volume>/<snapshot>/` and, on btrfs, `images/<fingerprint>/rootfs`
//! (a read-only subvolume made once per pool from the image store).
//!
//! Drivers:
//! - `dir`: plain directories. The `default` pool is the layout every install already had
//!   (root: the state directory). A root disk `size` is enforced by project quotas where the
//!   pool's filesystem has them (ext4 `-O quota,project` mounted `prjquota`, xfs `pquota`),
//!   and refused (400) where it has not.
//! - `btrfs`: on a loop file ctld makes (`size`), a block device (`source=/dev/…`) or a
//!   directory of a mounted btrfs (`source=/path`). An instance's writable layer is a
//!   subvolume (`layer/` with `upper` and `work`), so snapshots, copies and restores are
//!   btrfs snapshots (O(1)); `size` is a qgroup limit on it.
//!
//! A root disk `size` bounds what the instance writes over its image (its own layer), on
//! both drivers.

pub mod config;
pub mod record;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ctl_api::{StoragePool, StoragePoolPut, StoragePoolResources, StoragePoolsPost};
use tokio::sync::Mutex;

use crate::db::storage::PoolRow;
use crate::db::{self, DbError, Pool};
use crate::paths::Paths;
use crate::worker::{Placement, btrfs, quota};
use config::PoolSource;

/// The instance config key naming the pool that holds an instance's files (absent on
/// instances made before pools existed: `default`).
pub const VOLATILE_POOL: &str = "volatile.rootfs.pool";

/// The pool of instances that name none.
pub const DEFAULT_POOL: &str = "default";

/// Errors of the storage service.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage pool \"{0}\" not found")]
    PoolNotFound(String),
    #[error("storage volume \"{volume}\" not found in pool \"{pool}\"")]
    VolumeNotFound { pool: String, volume: String },
    #[error("snapshot \"{snapshot}\" of storage volume \"{volume}\" not found")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error("{0} already exists")]
    Exists(String),
    /// The pool or volume is used (409).
    #[error("{0}")]
    InUse(String),
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(DbError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DbError> for StorageError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(what) => StorageError::Exists(what),
            e => StorageError::Db(e),
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Run blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Internal(e.to_string()))?
}

/// A pool as the service uses it: its row and where its files are.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    pub row: PoolRow,
    /// Where `containers/`, `custom/` and `images/` are.
    pub root: PathBuf,
    /// The loop file or device ctld mounts at `root` (btrfs pools it made or formatted).
    mount: Option<PathBuf>,
}

impl PoolInfo {
    pub fn is_btrfs(&self) -> bool {
        self.row.driver == "btrfs"
    }

    /// The file or device the pool's filesystem is on, when ctld mounts it.
    fn mount_source(&self) -> Option<PathBuf> {
        self.mount.clone()
    }

    /// An instance's directory in the pool.
    pub fn container_home(&self, name: &str) -> PathBuf {
        self.root.join("containers").join(name)
    }

    /// A custom volume's directory.
    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        self.root.join("custom").join(volume)
    }

    /// The snapshots of a custom volume.
    pub fn volume_snapshots_dir(&self, volume: &str) -> PathBuf {
        self.root.join("custom-snapshots").join(volume)
    }
}

/// The storage service: pools, custom volumes, where instances go, quotas.
#[derive(Clone)]
pub struct Storage {
    db: Pool,
    paths: Arc<Paths>,
    /// Held by every change of a pool or volume (they are rare; no per-object locks).
    lock: Arc<Mutex<()>>,
}

impl Storage {
    pub fn new(db: Pool, paths: Arc<Paths>) -> Self {
        Storage {
            db,
            paths,
            lock: Arc::new(Mutex::new(())),
        }
    }

    fn own_file(&self, name: &str) -> PathBuf {
        self.paths.dir.join("disks").join(format!("{name}.img"))
    }

    fn own_dir(&self, name: &str) -> PathBuf {
        self.paths.dir.join("storage-pools").join(name)
    }

    fn info(&self, row: PoolRow) -> PoolInfo {
        // What the source is follows from where it is (a loop file ctld makes lives in
        // `disks/`), not from what is there now: a missing loop file is still one.
        let source = row.config.get("source").filter(|s| !s.is_empty());
        let mounted =
            |s: &String| s.starts_with("/dev/") || Path::new(s) == self.own_file(&row.name);
        let (root, mount) = match (row.driver.as_str(), source) {
            ("dir", Some(s)) => (PathBuf::from(s), None),
            ("dir", None) => (self.paths.dir.clone(), None),
            (_, Some(s)) if mounted(s) => (self.own_dir(&row.name), Some(PathBuf::from(s))),
            (_, Some(s)) => (PathBuf::from(s), None),
            (_, None) => (self.own_dir(&row.name), None),
        };
        PoolInfo { row, root, mount }
    }

    /// One pool, resolved.
    pub async fn pool_info(&self, name: &str) -> Result<PoolInfo, StorageError> {
        let row = db::storage::pool(&self.db, name)
            .await?
            .ok_or_else(|| StorageError::PoolNotFound(name.to_string()))?;
        Ok(self.info(row))
    }

    /// Every pool, resolved.
    pub async fn pool_infos(&self) -> Result<Vec<PoolInfo>, StorageError> {
        Ok(db::storage::pools(&self.db)
            .await?
            .into_iter()
            .map(|r| self.info(r))
            .collect())
    }

    /// Rewrite `storage.json` from the database (see [`record`]). A failure is logged: the
    /// change it follows is made, and the next change writes the file again.
    pub(crate) async fn save_record(&self) {
        let result = async {
            let pools = db::storage::pools(&self.db).await?;
            let mut volumes = Vec::new();
            for v in db::storage::volumes(&self.db, None).await? {
                let snaps = db::storage::volume_snapshots(&self.db, &v.pool, &v.name).await?;
                volumes.push(record::VolumeRecord::of(&v, &snaps));
            }
            Ok::<_, DbError>(record::Record {
                pools: pools.iter().map(record::PoolRecord::from).collect(),
                volumes,
            })
        }
        .await;
        let dir = self.paths.dir.clone();
        let written = match result {
            Ok(r) => blocking(move || record::write(&dir, &r).map_err(io_at(&dir))).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "storage.json not written");
        }
    }

    /// Start-up: mount the pools ctld mounts (loop files, devices) that are not mounted.
    /// A pool that cannot be mounted is logged and shows `Unavailable`; its instances fail
    /// to start, and nothing of theirs is touched.
    pub async fn mount_all(&self) -> Result<(), StorageError> {
        for info in self.pool_infos().await? {
            let Some(source) = info.mount_source() else {
                continue;
            };
            let root = info.root.clone();
            let name = info.row.name.clone();
            let mounted = blocking(move || {
                if btrfs::is_mountpoint(&root) {
                    return Ok(false);
                }
                std::fs::create_dir_all(&root).map_err(io_at(&root))?;
                btrfs::mount(&source, &root).map_err(io_at(&source))?;
                Ok(true)
            })
            .await;
            match mounted {
                Ok(true) => tracing::info!(pool = %name, "storage pool mounted"),
                Ok(false) => {}
                Err(e) => tracing::error!(pool = %name, error = %e, "storage pool not mounted"),
            }
        }
        // Removals a crash cut off (set aside as `.deleting-*`, their names already free).
        for info in self.pool_infos().await? {
            let dir = info.root.join("containers");
            let _ = blocking(move || {
                for e in std::fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".deleting-") {
                        tracing::warn!(dir = %e.path().display(), "finishing a removal");
                        btrfs::remove_tree(&e.path()).map_err(io_at(&e.path()))?;
                    }
                }
                Ok(())
            })
            .await;
        }
        Ok(())
    }

    fn status(info: &PoolInfo) -> &'static str {
        let ready = if info.mount_source().is_some() {
            btrfs::is_mountpoint(&info.root)
        } else {
            info.root.is_dir()
        };
        if ready { "Created" } else { "Unavailable" }
    }

    /// The API's view of a pool.
    async fn to_api(&self, info: &PoolInfo) -> Result<StoragePool, StorageError> {
        Ok(StoragePool {
            name: info.row.name.clone(),
            driver: info.row.driver.clone(),
            description: info.row.description.clone(),
            config: info.row.config.clone(),
            used_by: self.used_by(&info.row.name).await?,
            status: Self::status(info).into(),
            locations: vec!["none".into()],
        })
    }

    /// Every pool.
    pub async fn pools(&self) -> Result<Vec<StoragePool>, StorageError> {
        let mut out = Vec::new();
        for info in self.pool_infos().await? {
            out.push(self.to_api(&info).await?);
        }
        Ok(out)
    }

    /// One pool.
    pub async fn pool(&self, name: &str) -> Result<StoragePool, StorageError> {
        let info = self.pool_info(name).await?;
        self.to_api(&info).await
    }

    /// What uses a pool: instances on it, profiles whose disks name it, its custom volumes.
    pub async fn used_by(&self, pool: &str) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = db::instances::list(&self.db)
            .await?
            .iter()
            .filter(|r| instance_pool(&r.config) == pool)
            .map(|r| format!("/1.0/instances/{}", r.name))
            .collect();
        for p in db::profiles::list(&self.db).await? {
            if p.devices.values().any(|d| {
                d.get("type").map(String::as_str) == Some("disk")
                    && d.get("pool").map(String::as_str) == Some(pool)
            }) {
                out.push(format!("/1.0/profiles/{}", p.name));
            }
        }
        for v in db::storage::volumes(&self.db, Some(pool)).await? {
            out.push(format!(
                "/1.0/storage-pools/{pool}/volumes/custom/{}",
                v.name
            ));
        }
        Ok(out)
    }

    /// Create a pool: checked, made on disk, recorded; what was made is undone on failure.
    pub async fn create_pool(&self, req: StoragePoolsPost) -> Result<(), StorageError> {
        config::check_name("storage pool", &req.name).map_err(StorageError::Invalid)?;
        let _guard = self.lock.lock().await;
        if db::storage::pool(&self.db, &req.name).await?.is_some() {
            return Err(StorageError::Exists(format!(
                "storage pool \"{}\"",
                req.name
            )));
        }
        let (own_file, own_dir) = (self.own_file(&req.name), self.own_dir(&req.name));
        let source = config::check_pool(&req.driver, &req.config, &own_file, &own_dir)
            .map_err(StorageError::Invalid)?;
        self.check_source_place(&source, &own_dir).await?;
        let mut cfg = req.config.clone();
        match &source {
            PoolSource::Dir(p) | PoolSource::BtrfsDir(p) | PoolSource::Device(p) => {
                cfg.insert("source".into(), p.to_string_lossy().into_owned());
            }
            PoolSource::LoopFile { file, size } => {
                cfg.insert("source".into(), file.to_string_lossy().into_owned());
                cfg.insert("size".into(), size.to_string());
            }
        }
        let made = {
            let (source, own_dir, name) = (source.clone(), own_dir.clone(), req.name.clone());
            blocking(move || make_pool(&source, &own_dir, &name)).await?
        };
        let row = PoolRow {
            name: req.name.clone(),
            driver: req.driver.clone(),
            description: req.description.clone(),
            config: cfg,
        };
        if let Err(e) = db::storage::insert_pool(&self.db, &row).await {
            let _ = blocking(move || undo_pool(&made)).await;
            return Err(e.into());
        }
        tracing::info!(pool = %req.name, driver = %req.driver, "storage pool created");
        self.save_record().await;
        Ok(())
    }

    /// A new pool's place must be its own: not the state directory or inside it (but for
    /// ctld's own place for pools), not inside or around another pool.
    async fn check_source_place(
        &self,
        source: &PoolSource,
        own_dir: &Path,
    ) -> Result<(), StorageError> {
        let path = match source {
            PoolSource::Dir(p) | PoolSource::BtrfsDir(p) => p.clone(),
            PoolSource::Device(dev) => {
                use std::os::unix::fs::FileTypeExt;
                let meta = std::fs::metadata(dev).map_err(|e| {
                    StorageError::Invalid(format!("source \"{}\": {e}", dev.display()))
                })?;
                if !meta.file_type().is_block_device() {
                    return Err(StorageError::Invalid(format!(
                        "source \"{}\" is not a block device",
                        dev.display()
                    )));
                }
                return Ok(());
            }
            PoolSource::LoopFile { .. } => return Ok(()),
        };
        let canonical = canonical_or_self(&path);
        let state = canonical_or_self(&self.paths.dir);
        if canonical == Path::new("/") {
            return Err(StorageError::Invalid("source must not be /".into()));
        }
        if canonical.starts_with(&state) && canonical != canonical_or_self(own_dir) {
            return Err(StorageError::Invalid(format!(
                "source \"{}\" is inside ctld's state directory",
                path.display()
            )));
        }
        for other in self.pool_infos().await? {
            let r = canonical_or_self(&other.root);
            // A pool on the state directory itself (`default`) holds ctld's own place for
            // pools: only the reverse (the state directory inside the new pool) overlaps.
            let inside_other = r != state && canonical.starts_with(&r);
            if inside_other || r.starts_with(&canonical) {
                return Err(StorageError::Invalid(format!(
                    "source \"{}\" overlaps storage pool \"{}\"",
                    path.display(),
                    other.row.name
                )));
            }
        }
        if let PoolSource::BtrfsDir(p) = source
            && (!p.is_dir() || !btrfs::is_btrfs(p))
        {
            return Err(StorageError::Invalid(format!(
                "source \"{}\" is not a directory on a btrfs filesystem",
                p.display()
            )));
        }
        if let PoolSource::Dir(p) | PoolSource::BtrfsDir(p) = source
            && p.exists()
        {
            let empty = std::fs::read_dir(p)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !p.is_dir() || !empty {
                return Err(StorageError::Invalid(format!(
                    "source \"{}\" must be an empty directory",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// Replace (`patch`: merge) a pool's description and config. Only the description and
    /// a loop file's `size` (grown, never shrunk) may change.
    pub async fn update_pool(
        &self,
        name: &str,
        put: StoragePoolPut,
        patch: bool,
    ) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(name).await?;
        let mut row = info.row.clone();
        if let Some(d) = put.description {
            row.description = d;
        }
        if let Some(cfg) = put.config {
            let mut next = if patch {
                row.config.clone()
            } else {
                cfg.clone()
            };
            if patch {
                // An empty value unsets the key.
                for (k, v) in cfg {
                    if v.is_empty() {
                        next.remove(&k);
                    } else {
                        next.insert(k, v);
                    }
                }
            }
            // A PUT from `edit` carries the keys ctld filled in: they must stay as they are.
            for (k, v) in &next {
                if row.config.get(k) != Some(v) && k != "size" {
                    return Err(StorageError::Invalid(format!(
                        "storage pool key \"{k}\" cannot be changed"
                    )));
                }
            }
            for k in row.config.keys() {
                if !next.contains_key(k) {
                    return Err(StorageError::Invalid(format!(
                        "storage pool key \"{k}\" cannot be removed"
                    )));
                }
            }
            if next.get("size") != row.config.get("size") {
                let file = info.mount_source().filter(|p| p.is_file()).ok_or_else(|| {
                    StorageError::Invalid(
                        "size: only a pool on a loop file ctld made can grow".into(),
                    )
                })?;
                let want = config::parse_size(next.get("size").map_or("", String::as_str))
                    .map_err(StorageError::Invalid)?;
                let root = info.root.clone();
                blocking(move || grow_loop_pool(&file, &root, want)).await?;
                next.insert("size".into(), want.to_string());
            }
            row.config = next;
        }
        db::storage::update_pool(&self.db, &row).await?;
        self.save_record().await;
        Ok(())
    }

    /// Delete an unused pool: 409 while anything uses it. Its filesystem is unmounted and
    /// the loop file ctld made removed; a `dir` pool's `source` directory keeps whatever
    /// is not ctld's.
    pub async fn delete_pool(&self, name: &str) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let info = self.pool_info(name).await?;
        let used = self.used_by(name).await?;
        if !used.is_empty() {
            return Err(StorageError::InUse(format!(
                "storage pool \"{name}\" is in use by {}",
                used.join(", ")
            )));
        }
        // What the database does not know but the pool holds (an instance whose record was
        // lost, a create under way) keeps it too: never removed with the pool.
        for sub in ["containers", "custom"] {
            let held: Vec<String> = std::fs::read_dir(info.root.join(sub))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with(".deleting-"))
                        .collect()
                })
                .unwrap_or_default();
            if !held.is_empty() {
                return Err(StorageError::InUse(format!(
                    "storage pool \"{name}\" still holds {sub}/{} (not recorded: see `ctld \
                     recover`)",
                    held.join(", ")
                )));
            }
        }
        let own_file = self.own_file(name);
        let own_dir = self.own_dir(name);
        let state_dir = self.paths.dir.clone();
        {
            let info = info.clone();
            blocking(move || remove_pool_files(&info, &own_file, &own_dir, &state_dir)).await?;
        }
        db::storage::delete_pool(&self.db, name).await?;
        tracing::info!(pool = %name, "storage pool deleted");
        self.save_record().await;
        Ok(())
    }

    /// Space and inodes of a pool's filesystem.
    pub async fn resources(&self, name: &str) -> Result<StoragePoolResources, StorageError> {
        let info = self.pool_info(name).await?;
        let root = info.root.clone();
        blocking(move || {
            let s = nix::sys::statvfs::statvfs(&root)
                .map_err(|e| io_at(&root)(std::io::Error::from(e)))?;
            let frag = s.fragment_size() as u64;
            let total = s.blocks() as u64 * frag;
            let free = s.blocks_free() as u64 * frag;
            Ok(StoragePoolResources {
                space: ctl_api::storage::StoragePoolSpace {
                    used: total.saturating_sub(free),
                    total,
                },
                inodes: ctl_api::storage::StoragePoolInodes {
                    used: (s.files() as u64).saturating_sub(s.files_free() as u64),
                    total: s.files() as u64,
                },
            })
        })
        .await
    }

    // ----- instances -----

    /// Check what a (to be) instance's root disk asks for: the pool exists and can enforce
    /// `size`. Returns the pool.
    pub async fn check_root(
        &self,
        pool: &str,
        size: Option<u64>,
    ) -> Result<PoolInfo, StorageError> {
        let info = self.pool_info(pool).await.map_err(|e| match e {
            StorageError::PoolNotFound(p) => {
                StorageError::Invalid(format!("root disk: storage pool \"{p}\" not found"))
            }
            e => e,
        })?;
        if Self::status(&info) != "Created" {
            return Err(StorageError::Invalid(format!(
                "storage pool \"{pool}\" is unavailable (its filesystem is not mounted)"
            )));
        }
        if size.is_some() && !info.is_btrfs() {
            let root = info.root.clone();
            let supported = blocking(move || Ok(quota::project_quota_supported(&root))).await?;
            if !supported {
                return Err(StorageError::Invalid(format!(
                    "storage pool \"{pool}\" (dir) cannot enforce a root disk size: its \
                     filesystem has no project quotas (ext4 made with -O quota,project and \
                     mounted with prjquota, or xfs with pquota)"
                )));
            }
        }
        Ok(info)
    }

    /// Where a new instance `name` on `pool` goes.
    pub fn placement(&self, info: &PoolInfo, name: &str) -> Placement {
        let home = info.container_home(name);
        Placement {
            home: (home != self.paths.container(name)).then_some(home),
            subvolume: info.is_btrfs(),
        }
    }

    /// The lower layer an instance on `pool` mounts for image `fingerprint`: the image
    /// store's rootfs on `dir` pools; on btrfs, the pool's read-only copy, made on first use.
    pub async fn image_layer(
        &self,
        pool: &str,
        fingerprint: &str,
    ) -> Result<PathBuf, StorageError> {
        let store = self.paths.image(fingerprint).join("rootfs");
        let info = self.pool_info(pool).await?;
        if !info.is_btrfs() {
            return Ok(store);
        }
        let dir = info.root.join("images").join(fingerprint);
        let layer = dir.join("rootfs");
        if dir.join(".complete").exists() {
            return Ok(layer);
        }
        let _guard = self.lock.lock().await;
        let images = info.root.join("images");
        let fp = fingerprint.to_string();
        blocking(move || {
            if dir.join(".complete").exists() {
                return Ok(());
            }
            std::fs::create_dir_all(&images).map_err(io_at(&images))?;
            let tmp = images.join(format!(".tmp-{fp}"));
            btrfs::remove_tree(&tmp).map_err(io_at(&tmp))?;
            let started = std::time::Instant::now();
            btrfs::create_subvolume(&tmp).map_err(io_at(&tmp))?;
            let made = (|| {
                copy_tree(&store, &tmp.join("rootfs"))?;
                std::fs::write(tmp.join(".complete"), b"").map_err(io_at(&tmp))?;
                btrfs::set_readonly(&tmp, true).map_err(io_at(&tmp))?;
                btrfs::remove_tree(&dir).map_err(io_at(&dir))?;
                std::fs::rename(&tmp, &dir).map_err(io_at(&dir))
            })();
            if made.is_err() {
                let _ = btrfs::set_readonly(&tmp, false);
                let _ = btrfs::remove_tree(&tmp);
            }
            made?;
            tracing::info!(image = %fp, ms = started.elapsed().as_millis() as u64,
                "image unpacked into a btrfs pool");
            Ok(())
        })
        .await?;
        Ok(layer)
    }

    /// Remove the btrfs pools' copies of images that no instance on the pool uses and that
    /// the image store no longer has.
    pub async fn prune_images(&self) -> Result<(), StorageError> {
        let rows = db::instances::list(&self.db).await?;
        let known: std::collections::HashSet<String> = db::images::list(&self.db)
            .await?
            .into_iter()
            .map(|i| i.fingerprint)
            .collect();
        for info in self.pool_infos().await? {
            if !info.is_btrfs() {
                continue;
            }
            let used: std::collections::HashSet<String> = rows
                .iter()
                .filter(|r| instance_pool(&r.config) == info.row.name)
                .map(|r| r.image_fingerprint.clone())
                .collect();
            let images = info.root.join("images");
            let Ok(rd) = std::fs::read_dir(&images) else {
                continue;
            };
            for e in rd.flatten() {
                let fp = e.file_name().to_string_lossy().into_owned();
                // Only copies ctld made (marked complete) are ever removed.
                if fp.starts_with('.')
                    || used.contains(&fp)
                    || known.contains(&fp)
                    || !e.path().join(".complete").is_file()
                {
                    continue;
                }
                let dir = e.path();
                blocking(move || {
                    let _ = btrfs::set_readonly(&dir, false);
                    btrfs::remove_tree(&dir).map_err(io_at(&dir))
                })
                .await?;
                tracing::info!(pool = %info.row.name, image = %fp, "pool copy of an image removed");
            }
        }
        Ok(())
    }

    /// Remove a btrfs pool's copy of image `fingerprint` (the image is being deleted; no
    /// instance uses it).
    pub async fn forget_image(&self, fingerprint: &str) -> Result<(), StorageError> {
        for info in self.pool_infos().await? {
            let dir = info.root.join("images").join(fingerprint);
            if info.is_btrfs() && dir.exists() {
                blocking(move || {
                    let _ = btrfs::set_readonly(&dir, false);
                    btrfs::remove_tree(&dir).map_err(io_at(&dir))
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Apply the root disk quota `size` (`None`: none) to the instance directory `dir` on
    /// `pool`.
    pub async fn apply_root_quota(
        &self,
        pool: &str,
        dir: &Path,
        size: Option<u64>,
    ) -> Result<(), StorageError> {
        let info = self.pool_info(pool).await?;
        let dir = dir.to_path_buf();
        blocking(move || apply_quota(&info, &dir, size)).await
    }

    /// Bytes an instance's own layer uses, from the quota accounting where there is one.
    pub fn root_usage(info: &PoolInfo, dir: &Path) -> Option<u64> {
        let layer = dir.join("layer");
        if info.is_btrfs() && btrfs::is_subvolume(&layer) {
            return btrfs::usage(&layer);
        }
        let (upper, _, _) = crate::paths::overlay_dirs(dir);
        if quota::project_quota_supported(&upper) {
            return quota::project_usage(&upper, project_id(&upper)).ok();
        }
        None
    }
}

/// Rename an instance's directory `from` to `to` (both in `$CTL_DIR/containers`): for a
/// symlink into a pool, the pool's directory is renamed too and the link made anew (the
/// new link first, so a crash leaves at least one name reaching the files).
pub fn rename_container_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let home = match std::fs::read_link(from) {
        Ok(home) if is_pool_home(&home, from) => home,
        _ => return std::fs::rename(from, to),
    };
    let name = to
        .file_name()
        .ok_or_else(|| std::io::Error::other("no name to rename to"))?;
    let new_home = home.with_file_name(name);
    if std::fs::symlink_metadata(to).is_ok() && !to.exists() {
        // A link a crash left dangling.
        std::fs::remove_file(to)?;
    }
    // The new link first, then the directory, then the old link: a crash between two steps
    // leaves a link that reaches the files (the reconcile finishes or undoes the rename).
    std::os::unix::fs::symlink(&new_home, to)?;
    if let Err(e) = std::fs::rename(&home, &new_home) {
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    std::fs::remove_file(from)
}

/// Whether `home` (what `$CTL_DIR/containers/NAME` links to) is the instance's directory in
/// a pool (`<root>/containers/NAME`), not a link an administrator made to elsewhere.
pub fn is_pool_home(home: &Path, link: &Path) -> bool {
    home.is_absolute()
        && home.file_name() == link.file_name()
        && home
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "containers")
}

/// The pool an instance's config says holds it.
pub fn instance_pool(config: &BTreeMap<String, String>) -> &str {
    config
        .get(VOLATILE_POOL)
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_POOL)
}

/// `p` with its nearest existing ancestor canonicalized (the rest, not made yet, appended):
/// a new source under a symlinked parent is seen where it will really be.
fn canonical_or_self(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n));
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// `cp -a` (see [`crate::worker::copy_archive`]) for the storage layer's own copies.
fn copy_tree(from: &Path, to: &Path) -> Result<(), StorageError> {
    crate::worker::copy_archive(from, to).map_err(io_at(to))
}

/// What [`make_pool`] made, for [`undo_pool`].
struct Made {
    file: Option<PathBuf>,
    mount: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

fn make_pool(source: &PoolSource, own_dir: &Path, name: &str) -> Result<Made, StorageError> {
    let mut made = Made {
        file: None,
        mount: None,
        dirs: Vec::new(),
    };
    let result = (|| {
        let root = match source {
            PoolSource::Dir(p) | PoolSource::BtrfsDir(p) => {
                if !p.exists() {
                    std::fs::create_dir_all(p).map_err(io_at(p))?;
                    made.dirs.push(p.clone());
                }
                p.clone()
            }
            PoolSource::LoopFile { file, size } => {
                use std::os::unix::fs::OpenOptionsExt;
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(file)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => StorageError::Exists(format!(
                            "a loop file {} (left by a create that did not finish: \
                             remove it if it holds nothing)",
                            file.display()
                        )),
                        _ => io_at(file)(e),
                    })?;
                made.file = Some(file.clone());
                f.set_len(*size).map_err(io_at(file))?;
                drop(f);
                btrfs::mkfs(file, name).map_err(io_at(file))?;
                mount_at(file, own_dir, &mut made)?;
                own_dir.to_path_buf()
            }
            PoolSource::Device(dev) => {
                if !has_btrfs_signature(dev)? {
                    btrfs::mkfs(dev, name).map_err(io_at(dev))?;
                }
                mount_at(dev, own_dir, &mut made)?;
                own_dir.to_path_buf()
            }
        };
        if !matches!(source, PoolSource::Dir(_)) {
            btrfs::enable_quota(&root).map_err(io_at(&root))?;
        }
        use std::os::unix::fs::PermissionsExt;
        // Root's alone, as the state directory's own: instances' layers and volumes hold
        // files containers' roots made.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_at(&root))?;
        for sub in ["containers", "custom", "custom-snapshots", "images"] {
            let d = root.join(sub);
            if !d.exists() {
                std::fs::create_dir_all(&d).map_err(io_at(&d))?;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_at(&d))?;
                made.dirs.push(d);
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(made),
        Err(e) => {
            undo_pool(&made)?;
            Err(e)
        }
    }
}

fn mount_at(source: &Path, target: &Path, made: &mut Made) -> Result<(), StorageError> {
    if !target.exists() {
        std::fs::create_dir_all(target).map_err(io_at(target))?;
        made.dirs.push(target.to_path_buf());
    }
    btrfs::mount(source, target).map_err(io_at(source))?;
    made.mount = Some(target.to_path_buf());
    Ok(())
}

/// Whether the block device `dev` holds a btrfs. Any other signature on it (a filesystem,
/// a partition table, a RAID or LVM member) is refused, as is a device `wipefs` cannot
/// read: ctld never formats over data.
fn has_btrfs_signature(dev: &Path) -> Result<bool, StorageError> {
    let out = std::process::Command::new("wipefs")
        .args(["--no-act", "--noheadings", "--output", "TYPE"])
        .arg(dev)
        .output()
        .map_err(io_at(dev))?;
    if !out.status.success() {
        return Err(StorageError::Invalid(format!(
            "source \"{}\": cannot read its signatures: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<&str> = text.split_whitespace().collect();
    match kinds.as_slice() {
        [] => Ok(false),
        ["btrfs"] => Ok(true),
        other => Err(StorageError::Invalid(format!(
            "source \"{}\" holds {}: ctld formats only empty devices",
            dev.display(),
            other.join(", ")
        ))),
    }
}

fn undo_pool(made: &Made) -> Result<(), StorageError> {
    if let Some(m) = &made.mount {
        btrfs::unmount(m).map_err(io_at(m))?;
    }
    if let Some(f) = &made.file {
        std::fs::remove_file(f).map_err(io_at(f))?;
    }
    for d in made.dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

fn grow_loop_pool(file: &Path, root: &Path, want: u64) -> Result<(), StorageError> {
    let have = std::fs::metadata(file).map_err(io_at(file))?.len();
    if want < have {
        return Err(StorageError::Invalid(format!(
            "size: a pool can grow, not shrink ({have} bytes now)"
        )));
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(io_at(file))?;
    f.set_len(want).map_err(io_at(file))?;
    // The loop device learns the new size, then btrfs.
    let dev = std::process::Command::new("losetup")
        .args(["-j"])
        .arg(file)
        .output()
        .map_err(io_at(file))?;
    let text = String::from_utf8_lossy(&dev.stdout);
    if let Some(loopdev) = text
        .split(':')
        .next()
        .filter(|d| d.starts_with("/dev/loop"))
    {
        let _ = std::process::Command::new("losetup")
            .args(["-c", loopdev])
            .status();
    }
    let out = std::process::Command::new("btrfs")
        .args(["filesystem", "resize", "max", "--"])
        .arg(root)
        .output()
        .map_err(io_at(root))?;
    if !out.status.success() {
        return Err(StorageError::Internal(format!(
            "btrfs resize: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn remove_pool_files(
    info: &PoolInfo,
    own_file: &Path,
    own_dir: &Path,
    state_dir: &Path,
) -> Result<(), StorageError> {
    let root = &info.root;
    if info.is_btrfs() {
        let images = root.join("images");
        if let Ok(rd) = std::fs::read_dir(&images) {
            for e in rd
                .flatten()
                .filter(|e| e.path().join(".complete").is_file())
            {
                let _ = btrfs::set_readonly(&e.path(), false);
                btrfs::remove_tree(&e.path()).map_err(io_at(&e.path()))?;
            }
        }
        let _ = std::fs::remove_dir(&images);
    }
    for sub in ["containers", "custom", "custom-snapshots"] {
        if root == state_dir {
            break;
        }
        let d = root.join(sub);
        // Only `.deleting-*` leftovers of removals a crash cut off can be in it now.
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                btrfs::remove_tree(&e.path()).map_err(io_at(&e.path()))?;
            }
        }
        let _ = std::fs::remove_dir(&d);
    }
    if info.mount_source().is_some() {
        if btrfs::is_mountpoint(root) {
            // Not detached: a pool something still has open is in use.
            btrfs::unmount_now(root).map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    StorageError::InUse(format!(
                        "storage pool at {} is busy (a process uses it)",
                        root.display()
                    ))
                } else {
                    io_at(root)(e)
                }
            })?;
        }
        if own_file.exists() {
            std::fs::remove_file(own_file).map_err(io_at(own_file))?;
        }
        let _ = std::fs::remove_dir(root);
        return Ok(());
    }
    if root == state_dir {
        return Ok(());
    }
    for sub in ["images", "containers", "custom", "custom-snapshots"] {
        let _ = std::fs::remove_dir(root.join(sub));
    }
    if root == own_dir {
        let _ = std::fs::remove_dir(root);
    }
    Ok(())
}

/// The project id of a directory tree on a `dir` pool: stable for the path, in a range
/// (2^24 up) other tools rarely use.
pub fn project_id(dir: &Path) -> u32 {
    // FNV-1a over the path.
    let mut h: u32 = 0x811c_9dc5;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (1 << 24) | (h & 0x3fff_ffff)
}

/// Set the quota of an instance directory's layer: a qgroup limit on btrfs, a project
/// quota (its `upper` and `work` in one project) on a `dir` pool.
fn apply_quota(info: &PoolInfo, dir: &Path, size: Option<u64>) -> Result<(), StorageError> {
    let layer = dir.join("layer");
    if info.is_btrfs() {
        if btrfs::is_subvolume(&layer) {
            btrfs::limit(&layer, size).map_err(io_at(&layer))?;
        }
        return Ok(());
    }
    let (upper, work, _) = crate::paths::overlay_dirs(dir);
    if !quota::project_quota_supported(&upper) {
        return match size {
            Some(_) => Err(StorageError::Invalid(format!(
                "storage pool \"{}\" (dir) cannot enforce a root disk size: its filesystem \
                 has no project quotas",
                info.row.name
            ))),
            None => Ok(()),
        };
    }
    let id = project_id(&upper);
    if size.is_none() {
        // No walk on the start path: a limit an earlier `size` set is lifted, if any.
        return quota::set_project_limit(&upper, id, None).map_err(io_at(&upper));
    }
    // Both dirs in one project (overlayfs moves files from `work` into `upper`; ext4 refuses
    // a rename into another project's directory). The tree is walked only when its top is
    // not in the project yet (a new layer, a copy, a restore, a rename).
    for d in [&upper, &work] {
        if quota::project_of(d).map_err(io_at(d))? != id {
            quota::set_project(d, id).map_err(io_at(d))?;
        }
    }
    quota::set_project_limit(&upper, id, size).map_err(io_at(&upper))
}
