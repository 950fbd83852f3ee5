//! Image types (`/1.0/images`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An alias as listed inside an [`Image`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAlias {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// An image as `GET /1.0/images/{fingerprint}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub fingerprint: String,
    #[serde(default)]
    pub filename: String,
    /// Size of the unpacked image in bytes.
    pub size: i64,
    pub architecture: String,
    pub created_at: String,
    pub uploaded_at: String,
    #[serde(default)]
    pub last_used_at: String,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub cached: bool,
    #[serde(default)]
    pub auto_update: bool,
    #[serde(default)]
    pub aliases: Vec<ImageAlias>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub profiles: Vec<String>,
}

/// `GET /1.0/images/aliases/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAliasesEntry {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The fingerprint the alias points at.
    pub target: String,
    #[serde(rename = "type")]
    pub kind: String,
}
