//! A recording fake of [`Worker`] for unit tests of the lifecycle and the router: it keeps
//! "processes" in memory and writes down every call in order.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use super::{
    CgroupLimits, CgroupUsage, CgroupVersion, ExecSpec, InitProcess, SpawnSpec, Worker, WorkerError,
};

/// The fake.
#[derive(Debug, Default)]
pub struct FakeWorker {
    calls: Mutex<Vec<String>>,
    alive: Mutex<HashSet<i32>>,
    frozen: Mutex<HashSet<String>>,
    next_pid: AtomicI32,
    /// Make the next `spawn_init` fail.
    pub fail_spawn: AtomicBool,
    /// The directory `open_root` opens for every instance (none: it fails).
    pub files_root: Mutex<Option<PathBuf>>,
    /// Bridges that "exist" (made by `ensure_bridge`, or put here by a test).
    pub bridges: Mutex<HashSet<String>>,
    /// Make the next `setup_nics` fail.
    pub fail_nics: AtomicBool,
    /// Subnets `host_ipv4_subnets` reports.
    pub host_subnets: Mutex<Vec<(std::net::Ipv4Addr, u8)>>,
    /// `apply_limits` of these instances fails (after recording the call).
    pub fail_limits: Mutex<HashSet<String>>,
    /// NICs set up per init PID.
    pub nics: Mutex<std::collections::HashMap<i32, Vec<super::NicSpec>>>,
}

impl FakeWorker {
    /// Every call so far, as `"verb arg"` strings.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Make init `pid` exit on its own (not through a signal from the daemon).
    pub fn exit(&self, pid: i32) {
        if let Ok(mut a) = self.alive.lock() {
            a.remove(&pid);
        }
    }

    fn record(&self, s: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(s);
        }
    }
}

impl Worker for FakeWorker {
    fn cgroup_version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn prepare_container_dir(
        &self,
        dir: &Path,
        _place: &crate::worker::Placement,
        _layer_from: Option<&Path>,
    ) -> Result<(), WorkerError> {
        self.record(format!("prepare_container_dir {}", name_of(dir)));
        std::fs::create_dir_all(dir.join("upper")).map_err(|source| WorkerError::Io {
            path: dir.to_path_buf(),
            source,
        })
    }

    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), WorkerError> {
        self.record(format!("copy_tree {} {}", name_of(from), name_of(to)));
        let _ = std::fs::create_dir_all(to);
        Ok(())
    }

    fn copy_layer(&self, from: &Path, to: &Path, _subvolume: bool) -> Result<(), WorkerError> {
        self.record(format!("copy_layer {} {}", name_of(from), name_of(to)));
        let _ = std::fs::create_dir_all(to.join("upper"));
        Ok(())
    }

    fn remove_container_dir(&self, dir: &Path) -> Result<(), WorkerError> {
        self.record(format!("remove_container_dir {}", name_of(dir)));
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    fn shift_ids(
        &self,
        _dir: &Path,
        _from: Option<&crate::worker::spec::IdMap>,
        _to: Option<&crate::worker::spec::IdMap>,
    ) -> Result<(), WorkerError> {
        Ok(())
    }

    fn lower_layer(
        &self,
        layer: &std::path::Path,
        map: Option<&crate::worker::spec::IdMap>,
    ) -> Result<crate::worker::LowerLayer, WorkerError> {
        Ok(crate::worker::LowerLayer {
            path: layer.to_path_buf(),
            idmap: map.is_some(),
        })
    }

    fn create_cgroup(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Vec<PathBuf>, WorkerError> {
        self.record(format!("create_cgroup {name} {:?}", limits.memory));
        Ok(vec![])
    }

    fn delegate_cgroup(&self, name: &str, uid: u32, gid: u32) -> Result<(), WorkerError> {
        self.record(format!("delegate_cgroup {name} {uid} {gid}"));
        Ok(())
    }

    fn apply_limits(&self, name: &str, limits: &CgroupLimits) -> Result<(), WorkerError> {
        self.record(format!("apply_limits {name} {:?}", limits.memory));
        if self.fail_limits.lock().is_ok_and(|f| f.contains(name)) {
            return Err(WorkerError::Io {
                path: PathBuf::from(format!("/fake/cgroup/{name}")),
                source: std::io::Error::other("refused by the test"),
            });
        }
        Ok(())
    }

    fn remove_cgroup(&self, name: &str) -> Result<(), WorkerError> {
        self.record(format!("remove_cgroup {name}"));
        Ok(())
    }

    fn cgroup_procs(&self, _name: &str) -> Vec<PathBuf> {
        vec![]
    }

    fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), WorkerError> {
        self.record(format!("set_frozen {name} {frozen}"));
        if let Ok(mut f) = self.frozen.lock() {
            if frozen {
                f.insert(name.to_string());
            } else {
                f.remove(name);
            }
        }
        Ok(())
    }

    fn is_frozen(&self, name: &str) -> bool {
        self.frozen
            .lock()
            .map(|f| f.contains(name))
            .unwrap_or(false)
    }

    fn usage(&self, _name: &str) -> CgroupUsage {
        CgroupUsage {
            processes: 1,
            ..Default::default()
        }
    }

    fn stats(&self, _name: &str) -> super::CgroupStats {
        super::CgroupStats::default()
    }

    fn net_counters(&self, _pid: i32) -> Vec<super::usage::NetCounters> {
        vec![]
    }

    fn disk_usage(&self, _dir: &Path) -> u64 {
        0
    }

    fn online_cpus(&self) -> Vec<u32> {
        vec![0, 1]
    }

    fn cgroup_mounts(&self) -> Vec<super::spec::MountEntry> {
        vec![]
    }

    fn spawn_init(&self, spec: &SpawnSpec) -> Result<InitProcess, WorkerError> {
        self.record(format!("spawn_init {}", spec.name));
        if self.fail_spawn.swap(false, Ordering::SeqCst) {
            return Err(WorkerError::Spawn(super::spawn::SpawnError::Container(
                "exec init: no such file".into(),
            )));
        }
        let pid = 1000 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut a) = self.alive.lock() {
            a.insert(pid);
        }
        Ok(InitProcess {
            pid,
            starttime: 1,
            monitor_pid: pid - 1,
        })
    }

    fn is_alive(&self, init: &InitProcess) -> bool {
        self.alive
            .lock()
            .map(|a| a.contains(&init.pid))
            .unwrap_or(false)
    }

    fn signal(&self, init: &InitProcess, signal: i32) -> Result<bool, WorkerError> {
        self.record(format!("signal {} {signal}", init.pid));
        // Every signal ends the fake init.
        Ok(self
            .alive
            .lock()
            .map(|mut a| a.remove(&init.pid))
            .unwrap_or(false))
    }

    fn wait_exit(&self, init: &InitProcess, _timeout: Duration) -> bool {
        !self.is_alive(init)
    }

    fn wait_pid_gone(&self, _pid: i32, _timeout: Duration) -> bool {
        true
    }

    fn exec_command(&self, spec: &ExecSpec) -> super::ExecCommand {
        ("/bin/echo".into(), spec.argv.clone(), vec![])
    }

    fn ensure_bridge(&self, spec: &super::BridgeSpec) -> Result<(), WorkerError> {
        self.record(format!(
            "ensure_bridge {} {:?} {:?}",
            spec.name, spec.ipv4, spec.mtu
        ));
        if let Ok(mut b) = self.bridges.lock() {
            b.insert(spec.name.clone());
        }
        Ok(())
    }

    fn delete_bridge(&self, name: &str) -> Result<(), WorkerError> {
        self.record(format!("delete_bridge {name}"));
        if let Ok(mut b) = self.bridges.lock() {
            b.remove(name);
        }
        Ok(())
    }

    fn bridge_exists(&self, name: &str) -> bool {
        self.bridges
            .lock()
            .map(|b| b.contains(name))
            .unwrap_or(false)
    }

    fn host_ipv4_subnets(&self) -> Result<Vec<(std::net::Ipv4Addr, u8)>, WorkerError> {
        Ok(self
            .host_subnets
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default())
    }

    fn setup_nics(&self, init: &InitProcess, nics: &[super::NicSpec]) -> Result<(), WorkerError> {
        let desc: Vec<String> = nics
            .iter()
            .map(|n| {
                format!(
                    "{}@{}:{}",
                    n.name,
                    n.bridge,
                    n.ipv4.map(|(a, p)| format!("{a}/{p}")).unwrap_or_default()
                )
            })
            .collect();
        self.record(format!("setup_nics {} {}", init.pid, desc.join(",")));
        if self.fail_nics.swap(false, Ordering::SeqCst) {
            return Err(WorkerError::Net(super::net::NetError::NoSuchLink(
                "fake".into(),
            )));
        }
        if let Ok(mut n) = self.nics.lock() {
            n.insert(init.pid, nics.to_vec());
        }
        Ok(())
    }

    fn remove_nics(&self, init: &InitProcess, names: &[String]) -> Result<(), WorkerError> {
        self.record(format!("remove_nics {} {}", init.pid, names.join(",")));
        if let Ok(mut n) = self.nics.lock()
            && let Some(list) = n.get_mut(&init.pid)
        {
            list.retain(|s| !names.contains(&s.name));
        }
        Ok(())
    }

    fn write_resolver(
        &self,
        init: &InitProcess,
        spec: &super::ResolverSpec,
    ) -> Result<(), WorkerError> {
        self.record(format!(
            "write_resolver {} {:?} {}",
            init.pid, spec.nameserver, spec.search
        ));
        Ok(())
    }

    fn interfaces(&self, init: Option<&InitProcess>, only: Option<&str>) -> Vec<super::Interface> {
        let nics = match init.map(|i| i.pid) {
            Some(pid) => self
                .nics
                .lock()
                .ok()
                .and_then(|n| n.get(&pid).cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let mut out: Vec<super::Interface> = nics
            .into_iter()
            .map(|n| super::Interface {
                name: n.name.clone(),
                mtu: n.mtu.unwrap_or(1500),
                hwaddr: super::net::format_mac(&n.hwaddr),
                up: true,
                addresses: n
                    .ipv4
                    .map(|(a, p)| super::net::InterfaceAddress {
                        address: a.into(),
                        prefix: p,
                        scope: "global",
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .collect();
        if init.is_none()
            && let Some(name) = only
            && self.bridge_exists(name)
        {
            out.push(super::Interface {
                name: name.to_string(),
                mtu: 1500,
                up: true,
                ..Default::default()
            });
        }
        out
    }

    /// The test process's own namespace, so `proxy` devices really listen (connections
    /// into it need root, as `setns` does).
    fn open_netns(&self, init: &InitProcess) -> Result<super::netns::NetNs, WorkerError> {
        self.record(format!("open_netns {}", init.pid));
        if !self.is_alive(init) {
            return Err(WorkerError::Io {
                path: format!("/proc/{}/ns/net", init.pid).into(),
                source: std::io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        super::netns::NetNs::open(Path::new("/proc/self/ns/net")).map_err(|source| {
            WorkerError::Io {
                path: "/proc/self/ns/net".into(),
                source,
            }
        })
    }

    fn open_stopped_root(
        &self,
        root: &super::StoppedRoot,
    ) -> Result<super::files::RootDir, WorkerError> {
        self.record(format!("open_stopped_root {}", name_of(&root.upper)));
        let dir = self.files_root.lock().ok().and_then(|d| d.clone());
        match dir {
            Some(dir) => super::files::RootDir::open(&dir)
                .map_err(|source| WorkerError::Io { path: dir, source }),
            None => Err(WorkerError::Io {
                path: root.upper.clone(),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            }),
        }
    }

    fn mount_disk(
        &self,
        init: &InitProcess,
        disk: &super::spec::DiskMount,
    ) -> Result<(), WorkerError> {
        self.record(format!(
            "mount_disk {} {} /{}",
            init.pid,
            disk.source.display(),
            disk.target
        ));
        Ok(())
    }

    fn unmount_disk(&self, init: &InitProcess, target: &str) -> Result<(), WorkerError> {
        self.record(format!("unmount_disk {} /{target}", init.pid));
        Ok(())
    }

    fn open_root(&self, init: &InitProcess) -> Result<super::files::RootDir, WorkerError> {
        let dir = self.files_root.lock().ok().and_then(|d| d.clone());
        let path = dir
            .clone()
            .unwrap_or_else(|| format!("/proc/{}/root", init.pid).into());
        let opened = match dir {
            Some(dir) => super::files::RootDir::open(&dir),
            None => Err(std::io::Error::from(std::io::ErrorKind::Unsupported)),
        };
        opened.map_err(|source| WorkerError::Io { path, source })
    }
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
