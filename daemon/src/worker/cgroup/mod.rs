//! Cgroups on v1, v2 and hybrid hosts: detection, the pure translation from limits to cgroup
//! files, and the file operations that create, limit, freeze, measure and remove a
//! container's cgroup.
//!
//! We write the cgroup files ourselves instead of using cgroups-rs: what we need is a few
//! dozen lines of file writes, cgroups-rs pulls an older nix and zbus into the daemon, and its
//! v1/v2 choice is made from `/sys/fs/cgroup`'s type alone, while we must pick per host and
//! test both layouts against temp-dir fixtures through one injected root.

pub mod devices;
pub mod layout;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use devices::V1_DEVICE_ALLOW;
pub use layout::{
    CgroupLayout, CgroupVersion, Hierarchy, HostCgroupMount, detect, hierarchies,
    lxcfs_mount_point, unmounted_hierarchies,
};

/// Errors from cgroup operations, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy found under {0}")]
    NotFound(PathBuf),
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path} still has processes after killing them")]
    Busy { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup filesystems mounted under `root` (normally `/sys/fs/cgroup`).
pub fn parse_cgroup_mounts(mountinfo: &str, root: &Path) -> Vec<HostCgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), Some(_src), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Ok(rel) = Path::new(point).strip_prefix(root) else {
            continue;
        };
        if rel.components().count() > 1 {
            continue;
        }
        let options = opts
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect::<Vec<_>>()
            .join(",");
        out.push(HostCgroupMount {
            fstype: fstype.to_string(),
            name: rel.display().to_string(),
            options,
        });
    }
    out
}

/// How CPU time is limited (`limits.cpu.allowance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAllowance {
    /// `50%`: a soft share relative to other containers (Incus semantics: only matters under
    /// contention).
    Percent(u32),
    /// `25ms/100ms`: a hard quota of `quota_us` per `period_us`.
    Quota { quota_us: u64, period_us: u64 },
}

/// The resource limits of one container, already parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `limits.cpu.allowance`.
    pub cpu: Option<CpuAllowance>,
    /// `limits.cpu.priority` (0-10, 10 = default).
    pub cpu_priority: u32,
    /// CPUs the container may run on, as a kernel list (`0-1`, `0,2`). Always set: the
    /// config layer fills in every online CPU when `limits.cpu` is unset.
    pub cpuset: String,
    /// `limits.memory` in bytes.
    pub memory: Option<u64>,
    /// `limits.memory.enforce=soft`: reclaim pressure above the limit, no hard cap.
    pub memory_soft: bool,
    /// `limits.memory.swap` (default true): whether the container may swap.
    pub memory_swap: bool,
    /// `limits.processes`.
    pub processes: Option<u64>,
    /// `limits.disk.priority` (0-10, 5 = default).
    pub disk_priority: Option<u32>,
}

impl Default for CgroupLimits {
    fn default() -> Self {
        CgroupLimits {
            cpu: None,
            cpu_priority: 10,
            cpuset: String::new(),
            memory: None,
            memory_soft: false,
            memory_swap: true,
            processes: None,
            disk_priority: None,
        }
    }
}

/// One file write: `value` into `<controller dir>/<file>`. `controller` is empty on v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSetting {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist (swap accounting off, no io weight support).
    pub optional: bool,
}

fn setting(controller: &'static str, file: &'static str, value: impl ToString) -> CgroupSetting {
    CgroupSetting {
        controller,
        file,
        value: value.to_string(),
        optional: false,
    }
}

fn optional(controller: &'static str, file: &'static str, value: impl ToString) -> CgroupSetting {
    CgroupSetting {
        optional: true,
        ..setting(controller, file, value)
    }
}

/// The v1 controllers a container gets a directory in.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio",
];

/// The v2 controllers enabled for containers (`cpuset` and `io` where the kernel has them).
pub const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];

/// The relative CPU share (Incus: 1024 per full share, `50%` → 512; each priority step
/// below 10 takes one off).
fn shares(limits: &CgroupLimits) -> u64 {
    let base = match limits.cpu {
        Some(CpuAllowance::Percent(p)) => 1024 * u64::from(p) / 100,
        _ => 1024,
    };
    base.saturating_sub(u64::from(10 - limits.cpu_priority.min(10)))
        .max(2)
}

/// Translate limits into cgroup file writes for `version`, in the order they must be
/// written. Unset limits reset to "no limit", so the same function serves creation and live
/// updates. Pure: unit-tested for both layouts.
pub fn settings(limits: &CgroupLimits, version: CgroupVersion) -> Vec<CgroupSetting> {
    let mut out = Vec::new();
    let mem = limits.memory;
    if version.is_v2() {
        // cpu.weight: 1..10000, 100 = default; a 1024 share is weight 100.
        out.push(setting(
            "",
            "cpu.weight",
            (shares(limits) * 100 / 1024).clamp(1, 10000),
        ));
        let max = match limits.cpu {
            Some(CpuAllowance::Quota {
                quota_us,
                period_us,
            }) => format!("{quota_us} {period_us}"),
            _ => "max 100000".to_string(),
        };
        out.push(setting("", "cpu.max", max));
        if !limits.cpuset.is_empty() {
            out.push(setting("", "cpuset.cpus", &limits.cpuset));
        }
        let bytes = |m: Option<u64>| m.map_or("max".to_string(), |m| m.to_string());
        let (hard, high) = if limits.memory_soft {
            (None, mem)
        } else {
            (mem, None)
        };
        out.push(setting("", "memory.max", bytes(hard)));
        out.push(setting("", "memory.high", bytes(high)));
        let swap = if limits.memory_swap { "max" } else { "0" };
        out.push(optional("", "memory.swap.max", swap));
        let pids = limits
            .processes
            .map_or("max".to_string(), |p| p.to_string());
        out.push(setting("", "pids.max", pids));
        let io = limits
            .disk_priority
            .map_or(100, |p| (p * 100).clamp(1, 10000));
        out.push(optional("", "io.weight", format!("default {io}")));
    } else {
        out.push(setting("cpu", "cpu.shares", shares(limits)));
        // Quota off first: the kernel checks a new period against the current quota.
        out.push(setting("cpu", "cpu.cfs_quota_us", -1));
        if let Some(CpuAllowance::Quota {
            quota_us,
            period_us,
        }) = limits.cpu
        {
            out.push(setting("cpu", "cpu.cfs_period_us", period_us));
            out.push(setting("cpu", "cpu.cfs_quota_us", quota_us));
        }
        if !limits.cpuset.is_empty() {
            out.push(setting("cpuset", "cpuset.cpus", &limits.cpuset));
        }
        let bytes = |m: Option<u64>| m.map_or("-1".to_string(), |m| m.to_string());
        let (hard, soft) = if limits.memory_soft {
            (None, mem)
        } else {
            (mem, None)
        };
        // memsw must stay >= the memory limit: lift it, set the limit, then cap it.
        out.push(optional("memory", "memory.memsw.limit_in_bytes", -1));
        out.push(setting("memory", "memory.limit_in_bytes", bytes(hard)));
        out.push(setting("memory", "memory.soft_limit_in_bytes", bytes(soft)));
        if !limits.memory_swap
            && let Some(h) = hard
        {
            out.push(optional("memory", "memory.memsw.limit_in_bytes", h));
        }
        let pids = limits
            .processes
            .map_or("max".to_string(), |p| p.to_string());
        out.push(setting("pids", "pids.max", pids));
        // blkio.weight: 10..1000 (CFQ); absent with other schedulers.
        let io = limits
            .disk_priority
            .map_or(500, |p| (p * 100).clamp(10, 1000));
        out.push(optional("blkio", "blkio.weight", io));
    }
    out
}

/// Usage figures read from a container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: i64,
    pub memory: i64,
    pub memory_peak: i64,
    pub swap: i64,
    pub processes: i64,
}

/// Extra counters for metrics (read only when asked: `list` does not need them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_user_ns: i64,
    pub cpu_system_ns: i64,
    pub oom_kills: i64,
    /// The effective memory limit in bytes (0: none).
    pub memory_limit: i64,
}

/// `key value` lines (cpu.stat, memory.events, cpuacct.stat, memory.oom_control).
fn keyed(text: &str, key: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key)).then(|| it.next()).flatten()
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of `cpuacct.stat` (USER_HZ, 100 on Linux).
const USER_HZ: i64 = 100;

/// A container's cgroup: one directory per controller on v1, one directory on v2.
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: CgroupVersion,
    root: PathBuf,
    /// Relative path below each hierarchy root, e.g. `ctl/c1`.
    rel: PathBuf,
}

impl Cgroup {
    /// The cgroup `parent/name` under `root` for a host of `version`.
    pub fn new(root: &Path, version: CgroupVersion, parent: &str, name: &str) -> Self {
        Cgroup {
            version,
            root: root.to_path_buf(),
            rel: Path::new(parent).join(name),
        }
    }

    /// Every directory that makes up this cgroup.
    pub fn dirs(&self) -> Vec<PathBuf> {
        if self.version.is_v2() {
            vec![self.root.join(&self.rel)]
        } else {
            V1_CONTROLLERS
                .iter()
                .chain(self.hybrid_unified())
                .map(|c| self.root.join(c).join(&self.rel))
                .collect()
        }
    }

    /// On a hybrid host the container also gets a (controller-less) directory in the
    /// cgroup2 tree, so its cgroup namespace root there is its own, not the host's.
    fn hybrid_unified(&self) -> Option<&'static &'static str> {
        (self.version == CgroupVersion::Hybrid).then_some(&"unified")
    }

    fn dir(&self, controller: &str) -> PathBuf {
        if self.version.is_v2() {
            self.root.join(&self.rel)
        } else {
            self.root.join(controller).join(&self.rel)
        }
    }

    /// The `cgroup.procs` files a process must be written into to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Create the directories (and, on v2, enable controllers on the way down) and apply
    /// `limits`. Nothing is left behind on failure.
    pub fn create(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let result = self
            .create_dirs()
            .and_then(|()| self.restrict_devices())
            .and_then(|()| self.apply(limits));
        if result.is_err() {
            let _ = self.remove();
        }
        result
    }

    /// On v1, deny every device, then allow the standard set.
    fn restrict_devices(&self) -> Result<(), CgroupError> {
        if self.version.is_v2() {
            return Ok(());
        }
        let dir = self.dir("devices");
        let deny = dir.join("devices.deny");
        fs::write(&deny, "a").map_err(io_err(&deny))?;
        let allow = dir.join("devices.allow");
        for rule in V1_DEVICE_ALLOW {
            fs::write(&allow, rule).map_err(io_err(&allow))?;
        }
        Ok(())
    }

    fn create_dirs(&self) -> Result<(), CgroupError> {
        if self.version.is_v2() {
            // Enable what this kernel offers of the controllers we use, on the way down.
            let offered = read_trim(&self.root.join("cgroup.controllers")).unwrap_or_default();
            let enable: Vec<String> = V2_CONTROLLERS
                .iter()
                .filter(|c| offered.split_whitespace().any(|o| o == **c))
                .map(|c| format!("+{c}"))
                .collect();
            let mut cur = self.root.clone();
            for comp in self.rel.components() {
                let ctl = cur.join("cgroup.subtree_control");
                fs::write(&ctl, enable.join(" ")).map_err(io_err(&ctl))?;
                cur = cur.join(comp);
                make_dir(&cur)?;
            }
        } else {
            for c in V1_CONTROLLERS.iter().chain(self.hybrid_unified()) {
                let mut cur = self.root.join(c);
                for comp in self.rel.components() {
                    let parent = cur.clone();
                    cur = cur.join(comp);
                    make_dir(&cur)?;
                    if *c == "cpuset" {
                        // A v1 cpuset starts empty and takes no task until it has CPUs
                        // and memory nodes: inherit the parent's.
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            if read_trim(&cur.join(f)).unwrap_or_default().is_empty() {
                                let v = read_trim(&parent.join(f)).unwrap_or_default();
                                fs::write(cur.join(f), v).map_err(io_err(&cur.join(f)))?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Write `limits` into the existing cgroup (creation and live updates).
    pub fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for s in settings(limits, self.version) {
            let path = self.dir(s.controller).join(s.file);
            // cgroupfs answers EACCES, not ENOENT, for a file it does not have.
            if s.optional && !path.exists() {
                continue;
            }
            fs::write(&path, &s.value).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Move process `pid` into this cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for f in self.procs_files() {
            fs::write(&f, pid.to_string()).map_err(io_err(&f))?;
        }
        Ok(())
    }

    /// PIDs (host view) of every process in the cgroup, sub-cgroups included.
    pub fn pids(&self) -> Vec<i32> {
        let dir = if self.version.is_v2() {
            self.dir("")
        } else {
            self.dir("pids")
        };
        let mut out = Vec::new();
        collect_pids(&dir, &mut out);
        out
    }

    /// Freeze (`true`) or thaw every process in the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (path, value) = if self.version.is_v2() {
            (
                self.dir("").join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )
        } else {
            (
                self.dir("freezer").join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            )
        };
        fs::write(&path, value).map_err(io_err(&path))
    }

    /// Whether the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        if self.version.is_v2() {
            read_trim(&self.dir("").join("cgroup.freeze")).as_deref() == Some("1")
        } else {
            matches!(
                read_trim(&self.dir("freezer").join("freezer.state")).as_deref(),
                Some("FROZEN" | "FREEZING")
            )
        }
    }

    /// Read CPU, memory and process counts.
    pub fn usage(&self) -> CgroupUsage {
        let num = |p: PathBuf| {
            read_trim(&p)
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0)
        };
        if self.version.is_v2() {
            let d = self.dir("");
            let cpu_us = read_trim(&d.join("cpu.stat"))
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ").map(str::to_owned))
                })
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            CgroupUsage {
                cpu_ns: cpu_us * 1000,
                memory: num(d.join("memory.current")),
                memory_peak: num(d.join("memory.peak")),
                swap: num(d.join("memory.swap.current")),
                processes: num(d.join("pids.current")),
            }
        } else {
            let mem = self.dir("memory");
            let memory = num(mem.join("memory.usage_in_bytes"));
            let memsw = num(mem.join("memory.memsw.usage_in_bytes"));
            CgroupUsage {
                cpu_ns: num(self.dir("cpuacct").join("cpuacct.usage")),
                memory,
                memory_peak: num(mem.join("memory.max_usage_in_bytes")),
                swap: (memsw - memory).max(0),
                processes: num(self.dir("pids").join("pids.current")),
            }
        }
    }

    /// CPU split, OOM kills and the memory limit.
    pub fn stats(&self) -> CgroupStats {
        let text = |p: PathBuf| read_trim(&p).unwrap_or_default();
        let limit = |v: String| match v.parse::<i64>() {
            // v1 reports "no limit" as a huge page-rounded number.
            Ok(n) if n < i64::MAX / 2 => n,
            _ => 0,
        };
        if self.version.is_v2() {
            let d = self.dir("");
            let cpu = text(d.join("cpu.stat"));
            CgroupStats {
                cpu_user_ns: keyed(&cpu, "user_usec") * 1000,
                cpu_system_ns: keyed(&cpu, "system_usec") * 1000,
                oom_kills: keyed(&text(d.join("memory.events")), "oom_kill"),
                memory_limit: limit(text(d.join("memory.max"))),
            }
        } else {
            let cpu = text(self.dir("cpuacct").join("cpuacct.stat"));
            let mem = self.dir("memory");
            CgroupStats {
                cpu_user_ns: keyed(&cpu, "user") * (1_000_000_000 / USER_HZ),
                cpu_system_ns: keyed(&cpu, "system") * (1_000_000_000 / USER_HZ),
                oom_kills: keyed(&text(mem.join("memory.oom_control")), "oom_kill"),
                memory_limit: limit(text(mem.join("memory.limit_in_bytes"))),
            }
        }
    }

    /// Kill whatever is left in the cgroup and remove its directories, children first.
    /// Best effort over every directory; returns the first failure.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        if self.version.is_v2() {
            // Kills the whole subtree atomically, no PID races (kernel 5.14+).
            // (Opened without create: on kernels before 5.14 the file does not exist.)
            if let Ok(mut f) = fs::OpenOptions::new()
                .write(true)
                .open(self.dir("").join("cgroup.kill"))
            {
                use std::io::Write;
                let _ = f.write_all(b"1");
            }
        }
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for d in self.dirs() {
            if let Err(e) = remove_tree(&d)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether any directory of the cgroup still exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Some(s) = read_trim(&dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

/// Remove a cgroup directory and its sub-cgroups (bottom-up `rmdir`; cgroupfs files vanish
/// with their directory).
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path())?;
        }
    }
    for attempt in 0..20 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EBUSY: tasks are still exiting.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 19 => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(s: &'a [CgroupSetting], file: &str) -> Vec<&'a str> {
        s.iter()
            .filter(|x| x.file == file)
            .map(|x| x.value.as_str())
            .collect()
    }

    #[test]
    fn host_cgroup_mounts_from_mountinfo() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
99 1 0:50 / /mnt/other rw - cgroup cgroup rw,pids
";
        let m = parse_cgroup_mounts(mi, Path::new("/sys/fs/cgroup"));
        let names: Vec<(&str, &str, &str)> = m
            .iter()
            .map(|x| (x.fstype.as_str(), x.name.as_str(), x.options.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("cgroup", "cpu", "cpu"),
                ("cgroup", "memory", "memory"),
                ("cgroup", "systemd", "xattr,name=systemd"),
                ("cgroup2", "unified", "nsdelegate"),
            ]
        );
        let v2 =
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let m = parse_cgroup_mounts(v2, Path::new("/sys/fs/cgroup"));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].name.as_str(), m[0].fstype.as_str()), ("", "cgroup2"));
    }

    #[test]
    fn v1_quota_sets_period_then_quota() {
        let l = CgroupLimits {
            cpu: Some(CpuAllowance::Quota {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            memory: Some(64 << 20),
            processes: Some(64),
            ..Default::default()
        };
        let s = settings(&l, CgroupVersion::Hybrid);
        assert_eq!(find(&s, "cpu.cfs_period_us"), vec!["100000"]);
        assert_eq!(find(&s, "cpu.cfs_quota_us"), vec!["-1", "50000"]);
        assert_eq!(find(&s, "memory.limit_in_bytes"), vec!["67108864"]);
        // Swap allowed by default: memsw lifted, never capped.
        assert_eq!(find(&s, "memory.memsw.limit_in_bytes"), vec!["-1"]);
        assert_eq!(find(&s, "memory.soft_limit_in_bytes"), vec!["-1"]);
        assert_eq!(find(&s, "pids.max"), vec!["64"]);
        assert!(s.iter().all(|x| !x.controller.is_empty()));
    }

    #[test]
    fn v1_percent_is_a_share() {
        let l = CgroupLimits {
            cpu: Some(CpuAllowance::Percent(50)),
            ..Default::default()
        };
        let s = settings(&l, CgroupVersion::V1);
        assert_eq!(find(&s, "cpu.shares"), vec!["512"]);
        assert_eq!(find(&s, "cpu.cfs_quota_us"), vec!["-1"]);
        assert_eq!(find(&s, "memory.limit_in_bytes"), vec!["-1"]);
        assert_eq!(find(&s, "pids.max"), vec!["max"]);
    }

    #[test]
    fn v2_maps_to_unified_files() {
        let l = CgroupLimits {
            cpu: Some(CpuAllowance::Quota {
                quota_us: 25_000,
                period_us: 100_000,
            }),
            memory: Some(1 << 30),
            processes: Some(100),
            ..Default::default()
        };
        let s = settings(&l, CgroupVersion::V2);
        assert_eq!(find(&s, "cpu.max"), vec!["25000 100000"]);
        assert_eq!(find(&s, "memory.max"), vec!["1073741824"]);
        assert_eq!(find(&s, "pids.max"), vec!["100"]);
        assert!(s.iter().all(|x| x.controller.is_empty()));
        let none = settings(&CgroupLimits::default(), CgroupVersion::V2);
        assert_eq!(find(&none, "cpu.max"), vec!["max 100000"]);
        assert_eq!(find(&none, "memory.max"), vec!["max"]);
        let half = settings(
            &CgroupLimits {
                cpu: Some(CpuAllowance::Percent(50)),
                ..Default::default()
            },
            CgroupVersion::V2,
        );
        assert_eq!(find(&half, "cpu.weight"), vec!["50"]);
    }

    #[test]
    fn cpuset_priority_soft_memory_no_swap_disk_both_layouts() {
        let l = CgroupLimits {
            cpu: Some(CpuAllowance::Percent(50)),
            cpu_priority: 5,
            cpuset: "1".into(),
            memory: Some(64 << 20),
            memory_soft: true,
            memory_swap: false,
            processes: None,
            disk_priority: Some(7),
        };
        let v1 = settings(&l, CgroupVersion::Hybrid);
        assert_eq!(find(&v1, "cpuset.cpus"), vec!["1"]);
        assert_eq!(find(&v1, "cpu.shares"), vec!["507"]);
        // Soft: no hard cap, a soft limit, and (no hard limit) no memsw cap.
        assert_eq!(find(&v1, "memory.limit_in_bytes"), vec!["-1"]);
        assert_eq!(find(&v1, "memory.soft_limit_in_bytes"), vec!["67108864"]);
        assert_eq!(find(&v1, "memory.memsw.limit_in_bytes"), vec!["-1"]);
        assert_eq!(find(&v1, "blkio.weight"), vec!["700"]);
        let v2 = settings(&l, CgroupVersion::V2);
        assert_eq!(find(&v2, "cpuset.cpus"), vec!["1"]);
        assert_eq!(find(&v2, "cpu.weight"), vec!["49"]);
        assert_eq!(find(&v2, "memory.max"), vec!["max"]);
        assert_eq!(find(&v2, "memory.high"), vec!["67108864"]);
        assert_eq!(find(&v2, "memory.swap.max"), vec!["0"]);
        assert_eq!(find(&v2, "io.weight"), vec!["default 700"]);
        // Hard limit without swap on v1: memsw lifted, limit set, memsw capped to it.
        let hard = CgroupLimits {
            memory_soft: false,
            ..l
        };
        let v1 = settings(&hard, CgroupVersion::V1);
        assert_eq!(
            find(&v1, "memory.memsw.limit_in_bytes"),
            vec!["-1", "67108864"]
        );
        let pos = |f: &str| v1.iter().rposition(|x| x.file == f);
        assert!(pos("memory.limit_in_bytes") < pos("memory.memsw.limit_in_bytes"));
        // Files a kernel may lack are optional, the core ones are not.
        assert!(v1.iter().any(|x| x.file == "blkio.weight" && x.optional));
        assert!(v1.iter().any(|x| x.file == "pids.max" && !x.optional));
    }

    #[test]
    fn v2_fixture_create_apply_usage_remove() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids")?;
        fs::write(root.join("cgroup.subtree_control"), "")?;
        assert_eq!(detect(root)?, CgroupVersion::V2);
        let cg = Cgroup::new(root, CgroupVersion::V2, "ctl", "c1");
        // A plain directory does not create cgroupfs files by itself: pre-create the parent's.
        fs::create_dir(root.join("ctl"))?;
        fs::write(root.join("ctl/cgroup.subtree_control"), "")?;
        let limits = CgroupLimits {
            memory: Some(1 << 20),
            ..Default::default()
        };
        cg.create(&limits)?;
        let dir = root.join("ctl/c1");
        assert_eq!(fs::read_to_string(dir.join("memory.max"))?, "1048576");
        assert_eq!(
            fs::read_to_string(root.join("ctl/cgroup.subtree_control"))?,
            "+cpu +memory +pids"
        );
        assert_eq!(fs::read_to_string(dir.join("memory.high"))?, "max");
        fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n")?;
        fs::write(dir.join("memory.current"), "4096\n")?;
        fs::write(dir.join("pids.current"), "3\n")?;
        let u = cg.usage();
        assert_eq!((u.cpu_ns, u.memory, u.processes), (1_500_000, 4096, 3));
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )?;
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
        )?;
        let st = cg.stats();
        assert_eq!(
            (
                st.cpu_user_ns,
                st.cpu_system_ns,
                st.oom_kills,
                st.memory_limit
            ),
            (1_000_000, 500_000, 2, 1 << 20)
        );
        // On a real cgroupfs rmdir removes the files too; here clear them first.
        for e in fs::read_dir(&dir)? {
            fs::remove_file(e?.path())?;
        }
        cg.remove()?;
        assert!(!cg.exists());
        Ok(())
    }

    #[test]
    fn v1_fixture_dirs_per_controller() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        for c in V1_CONTROLLERS {
            fs::create_dir(root.join(c))?;
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1")?;
        fs::write(root.join("cpuset/cpuset.mems"), "0")?;
        assert_eq!(detect(root)?, CgroupVersion::V1);
        fs::create_dir(root.join("unified"))?;
        fs::write(root.join("unified/cgroup.procs"), "")?;
        assert_eq!(detect(root)?, CgroupVersion::Hybrid);
        let cg = Cgroup::new(root, CgroupVersion::Hybrid, "ctl-x", "c2");
        cg.create(&CgroupLimits {
            processes: Some(10),
            ..Default::default()
        })?;
        assert_eq!(
            fs::read_to_string(root.join("pids/ctl-x/c2/pids.max"))?,
            "10"
        );
        assert_eq!(
            fs::read_to_string(root.join("memory/ctl-x/c2/memory.limit_in_bytes"))?,
            "-1"
        );
        // Hybrid: every v1 controller plus the controller-less unified directory.
        assert_eq!(cg.procs_files().len(), V1_CONTROLLERS.len() + 1);
        assert!(root.join("unified/ctl-x/c2").is_dir());
        assert_eq!(
            fs::read_to_string(root.join("devices/ctl-x/c2/devices.deny"))?,
            "a"
        );
        Ok(())
    }
}
