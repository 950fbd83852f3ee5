//! The cluster-global store: the server configuration, the trust store, and the cluster's
//! own tables (members, the leader lease, join tokens, instance placement, image holders).
//!
//! A standalone server keeps them in its SQLite database; a cluster keeps them in one
//! PostgreSQL database every member talks to. [`Store`] is the one seam: each method is
//! written once inside [`dispatch!`], which expands into a `match` with the same body in
//! both arms, so the body is compiled against each backend's native sqlx driver.
//!
//! The shared SQL text keeps to what both databases accept: `$1` placeholders, `ON
//! CONFLICT … DO …`, `RETURNING`, integer flags stored as BIGINT 0/1 and compared
//! explicitly. What differs is spliced in per backend from a [`Dialect`]: the clock
//! (`{now}`: milliseconds since the epoch by the **database's** clock, so members with
//! skewed clocks agree on heartbeats, lease expiry and token expiry), how a writing
//! transaction starts, and the table locks PostgreSQL needs where SQLite's single writer
//! already serializes. Results whose order matters are sorted in Rust: collations differ.

mod events;
mod images;
mod instances;
mod members;
mod profiles;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::trust::CertificateRow;
use super::{DbError, Pool, is_unique_violation};

/// The cluster-global store over one of the two backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Whether a cluster member takes new instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Online,
    Evacuated,
}

impl MemberState {
    /// The stored text: `online` or `evacuated`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Online => "online",
            MemberState::Evacuated => "evacuated",
        }
    }

    fn parse(s: &str) -> Result<MemberState, DbError> {
        match s {
            "online" => Ok(MemberState::Online),
            "evacuated" => Ok(MemberState::Evacuated),
            other => Err(DbError::Sqlx(sqlx::Error::Decode(
                format!("unknown cluster member state {other:?}").into(),
            ))),
        }
    }
}

/// A server joining the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMember {
    pub name: String,
    /// `host:port` of its HTTPS listener.
    pub address: String,
    /// SHA-256 of its server certificate.
    pub fingerprint: String,
    /// Its server certificate, PEM.
    pub certificate: String,
    pub architecture: String,
    pub description: String,
}

/// One row of `cluster_members`, with its heartbeat's age by the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub address: String,
    pub fingerprint: String,
    pub certificate: String,
    pub architecture: String,
    pub description: String,
    pub state: MemberState,
    /// The heartbeat is younger than the `offline_after_ms` asked with.
    pub online: bool,
    pub heartbeat_age_ms: i64,
    pub created_ms: i64,
}

/// The leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Empty before anyone took it.
    pub holder: String,
    /// Grows by one each time the lease changes hands: the fencing token.
    pub term: i64,
    /// Until it expires; zero or less: expired.
    pub remaining_ms: i64,
}

/// Which member holds an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRow {
    pub name: String,
    pub member: String,
    pub evacuated: bool,
}

/// Everything a server writes when it founds a cluster.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub config: BTreeMap<String, String>,
    pub certificates: Vec<CertificateRow>,
    /// The founding member.
    pub member: NewMember,
    /// Its instances.
    pub instances: Vec<String>,
    /// Its images: fingerprint and aliases.
    pub images: Vec<(String, Vec<String>)>,
    /// Its profiles, which become the cluster's.
    pub profiles: Vec<ctl_api::ProfilesPost>,
}

/// Why an instance could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("instance \"{0}\" already exists")]
    Taken(String),
    #[error("no cluster member is online to place the instance on")]
    NoMember,
    #[error("cluster member \"{0}\" not found")]
    UnknownMember(String),
    #[error("cluster member \"{0}\" is offline")]
    Offline(String),
    #[error("cluster member \"{0}\" is evacuated")]
    Evacuated(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for PlaceError {
    fn from(e: sqlx::Error) -> PlaceError {
        PlaceError::Db(e.into())
    }
}

/// What differs between the backends, spliced into the shared SQL text.
struct Dialect {
    /// Milliseconds since the epoch by the database's clock: replaces `{now}`.
    now: &'static str,
    /// Starts a transaction that writes. SQLite takes the write lock at once: a deferred
    /// transaction that reads first fails with SQLITE_BUSY, not waits, when it upgrades
    /// while another connection writes.
    begin_write: &'static str,
    /// Locks `{table}` against concurrent writers (and this same lock) until the end of
    /// the transaction; SQLite needs none, `begin_write` already holds the only write lock.
    lock: Option<&'static str>,
}

const SQLITE: Dialect = Dialect {
    now: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    begin_write: "BEGIN IMMEDIATE",
    lock: None,
};

const POSTGRES: Dialect = Dialect {
    now: "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    begin_write: "BEGIN",
    lock: Some("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"),
};

impl Dialect {
    /// `text` with this backend's clock in place of `{now}`.
    fn sql(&self, text: &'static str) -> AssertSqlSafe<String> {
        // Only our own constants are spliced in: the text stays static SQL.
        AssertSqlSafe(text.replace("{now}", self.now))
    }

    /// The statement that locks `table` for the rest of the transaction, if this backend
    /// needs one.
    fn lock(&self, table: &'static str) -> Option<AssertSqlSafe<String>> {
        self.lock
            .map(|l| AssertSqlSafe(l.replace("{table}", table)))
    }
}

/// Run `$body` against the backend's pool, bound to `$pool`, with its [`Dialect`] bound to
/// `$d`: one `match` arm per backend, the same body in both.
macro_rules! dispatch {
    ($store:expr, $pool:ident, $d:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => {
                let $d = &$crate::db::store::SQLITE;
                $body
            }
            Store::Postgres($pool) => {
                let $d = &$crate::db::store::POSTGRES;
                $body
            }
        }
    };
}
use dispatch;

/// The statement that inserts member `$m` (a [`NewMember`]), its values bound in the
/// order of [`INSERT_MEMBER`]: one place for that order.
macro_rules! insert_member {
    ($d:expr, $m:expr) => {
        sqlx::query($d.sql($crate::db::store::INSERT_MEMBER))
            .bind(&$m.name)
            .bind(&$m.address)
            .bind(&$m.fingerprint)
            .bind(&$m.certificate)
            .bind(&$m.architecture)
            .bind(&$m.description)
    };
}
use insert_member;

/// Record on `$tx` that `$member` holds image `$fingerprint` and point `$aliases` at it.
macro_rules! record_image {
    ($tx:expr, $fingerprint:expr, $member:expr, $aliases:expr) => {{
        sqlx::query($crate::db::store::INSERT_IMAGE_HOLDER)
            .bind($fingerprint)
            .bind($member)
            .execute(&mut *$tx)
            .await?;
        for alias in $aliases {
            sqlx::query($crate::db::store::UPSERT_IMAGE_ALIAS)
                .bind(alias)
                .bind($fingerprint)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
use record_image;

/// `Conflict(what)` for a unique violation, the database error otherwise.
fn conflict_on_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> DbError {
    if is_unique_violation(&e) {
        DbError::Conflict(what())
    } else {
        e.into()
    }
}

fn projects_json(projects: &[String]) -> String {
    serde_json::to_string(projects).unwrap_or_else(|_| "[]".into())
}

type CertificateTuple = (String, String, String, String, i64, String, String);

fn certificate_from(t: CertificateTuple) -> Result<CertificateRow, DbError> {
    let (fingerprint, kind, name, certificate, restricted, projects, description) = t;
    Ok(CertificateRow {
        fingerprint,
        kind,
        name,
        certificate,
        restricted: restricted != 0,
        projects: serde_json::from_str(&projects).map_err(|source| DbError::Json {
            column: "projects",
            source,
        })?,
        description,
    })
}

const INSERT_CERTIFICATE: &str = "INSERT INTO certificates \
     (fingerprint, type, name, certificate, restricted, projects, description) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl Store {
    /// The store in the server's own SQLite database (migrated by [`super::open`]).
    pub fn sqlite(pool: Pool) -> Store {
        Store::Sqlite(pool)
    }

    /// A PostgreSQL store for `url` (`postgres://user:password@host:port/db`), connecting
    /// on first use: at most 8 connections, and a request waits at most 2 s for one, so a
    /// database that is down fails requests fast instead of hanging them. An invalid URL
    /// is an error. Call it inside the tokio runtime (the pool spawns its upkeep task).
    pub fn postgres_lazy(url: &str) -> Result<Store, DbError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(DbError::Sqlx(sqlx::Error::Configuration(
                "the database URL must start with postgres:// or postgresql://".into(),
            )));
        }
        let options = PgConnectOptions::from_str(url)?.application_name("ctld");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(Store::Postgres(pool))
    }

    /// Bring the PostgreSQL schema up to date (`migrations-pg/`). SQLite's is, by
    /// [`super::open`].
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(pool) => {
                let mut migrator = sqlx::migrate!("../migrations-pg");
                // Members of different versions share the database: an older one lives
                // with the tables a newer one added.
                migrator.set_ignore_missing(true);
                migrator.run(pool).await?;
                Ok(())
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Close the pool: wait for the connections in use to come back, then close them all.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(pool) => pool.close().await,
            Store::Postgres(pool) => pool.close().await,
        }
    }

    /// The whole server configuration.
    pub async fn config(&self) -> Result<BTreeMap<String, String>, DbError> {
        dispatch!(self, pool, _d => {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT key, value FROM server_config")
                    .fetch_all(pool)
                    .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// Replace the whole server configuration, in one transaction.
    pub async fn set_config(&self, config: &BTreeMap<String, String>) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            sqlx::query("DELETE FROM server_config")
                .execute(&mut *tx)
                .await?;
            for (k, v) in config {
                sqlx::query("INSERT INTO server_config (key, value) VALUES ($1, $2)")
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Every trusted certificate, by name.
    pub async fn certificates(&self) -> Result<Vec<CertificateRow>, DbError> {
        let mut rows = dispatch!(self, pool, _d => {
            sqlx::query_as::<_, CertificateTuple>(
                "SELECT fingerprint, type, name, certificate, restricted, projects, description \
                 FROM certificates",
            )
            .fetch_all(pool)
            .await?
        })
        .into_iter()
        .map(certificate_from)
        .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| (&a.name, &a.fingerprint).cmp(&(&b.name, &b.fingerprint)));
        Ok(rows)
    }

    /// Add a certificate; `Conflict` if its fingerprint is trusted already.
    pub async fn insert_certificate(&self, row: &CertificateRow) -> Result<(), DbError> {
        dispatch!(self, pool, _d => {
            sqlx::query(INSERT_CERTIFICATE)
                .bind(&row.fingerprint)
                .bind(&row.kind)
                .bind(&row.name)
                .bind(&row.certificate)
                .bind(i64::from(row.restricted))
                .bind(projects_json(&row.projects))
                .bind(&row.description)
                .execute(pool)
                .await
                .map_err(|e| conflict_on_unique(e, || format!("certificate {}", row.fingerprint)))?;
            Ok(())
        })
    }

    /// Replace a certificate's writable fields (not its certificate or fingerprint).
    pub async fn update_certificate(&self, row: &CertificateRow) -> Result<(), DbError> {
        dispatch!(self, pool, _d => {
            sqlx::query(
                "UPDATE certificates SET type = $1, name = $2, restricted = $3, projects = $4, \
                 description = $5 WHERE fingerprint = $6",
            )
            .bind(&row.kind)
            .bind(&row.name)
            .bind(i64::from(row.restricted))
            .bind(projects_json(&row.projects))
            .bind(&row.description)
            .bind(&row.fingerprint)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Remove a certificate; false if there was none.
    pub async fn delete_certificate(&self, fingerprint: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, _d => {
            let res = sqlx::query("DELETE FROM certificates WHERE fingerprint = $1")
                .bind(fingerprint)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Found a cluster, in one transaction: refused (`Conflict`) if the database has
    /// members already; otherwise the configuration (merged over what is there), the
    /// certificates, the first member, its instances and its images. Nothing is written
    /// when any of it fails.
    pub async fn bootstrap(&self, data: &Bootstrap) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            if let Some(lock) = d.lock("cluster_members") {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let members: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cluster_members")
                .fetch_one(&mut *tx)
                .await?;
            if members > 0 {
                return Err(DbError::Conflict("a cluster in this database".into()));
            }
            let m = &data.member;
            insert_member!(d, m).execute(&mut *tx).await?;
            for (k, v) in &data.config {
                sqlx::query(
                    "INSERT INTO server_config (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
            for row in &data.certificates {
                sqlx::query(INSERT_CERTIFICATE)
                    .bind(&row.fingerprint)
                    .bind(&row.kind)
                    .bind(&row.name)
                    .bind(&row.certificate)
                    .bind(i64::from(row.restricted))
                    .bind(projects_json(&row.projects))
                    .bind(&row.description)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        conflict_on_unique(e, || format!("certificate {}", row.fingerprint))
                    })?;
            }
            for name in &data.instances {
                sqlx::query(d.sql(INSERT_INSTANCE))
                    .bind(name)
                    .bind(&m.name)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_on_unique(e, || format!("instance \"{name}\"")))?;
            }
            for (fingerprint, aliases) in &data.images {
                record_image!(tx, fingerprint, &m.name, aliases);
            }
            for p in &data.profiles {
                let (config, devices) = profiles::profile_columns(p);
                sqlx::query(profiles::UPSERT_PROFILE)
                    .bind(&p.name)
                    .bind(&p.description)
                    .bind(config)
                    .bind(devices)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

const INSERT_MEMBER: &str = "INSERT INTO cluster_members \
     (name, address, fingerprint, certificate, architecture, description, state, heartbeat, \
     created) VALUES ($1, $2, $3, $4, $5, $6, 'online', {now}, {now})";

const INSERT_INSTANCE: &str =
    "INSERT INTO cluster_instances (name, member, evacuated, placed) VALUES ($1, $2, 0, {now})";

const INSERT_IMAGE_HOLDER: &str = "INSERT INTO cluster_images (fingerprint, member) \
     VALUES ($1, $2) ON CONFLICT (fingerprint, member) DO NOTHING";

const UPSERT_IMAGE_ALIAS: &str = "INSERT INTO cluster_image_aliases (name, fingerprint) \
     VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint";
