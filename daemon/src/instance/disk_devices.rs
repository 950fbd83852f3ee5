//! `disk` devices of an instance, the service side: a checked device ([`super::disks`])
//! resolved against the host (the source exists or the device is skipped, it is not in a
//! forbidden place, the block device behind it for I/O limits), the mount entries and
//! I/O rules of a start, and the mounts added and removed live by an update.
//!
//! Custom storage volumes (`pool=P source=VOLUME`) resolve through the storage service to
//! their directory in the pool, and are always mounted id-mapped (their files are kept in
//! the container's own ids).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::disks::{self, DiskSource, MountDisk};
use super::{InstanceError, Instances};
use crate::network;
use crate::worker::spec::DiskMount;
use crate::worker::{InitProcess, IoThrottle, disk};

/// Where the kernel lists block devices by number.
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// A mount disk checked against the host.
#[derive(Debug, Clone)]
pub(super) struct ResolvedDisk {
    pub(super) disk: MountDisk,
    /// What to mount; `None`: the source is missing and the device not required (skipped).
    pub(super) mount: Option<DiskMount>,
    /// The block device its I/O limits apply to (only when it has limits).
    pub(super) block: Option<(u32, u32)>,
}

/// The mounts of resolved disks, in mount order (parents first).
pub(super) fn mounts(disks: &[ResolvedDisk]) -> Vec<DiskMount> {
    disks.iter().filter_map(|d| d.mount.clone()).collect()
}

/// The cgroup I/O rules of resolved disks.
pub(super) fn throttles(disks: &[ResolvedDisk]) -> Vec<IoThrottle> {
    let with_dev: Vec<_> = disks
        .iter()
        .filter(|d| d.mount.is_some())
        .filter_map(|d| Some((d.block?, d.disk.limits)))
        .collect();
    disks::merge_throttles(&with_dev)
}

/// The `disk` devices (root disk included) of a device map, as given.
fn disk_entries(devices: &network::Devices) -> network::Devices {
    devices
        .iter()
        .filter(|(_, d)| d.get("type").map(String::as_str) == Some("disk"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How the mounts of a running instance change in an update.
#[derive(Debug, Default)]
pub(super) struct DiskChange {
    /// Targets of devices removed or changed (with what was mounted, to put it back),
    /// unmounted first.
    pub(super) removed: Vec<(String, Option<DiskMount>)>,
    /// Devices new or changed.
    pub(super) added: Vec<DiskMount>,
}

impl DiskChange {
    pub(super) fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// What [`Instances::hotplug_disks`] did, for an undo.
#[derive(Debug, Default)]
pub(super) struct DisksApplied {
    unmounted: Vec<(String, Option<DiskMount>)>,
    mounted: Vec<String>,
}

impl Instances {
    /// The host directories of the custom volumes `parsed` disks name (each must exist:
    /// 404 for an unknown pool or volume becomes the device's 400).
    async fn volume_dirs(
        &self,
        parsed: &[MountDisk],
    ) -> Result<BTreeMap<(String, String), PathBuf>, InstanceError> {
        let mut out = BTreeMap::new();
        for d in parsed {
            if let DiskSource::Volume { pool, volume } = &d.source {
                let dir =
                    self.storage.volume_path(pool, volume).await.map_err(|e| {
                        InstanceError::Invalid(format!("device \"{}\": {e}", d.device))
                    })?;
                out.insert((pool.clone(), volume.clone()), dir);
            }
        }
        Ok(out)
    }

    /// Check one mount disk against the host.
    fn resolve_disk(
        d: &MountDisk,
        state_dir: &Path,
        volumes: &BTreeMap<(String, String), PathBuf>,
    ) -> Result<ResolvedDisk, InstanceError> {
        let bad =
            |reason: String| InstanceError::Invalid(format!("device \"{}\": {reason}", d.device));
        let (host, volume) = match &d.source {
            DiskSource::Host(p) => (p.clone(), false),
            DiskSource::Volume { pool, volume } => (
                volumes
                    .get(&(pool.clone(), volume.clone()))
                    .cloned()
                    .ok_or_else(|| bad(format!("volume \"{volume}\" of pool \"{pool}\"")))?,
                true,
            ),
        };
        let info = disk::inspect_source(&host)
            .map_err(|e| bad(format!("source {}: {e}", host.display())))?;
        let Some(info) = info else {
            if d.required {
                return Err(bad(format!(
                    "source {} does not exist (with required=false the device is skipped \
                     while it is missing)",
                    host.display()
                )));
            }
            return Ok(ResolvedDisk {
                disk: d.clone(),
                mount: None,
                block: None,
            });
        };
        if volume {
            // A volume lives in its pool (perhaps in the state directory): it must be that
            // very directory, not something a link made of it.
            let expected = host
                .parent()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .zip(host.file_name())
                .map(|(p, n)| p.join(n));
            if expected.as_ref() != Some(&info.canonical) || info.file {
                return Err(bad(format!(
                    "volume directory {} is not a plain directory",
                    host.display()
                )));
            }
        } else {
            disks::check_source_location(&info.canonical, state_dir).map_err(bad)?;
        }
        let block = match d.limits.is_empty() {
            true => None,
            false => Some(
                disk::block_device(Path::new(SYS_DEV_BLOCK), info.dev)
                    .map_err(|e| bad(format!("source {}: {e}", info.canonical.display())))?,
            ),
        };
        Ok(ResolvedDisk {
            mount: Some(DiskMount {
                source: info.canonical,
                target: d.target(),
                file: info.file,
                readonly: d.readonly,
                // A volume's files are kept in the container's own ids: always id-mapped.
                shift: d.shift || volume,
                recursive: d.recursive,
                propagation: d.propagation,
            }),
            disk: d.clone(),
            block,
        })
    }

    /// Check the `disk` devices of an expanded device map against the host (a 400 for any
    /// problem, before anything is made).
    pub(super) async fn resolve_disks(
        &self,
        expanded: &network::Devices,
    ) -> Result<Vec<ResolvedDisk>, InstanceError> {
        let parsed =
            disks::parse_all(expanded).map_err(|e| InstanceError::Invalid(e.to_string()))?;
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let volumes = self.volume_dirs(&parsed).await?;
        let state_dir = std::fs::canonicalize(&self.paths.dir).unwrap_or(self.paths.dir.clone());
        parsed
            .iter()
            .map(|d| Self::resolve_disk(d, &state_dir, &volumes))
            .collect()
    }

    /// The disks of the record an update starts from, as far as they still resolve (for
    /// the I/O rules and remounts an undo puts back).
    pub(super) async fn resolve_disks_lenient(
        &self,
        expanded: &network::Devices,
    ) -> Vec<ResolvedDisk> {
        let state_dir = std::fs::canonicalize(&self.paths.dir).unwrap_or(self.paths.dir.clone());
        let parsed = disks::parse_all(expanded).unwrap_or_default();
        let mut volumes = BTreeMap::new();
        for d in &parsed {
            if let DiskSource::Volume { pool, volume } = &d.source
                && let Ok(dir) = self.storage.volume_path(pool, volume).await
            {
                volumes.insert((pool.clone(), volume.clone()), dir);
            }
        }
        parsed
            .iter()
            .filter_map(|d| Self::resolve_disk(d, &state_dir, &volumes).ok())
            .collect()
    }

    /// The mounts a running instance gains and loses going from devices `was` to `will`
    /// (expanded), `old` and `new` their resolved disks.
    pub(super) fn disk_change(
        was: &network::Devices,
        will: &network::Devices,
        old: &[ResolvedDisk],
        new: &[ResolvedDisk],
    ) -> DiskChange {
        let (was, will) = (disk_entries(was), disk_entries(will));
        let changed = |a: &BTreeMap<_, _>, b: &BTreeMap<_, _>, k: &String| a.get(k) != b.get(k);
        let old_by_name: BTreeMap<&str, &ResolvedDisk> =
            old.iter().map(|d| (d.disk.device.as_str(), d)).collect();
        let mut change = DiskChange::default();
        // Targets come from the devices as given, so a mount whose source vanished since
        // is still removed.
        for d in disks::parse_all(&was).unwrap_or_default() {
            if changed(&was, &will, &d.device) {
                let mounted = old_by_name
                    .get(d.device.as_str())
                    .and_then(|r| r.mount.clone());
                change.removed.push((d.target(), mounted));
            }
        }
        for d in new {
            if changed(&was, &will, &d.disk.device)
                && let Some(m) = &d.mount
            {
                change.added.push(m.clone());
            }
        }
        change
    }

    /// Apply a disk change to a running instance: unmount, then mount. A failure puts back
    /// what this call did.
    pub(super) async fn hotplug_disks(
        &self,
        name: &str,
        init: &InitProcess,
        change: &DiskChange,
    ) -> Result<DisksApplied, InstanceError> {
        let mut done = DisksApplied::default();
        let mut result = Ok(());
        for (target, mounted) in &change.removed {
            let (i, t) = (*init, target.clone());
            result = self.blocking_worker(move |w| w.unmount_disk(&i, &t)).await;
            if result.is_err() {
                break;
            }
            done.unmounted.push((target.clone(), mounted.clone()));
        }
        if result.is_ok() {
            for m in &change.added {
                let (i, disk) = (*init, m.clone());
                result = self.blocking_worker(move |w| w.mount_disk(&i, &disk)).await;
                if result.is_err() {
                    break;
                }
                done.mounted.push(m.target.clone());
            }
        }
        match result {
            Ok(()) => {
                tracing::info!(
                    instance = %name,
                    added = change.added.len(),
                    removed = change.removed.len(),
                    "disk devices changed live"
                );
                Ok(done)
            }
            Err(e) => {
                self.undo_hotplug_disks(name, init, done).await;
                Err(e)
            }
        }
    }

    /// Put back what [`Instances::hotplug_disks`] did (best effort, logged).
    pub(super) async fn undo_hotplug_disks(
        &self,
        name: &str,
        init: &InitProcess,
        done: DisksApplied,
    ) {
        for target in done.mounted.into_iter().rev() {
            let i = *init;
            let t = target.clone();
            if let Err(e) = self.blocking_worker(move |w| w.unmount_disk(&i, &t)).await {
                tracing::warn!(instance = %name, target = %target, error = %e, "could not unmount");
            }
        }
        for (target, mounted) in done.unmounted.into_iter().rev() {
            let Some(m) = mounted else { continue };
            let i = *init;
            if let Err(e) = self.blocking_worker(move |w| w.mount_disk(&i, &m)).await {
                tracing::warn!(instance = %name, target = %target, error = %e, "could not remount");
            }
        }
    }
}
