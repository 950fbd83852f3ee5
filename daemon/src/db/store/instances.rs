//! Which member holds which instance: placement of new ones, and each member's report of
//! what it has.

use std::collections::{BTreeSet, HashMap};

use super::{
    DbError, INSERT_INSTANCE, LocationRow, MemberState, PlaceError, Store, conflict_on_unique,
    dispatch,
};

/// A member as placement sees it.
struct Candidate {
    name: String,
    state: MemberState,
    heartbeat_age_ms: i64,
    instances: i64,
}

/// The member to place an instance on: `target`, if it can take one, or the online,
/// not evacuated member with the fewest instances (ties: the first by name).
fn choose(
    candidates: Vec<Candidate>,
    target: Option<&str>,
    offline_after_ms: i64,
) -> Result<String, PlaceError> {
    let online = |c: &Candidate| c.heartbeat_age_ms < offline_after_ms;
    match target {
        Some(t) => {
            let c = candidates
                .into_iter()
                .find(|c| c.name == t)
                .ok_or_else(|| PlaceError::UnknownMember(t.to_string()))?;
            if !online(&c) {
                Err(PlaceError::Offline(c.name))
            } else if c.state == MemberState::Evacuated {
                Err(PlaceError::Evacuated(c.name))
            } else {
                Ok(c.name)
            }
        }
        None => candidates
            .into_iter()
            .filter(|c| online(c) && c.state == MemberState::Online)
            .min_by(|a, b| (a.instances, &a.name).cmp(&(b.instances, &b.name)))
            .map(|c| c.name)
            .ok_or(PlaceError::NoMember),
    }
}

impl Store {
    /// Reserve `name` on `target` (which must exist, be online and not evacuated) or,
    /// without one, on the least-loaded online member that is not evacuated. Decided with
    /// placement locked (PostgreSQL: a table lock; SQLite: the write lock from the start),
    /// so concurrent placements never count from the same stale numbers. The member.
    pub async fn place_instance(
        &self,
        name: &str,
        target: Option<&str>,
        offline_after_ms: i64,
    ) -> Result<String, PlaceError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            if let Some(lock) = d.lock("cluster_instances") {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let held: Option<String> =
                sqlx::query_scalar("SELECT member FROM cluster_instances WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if held.is_some() {
                return Err(PlaceError::Taken(name.to_string()));
            }
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(d.sql(
                "SELECT m.name, m.state, {now} - m.heartbeat, \
                 (SELECT COUNT(*) FROM cluster_instances i WHERE i.member = m.name) \
                 FROM cluster_members m",
            ))
            .fetch_all(&mut *tx)
            .await?;
            let candidates = rows
                .into_iter()
                .map(|(name, state, heartbeat_age_ms, instances)| {
                    Ok(Candidate {
                        name,
                        state: MemberState::parse(&state)?,
                        heartbeat_age_ms,
                        instances,
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            let member = choose(candidates, target, offline_after_ms)?;
            sqlx::query(d.sql(INSERT_INSTANCE))
                .bind(name)
                .bind(&member)
                .execute(&mut *tx)
                .await
                .map_err(|e| match conflict_on_unique(e, String::new) {
                    DbError::Conflict(_) => PlaceError::Taken(name.to_string()),
                    other => PlaceError::Db(other),
                })?;
            tx.commit().await?;
            Ok(member)
        })
    }

    /// The member holding `name`.
    pub async fn instance_location(&self, name: &str) -> Result<Option<String>, DbError> {
        dispatch!(self, pool, _d => {
            let member: Option<String> =
                sqlx::query_scalar("SELECT member FROM cluster_instances WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
            Ok(member)
        })
    }

    /// Every instance and its member, by name.
    pub async fn instance_locations(&self) -> Result<Vec<LocationRow>, DbError> {
        let rows: Vec<(String, String, i64)> = dispatch!(self, pool, _d => {
            sqlx::query_as("SELECT name, member, evacuated FROM cluster_instances")
                .fetch_all(pool)
                .await?
        });
        let mut rows: Vec<LocationRow> = rows
            .into_iter()
            .map(|(name, member, evacuated)| LocationRow {
                name,
                member,
                evacuated: evacuated != 0,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    /// Record that `member` holds `name` (kept as it is if it does already); `Conflict` if
    /// another member holds it.
    pub async fn register_instance(&self, name: &str, member: &str) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            // The no-op update makes RETURNING answer for a row `member` already holds.
            let kept: Option<String> = sqlx::query_scalar(d.sql(
                "INSERT INTO cluster_instances (name, member, evacuated, placed) \
                 VALUES ($1, $2, 0, {now}) \
                 ON CONFLICT (name) DO UPDATE SET member = excluded.member \
                 WHERE cluster_instances.member = excluded.member RETURNING member",
            ))
            .bind(name)
            .bind(member)
            .fetch_optional(pool)
            .await?;
            if kept.is_some() {
                return Ok(());
            }
        });
        let other = self.instance_location(name).await?.unwrap_or_default();
        Err(DbError::Conflict(format!(
            "instance \"{name}\" on cluster member \"{other}\""
        )))
    }

    /// `old` on `member` is now called `new` (recorded afresh if `member` did not hold
    /// `old`); `Conflict` if `new` is taken.
    pub async fn rename_instance(&self, old: &str, new: &str, member: &str) -> Result<(), DbError> {
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            let taken = || format!("instance \"{new}\"");
            let res = sqlx::query(
                "UPDATE cluster_instances SET name = $1 WHERE name = $2 AND member = $3",
            )
            .bind(new)
            .bind(old)
            .bind(member)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, taken))?;
            if res.rows_affected() == 0 {
                sqlx::query(d.sql(INSERT_INSTANCE))
                    .bind(new)
                    .bind(member)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_on_unique(e, taken))?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forget `name` on `member`; false if `member` did not hold it.
    pub async fn remove_instance(&self, name: &str, member: &str) -> Result<bool, DbError> {
        dispatch!(self, pool, _d => {
            let res = sqlx::query("DELETE FROM cluster_instances WHERE name = $1 AND member = $2")
                .bind(name)
                .bind(member)
                .execute(pool)
                .await?;
            Ok(res.rows_affected() > 0)
        })
    }

    /// Mark `name` as moved off its member by an evacuation (or back).
    pub async fn set_instance_evacuated(&self, name: &str, evacuated: bool) -> Result<(), DbError> {
        dispatch!(self, pool, _d => {
            sqlx::query("UPDATE cluster_instances SET evacuated = $1 WHERE name = $2")
                .bind(i64::from(evacuated))
                .bind(name)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Make the table agree with what `member` has, in one transaction: its `names` that
    /// are missing are added (a name another member holds is skipped and logged), and its
    /// rows not in `names` are removed once placed more than `grace_ms` ago (a younger
    /// one may be a launch still in flight).
    pub async fn sync_member_instances(
        &self,
        member: &str,
        names: &[String],
        grace_ms: i64,
    ) -> Result<(), DbError> {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        dispatch!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_write).await?;
            let rows: Vec<(String, String, i64)> = sqlx::query_as(d.sql(
                "SELECT name, member, {now} - placed FROM cluster_instances",
            ))
            .fetch_all(&mut *tx)
            .await?;
            let held: HashMap<&str, (&str, i64)> = rows
                .iter()
                .map(|(n, m, age)| (n.as_str(), (m.as_str(), *age)))
                .collect();
            for name in &wanted {
                match held.get(name) {
                    None => {
                        sqlx::query(d.sql(INSERT_INSTANCE))
                            .bind(*name)
                            .bind(member)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some((other, _)) if *other != member => {
                        tracing::warn!(
                            instance = %name,
                            member,
                            holder = %other,
                            "instance is recorded on another cluster member; left there"
                        );
                    }
                    Some(_) => {}
                }
            }
            for (name, (m, age)) in &held {
                if *m == member && !wanted.contains(name) && *age > grace_ms {
                    sqlx::query("DELETE FROM cluster_instances WHERE name = $1 AND member = $2")
                        .bind(*name)
                        .bind(member)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
