//! The trust store's row type. The `server_config` and `certificates` tables are read and
//! written through [`super::store::Store`], which keeps them in SQLite or, for a cluster, in
//! PostgreSQL.

/// One row of `certificates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub fingerprint: String,
    /// `client` or `metrics`.
    pub kind: String,
    pub name: String,
    /// PEM.
    pub certificate: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub description: String,
}
