//! All SQL lives here. The rest of the daemon sees typed rows (`InstanceRow`, `ImageRow`)
//! and functions, never a query string. One short transaction per state change; WAL mode.

pub mod images;
pub mod instances;
pub mod networks;
pub mod profiles;

use std::path::Path;
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
}

/// Open (creating if needed) the database at `path` and apply migrations.
pub async fn open(path: &Path) -> Result<Pool, DbError> {
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
