//! Instance lifecycle: create, start, stop, restart, freeze, update, delete, exec planning,
//! and reconciling with what runs on the host when the daemon starts. This module decides
//! the order of steps and undoes earlier steps when a later one fails; the worker does the
//! steps, the db records them.

pub mod backup;
pub mod backup_index;
mod backups;
pub mod config;
pub mod copy;
pub mod cron;
mod disk_devices;
pub mod disks;
pub mod exec;
pub mod expiry;
pub mod files;
pub mod idmap;
pub mod import;
mod lifecycle;
pub mod name;
pub mod profiles;
mod proxies;
pub mod publish;
mod reconcile;
pub mod sftp;
pub mod snapshot_name;
mod snapshot_tasks;
mod snapshots;
mod state;
mod update;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use ctl_api::{InstancesPost, StatusCode};
use tokio::sync::Mutex;

use crate::db::intents::Kind;
use crate::db::{self, DbError, InstanceRow, Pool};
use crate::images::progress::Progress;
use crate::images::{ImageError, ImageRef, ImageStore};
use crate::network::{self, NetworkError, Networks, ResolvedNic};
use crate::paths::{Paths, overlay_dirs};
use crate::worker::{InitProcess, Worker, WorkerError};

pub use config::ConfigError;
pub use name::NameError;
pub use snapshots::SnapshotPlan;

/// How long a clean stop may take when the request gives no timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for a killed init to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Instance errors; `api::error` maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance \"{0}\" not found")]
    NotFound(String),
    #[error("instance \"{0}\" already exists")]
    AlreadyExists(String),
    /// A container directory of that name holds a container the database does not know.
    #[error(
        "a container directory named \"{0}\" exists with a backup file but no record: \
         run `ctld recover` to bring it back, or move the directory away"
    )]
    Unrecorded(String),
    #[error("profile \"{0}\" not found")]
    ProfileNotFound(String),
    #[error("profile \"{0}\" already exists")]
    ProfileExists(String),
    /// Never allowed (deleting or renaming the `default` profile).
    #[error("{0}")]
    Forbidden(String),
    /// A profile change that instance `instance`, which uses the profile, refused.
    #[error("instance \"{instance}\": {source}")]
    ForInstance {
        instance: String,
        source: Box<InstanceError>,
    },
    #[error("snapshot \"{snapshot}\" of instance \"{instance}\" not found")]
    SnapshotNotFound { instance: String, snapshot: String },
    #[error("snapshot \"{snapshot}\" of instance \"{instance}\" already exists")]
    SnapshotExists { instance: String, snapshot: String },
    #[error("backup \"{backup}\" of instance \"{instance}\" not found")]
    BackupNotFound { instance: String, backup: String },
    #[error("backup \"{backup}\" of instance \"{instance}\" already exists")]
    BackupExists { instance: String, backup: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadState(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A `proxy` device could not start (its port is in use, its address not on the host).
    #[error("device \"{device}\": {source}")]
    Proxy {
        device: String,
        #[source]
        source: network::proxy::ProxyError,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A file API request refused or failed inside the instance.
    #[error(transparent)]
    File(#[from] crate::worker::files::FileError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub use crate::clock::now_rfc3339;

/// What a validated create request will make.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    pub name: String,
    pub image: ImageRef,
    pub request: InstancesPost,
    /// A copy of another instance (`source.type=copy`) instead of a new one from `image`.
    pub copy: Option<copy::CopySource>,
}

/// An instance's expanded devices, checked: its NICs, its `proxy` and its `disk` devices.
#[derive(Debug, Clone, Default)]
struct CheckedDevices {
    nics: Vec<ResolvedNic>,
    proxies: BTreeMap<String, network::proxy::ProxySpec>,
    /// The root disk's pool (which exists) and `size`, when there is a root disk.
    root: Option<(String, Option<u64>)>,
    disks: Vec<disk_devices::ResolvedDisk>,
}

/// What `/1.0/metrics` reports for one running instance.
#[derive(Debug, Clone)]
pub struct InstanceMetrics {
    pub name: String,
    pub usage: crate::worker::CgroupUsage,
    pub stats: crate::worker::CgroupStats,
    /// The memory the instance may use: its limit, or the host's memory.
    pub memory_total: u64,
    pub network: Vec<crate::worker::usage::NetCounters>,
}

/// A command ready to run inside a container.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// On a PTY (one bidirectional stream) rather than pipes.
    pub interactive: bool,
}

/// The instance service. Cheap to clone.
#[derive(Clone)]
pub struct Instances {
    db: Pool,
    worker: Arc<dyn Worker>,
    paths: Arc<Paths>,
    images: ImageStore,
    host: config::Host,
    /// The host id ranges unprivileged containers are mapped into.
    host_ids: idmap::HostIds,
    /// Held while an isolated container's range is chosen and recorded: the choice reads
    /// every other container's, so two starts must not choose at once.
    isolated_ranges: Arc<Mutex<()>>,
    locks: Arc<StdMutex<HashMap<String, Arc<Mutex<()>>>>>,
    creating: Arc<StdMutex<HashSet<String>>>,
    /// Where successful steps are announced as lifecycle events.
    events: crate::events::Events,
    /// Managed networks: NIC validation, leases, the veth plan of a start.
    networks: Networks,
    /// The running `proxy` devices of running instances.
    proxies: proxies::ProxyTable,
    /// Held by every change of a profile or of an instance's record, taken before any
    /// instance's lock: a profile change sees every instance that uses it, and nothing
    /// changes their records meanwhile.
    profiles_lock: Arc<Mutex<()>>,
    /// Storage pools: where each instance's files go, image layers per pool, quotas.
    storage: crate::storage::Storage,
}

impl Instances {
    /// A service over the given parts.
    pub fn new(db: Pool, worker: Arc<dyn Worker>, paths: Arc<Paths>, images: ImageStore) -> Self {
        let host_memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| config::parse_meminfo_total(&m))
            .unwrap_or(0);
        let host = config::Host {
            memory: host_memory,
            cpus: worker.online_cpus(),
        };
        Instances {
            networks: Networks::new(db.clone(), worker.clone()),
            storage: crate::storage::Storage::new(db.clone(), paths.clone()),
            db,
            worker,
            paths,
            images,
            host,
            host_ids: idmap::HostIds::of_host(),
            isolated_ranges: Arc::default(),
            locks: Arc::default(),
            creating: Arc::default(),
            events: crate::events::Events::default(),
            proxies: proxies::ProxyTable::default(),
            profiles_lock: Arc::default(),
        }
    }

    /// Announce lifecycle events (`instance-created`, `instance-started`...) on `events`.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        self.events = events;
        self
    }

    /// The networks service.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// The storage service.
    pub fn storage(&self) -> &crate::storage::Storage {
        &self.storage
    }

    /// Whether an instance's pool is btrfs (its layers are subvolumes).
    pub(super) async fn on_btrfs(&self, row: &InstanceRow) -> Result<bool, InstanceError> {
        Ok(self
            .storage
            .pool_info(crate::storage::instance_pool(&row.config))
            .await?
            .is_btrfs())
    }

    /// The worker (for server info).
    pub fn worker(&self) -> &Arc<dyn Worker> {
        &self.worker
    }

    fn lock_for(&self, name: &str) -> Arc<Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }

    async fn row(&self, name: &str) -> Result<InstanceRow, InstanceError> {
        db::instances::get(&self.db, name)
            .await?
            .ok_or_else(|| InstanceError::NotFound(name.to_string()))
    }

    /// The record of `name` with its config expanded by its profiles.
    async fn expanded_row(&self, name: &str) -> Result<InstanceRow, InstanceError> {
        let row = self.row(name).await?;
        let all = db::profiles::list(&self.db).await?;
        Ok(profiles::expanded(&row, &all))
    }

    fn init_of(row: &InstanceRow) -> Option<InitProcess> {
        (row.init_pid > 0).then_some(InitProcess {
            pid: row.init_pid,
            starttime: row.init_starttime,
            monitor_pid: row.monitor_pid,
        })
    }

    fn running_init(&self, row: &InstanceRow) -> Option<InitProcess> {
        Self::init_of(row).filter(|i| self.worker.is_alive(i))
    }

    /// The running init, or `BadState` naming the instance.
    fn ensure_running(&self, row: &InstanceRow) -> Result<InitProcess, InstanceError> {
        self.running_init(row).ok_or_else(|| {
            InstanceError::BadState(format!("instance \"{}\" is not running", row.name))
        })
    }

    /// `Ok` when stopped, else `BadState` with `why` ("is already running", ...).
    fn ensure_stopped(&self, row: &InstanceRow, why: &str) -> Result<(), InstanceError> {
        match self.running_init(row) {
            Some(_) => Err(InstanceError::BadState(format!(
                "instance \"{}\" {why}",
                row.name
            ))),
            None => Ok(()),
        }
    }

    fn status(&self, row: &InstanceRow) -> StatusCode {
        match self.running_init(row) {
            Some(_) if self.worker.is_frozen(&row.name) => StatusCode::Frozen,
            Some(_) => StatusCode::Running,
            None => StatusCode::Stopped,
        }
    }

    // ----- create -----

    /// Validate a create request and reserve the name. Nothing is created yet; errors here
    /// are the client's (bad name, duplicate, unknown image or key).
    pub async fn plan_create(&self, mut req: InstancesPost) -> Result<CreatePlan, InstanceError> {
        if !req.kind.is_empty() && req.kind != "container" {
            return Err(InstanceError::Invalid(format!(
                "instance type \"{}\" is not supported (only \"container\")",
                req.kind
            )));
        }
        match req.source.kind.as_str() {
            "" | "image" => {}
            "copy" => return self.plan_copy(req).await,
            other => {
                return Err(InstanceError::Invalid(format!(
                    "source type \"{other}\" is not supported (\"image\" or \"copy\")"
                )));
            }
        }
        if req.source.alias.is_empty() && req.source.fingerprint.is_empty() {
            return Err(InstanceError::Invalid(
                "an image is required (source.alias or source.fingerprint)".into(),
            ));
        }
        if !req.source.mode.is_empty() && req.source.mode != "pull" {
            return Err(InstanceError::Invalid(format!(
                "source mode \"{}\" is not supported (only \"pull\")",
                req.source.mode
            )));
        }
        config::validate(&req.config, &BTreeMap::new(), &self.host)?;
        let profiles = req
            .profiles
            .clone()
            .unwrap_or_else(|| vec![profiles::DEFAULT.to_string()]);
        let all = db::profiles::list(&self.db).await?;
        profiles::check_list(&all, &profiles)?;
        // What a start will use: the profiles' keys with the instance's own.
        let expanded = profiles::expand_config(&all, &profiles, &req.config);
        config::validate(&expanded, &BTreeMap::new(), &self.host)?;
        let image = self.images.resolve(&req.source).await?;
        if req.name.is_empty() {
            req.name = self.free_random_name().await?;
        }
        name::validate(&req.name)?;
        self.check_devices(&req.name, &profiles, &req.devices)
            .await?;
        self.reserve(&req.name).await?;
        Ok(CreatePlan {
            name: req.name.clone(),
            image,
            request: req,
            copy: None,
        })
    }

    async fn free_random_name(&self) -> Result<String, InstanceError> {
        for _ in 0..50 {
            let n = name::random();
            if db::instances::get(&self.db, &n).await?.is_none()
                && !backup::holds_container(&self.paths.container(&n))
            {
                return Ok(n);
            }
        }
        Err(InstanceError::Internal("no free random name".into()))
    }

    /// Reserve `name` for a create: first in the in-flight set, then against the rows, so
    /// two creates of one name can never both pass (the set holds the name until the row
    /// exists).
    async fn reserve(&self, name: &str) -> Result<(), InstanceError> {
        {
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if !creating.insert(name.to_string()) {
                return Err(InstanceError::AlreadyExists(name.to_string()));
            }
        }
        match db::instances::get(&self.db, name).await {
            // A real container whose record was lost: never replaced, only recovered.
            Ok(None) if backup::holds_container(&self.paths.container(name)) => {
                self.release(name);
                Err(InstanceError::Unrecorded(name.to_string()))
            }
            Ok(None) => Ok(()),
            Ok(Some(_)) => {
                self.release(name);
                Err(InstanceError::AlreadyExists(name.to_string()))
            }
            Err(e) => {
                self.release(name);
                Err(e.into())
            }
        }
    }

    fn release(&self, name: &str) {
        let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        creating.remove(name);
    }

    /// Create the planned instance (building its image if needed), then start it if asked.
    /// A failure before the row exists removes what was made; the name is released.
    pub async fn create(&self, plan: CreatePlan, progress: &Progress) -> Result<(), InstanceError> {
        let name = plan.name.clone();
        let result = match &plan.copy {
            Some(src) => self.create_copy(&plan, src).await,
            None => self.create_inner(&plan, progress).await,
        };
        self.release(&name);
        result?;
        self.events
            .instance("instance-created", &name, BTreeMap::new());
        if plan.request.start {
            self.start(&name).await?;
        }
        Ok(())
    }

    async fn create_inner(
        &self,
        plan: &CreatePlan,
        progress: &Progress,
    ) -> Result<(), InstanceError> {
        let fingerprint = self.images.ensure(&plan.image, progress).await?;
        let props = self.images.properties(&fingerprint).await?;
        let mut cfg = plan.request.config.clone();
        for (k, v) in &props {
            cfg.insert(format!("image.{k}"), v.clone());
        }
        cfg.insert("volatile.base_image".into(), fingerprint.clone());
        let profiles = plan
            .request
            .profiles
            .clone()
            .unwrap_or_else(|| vec![profiles::DEFAULT.to_string()]);
        // Until the record exists, no profile it names can go or change.
        let _profiles = self.profiles_lock.lock().await;
        let checked = self
            .check_devices(&plan.name, &profiles, &plan.request.devices)
            .await?;
        let nics = checked.nics;
        assign_volatile_nics(&mut cfg, &nics);
        // The pool the root disk names (the `default` pool when there is no root disk),
        // which must be able to enforce its `size`.
        let (pool, size) = checked
            .root
            .unwrap_or_else(|| (crate::storage::DEFAULT_POOL.to_string(), None));
        let pool_info = self.storage.check_root(&pool, size).await?;
        let place = self.storage.placement(&pool_info, &plan.name);
        cfg.insert(crate::storage::VOLATILE_POOL.into(), pool.clone());
        let dir = self.paths.container(&plan.name);
        if backup::holds_container(&dir) {
            // A real container whose record was lost: never replaced, only recovered.
            return Err(InstanceError::Unrecorded(plan.name.clone()));
        }
        if dir.exists() {
            // Left over from a crash before the row and the backup file were written: no
            // create ever finished there.
            self.blocking_worker(move |w| w.remove_container_dir(&dir))
                .await?;
        }
        let dir = self.paths.container(&plan.name);
        // Until the backup file is written, the directory is this create's alone: a crash
        // before then leaves the intent, and the next start removes the directory.
        db::intents::begin(&self.db, Kind::InstanceCreate, &plan.name).await?;
        {
            let dir = dir.clone();
            self.blocking_worker(move |w| w.prepare_container_dir(&dir, &place, None))
                .await?;
        }
        if let Err(e) = self.storage.apply_root_quota(&pool, &dir, size).await {
            let dir = dir.clone();
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&dir))
                .await;
            let _ = db::intents::finish(&self.db, Kind::InstanceCreate, &plan.name).await;
            return Err(e.into());
        }
        // The image's `create` templates (`/etc/hostname`...) go into the upper layer.
        let templated = {
            let image_dir = self.paths.image(&fingerprint);
            let (upper, _, _) = overlay_dirs(&dir);
            let name = plan.name.clone();
            tokio::task::spawn_blocking(move || {
                crate::images::templates::apply(&image_dir, &upper, &name, "create", &props)
            })
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))
        };
        match templated {
            Ok(Ok(written)) if !written.is_empty() => {
                tracing::debug!(instance = %plan.name, files = ?written, "templates applied");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let _ = self
                    .blocking_worker(move |w| w.remove_container_dir(&dir))
                    .await;
                return Err(e.into());
            }
            Err(e) => {
                let _ = self
                    .blocking_worker(move |w| w.remove_container_dir(&dir))
                    .await;
                return Err(e);
            }
        }
        let t = now_rfc3339();
        let inserted = db::instances::insert(
            &self.db,
            &db::NewInstance {
                name: &plan.name,
                description: &plan.request.description,
                architecture: crate::images::host_architecture(),
                ephemeral: plan.request.ephemeral,
                image_fingerprint: &fingerprint,
                config: &cfg,
                devices: &plan.request.devices,
                profiles: &profiles,
                created_at: &t,
            },
        )
        .await;
        if let Err(e) = inserted {
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&dir))
                .await;
            return Err(match e {
                DbError::Conflict(_) => InstanceError::AlreadyExists(plan.name.clone()),
                e => e.into(),
            });
        }
        // Addresses are reserved now, so a taken static address fails the create.
        if let Err(e) = self.networks.sync_leases(&plan.name, &nics, &cfg).await {
            let _ = db::instances::delete(&self.db, &plan.name).await;
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&dir))
                .await;
            return Err(e.into());
        }
        if let Err(e) = self.save_backup(&plan.name).await {
            let _ = db::instances::delete(&self.db, &plan.name).await;
            let _ = self
                .blocking_worker(move |w| w.remove_container_dir(&dir))
                .await;
            return Err(e);
        }
        db::intents::finish(&self.db, Kind::InstanceCreate, &plan.name).await?;
        let _ = self.images.touch(&fingerprint).await;
        tracing::info!(instance = %plan.name, image = %fingerprint, "created");
        Ok(())
    }

    /// Write the instance's `backup.yaml` from its record (see [`backup`]).
    async fn save_backup(&self, name: &str) -> Result<(), InstanceError> {
        self.save_backup_marked(name, false, true).await
    }

    /// [`Instances::save_backup`], marked as being deleted or not.
    async fn save_backup_marked(
        &self,
        name: &str,
        deleting: bool,
        sync: bool,
    ) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        let image = db::images::find_prefix(&self.db, &row.image_fingerprint)
            .await?
            .into_iter()
            .find(|i| i.fingerprint == row.image_fingerprint);
        let mut b = backup::Backup::of(&row, image.as_ref());
        b.deleting = deleting;
        let dir = self.paths.container(name);
        tokio::task::spawn_blocking(move || backup::write_with(&dir, &b, sync))
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))?
            .map_err(|e| {
                InstanceError::Internal(format!("backup file of instance \"{name}\": {e}"))
            })
    }

    /// [`Instances::save_backup`] after a change already recorded: a failure leaves the
    /// file one change behind, which is logged.
    async fn save_backup_or_warn(&self, name: &str) {
        if let Err(e) = self.save_backup(name).await {
            tracing::warn!(instance = %name, error = %e, "backup file not updated");
        }
    }

    /// Freeze `name` for a consistent copy of its files, if it runs and is not frozen
    /// already; returns whether it was frozen here. Journaled: a crash before
    /// [`Instances::thaw_after_copy`] leaves an intent the start-up reconcile thaws it by
    /// (a freeze of the user's own is never undone).
    async fn freeze_for_copy(&self, row: &InstanceRow) -> Result<bool, InstanceError> {
        if self.running_init(row).is_none() || self.worker.is_frozen(&row.name) {
            return Ok(false);
        }
        db::intents::begin(&self.db, Kind::CopyFreeze, &row.name).await?;
        let n = row.name.clone();
        if let Err(e) = self.blocking_worker(move |w| w.set_frozen(&n, true)).await {
            let n = row.name.clone();
            let _ = self.blocking_worker(move |w| w.set_frozen(&n, false)).await;
            let _ = db::intents::finish(&self.db, Kind::CopyFreeze, &row.name).await;
            return Err(e);
        }
        Ok(true)
    }

    /// Thaw what [`Instances::freeze_for_copy`] froze (`frozen`), and end its intent.
    async fn thaw_after_copy(&self, name: &str, frozen: bool) {
        if !frozen {
            return;
        }
        let n = name.to_string();
        match self.blocking_worker(move |w| w.set_frozen(&n, false)).await {
            Ok(()) => {
                if let Err(e) = db::intents::finish(&self.db, Kind::CopyFreeze, name).await {
                    tracing::warn!(instance = %name, error = %e, "copy-freeze intent left");
                }
            }
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "could not thaw after a copy");
            }
        }
    }

    async fn blocking_worker<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Worker) -> Result<T, WorkerError> + Send + 'static,
    ) -> Result<T, InstanceError> {
        let w = self.worker.clone();
        tokio::task::spawn_blocking(move || f(w.as_ref()))
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))?
            .map_err(InstanceError::from)
    }
}

/// Give every NIC without a `hwaddr` key a stable MAC in `volatile.<dev>.hwaddr` (made
/// once, kept across restarts).
fn assign_volatile_nics(cfg: &mut BTreeMap<String, String>, nics: &[ResolvedNic]) {
    for r in nics {
        if r.nic.hwaddr.is_none() {
            cfg.entry(network::hwaddr_key(&r.nic.device))
                .or_insert_with(|| crate::worker::net::format_mac(&network::random_mac()));
        }
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `rel` exists (as any file type) in the overlay view of `upper` over `lower`:
/// an overlay whiteout (a 0/0 character device) in `upper` hides the lower file.
fn has_path(upper: &Path, lower: &Path, rel: &str) -> bool {
    match upper.join(rel).symlink_metadata() {
        Ok(md) => !is_whiteout(&md),
        Err(_) => lower.join(rel).symlink_metadata().is_ok(),
    }
}

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Where `/sbin/init` points in the overlay view (following one level of symlink), or
/// `None` if the image has no init.
/// The signals that shut down an init running `exe` (its path inside the container) with
/// command name `comm`, as LXC and Incus send them: systemd halts on SIGRTMIN+3, busybox
/// init on SIGUSR2, ctl's built-in init on SIGTERM, sysvinit on SIGPWR; an init not known
/// gets SIGPWR, then SIGTERM.
pub fn halt_signals(exe: &str, comm: &str) -> (i32, Option<i32>) {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    // A deleted binary (upgraded while it runs) reads as "… (deleted)".
    let base = base.strip_suffix(" (deleted)").unwrap_or(base);
    if base == "systemd" || comm == "systemd" {
        (libc::SIGRTMIN() + 3, None)
    } else if base == "busybox" {
        (libc::SIGUSR2, None)
    } else if comm == crate::worker::spawn::MINIMAL_INIT_NAME {
        (libc::SIGTERM, None)
    } else if base == "init" && comm == "init" {
        (libc::SIGPWR, None)
    } else {
        (libc::SIGPWR, Some(libc::SIGTERM))
    }
}

#[cfg(test)]
mod halt_tests {
    use super::halt_signals;

    #[test]
    fn the_stop_signal_follows_the_running_init() {
        let rtmin3 = libc::SIGRTMIN() + 3;
        assert_eq!(
            halt_signals("/usr/lib/systemd/systemd", "systemd"),
            (rtmin3, None)
        );
        assert_eq!(
            halt_signals("/lib/systemd/systemd (deleted)", "systemd"),
            (rtmin3, None)
        );
        assert_eq!(halt_signals("/bin/busybox", "init"), (libc::SIGUSR2, None));
        assert_eq!(
            halt_signals("/proc/self/exe", "ctl-init"),
            (libc::SIGTERM, None)
        );
        assert_eq!(halt_signals("/sbin/init", "init"), (libc::SIGPWR, None));
        assert_eq!(
            halt_signals("/sbin/openrc-init", "openrc-init"),
            (libc::SIGPWR, Some(libc::SIGTERM))
        );
        assert_eq!(halt_signals("", ""), (libc::SIGPWR, Some(libc::SIGTERM)));
    }
}
