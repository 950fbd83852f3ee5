//! The daemon's two snapshot background tasks: **expiry** (every minute, and once at
//! start-up: snapshots whose `expires_at` has passed are deleted) and the **scheduler**
//! (woken on each minute of the host's local clock: instances whose `snapshots.schedule`
//! is due then get a snapshot named by `snapshots.pattern`, expiring after
//! `snapshots.expiry`). Both go through the same paths as the API (`delete_snapshot`,
//! `create_snapshot`: the instance's lock, intents, lifecycle events). A failure is logged
//! at WARN (which `/1.0/events` carries as a logging event) and never ends a task.
//!
//! The scheduler evaluates only the minute it wakes in: a tick late by more than a minute
//! (a slow snapshot, a suspended host) skips the minutes in between rather than catching
//! up, as Incus does.

use std::time::Duration;

use chrono::{Datelike, Timelike};

use super::cron::{Schedule, Tick};
use super::{InstanceError, Instances, config, expiry};
use crate::db;

/// A local time as the minute a schedule is checked for.
fn tick_of<T: Datelike + Timelike>(t: &T) -> Tick {
    Tick {
        minute: t.minute(),
        hour: t.hour(),
        day: t.day(),
        month: t.month(),
        weekday: t.weekday().num_days_from_sunday(),
    }
}

impl Instances {
    /// Delete every snapshot whose expiry has passed; how many went. Each failure is logged
    /// and the others still go.
    pub async fn prune_expired_snapshots(&self) -> usize {
        let now = time::OffsetDateTime::now_utc();
        let rows = match db::snapshots::expiring(&self.db).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "expired snapshots: cannot list snapshots");
                return 0;
            }
        };
        let mut deleted = 0;
        for s in rows
            .iter()
            .filter(|s| expiry::has_passed(&s.expires_at, now))
        {
            match self
                .delete_snapshot_if(&s.instance, &s.name, Some(now))
                .await
            {
                Ok(true) => {
                    deleted += 1;
                    tracing::info!(instance = %s.instance, snapshot = %s.name,
                        expires_at = %s.expires_at, "expired snapshot deleted");
                }
                Ok(false) => {}
                // Deleted meanwhile (with its instance, or by a user).
                Err(InstanceError::NotFound(_) | InstanceError::SnapshotNotFound { .. }) => {}
                Err(e) => tracing::warn!(instance = %s.instance, snapshot = %s.name,
                    error = %e, "could not delete an expired snapshot"),
            }
        }
        deleted
    }

    /// Take the snapshots the schedules of all instances call for at `tick` (local time);
    /// the names of the snapshots taken, as `instance/snapshot`.
    pub async fn take_scheduled_snapshots(&self, tick: &Tick) -> Vec<String> {
        let rows = match self.expanded_rows().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "scheduled snapshots: cannot list instances");
                return Vec::new();
            }
        };
        let mut taken = Vec::new();
        for row in rows {
            let Some(spec) = row.config.get("snapshots.schedule") else {
                continue;
            };
            let schedule = match Schedule::parse(spec) {
                Ok(s) => s,
                Err(e) => {
                    // Validated when set; a profile's value is checked only where it is used.
                    tracing::warn!(instance = %row.name, error = %e, "snapshots.schedule ignored");
                    continue;
                }
            };
            if !schedule.due(tick, &row.name) {
                continue;
            }
            let stopped_too = config::boolean("snapshots.schedule.stopped", &row.config)
                .ok()
                .flatten()
                .unwrap_or(false);
            if !stopped_too && self.running_init(&row).is_none() {
                tracing::debug!(instance = %row.name, "scheduled snapshot skipped: stopped");
                continue;
            }
            match self.take_scheduled_snapshot(&row).await {
                Ok(name) => taken.push(format!("{}/{name}", row.name)),
                Err(e) => tracing::warn!(instance = %row.name, error = %e,
                    "scheduled snapshot failed"),
            }
        }
        taken
    }

    async fn take_scheduled_snapshot(
        &self,
        row: &super::InstanceRow,
    ) -> Result<String, InstanceError> {
        let name = self.next_snapshot_name(row).await?;
        super::snapshots::check_name(&name)?;
        let span = row
            .config
            .get("snapshots.expiry")
            .map(String::as_str)
            .unwrap_or_default();
        let expires_at = expiry::from_span(span, time::OffsetDateTime::now_utc())
            .map_err(|e| InstanceError::Invalid(e.to_string()))?;
        let plan = super::SnapshotPlan { name, expires_at };
        self.create_snapshot(&row.name, &plan).await?;
        Ok(plan.name)
    }

    /// Run both snapshot tasks until the runtime ends: expiry every `expiry_every` (first
    /// at once, so a start-up removes what expired while the daemon was down), the
    /// scheduler on each minute.
    pub fn spawn_snapshot_tasks(&self, expiry_every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(expiry_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // A panic in one round is that round's only.
                let round = me.clone();
                if let Err(e) =
                    tokio::spawn(async move { round.prune_expired_snapshots().await }).await
                {
                    tracing::warn!(error = %e, "expired snapshots: a round failed");
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut last: Option<i64> = None;
            loop {
                let now = chrono::Local::now();
                let into_minute = Duration::from_secs(u64::from(now.second()))
                    + Duration::from_nanos(u64::from(now.nanosecond().min(999_999_999)));
                let wait = Duration::from_secs(60).saturating_sub(into_minute);
                tokio::time::sleep(wait).await;
                let now = chrono::Local::now();
                let minute = now.timestamp().div_euclid(60);
                if last == Some(minute) {
                    continue;
                }
                last = Some(minute);
                let tick = tick_of(&now);
                let round = me.clone();
                if let Err(e) =
                    tokio::spawn(async move { round.take_scheduled_snapshots(&tick).await }).await
                {
                    tracing::warn!(error = %e, "scheduled snapshots: a round failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_carry_the_local_fields() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 3, 17)
            .and_then(|d| d.and_hms_opt(6, 30, 59))
            .unwrap_or_default();
        assert_eq!(
            tick_of(&t),
            Tick {
                minute: 30,
                hour: 6,
                day: 17,
                month: 3,
                weekday: 0,
            }
        );
    }
}
