//! The running `proxy` devices of instances: one [`ProxyHandle`] per device of a running
//! instance, kept in [`ProxyTable`] (in memory: a daemon restart starts them again from the
//! database in `reconcile`).
//!
//! When they run: started by a start after the NICs are set up (a bind failure fails the
//! start, which then rolls back); stopped by a stop, restart, delete, and by a watcher when
//! the init exits on its own; changed one by one when a running instance's proxy devices
//! change (PUT/PATCH). Each entry remembers the init it forwards into, so a late watcher
//! never stops the proxies of the next run.
//!
//! Invariant: the table lock is never held across an `await`; entries are taken out first
//! and stopped afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::{InstanceError, Instances};
use crate::network::proxy::{ProxyHandle, ProxySpec};
use crate::worker::netns::NetNs;
use crate::worker::{InitProcess, Worker};

/// How often an instance with proxies is checked for an init that exited on its own.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The proxy devices of one running instance.
struct Running {
    init: InitProcess,
    devices: BTreeMap<String, (ProxySpec, ProxyHandle)>,
    watcher: AbortHandle,
}

/// Running proxy devices per instance name. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct ProxyTable {
    inner: Arc<StdMutex<HashMap<String, Running>>>,
}

impl ProxyTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take `name`'s entry out (only if it belongs to `init`, when given).
    fn take(&self, name: &str, init: Option<&InitProcess>) -> Option<Running> {
        let mut map = self.lock();
        match (map.get(name), init) {
            (Some(r), Some(i)) if r.init != *i => None,
            (Some(_), _) => map.remove(name),
            (None, _) => None,
        }
    }

    /// The specs of `name`'s running proxies.
    pub(crate) fn specs(&self, name: &str) -> BTreeMap<String, ProxySpec> {
        self.lock()
            .get(name)
            .map(|r| {
                r.devices
                    .iter()
                    .map(|(d, (s, _))| (d.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Running {
    async fn stop(self, name: &str) {
        self.watcher.abort();
        stop_all(name, self.devices).await;
    }
}

async fn stop_all(name: &str, devices: BTreeMap<String, (ProxySpec, ProxyHandle)>) {
    for (device, (_, handle)) in devices {
        handle.stop().await;
        tracing::debug!(instance = %name, device = %device, "proxy device stopped");
    }
}

/// Start every proxy of `specs` into `netns`; on the first failure stop the ones started
/// and name the device that failed.
async fn start_all(
    name: &str,
    netns: &NetNs,
    specs: &BTreeMap<String, ProxySpec>,
) -> Result<BTreeMap<String, (ProxySpec, ProxyHandle)>, InstanceError> {
    let mut started = BTreeMap::new();
    for (device, spec) in specs {
        let result = match netns.try_clone() {
            Ok(ns) => ProxyHandle::start(spec, ns)
                .await
                .map_err(|source| InstanceError::Proxy {
                    device: device.clone(),
                    source,
                }),
            Err(e) => Err(InstanceError::Internal(format!(
                "proxy device \"{device}\": network namespace: {e}"
            ))),
        };
        match result {
            Ok(h) => {
                started.insert(device.clone(), (spec.clone(), h));
            }
            Err(e) => {
                stop_all(name, started).await;
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// Wait for `init` to exit (checked every [`WATCH_INTERVAL`]), then stop the proxies of
/// `name` if they still belong to that init.
fn spawn_watcher(
    table: ProxyTable,
    worker: Arc<dyn Worker>,
    name: String,
    init: InitProcess,
) -> AbortHandle {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if !worker.is_alive(&init) {
                break;
            }
        }
        if let Some(running) = table.take(&name, Some(&init)) {
            tracing::info!(instance = %name, pid = init.pid, "init exited, stopping its proxy devices");
            // Not `Running::stop`: that would abort this very task.
            stop_all(&name, running.devices).await;
        }
    })
    .abort_handle()
}

impl Instances {
    async fn open_netns(&self, init: &InitProcess) -> Result<NetNs, InstanceError> {
        let init = *init;
        self.blocking_worker(move |w| w.open_netns(&init)).await
    }

    /// Start the proxy devices `specs` of `name`, running as `init` (after its NICs are
    /// up). Replaces whatever the table held for `name`. On failure nothing of them is left
    /// listening.
    pub(super) async fn start_proxies(
        &self,
        name: &str,
        init: &InitProcess,
        specs: &BTreeMap<String, ProxySpec>,
    ) -> Result<(), InstanceError> {
        self.stop_proxies(name).await;
        if specs.is_empty() {
            return Ok(());
        }
        let netns = self.open_netns(init).await?;
        let devices = start_all(name, &netns, specs).await?;
        self.install(name, init, devices).await;
        tracing::info!(instance = %name, devices = specs.len(), "proxy devices started");
        Ok(())
    }

    /// Put `devices` in the table as `name`'s, with a watcher on `init`.
    async fn install(
        &self,
        name: &str,
        init: &InitProcess,
        devices: BTreeMap<String, (ProxySpec, ProxyHandle)>,
    ) {
        if devices.is_empty() {
            return;
        }
        let watcher = spawn_watcher(
            self.proxies.clone(),
            self.worker.clone(),
            name.to_string(),
            *init,
        );
        let old = self.proxies.lock().insert(
            name.to_string(),
            Running {
                init: *init,
                devices,
                watcher,
            },
        );
        if let Some(old) = old {
            old.stop(name).await;
        }
    }

    /// Stop every proxy device of `name` (nothing to do when none runs); the ports are
    /// free when this returns.
    pub(super) async fn stop_proxies(&self, name: &str) {
        if let Some(running) = self.proxies.take(name, None) {
            running.stop(name).await;
        }
    }

    /// Make the running proxies of `name` (running as `init`) exactly `wanted`: stop the
    /// removed and changed ones, start the added and changed ones. If a start fails, the
    /// ones this call started are stopped and the ones it stopped started again, and the
    /// error names the device.
    pub(super) async fn apply_proxies(
        &self,
        name: &str,
        init: &InitProcess,
        wanted: &BTreeMap<String, ProxySpec>,
    ) -> Result<(), InstanceError> {
        let mut current = match self.proxies.take(name, None) {
            Some(r) => {
                r.watcher.abort();
                r.devices
            }
            None => BTreeMap::new(),
        };
        let changed: Vec<String> = current
            .iter()
            .filter(|(d, (s, _))| wanted.get(*d) != Some(s))
            .map(|(d, _)| d.clone())
            .collect();
        let mut stopped = BTreeMap::new();
        for d in changed {
            if let Some((spec, handle)) = current.remove(&d) {
                handle.stop().await;
                stopped.insert(d, spec);
            }
        }
        let to_start: BTreeMap<String, ProxySpec> = wanted
            .iter()
            .filter(|(d, _)| !current.contains_key(*d))
            .map(|(d, s)| (d.clone(), s.clone()))
            .collect();
        let result = match to_start.is_empty() {
            true => Ok(BTreeMap::new()),
            false => match self.open_netns(init).await {
                Ok(ns) => start_all(name, &ns, &to_start).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(started) => {
                current.extend(started);
                self.install(name, init, current).await;
                tracing::info!(instance = %name, devices = wanted.len(), "proxy devices applied");
                Ok(())
            }
            Err(e) => {
                // Put back what was running before this call.
                if !stopped.is_empty() {
                    match self.open_netns(init).await {
                        Ok(ns) => {
                            for (d, spec) in stopped {
                                let one = BTreeMap::from([(d.clone(), spec)]);
                                match start_all(name, &ns, &one).await {
                                    Ok(h) => current.extend(h),
                                    Err(err) => tracing::warn!(instance = %name, device = %d,
                                        error = %err, "could not restore a proxy device"),
                                }
                            }
                        }
                        Err(err) => tracing::warn!(instance = %name, error = %err,
                            "could not restore the proxy devices"),
                    }
                }
                self.install(name, init, current).await;
                Err(e)
            }
        }
    }
}
