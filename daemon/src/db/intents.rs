//! The intent journal: one row per multi-step change in progress.
//!
//! A change that makes something on the host before its record exists (a network's bridge,
//! a container's directory, an image's directory) writes its intent first and removes it
//! when the record is complete. A crash in between leaves the row, and the start-up
//! reconcile undoes what the change made (or keeps it, when the record got written). What
//! no intent names is never removed on the journal's word: a database that lost its rows
//! costs garbage at worst, never data.

use sqlx::SqliteExecutor;

use super::{DbError, Pool};

/// What kind of change an intent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /1.0/networks`: the bridge is made before the row.
    NetworkCreate,
    /// `POST /1.0/instances`: the container directory is made before the row.
    InstanceCreate,
    /// An image moved into `images/<fingerprint>` before its row.
    ImageRegister,
    /// A snapshot's files copied before its row (`instance/snapshot`).
    SnapshotCreate,
    /// A restore swapping a container's upper layer (`instance`).
    InstanceRestore,
    /// A rename moving a container's directory (`old/new`).
    InstanceRename,
    /// A rename moving a snapshot's directory (`instance/old/new`).
    SnapshotRename,
    /// A backup's tarball renamed into place before its row (`instance/backup`).
    BackupCreate,
    /// A running instance frozen while its files are copied (`instance`).
    CopyFreeze,
    /// A custom volume's directories made before its rows (`pool/volume`).
    VolumeCreate,
    /// A rename moving a custom volume's directories (`pool/old/new`).
    VolumeRename,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkCreate => "network-create",
            Kind::InstanceCreate => "instance-create",
            Kind::ImageRegister => "image-register",
            Kind::SnapshotCreate => "snapshot-create",
            Kind::InstanceRestore => "instance-restore",
            Kind::InstanceRename => "instance-rename",
            Kind::SnapshotRename => "snapshot-rename",
            Kind::BackupCreate => "backup-create",
            Kind::CopyFreeze => "copy-freeze",
            Kind::VolumeCreate => "volume-create",
            Kind::VolumeRename => "volume-rename",
        }
    }
}

/// Record that a change of `kind` on `name` begins. A row left by an earlier run of the
/// same change (undone at start-up, so only a change that failed and could not remove it)
/// is taken over.
pub async fn begin(db: impl SqliteExecutor<'_>, kind: Kind, name: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO intents (kind, name, created_at) VALUES (?, ?, ?) \
         ON CONFLICT (kind, name) DO UPDATE SET created_at = excluded.created_at",
    )
    .bind(kind.as_str())
    .bind(name)
    .bind(crate::clock::now_rfc3339())
    .execute(db)
    .await?;
    Ok(())
}

/// The change of `kind` on `name` is complete (or fully undone).
pub async fn finish(db: impl SqliteExecutor<'_>, kind: Kind, name: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM intents WHERE kind = ? AND name = ?")
        .bind(kind.as_str())
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}

/// The names of every unfinished change of `kind`.
pub async fn pending(pool: &Pool, kind: Kind) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM intents WHERE kind = ? ORDER BY name")
            .bind(kind.as_str())
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn intents_are_kept_per_kind_until_finished() -> Result<(), DbError> {
        let pool = super::super::open_memory().await?;
        begin(&pool, Kind::NetworkCreate, "br0").await?;
        begin(&pool, Kind::NetworkCreate, "br0").await?;
        begin(&pool, Kind::InstanceCreate, "br0").await?;
        assert_eq!(pending(&pool, Kind::NetworkCreate).await?, ["br0"]);
        assert_eq!(pending(&pool, Kind::InstanceCreate).await?, ["br0"]);
        assert!(pending(&pool, Kind::ImageRegister).await?.is_empty());
        finish(&pool, Kind::NetworkCreate, "br0").await?;
        assert!(pending(&pool, Kind::NetworkCreate).await?.is_empty());
        assert_eq!(pending(&pool, Kind::InstanceCreate).await?, ["br0"]);
        // Finishing what is not there is no error (an undo may run twice).
        finish(&pool, Kind::NetworkCreate, "br0").await?;
        Ok(())
    }
}
