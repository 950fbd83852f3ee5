//! The lifecycle of an instance: start (validate, cgroup, spawn, NICs, proxies, record; undone
//! step by step when a later one fails), stop (signals, then SIGKILL; cleanup), restart,
//! freeze, delete, the `boot.*` autostart and the SIGPWR shutdown, and the watcher that
//! deletes an ephemeral instance when it stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    CheckedDevices, DEFAULT_PATH, DEFAULT_STOP_TIMEOUT, InstanceError, Instances, KILL_WAIT,
    assign_volatile_nics, config, halt_signals, has_path, idmap, now_rfc3339, profiles,
};
use crate::db::{self, InstanceRow};
use crate::network::{self, NetworkError};
use crate::paths::overlay_dirs;
use crate::worker::spec::{default_mounts, default_namespaces};
use crate::worker::{InitProcess, SpawnSpec};

impl Instances {
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
    pub(super) async fn start_quiet(&self, name: &str) -> Result<(), InstanceError> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        self.start_locked(name).await
    }

    /// Start with the instance's lock held by the caller.
    pub(super) async fn start_locked(&self, name: &str) -> Result<(), InstanceError> {
        let own = self.row(name).await?;
        self.ensure_stopped(&own, "is already running")?;
        // Everything below reads the expanded config; only `volatile.*` keys are written
        // back into the instance's own.
        let all = db::profiles::list(&self.db).await?;
        let row = profiles::expanded(&own, &all);
        let mut limits = config::limits(&row.config, &self.host, name)?;
        let lower = self.lower_of(&row).await?;
        let spec = self.spawn_spec(&row, lower)?;
        // Networking first: a bad NIC refuses the start before anything exists.
        let CheckedDevices {
            nics,
            proxies,
            root,
            disks,
        } = self
            .check_devices_with(&all, name, &row.profiles, &row.devices)
            .await?;
        // The root disk's quota, as the config says now (a restore or copy brings a layer
        // without it). Lifting one is the update's work: a start without `size` costs nothing.
        if let Some(size) = root.and_then(|(_, size)| size) {
            self.storage
                .apply_root_quota(
                    crate::storage::instance_pool(&row.config),
                    &self.paths.container(name),
                    Some(size),
                )
                .await?;
        }
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
        // Disk devices last in the mount table: over everything else, parents first.
        spec.mounts.extend(
            super::disk_devices::mounts(&disks)
                .into_iter()
                .map(crate::worker::spec::MountEntry::Disk),
        );
        limits.io_throttle = super::disk_devices::throttles(&disks);
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
    pub(super) async fn plan_idmap(
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
    pub(super) async fn abort_start(&self, name: &str, init: &InitProcess) {
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
    /// proxy devices parse, disk sources exist (or are not required) where they may be.
    /// Returns the NICs, proxies and disks of the expanded devices.
    pub(super) async fn check_devices(
        &self,
        name: &str,
        profiles: &[String],
        devices: &ctl_api::instance::DeviceMap,
    ) -> Result<CheckedDevices, InstanceError> {
        let all = db::profiles::list(&self.db).await?;
        self.check_devices_with(&all, name, profiles, devices).await
    }

    /// [`Instances::check_devices`] against the profiles `all` (a change not recorded yet).
    pub(super) async fn check_devices_with(
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
        let disks = self.resolve_disks(&expanded).await?;
        let nics = self.networks.resolve_nics(name, &expanded).await?;
        let root = crate::storage::config::root_disk(&expanded).map_err(InstanceError::Invalid)?;
        if let Some((pool, _)) = &root {
            self.storage.check_root(pool, None).await?;
        }
        Ok(CheckedDevices {
            nics,
            proxies,
            root,
            disks,
        })
    }

    /// The image layer an instance mounts: the image store's, or its pool's copy.
    pub(super) async fn lower_of(&self, row: &InstanceRow) -> Result<PathBuf, InstanceError> {
        Ok(self
            .storage
            .image_layer(
                crate::storage::instance_pool(&row.config),
                &row.image_fingerprint,
            )
            .await?)
    }

    pub(super) fn spawn_spec(
        &self,
        row: &InstanceRow,
        lower: PathBuf,
    ) -> Result<SpawnSpec, InstanceError> {
        let dir = self.paths.container(&row.name);
        let (upper, work, rootfs) = overlay_dirs(&dir);
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
    pub(super) fn watch_ephemeral(&self, name: &str, init: InitProcess) {
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
            // Still the instance whose init exited (not a new one of that name), stopped.
            if !row.ephemeral
                || Self::init_of(&row) != Some(init)
                || me.running_init(&row).is_some()
            {
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
    pub(super) async fn expanded_rows(&self) -> Result<Vec<InstanceRow>, InstanceError> {
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
    pub(super) async fn stop_locked(
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

    pub(super) async fn cleanup_stopped(
        &self,
        name: &str,
        power: Option<&str>,
    ) -> Result<(), InstanceError> {
        self.stop_proxies(name).await;
        let n = name.to_string();
        self.blocking_worker(move |w| w.remove_cgroup(&n)).await?;
        db::instances::set_running(&self.db, name, 0, 0, 0, None, power).await?;
        Ok(())
    }

    /// Wait until `init` exits, up to `timeout`. True if it exited.
    pub(super) async fn wait_exit(&self, init: &InitProcess, timeout: Duration) -> bool {
        let init = *init;
        self.blocking_worker(move |w| Ok(w.wait_exit(&init, timeout)))
            .await
            .unwrap_or(false)
    }

    /// The signals that ask the running init to shut down: `boot.stop.signal` when set,
    /// else chosen from the program that actually runs as PID 1 (see [`halt_signals`]).
    pub(super) fn stop_signals(&self, row: &InstanceRow, init: &InitProcess) -> (i32, Option<i32>) {
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
    pub(super) async fn delete_locked(&self, name: &str) -> Result<(), InstanceError> {
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
}
