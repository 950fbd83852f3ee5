//! Profile types (`/1.0/profiles`), Incus-shaped.

use serde::{Deserialize, Serialize};

use crate::instance::{ConfigMap, DeviceMap};

/// A profile (`GET /1.0/profiles/{name}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
    #[serde(default)]
    pub used_by: Vec<String>,
    #[serde(default)]
    pub project: String,
}

/// Body of `PUT /1.0/profiles/{name}` (and `PATCH`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceMap>,
}

/// Body of `POST /1.0/profiles` (create).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilesPost {
    pub name: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: ConfigMap,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub devices: DeviceMap,
}

/// Body of `POST /1.0/profiles/{name}` (rename).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePost {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_from_go_clients_takes_null_maps() -> Result<(), serde_json::Error> {
        let p: ProfilesPost =
            serde_json::from_str(r#"{"name":"p1","description":"","config":null,"devices":null}"#)?;
        assert_eq!(p.name, "p1");
        assert!(p.config.is_empty() && p.devices.is_empty());
        let p: ProfilesPost =
            serde_json::from_str(r#"{"name":"p2","config":{"limits.memory":"64MiB"}}"#)?;
        assert_eq!(
            p.config.get("limits.memory").map(String::as_str),
            Some("64MiB")
        );
        Ok(())
    }
}
