//! The `storage_pools`, `storage_volumes` and `storage_volume_snapshots` tables.

use sqlx::{Row, SqliteExecutor};

use super::instances::Config;
use super::{DbError, Pool, is_unique_violation};

/// The id of the volume named by the next two parameters (pool, volume).
macro_rules! volume_id {
    () => {
        "(SELECT v.id FROM storage_volumes v JOIN storage_pools p \
         ON p.id = v.pool_id WHERE p.name = ? AND v.name = ?)"
    };
}
/// One row of `storage_pools`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    pub name: String,
    pub driver: String,
    pub description: String,
    pub config: Config,
}

/// One custom volume.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRow {
    pub pool: String,
    pub name: String,
    pub description: String,
    pub config: Config,
    pub created_at: String,
}

/// One snapshot of a custom volume.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSnapshotRow {
    pub name: String,
    pub description: String,
    pub created_at: String,
    pub expires_at: String,
}

fn config_of(r: &sqlx::sqlite::SqliteRow) -> Result<Config, DbError> {
    let config: String = r.try_get("config")?;
    serde_json::from_str(&config).map_err(|source| DbError::Json {
        column: "config",
        source,
    })
}

fn to_json(c: &Config) -> String {
    serde_json::to_string(c).unwrap_or_else(|_| "{}".into())
}

fn pool_row(r: &sqlx::sqlite::SqliteRow) -> Result<PoolRow, DbError> {
    Ok(PoolRow {
        name: r.try_get("name")?,
        driver: r.try_get("driver")?,
        description: r.try_get("description")?,
        config: config_of(r)?,
    })
}

/// Every pool, by name.
pub async fn pools(db: &Pool) -> Result<Vec<PoolRow>, DbError> {
    let rows =
        sqlx::query("SELECT name, driver, description, config FROM storage_pools ORDER BY name")
            .fetch_all(db)
            .await?;
    rows.iter().map(pool_row).collect()
}

/// One pool by name.
pub async fn pool(db: &Pool, name: &str) -> Result<Option<PoolRow>, DbError> {
    let row =
        sqlx::query("SELECT name, driver, description, config FROM storage_pools WHERE name = ?")
            .bind(name)
            .fetch_optional(db)
            .await?;
    row.as_ref().map(pool_row).transpose()
}

/// Insert a pool; `Conflict` if the name is taken.
pub async fn insert_pool(db: &Pool, row: &PoolRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO storage_pools (name, driver, description, config) VALUES (?, ?, ?, ?)",
    )
    .bind(&row.name)
    .bind(&row.driver)
    .bind(&row.description)
    .bind(to_json(&row.config))
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(DbError::Conflict(format!("storage pool \"{}\"", row.name)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Replace a pool's description and config.
pub async fn update_pool(db: &Pool, row: &PoolRow) -> Result<(), DbError> {
    sqlx::query("UPDATE storage_pools SET description = ?, config = ? WHERE name = ?")
        .bind(&row.description)
        .bind(to_json(&row.config))
        .bind(&row.name)
        .execute(db)
        .await?;
    Ok(())
}

/// Delete a pool row (its volumes must be gone: the foreign key refuses otherwise).
pub async fn delete_pool(db: &Pool, name: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM storage_pools WHERE name = ?")
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}

/// The columns of a [`VolumeRow`] and the join they come from.
macro_rules! volume_select {
    () => {
        "SELECT p.name AS pool, v.name AS name, v.description AS description, \
         v.config AS config, v.created_at AS created_at \
         FROM storage_volumes v JOIN storage_pools p ON p.id = v.pool_id"
    };
}

fn volume_row(r: &sqlx::sqlite::SqliteRow) -> Result<VolumeRow, DbError> {
    Ok(VolumeRow {
        pool: r.try_get("pool")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        config: config_of(r)?,
        created_at: r.try_get("created_at")?,
    })
}

/// The custom volumes of a pool (every pool's for `None`), by pool and name.
pub async fn volumes(db: &Pool, pool: Option<&str>) -> Result<Vec<VolumeRow>, DbError> {
    let rows = match pool {
        Some(p) => {
            sqlx::query(concat!(
                volume_select!(),
                " WHERE p.name = ? ORDER BY v.name"
            ))
            .bind(p)
            .fetch_all(db)
            .await?
        }
        None => {
            sqlx::query(concat!(volume_select!(), " ORDER BY p.name, v.name"))
                .fetch_all(db)
                .await?
        }
    };
    rows.iter().map(volume_row).collect()
}

/// One custom volume.
pub async fn volume(db: &Pool, pool: &str, name: &str) -> Result<Option<VolumeRow>, DbError> {
    let row = sqlx::query(concat!(
        volume_select!(),
        " WHERE p.name = ? AND v.name = ?"
    ))
    .bind(pool)
    .bind(name)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(volume_row).transpose()
}

/// Insert a custom volume; `Conflict` if the pool has one of that name.
pub async fn insert_volume(db: impl SqliteExecutor<'_>, row: &VolumeRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO storage_volumes (pool_id, name, description, config, created_at) \
         SELECT id, ?, ?, ?, ? FROM storage_pools WHERE name = ?",
    )
    .bind(&row.name)
    .bind(&row.description)
    .bind(to_json(&row.config))
    .bind(&row.created_at)
    .bind(&row.pool)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "storage volume \"{}\" in pool \"{}\"",
            row.name, row.pool
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Replace a custom volume's description and config.
pub async fn update_volume(db: &Pool, row: &VolumeRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE storage_volumes SET description = ?, config = ? \
         WHERE name = ? AND pool_id = (SELECT id FROM storage_pools WHERE name = ?)",
    )
    .bind(&row.description)
    .bind(to_json(&row.config))
    .bind(&row.name)
    .bind(&row.pool)
    .execute(db)
    .await?;
    Ok(())
}

/// Rename a custom volume; `Conflict` if the new name is taken.
pub async fn rename_volume(
    db: impl SqliteExecutor<'_>,
    pool: &str,
    old: &str,
    new: &str,
) -> Result<(), DbError> {
    let res = sqlx::query(
        "UPDATE storage_volumes SET name = ? \
         WHERE name = ? AND pool_id = (SELECT id FROM storage_pools WHERE name = ?)",
    )
    .bind(new)
    .bind(old)
    .bind(pool)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "storage volume \"{new}\" in pool \"{pool}\""
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Delete a custom volume and its snapshots' rows.
pub async fn delete_volume(db: &Pool, pool: &str, name: &str) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    sqlx::query(concat!(
        "DELETE FROM storage_volume_snapshots WHERE volume_id = ",
        volume_id!(),
        ""
    ))
    .bind(pool)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM storage_volumes \
         WHERE name = ? AND pool_id = (SELECT id FROM storage_pools WHERE name = ?)",
    )
    .bind(name)
    .bind(pool)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn snapshot_row(r: &sqlx::sqlite::SqliteRow) -> Result<VolumeSnapshotRow, DbError> {
    Ok(VolumeSnapshotRow {
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

/// The snapshots of a custom volume, oldest first.
pub async fn volume_snapshots(
    db: &Pool,
    pool: &str,
    volume: &str,
) -> Result<Vec<VolumeSnapshotRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT name, description, created_at, expires_at FROM storage_volume_snapshots \
         WHERE volume_id = ",
        volume_id!(),
        " ORDER BY id"
    ))
    .bind(pool)
    .bind(volume)
    .fetch_all(db)
    .await?;
    rows.iter().map(snapshot_row).collect()
}

/// Insert a snapshot of a custom volume; `Conflict` if the name is taken.
pub async fn insert_volume_snapshot(
    db: impl SqliteExecutor<'_>,
    pool: &str,
    volume: &str,
    row: &VolumeSnapshotRow,
) -> Result<(), DbError> {
    let res = sqlx::query(concat!(
        "INSERT INTO storage_volume_snapshots (volume_id, name, description, created_at, \
         expires_at) SELECT ",
        volume_id!(),
        ", ?, ?, ?, ?"
    ))
    .bind(pool)
    .bind(volume)
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.created_at)
    .bind(&row.expires_at)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "snapshot \"{}\" of volume \"{volume}\"",
            row.name
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Rename a snapshot of a custom volume.
pub async fn rename_volume_snapshot(
    db: &Pool,
    pool: &str,
    volume: &str,
    old: &str,
    new: &str,
) -> Result<(), DbError> {
    let res = sqlx::query(concat!(
        "UPDATE storage_volume_snapshots SET name = ? WHERE volume_id = ",
        volume_id!(),
        " AND name = ?"
    ))
    .bind(new)
    .bind(pool)
    .bind(volume)
    .bind(old)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "snapshot \"{new}\" of volume \"{volume}\""
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Delete a snapshot of a custom volume.
pub async fn delete_volume_snapshot(
    db: &Pool,
    pool: &str,
    volume: &str,
    name: &str,
) -> Result<(), DbError> {
    sqlx::query(concat!(
        "DELETE FROM storage_volume_snapshots WHERE volume_id = ",
        volume_id!(),
        " AND name = ?"
    ))
    .bind(pool)
    .bind(volume)
    .bind(name)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_pool_and_root_disk_exist_and_volumes_round_trip() -> Result<(), DbError> {
        let db = super::super::open_memory().await?;
        let pools = pools(&db).await?;
        assert_eq!(pools.len(), 1);
        assert_eq!(
            (pools[0].name.as_str(), pools[0].driver.as_str()),
            ("default", "dir")
        );
        let profile = super::super::profiles::get(&db, "default")
            .await?
            .ok_or_else(|| DbError::Conflict("no default profile".into()))?;
        assert_eq!(profile.devices["root"]["pool"], "default");
        assert_eq!(profile.devices["root"]["path"], "/");
        let v = VolumeRow {
            pool: "default".into(),
            name: "db".into(),
            description: String::new(),
            config: Config::from([("size".to_string(), "1GiB".to_string())]),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        insert_volume(&db, &v).await?;
        assert!(matches!(
            insert_volume(&db, &v).await,
            Err(DbError::Conflict(_))
        ));
        assert_eq!(volume(&db, "default", "db").await?, Some(v.clone()));
        let s = VolumeSnapshotRow {
            name: "snap0".into(),
            description: String::new(),
            created_at: v.created_at.clone(),
            expires_at: String::new(),
        };
        insert_volume_snapshot(&db, "default", "db", &s).await?;
        rename_volume(&db, "default", "db", "db2").await?;
        assert_eq!(volume_snapshots(&db, "default", "db2").await?, vec![s]);
        delete_volume(&db, "default", "db2").await?;
        assert!(volumes(&db, None).await?.is_empty());
        Ok(())
    }
}
