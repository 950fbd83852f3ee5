//! Instance snapshots: what the instance's record was when the snapshot was taken.

use sqlx::{Row, SqliteExecutor};

use super::instances::{Config, Devices};
use super::{DbError, Pool, is_unique_violation};

/// One snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub instance: String,
    pub name: String,
    pub created_at: String,
    pub config: Config,
    pub devices: Devices,
    pub profiles: Vec<String>,
    /// RFC 3339 in UTC, or empty: never expires.
    pub expires_at: String,
}

fn json<T: serde::de::DeserializeOwned>(
    r: &sqlx::sqlite::SqliteRow,
    column: &'static str,
) -> Result<T, DbError> {
    let text: String = r.try_get(column)?;
    serde_json::from_str(&text).map_err(|source| DbError::Json { column, source })
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<SnapshotRow, DbError> {
    Ok(SnapshotRow {
        instance: r.try_get("instance")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        config: json(r, "config")?,
        devices: json(r, "devices")?,
        profiles: json(r, "profiles")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// Record a snapshot; `Conflict` if the instance has one of that name.
pub async fn insert(db: impl SqliteExecutor<'_>, row: &SnapshotRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO snapshots (instance, name, created_at, config, devices, profiles, \
         expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.instance)
    .bind(&row.name)
    .bind(&row.created_at)
    .bind(to_json(&row.config))
    .bind(to_json(&row.devices))
    .bind(to_json(&row.profiles))
    .bind(&row.expires_at)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "snapshot \"{}\" of instance \"{}\"",
            row.name, row.instance
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// The snapshots of `instance`, oldest first.
pub async fn list(pool: &Pool, instance: &str) -> Result<Vec<SnapshotRow>, DbError> {
    sqlx::query("SELECT * FROM snapshots WHERE instance = ? ORDER BY created_at, name")
        .bind(instance)
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// One snapshot.
pub async fn get(pool: &Pool, instance: &str, name: &str) -> Result<Option<SnapshotRow>, DbError> {
    sqlx::query("SELECT * FROM snapshots WHERE instance = ? AND name = ?")
        .bind(instance)
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Forget a snapshot; whether it was there.
pub async fn delete(
    db: impl SqliteExecutor<'_>,
    instance: &str,
    name: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM snapshots WHERE instance = ? AND name = ?")
        .bind(instance)
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Set when a snapshot expires (`""`: never); whether it was there.
pub async fn set_expiry(
    db: impl SqliteExecutor<'_>,
    instance: &str,
    name: &str,
    expires_at: &str,
) -> Result<bool, DbError> {
    let done = sqlx::query("UPDATE snapshots SET expires_at = ? WHERE instance = ? AND name = ?")
        .bind(expires_at)
        .bind(instance)
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every snapshot that has an expiry, of every instance (the caller compares the times).
pub async fn expiring(pool: &Pool) -> Result<Vec<SnapshotRow>, DbError> {
    sqlx::query("SELECT * FROM snapshots WHERE expires_at != '' ORDER BY instance, name")
        .fetch_all(pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Rename snapshot `old` of `instance` to `new`; `Conflict` if `new` is taken.
pub async fn rename(
    db: impl SqliteExecutor<'_>,
    instance: &str,
    old: &str,
    new: &str,
) -> Result<bool, DbError> {
    let res = sqlx::query("UPDATE snapshots SET name = ? WHERE instance = ? AND name = ?")
        .bind(new)
        .bind(instance)
        .bind(old)
        .execute(db)
        .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "snapshot \"{new}\" of instance \"{instance}\""
        ))),
        Err(e) => Err(e.into()),
        Ok(r) => Ok(r.rows_affected() > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshots_are_per_instance_and_go_with_it() -> Result<(), DbError> {
        let pool = super::super::instances::tests::pool_with_c1_c2().await?;
        let snap = |instance: &str, name: &str, at: &str| SnapshotRow {
            instance: instance.into(),
            name: name.into(),
            created_at: at.into(),
            config: Config::from([("limits.memory".into(), "64MiB".into())]),
            devices: Devices::new(),
            profiles: vec!["default".into()],
            expires_at: String::new(),
        };
        insert(&pool, &snap("c1", "snap0", "1")).await?;
        insert(&pool, &snap("c1", "snap1", "2")).await?;
        insert(&pool, &snap("c2", "snap0", "3")).await?;
        assert!(matches!(
            insert(&pool, &snap("c1", "snap0", "4")).await,
            Err(DbError::Conflict(_))
        ));
        let names: Vec<String> = list(&pool, "c1")
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["snap0", "snap1"]);
        assert_eq!(
            get(&pool, "c1", "snap1").await?,
            Some(snap("c1", "snap1", "2"))
        );
        assert!(expiring(&pool).await?.is_empty());
        assert!(set_expiry(&pool, "c2", "snap0", "2030-01-01T00:00:00Z").await?);
        assert!(!set_expiry(&pool, "c2", "nope", "2030-01-01T00:00:00Z").await?);
        let exp = expiring(&pool).await?;
        assert_eq!(exp.len(), 1);
        assert_eq!(
            (exp[0].instance.as_str(), exp[0].name.as_str()),
            ("c2", "snap0")
        );
        assert_eq!(exp[0].expires_at, "2030-01-01T00:00:00Z");
        assert!(delete(&pool, "c1", "snap1").await?);
        assert!(!delete(&pool, "c1", "snap1").await?);
        super::super::instances::delete(&pool, "c1").await?;
        assert!(list(&pool, "c1").await?.is_empty());
        assert_eq!(list(&pool, "c2").await?.len(), 1);
        Ok(())
    }
}
