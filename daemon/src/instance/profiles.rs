//! Profiles: the `default` profile (the only one for now) whose devices every instance
//! that applies it inherits. Its config must stay empty until profile config is applied
//! at start; its devices are checked like an instance's and take effect at the next start
//! of each instance using it.

use ctl_api::{Profile, ProfilePut};

use super::{InstanceError, Instances};
use crate::db;
use crate::network::{self, NetworkError};

impl Instances {
    /// Every profile.
    pub async fn profiles(&self) -> Result<Vec<Profile>, InstanceError> {
        let rows = db::profiles::list(&self.db).await?;
        let instances = db::instances::list(&self.db).await?;
        Ok(rows.into_iter().map(|p| to_api(p, &instances)).collect())
    }

    /// One profile.
    pub async fn profile(&self, name: &str) -> Result<Profile, InstanceError> {
        let row = db::profiles::get(&self.db, name)
            .await?
            .ok_or_else(|| InstanceError::ProfileNotFound(name.to_string()))?;
        let instances = db::instances::list(&self.db).await?;
        Ok(to_api(row, &instances))
    }

    /// Apply a PUT (`patch == false`: replace) or PATCH (merge) to a profile.
    pub async fn update_profile(
        &self,
        name: &str,
        put: ProfilePut,
        patch: bool,
    ) -> Result<(), InstanceError> {
        let mut row = db::profiles::get(&self.db, name)
            .await?
            .ok_or_else(|| InstanceError::ProfileNotFound(name.to_string()))?;
        let config = match (put.config, patch) {
            (Some(c), false) => c,
            (Some(c), true) => {
                let mut merged = row.config.clone();
                merged.extend(c);
                merged
            }
            (None, _) => row.config.clone(),
        };
        if let Some(key) = config.iter().find(|(_, v)| !v.is_empty()).map(|(k, _)| k) {
            return Err(InstanceError::Invalid(format!(
                "profile config is not supported yet (\"{key}\"): set it on the instances"
            )));
        }
        let devices = match (put.devices, patch) {
            (Some(d), false) => d,
            (Some(d), true) => {
                let mut merged = row.devices.clone();
                merged.extend(d);
                merged.retain(|_, v| !v.is_empty());
                merged
            }
            (None, _) => row.devices.clone(),
        };
        let nics = network::config::devices(&devices).map_err(NetworkError::from)?;
        if let Some(n) = nics.iter().find(|n| n.ipv4.is_some()) {
            return Err(InstanceError::Invalid(format!(
                "device \"{}\": a static ipv4.address belongs on an instance, not a profile",
                n.device
            )));
        }
        // Networks and parent bridges must exist (checked as for an instance of that name).
        self.networks
            .resolve_nics(&format!("profile:{name}"), &devices)
            .await?;
        row.config = Default::default();
        row.devices = devices;
        if let Some(d) = put.description {
            row.description = d;
        }
        db::profiles::update(&self.db, &row).await?;
        tracing::info!(profile = %name, "profile updated");
        Ok(())
    }
}

fn to_api(p: db::ProfileRow, instances: &[db::InstanceRow]) -> Profile {
    let used_by = instances
        .iter()
        .filter(|i| i.profiles.contains(&p.name))
        .map(|i| format!("/1.0/instances/{}", i.name))
        .collect();
    Profile {
        name: p.name,
        description: p.description,
        config: p.config,
        devices: p.devices,
        used_by,
        project: "default".into(),
    }
}
