//! What publishing needs from an instance: holding it stopped (its lifecycle lock, so it
//! cannot start while its layers are read) and where its layers are. The image itself is
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
}
