//! The `instances` table.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{DbError, Pool, is_unique_violation};

/// Config map as stored.
pub type Config = BTreeMap<String, String>;
/// Devices as stored.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// One row of `instances`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub ephemeral: bool,
    pub image_fingerprint: String,
    pub config: Config,
    pub devices: Devices,
    /// The profiles applied, in order (later ones win).
    pub profiles: Vec<String>,
    pub created_at: String,
    pub last_used_at: String,
    pub init_pid: i32,
    pub init_starttime: u64,
    pub monitor_pid: i32,
}

/// What creating an instance stores.
#[derive(Debug, Clone)]
pub struct NewInstance<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub architecture: &'a str,
    pub ephemeral: bool,
    pub image_fingerprint: &'a str,
    pub config: &'a Config,
    pub devices: &'a Devices,
    pub profiles: &'a [String],
    pub created_at: &'a str,
}

/// The column list of `instances`, as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "id, name, description, architecture, ephemeral, image_fingerprint, config, devices, \
         profiles, created_at, last_used_at, init_pid, init_starttime, monitor_pid"
    };
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<InstanceRow, DbError> {
    let config: String = r.try_get("config")?;
    let devices: String = r.try_get("devices")?;
    let profiles: String = r.try_get("profiles")?;
    Ok(InstanceRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        architecture: r.try_get("architecture")?,
        ephemeral: r.try_get("ephemeral")?,
        image_fingerprint: r.try_get("image_fingerprint")?,
        config: serde_json::from_str(&config).map_err(|source| DbError::Json {
            column: "config",
            source,
        })?,
        devices: serde_json::from_str(&devices).map_err(|source| DbError::Json {
            column: "devices",
            source,
        })?,
        profiles: serde_json::from_str(&profiles).map_err(|source| DbError::Json {
            column: "profiles",
            source,
        })?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        init_pid: r.try_get("init_pid")?,
        init_starttime: r.try_get::<i64, _>("init_starttime")? as u64,
        monitor_pid: r.try_get("monitor_pid")?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Insert a new instance; `Conflict` if the name is taken.
pub async fn insert(pool: &Pool, new: &NewInstance<'_>) -> Result<InstanceRow, DbError> {
    insert_row(pool, new).await?;
    get(pool, new.name)
        .await?
        .ok_or_else(|| DbError::Sqlx(sqlx::Error::RowNotFound))
}

/// [`insert`] on any executor (inside a transaction), without reading the row back.
pub async fn insert_row(
    db: impl sqlx::SqliteExecutor<'_>,
    new: &NewInstance<'_>,
) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO instances (name, description, architecture, ephemeral, image_fingerprint, \
         config, devices, profiles, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.name)
    .bind(new.description)
    .bind(new.architecture)
    .bind(new.ephemeral)
    .bind(new.image_fingerprint)
    .bind(to_json(new.config))
    .bind(to_json(new.devices))
    .bind(to_json(&new.profiles))
    .bind(new.created_at)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(DbError::Conflict(format!("instance \"{}\"", new.name)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Rename instance `old` to `new` with its network leases (its snapshots follow by
/// `ON UPDATE CASCADE`), on a connection inside a transaction: the lease rows refer to the
/// name, so foreign keys are checked at commit. `Conflict` if `new` is taken.
pub async fn rename(
    conn: &mut sqlx::SqliteConnection,
    old: &str,
    new: &str,
) -> Result<(), DbError> {
    sqlx::query("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    let res = sqlx::query("UPDATE instances SET name = ? WHERE name = ?")
        .bind(new)
        .bind(old)
        .execute(&mut *conn)
        .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            return Err(DbError::Conflict(format!("instance \"{new}\"")));
        }
        Err(e) => return Err(e.into()),
        Ok(r) if r.rows_affected() == 0 => {
            return Err(DbError::Sqlx(sqlx::Error::RowNotFound));
        }
        Ok(_) => {}
    }
    sqlx::query("UPDATE network_leases SET instance = ? WHERE instance = ?")
        .bind(new)
        .bind(old)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One instance by name.
pub async fn get(pool: &Pool, name: &str) -> Result<Option<InstanceRow>, DbError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM instances WHERE name = ?"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every instance, by name.
pub async fn list(pool: &Pool) -> Result<Vec<InstanceRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM instances ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Every instance name, sorted.
pub async fn names(pool: &Pool) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM instances ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// Record the running init (0s: stopped) and, with `power`, the instance's
/// `volatile.last_state.power` in the same statement (no read-modify-write of the config,
/// so a start or a stop costs one write).
pub async fn set_running(
    pool: &Pool,
    name: &str,
    pid: i32,
    starttime: u64,
    monitor_pid: i32,
    last_used_at: Option<&str>,
    power: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE instances SET init_pid = ?, init_starttime = ?, monitor_pid = ?, \
         last_used_at = COALESCE(?, last_used_at), \
         config = CASE WHEN ? IS NULL THEN config \
                  ELSE json_set(config, '$.\"volatile.last_state.power\"', ?) END \
         WHERE name = ?",
    )
    .bind(pid)
    .bind(starttime as i64)
    .bind(monitor_pid)
    .bind(last_used_at)
    .bind(power)
    .bind(power)
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// What an update of an instance replaces.
#[derive(Debug, Clone)]
pub struct InstanceUpdate<'a> {
    pub description: &'a str,
    pub ephemeral: bool,
    pub config: &'a Config,
    pub devices: &'a Devices,
    pub profiles: &'a [String],
}

/// Replace config, devices, profiles, description and ephemeral flag.
pub async fn update(pool: &Pool, name: &str, u: &InstanceUpdate<'_>) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE instances SET description = ?, ephemeral = ?, config = ?, devices = ?, \
         profiles = ? WHERE name = ?",
    )
    .bind(u.description)
    .bind(u.ephemeral)
    .bind(to_json(u.config))
    .bind(to_json(u.devices))
    .bind(to_json(&u.profiles))
    .bind(name)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replace only the config (daemon-owned `volatile.*` keys written at start).
pub async fn set_config(pool: &Pool, name: &str, config: &Config) -> Result<(), DbError> {
    sqlx::query("UPDATE instances SET config = ? WHERE name = ?")
        .bind(to_json(config))
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delete an instance row. Returns whether it existed.
pub async fn delete(pool: &Pool, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM instances WHERE name = ?")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Names of instances using image `fingerprint`.
pub async fn using_image(pool: &Pool, fingerprint: &str) -> Result<Vec<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT name FROM instances WHERE image_fingerprint = ? ORDER BY name")
            .bind(fingerprint)
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::{self, images};

    /// A fresh in-memory database with one image (`abc`) for instances to point at.
    pub(crate) async fn pool_with_image() -> Result<Pool, DbError> {
        let pool = db::open_memory().await?;
        images::insert(
            &pool,
            &images::NewImage {
                fingerprint: "abc",
                filename: "",
                size: 1,
                architecture: "x86_64",
                created_at: "t",
                properties: &BTreeMap::new(),
                public: false,
                cached: false,
            },
        )
        .await?;
        Ok(pool)
    }

    /// [`pool_with_image`] with plain instances `c1` and `c2` (profile `default`).
    pub(crate) async fn pool_with_c1_c2() -> Result<Pool, DbError> {
        let pool = pool_with_image().await?;
        let (cfg, dev) = (Config::new(), Devices::new());
        let profiles = ["default".to_string()];
        for name in ["c1", "c2"] {
            let row = NewInstance {
                profiles: &profiles,
                ..new(name, &cfg, &dev)
            };
            insert(&pool, &row).await?;
        }
        Ok(pool)
    }

    fn new<'a>(name: &'a str, cfg: &'a Config, dev: &'a Devices) -> NewInstance<'a> {
        NewInstance {
            name,
            description: "",
            architecture: "x86_64",
            ephemeral: false,
            image_fingerprint: "abc",
            config: cfg,
            devices: dev,
            profiles: &[],
            created_at: "2026-01-01T00:00:00Z",
        }
    }

    #[tokio::test]
    async fn insert_get_update_delete() -> Result<(), DbError> {
        let pool = pool_with_image().await?;
        let mut cfg = Config::new();
        cfg.insert("limits.memory".into(), "64MiB".into());
        let dev = Devices::new();
        let row = insert(&pool, &new("c1", &cfg, &dev)).await?;
        assert_eq!(
            row.config.get("limits.memory").map(String::as_str),
            Some("64MiB")
        );
        assert_eq!(row.init_pid, 0);
        assert!(matches!(
            insert(&pool, &new("c1", &cfg, &dev)).await,
            Err(DbError::Conflict(_))
        ));
        set_running(&pool, "c1", 42, 7, 41, Some("now"), Some("RUNNING")).await?;
        let got = get(&pool, "c1").await?;
        // The power state lands in the config, which keeps its other keys.
        let power = |r: &Option<InstanceRow>| {
            r.as_ref()
                .and_then(|r| r.config.get("volatile.last_state.power").cloned())
        };
        assert_eq!(power(&got).as_deref(), Some("RUNNING"));
        assert_eq!(
            got.as_ref()
                .and_then(|r| r.config.get("limits.memory").cloned())
                .as_deref(),
            Some("64MiB")
        );
        set_running(&pool, "c1", 42, 7, 41, None, None).await?;
        assert_eq!(power(&get(&pool, "c1").await?).as_deref(), Some("RUNNING"));
        assert_eq!(
            got.as_ref()
                .map(|r| (r.init_pid, r.init_starttime, r.monitor_pid)),
            Some((42, 7, 41))
        );
        assert_eq!(got.map(|r| r.last_used_at), Some("now".to_string()));
        cfg.clear();
        let profiles = vec!["default".to_string()];
        update(
            &pool,
            "c1",
            &InstanceUpdate {
                description: "desc",
                ephemeral: true,
                config: &cfg,
                devices: &dev,
                profiles: &profiles,
            },
        )
        .await?;
        let got = get(&pool, "c1").await?;
        assert_eq!(got.as_ref().map(|r| r.config.len()), Some(0));
        assert_eq!(
            got.map(|r| (r.description, r.ephemeral, r.profiles)),
            Some(("desc".into(), true, profiles))
        );
        assert_eq!(using_image(&pool, "abc").await?, vec!["c1".to_string()]);
        assert!(delete(&pool, "c1").await?);
        assert!(!delete(&pool, "c1").await?);
        assert!(get(&pool, "c1").await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn image_in_use_cannot_be_deleted() -> Result<(), DbError> {
        let pool = pool_with_image().await?;
        insert(&pool, &new("c2", &Config::new(), &Devices::new())).await?;
        assert!(images::delete(&pool, "abc").await.is_err());
        delete(&pool, "c2").await?;
        assert!(images::delete(&pool, "abc").await?);
        Ok(())
    }
}
