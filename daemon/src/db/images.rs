//! The `images` and `image_aliases` tables.

use std::collections::BTreeMap;

use sqlx::{Row, SqliteExecutor};

use super::{DbError, Pool, is_unique_violation};

/// One row of `images` with its aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRow {
    pub fingerprint: String,
    pub filename: String,
    pub size: i64,
    pub architecture: String,
    pub created_at: String,
    pub uploaded_at: String,
    pub last_used_at: String,
    pub public: bool,
    pub cached: bool,
    pub properties: BTreeMap<String, String>,
    /// Where a pulled image came from (JSON), or empty.
    pub source: String,
    /// `(name, description)` of each alias.
    pub aliases: Vec<(String, String)>,
}

/// What storing an image records.
#[derive(Debug, Clone)]
pub struct NewImage<'a> {
    pub fingerprint: &'a str,
    pub filename: &'a str,
    pub size: i64,
    pub architecture: &'a str,
    pub created_at: &'a str,
    pub properties: &'a BTreeMap<String, String>,
    pub public: bool,
    pub cached: bool,
}

/// Insert an image row (uploaded now).
pub async fn insert(db: impl SqliteExecutor<'_>, new: &NewImage<'_>) -> Result<(), DbError> {
    let props = serde_json::to_string(new.properties).unwrap_or_else(|_| "{}".into());
    let res = sqlx::query(
        "INSERT INTO images (fingerprint, filename, size, architecture, created_at, uploaded_at, \
         public, cached, properties) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.fingerprint)
    .bind(new.filename)
    .bind(new.size)
    .bind(new.architecture)
    .bind(new.created_at)
    .bind(new.created_at)
    .bind(new.public)
    .bind(new.cached)
    .bind(props)
    .execute(db)
    .await;
    match res {
        Err(e) if is_unique_violation(&e) => {
            Err(DbError::Conflict(format!("image {}", new.fingerprint)))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Point alias `name` at `fingerprint` (replacing an existing alias of that name).
pub async fn set_alias(
    db: impl SqliteExecutor<'_>,
    name: &str,
    fingerprint: &str,
    description: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO image_aliases (name, fingerprint, description) VALUES (?, ?, ?) \
         ON CONFLICT(name) DO UPDATE SET fingerprint = excluded.fingerprint, \
         description = excluded.description",
    )
    .bind(name)
    .bind(fingerprint)
    .bind(description)
    .execute(db)
    .await?;
    Ok(())
}

/// Make alias `name` for `fingerprint`; `Conflict` if the name is taken.
pub async fn create_alias(
    pool: &Pool,
    name: &str,
    fingerprint: &str,
    description: &str,
) -> Result<(), DbError> {
    let res =
        sqlx::query("INSERT INTO image_aliases (name, fingerprint, description) VALUES (?, ?, ?)")
            .bind(name)
            .bind(fingerprint)
            .bind(description)
            .execute(pool)
            .await;
    match res {
        Err(e) if is_unique_violation(&e) => Err(DbError::Conflict(format!("alias \"{name}\""))),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Remove alias `name`; whether it existed.
pub async fn delete_alias(pool: &Pool, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM image_aliases WHERE name = ?")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The fingerprint alias `name` points at.
pub async fn resolve_alias(pool: &Pool, name: &str) -> Result<Option<(String, String)>, DbError> {
    let row = sqlx::query("SELECT fingerprint, description FROM image_aliases WHERE name = ?")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    row.map(|r| -> Result<_, DbError> { Ok((r.try_get(0)?, r.try_get(1)?)) })
        .transpose()
}

/// Every alias `(name, fingerprint, description)`, by name.
pub async fn aliases(pool: &Pool) -> Result<Vec<(String, String, String)>, DbError> {
    let rows =
        sqlx::query("SELECT name, fingerprint, description FROM image_aliases ORDER BY name")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// The column list of `images`, as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "fingerprint, filename, size, architecture, created_at, uploaded_at, last_used_at, \
         public, cached, properties, source"
    };
}

async fn from_row(pool: &Pool, r: &sqlx::sqlite::SqliteRow) -> Result<ImageRow, DbError> {
    let fingerprint: String = r.try_get("fingerprint")?;
    let props: String = r.try_get("properties")?;
    let aliases = sqlx::query(
        "SELECT name, description FROM image_aliases WHERE fingerprint = ? ORDER BY name",
    )
    .bind(&fingerprint)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|a| Ok((a.try_get(0)?, a.try_get(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(ImageRow {
        fingerprint,
        filename: r.try_get("filename")?,
        size: r.try_get("size")?,
        architecture: r.try_get("architecture")?,
        created_at: r.try_get("created_at")?,
        uploaded_at: r.try_get("uploaded_at")?,
        last_used_at: r.try_get("last_used_at")?,
        public: r.try_get("public")?,
        cached: r.try_get("cached")?,
        properties: serde_json::from_str(&props).map_err(|source| DbError::Json {
            column: "properties",
            source,
        })?,
        source: r.try_get("source")?,
        aliases,
    })
}

/// Every image, by fingerprint.
pub async fn list(pool: &Pool) -> Result<Vec<ImageRow>, DbError> {
    find_prefix(pool, "").await
}

/// Images whose fingerprint starts with `prefix`.
pub async fn find_prefix(pool: &Pool, prefix: &str) -> Result<Vec<ImageRow>, DbError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM images WHERE substr(fingerprint, 1, length(?1)) = ?1 ORDER BY fingerprint"
    ))
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(from_row(pool, r).await?);
    }
    Ok(out)
}

/// Record when an image was uploaded (`insert` takes its creation date for both).
pub async fn set_uploaded_at(
    db: impl SqliteExecutor<'_>,
    fingerprint: &str,
    at: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE images SET uploaded_at = ? WHERE fingerprint = ?")
        .bind(at)
        .bind(fingerprint)
        .execute(db)
        .await?;
    Ok(())
}

/// Change what an image's owner may edit: public, properties.
pub async fn update(
    pool: &Pool,
    fingerprint: &str,
    public: bool,
    properties: &BTreeMap<String, String>,
) -> Result<bool, DbError> {
    let props = serde_json::to_string(properties).unwrap_or_else(|_| "{}".into());
    let r = sqlx::query("UPDATE images SET public = ?, properties = ? WHERE fingerprint = ?")
        .bind(public)
        .bind(props)
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Mark an image cached (stored on the way to an instance) or explicit, and record where
/// it came from (`source`, JSON or empty).
pub async fn set_origin(
    pool: &Pool,
    fingerprint: &str,
    cached: bool,
    source: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE images SET cached = ?, source = ? WHERE fingerprint = ?")
        .bind(cached)
        .bind(source)
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(())
}

/// Record that an image was used now.
pub async fn touch(pool: &Pool, fingerprint: &str, now: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE images SET last_used_at = ? WHERE fingerprint = ?")
        .bind(now)
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delete an image and its aliases. Fails while an instance uses it.
pub async fn delete(pool: &Pool, fingerprint: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM images WHERE fingerprint = ?")
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    #[tokio::test]
    async fn aliases_prefix_and_cascade() -> Result<(), DbError> {
        let pool = db::open_memory().await?;
        let mut props = BTreeMap::new();
        props.insert("os".to_string(), "busybox".to_string());
        let new = NewImage {
            fingerprint: "abcdef01",
            filename: "",
            size: 10,
            architecture: "x86_64",
            created_at: "t",
            properties: &props,
            public: false,
            cached: true,
        };
        insert(&pool, &new).await?;
        assert!(matches!(
            insert(&pool, &new).await,
            Err(DbError::Conflict(_))
        ));
        set_alias(&pool, "debian/bookworm", "abcdef01", "d").await?;
        assert_eq!(
            resolve_alias(&pool, "debian/bookworm").await?,
            Some(("abcdef01".into(), "d".into()))
        );
        let found = find_prefix(&pool, "abcd").await?;
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].aliases,
            vec![("debian/bookworm".into(), "d".into())]
        );
        assert_eq!(
            found[0].properties.get("os").map(String::as_str),
            Some("busybox")
        );
        assert!(find_prefix(&pool, "ff").await?.is_empty());
        assert!(matches!(
            create_alias(&pool, "debian/bookworm", "abcdef01", "").await,
            Err(DbError::Conflict(_))
        ));
        create_alias(&pool, "mine", "abcdef01", "m").await?;
        assert!(delete_alias(&pool, "mine").await?);
        assert!(!delete_alias(&pool, "mine").await?);
        assert!(delete(&pool, "abcdef01").await?);
        assert_eq!(resolve_alias(&pool, "debian/bookworm").await?, None);
        assert!(aliases(&pool).await?.is_empty());
        Ok(())
    }
}
