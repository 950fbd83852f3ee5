//! Reading instances: records, live state, metrics, exec plans, logs and the console.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ctl_api::{
    Instance, InstanceExecPost, InstanceState, InstanceStateCpu, InstanceStateMemory, StatusCode,
};

use super::{
    DEFAULT_PATH, ExecPlan, InstanceError, InstanceMetrics, Instances, config, idmap, profiles,
};
use crate::db::{self, InstanceRow};
use crate::network;
use crate::paths::overlay_dirs;
use crate::worker::spec::default_namespaces;
use crate::worker::{ExecSpec, InitProcess, Interface};

impl Instances {
    // ----- read and update -----

    /// Every instance name.
    pub async fn names(&self) -> Result<Vec<String>, InstanceError> {
        Ok(db::instances::names(&self.db).await?)
    }

    /// One instance.
    pub async fn get(&self, name: &str) -> Result<Instance, InstanceError> {
        let row = self.row(name).await?;
        let profiles = db::profiles::list(&self.db).await?;
        Ok(self.to_api(&row, self.status(&row), &profiles))
    }

    /// Every instance with (`with_state`) or without its state.
    pub async fn list(
        &self,
        with_state: bool,
        with_network: bool,
    ) -> Result<Vec<(Instance, Option<InstanceState>)>, InstanceError> {
        let rows = Arc::new(db::instances::list(&self.db).await?);
        let profiles = Arc::new(db::profiles::list(&self.db).await?);
        // Reading /proc and the cgroup files is blocking I/O of a few microseconds per
        // file: do it off the async threads, split over the CPUs.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = rows.len().div_ceil(workers).max(64);
        let mut tasks = Vec::new();
        for start in (0..rows.len()).step_by(chunk) {
            let (me, rows, profiles) = (self.clone(), rows.clone(), profiles.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                let rows = &rows[start..(start + chunk).min(rows.len())];
                let statuses: Vec<StatusCode> = rows.iter().map(|r| me.status(r)).collect();
                // The network namespaces of the running ones, all visited by one thread.
                let mut ifaces = if with_state && with_network {
                    let inits: Vec<InitProcess> = rows
                        .iter()
                        .zip(&statuses)
                        .filter(|(_, s)| **s != StatusCode::Stopped)
                        .filter_map(|(r, _)| Self::init_of(r))
                        .collect();
                    me.worker.interfaces_of_many(&inits).into_iter()
                } else {
                    Vec::new().into_iter()
                };
                rows.iter()
                    .zip(statuses)
                    .map(|(r, status)| {
                        let state = with_state.then(|| {
                            let own = if status == StatusCode::Stopped {
                                Vec::new()
                            } else {
                                ifaces.next().unwrap_or_default()
                            };
                            let mut st = me.state_with(r, status, None, &profiles, Some(own));
                            if !with_network {
                                st.network = None;
                            }
                            st
                        });
                        (me.to_api(r, status, &profiles), state)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut out = Vec::with_capacity(rows.len());
        for t in tasks {
            out.extend(
                t.await
                    .map_err(|e| InstanceError::Internal(e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// The runtime state of one instance, with the disk usage of its writable layer.
    pub async fn state(&self, name: &str) -> Result<InstanceState, InstanceError> {
        let row = self.row(name).await?;
        let profiles = db::profiles::list(&self.db).await?;
        let pool = self
            .storage
            .pool_info(crate::storage::instance_pool(&row.config))
            .await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.state_with(&row, me.status(&row), Some(&pool), &profiles, None)
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// State from `/proc` and the cgroup; with the instance's pool, `disk` (not done for
    /// lists): its layer's usage from the pool's quota accounting, or a walk of the upper
    /// dir; `ifaces`: the container's interfaces when the caller read them already.
    pub(super) fn state_with(
        &self,
        row: &InstanceRow,
        status: StatusCode,
        disk: Option<&crate::storage::PoolInfo>,
        profiles: &[db::ProfileRow],
        ifaces: Option<Vec<Interface>>,
    ) -> InstanceState {
        let running = status != StatusCode::Stopped;
        let usage = if running {
            self.worker.usage(&row.name)
        } else {
            Default::default()
        };
        InstanceState {
            status: status.as_str().into(),
            status_code: status,
            pid: if running { i64::from(row.init_pid) } else { 0 },
            processes: if running { usage.processes } else { -1 },
            cpu: InstanceStateCpu {
                usage: usage.cpu_ns,
            },
            memory: InstanceStateMemory {
                usage: usage.memory,
                usage_peak: usage.memory_peak,
                swap_usage: usage.swap,
                swap_usage_peak: 0,
                total: if running {
                    self.memory_total(row, profiles)
                } else {
                    0
                },
            },
            disk: match disk {
                Some(pool) => {
                    let dir = self.paths.container(&row.name);
                    let used = crate::storage::Storage::root_usage(pool, &dir)
                        .unwrap_or_else(|| self.worker.disk_usage(&overlay_dirs(&dir).0));
                    let mut root = serde_json::json!({ "usage": used });
                    let expanded = crate::network::expand(profiles, &row.profiles, &row.devices);
                    if let Ok(Some((_, Some(size)))) = crate::storage::config::root_disk(&expanded)
                    {
                        root["total"] = serde_json::json!(size);
                    }
                    BTreeMap::from([("root".to_string(), root)])
                }
                None => BTreeMap::new(),
            },
            network: running.then(|| {
                let ifaces = ifaces.unwrap_or_else(|| match Self::init_of(row) {
                    Some(init) => self.worker.interfaces(Some(&init), None),
                    None => Vec::new(),
                });
                self.network_state(row, profiles, ifaces)
            }),
        }
    }

    /// The memory an instance may use: its (expanded) `limits.memory`, else the host's.
    fn memory_total(&self, row: &InstanceRow, profiles: &[db::ProfileRow]) -> i64 {
        let config = super::profiles::expand_config(profiles, &row.profiles, &row.config);
        let limit = config
            .get("limits.memory")
            .and_then(|v| super::config::parse_memory(v, self.host.memory).ok())
            .filter(|l| *l > 0 && *l < self.host.memory)
            .unwrap_or(self.host.memory);
        i64::try_from(limit).unwrap_or(i64::MAX)
    }

    /// Figures for `/1.0/metrics`: one entry per running instance.
    pub async fn metrics(&self) -> Result<Vec<InstanceMetrics>, InstanceError> {
        let rows = db::instances::list(&self.db).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            rows.iter()
                .filter(|r| me.running_init(r).is_some())
                .map(|r| {
                    let stats = me.worker.stats(&r.name);
                    let limit = u64::try_from(stats.memory_limit).unwrap_or(0);
                    InstanceMetrics {
                        name: r.name.clone(),
                        usage: me.worker.usage(&r.name),
                        memory_total: if limit == 0 || limit > me.host.memory {
                            me.host.memory
                        } else {
                            limit
                        },
                        stats,
                        network: me.worker.net_counters(r.init_pid),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| InstanceError::Internal(e.to_string()))
    }

    /// Interfaces of the container's network namespace, Incus-shaped (one netlink dump).
    pub(super) fn network_state(
        &self,
        row: &InstanceRow,
        profiles: &[db::ProfileRow],
        ifaces: Vec<Interface>,
    ) -> BTreeMap<String, serde_json::Value> {
        let expanded = network::expand(profiles, &row.profiles, &row.devices);
        // Interface name inside → the device it belongs to.
        let device_of = |iface: &str| {
            expanded
                .iter()
                .filter(|(_, d)| d.get("type").map(String::as_str) == Some("nic"))
                .find(|(dev, d)| d.get("name").map_or(dev.as_str(), String::as_str) == iface)
                .map(|(dev, _)| dev.clone())
        };
        ifaces
            .into_iter()
            .map(|i| {
                let host_name = device_of(&i.name)
                    .and_then(|d| row.config.get(&network::host_name_key(&d)).cloned())
                    .unwrap_or_default();
                let v = ctl_api::InstanceStateNetwork {
                    addresses: network::state_addresses(&i),
                    counters: network::counters(&i),
                    hwaddr: i.hwaddr.clone(),
                    host_name,
                    mtu: i.mtu,
                    state: if i.up { "up" } else { "down" }.into(),
                    kind: if i.loopback { "loopback" } else { "broadcast" }.into(),
                };
                (
                    i.name,
                    serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }

    pub(super) fn to_api(
        &self,
        row: &InstanceRow,
        status: StatusCode,
        profiles: &[db::ProfileRow],
    ) -> Instance {
        Instance {
            name: row.name.clone(),
            description: row.description.clone(),
            status: status.as_str().into(),
            status_code: status,
            created_at: row.created_at.clone(),
            last_used_at: if row.last_used_at.is_empty() {
                crate::images::ZERO_TIME.into()
            } else {
                row.last_used_at.clone()
            },
            location: crate::cluster::location(),
            kind: "container".into(),
            architecture: row.architecture.clone(),
            ephemeral: row.ephemeral,
            stateful: false,
            profiles: row.profiles.clone(),
            config: row.config.clone(),
            devices: row.devices.clone(),
            expanded_config: profiles::expand_config(profiles, &row.profiles, &row.config),
            expanded_devices: network::expand(profiles, &row.profiles, &row.devices),
            project: "default".into(),
        }
    }

    /// Validate an exec request and build the command that runs it in the container.
    pub async fn plan_exec(
        &self,
        name: &str,
        req: &InstanceExecPost,
    ) -> Result<ExecPlan, InstanceError> {
        if req.command.is_empty() {
            return Err(InstanceError::Invalid("command must not be empty".into()));
        }
        let row = self.expanded_row(name).await?;
        let init = self.ensure_running(&row)?;
        if self.worker.is_frozen(name) {
            return Err(InstanceError::BadState(format!(
                "instance \"{name}\" is frozen"
            )));
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), DEFAULT_PATH.into());
        env.insert("LANG".into(), "C.UTF-8".into());
        let (home, user) = if req.user == 0 {
            ("/root".to_string(), "root".to_string())
        } else {
            ("/".to_string(), req.user.to_string())
        };
        env.insert("HOME".into(), home.clone());
        env.insert("USER".into(), user);
        for (k, v) in &row.config {
            if let Some(var) = k.strip_prefix("environment.") {
                env.insert(var.to_string(), v.clone());
            }
        }
        if req.interactive {
            env.insert("TERM".into(), "xterm".into());
        }
        env.extend(req.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        let cwd = if req.cwd.is_empty() {
            env.get("HOME").cloned().unwrap_or(home)
        } else {
            req.cwd.clone()
        };
        let spec = ExecSpec {
            pid: init.pid,
            starttime: init.starttime,
            namespaces: default_namespaces(),
            cgroup_procs: self.worker.cgroup_procs(name),
            caps_drop: config::capabilities_drop(&row.config)?,
            // As the init got it: privileged iff it runs without an id map.
            syscalls: config::syscall_policy(
                &row.config,
                idmap::from_json(row.config.get(idmap::VOLATILE_CURRENT)).is_none(),
            )?,
            argv: req.command.clone(),
            env: env.into_iter().collect(),
            cwd,
            uid: req.user,
            gid: req.group,
            interactive: req.interactive,
            width: u16::try_from(req.width).unwrap_or(u16::MAX),
            height: u16::try_from(req.height).unwrap_or(u16::MAX),
        };
        let (program, args, env) = self.worker.exec_command(&spec);
        Ok(ExecPlan {
            program,
            args,
            env,
            interactive: req.interactive,
        })
    }

    // ----- logs -----

    /// Where instance log `file` lives (recorded exec output, the console log).
    pub fn log_path(&self, name: &str, file: &str) -> PathBuf {
        self.paths.container(name).join("logs").join(file)
    }

    /// The names of an instance's log files.
    pub async fn logs(&self, name: &str) -> Result<Vec<String>, InstanceError> {
        self.row(name).await?;
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(self.paths.container(name).join("logs")).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// One log file's path, checked: a plain name that exists. `lxc.log`, what LXD clients
    /// ask for (`lxc info --show-log`), is the monitor's log.
    pub async fn log_file(&self, name: &str, file: &str) -> Result<PathBuf, InstanceError> {
        self.row(name).await?;
        let file = if file == "lxc.log" {
            "monitor.log"
        } else {
            file
        };
        let plain = !file.is_empty()
            && !file.starts_with('.')
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        let path = self.log_path(name, file);
        if !plain || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(InstanceError::Invalid(format!(
                "log \"{file}\" of instance \"{name}\" not found"
            )));
        }
        Ok(path)
    }

    // ----- console -----

    pub(super) async fn console_request(
        &self,
        name: &str,
        request: &[u8],
    ) -> Result<tokio::net::UnixStream, InstanceError> {
        use tokio::io::AsyncWriteExt;
        let sock = self.paths.console_socket(name);
        let mut conn = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
            InstanceError::Internal(format!("console of \"{name}\" ({}): {e}", sock.display()))
        })?;
        conn.write_all(request)
            .await
            .map_err(|e| InstanceError::Internal(format!("console of \"{name}\": {e}")))?;
        Ok(conn)
    }

    /// The console's recent output: live from the monitor while running, else what the last
    /// run left in `console.log`.
    pub async fn console_log(&self, name: &str) -> Result<Vec<u8>, InstanceError> {
        use tokio::io::AsyncReadExt;
        let row = self.row(name).await?;
        if self.running_init(&row).is_some() {
            let mut conn = self
                .console_request(name, crate::worker::console::CMD_LOG)
                .await?;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
                .await
                .map_err(|_| InstanceError::Internal(format!("console of \"{name}\": no answer")))?
                .map_err(|e| InstanceError::Internal(format!("console of \"{name}\": {e}")))?;
            return Ok(out);
        }
        let log = self.paths.container(name).join("console.log");
        Ok(tokio::fs::read(&log).await.unwrap_or_default())
    }

    /// Empty the console log.
    pub async fn console_clear(&self, name: &str) -> Result<(), InstanceError> {
        let row = self.row(name).await?;
        if self.running_init(&row).is_some() {
            self.console_request(name, crate::worker::console::CMD_CLEAR)
                .await?;
        }
        let log = self.paths.container(name).join("console.log");
        let _ = tokio::fs::write(&log, b"").await;
        Ok(())
    }

    /// A connection attached to the running instance's console (both directions).
    pub async fn console_attach(
        &self,
        name: &str,
    ) -> Result<tokio::net::UnixStream, InstanceError> {
        let row = self.row(name).await?;
        self.ensure_running(&row)?;
        self.console_request(name, crate::worker::console::CMD_ATTACH)
            .await
    }
}
