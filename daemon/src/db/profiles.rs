//! The `profiles` table.

use sqlx::Row;

use super::instances::{Config, Devices};
use super::{DbError, Pool};

/// One row of `profiles`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub name: String,
    pub description: String,
    pub config: Config,
    pub devices: Devices,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ProfileRow, DbError> {
    let config: String = r.try_get("config")?;
    let devices: String = r.try_get("devices")?;
    Ok(ProfileRow {
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        config: serde_json::from_str(&config).map_err(|source| DbError::Json {
            column: "config",
            source,
        })?,
        devices: serde_json::from_str(&devices).map_err(|source| DbError::Json {
            column: "devices",
            source,
        })?,
    })
}

/// One profile by name.
pub async fn get(pool: &Pool, name: &str) -> Result<Option<ProfileRow>, DbError> {
    let row = sqlx::query("SELECT name, description, config, devices FROM profiles WHERE name = ?")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every profile, by name.
pub async fn list(pool: &Pool) -> Result<Vec<ProfileRow>, DbError> {
    let rows = sqlx::query("SELECT name, description, config, devices FROM profiles ORDER BY name")
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Replace a profile's description, config and devices.
pub async fn update(pool: &Pool, row: &ProfileRow) -> Result<(), DbError> {
    sqlx::query("UPDATE profiles SET description = ?, config = ?, devices = ? WHERE name = ?")
        .bind(&row.description)
        .bind(serde_json::to_string(&row.config).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&row.devices).unwrap_or_else(|_| "{}".into()))
        .bind(&row.name)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_profile_exists_and_updates() -> Result<(), DbError> {
        let pool = crate::db::open_memory().await?;
        let mut p = get(&pool, "default")
            .await?
            .ok_or(DbError::Conflict("none".into()))?;
        assert!(p.devices.is_empty());
        p.devices.insert(
            "eth0".into(),
            [("type", "nic"), ("network", "ctlbr0")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        update(&pool, &p).await?;
        assert_eq!(get(&pool, "default").await?, Some(p));
        assert_eq!(list(&pool).await?.len(), 1);
        Ok(())
    }
}
