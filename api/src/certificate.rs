//! The trust store (`/1.0/certificates`) and the server's own configuration (`PUT /1.0`),
//! in Incus' shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The writable part of a trusted certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatePut {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub name: String,
    /// `client` (the whole API) or `metrics` (`/1.0/metrics` only).
    #[serde(rename = "type", default, deserialize_with = "crate::null_as_default")]
    pub kind: String,
    /// Restricted to `projects`.
    #[serde(default)]
    pub restricted: bool,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub projects: Vec<String>,
    /// The certificate, PEM (or base64 DER on input).
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub certificate: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
}

/// A trusted certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    #[serde(flatten)]
    pub put: CertificatePut,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
}

/// `POST /1.0/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesPost {
    #[serde(flatten)]
    pub put: CertificatePut,
    /// Ask for a one-time token (an operation of class `token`) instead of adding a
    /// certificate.
    #[serde(default)]
    pub token: bool,
    /// A token from `token: true`: the caller's TLS certificate is added.
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub trust_token: String,
    /// What LXD 5.0's clients send a token's secret in.
    #[serde(default, deserialize_with = "crate::null_as_default", skip_serializing)]
    pub password: String,
}

/// What a client needs to join with a token: base64 of this JSON is the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAddToken {
    pub client_name: String,
    /// The server certificate's fingerprint, to check before sending the secret.
    pub fingerprint: String,
    pub addresses: Vec<String>,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `PUT /1.0` and `PATCH /1.0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPut {
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: BTreeMap<String, String>,
}

/// `POST /1.0/ui/login-links`: a single-use link that logs a browser into the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiLoginLink {
    pub url: String,
    pub token: String,
    pub expires_at: String,
}
