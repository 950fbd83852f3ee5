//! A container's cgroup on v1, v2 and hybrid hosts: the pure translation from limits to
//! cgroup files ([`settings`]), and the file operations that create, limit, delegate,
//! freeze, measure and remove it. Detection lives in [`layout`], the device policy in
//! [`devices`].
//!
//! Shape: in every hierarchy the host has mounted (v1 controllers, named v1 hierarchies such
//! as `name=systemd`, the unified tree) a container gets an **outer** cgroup
//! `<parent>/<name>` that holds its limits and device policy, and an **inner** leaf
//! `<parent>/<name>/ns` ([`INNER`]) that its processes run in and that becomes the root of
//! its cgroup namespace. Limits are hierarchical, so nothing the container writes below its
//! namespace root can lift what the outer cgroup sets; [`Cgroup::delegate`] hands the inner
//! cgroup (never the outer) to a user-namespaced container's root.
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
    #[error(
        "no devices controller and no cgroup2 under {0}: refusing a container without a device policy"
    )]
    NoDevicePolicy(PathBuf),
    #[error("device rule {0:?} does not parse")]
    DeviceRule(String),
    #[error("cgroup {path}: attaching the device policy program: {source}")]
    DeviceProgram {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The inner cgroup's name, below the outer `<parent>/<name>` in every hierarchy: the
/// container's processes and cgroup namespace root live there, its limits one level up
/// (LXC calls the same level `lxc.cgroup.dir.container.inner`).
pub const INNER: &str = "ns";

/// What a delegatee may write in its cgroup2 namespace root: move processes and threads,
/// and enable controllers for the sub-cgroups it creates (the kernel's
/// `/sys/kernel/cgroup/delegate` minus the memory knobs). Every limit file stays root's.
pub const V2_DELEGATED_FILES: &[&str] =
    &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// The same for a v1 hierarchy: move processes (`cgroup.procs`, `tasks`), and the two
/// per-cgroup flags systemd sets on cgroups it manages.
pub const V1_DELEGATED_FILES: &[&str] = &[
    "cgroup.procs",
    "tasks",
    "cgroup.clone_children",
    "notify_on_release",
];

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
    /// `limits.read`/`limits.write` of `disk` devices, one entry per block device.
    pub io_throttle: Vec<IoThrottle>,
}

/// I/O limits on one block device (a `disk` device's `limits.read`, `limits.write`,
/// `limits.max`), bytes or operations per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoThrottle {
    pub major: u32,
    pub minor: u32,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// Which limit of an [`IoThrottle`] a throttle file takes.
type ThrottleField = fn(&IoThrottle) -> Option<u64>;

/// The v1 `blkio` throttle files, with the field of [`IoThrottle`] each one takes.
const V1_THROTTLE_FILES: [(&str, ThrottleField); 4] = [
    ("blkio.throttle.read_bps_device", |t| t.read_bps),
    ("blkio.throttle.write_bps_device", |t| t.write_bps),
    ("blkio.throttle.read_iops_device", |t| t.read_iops),
    ("blkio.throttle.write_iops_device", |t| t.write_iops),
];

impl IoThrottle {
    /// The line for v2 `io.max` (`max` for no limit).
    fn io_max_line(&self) -> String {
        let v = |x: Option<u64>| x.map_or("max".to_string(), |x| x.to_string());
        format!(
            "{}:{} rbps={} wbps={} riops={} wiops={}",
            self.major,
            self.minor,
            v(self.read_bps),
            v(self.write_bps),
            v(self.read_iops),
            v(self.write_iops)
        )
    }
}

/// The writes that lift the rules of devices in a throttle file's `current` text (`MAJ:MIN
/// ...` lines, v1 or v2) that `wanted` no longer limits: `MAJ:MIN 0` on v1, every limit
/// `max` on v2.
pub fn stale_io_rules(current: &str, wanted: &[IoThrottle], v2: bool) -> Vec<String> {
    current
        .lines()
        .filter_map(|l| layout_dev(l.split_whitespace().next()?))
        .filter(|(maj, min)| !wanted.iter().any(|t| t.major == *maj && t.minor == *min))
        .map(|(maj, min)| match v2 {
            true => format!("{maj}:{min} rbps=max wbps=max riops=max wiops=max"),
            false => format!("{maj}:{min} 0"),
        })
        .collect()
}

fn layout_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
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
            io_throttle: Vec::new(),
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

/// The v1 controllers ctl sets limits or reads usage with (a container gets a cgroup in every
/// mounted hierarchy, these and any other; see [`layout::hierarchies`]). Also the fallback
/// list of hierarchies for a cgroup root that mountinfo does not show.
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
        for t in &limits.io_throttle {
            out.push(setting("", "io.max", t.io_max_line()));
        }
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
        // 0 lifts a rule: a limit no longer set on a device still limited is lifted.
        for t in &limits.io_throttle {
            for (file, value) in V1_THROTTLE_FILES {
                let v = value(t).unwrap_or(0);
                out.push(setting(
                    "blkio",
                    file,
                    format!("{}:{} {v}", t.major, t.minor),
                ));
            }
        }
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

/// A container's cgroup: an outer and an inner directory in every hierarchy of the host's
/// [`CgroupLayout`] (see the module docs).
#[derive(Debug, Clone)]
pub struct Cgroup<'a> {
    layout: &'a CgroupLayout,
    /// Relative path of the outer cgroup below each hierarchy's mount, e.g. `ctl/c1`.
    rel: PathBuf,
}

impl<'a> Cgroup<'a> {
    /// The cgroup `parent/name` in every hierarchy of `layout`.
    pub fn new(layout: &'a CgroupLayout, parent: &str, name: &str) -> Self {
        Cgroup {
            layout,
            rel: Path::new(parent).join(name),
        }
    }

    /// The outer directories, one per hierarchy: limits, device policy, counters.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .map(|h| h.path.join(&self.rel))
            .collect()
    }

    /// The inner directories, one per hierarchy: where the container's processes run.
    pub fn inner_dirs(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join(INNER)).collect()
    }

    /// The outer directory that holds `controller`'s files (any name on v2: the one tree).
    fn dir(&self, controller: &str) -> PathBuf {
        let h = if self.layout.version.is_v2() {
            self.layout.unified()
        } else {
            self.layout.controller(controller)
        };
        match h {
            Some(h) => h.path.join(&self.rel),
            // Not mounted: a path that fails to read or write, naming what is missing.
            None => self.layout.root.join(controller).join(&self.rel),
        }
    }

    /// The `cgroup.procs` files a process must be written into to join this cgroup: the
    /// inner ones (for the init and for every exec).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.inner_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Create the outer and inner directories in every hierarchy (on v2 enabling controllers
    /// on the way down, the outer's included, so the container can limit what it nests),
    /// set the device policy and apply `limits`. Nothing is left behind on failure.
    pub fn create(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        // v1 `devices.deny a` is refused once a cgroup has children: the policy goes on the
        // outer cgroups before the inner ones exist (they inherit it).
        let result = self
            .create_dirs(false)
            .and_then(|()| self.restrict_devices())
            .and_then(|()| self.create_dirs(true))
            .and_then(|()| self.apply(limits));
        if result.is_err() {
            let _ = self.remove();
        }
        result
    }

    /// The device policy, on the outer cgroup: v1 `devices` deny-all plus the allow list,
    /// and on a cgroup2 tree (v2, or hybrid's unified, which the kernel checks too) the
    /// same list as a BPF program. A host with neither is refused.
    fn restrict_devices(&self) -> Result<(), CgroupError> {
        if self.layout.devices_inherited {
            return Ok(());
        }
        let v1 = self.layout.controller("devices");
        if let Some(h) = v1 {
            let dir = h.path.join(&self.rel);
            let deny = dir.join("devices.deny");
            fs::write(&deny, "a").map_err(io_err(&deny))?;
            let allow = dir.join("devices.allow");
            for rule in V1_DEVICE_ALLOW {
                fs::write(&allow, rule).map_err(io_err(&allow))?;
            }
        }
        let unified = self.layout.unified().filter(|_| self.layout.bpf_devices);
        if let Some(h) = unified {
            let dir = h.path.join(&self.rel);
            let rules = devices::default_rules().ok_or_else(|| {
                CgroupError::DeviceRule(
                    V1_DEVICE_ALLOW
                        .iter()
                        .find(|r| devices::DeviceRule::parse(r).is_none())
                        .map_or_else(String::new, |r| (*r).to_string()),
                )
            })?;
            devices::attach(&dir, &rules)
                .map_err(|source| CgroupError::DeviceProgram { path: dir, source })?;
        } else if v1.is_none() && !self.layout.version.is_v2() {
            return Err(CgroupError::NoDevicePolicy(self.layout.root.clone()));
        }
        Ok(())
    }

    /// Create the outer directories (`inner` false: every level of `<parent>/<name>`) or
    /// the inner ones below them, in every hierarchy.
    fn create_dirs(&self, inner: bool) -> Result<(), CgroupError> {
        let levels: Vec<&std::ffi::OsStr> = if inner {
            vec![std::ffi::OsStr::new(INNER)]
        } else {
            self.rel.components().map(|c| c.as_os_str()).collect()
        };
        for h in &self.layout.hierarchies {
            // On v2 the unified tree carries the limits: enable what this kernel offers of
            // the controllers we use at every level down to the outer cgroup, whose
            // children (the inner one and what the container nests) can then be limited.
            let enable = (h.unified && self.layout.version.is_v2()).then(|| {
                let offered = read_trim(&h.path.join("cgroup.controllers")).unwrap_or_default();
                V2_CONTROLLERS
                    .iter()
                    .filter(|c| offered.split_whitespace().any(|o| o == **c))
                    .map(|c| format!("+{c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let mut cur = if inner {
                h.path.join(&self.rel)
            } else {
                h.path.clone()
            };
            for level in &levels {
                if let Some(enable) = &enable {
                    let ctl = cur.join("cgroup.subtree_control");
                    fs::write(&ctl, enable).map_err(io_err(&ctl))?;
                }
                let parent = cur.clone();
                cur = cur.join(level);
                make_dir(&cur)?;
                if h.has_controller("cpuset") {
                    // A v1 cpuset starts empty and takes no task until it has CPUs and
                    // memory nodes: inherit the parent's.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read_trim(&cur.join(f)).unwrap_or_default().is_empty() {
                            let v = read_trim(&parent.join(f)).unwrap_or_default();
                            fs::write(cur.join(f), v).map_err(io_err(&cur.join(f)))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Hand the inner cgroup to `uid`/`gid` (host ids of a user-namespaced container's
    /// root), so its init (systemd) can create and manage sub-cgroups: in every hierarchy
    /// the inner directory and in it [`V2_DELEGATED_FILES`] or [`V1_DELEGATED_FILES`]
    /// (those the kernel has) change owner. The outer directory and every limit file stay
    /// root's. Call after [`Cgroup::create`], before the init starts.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<(), CgroupError> {
        use std::os::unix::fs::lchown;
        for (h, inner) in self.layout.hierarchies.iter().zip(self.inner_dirs()) {
            lchown(&inner, Some(uid), Some(gid)).map_err(io_err(&inner))?;
            let files = if h.unified {
                V2_DELEGATED_FILES
            } else {
                V1_DELEGATED_FILES
            };
            for f in files {
                let path = inner.join(f);
                match lchown(&path, Some(uid), Some(gid)) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => r.map_err(io_err(&path))?,
                }
            }
        }
        Ok(())
    }

    /// Lift the I/O rules of devices `limits` no longer names (a `disk` device removed).
    fn lift_stale_io_rules(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let v2 = self.layout.version.is_v2();
        let files: Vec<&str> = match v2 {
            true => vec!["io.max"],
            false => V1_THROTTLE_FILES.iter().map(|(f, _)| *f).collect(),
        };
        let outer = self.dir(if v2 { "" } else { "blkio" });
        // The inner cgroup mirrors the limits (see `apply`): its rules go too.
        for dir in [outer.join(INNER), outer] {
            for f in &files {
                let path = dir.join(f);
                let Some(current) = read_trim(&path) else {
                    continue;
                };
                for line in stale_io_rules(&current, &limits.io_throttle, v2) {
                    fs::write(&path, &line).map_err(io_err(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Write `limits` into the existing cgroup (creation and live updates).
    pub fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        self.lift_stale_io_rules(limits)?;
        for s in settings(limits, self.layout.version) {
            let path = self.dir(s.controller).join(s.file);
            // cgroupfs answers EACCES, not ENOENT, for a file it does not have.
            if s.optional && !path.exists() {
                continue;
            }
            // The limits bind on the outer cgroup; the inner one (the container's view of
            // its root) shows the same values, so programs that size themselves from their
            // cgroup (JVMs, Go runtimes) see them. The inner is written before and after
            // the outer: v1 refuses a parent narrower than its child (cpusets, CFS quotas)
            // and a child wider than its parent, so one of the two orders always works.
            // Only the outer write must succeed: it is the one that limits.
            let inner = self.dir(s.controller).join(INNER).join(s.file);
            let mirror = inner.parent().is_some_and(Path::is_dir);
            if mirror {
                let _ = fs::write(&inner, &s.value);
            }
            fs::write(&path, &s.value).map_err(io_err(&path))?;
            if mirror && let Err(e) = fs::write(&inner, &s.value) {
                tracing::debug!(path = %inner.display(), error = %e, "limit not mirrored");
            }
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
        let h = if self.layout.version.is_v2() {
            self.layout.unified()
        } else {
            self.layout
                .controller("pids")
                .or(self.layout.hierarchies.first())
        };
        let mut out = Vec::new();
        if let Some(h) = h {
            collect_pids(&h.path.join(&self.rel), &mut out);
        }
        out
    }

    /// Freeze (`true`) or thaw every process in the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (path, value) = if self.layout.version.is_v2() {
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
        if self.layout.version.is_v2() {
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
        if self.layout.version.is_v2() {
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
        if self.layout.version.is_v2() {
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
                // v1 counts a kill where the victim lives (the inner cgroup) or where the
                // limit is, depending on the kernel: the larger of the two.
                oom_kills: keyed(&text(mem.join("memory.oom_control")), "oom_kill").max(keyed(
                    &text(mem.join(INNER).join("memory.oom_control")),
                    "oom_kill",
                )),
                memory_limit: limit(text(mem.join("memory.limit_in_bytes"))),
            }
        }
    }

    /// Kill whatever is left in the cgroup and remove its directories in every hierarchy,
    /// children first (what the container nested, then the inner, then the outer cgroup).
    /// Best effort over every directory; returns the first failure.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        if let Some(h) = self.layout.unified() {
            // Kills the whole subtree atomically, no PID races (kernel 5.14+; hybrid hosts
            // have every container process in the unified tree too). Opened without
            // create: on kernels before 5.14 the file does not exist.
            if let Ok(mut f) = fs::OpenOptions::new()
                .write(true)
                .open(h.path.join(&self.rel).join("cgroup.kill"))
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

/// For privileged tests: true as root; otherwise prints why the test is skipped, or fails
/// when `CTL_REQUIRE_ALL` forbids skipping.
#[cfg(test)]
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CTL_REQUIRE_ALL").is_none(),
        "{test}: needs root, and CTL_REQUIRE_ALL forbids skipping"
    );
    eprintln!("{test}: skipped, needs root");
    false
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
    fn io_throttles_both_layouts_and_stale_rules() {
        let l = CgroupLimits {
            io_throttle: vec![IoThrottle {
                major: 7,
                minor: 3,
                read_bps: Some(10_000_000),
                write_iops: Some(100),
                ..IoThrottle::default()
            }],
            ..CgroupLimits::default()
        };
        let v1 = settings(&l, CgroupVersion::Hybrid);
        assert_eq!(
            find(&v1, "blkio.throttle.read_bps_device"),
            ["7:3 10000000"]
        );
        assert_eq!(find(&v1, "blkio.throttle.write_bps_device"), ["7:3 0"]);
        assert_eq!(find(&v1, "blkio.throttle.write_iops_device"), ["7:3 100"]);
        let v2 = settings(&l, CgroupVersion::V2);
        assert_eq!(
            find(&v2, "io.max"),
            ["7:3 rbps=10000000 wbps=max riops=max wiops=100"]
        );
        assert!(
            find(
                &settings(&CgroupLimits::default(), CgroupVersion::V2),
                "io.max"
            )
            .is_empty()
        );
        assert_eq!(
            stale_io_rules("7:3 10000000\n8:0 5000\n", &l.io_throttle, false),
            ["8:0 0"]
        );
        assert_eq!(
            stale_io_rules("8:0 rbps=5 wbps=max riops=max wiops=max", &[], true),
            ["8:0 rbps=max wbps=max riops=max wiops=max"]
        );
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
            io_throttle: Vec::new(),
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

    /// Regular files of a fixture tree, removed so `rmdir` works as on a real cgroupfs.
    fn clear_files(dir: &Path) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                clear_files(&e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    #[test]
    fn v2_fixture_outer_limits_inner_procs() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids")?;
        fs::write(root.join("cgroup.subtree_control"), "")?;
        assert_eq!(detect(root)?, CgroupVersion::V2);
        let layout = CgroupLayout::new(root, CgroupVersion::V2, "");
        // A plain directory is no cgroup2: no BPF program for a fixture.
        assert!(!layout.bpf_devices);
        let cg = Cgroup::new(&layout, "ctl", "c1");
        // A plain directory does not create cgroupfs files by itself: pre-create the parent's.
        fs::create_dir(root.join("ctl"))?;
        fs::write(root.join("ctl/cgroup.subtree_control"), "")?;
        let limits = CgroupLimits {
            memory: Some(1 << 20),
            ..Default::default()
        };
        cg.create(&limits)?;
        let outer = root.join("ctl/c1");
        let inner = outer.join(INNER);
        assert_eq!(cg.dirs(), vec![outer.clone()]);
        assert_eq!(cg.inner_dirs(), vec![inner.clone()]);
        assert_eq!(cg.procs_files(), vec![inner.join("cgroup.procs")]);
        // Limits on the outer cgroup, mirrored on the inner one (the container's view).
        assert_eq!(fs::read_to_string(outer.join("memory.max"))?, "1048576");
        assert_eq!(fs::read_to_string(outer.join("memory.high"))?, "max");
        assert_eq!(fs::read_to_string(inner.join("memory.max"))?, "1048576");
        // Controllers enabled on the way down, the outer's included (for the inner leaf).
        for d in [root.join("ctl"), outer.clone()] {
            assert_eq!(
                fs::read_to_string(d.join("cgroup.subtree_control"))?,
                "+cpu +memory +pids",
                "{}",
                d.display()
            );
        }
        assert!(!inner.join("cgroup.subtree_control").exists());
        // Counters are hierarchical: read from the outer cgroup.
        fs::write(outer.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n")?;
        fs::write(outer.join("memory.current"), "4096\n")?;
        fs::write(outer.join("pids.current"), "3\n")?;
        let u = cg.usage();
        assert_eq!((u.cpu_ns, u.memory, u.processes), (1_500_000, 4096, 3));
        fs::write(
            outer.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )?;
        fs::write(
            outer.join("memory.events"),
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
        cg.set_frozen(true)?;
        assert_eq!(fs::read_to_string(outer.join("cgroup.freeze"))?, "1");
        assert!(cg.is_frozen());
        // Processes anywhere below the outer cgroup count (the inner one, what it nests).
        fs::create_dir(inner.join("init.scope"))?;
        fs::write(inner.join("init.scope/cgroup.procs"), "")?;
        assert!(cg.pids().is_empty());
        // On a real cgroupfs rmdir removes the files too; here clear them first.
        clear_files(&outer)?;
        cg.remove()?;
        assert!(!cg.exists() && !inner.exists());
        assert!(root.join("ctl").is_dir());
        Ok(())
    }

    /// A hybrid fixture: co-mounted `cpu,cpuacct`, a named `systemd` hierarchy, `net_cls`
    /// (no controller of ours), and the unified tree.
    fn hybrid_fixture(root: &Path) -> Result<CgroupLayout, Box<dyn std::error::Error>> {
        let v1 = [
            ("cpu,cpuacct", "rw,cpu,cpuacct"),
            ("cpuset", "rw,cpuset"),
            ("memory", "rw,memory"),
            ("pids", "rw,pids"),
            ("freezer", "rw,freezer"),
            ("devices", "rw,devices"),
            ("blkio", "rw,blkio"),
            ("net_cls", "rw,net_cls"),
            ("systemd", "rw,xattr,name=systemd"),
        ];
        let mut mi = format!("31 23 0:28 / {} rw - tmpfs tmpfs rw\n", root.display());
        for (i, (dir, opts)) in v1.iter().enumerate() {
            fs::create_dir(root.join(dir))?;
            mi += &format!(
                "{} 31 0:{} / {} rw - cgroup cgroup {opts}\n",
                40 + i,
                40 + i,
                root.join(dir).display()
            );
        }
        fs::create_dir(root.join("unified"))?;
        fs::write(root.join("unified/cgroup.procs"), "")?;
        mi += &format!(
            "60 31 0:60 / {} rw - cgroup2 cgroup2 rw\n",
            root.join("unified").display()
        );
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1")?;
        fs::write(root.join("cpuset/cpuset.mems"), "0")?;
        assert_eq!(detect(root)?, CgroupVersion::Hybrid);
        let layout = CgroupLayout::detect(root, &mi)?;
        assert_eq!(layout.hierarchies.len(), v1.len() + 1);
        Ok(layout)
    }

    #[test]
    fn v1_fixture_every_hierarchy_outer_and_inner() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        let layout = hybrid_fixture(root)?;
        let cg = Cgroup::new(&layout, "ctl-x", "c2");
        cg.create(&CgroupLimits {
            processes: Some(10),
            cpu: Some(CpuAllowance::Percent(50)),
            ..Default::default()
        })?;
        let outer = |h: &str| root.join(h).join("ctl-x/c2");
        // Every hierarchy, named and unknown ones included, has both levels.
        for h in [
            "cpu,cpuacct",
            "cpuset",
            "memory",
            "pids",
            "freezer",
            "devices",
            "blkio",
            "net_cls",
            "systemd",
            "unified",
        ] {
            assert!(outer(h).join(INNER).is_dir(), "{h}");
        }
        assert_eq!(cg.procs_files().len(), layout.hierarchies.len());
        assert!(
            cg.procs_files()
                .iter()
                .all(|p| p.ends_with("ctl-x/c2/ns/cgroup.procs")),
            "{:?}",
            cg.procs_files()
        );
        // Limits on the outer cgroups, in the hierarchy that carries each controller, and
        // mirrored on the inner ones.
        assert_eq!(fs::read_to_string(outer("pids").join("pids.max"))?, "10");
        assert_eq!(
            fs::read_to_string(outer("pids").join(INNER).join("pids.max"))?,
            "10"
        );
        assert_eq!(
            fs::read_to_string(outer("cpu,cpuacct").join("cpu.shares"))?,
            "512"
        );
        assert_eq!(
            fs::read_to_string(outer("memory").join("memory.limit_in_bytes"))?,
            "-1"
        );
        // Both cpuset levels inherit CPUs and memory nodes, or no task could join.
        for d in [outer("cpuset"), outer("cpuset").join(INNER)] {
            assert_eq!(fs::read_to_string(d.join("cpuset.cpus"))?, "0-1");
            assert_eq!(fs::read_to_string(d.join("cpuset.mems"))?, "0");
        }
        // Device policy on the outer devices cgroup (the fixture file keeps the last write).
        assert_eq!(
            fs::read_to_string(outer("devices").join("devices.deny"))?,
            "a"
        );
        assert_eq!(
            fs::read_to_string(outer("devices").join("devices.allow"))?,
            V1_DEVICE_ALLOW[V1_DEVICE_ALLOW.len() - 1]
        );
        assert!(!outer("devices").join(INNER).join("devices.deny").exists());
        // Counters from the outer cgroups.
        fs::write(outer("cpu,cpuacct").join("cpuacct.usage"), "777\n")?;
        fs::write(outer("pids").join("pids.current"), "2\n")?;
        let u = cg.usage();
        assert_eq!((u.cpu_ns, u.processes), (777, 2));
        cg.set_frozen(true)?;
        assert_eq!(
            fs::read_to_string(outer("freezer").join("freezer.state"))?,
            "FROZEN"
        );
        for h in &layout.hierarchies {
            clear_files(&h.path.join("ctl-x/c2"))?;
        }
        cg.remove()?;
        assert!(!cg.exists());
        assert!(!root.join("systemd/ctl-x/c2").exists());
        Ok(())
    }

    #[test]
    fn v1_without_devices_controller_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        for c in ["memory", "pids"] {
            fs::create_dir(root.join(c))?;
        }
        let layout = CgroupLayout::detect(root, "")?;
        assert_eq!(layout.version, CgroupVersion::V1);
        let cg = Cgroup::new(&layout, "ctl", "c3");
        assert!(matches!(
            cg.create(&CgroupLimits::default()),
            Err(CgroupError::NoDevicePolicy(_))
        ));
        assert!(!cg.exists());
        Ok(())
    }

    #[test]
    fn delegation_files_by_kind() {
        assert_eq!(
            V2_DELEGATED_FILES,
            ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
        );
        assert_eq!(
            V1_DELEGATED_FILES,
            [
                "cgroup.procs",
                "tasks",
                "cgroup.clone_children",
                "notify_on_release"
            ]
        );
    }

    #[test]
    fn fixture_delegate_chowns_only_the_inner_cgroup() -> Result<(), Box<dyn std::error::Error>> {
        if !root_or_skip("delegate (chown to another uid)") {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        let layout = hybrid_fixture(root)?;
        let cg = Cgroup::new(&layout, "ctl-x", "c4");
        cg.create(&CgroupLimits::default())?;
        // What cgroupfs would show in each directory (all of it, for both kinds).
        let all = [
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
            "tasks",
            "cgroup.clone_children",
            "notify_on_release",
            "pids.max",
            "memory.max",
        ];
        for d in cg.dirs().iter().chain(cg.inner_dirs().iter()) {
            for f in all {
                fs::write(d.join(f), "")?;
            }
        }
        let (uid, gid) = (1_000_000, 1_000_001);
        cg.delegate(uid, gid)?;
        let owner = |p: &Path| fs::metadata(p).map(|m| (m.uid(), m.gid()));
        for (h, (outer, inner)) in layout
            .hierarchies
            .iter()
            .zip(cg.dirs().into_iter().zip(cg.inner_dirs()))
        {
            assert_eq!(owner(&outer)?, (0, 0), "{}", outer.display());
            assert_eq!(owner(&inner)?, (uid, gid), "{}", inner.display());
            let delegated = if h.unified {
                V2_DELEGATED_FILES
            } else {
                V1_DELEGATED_FILES
            };
            for f in all {
                let want = if delegated.contains(&f) {
                    (uid, gid)
                } else {
                    (0, 0)
                };
                assert_eq!(owner(&inner.join(f))?, want, "{}/{f}", inner.display());
                assert_eq!(owner(&outer.join(f))?, (0, 0), "{}/{f}", outer.display());
            }
        }
        for h in &layout.hierarchies {
            clear_files(&h.path.join("ctl-x/c4"))?;
        }
        cg.remove()?;
        Ok(())
    }

    /// Removes a test's cgroup (and its parent) on every exit path, failures included.
    struct CgroupGuard<'a> {
        cg: Cgroup<'a>,
        parent: String,
    }

    impl Drop for CgroupGuard<'_> {
        fn drop(&mut self) {
            if let Err(e) = self.cg.remove() {
                eprintln!("cleanup: {e}");
            }
            for h in &self.cg.layout.hierarchies {
                let _ = fs::remove_dir(h.path.join(&self.parent));
            }
        }
    }

    /// On this host's real cgroups: a cgroup in every mounted hierarchy, processes in the
    /// inner one, limits and the device policy on the outer one, which the inner one cannot
    /// lift; delegation; removal.
    #[test]
    fn host_cgroup_every_hierarchy_inner_leaf_devices() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        if !root_or_skip("host cgroup") {
            return Ok(());
        }
        let root = Path::new("/sys/fs/cgroup");
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let layout = CgroupLayout::detect(root, &mountinfo)?;
        eprintln!(
            "host cgroups {}: {:?}",
            layout.version.as_str(),
            layout
                .hierarchies
                .iter()
                .map(|h| h.options.as_str())
                .collect::<Vec<_>>()
        );
        let parent = format!("ctl-test-{}", std::process::id());
        let guard = CgroupGuard {
            cg: Cgroup::new(&layout, &parent, "c"),
            parent: parent.clone(),
        };
        let cg = &guard.cg;
        cg.create(&CgroupLimits {
            processes: Some(50),
            ..Default::default()
        })?;
        if layout.version != CgroupVersion::V1 {
            assert!(layout.bpf_devices, "the unified tree is a real cgroup2");
        }
        for d in cg.inner_dirs() {
            assert!(d.join("cgroup.procs").is_file(), "{}", d.display());
        }
        // The limit binds on the outer cgroup; the inner one shows the same value.
        let pids_outer = cg.dir("pids");
        assert_eq!(
            read_trim(&pids_outer.join("pids.max")).as_deref(),
            Some("50")
        );
        assert_eq!(
            read_trim(&pids_outer.join(INNER).join("pids.max")).as_deref(),
            Some("50")
        );
        if let Some(dev) = layout.controller("devices") {
            // Attack (b): a privileged container that mounts a fresh devices hierarchy sees
            // its inner cgroup as the root; allowing everything there must fail.
            let inner = dev.path.join(&parent).join("c").join(INNER);
            assert!(fs::write(inner.join("devices.allow"), "a").is_err());
            let list = read_trim(&inner.join("devices.list")).unwrap_or_default();
            assert!(!list.contains("a *:* rwm"), "{list}");
            assert!(list.contains("c 1:3 rwm"), "{list}");
        }
        cg.delegate(1_000_000, 1_000_000)?;
        for (outer, inner) in cg.dirs().iter().zip(cg.inner_dirs()) {
            assert_eq!(fs::metadata(outer)?.uid(), 0);
            assert_eq!(fs::metadata(&inner)?.uid(), 1_000_000);
            assert_eq!(fs::metadata(inner.join("cgroup.procs"))?.uid(), 1_000_000);
        }
        assert_eq!(
            fs::metadata(pids_outer.join(INNER).join("pids.max"))?.uid(),
            0
        );
        // A process written into the procs files runs in the inner cgroup everywhere and
        // cannot open a device outside the list.
        let script = r#"for f in "$@"; do echo $$ > "$f" || exit 90; done
cat /proc/self/cgroup
head -c1 /dev/null && echo null-ok
head -c0 /dev/kmsg && echo kmsg-ok
exit 0"#;
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .args(cg.procs_files())
            .output()?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        let suffix = format!("/{parent}/c/{INNER}");
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("::") || l.contains(":/"))
            .collect();
        assert_eq!(lines.len(), layout.hierarchies.len(), "{stdout}");
        assert!(lines.iter().all(|l| l.ends_with(&suffix)), "{stdout}");
        assert!(stdout.contains("null-ok"), "{stdout}{stderr}");
        assert!(!stdout.contains("kmsg-ok"), "{stdout}{stderr}");
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
        cg.remove()?;
        assert!(!cg.exists());
        Ok(())
    }
}
