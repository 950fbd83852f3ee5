//! Instance backups: one row per tarball kept under the instance's directory.

use sqlx::{Row, SqliteExecutor};

use super::{DbError, Pool, is_unique_violation};

/// One backup's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    pub instance: String,
    pub name: String,
    pub created_at: String,
    /// RFC 3339, or empty: never expires.
    pub expires_at: String,
    pub instance_only: bool,
    /// The tarball's compression (`gzip`, `none`...).
    pub compression: String,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<BackupRow, DbError> {
    Ok(BackupRow {
        instance: r.try_get("instance")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        instance_only: r.try_get("instance_only")?,
        compression: r.try_get("compression")?,
    })
}

/// Record a backup; `Conflict` if the instance has one of that name.
pub async fn insert(db: impl SqliteExecutor<'_>, row: &BackupRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO backups (instance, name, created_at, expires_at, instance_only, compression) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.instance)
    .bind(&row.name)
    .bind(&row.created_at)
    .bind(&row.expires_at)
    .bind(row.instance_only)
    .bind(&row.compression)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "backup \"{}\" of instance \"{}\"",
            row.name, row.instance
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// The backups of `instance`, oldest first.
pub async fn list(pool: &Pool, instance: &str) -> Result<Vec<BackupRow>, DbError> {
    sqlx::query("SELECT * FROM backups WHERE instance = ? ORDER BY created_at, name")
        .bind(instance)
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// One backup.
pub async fn get(pool: &Pool, instance: &str, name: &str) -> Result<Option<BackupRow>, DbError> {
    sqlx::query("SELECT * FROM backups WHERE instance = ? AND name = ?")
        .bind(instance)
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Rename a backup; `Conflict` if the new name is taken, whether it was there.
pub async fn rename(
    db: impl SqliteExecutor<'_>,
    instance: &str,
    from: &str,
    to: &str,
) -> Result<bool, DbError> {
    let res = sqlx::query("UPDATE backups SET name = ? WHERE instance = ? AND name = ?")
        .bind(to)
        .bind(instance)
        .bind(from)
        .execute(db)
        .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "backup \"{to}\" of instance \"{instance}\""
        ))),
        Err(e) => Err(e.into()),
        Ok(done) => Ok(done.rows_affected() > 0),
    }
}

/// Forget a backup; whether it was there.
pub async fn delete(
    db: impl SqliteExecutor<'_>,
    instance: &str,
    name: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM backups WHERE instance = ? AND name = ?")
        .bind(instance)
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backups_are_per_instance_renamed_and_go_with_it() -> Result<(), DbError> {
        let pool = super::super::instances::tests::pool_with_c1_c2().await?;
        let b = |instance: &str, name: &str, at: &str| BackupRow {
            instance: instance.into(),
            name: name.into(),
            created_at: at.into(),
            expires_at: String::new(),
            instance_only: at == "2",
            compression: "gzip".into(),
        };
        insert(&pool, &b("c1", "backup0", "1")).await?;
        insert(&pool, &b("c1", "backup1", "2")).await?;
        insert(&pool, &b("c2", "backup0", "3")).await?;
        assert!(matches!(
            insert(&pool, &b("c1", "backup0", "4")).await,
            Err(DbError::Conflict(_))
        ));
        assert_eq!(
            get(&pool, "c1", "backup1").await?,
            Some(b("c1", "backup1", "2"))
        );
        assert!(matches!(
            rename(&pool, "c1", "backup0", "backup1").await,
            Err(DbError::Conflict(_))
        ));
        assert!(rename(&pool, "c1", "backup0", "nightly").await?);
        assert!(!rename(&pool, "c1", "backup0", "other").await?);
        let names: Vec<String> = list(&pool, "c1")
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["nightly", "backup1"]);
        assert!(delete(&pool, "c1", "backup1").await?);
        assert!(!delete(&pool, "c1", "backup1").await?);
        super::super::instances::delete(&pool, "c1").await?;
        assert!(list(&pool, "c1").await?.is_empty());
        assert_eq!(list(&pool, "c2").await?.len(), 1);
        Ok(())
    }
}
