//! The `profiles` table, and the profile lists of instances and snapshots that name them.

use sqlx::{Row, SqliteExecutor};

use super::instances::{Config, Devices};
use super::{DbError, Pool, is_unique_violation};

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

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Replace a profile's description, config and devices.
pub async fn update(db: impl SqliteExecutor<'_>, row: &ProfileRow) -> Result<(), DbError> {
    sqlx::query("UPDATE profiles SET description = ?, config = ?, devices = ? WHERE name = ?")
        .bind(&row.description)
        .bind(to_json(&row.config))
        .bind(to_json(&row.devices))
        .bind(&row.name)
        .execute(db)
        .await?;
    Ok(())
}

/// Insert a new profile; `Conflict` if the name is taken.
pub async fn insert(pool: &Pool, row: &ProfileRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO profiles (name, description, config, devices) VALUES (?, ?, ?, ?)",
    )
    .bind(&row.name)
    .bind(&row.description)
    .bind(to_json(&row.config))
    .bind(to_json(&row.devices))
    .execute(pool)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(DbError::Conflict(format!("profile \"{}\"", row.name)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// A profile's new row together with the configs of the instances its change touched
/// (their `volatile.*` keys: MACs and host-side names of NICs it added), in one transaction.
pub async fn update_with_instances(
    pool: &Pool,
    row: &ProfileRow,
    instances: &[(String, Config)],
) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    update(&mut *tx, row).await?;
    for (name, config) in instances {
        sqlx::query("UPDATE instances SET config = ? WHERE name = ?")
            .bind(to_json(config))
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Delete a profile unless an instance names it (checked in the same transaction).
/// `Ok(Err(users))`: refused, the names of the instances using it; `Ok(Ok(false))`: none
/// of that name.
pub async fn delete_unused(pool: &Pool, name: &str) -> Result<Result<bool, Vec<String>>, DbError> {
    let mut tx = pool.begin().await?;
    let users = users(&mut *tx, name).await?;
    if !users.is_empty() {
        return Ok(Err(users));
    }
    let r = sqlx::query("DELETE FROM profiles WHERE name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(r.rows_affected() > 0))
}

/// Names of the instances whose profile list names `profile`, by name.
async fn users(db: impl SqliteExecutor<'_>, profile: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, profiles FROM instances ORDER BY name")
            .fetch_all(db)
            .await?;
    let mut out = Vec::new();
    for (name, profiles) in rows {
        let list: Vec<String> =
            serde_json::from_str(&profiles).map_err(|source| DbError::Json {
                column: "profiles",
                source,
            })?;
        if list.iter().any(|p| p == profile) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Rename a profile and every mention of it in the profile lists of instances and of their
/// snapshots, in one transaction. `Conflict` if `to` exists; `Ok(false)` if `from` does not.
pub async fn rename(pool: &Pool, from: &str, to: &str) -> Result<bool, DbError> {
    let mut tx = pool.begin().await?;
    let res = sqlx::query("UPDATE profiles SET name = ? WHERE name = ?")
        .bind(to)
        .bind(from)
        .execute(&mut *tx)
        .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            return Err(DbError::Conflict(format!("profile \"{to}\"")));
        }
        Err(e) => return Err(e.into()),
        Ok(r) if r.rows_affected() == 0 => return Ok(false),
        Ok(_) => {}
    }
    for table in [Lists::Instances, Lists::Snapshots] {
        let rows: Vec<(i64, String)> = sqlx::query_as(table.select()).fetch_all(&mut *tx).await?;
        for (rowid, profiles) in rows {
            let mut list: Vec<String> =
                serde_json::from_str(&profiles).map_err(|source| DbError::Json {
                    column: "profiles",
                    source,
                })?;
            if !list.iter().any(|p| p == from) {
                continue;
            }
            for p in list.iter_mut().filter(|p| *p == from) {
                *p = to.to_string();
            }
            sqlx::query(table.update())
                .bind(to_json(&list))
                .bind(rowid)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// The tables holding profile lists.
#[derive(Clone, Copy)]
enum Lists {
    Instances,
    Snapshots,
}

impl Lists {
    fn select(self) -> &'static str {
        match self {
            Lists::Instances => "SELECT rowid, profiles FROM instances",
            Lists::Snapshots => "SELECT rowid, profiles FROM snapshots",
        }
    }

    fn update(self) -> &'static str {
        match self {
            Lists::Instances => "UPDATE instances SET profiles = ? WHERE rowid = ?",
            Lists::Snapshots => "UPDATE snapshots SET profiles = ? WHERE rowid = ?",
        }
    }
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
        assert_eq!(
            p.devices.keys().collect::<Vec<_>>(),
            ["root"],
            "only the root disk LXD and Incus clients expect"
        );
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

    fn profile(name: &str) -> ProfileRow {
        ProfileRow {
            name: name.into(),
            description: String::new(),
            config: Config::from([("limits.memory".into(), "64MiB".into())]),
            devices: Devices::new(),
        }
    }

    #[tokio::test]
    async fn rename_follows_into_instances_and_snapshots_and_delete_refuses_a_used_one()
    -> Result<(), DbError> {
        let pool = crate::db::instances::tests::pool_with_image().await?;
        insert(&pool, &profile("p1")).await?;
        assert!(matches!(
            insert(&pool, &profile("p1")).await,
            Err(DbError::Conflict(_))
        ));
        insert(&pool, &profile("p2")).await?;
        let lists = [
            vec!["default".to_string(), "p1".to_string()],
            vec!["p2".to_string()],
        ];
        for (name, profiles) in [("c1", &lists[0]), ("c2", &lists[1])] {
            crate::db::instances::insert(
                &pool,
                &crate::db::NewInstance {
                    name,
                    description: "",
                    architecture: "x86_64",
                    ephemeral: false,
                    image_fingerprint: "abc",
                    config: &Config::new(),
                    devices: &Devices::new(),
                    profiles,
                    created_at: "t",
                },
            )
            .await?;
        }
        crate::db::snapshots::insert(
            &pool,
            &crate::db::snapshots::SnapshotRow {
                instance: "c1".into(),
                name: "s0".into(),
                created_at: "t".into(),
                config: Config::new(),
                devices: Devices::new(),
                profiles: vec!["p1".into()],
                expires_at: String::new(),
            },
        )
        .await?;
        assert!(matches!(
            rename(&pool, "p1", "p2").await,
            Err(DbError::Conflict(_))
        ));
        assert!(!rename(&pool, "nope", "p3").await?);
        assert!(rename(&pool, "p1", "p3").await?);
        let c1 = crate::db::instances::get(&pool, "c1").await?;
        assert_eq!(
            c1.map(|r| r.profiles),
            Some(vec!["default".into(), "p3".into()])
        );
        let c2 = crate::db::instances::get(&pool, "c2").await?;
        assert_eq!(c2.map(|r| r.profiles), Some(vec!["p2".into()]));
        let s0 = crate::db::snapshots::get(&pool, "c1", "s0").await?;
        assert_eq!(s0.map(|s| s.profiles), Some(vec!["p3".into()]));
        assert!(get(&pool, "p1").await?.is_none());
        assert_eq!(
            get(&pool, "p3").await?.map(|p| p.config),
            Some(profile("x").config)
        );

        assert_eq!(
            delete_unused(&pool, "p3").await?,
            Err(vec!["c1".to_string()])
        );
        assert!(get(&pool, "p3").await?.is_some());
        crate::db::instances::delete(&pool, "c1").await?;
        assert_eq!(delete_unused(&pool, "p3").await?, Ok(true));
        assert_eq!(delete_unused(&pool, "p3").await?, Ok(false));
        Ok(())
    }

    #[tokio::test]
    async fn a_profile_and_its_instances_configs_change_together() -> Result<(), DbError> {
        let pool = crate::db::instances::tests::pool_with_image().await?;
        insert(&pool, &profile("p1")).await?;
        let mut p = profile("p1");
        p.config.insert("limits.cpu".into(), "1".into());
        // An instance that does not exist: the statement changes nothing, the rest holds.
        update_with_instances(&pool, &p, &[("ghost".into(), Config::new())]).await?;
        assert_eq!(get(&pool, "p1").await?, Some(p));
        Ok(())
    }
}
