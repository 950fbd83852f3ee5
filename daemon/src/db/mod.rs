//! All SQL lives here. The rest of the daemon sees typed rows (`InstanceRow`, `ImageRow`)
//! and functions, never a query string. One short transaction per state change; WAL mode.
//!
//! The database holds secrets (instance `environment.*` keys...): the file is created with
//! mode 0600 before SQLite opens it, and on every open it and its `-wal` and `-shm` files
//! are given that mode again (SQLite creates those two with the database file's mode).

pub mod backups;
pub mod images;
pub mod instances;
pub mod intents;
pub mod networks;
pub mod profiles;
pub mod shared;
pub mod snapshots;
pub mod storage;
pub mod store;
pub mod trust;

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use images::{ImageRow, NewImage};
pub use instances::{InstanceRow, InstanceUpdate, NewInstance};
pub use networks::{LeaseRow, NetworkRow};
pub use profiles::ProfileRow;

/// The database handle.
pub type Pool = sqlx::SqlitePool;

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored json in {column}: {source}")]
    Json {
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DbError {
    /// The database cannot be reached (refused, down, shutting down, pool exhausted or
    /// closed), as opposed to refusing this request: the API answers 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sqlx(e) => sqlx_unavailable(e),
            DbError::Migrate(e) => migrate_unavailable(e),
            _ => false,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        // SQLSTATE class 08 (connection exception), 57P01 admin_shutdown, 57P02
        // crash_shutdown, 57P03 cannot_connect_now. Only PostgreSQL's codes are SQLSTATEs.
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|pg| {
                let code = pg.code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
            }),
        sqlx::Error::Migrate(m) => migrate_unavailable(m),
        _ => false,
    }
}

fn migrate_unavailable(e: &sqlx::migrate::MigrateError) -> bool {
    match e {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => sqlx_unavailable(e),
        _ => false,
    }
}

/// The mode of the database file and of its `-wal` and `-shm` files: root's alone.
pub const FILE_MODE: u32 = 0o600;

/// The database at `path` and its `-wal` and `-shm` files.
pub fn files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Create the database file at `path` with [`FILE_MODE`] if it is missing, and give it and
/// the `-wal` and `-shm` files that exist that mode (an older ctld left them 0644).
pub fn restrict_files(path: &Path) -> Result<(), DbError> {
    let io_at = |p: &Path| {
        let path = p.to_path_buf();
        move |source| DbError::Io { path, source }
    };
    let [db, wal, shm] = files(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&db)
        .map_err(io_at(&db))?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_at(&db))?;
    for p in [wal, shm] {
        match OpenOptions::new().read(true).open(&p) {
            Ok(f) => f
                .set_permissions(Permissions::from_mode(FILE_MODE))
                .map_err(io_at(&p))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&p)(e)),
        }
    }
    Ok(())
}

/// Open (creating if needed) the database at `path` and apply migrations. The files are
/// made 0600 first ([`restrict_files`]).
pub async fn open(path: &Path) -> Result<Pool, DbError> {
    restrict_files(path)?;
    let opts = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

/// An in-memory database with migrations applied, for tests.
pub async fn open_memory() -> Result<Pool, DbError> {
    let opts = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[tokio::test]
    async fn database_files_are_root_only() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ctld.db");
        let pool = open(&path).await?;
        // A write, so the -wal and -shm files surely exist.
        let mut row = profiles::get(&pool, "default")
            .await?
            .ok_or("no default profile")?;
        row.description = "changed".into();
        profiles::update(&pool, &row).await?;
        for f in files(&path) {
            assert_eq!(mode(&f), 0o600, "{} of a new database", f.display());
        }
        // Files an older ctld left readable are fixed at the next open, -wal and -shm too.
        for f in files(&path) {
            std::fs::set_permissions(&f, Permissions::from_mode(0o644))?;
        }
        let again = open(&path).await?;
        for f in files(&path) {
            assert_eq!(mode(&f), 0o600, "{} after a reopen", f.display());
        }
        again.close().await;
        pool.close().await;
        Ok(())
    }
}
