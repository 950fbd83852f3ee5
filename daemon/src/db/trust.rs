//! The `server_config` and `certificates` tables: the server's own configuration and the
//! trust store of the HTTPS listener.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{DbError, Pool, is_unique_violation};

/// One row of `certificates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub fingerprint: String,
    /// `client` or `metrics`.
    pub kind: String,
    pub name: String,
    /// PEM.
    pub certificate: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub description: String,
}

/// The whole server configuration.
pub async fn config(pool: &Pool) -> Result<BTreeMap<String, String>, DbError> {
    let rows = sqlx::query("SELECT key, value FROM server_config")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
        .collect()
}

/// Replace the whole server configuration, in one transaction.
pub async fn set_config(pool: &Pool, config: &BTreeMap<String, String>) -> Result<(), DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM server_config")
        .execute(&mut *tx)
        .await?;
    for (k, v) in config {
        sqlx::query("INSERT INTO server_config (key, value) VALUES (?, ?)")
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<CertificateRow, DbError> {
    let projects: String = r.try_get("projects")?;
    Ok(CertificateRow {
        fingerprint: r.try_get("fingerprint")?,
        kind: r.try_get("type")?,
        name: r.try_get("name")?,
        certificate: r.try_get("certificate")?,
        restricted: r.try_get::<i64, _>("restricted")? != 0,
        projects: serde_json::from_str(&projects).map_err(|source| DbError::Json {
            column: "projects",
            source,
        })?,
        description: r.try_get("description")?,
    })
}

/// Every trusted certificate, by name.
pub async fn certificates(pool: &Pool) -> Result<Vec<CertificateRow>, DbError> {
    let rows = sqlx::query(
        "SELECT fingerprint, type, name, certificate, restricted, projects, description \
         FROM certificates ORDER BY name, fingerprint",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Add a certificate; `Conflict` if its fingerprint is trusted already.
pub async fn insert_certificate(pool: &Pool, row: &CertificateRow) -> Result<(), DbError> {
    let res = sqlx::query(
        "INSERT INTO certificates \
         (fingerprint, type, name, certificate, restricted, projects, description) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.fingerprint)
    .bind(&row.kind)
    .bind(&row.name)
    .bind(&row.certificate)
    .bind(i64::from(row.restricted))
    .bind(serde_json::to_string(&row.projects).unwrap_or_else(|_| "[]".into()))
    .bind(&row.description)
    .execute(pool)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!(
            "certificate {}",
            row.fingerprint
        ))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Replace a certificate's writable fields (not its certificate or fingerprint).
pub async fn update_certificate(pool: &Pool, row: &CertificateRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE certificates SET type = ?, name = ?, restricted = ?, projects = ?, \
         description = ? WHERE fingerprint = ?",
    )
    .bind(&row.kind)
    .bind(&row.name)
    .bind(i64::from(row.restricted))
    .bind(serde_json::to_string(&row.projects).unwrap_or_else(|_| "[]".into()))
    .bind(&row.description)
    .bind(&row.fingerprint)
    .execute(pool)
    .await?;
    Ok(())
}

/// Remove a certificate; false if there was none.
pub async fn delete_certificate(pool: &Pool, fingerprint: &str) -> Result<bool, DbError> {
    let res = sqlx::query("DELETE FROM certificates WHERE fingerprint = ?")
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(res.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[tokio::test]
    async fn config_and_certificates_round_trip() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let pool = super::super::open(&tmp.path().join("ctld.db")).await?;
        let mut cfg = BTreeMap::new();
        cfg.insert("core.https_address".to_string(), ":8443".to_string());
        set_config(&pool, &cfg).await?;
        assert_eq!(config(&pool).await?, cfg);
        set_config(&pool, &BTreeMap::new()).await?;
        assert!(config(&pool).await?.is_empty());

        let mut row = CertificateRow {
            fingerprint: "ab".repeat(32),
            kind: "client".into(),
            name: "laptop".into(),
            certificate: "PEM".into(),
            restricted: true,
            projects: vec!["default".into()],
            description: String::new(),
        };
        insert_certificate(&pool, &row).await?;
        assert!(matches!(
            insert_certificate(&pool, &row).await,
            Err(DbError::Conflict(_))
        ));
        row.name = "desk".into();
        row.restricted = false;
        update_certificate(&pool, &row).await?;
        assert_eq!(certificates(&pool).await?, vec![row.clone()]);
        assert!(delete_certificate(&pool, &row.fingerprint).await?);
        assert!(!delete_certificate(&pool, &row.fingerprint).await?);
        assert!(certificates(&pool).await?.is_empty());
        Ok(())
    }
}
