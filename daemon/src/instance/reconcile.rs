//! The start-up reconcile: the database and the host made to agree after a daemon start
//! (interrupted renames and creates finished or undone, running containers adopted or
//! cleaned up, proxies restarted, ephemeral instances that stopped deleted). See
//! docs/RELIABILITY.md.

use super::{InstanceError, Instances, backup};
use crate::db::intents::Kind;
use crate::db::{self, InstanceRow};
use crate::network::{self, NetworkError};
use crate::worker::InitProcess;

impl Instances {
    // ----- start-up -----

    /// Reconcile the database with the host after a daemon start: instances whose init is
    /// gone are marked stopped and their leftover cgroups removed; running ones are kept
    /// and their proxy devices started again.
    pub async fn reconcile(&self) -> Result<(), InstanceError> {
        // First: a rename cut off puts its directory where its record is.
        self.reconcile_renames().await?;
        // Freezes for a copy that a crash left in place: thawed, whatever the freezer says
        // now (one cut off mid-freeze may still be FREEZING, and FROZEN a moment later).
        // The copy held the instance's lock, so no freeze of the user's came in between; a
        // user's own freeze has no intent and stays.
        for name in db::intents::pending(&self.db, Kind::CopyFreeze).await? {
            let row = db::instances::get(&self.db, &name).await?;
            if row.as_ref().is_some_and(|r| self.running_init(r).is_some()) {
                tracing::warn!(instance = %name, "thawing an instance a crash left frozen for a copy");
                let n = name.clone();
                if let Err(e) = self.blocking_worker(move |w| w.set_frozen(&n, false)).await {
                    tracing::warn!(instance = %name, error = %e, "could not thaw");
                    continue;
                }
            }
            db::intents::finish(&self.db, Kind::CopyFreeze, &name).await?;
        }
        let rows = db::instances::list(&self.db).await?;
        let profiles = db::profiles::list(&self.db).await?;
        // Every record's backup file is brought up to date (installs older than the file
        // get theirs here).
        for row in &rows {
            self.save_backup_or_warn(&row.name).await;
        }
        // Creates a crash cut off: without a record, what they made goes; with one, the
        // backup file above completed them.
        for name in db::intents::pending(&self.db, Kind::InstanceCreate).await? {
            if !rows.iter().any(|r| r.name == name) {
                let dir = self.paths.container(&name);
                // A backup file means a container that finished being made: never removed.
                if dir.exists() && !backup::holds_container(&dir) {
                    tracing::warn!(instance = %name, dir = %dir.display(),
                        "removing the directory of a create that a crash interrupted");
                    self.blocking_worker(move |w| w.remove_container_dir(&dir))
                        .await?;
                }
            }
            db::intents::finish(&self.db, Kind::InstanceCreate, &name).await?;
        }
        self.reconcile_snapshots().await?;
        self.reconcile_backups().await?;
        // Any other directory without a record is never removed here: with a backup file
        // it is a container whose record was lost (`ctld recover` brings it back); without
        // one, a create of an older ctld that died before finishing (the next create of
        // that name replaces it).
        if let Ok(rd) = std::fs::read_dir(self.paths.containers()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if rows.iter().any(|r| r.name == name) {
                    continue;
                }
                if backup::read(&e.path()).is_ok_and(|b| b.deleting) {
                    // A delete that a crash interrupted after the record went: finish it.
                    tracing::info!(dir = %e.path().display(), "finishing an interrupted delete");
                    let dir = e.path();
                    if let Err(err) = self
                        .blocking_worker(move |w| w.remove_container_dir(&dir))
                        .await
                    {
                        tracing::warn!(error = %err, "could not remove a deleted container's directory");
                    }
                } else if backup::exists(&e.path()) {
                    tracing::warn!(dir = %e.path().display(),
                        "container directory without a record: kept; `ctld recover` brings it back");
                } else {
                    tracing::info!(dir = %e.path().display(),
                        "unfinished container directory (no record, no backup file): kept");
                }
            }
        }
        for mut row in rows {
            // The monitor's file is the host's word: an init it records that still runs is
            // the container's, whatever the row says (a ctld that died between starting a
            // container and recording it).
            let on_host = crate::worker::spawn::read_state(&self.paths.init_state(&row.name))
                .filter(|i| self.worker.is_alive(i));
            if let Some(init) = on_host
                && Self::init_of(&row) != Some(init)
            {
                match self.adopt(&row, &profiles, &init).await {
                    Ok(()) => {
                        row.init_pid = init.pid;
                        row.init_starttime = init.starttime;
                        row.monitor_pid = init.monitor_pid;
                    }
                    Err(err) => {
                        tracing::warn!(instance = %row.name, error = %err,
                            "found running but not fully started: stopping it");
                        self.abort_start(&row.name, &init).await;
                        let _ = self.cleanup_stopped(&row.name, None).await;
                        continue;
                    }
                }
            }
            match Self::init_of(&row) {
                Some(init) if self.worker.is_alive(&init) => {
                    tracing::info!(instance = %row.name, pid = init.pid, "found running");
                    // Port forwards live in the daemon: start them again. A failure (the
                    // port taken meanwhile) leaves the instance running without them.
                    let expanded = network::expand(&profiles, &row.profiles, &row.devices);
                    let started = match network::config::proxy_devices(&expanded) {
                        Ok(specs) => self.start_proxies(&row.name, &init, &specs).await,
                        Err(e) => Err(NetworkError::from(e).into()),
                    };
                    if let Err(err) = started {
                        tracing::warn!(instance = %row.name, error = %err,
                            "could not restart the proxy devices");
                    }
                    if row.ephemeral {
                        self.watch_ephemeral(&row.name, init);
                    }
                    continue;
                }
                Some(_) => {
                    // The monitor removes its file when the init exits: a file left means
                    // the monitor died with it (the host went down), so the container is
                    // still meant to run at the next autostart; no file, it stopped itself.
                    let state_file = self.paths.init_state(&row.name);
                    let host_went_down = state_file.exists();
                    tracing::info!(instance = %row.name, host_went_down, "init gone while ctld was away");
                    if host_went_down {
                        let _ = std::fs::remove_file(&state_file);
                    }
                    let power = (!host_went_down).then_some("STOPPED");
                    if let Err(err) = self.cleanup_stopped(&row.name, power).await {
                        tracing::warn!(instance = %row.name, error = %err, "cleanup failed");
                    }
                }
                None => {}
            }
            // An ephemeral instance that stopped while ctld was away goes, as it would have.
            if row.ephemeral {
                tracing::info!(instance = %row.name, "ephemeral instance found stopped: deleting it");
                if let Err(err) = self.delete(&row.name).await {
                    tracing::warn!(instance = %row.name, error = %err,
                        "could not delete a stopped ephemeral instance");
                }
            }
        }
        Ok(())
    }

    /// Take over a running container the database does not record as running: only if its
    /// start got as far as its NICs (every host-side veth exists); then it is recorded.
    pub(super) async fn adopt(
        &self,
        row: &InstanceRow,
        profiles: &[db::profiles::ProfileRow],
        init: &InitProcess,
    ) -> Result<(), InstanceError> {
        let expanded = network::expand(profiles, &row.profiles, &row.devices);
        for (device, d) in &expanded {
            if d.get("type").map(String::as_str) != Some("nic") {
                continue;
            }
            let Some(host) = row.config.get(&network::host_name_key(device)) else {
                return Err(InstanceError::Internal(format!(
                    "NIC {device} has no host-side name recorded"
                )));
            };
            if self.worker.interfaces(None, Some(host)).is_empty() {
                return Err(InstanceError::Internal(format!(
                    "NIC {device} ({host}) was never made"
                )));
            }
        }
        db::instances::set_running(
            &self.db,
            &row.name,
            init.pid,
            init.starttime,
            init.monitor_pid,
            None,
            None,
        )
        .await?;
        tracing::warn!(instance = %row.name, pid = init.pid,
            "adopted a running container the database did not record");
        Ok(())
    }
}
