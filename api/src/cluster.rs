//! Clustering (`/1.0/cluster`, `/1.0/cluster/members`), in Incus' shapes, with one ctl
//! extension: the PostgreSQL URL that holds the cluster's state (`database`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /1.0/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// This member's name (empty when not clustered).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub server_name: String,
    #[serde(default)]
    pub enabled: bool,
    /// Per-member keys a joining server must set (ctl has none: always empty).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub member_config: Vec<serde_json::Value>,
}

/// `PUT /1.0/cluster`: enable clustering on a standalone server (`server_name`, `enabled`,
/// `database`), or join one (`server_name`, `enabled`, `cluster_token`, `server_address`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPut {
    #[serde(flatten)]
    pub cluster: Cluster,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub cluster_address: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub cluster_certificate: String,
    /// Where the other members reach this one (`IP[:PORT]`); `core.https_address` when
    /// empty.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub server_address: String,
    /// A join token from `ctl cluster add NAME`.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub cluster_token: String,
    /// ctl: the PostgreSQL URL of the cluster's state (`postgres://USER:PASSWORD@HOST/DB`),
    /// when enabling. A joining server takes it from the token.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub database: String,
}

/// `POST /1.0/cluster/members`: ask for a join token for a new member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMembersPost {
    pub server_name: String,
}

/// A join token: base64 of this JSON is what `ctl cluster add` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMemberJoinToken {
    pub server_name: String,
    /// The certificate fingerprint of the member that issued the token.
    pub fingerprint: String,
    /// Where that member listens.
    pub addresses: Vec<String>,
    pub secret: String,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: String,
    /// ctl: the PostgreSQL URL (with its password) of the cluster's state.
    #[serde(default)]
    pub database: String,
}

/// The writable part of a member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMemberPut {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub roles: Vec<String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub failure_domain: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub groups: Vec<String>,
}

/// A member (`GET /1.0/cluster/members/NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    #[serde(flatten)]
    pub put: ClusterMemberPut,
    pub server_name: String,
    /// `https://ADDRESS`.
    pub url: String,
    /// Whether the member holds state (ctl: every member reaches the database).
    #[serde(default)]
    pub database: bool,
    /// `Online`, `Offline` or `Evacuated`.
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub architecture: String,
}

/// `POST /1.0/cluster/members/NAME/state`: `evacuate` or `restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMemberStatePost {
    pub action: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub mode: String,
}

/// `POST /1.0/cluster/members/NAME`: rename (refused by ctl).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMemberPost {
    pub server_name: String,
}
