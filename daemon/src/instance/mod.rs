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
pub mod expiry;
pub mod files;
pub mod idmap;
pub mod import;
pub mod name;
pub mod profiles;
mod proxies;
pub mod publish;
pub mod sftp;
pub mod snapshot_name;
mod snapshot_tasks;
mod snapshots;
mod update;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use ctl_api::{
    Instance, InstanceExecPost, InstanceState, InstanceStateCpu, InstanceStateMemory,
    InstancesPost, StatusCode,
};
use tokio::sync::Mutex;

use crate::db::intents::Kind;
use crate::db::{self, DbError, InstanceRow, Pool};
use crate::images::progress::Progress;
use crate::images::{ImageError, ImageRef, ImageStore};
use crate::network::{self, NetworkError, Networks, ResolvedNic};
use crate::paths::{Paths, overlay_dirs};
use crate::worker::spec::{default_mounts, default_namespaces};
use crate::worker::{ExecSpec, InitProcess, Interface, SpawnSpec, Worker, WorkerError};

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
    Db(#[from] DbError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A file API request refused or failed inside the instance.
    #[error(transparent)]
    File(#[from] crate::worker::files::FileError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The current time as Incus writes it (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What a validated create request will make.
#[derive(Debug, Clone)]
pub struct CreatePlan {
    pub name: String,
    pub image: ImageRef,
    pub request: InstancesPost,
    /// A copy of another instance (`source.type=copy`) instead of a new one from `image`.
    pub copy: Option<copy::CopySource>,
}

/// An instance's expanded devices, checked: its NICs and its `proxy` devices.
#[derive(Debug, Clone, Default)]
struct CheckedDevices {
    nics: Vec<ResolvedNic>,
    proxies: BTreeMap<String, network::proxy::ProxySpec>,
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
        let nics = self
            .check_devices(&plan.name, &profiles, &plan.request.devices)
            .await?
            .nics;
        assign_volatile_nics(&mut cfg, &nics);
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
            self.blocking_worker(move |w| w.prepare_container_dir(&dir))
                .await?;
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

    /// Take over a running container the database does not record as running: only if its
    /// start got as far as its NICs (every host-side veth exists); then it is recorded.
    async fn adopt(
        &self,
        row: &InstanceRow,
        profiles: &[db::profiles::ProfileRow],
        init: &InitProcess,
    ) -> Result<(), InstanceError> {
        let expanded = network::expand(profiles, &row.profiles, &row.devices);
        for (device, d) in &expanded {
            if d.get("type").map(String::as_str) != Some("nic") {
                continue;
            }
            let Some(host) = row.config.get(&network::host_name_key(device)) else {
                return Err(InstanceError::Internal(format!(
                    "NIC {device} has no host-side name recorded"
                )));
            };
            if self.worker.interfaces(None, Some(host)).is_empty() {
                return Err(InstanceError::Internal(format!(
                    "NIC {device} ({host}) was never made"
                )));
            }
        }
        db::instances::set_running(
            &self.db,
            &row.name,
            init.pid,
            init.starttime,
            init.monitor_pid,
            None,
            None,
        )
        .await?;
        tracing::warn!(instance = %row.name, pid = init.pid,
            "adopted a running container the database did not record");
        Ok(())
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

    // ----- start -----

    /// Check that `name` exists and is stopped (before an operation is created).
    pub async fn check_can_start(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        self.ensure_stopped(&row, "is already running")?;
        Ok(())
    }

    /// Start a stopped instance.
    pub async fn start(&self, name: &str) -> Result<(), InstanceError> {
        self.start_quiet(name).await?;
        self.events
            .instance("instance-started", name, BTreeMap::new());
        Ok(())
    }

    /// Start without the `instance-started` event (a restart announces itself).
    async fn start_quiet(&self, name: &str) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.start_locked(name).await
    }

    /// Start with the instance's lock held by the caller.
    async fn start_locked(&self, name: &str) -> Result<(), InstanceError> {
        let own = self.row(name).await?;
        self.ensure_stopped(&own, "is already running")?;
        // Everything below reads the expanded config; only `volatile.*` keys are written
        // back into the instance's own.
        let all = db::profiles::list(&self.db).await?;
        let row = profiles::expanded(&own, &all);
        let limits = config::limits(&row.config, &self.host, name)?;
        let spec = self.spawn_spec(&row)?;
        // Networking first: a bad NIC refuses the start before anything exists.
        let CheckedDevices { nics, proxies } = self
            .check_devices_with(&all, name, &row.profiles, &row.devices)
            .await?;
        // Proxies left by a run that ended on its own (before its watcher noticed).
        self.stop_proxies(name).await;
        let mut cfg = row.config.clone();
        assign_volatile_nics(&mut cfg, &nics);
        for r in &nics {
            let key = network::host_name_key(&r.nic.device);
            let host = r
                .nic
                .host_name
                .clone()
                .unwrap_or_else(network::random_host_name);
            cfg.insert(key, host);
        }
        let choosing_range =
            idmap::from_config(&cfg).is_ok_and(|c| c.isolated && !c.privileged && c.base.is_none());
        let range_guard = match choosing_range {
            true => Some(self.isolated_ranges.lock().await),
            false => None,
        };
        let id_map = self.plan_idmap(name, &mut cfg).await?;
        let on_disk = idmap::from_json(row.config.get(idmap::VOLATILE_ON_DISK));
        if on_disk != id_map {
            // The container's own files follow its map; the image layer is id-mapped at
            // mount time instead. Idempotent: ids the old map does not know are kept, so a
            // crash before the new map is recorded only repeats this walk.
            let upper = spec.upper.clone();
            let to = id_map.clone();
            self.blocking_worker(move |w| w.shift_ids(&upper, on_disk.as_ref(), to.as_ref()))
                .await?;
            cfg.insert(
                idmap::VOLATILE_ON_DISK.into(),
                idmap::to_json(id_map.as_ref()),
            );
        }
        let stored = profiles::with_volatile_of(&own.config, &cfg);
        if stored != own.config {
            db::instances::set_config(&self.db, name, &stored).await?;
            // Volatile keys only (NIC names, id-map state): not worth two syncs per start.
            if let Err(e) = self.save_backup_marked(name, false, false).await {
                tracing::warn!(instance = %name, error = %e, "backup file not updated");
            }
        }
        drop(range_guard);
        let mut spec = spec;
        if id_map.is_some() {
            spec.namespaces.push(crate::worker::spec::Namespace::User);
            // Its cgroup hierarchies may be writable: the kernel keeps every file the
            // container does not own (the limits, release agents) out of its root's reach,
            // and what it owns (its delegated cgroup) is what systemd inside needs.
            crate::worker::spec::writable_cgroups(&mut spec.mounts);
        }
        spec.syscalls.privileged = id_map.is_none();
        let (layer, map) = (spec.lower.clone(), id_map.clone());
        let lower = self
            .blocking_worker(move |w| w.lower_layer(&layer, map.as_ref()))
            .await?;
        spec.lower = lower.path;
        spec.idmap_lower = lower.idmap;
        spec.id_map = id_map;
        self.networks.sync_leases(name, &nics, &cfg).await?;
        let net_plan = self.networks.plan_start(name, &nics, &cfg).await?;
        // A container that stopped on its own: its monitor may still be removing the
        // cgroup; let it finish before a new one is made.
        if row.monitor_pid > 0 {
            let monitor = row.monitor_pid;
            self.blocking_worker(move |w| Ok(w.wait_pid_gone(monitor, Duration::from_secs(2))))
                .await?;
        }
        let cg_name = name.to_string();
        // An unprivileged container's root owns its inner cgroup (so systemd inside can make
        // sub-cgroups); the limits above it stay root's.
        let delegate_to = spec
            .id_map
            .as_ref()
            .and_then(|m| Some((m.host_uid(0)?, m.host_gid(0)?)));
        let procs = self
            .blocking_worker(move |w| {
                // A cgroup left by a crash would carry stale settings: start clean.
                w.remove_cgroup(&cg_name)?;
                let procs = w.create_cgroup(&cg_name, &limits)?;
                if let Some((uid, gid)) = delegate_to
                    && let Err(e) = w.delegate_cgroup(&cg_name, uid, gid)
                {
                    let _ = w.remove_cgroup(&cg_name);
                    return Err(e);
                }
                Ok(procs)
            })
            .await?;
        spec.cgroup_procs = procs;
        let spawned = self.blocking_worker(move |w| w.spawn_init(&spec)).await;
        let init = match spawned {
            Ok(i) => i,
            Err(e) => {
                let n = name.to_string();
                let _ = self.blocking_worker(move |w| w.remove_cgroup(&n)).await;
                return Err(e);
            }
        };
        if !net_plan.nics.is_empty() {
            let (nics, resolver) = (net_plan.nics, net_plan.resolver);
            let wired = self
                .blocking_worker(move |w| {
                    w.setup_nics(&init, &nics)?;
                    match resolver {
                        Some(r) => w.write_resolver(&init, &r),
                        None => Ok(()),
                    }
                })
                .await;
            if let Err(e) = wired {
                // The veths live in the init's netns: killing it removes them.
                tracing::warn!(instance = %name, error = %e, "network setup failed, stopping");
                self.abort_start(name, &init).await;
                return Err(e);
            }
        }
        // Port forwards last: they reach into the netns the NICs were just set up in.
        if let Err(e) = self.start_proxies(name, &init, &proxies).await {
            tracing::warn!(instance = %name, error = %e, "proxy devices failed, stopping");
            self.abort_start(name, &init).await;
            return Err(e);
        }
        let t = now_rfc3339();
        if let Err(e) = db::instances::set_running(
            &self.db,
            name,
            init.pid,
            init.starttime,
            init.monitor_pid,
            Some(&t),
            // Meant to run from now on (see `config::Boot::starts`).
            Some("RUNNING"),
        )
        .await
        {
            self.stop_proxies(name).await;
            self.abort_start(name, &init).await;
            return Err(e.into());
        }
        tracing::info!(instance = %name, pid = init.pid, "started");
        if row.ephemeral {
            self.watch_ephemeral(name, init);
        }
        Ok(())
    }

    /// The id map instance `name` starts with (`None`: privileged), choosing (and keeping in
    /// `cfg`) an isolated container's range and recording the map as
    /// `volatile.idmap.current`.
    async fn plan_idmap(
        &self,
        name: &str,
        cfg: &mut BTreeMap<String, String>,
    ) -> Result<Option<crate::worker::spec::IdMap>, InstanceError> {
        let c = idmap::from_config(cfg)?;
        if c.privileged {
            cfg.insert(idmap::VOLATILE_CURRENT.into(), idmap::to_json(None));
            return Ok(None);
        }
        let taken: Vec<(u32, u32)> = if c.isolated && c.base.is_none() {
            let all = db::profiles::list(&self.db).await?;
            db::instances::list(&self.db)
                .await?
                .iter()
                .filter(|r| r.name != name)
                .map(|r| profiles::expanded(r, &all))
                .filter_map(|r| {
                    let other = idmap::from_config(&r.config).ok()?;
                    let base = r.config.get(idmap::VOLATILE_BASE)?.parse().ok()?;
                    (other.isolated && !other.privileged).then_some((base, other.size))
                })
                .collect()
        } else {
            Vec::new()
        };
        let kept = cfg
            .get(idmap::VOLATILE_BASE)
            .and_then(|v| v.parse::<u32>().ok());
        let ids = self.host_ids;
        let uid_base = idmap::choose_base(&c, ids.uids, kept, &taken).ok_or_else(|| {
            InstanceError::Invalid(format!(
                "no free range of {} host ids left for an isolated container (host range {}+{})",
                c.size, ids.uids.start, ids.uids.count
            ))
        })?;
        // The gid range sits at the same offset in the host's gid range.
        let gid_base = if c.base.is_some() {
            uid_base
        } else {
            ids.gids.start + (uid_base - ids.uids.start)
        };
        if c.isolated {
            cfg.insert(idmap::VOLATILE_BASE.into(), uid_base.to_string());
        }
        let map = idmap::build(&c, uid_base, gid_base);
        cfg.insert(idmap::VOLATILE_CURRENT.into(), idmap::to_json(Some(&map)));
        Ok(Some(map))
    }

    /// Undo a start after the init runs: kill it (its netns, and the veths in it, go with
    /// it) and remove the cgroup.
    async fn abort_start(&self, name: &str, init: &InitProcess) {
        let _ = self.worker.signal(init, libc::SIGKILL);
        self.wait_exit(init, KILL_WAIT).await;
        let monitor = init.monitor_pid;
        let _ = self
            .blocking_worker(move |w| Ok(w.wait_pid_gone(monitor, Duration::from_secs(2))))
            .await;
        let n = name.to_string();
        let _ = self.blocking_worker(move |w| w.remove_cgroup(&n)).await;
    }

    /// Check an instance's profiles and devices: profiles exist, devices are known types
    /// with valid keys, NICs point at existing networks or bridges, static addresses fit,
    /// proxy devices parse. Returns the NICs and proxies of the expanded devices.
    async fn check_devices(
        &self,
        name: &str,
        profiles: &[String],
        devices: &ctl_api::instance::DeviceMap,
    ) -> Result<CheckedDevices, InstanceError> {
        let all = db::profiles::list(&self.db).await?;
        self.check_devices_with(&all, name, profiles, devices).await
    }

    /// [`Instances::check_devices`] against the profiles `all` (a change not recorded yet).
    async fn check_devices_with(
        &self,
        all: &[db::ProfileRow],
        name: &str,
        profiles: &[String],
        devices: &ctl_api::instance::DeviceMap,
    ) -> Result<CheckedDevices, InstanceError> {
        profiles::check_list(all, profiles)?;
        network::config::devices(devices).map_err(NetworkError::from)?;
        let expanded = network::expand(all, profiles, devices);
        // A profile's devices were checked when it was saved; a proxy of one is checked
        // again here, as what a start would use.
        let proxies = network::config::proxy_devices(&expanded).map_err(NetworkError::from)?;
        let nics = self.networks.resolve_nics(name, &expanded).await?;
        Ok(CheckedDevices { nics, proxies })
    }

    fn spawn_spec(&self, row: &InstanceRow) -> Result<SpawnSpec, InstanceError> {
        let dir = self.paths.container(&row.name);
        let (upper, work, rootfs) = overlay_dirs(&dir);
        let lower = self.images.rootfs(&row.image_fingerprint);
        let init = match config::init_command(&row.config)? {
            Some(argv) => argv,
            None if has_path(&upper, &lower, "sbin/init") => vec!["/sbin/init".to_string()],
            None => Vec::new(),
        };
        Ok(SpawnSpec {
            name: row.name.clone(),
            lower,
            upper,
            work,
            rootfs,
            namespaces: default_namespaces(),
            id_map: None,
            idmap_lower: false,
            mounts: {
                let mut m = default_mounts(&self.paths.host_dev);
                if config::boolean("security.nesting", &row.config)?.unwrap_or(false) {
                    m = crate::worker::spec::for_nesting(m);
                }
                m.extend(self.worker.cgroup_mounts());
                m
            },
            caps_drop: config::capabilities_drop(&row.config)?,
            // Completed by the start once it knows whether the container is privileged.
            syscalls: config::syscall_policy(&row.config, false)?,
            init,
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("container".into(), "ctl".into()),
                ("TERM".into(), "linux".into()),
                ("HOME".into(), "/root".into()),
            ],
            cgroup_procs: Vec::new(),
            log: dir.join("console.log"),
            console: {
                // A Unix socket path has room for 107 bytes.
                let sock = self.paths.console_socket(&row.name);
                (sock.as_os_str().len() < 108).then_some(sock)
            },
            state_file: Some(self.paths.init_state(&row.name)),
            monitor_log: Some(self.log_path(&row.name, "monitor.log")),
        })
    }

    // ----- stop -----

    /// Check that `name` exists and runs (before an operation is created).
    pub async fn check_running(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        self.ensure_running(&row)?;
        Ok(())
    }

    /// Stop a running instance: the image's stop signal, then SIGKILL after `timeout`
    /// (`force` kills at once). Removes the cgroup; no process is left.
    pub async fn stop(
        &self,
        name: &str,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        // A user's stop: the next daemon start leaves it stopped (unless boot.autostart).
        self.stop_locked(name, timeout, force, Some("STOPPED"))
            .await?;
        self.events
            .instance("instance-stopped", name, BTreeMap::new());
        if self.row(name).await?.ephemeral {
            self.delete_locked(name).await?;
        }
        Ok(())
    }

    /// An ephemeral instance is deleted when it stops, also on its own (`poweroff`
    /// inside): this waits for `init` to exit, then deletes the instance unless it runs
    /// again (a restart) or is gone already (a stop through the API deleted it).
    fn watch_ephemeral(&self, name: &str, init: InitProcess) {
        let (me, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                let started = std::time::Instant::now();
                let gone = me
                    .blocking_worker(move |w| Ok(w.wait_exit(&init, Duration::from_secs(3600))))
                    .await
                    .unwrap_or(false);
                if gone {
                    break;
                }
                if started.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let lock = me.lock_for(&name);
            let _g = lock.lock().await;
            let Ok(row) = me.row(&name).await else {
                return;
            };
            if !row.ephemeral || me.running_init(&row).is_some() {
                return;
            }
            tracing::info!(instance = %name, "ephemeral instance stopped: deleting it");
            me.events
                .instance("instance-stopped", &name, BTreeMap::new());
            if let Err(e) = me.delete_locked(&name).await {
                tracing::warn!(instance = %name, error = %e, "could not delete an ephemeral instance");
            }
        });
    }

    /// Every record, each with its config expanded by its profiles.
    async fn expanded_rows(&self) -> Result<Vec<InstanceRow>, InstanceError> {
        let all = db::profiles::list(&self.db).await?;
        Ok(db::instances::list(&self.db)
            .await?
            .iter()
            .map(|r| profiles::expanded(r, &all))
            .collect())
    }

    /// A daemon start: start every stopped instance whose `boot.*` keys say so (see
    /// [`config::Boot::starts`]), higher `boot.autostart.priority` first, waiting
    /// `boot.autostart.delay` after each. Failures are logged; the others still start.
    pub async fn autostart(&self) {
        let rows = match self.expanded_rows().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "autostart: cannot list instances");
                return;
            }
        };
        let mut due: Vec<(config::Boot, String)> = rows
            .iter()
            .filter(|r| self.running_init(r).is_none())
            .filter_map(|r| match config::boot(&r.config) {
                Ok(b) if b.starts(&r.config) => Some((b, r.name.clone())),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(instance = %r.name, error = %e, "autostart: bad boot keys");
                    None
                }
            })
            .collect();
        due.sort_by(|(a, an), (b, bn)| b.priority.cmp(&a.priority).then(an.cmp(bn)));
        for (boot, name) in due {
            match self.start(&name).await {
                Ok(()) => {
                    tracing::info!(instance = %name, priority = boot.priority, "autostarted");
                    if !boot.delay.is_zero() {
                        tokio::time::sleep(boot.delay).await;
                    }
                }
                Err(e) => tracing::warn!(instance = %name, error = %e, "autostart failed"),
            }
        }
    }

    /// A host shutdown: stop every running instance cleanly, higher `boot.stop.priority`
    /// first (one priority at a time, the instances of one priority together), keeping
    /// `volatile.last_state.power` at `RUNNING` so the next daemon start brings them back.
    pub async fn shutdown_all(&self) {
        let rows = match self.expanded_rows().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "shutdown: cannot list instances");
                return;
            }
        };
        let mut by_priority: BTreeMap<std::cmp::Reverse<i64>, Vec<String>> = BTreeMap::new();
        for r in rows.iter().filter(|r| self.running_init(r).is_some()) {
            let priority = config::boot(&r.config).map_or(0, |b| b.stop_priority);
            by_priority
                .entry(std::cmp::Reverse(priority))
                .or_default()
                .push(r.name.clone());
        }
        for (std::cmp::Reverse(priority), names) in by_priority {
            tracing::info!(priority, instances = ?names, "shutdown: stopping");
            let stops = names.iter().map(|name| async move {
                let lock = self.lock_for(name);
                let _g = lock.lock().await;
                if let Err(e) = self.stop_locked(name, None, false, None).await {
                    tracing::warn!(instance = %name, error = %e, "shutdown: stop failed");
                }
            });
            futures_util::future::join_all(stops).await;
        }
    }

    /// Stop a running instance (its lock held); `power` is recorded as its
    /// `volatile.last_state.power` with the stop (`None`: left as it is, e.g. a restart, or
    /// a host shutdown after which it comes back).
    async fn stop_locked(
        &self,
        name: &str,
        timeout: Option<Duration>,
        force: bool,
        power: Option<&str>,
    ) -> Result<(), InstanceError> {
        // Expanded: `boot.stop.signal` and `raw.init` may come from a profile.
        let row = self.expanded_row(name).await?;
        let init = self.ensure_running(&row)?;
        // Forwards end first: nothing new reaches a container that is shutting down.
        self.stop_proxies(name).await;
        // A frozen init cannot act on signals.
        if self.worker.is_frozen(name) {
            let _ = self.worker.set_frozen(name, false);
        }
        let mut exited = false;
        if !force {
            // Resent every second: an init that has not installed its handlers yet (PID 1
            // ignores signals it does not handle) gets another chance.
            let (first, then) = self.stop_signals(&row, &init);
            let started = tokio::time::Instant::now();
            let timeout = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
            let deadline = started + timeout;
            loop {
                // An init we cannot name gets its second signal for the second half.
                let sig = match then {
                    Some(t) if started.elapsed() >= timeout / 2 => t,
                    _ => first,
                };
                if !self.worker.signal(&init, sig)? {
                    exited = true;
                    break;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if self
                    .wait_exit(&init, left.min(Duration::from_secs(1)))
                    .await
                {
                    exited = true;
                    break;
                }
                if left <= Duration::from_secs(1) {
                    break;
                }
            }
            if !exited {
                tracing::warn!(instance = %name, "clean stop timed out, killing");
            }
        }
        if !exited {
            self.worker.signal(&init, libc::SIGKILL)?;
            if !self.wait_exit(&init, KILL_WAIT).await {
                return Err(InstanceError::Internal(format!(
                    "init of \"{name}\" (pid {}) did not exit after SIGKILL",
                    init.pid
                )));
            }
        }
        // The monitor removes the cgroup and exits right after its init; wait for it so a
        // following start cannot race with that cleanup.
        let monitor = init.monitor_pid;
        let _ = self
            .blocking_worker(move |w| Ok(w.wait_pid_gone(monitor, Duration::from_secs(2))))
            .await;
        // The init is gone: the stop happened, whatever the bookkeeping says. A record that
        // could not be updated (a full disk) still shows it stopped (its init is dead), and
        // the next start or daemon start finishes the cleanup.
        if let Err(e) = self.cleanup_stopped(name, power).await {
            tracing::warn!(instance = %name, error = %e, "stopped, but its cleanup did not finish");
        }
        tracing::info!(instance = %name, force, "stopped");
        Ok(())
    }

    async fn cleanup_stopped(&self, name: &str, power: Option<&str>) -> Result<(), InstanceError> {
        self.stop_proxies(name).await;
        let n = name.to_string();
        self.blocking_worker(move |w| w.remove_cgroup(&n)).await?;
        db::instances::set_running(&self.db, name, 0, 0, 0, None, power).await?;
        Ok(())
    }

    /// Wait until `init` exits, up to `timeout`. True if it exited.
    async fn wait_exit(&self, init: &InitProcess, timeout: Duration) -> bool {
        let init = *init;
        self.blocking_worker(move |w| Ok(w.wait_exit(&init, timeout)))
            .await
            .unwrap_or(false)
    }

    /// The signals that ask the running init to shut down: `boot.stop.signal` when set,
    /// else chosen from the program that actually runs as PID 1 (see [`halt_signals`]).
    fn stop_signals(&self, row: &InstanceRow, init: &InitProcess) -> (i32, Option<i32>) {
        if let Ok(Some(sig)) = config::stop_signal(&row.config) {
            return (sig, None);
        }
        if row.config.contains_key("raw.init") {
            return (libc::SIGTERM, None);
        }
        let (exe, comm) = crate::worker::proc::program(init.pid);
        halt_signals(&exe, &comm)
    }

    /// Restart: stop (cleanly unless `force`), then start.
    pub async fn restart(
        &self,
        name: &str,
        timeout: Option<Duration>,
        force: bool,
    ) -> Result<(), InstanceError> {
        // One lock across both halves: nothing can slip in between the stop and the start.
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.stop_locked(name, timeout, force, None).await?;
        self.start_locked(name).await?;
        self.events
            .instance("instance-restarted", name, BTreeMap::new());
        Ok(())
    }

    /// Freeze or thaw every process of a running instance.
    pub async fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let row = self.row(name).await?;
        self.ensure_running(&row)?;
        if self.worker.is_frozen(name) == frozen {
            return Err(InstanceError::BadState(format!(
                "instance \"{name}\" is already {}",
                if frozen {
                    "frozen"
                } else {
                    "running (not frozen)"
                }
            )));
        }
        let n = name.to_string();
        self.blocking_worker(move |w| w.set_frozen(&n, frozen))
            .await?;
        let action = if frozen {
            "instance-paused"
        } else {
            "instance-resumed"
        };
        self.events.instance(action, name, BTreeMap::new());
        Ok(())
    }

    // ----- delete -----

    /// Check that `name` exists and is stopped (before an operation is created).
    pub async fn check_can_delete(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        self.ensure_stopped(&row, "is running: stop it first (or delete with --force)")?;
        Ok(())
    }

    /// Delete a stopped instance: cgroup, files, row.
    pub async fn delete(&self, name: &str) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.delete_locked(name).await
    }

    /// [`Instances::delete`] with the instance's lock held by the caller.
    async fn delete_locked(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        self.ensure_stopped(&row, "is running: stop it first (or delete with --force)")?;
        // An init that exited on its own may still have its forwards (until the watcher
        // notices).
        self.stop_proxies(name).await;
        let n = name.to_string();
        self.blocking_worker(move |w| w.remove_cgroup(&n)).await?;
        // Intent first, then the record, then the files: a crash before the record goes
        // leaves the container as it was (the next start rewrites its backup from the
        // record); one after it leaves a directory marked deleting, removed at the next
        // start. Never a record without its files.
        let dir = self.paths.container(name);
        self.save_backup_marked(name, true, true).await?;
        let networks = self.networks.instance_networks(name).await?;
        db::instances::delete(&self.db, name).await?;
        if let Err(e) = self
            .blocking_worker(move |w| w.remove_container_dir(&dir))
            .await
        {
            tracing::warn!(instance = %name, error = %e,
                "record deleted; its directory goes at the next start");
        }
        for n in networks {
            self.networks.leases_changed(&n).await;
        }
        tracing::info!(instance = %name, "deleted");
        self.events
            .instance("instance-deleted", name, BTreeMap::new());
        Ok(())
    }

    // ----- read and update -----

    /// Every instance name.
    pub async fn names(&self) -> Result<Vec<String>, InstanceError> {
        Ok(db::instances::names(&self.db).await?)
    }

    /// One instance.
    pub async fn get(&self, name: &str) -> Result<Instance, InstanceError> {
        let row = self.row(name).await?;
        let profiles = db::profiles::list(&self.db).await?;
        Ok(self.to_api(&row, self.status(&row), &profiles))
    }

    /// Every instance with (`with_state`) or without its state.
    pub async fn list(
        &self,
        with_state: bool,
    ) -> Result<Vec<(Instance, Option<InstanceState>)>, InstanceError> {
        let rows = Arc::new(db::instances::list(&self.db).await?);
        let profiles = Arc::new(db::profiles::list(&self.db).await?);
        // Reading /proc and the cgroup files is blocking I/O of a few microseconds per
        // file: do it off the async threads, split over the CPUs.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = rows.len().div_ceil(workers).max(64);
        let mut tasks = Vec::new();
        for start in (0..rows.len()).step_by(chunk) {
            let (me, rows, profiles) = (self.clone(), rows.clone(), profiles.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                let rows = &rows[start..(start + chunk).min(rows.len())];
                let statuses: Vec<StatusCode> = rows.iter().map(|r| me.status(r)).collect();
                // The network namespaces of the running ones, all visited by one thread.
                let mut ifaces = if with_state {
                    let inits: Vec<InitProcess> = rows
                        .iter()
                        .zip(&statuses)
                        .filter(|(_, s)| **s != StatusCode::Stopped)
                        .filter_map(|(r, _)| Self::init_of(r))
                        .collect();
                    me.worker.interfaces_of_many(&inits).into_iter()
                } else {
                    Vec::new().into_iter()
                };
                rows.iter()
                    .zip(statuses)
                    .map(|(r, status)| {
                        let state = with_state.then(|| {
                            let own = if status == StatusCode::Stopped {
                                Vec::new()
                            } else {
                                ifaces.next().unwrap_or_default()
                            };
                            me.state_with(r, status, false, &profiles, Some(own))
                        });
                        (me.to_api(r, status, &profiles), state)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut out = Vec::with_capacity(rows.len());
        for t in tasks {
            out.extend(
                t.await
                    .map_err(|e| InstanceError::Internal(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// The runtime state of one instance, with the disk usage of its writable layer.
    pub async fn state(&self, name: &str) -> Result<InstanceState, InstanceError> {
        let row = self.row(name).await?;
        let profiles = db::profiles::list(&self.db).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.state_with(&row, me.status(&row), true, &profiles, None)
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// State from `/proc` and the cgroup; `disk` walks the upper dir (not done for lists);
    /// `ifaces`: the container's interfaces when the caller read them already.
    fn state_with(
        &self,
        row: &InstanceRow,
        status: StatusCode,
        disk: bool,
        profiles: &[db::ProfileRow],
        ifaces: Option<Vec<Interface>>,
    ) -> InstanceState {
        let running = status != StatusCode::Stopped;
        let usage = if running {
            self.worker.usage(&row.name)
        } else {
            Default::default()
        };
        InstanceState {
            status: status.as_str().into(),
            status_code: status,
            pid: if running { i64::from(row.init_pid) } else { 0 },
            processes: if running { usage.processes } else { -1 },
            cpu: InstanceStateCpu {
                usage: usage.cpu_ns,
            },
            memory: InstanceStateMemory {
                usage: usage.memory,
                usage_peak: usage.memory_peak,
                swap_usage: usage.swap,
                swap_usage_peak: 0,
            },
            disk: if disk {
                let upper = overlay_dirs(&self.paths.container(&row.name)).0;
                let used = self.worker.disk_usage(&upper);
                BTreeMap::from([("root".to_string(), serde_json::json!({ "usage": used }))])
            } else {
                BTreeMap::new()
            },
            network: running.then(|| {
                let ifaces = ifaces.unwrap_or_else(|| match Self::init_of(row) {
                    Some(init) => self.worker.interfaces(Some(&init), None),
                    None => Vec::new(),
                });
                self.network_state(row, profiles, ifaces)
            }),
        }
    }

    /// Figures for `/1.0/metrics`: one entry per running instance.
    pub async fn metrics(&self) -> Result<Vec<InstanceMetrics>, InstanceError> {
        let rows = db::instances::list(&self.db).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            rows.iter()
                .filter(|r| me.running_init(r).is_some())
                .map(|r| {
                    let stats = me.worker.stats(&r.name);
                    let limit = u64::try_from(stats.memory_limit).unwrap_or(0);
                    InstanceMetrics {
                        name: r.name.clone(),
                        usage: me.worker.usage(&r.name),
                        memory_total: if limit == 0 || limit > me.host.memory {
                            me.host.memory
                        } else {
                            limit
                        },
                        stats,
                        network: me.worker.net_counters(r.init_pid),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// Interfaces of the container's network namespace, Incus-shaped (one netlink dump).
    fn network_state(
        &self,
        row: &InstanceRow,
        profiles: &[db::ProfileRow],
        ifaces: Vec<Interface>,
    ) -> BTreeMap<String, serde_json::Value> {
        let expanded = network::expand(profiles, &row.profiles, &row.devices);
        // Interface name inside → the device it belongs to.
        let device_of = |iface: &str| {
            expanded
                .iter()
                .filter(|(_, d)| d.get("type").map(String::as_str) == Some("nic"))
                .find(|(dev, d)| d.get("name").map_or(dev.as_str(), String::as_str) == iface)
                .map(|(dev, _)| dev.clone())
        };
        ifaces
            .into_iter()
            .map(|i| {
                let host_name = device_of(&i.name)
                    .and_then(|d| row.config.get(&network::host_name_key(&d)).cloned())
                    .unwrap_or_default();
                let v = ctl_api::InstanceStateNetwork {
                    addresses: network::state_addresses(&i),
                    counters: network::counters(&i),
                    hwaddr: i.hwaddr.clone(),
                    host_name,
                    mtu: i.mtu,
                    state: if i.up { "up" } else { "down" }.into(),
                    kind: if i.loopback { "loopback" } else { "broadcast" }.into(),
                };
                (
                    i.name,
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }

    fn to_api(
        &self,
        row: &InstanceRow,
        status: StatusCode,
        profiles: &[db::ProfileRow],
    ) -> Instance {
        Instance {
            name: row.name.clone(),
            description: row.description.clone(),
            status: status.as_str().into(),
            status_code: status,
            created_at: row.created_at.clone(),
            last_used_at: if row.last_used_at.is_empty() {
                crate::images::ZERO_TIME.into()
            } else {
                row.last_used_at.clone()
            },
            location: "none".into(),
            kind: "container".into(),
            architecture: row.architecture.clone(),
            ephemeral: row.ephemeral,
            stateful: false,
            profiles: row.profiles.clone(),
            config: row.config.clone(),
            devices: row.devices.clone(),
            expanded_config: profiles::expand_config(profiles, &row.profiles, &row.config),
            expanded_devices: network::expand(profiles, &row.profiles, &row.devices),
            project: "default".into(),
        }
    }

    /// Validate an exec request and build the command that runs it in the container.
    pub async fn plan_exec(
        &self,
        name: &str,
        req: &InstanceExecPost,
    ) -> Result<ExecPlan, InstanceError> {
        if req.command.is_empty() {
            return Err(InstanceError::Invalid("command must not be empty".into()));
        }
        let row = self.expanded_row(name).await?;
        let init = self.ensure_running(&row)?;
        if self.worker.is_frozen(name) {
            return Err(InstanceError::BadState(format!(
                "instance \"{name}\" is frozen"
            )));
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), DEFAULT_PATH.into());
        env.insert("LANG".into(), "C.UTF-8".into());
        let (home, user) = if req.user == 0 {
            ("/root".to_string(), "root".to_string())
        } else {
            ("/".to_string(), req.user.to_string())
        };
        env.insert("HOME".into(), home.clone());
        env.insert("USER".into(), user);
        for (k, v) in &row.config {
            if let Some(var) = k.strip_prefix("environment.") {
                env.insert(var.to_string(), v.clone());
            }
        }
        if req.interactive {
            env.insert("TERM".into(), "xterm".into());
        }
        env.extend(req.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cwd = if req.cwd.is_empty() {
            env.get("HOME").cloned().unwrap_or(home)
        } else {
            req.cwd.clone()
        };
        let spec = ExecSpec {
            pid: init.pid,
            starttime: init.starttime,
            namespaces: default_namespaces(),
            cgroup_procs: self.worker.cgroup_procs(name),
            caps_drop: config::capabilities_drop(&row.config)?,
            // As the init got it: privileged iff it runs without an id map.
            syscalls: config::syscall_policy(
                &row.config,
                idmap::from_json(row.config.get(idmap::VOLATILE_CURRENT)).is_none(),
            )?,
            argv: req.command.clone(),
            env: env.into_iter().collect(),
            cwd,
            uid: req.user,
            gid: req.group,
            interactive: req.interactive,
            width: u16::try_from(req.width).unwrap_or(u16::MAX),
            height: u16::try_from(req.height).unwrap_or(u16::MAX),
        };
        let (program, args, env) = self.worker.exec_command(&spec);
        Ok(ExecPlan {
            program,
            args,
            env,
            interactive: req.interactive,
        })
    }

    // ----- logs -----

    /// Where instance log `file` lives (recorded exec output, the console log).
    pub fn log_path(&self, name: &str, file: &str) -> PathBuf {
        self.paths.container(name).join("logs").join(file)
    }

    /// The names of an instance's log files.
    pub async fn logs(&self, name: &str) -> Result<Vec<String>, InstanceError> {
        self.row(name).await?;
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(self.paths.container(name).join("logs")).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// One log file's path, checked: a plain name that exists. `lxc.log`, what LXD clients
    /// ask for (`lxc info --show-log`), is the monitor's log.
    pub async fn log_file(&self, name: &str, file: &str) -> Result<PathBuf, InstanceError> {
        self.row(name).await?;
        let file = if file == "lxc.log" {
            "monitor.log"
        } else {
            file
        };
        let plain = !file.is_empty()
            && !file.starts_with('.')
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        let path = self.log_path(name, file);
        if !plain || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(InstanceError::Invalid(format!(
                "log \"{file}\" of instance \"{name}\" not found"
            )));
        }
        Ok(path)
    }

    // ----- console -----

    async fn console_request(
        &self,
        name: &str,
        request: &[u8],
    ) -> Result<tokio::net::UnixStream, InstanceError> {
        use tokio::io::AsyncWriteExt;
        let sock = self.paths.console_socket(name);
        let mut conn = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
            InstanceError::Internal(format!("console of \"{name}\" ({}): {e}", sock.display()))
        })?;
        conn.write_all(request)
            .await
            .map_err(|e| InstanceError::Internal(format!("console of \"{name}\": {e}")))?;
        Ok(conn)
    }

    /// The console's recent output: live from the monitor while running, else what the last
    /// run left in `console.log`.
    pub async fn console_log(&self, name: &str) -> Result<Vec<u8>, InstanceError> {
        use tokio::io::AsyncReadExt;
        let row = self.row(name).await?;
        if self.running_init(&row).is_some() {
            let mut conn = self
                .console_request(name, crate::worker::console::CMD_LOG)
                .await?;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
                .await
                .map_err(|_| InstanceError::Internal(format!("console of \"{name}\": no answer")))?
                .map_err(|e| InstanceError::Internal(format!("console of \"{name}\": {e}")))?;
            return Ok(out);
        }
        let log = self.paths.container(name).join("console.log");
        Ok(tokio::fs::read(&log).await.unwrap_or_default())
    }

    /// Empty the console log.
    pub async fn console_clear(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        if self.running_init(&row).is_some() {
            self.console_request(name, crate::worker::console::CMD_CLEAR)
                .await?;
        }
        let log = self.paths.container(name).join("console.log");
        let _ = tokio::fs::write(&log, b"").await;
        Ok(())
    }

    /// A connection attached to the running instance's console (both directions).
    pub async fn console_attach(
        &self,
        name: &str,
    ) -> Result<tokio::net::UnixStream, InstanceError> {
        let row = self.row(name).await?;
        self.ensure_running(&row)?;
        self.console_request(name, crate::worker::console::CMD_ATTACH)
            .await
    }

    // ----- start-up -----

    /// Reconcile the database with the host after a daemon start: instances whose init is
    /// gone are marked stopped and their leftover cgroups removed; running ones are kept
    /// and their proxy devices started again.
    pub async fn reconcile(&self) -> Result<(), InstanceError> {
        // First: a rename cut off puts its directory where its record is.
        self.reconcile_renames().await?;
        let rows = db::instances::list(&self.db).await?;
        let profiles = db::profiles::list(&self.db).await?;
        // Every record's backup file is brought up to date (installs older than the file
        // get theirs here).
        for row in &rows {
            self.save_backup_or_warn(&row.name).await;
        }
        // Creates a crash cut off: without a record, what they made goes; with one, the
        // backup file above completed them.
        for name in db::intents::pending(&self.db, Kind::InstanceCreate).await? {
            if !rows.iter().any(|r| r.name == name) {
                let dir = self.paths.container(&name);
                // A backup file means a container that finished being made: never removed.
                if dir.exists() && !backup::holds_container(&dir) {
                    tracing::warn!(instance = %name, dir = %dir.display(),
                        "removing the directory of a create that a crash interrupted");
                    self.blocking_worker(move |w| w.remove_container_dir(&dir))
                        .await?;
                }
            }
            db::intents::finish(&self.db, Kind::InstanceCreate, &name).await?;
        }
        self.reconcile_snapshots().await?;
        self.reconcile_backups().await?;
        // Any other directory without a record is never removed here: with a backup file
        // it is a container whose record was lost (`ctld recover` brings it back); without
        // one, a create of an older ctld that died before finishing (the next create of
        // that name replaces it).
        if let Ok(rd) = std::fs::read_dir(self.paths.containers()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if rows.iter().any(|r| r.name == name) {
                    continue;
                }
                if backup::read(&e.path()).is_ok_and(|b| b.deleting) {
                    // A delete that a crash interrupted after the record went: finish it.
                    tracing::info!(dir = %e.path().display(), "finishing an interrupted delete");
                    let dir = e.path();
                    if let Err(err) = self
                        .blocking_worker(move |w| w.remove_container_dir(&dir))
                        .await
                    {
                        tracing::warn!(error = %err, "could not remove a deleted container's directory");
                    }
                } else if backup::exists(&e.path()) {
                    tracing::warn!(dir = %e.path().display(),
                        "container directory without a record: kept; `ctld recover` brings it back");
                } else {
                    tracing::info!(dir = %e.path().display(),
                        "unfinished container directory (no record, no backup file): kept");
                }
            }
        }
        for mut row in rows {
            // The monitor's file is the host's word: an init it records that still runs is
            // the container's, whatever the row says (a ctld that died between starting a
            // container and recording it).
            let on_host = crate::worker::spawn::read_state(&self.paths.init_state(&row.name))
                .filter(|i| self.worker.is_alive(i));
            if let Some(init) = on_host
                && Self::init_of(&row) != Some(init)
            {
                match self.adopt(&row, &profiles, &init).await {
                    Ok(()) => {
                        row.init_pid = init.pid;
                        row.init_starttime = init.starttime;
                        row.monitor_pid = init.monitor_pid;
                    }
                    Err(err) => {
                        tracing::warn!(instance = %row.name, error = %err,
                            "found running but not fully started: stopping it");
                        self.abort_start(&row.name, &init).await;
                        let _ = self.cleanup_stopped(&row.name, None).await;
                        continue;
                    }
                }
            }
            match Self::init_of(&row) {
                Some(init) if self.worker.is_alive(&init) => {
                    tracing::info!(instance = %row.name, pid = init.pid, "found running");
                    // Port forwards live in the daemon: start them again. A failure (the
                    // port taken meanwhile) leaves the instance running without them.
                    let expanded = network::expand(&profiles, &row.profiles, &row.devices);
                    let started = match network::config::proxy_devices(&expanded) {
                        Ok(specs) => self.start_proxies(&row.name, &init, &specs).await,
                        Err(e) => Err(NetworkError::from(e).into()),
                    };
                    if let Err(err) = started {
                        tracing::warn!(instance = %row.name, error = %err,
                            "could not restart the proxy devices");
                    }
                    if row.ephemeral {
                        self.watch_ephemeral(&row.name, init);
                    }
                    continue;
                }
                Some(_) => {
                    // The monitor removes its file when the init exits: a file left means
                    // the monitor died with it (the host went down), so the container is
                    // still meant to run at the next autostart; no file, it stopped itself.
                    let state_file = self.paths.init_state(&row.name);
                    let host_went_down = state_file.exists();
                    tracing::info!(instance = %row.name, host_went_down, "init gone while ctld was away");
                    if host_went_down {
                        let _ = std::fs::remove_file(&state_file);
                    }
                    let power = (!host_went_down).then_some("STOPPED");
                    if let Err(err) = self.cleanup_stopped(&row.name, power).await {
                        tracing::warn!(instance = %row.name, error = %err, "cleanup failed");
                    }
                }
                None => {}
            }
            // An ephemeral instance that stopped while ctld was away goes, as it would have.
            if row.ephemeral {
                tracing::info!(instance = %row.name, "ephemeral instance found stopped: deleting it");
                if let Err(err) = self.delete(&row.name).await {
                    tracing::warn!(instance = %row.name, error = %err,
                        "could not delete a stopped ephemeral instance");
                }
            }
        }
        Ok(())
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
