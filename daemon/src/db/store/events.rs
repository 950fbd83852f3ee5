//! The cluster's event relay (PostgreSQL only): each member inserts its events and
//! announces each with `NOTIFY ctl_events, '<id>'`; the others `LISTEN` and read the row.
//! A standalone server has nobody to tell: these do nothing on SQLite.

use sqlx::postgres::PgListener;

use super::{POSTGRES, Store};
use crate::db::DbError;

/// The notification channel.
pub const CHANNEL: &str = "ctl_events";

impl Store {
    /// Publish `body` (an event's JSON) from `member`: one statement inserts the row and
    /// notifies its id (delivered when the statement commits).
    pub async fn publish_event(&self, member: &str, body: &str) -> Result<(), DbError> {
        let Store::Postgres(pool) = self else {
            return Ok(());
        };
        sqlx::query(POSTGRES.sql(
            "WITH e AS (INSERT INTO cluster_events (member, body, created) \
             VALUES ($1, $2, {now}) RETURNING id) \
             SELECT pg_notify('ctl_events', CAST(id AS TEXT)) FROM e",
        ))
        .bind(member)
        .bind(body)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The event `id`: who published it, and its JSON.
    pub async fn event(&self, id: i64) -> Result<Option<(String, String)>, DbError> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        Ok(
            sqlx::query_as("SELECT member, body FROM cluster_events WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?,
        )
    }

    /// A connection listening on [`CHANNEL`] (`None` on SQLite).
    pub async fn listen_events(&self) -> Result<Option<PgListener>, DbError> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(listener))
    }

    /// Delete events older than `keep_ms`, only while `holder` holds the unexpired lease
    /// of `term` (fenced like every leader's write).
    pub async fn prune_events_as_leader(
        &self,
        holder: &str,
        term: i64,
        keep_ms: i64,
    ) -> Result<u64, DbError> {
        let Store::Postgres(pool) = self else {
            return Ok(0);
        };
        let res = sqlx::query(POSTGRES.sql(
            "DELETE FROM cluster_events WHERE created < {now} - $3 AND EXISTS (\
             SELECT 1 FROM cluster_lease WHERE id = 1 AND holder = $1 AND term = $2 \
             AND expires > {now})",
        ))
        .bind(holder)
        .bind(term)
        .bind(keep_ms)
        .execute(pool)
        .await?;
        Ok(res.rows_affected())
    }
}
