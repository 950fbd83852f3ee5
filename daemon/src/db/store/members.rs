//! Cluster members and their heartbeats, the leader lease, and join tokens.

use sha2::{Digest, Sha256};

use super::{
    DbError, LeaseRow, MemberRow, MemberState, NewMember, Store, conflict_on_unique, dispatch,
    insert_member,
};

/// name, address, fingerprint, certificate, architecture, description, state, heartbeat
/// age, created.
type MemberTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
);

const SELECT_MEMBERS: &str = "SELECT name, address, fingerprint, certificate, architecture, \
     description, state, {now} - heartbeat, created FROM cluster_members";

const SELECT_MEMBER: &str = "SELECT name, address, fingerprint, certificate, architecture, \
     description, state, {now} - heartbeat, created FROM cluster_members WHERE name = $1";

fn member_from(t: MemberTuple, offline_after_ms: i64) -> Result<MemberRow, DbError> {
    let (name, address, fingerprint, certificate, architecture, description, state, age, created) =
        t;
    Ok(MemberRow {
        name,
        address,
        fingerprint,
        certificate,
        architecture,
        description,
        state: MemberState::parse(&state)?,
        online: age < offline_after_ms,
        heartbeat_age_ms: age,
        created_ms: created,
    })
}

/// The hex SHA-256 of a join token's secret: what the table holds instead of it.
fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Add a member, its heartbeat now; `Conflict` if its name, address or certificate is
    /// another member's.
    pub async fn add_member(&self, m: &NewMember) -> Result<(), DbError> {
        let res = dispatch!(self, pool, d => {
            insert_member!(d, m)
                .execute(pool)
                .await
                .map(|_| ())
        });
        match res {
            Ok(_) => Ok(()),
            Err(e) if super::is_unique_violation(&e) => {
                Err(DbError::Conflict(self.member_conflict(m).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What about `m` another member has already.
    async fn member_conflict(&self, m: &NewMember) -> Result<String, DbError> {
        let taken: Vec<(String, String, String)> = dispatch!(self, pool, _d => {
            sqlx::query_as(
                "SELECT name, address, fingerprint FROM cluster_members \
                 WHERE name = $1 OR address = $2 OR fingerprint = $3",
            )
            .bind(&m.name)
            .bind(&m.address)
            .bind(&m.fingerprint)
            .fetch_all(pool)
            .await?
        });
        Ok(if taken.iter().any(|t| t.0 == m.name) {
            format!("cluster member \"{}\"", m.name)
        } else if taken.iter().any(|t| t.1 == m.address) {
            format!("cluster member with address {}", m.address)
        } else {
            format!("cluster member with certificate {}", m.fingerprint)
        })
    }

    /// Every member, by name; `online` when its heartbeat is younger than
    /// `offline_after_ms`.
    pub async fn members(&self, offline_after_ms: i64) -> Result<Vec<MemberRow>, DbError> {
        let rows: Vec<MemberTuple> = dispatch!(self, pool, d => {
            sqlx::query_as(d.sql(SELECT_MEMBERS)).fetch_all(pool).await?
        });
        let mut rows = rows
            .into_iter()
            .map(|t| member_from(t, offline_after_ms))
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    /// One member.
    pub async fn member(
        &self,
        name: &str,
        offline_after_ms: i64,
    ) -> Result<Option<MemberRow>, DbError> {
        let row: Option<MemberTuple> = dispatch!(self, pool, d => {
            sqlx::query_as(d.sql(SELECT_MEMBER)).bind(name).fetch_optional(pool).await?
        });
        row.map(|t| member_from(t, offline_after_ms)).transpose()
    }

    /// Record that `name` is alive; false if there is no such member (it was removed).
    pub async fn heartbeat(&self, name: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, d => {
            let sql = "UPDATE cluster_members SET heartbeat = {now} WHERE name = $1";
            let res = sqlx::query(d.sql(sql))
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Evacuate a member or bring it back; false if there is no such member.
    pub async fn set_member_state(&self, name: &str, state: MemberState) -> Result<bool, DbError> {
        dispatch!(self, pool, _d => {
            let res = sqlx::query("UPDATE cluster_members SET state = $1 WHERE name = $2")
                .bind(state.as_str())
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Remove a member and its image holdings (aliases of images no member holds any
    /// more go too); `Conflict` while it still holds instances; false if there was none.
    pub async fn remove_member(&self, name: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            // Placement takes the same lock: no instance lands on the member meanwhile.
            if let Some(lock) = d.lock("cluster_instances") {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let held: Option<String> = sqlx::query_scalar(
                "SELECT MIN(name) FROM cluster_instances WHERE member = $1",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(instance) = held {
                return Err(DbError::Conflict(format!(
                    "instance \"{instance}\" on cluster member \"{name}\""
                )));
            }
            sqlx::query("DELETE FROM cluster_images WHERE member = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(super::images::DELETE_ORPHAN_ALIASES)
                .execute(&mut *tx)
                .await?;
            let res = sqlx::query("DELETE FROM cluster_members WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Take or renew the leader lease for `ttl_ms`, in one atomic statement. `Some(term)`
    /// when `holder` holds it afterwards: the same term when it held it unexpired, the
    /// next one when the lease was expired (its own expired lease too: whatever it did
    /// as leader under the old term is fenced off). `None` while another holds it.
    pub async fn acquire_lease(&self, holder: &str, ttl_ms: i64) -> Result<Option<i64>, DbError> {
        dispatch!(self, pool, d => {
            let term: Option<i64> = sqlx::query_scalar(d.sql(
                "UPDATE cluster_lease SET \
                 term = CASE WHEN holder = $1 AND expires > {now} THEN term ELSE term + 1 END, \
                 holder = $1, expires = {now} + $2 \
                 WHERE id = 1 AND (holder = $1 OR expires <= {now}) RETURNING term",
            ))
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(pool)
            .await?;
            Ok(term)
        })
    }

    /// The leader lease as it is now.
    pub async fn lease(&self) -> Result<LeaseRow, DbError> {
        dispatch!(self, pool, d => {
            let (holder, term, remaining_ms): (String, i64, i64) = sqlx::query_as(d.sql(
                "SELECT holder, term, expires - {now} FROM cluster_lease WHERE id = 1",
            ))
            .fetch_one(pool)
            .await?;
            Ok(LeaseRow { holder, term, remaining_ms })
        })
    }

    /// Let the lease expire now if `holder` holds it (a leader that shuts down).
    pub async fn release_lease(&self, holder: &str) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            sqlx::query(d.sql(
                "UPDATE cluster_lease SET expires = {now} - 1 \
                 WHERE id = 1 AND holder = $1 AND expires > {now}",
            ))
            .bind(holder)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Delete the expired join tokens, only while `holder` still holds the unexpired lease
    /// of `term`: the check is part of the same statement, so a deposed leader deletes
    /// nothing. The number deleted.
    pub async fn prune_join_tokens_as_leader(
        &self,
        holder: &str,
        term: i64,
    ) -> Result<u64, DbError> {
        dispatch!(self, pool, d => {
            let res = sqlx::query(d.sql(
                "DELETE FROM cluster_tokens WHERE expires <= {now} AND EXISTS (\
                 SELECT 1 FROM cluster_lease WHERE id = 1 AND holder = $1 AND term = $2 \
                 AND expires > {now})",
            ))
            .bind(holder)
            .bind(term)
            .execute(pool)
            .await?;
            Ok(res.rows_affected())
        })
    }

    /// Record a join token for the future member `name`, good for `ttl_ms` (only the
    /// secret's SHA-256 is stored). `Conflict` when a member or a pending unexpired token
    /// has that name; an expired one is replaced.
    pub async fn add_join_token(
        &self,
        name: &str,
        secret: &str,
        ttl_ms: i64,
    ) -> Result<(), DbError> {
        let hash = secret_hash(secret);
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            let member: Option<String> =
                sqlx::query_scalar("SELECT name FROM cluster_members WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if member.is_some() {
                return Err(DbError::Conflict(format!("cluster member \"{name}\"")));
            }
            sqlx::query(d.sql("DELETE FROM cluster_tokens WHERE name = $1 AND expires <= {now}"))
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query(d.sql(
                "INSERT INTO cluster_tokens (name, secret_sha256, expires) \
                 VALUES ($1, $2, {now} + $3)",
            ))
            .bind(name)
            .bind(&hash)
            .bind(ttl_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("join token for \"{name}\"")))?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Use up the unexpired token with `secret`: the name of the member it admits. Single
    /// use: the row goes in the same statement.
    pub async fn redeem_join_token(&self, secret: &str) -> Result<Option<String>, DbError> {
        let hash = secret_hash(secret);
        dispatch!(self, pool, d => {
            let name: Option<String> = sqlx::query_scalar(d.sql(
                "DELETE FROM cluster_tokens WHERE secret_sha256 = $1 AND expires > {now} \
                 RETURNING name",
            ))
            .bind(&hash)
            .fetch_optional(pool)
            .await?;
            Ok(name)
        })
    }

    /// Join: spend the token with `secret` and record `m` in one transaction. `Ok(false)`
    /// (nothing changed, the token unspent) when no unexpired token has that secret for
    /// `m.name`; `Conflict` (the token unspent too) if the name, address or certificate is
    /// a member's already.
    pub async fn join_member(&self, secret: &str, m: &NewMember) -> Result<bool, DbError> {
        let hash = secret_hash(secret);
        let res: Result<bool, sqlx::Error> = dispatch!(self, pool, d => {
            async {
                let mut tx = pool.begin_with(d.begin_write).await?;
                let name: Option<String> = sqlx::query_scalar(d.sql(
                    "DELETE FROM cluster_tokens WHERE secret_sha256 = $1 AND expires > {now} \
                     RETURNING name",
                ))
                .bind(&hash)
                .fetch_optional(&mut *tx)
                .await?;
                if name.as_deref() != Some(m.name.as_str()) {
                    tx.rollback().await?;
                    return Ok(false);
                }
                insert_member!(d, m).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }
            .await
        });
        match res {
            Ok(joined) => Ok(joined),
            Err(e) if super::is_unique_violation(&e) => {
                Err(DbError::Conflict(self.member_conflict(m).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The pending unexpired tokens by name: the future member's name and the time left.
    pub async fn join_tokens(&self) -> Result<Vec<(String, i64)>, DbError> {
        let mut rows: Vec<(String, i64)> = dispatch!(self, pool, d => {
            sqlx::query_as(d.sql(
                "SELECT name, expires - {now} FROM cluster_tokens WHERE expires > {now}",
            ))
            .fetch_all(pool)
            .await?
        });
        rows.sort();
        Ok(rows)
    }

    /// Revoke the token for `name`; false if there was none.
    pub async fn delete_join_token(&self, name: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, _d => {
            let res = sqlx::query("DELETE FROM cluster_tokens WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }
}
