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
    /// Where a pulled image came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_source: Option<ImageSource>,
}

/// The server an image was pulled from (Incus' `update_source`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageSource {
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub image_type: String,
}

/// `PUT`/`PATCH /1.0/images/{fingerprint}`: what an image's owner may change. Omitted
/// fields are kept by `PATCH` (and reset by `PUT`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagePut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_update: Option<bool>,
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

/// `POST /1.0/images` with a JSON body: make an image from a source (`ctl publish` sends
/// `{"source": {"type": "instance", "name": "c1"}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagesPost {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImagesPostSource>,
    /// Aliases to point at the new image.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub aliases: Vec<ImageAlias>,
    /// Properties, over those the source brings.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub public: bool,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub filename: String,
    /// `gzip` (the default), `xz`, `zstd` or `none`.
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub compression_algorithm: String,
}

/// Where a new image comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImagesPostSource {
    /// `instance`, `snapshot` (`name` is `INSTANCE/SNAPSHOT`), or `image` to copy from an
    /// image server (others, like `url`, are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The instance name, or `INSTANCE/SNAPSHOT`.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub name: String,
    /// For `image`: the server's URL, its protocol (`simplestreams`), `mode` (`pull`) and
    /// the alias or fingerprint there.
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub server: String,
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mode: String,
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub alias: String,
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub fingerprint: String,
}

/// `POST /1.0/images/aliases`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageAliasesPost {
    pub name: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    /// The fingerprint the alias points at.
    pub target: String,
    #[serde(
        rename = "type",
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_post_takes_go_nulls() -> Result<(), serde_json::Error> {
        // What LXD's `lxc publish` sends.
        let req: ImagesPost = serde_json::from_str(
            r#"{"auto_update":false,"properties":null,"public":false,"expires_at":"0001-01-01T00:00:00Z",
                "profiles":null,"filename":"","source":{"type":"instance","name":"c1"},
                "compression_algorithm":"","aliases":null}"#,
        )?;
        assert_eq!(req.source.map(|s| s.name), Some("c1".to_string()));
        assert!(req.aliases.is_empty() && req.properties.is_empty());
        let alias: ImageAliasesPost =
            serde_json::from_str(r#"{"name":"a","target":"f","description":null,"type":null}"#)?;
        assert_eq!(alias.target, "f");
        Ok(())
    }
}
