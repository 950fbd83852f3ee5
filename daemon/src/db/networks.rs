//! The `networks` and `network_leases` tables.

use std::collections::BTreeMap;

use sqlx::{Row, SqliteExecutor};

use super::{DbError, Pool, is_unique_violation};

/// Config map as stored.
pub type Config = BTreeMap<String, String>;

/// One row of `networks`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRow {
    pub name: String,
    pub description: String,
    pub kind: String,
    pub config: Config,
    pub created_at: String,
}

/// One address handed out on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub network: String,
    pub instance: String,
    pub device: String,
    pub address: String,
    pub hwaddr: String,
    /// Set by the device's `ipv4.address` (not picked by ctl).
    pub is_static: bool,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<NetworkRow, DbError> {
    let config: String = r.try_get("config")?;
    Ok(NetworkRow {
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        kind: r.try_get("type")?,
        config: serde_json::from_str(&config).map_err(|source| DbError::Json {
            column: "config",
            source,
        })?,
        created_at: r.try_get("created_at")?,
    })
}

fn lease_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<LeaseRow, DbError> {
    Ok(LeaseRow {
        network: r.try_get("network")?,
        instance: r.try_get("instance")?,
        device: r.try_get("device")?,
        address: r.try_get("address")?,
        hwaddr: r.try_get("hwaddr")?,
        is_static: r.try_get("static")?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Insert a network; `Conflict` if the name is taken.
pub async fn insert(db: impl SqliteExecutor<'_>, row: &NetworkRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO networks (name, description, type, config, created_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.kind)
    .bind(to_json(&row.config))
    .bind(&row.created_at)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(DbError::Conflict(format!("network \"{}\"", row.name)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// One network by name.
pub async fn get(pool: &Pool, name: &str) -> Result<Option<NetworkRow>, DbError> {
    let row = sqlx::query(
        "SELECT name, description, type, config, created_at FROM networks WHERE name = ?",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every network, by name.
pub async fn list(pool: &Pool) -> Result<Vec<NetworkRow>, DbError> {
    let rows = sqlx::query(
        "SELECT name, description, type, config, created_at FROM networks ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Replace a network's description and config.
pub async fn update(
    pool: &Pool,
    name: &str,
    description: &str,
    config: &Config,
) -> Result<(), DbError> {
    sqlx::query("UPDATE networks SET description = ?, config = ? WHERE name = ?")
        .bind(description)
        .bind(to_json(config))
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delete a network (and, by cascade, its leases). Returns whether it existed.
pub async fn delete(pool: &Pool, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM networks WHERE name = ?")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The column list of `network_leases`, as a literal so queries stay static strings.
macro_rules! lease_columns {
    () => {
        "network, instance, device, address, hwaddr, static"
    };
}

/// Every lease of a network, by address.
pub async fn leases(pool: &Pool, network: &str) -> Result<Vec<LeaseRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM network_leases WHERE network = ? ORDER BY instance, device"
    ))
    .bind(network)
    .fetch_all(pool)
    .await?;
    rows.iter().map(lease_from_row).collect()
}

/// Every lease of an instance.
pub async fn instance_leases(pool: &Pool, instance: &str) -> Result<Vec<LeaseRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM network_leases WHERE instance = ? ORDER BY device"
    ))
    .bind(instance)
    .fetch_all(pool)
    .await?;
    rows.iter().map(lease_from_row).collect()
}

/// Record a lease, replacing the one the same (network, instance, device) had. `Conflict`
/// when another NIC on the network holds the address.
pub async fn put_lease(pool: &Pool, lease: &LeaseRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO network_leases (network, instance, device, address, hwaddr, static) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (network, instance, device) DO UPDATE SET \
         address = excluded.address, hwaddr = excluded.hwaddr, static = excluded.static",
    )
    .bind(&lease.network)
    .bind(&lease.instance)
    .bind(&lease.device)
    .bind(&lease.address)
    .bind(&lease.hwaddr)
    .bind(lease.is_static)
    .execute(pool)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "address {} on network \"{}\"",
            lease.address, lease.network
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Release one lease.
pub async fn delete_lease(
    pool: &Pool,
    network: &str,
    instance: &str,
    device: &str,
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM network_leases WHERE network = ? AND instance = ? AND device = ?")
        .bind(network)
        .bind(instance)
        .bind(device)
        .execute(pool)
        .await?;
    Ok(())
}

/// A daemon-wide setting.
pub async fn setting(pool: &Pool, key: &str) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

/// Set a daemon-wide setting.
pub async fn set_setting(pool: &Pool, key: &str, value: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES (?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(pool)
    .await?;
    Ok(())
}

/// Set several daemon-wide settings in one transaction.
pub async fn set_settings(pool: &Pool, settings: &[(&str, &str)]) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    for (key, value) in settings {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::instances;

    async fn pool() -> Result<Pool, DbError> {
        instances::tests::pool_with_c1_c2().await
    }

    fn net(name: &str) -> NetworkRow {
        NetworkRow {
            name: name.into(),
            description: String::new(),
            kind: "bridge".into(),
            config: BTreeMap::from([("ipv4.address".to_string(), "10.9.0.1/24".to_string())]),
            created_at: "t".into(),
        }
    }

    fn lease(instance: &str, address: &str) -> LeaseRow {
        LeaseRow {
            network: "n1".into(),
            instance: instance.into(),
            device: "eth0".into(),
            address: address.into(),
            hwaddr: "00:16:3e:00:00:01".into(),
            is_static: false,
        }
    }

    #[tokio::test]
    async fn networks_crud() -> Result<(), DbError> {
        let pool = pool().await?;
        insert(&pool, &net("n1")).await?;
        assert!(matches!(
            insert(&pool, &net("n1")).await,
            Err(DbError::Conflict(_))
        ));
        let mut cfg = net("n1").config;
        cfg.insert("dns.domain".into(), "lab".into());
        update(&pool, "n1", "d", &cfg).await?;
        let got = get(&pool, "n1").await?;
        assert_eq!(
            got.map(|r| (r.description, r.config)),
            Some(("d".into(), cfg))
        );
        assert_eq!(list(&pool).await?.len(), 1);
        assert!(delete(&pool, "n1").await?);
        assert!(get(&pool, "n1").await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn an_address_is_held_once_and_released_with_its_instance() -> Result<(), DbError> {
        let pool = pool().await?;
        insert(&pool, &net("n1")).await?;
        put_lease(&pool, &lease("c1", "10.9.0.2")).await?;
        assert!(matches!(
            put_lease(&pool, &lease("c2", "10.9.0.2")).await,
            Err(DbError::Conflict(_))
        ));
        // The same NIC moving to another address replaces its lease.
        put_lease(&pool, &lease("c1", "10.9.0.3")).await?;
        put_lease(&pool, &lease("c2", "10.9.0.2")).await?;
        let all = leases(&pool, "n1").await?;
        assert_eq!(
            all.iter().map(|l| l.address.as_str()).collect::<Vec<_>>(),
            ["10.9.0.3", "10.9.0.2"]
        );
        instances::delete(&pool, "c1").await?;
        assert_eq!(leases(&pool, "n1").await?.len(), 1);
        assert!(instance_leases(&pool, "c1").await?.is_empty());
        delete_lease(&pool, "n1", "c2", "eth0").await?;
        assert!(leases(&pool, "n1").await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn settings_round_trip() -> Result<(), DbError> {
        let pool = pool().await?;
        assert_eq!(setting(&pool, "k").await?, None);
        set_setting(&pool, "k", "1").await?;
        set_setting(&pool, "k", "2").await?;
        assert_eq!(setting(&pool, "k").await?, Some("2".into()));
        Ok(())
    }
}
