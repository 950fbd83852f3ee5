//! Changing what an instance is: its own config, devices and profile list (its PUT/PATCH),
//! or the profiles it applies (a profile's PUT/PATCH). Both take one path, plan → apply →
//! record: the whole expansion (profiles in order, then the instance's own keys) is checked
//! before anything happens; a running instance then gets at once what can change live
//! (limits, NICs, proxy and disk devices), and the rest waits for its next start; a failure
//! puts back what was applied.

use std::collections::BTreeMap;

use ctl_api::InstancePut;

use super::disk_devices::{self, DiskChange, DisksApplied};
use super::profiles::expand_config;
use super::{CheckedDevices, InstanceError, Instances, assign_volatile_nics, config};
use crate::db::{self, InstanceRow, ProfileRow};
use crate::network::{self, ResolvedNic, proxy::ProxySpec};
use crate::worker::{CgroupLimits, InitProcess};

/// Config as stored.
type Config = BTreeMap<String, String>;

/// One instance's change, checked and ready to apply.
#[derive(Debug)]
pub(super) struct UpdatePlan {
    pub(super) name: String,
    /// The record before the change.
    pub(super) row: InstanceRow,
    /// The profiles the record expands against now, and after the change.
    before: Vec<ProfileRow>,
    after: Vec<ProfileRow>,
    /// The instance's own config, devices and profile list after the change (with the
    /// `volatile.*` keys of its NICs brought up to date).
    pub(super) config: Config,
    pub(super) devices: network::Devices,
    pub(super) profiles: Vec<String>,
    nics: Vec<ResolvedNic>,
    proxies: BTreeMap<String, ProxySpec>,
    /// Its init, when it runs: then the change is applied live.
    init: Option<InitProcess>,
    nic_change: NicChange,
    proxies_changed: bool,
    disk_change: DiskChange,
    /// The root disk's `size` before and after, when it changes (applied at once, running
    /// or not: the quota is on the instance's files).
    root_size: Option<(Option<u64>, Option<u64>)>,
    old_limits: CgroupLimits,
    new_limits: CgroupLimits,
}

/// What [`Instances::apply_update`] changed on the host, for [`Instances::undo_update`].
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// The proxy devices that ran before (when they were changed).
    previous_proxies: Option<BTreeMap<String, ProxySpec>>,
    nics_touched: bool,
    disks: Option<DisksApplied>,
    root_size: bool,
    limits: bool,
}

/// How the NIC devices of a running instance change in an update.
#[derive(Debug, Default)]
pub(super) struct NicChange {
    /// Devices new or changed: their veth is made.
    pub(super) added: Vec<String>,
    /// Interface names (inside) of devices removed or changed: removed first.
    pub(super) removed_interfaces: Vec<String>,
}

impl NicChange {
    /// The change from `before` to `after` (non-proxy devices, i.e. NICs).
    fn between(before: &network::Devices, after: &network::Devices) -> NicChange {
        let ifname = |dev: &str, d: &BTreeMap<String, String>| {
            d.get("name").cloned().unwrap_or_else(|| dev.to_string())
        };
        NicChange {
            added: after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect(),
            removed_interfaces: before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(*v))
                .map(|(k, v)| ifname(k, v))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed_interfaces.is_empty()
    }
}

/// Split expanded devices into (the NICs, the proxies); other devices are left out.
fn split_proxies(devices: network::Devices) -> (network::Devices, network::Devices) {
    devices
        .into_iter()
        .filter(|(_, d)| d.get("type").map(String::as_str) != Some("disk"))
        .partition(|(_, d)| d.get("type").map(String::as_str) != Some("proxy"))
}

impl Instances {
    /// Apply a PUT (`patch == false`: replace) or PATCH (merge) to an instance. Limits,
    /// NICs and proxy devices change live on a running instance.
    pub async fn update(
        &self,
        name: &str,
        put: InstancePut,
        patch: bool,
    ) -> Result<(), InstanceError> {
        self.row(name).await?;
        // Profiles first, then the instance: the order a profile change takes them in.
        let _profiles = self.profiles_lock.lock().await;
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let row = self.row(name).await?;
        let mut cfg = match (&put.config, patch) {
            (Some(c), false) => c.clone(),
            (Some(c), true) => {
                let mut merged = row.config.clone();
                merged.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
                merged
            }
            (None, _) => row.config.clone(),
        };
        // Daemon-owned keys survive a PUT that leaves them out.
        for (k, v) in &row.config {
            if (k.starts_with("image.") || k.starts_with("volatile.")) && !cfg.contains_key(k) {
                cfg.insert(k.clone(), v.clone());
            }
        }
        // An empty value unsets a key (as `PATCH {"config": {"k": ""}}` does in Incus).
        cfg.retain(|_, v| !v.is_empty());
        config::validate(&cfg, &row.config, &self.host)?;
        let devices = match (&put.devices, patch) {
            (Some(d), false) => d.clone(),
            (Some(d), true) => {
                let mut merged = row.devices.clone();
                merged.extend(d.iter().map(|(k, v)| (k.clone(), v.clone())));
                // An empty device entry removes it (as an empty config value unsets a key).
                merged.retain(|_, v| !v.is_empty());
                merged
            }
            (None, _) => row.devices.clone(),
        };
        let profiles = put.profiles.clone().unwrap_or_else(|| row.profiles.clone());
        let all = db::profiles::list(&self.db).await?;
        let description = put.description.clone().unwrap_or(row.description.clone());
        let ephemeral = put.ephemeral.unwrap_or(row.ephemeral);
        // Made ephemeral while it runs: from now on its stop deletes it.
        let watch = (ephemeral && !row.ephemeral)
            .then(|| self.running_init(&row))
            .flatten();
        let plan = self
            .plan_update(row, all.clone(), all, cfg, devices, profiles)
            .await?;
        let applied = self.apply_update(&plan).await?;
        let recorded = db::instances::update(
            &self.db,
            name,
            &db::InstanceUpdate {
                description: &description,
                ephemeral,
                config: &plan.config,
                devices: &plan.devices,
                profiles: &plan.profiles,
            },
        )
        .await;
        if let Err(e) = recorded {
            self.undo_update(&plan, applied).await;
            return Err(e.into());
        }
        self.save_backup_or_warn(name).await;
        if let Some(init) = watch {
            self.watch_ephemeral(name, init);
        }
        self.events
            .instance("instance-updated", name, BTreeMap::new());
        Ok(())
    }

    /// Check that instance `row` can become (`config`, `devices`, `profiles`) expanded
    /// against the profiles `after` (it is expanded against `before` now): the expanded
    /// config and devices are valid, keys that cannot change while it runs do not, and
    /// what changes live is worked out. Nothing changes. `config` is the instance's own,
    /// already checked against its record.
    pub(super) async fn plan_update(
        &self,
        row: InstanceRow,
        before: Vec<ProfileRow>,
        after: Vec<ProfileRow>,
        mut config: Config,
        devices: network::Devices,
        profiles: Vec<String>,
    ) -> Result<UpdatePlan, InstanceError> {
        let name = row.name.clone();
        let expanded = expand_config(&after, &profiles, &config);
        let old_expanded = expand_config(&before, &row.profiles, &row.config);
        // The keys of profiles mix with the instance's own: check what a start would use.
        config::validate(&expanded, &expanded, &self.host)?;
        let CheckedDevices {
            nics,
            proxies,
            disks,
            root,
        } = self
            .check_devices_with(&after, &name, &profiles, &devices)
            .await?;
        // The root disk stays on the instance's pool (moving it is a copy); its `size`
        // may change if the pool can enforce it.
        let pool = crate::storage::instance_pool(&row.config).to_string();
        if let Some((p, _)) = &root
            && p != &pool
        {
            return Err(InstanceError::Invalid(format!(
                "the root disk's pool cannot change from \"{pool}\" to \"{p}\" (copy the \
                 instance to the other pool instead)"
            )));
        }
        let old_root = crate::storage::config::root_disk(&network::expand(
            &before,
            &row.profiles,
            &row.devices,
        ))
        .ok()
        .flatten();
        let (old_size, new_size) = (old_root.and_then(|(_, s)| s), root.and_then(|(_, s)| s));
        let root_size = (old_size != new_size).then_some((old_size, new_size));
        if root_size.is_some() {
            self.storage.check_root(&pool, new_size).await?;
        }
        let init = self.running_init(&row);
        let mut nic_change = NicChange::default();
        let mut proxies_changed = false;
        let mut disk_change = DiskChange::default();
        let old_devices = network::expand(&before, &row.profiles, &row.devices);
        let old_disks = self.resolve_disks_lenient(&old_devices).await;
        if init.is_some() {
            let new_devices = network::expand(&after, &profiles, &devices);
            disk_change = Instances::disk_change(&old_devices, &new_devices, &old_disks, &disks);
            let (was, was_proxies) = split_proxies(old_devices);
            let (will, will_proxies) = split_proxies(new_devices);
            nic_change = NicChange::between(&was, &will);
            proxies_changed = was_proxies != will_proxies;
        }
        // Volatile keys of devices that are gone go with them; new NICs get their MAC.
        config.retain(|k, _| {
            let Some(rest) = k.strip_prefix("volatile.") else {
                return true;
            };
            let Some((dev, key)) = rest.split_once('.') else {
                return true;
            };
            !(key == "hwaddr" || key == "host_name") || nics.iter().any(|n| n.nic.device == dev)
        });
        assign_volatile_nics(&mut config, &nics);
        for r in nics
            .iter()
            .filter(|r| nic_change.added.contains(&r.nic.device))
        {
            let host = r
                .nic
                .host_name
                .clone()
                .unwrap_or_else(network::random_host_name);
            config.insert(network::host_name_key(&r.nic.device), host);
        }
        if init.is_some()
            && let Some(key) = config::START_ONLY_KEYS
                .iter()
                .find(|k| expanded.get(**k) != old_expanded.get(**k))
        {
            return Err(InstanceError::Invalid(format!(
                "\"{key}\" cannot be changed while the instance is running; stop it first"
            )));
        }
        let mut new_limits = config::limits(&expanded, &self.host, &name)?;
        new_limits.io_throttle = disk_devices::throttles(&disks);
        let mut old_limits = config::limits(&old_expanded, &self.host, &name)?;
        old_limits.io_throttle = disk_devices::throttles(&old_disks);
        Ok(UpdatePlan {
            name,
            row,
            before,
            after,
            config,
            devices,
            profiles,
            nics,
            proxies,
            init,
            nic_change,
            proxies_changed,
            disk_change,
            root_size,
            old_limits,
            new_limits,
        })
    }

    /// Apply a planned change to the host: leases of a stopped instance; proxy devices,
    /// NICs, disk devices and limits of a running one. Nothing is recorded. A failure undoes what this
    /// call applied.
    pub(super) async fn apply_update(&self, plan: &UpdatePlan) -> Result<Applied, InstanceError> {
        let mut applied = Applied::default();
        match self.apply_steps(plan, &mut applied).await {
            Ok(()) => Ok(applied),
            Err(e) => {
                self.undo_update(plan, applied).await;
                Err(e)
            }
        }
    }

    async fn apply_steps(
        &self,
        plan: &UpdatePlan,
        applied: &mut Applied,
    ) -> Result<(), InstanceError> {
        let name = plan.name.as_str();
        // The root disk's quota first: a pool that refuses it changes nothing else.
        if let Some((_, size)) = plan.root_size {
            applied.root_size = true;
            self.storage
                .apply_root_quota(
                    crate::storage::instance_pool(&plan.row.config),
                    &self.paths.container(name),
                    size,
                )
                .await?;
            tracing::info!(instance = %name, size = ?size, "root disk quota changed");
        }
        // Proxies (a port in use is the likeliest failure).
        if let Some(init) = plan.init
            && plan.proxies_changed
        {
            let previous = self.proxies.specs(name);
            self.apply_proxies(name, &init, &plan.proxies).await?;
            applied.previous_proxies = Some(previous);
        }
        match plan.init {
            None => {
                applied.nics_touched = true;
                self.networks
                    .sync_leases(name, &plan.nics, &plan.config)
                    .await?;
            }
            Some(init) if !plan.nic_change.is_empty() => {
                applied.nics_touched = true;
                self.hotplug_nics(name, &init, &plan.nics, &plan.config, &plan.nic_change)
                    .await?;
            }
            Some(_) => {}
        }
        if let Some(init) = plan.init
            && !plan.disk_change.is_empty()
        {
            let done = self.hotplug_disks(name, &init, &plan.disk_change).await?;
            applied.disks = Some(done);
        }
        if plan.init.is_some() && plan.new_limits != plan.old_limits {
            applied.limits = true;
            let (n, limits) = (name.to_string(), plan.new_limits.clone());
            self.blocking_worker(move |w| w.apply_limits(&n, &limits))
                .await?;
            tracing::info!(instance = %name, "limits changed live");
        }
        Ok(())
    }

    /// Put back what [`Instances::apply_update`] applied, in reverse order. Best effort:
    /// a step that fails is logged and the others still run.
    pub(super) async fn undo_update(&self, plan: &UpdatePlan, applied: Applied) {
        let name = plan.name.as_str();
        if applied.limits {
            let (n, limits) = (name.to_string(), plan.old_limits.clone());
            if let Err(e) = self
                .blocking_worker(move |w| w.apply_limits(&n, &limits))
                .await
            {
                tracing::warn!(instance = %name, error = %e, "could not restore the limits");
            }
        }
        if let Some(done) = applied.disks
            && let Some(init) = plan.init
        {
            self.undo_hotplug_disks(name, &init, done).await;
        }
        if applied.nics_touched
            && let Err(e) = self.restore_nics(plan).await
        {
            tracing::warn!(instance = %name, error = %e, "could not restore NICs and leases");
        }
        if let Some(previous) = applied.previous_proxies
            && let Some(init) = plan.init
            && let Err(e) = self.apply_proxies(name, &init, &previous).await
        {
            tracing::warn!(instance = %name, error = %e, "could not restore proxy devices");
        }
        if applied.root_size
            && let Some((old, _)) = plan.root_size
            && let Err(e) = self
                .storage
                .apply_root_quota(
                    crate::storage::instance_pool(&plan.row.config),
                    &self.paths.container(name),
                    old,
                )
                .await
        {
            tracing::warn!(instance = %name, error = %e, "could not restore the root disk quota");
        }
    }

    /// Put back the NICs and leases of the record a plan started from: a hot-plugged change
    /// is reversed in the running container; leases follow the old devices.
    async fn restore_nics(&self, plan: &UpdatePlan) -> Result<(), InstanceError> {
        let row = &plan.row;
        let old = self
            .check_devices_with(&plan.before, &row.name, &row.profiles, &row.devices)
            .await?;
        match plan.init {
            Some(init) => {
                let (was, _) =
                    split_proxies(network::expand(&plan.before, &row.profiles, &row.devices));
                let (will, _) =
                    split_proxies(network::expand(&plan.after, &plan.profiles, &plan.devices));
                let back = NicChange::between(&will, &was);
                if back.is_empty() {
                    return Ok(());
                }
                self.hotplug_nics(&row.name, &init, &old.nics, &row.config, &back)
                    .await
            }
            None => Ok(self
                .networks
                .sync_leases(&row.name, &old.nics, &row.config)
                .await?),
        }
    }

    /// Apply a NIC change to a running instance: interfaces of removed or changed devices
    /// go (their veths with them), leases follow the new devices, new or changed devices get
    /// their veth made in the container's netns. A failure removes what was added.
    async fn hotplug_nics(
        &self,
        name: &str,
        init: &InitProcess,
        nics: &[ResolvedNic],
        cfg: &Config,
        change: &NicChange,
    ) -> Result<(), InstanceError> {
        let (i, gone) = (*init, change.removed_interfaces.clone());
        self.blocking_worker(move |w| w.remove_nics(&i, &gone))
            .await?;
        self.networks.sync_leases(name, nics, cfg).await?;
        let plan = self.networks.plan_start(name, nics, cfg).await?;
        let added: Vec<String> = nics
            .iter()
            .filter(|r| change.added.contains(&r.nic.device))
            .map(|r| r.nic.name.clone())
            .collect();
        let specs: Vec<_> = plan
            .nics
            .into_iter()
            .filter(|s| added.contains(&s.name))
            .collect();
        let i = *init;
        let made = self
            .blocking_worker(move |w| w.setup_nics(&i, &specs))
            .await;
        if let Err(e) = made {
            let i = *init;
            let _ = self
                .blocking_worker(move |w| w.remove_nics(&i, &added))
                .await;
            return Err(e);
        }
        tracing::info!(instance = %name, added = ?change.added, removed = ?change.removed_interfaces, "NICs changed live");
        Ok(())
    }
}
