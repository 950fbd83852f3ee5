//! What publishing needs from an instance: holding it stopped (its lifecycle lock, so it
//! cannot start while its layers are read) and where its layers are; or, to publish one of
//! its snapshots, holding the instance's lock (running or not: a snapshot's files never
//! change, but the lock keeps a delete, rename or expiry from removing them meanwhile)
//! and reading the snapshot's upper layer over the instance's image. The image itself is
//! made by [`crate::images::ImageStore::publish`].

use std::collections::BTreeMap;

use tokio::sync::OwnedMutexGuard;

use super::{InstanceError, Instances};
use crate::images::transfer::PublishSource;
use crate::paths::overlay_dirs;

/// A stopped instance held still: it cannot start, change or be deleted until this is
/// dropped.
pub struct HeldInstance {
    pub name: String,
    pub source: PublishSource,
    _guard: OwnedMutexGuard<()>,
}

impl Instances {
    /// Hold instance `name` stopped for publishing. A running (or frozen) instance is a
    /// `BadState` ("stop it first").
    pub async fn hold_stopped(&self, name: &str) -> Result<HeldInstance, InstanceError> {
        let guard = self.lock_for(name).lock_owned().await;
        let row = self.row(name).await?;
        self.ensure_stopped(&row, "is running: stop it first")?;
        let (upper, _, _) = overlay_dirs(&self.paths.container(name));
        let properties: BTreeMap<String, String> = row
            .config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("image.")?.to_string(), v.clone())))
            .collect();
        Ok(HeldInstance {
            name: row.name.clone(),
            source: PublishSource {
                upper,
                lower: self.images.rootfs(&row.image_fingerprint),
                upper_ids: super::idmap::from_json(row.config.get(super::idmap::VOLATILE_ON_DISK)),
                architecture: row.architecture.clone(),
                properties,
            },
            _guard: guard,
        })
    }

    /// Hold snapshot `snapshot` of instance `name` for publishing: its upper layer (in the
    /// id map it was taken in) over the instance's image, its `image.*` keys as the
    /// properties. The instance's lock is held until the result is dropped, so its
    /// lifecycle changes (start, stop, snapshot changes) wait for the publish.
    pub async fn hold_snapshot(
        &self,
        name: &str,
        snapshot: &str,
    ) -> Result<HeldInstance, InstanceError> {
        let guard = self.lock_for(name).lock_owned().await;
        let row = self.row(name).await?;
        let s = self.snapshot_row(name, snapshot).await?;
        let properties: BTreeMap<String, String> = s
            .config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("image.")?.to_string(), v.clone())))
            .collect();
        Ok(HeldInstance {
            name: row.name.clone(),
            source: PublishSource {
                upper: overlay_dirs(&self.snapshot_dir(name, snapshot)).0,
                lower: self.images.rootfs(&row.image_fingerprint),
                upper_ids: super::idmap::from_json(s.config.get(super::idmap::VOLATILE_ON_DISK)),
                architecture: row.architecture.clone(),
                properties,
            },
            _guard: guard,
        })
    }
}
