//! What a container is made of, as data handed to the spawn code: namespaces, id mapping,
//! mounts, devices, capabilities, init. The defaults live here as pure functions so the
//! runtime never hard-codes them and a user-namespaced spec is a different value, not a
//! different code path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Mount,
    Uts,
    Ipc,
    Pid,
    Net,
    Cgroup,
    User,
}

impl Namespace {
    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Net => libc::CLONE_NEWNET,
            Namespace::Cgroup => libc::CLONE_NEWCGROUP,
            Namespace::User => libc::CLONE_NEWUSER,
        }
    }

    /// The file name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::Mount => "mnt",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Pid => "pid",
            Namespace::Net => "net",
            Namespace::Cgroup => "cgroup",
            Namespace::User => "user",
        }
    }
}

/// One contiguous uid or gid range mapping (`/proc/<pid>/uid_map` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The id mapping of a user-namespaced container. `None` in a spec means privileged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

/// The host id of `inside` under `ranges`, if it is mapped.
pub fn to_host(ranges: &[IdRange], inside: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = inside.checked_sub(r.inside)?;
        (off < r.count).then(|| r.outside + off)
    })
}

/// The container id of host id `host` under `ranges`, if it is mapped.
pub fn to_inside(ranges: &[IdRange], host: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = host.checked_sub(r.outside)?;
        (off < r.count).then(|| r.inside + off)
    })
}

impl IdMap {
    /// The host uid of container uid `inside`.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        to_host(&self.uids, inside)
    }

    /// The host gid of container gid `inside`.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        to_host(&self.gids, inside)
    }

    /// Parse the kernel's `/proc/<pid>/uid_map` (or `gid_map`) text.
    pub fn parse_proc(text: &str) -> Vec<IdRange> {
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace().map(|w| w.parse::<u32>().ok());
                Some(IdRange {
                    inside: it.next()??,
                    outside: it.next()??,
                    count: it.next()??,
                })
            })
            .collect()
    }

    /// Whether the map is the identity over all ids (the initial user namespace).
    pub fn is_identity(ranges: &[IdRange]) -> bool {
        ranges.len() == 1
            && ranges[0].inside == 0
            && ranges[0].outside == 0
            && ranges[0].count == u32::MAX
    }
}

/// What to do for one entry of the container's mount table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MountEntry {
    /// A filesystem mount (`mount -t fstype source target -o data`).
    Fs {
        fstype: String,
        source: String,
        target: String,
        flags: Vec<MountFlag>,
        data: String,
    },
    /// A bind mount of a host path onto a file or directory in the rootfs.
    Bind {
        source: PathBuf,
        target: String,
        file: bool,
        flags: Vec<MountFlag>,
    },
    /// A symlink in the rootfs.
    Symlink { target: String, link: String },
    /// A directory in the rootfs.
    Dir { path: String, mode: u32 },
    /// Bind a path of the rootfs onto itself read-only (e.g. `/proc/sys`); skipped when
    /// the path does not exist.
    ReadOnly { path: String },
    /// Bind a path of the rootfs onto itself writable again, below a read-only bind (e.g.
    /// `/proc/sys/net` under a read-only `/proc/sys`); skipped when the path does not exist.
    Writable { path: String },
    /// Hide a path of the rootfs: a file gets `/dev/null` bound over it, a directory an
    /// empty read-only tmpfs; skipped when the path does not exist.
    Mask { path: String },
    /// A `disk` device: a host path bound in (see [`DiskMount`]). The monitor prepares the
    /// mount as host root and hands it to the init, which attaches it.
    Disk(DiskMount),
}

/// Mount propagation of a `disk` device (`propagation`; the `r` forms apply to the whole
/// tree of a recursive bind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    #[default]
    Private,
    Shared,
    Slave,
    Unbindable,
    Rprivate,
    Rshared,
    Rslave,
    Runbindable,
}

impl Propagation {
    /// The key's values, as LXD spells them.
    pub const NAMES: &[&str] = &[
        "private",
        "shared",
        "slave",
        "unbindable",
        "rprivate",
        "rshared",
        "rslave",
        "runbindable",
    ];

    /// Parse a `propagation` value.
    pub fn parse(v: &str) -> Option<Propagation> {
        use Propagation::*;
        Some(match v {
            "private" => Private,
            "shared" => Shared,
            "slave" => Slave,
            "unbindable" => Unbindable,
            "rprivate" => Rprivate,
            "rshared" => Rshared,
            "rslave" => Rslave,
            "runbindable" => Runbindable,
            _ => return None,
        })
    }

    /// The `MS_*` propagation flag and whether it applies to the whole tree.
    pub fn flag(self) -> (u64, bool) {
        use Propagation::*;
        let (flag, recursive): (u64, bool) = match self {
            Private => (libc::MS_PRIVATE, false),
            Shared => (libc::MS_SHARED, false),
            Slave => (libc::MS_SLAVE, false),
            Unbindable => (libc::MS_UNBINDABLE, false),
            Rprivate => (libc::MS_PRIVATE, true),
            Rshared => (libc::MS_SHARED, true),
            Rslave => (libc::MS_SLAVE, true),
            Runbindable => (libc::MS_UNBINDABLE, true),
        };
        (flag, recursive)
    }
}

/// A host file or directory bound into a container (a `disk` device with a `source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMount {
    /// The canonical host path.
    pub source: PathBuf,
    /// Where inside, relative to the container's root (`data`, `srv/x`), no `..`.
    pub target: String,
    /// The source is a file (the target is created as an empty file, not a directory).
    pub file: bool,
    /// Read-only; in a user-namespaced container the flag is locked (no remount rw).
    pub readonly: bool,
    /// Id-map the mount onto the container's user namespace (host uid N shows as N).
    pub shift: bool,
    /// Bind the mounts below the source too.
    pub recursive: bool,
    pub propagation: Propagation,
}

/// Mount flags the spec may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountFlag {
    Rdonly,
    Nosuid,
    Nodev,
    Noexec,
    Strictatime,
}

/// Everything the spawn code needs to start one container's init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// Instance name; also the hostname.
    pub name: String,
    /// The image's unpacked rootfs: the read-only overlay lower layer.
    pub lower: PathBuf,
    /// Per-container writable layer.
    pub upper: PathBuf,
    /// Overlay work dir (same filesystem as `upper`).
    pub work: PathBuf,
    /// Where the overlay is mounted (inside the container's mount namespace only).
    pub rootfs: PathBuf,
    /// New namespaces for the init.
    pub namespaces: Vec<Namespace>,
    /// `None`: privileged (no user namespace).
    pub id_map: Option<IdMap>,
    /// Id-map `lower` onto the init's user namespace when mounting it (`false`: it is
    /// already in the container's ids, a shifted copy, or the container is privileged).
    #[serde(default)]
    pub idmap_lower: bool,
    /// Mounts made inside the rootfs after the overlay, in order.
    pub mounts: Vec<MountEntry>,
    /// Capability numbers dropped (bounding, permitted, effective; inheritable and ambient
    /// are cleared).
    pub caps_drop: Vec<u32>,
    /// The seccomp filter of the init and everything it starts.
    pub syscalls: super::seccomp::SyscallPolicy,
    /// Init argv; empty means the built-in minimal init (reaps zombies, exits on SIGTERM).
    pub init: Vec<String>,
    /// Init environment.
    pub env: Vec<(String, String)>,
    /// `cgroup.procs` files the init is written into before it runs.
    pub cgroup_procs: Vec<PathBuf>,
    /// File that receives the init's stdout and stderr (without a console), or the console's
    /// last output when the init exits (with one).
    pub log: PathBuf,
    /// Give the init a console PTY held by the monitor, served on this Unix socket.
    #[serde(default)]
    pub console: Option<PathBuf>,
    /// Where the monitor records the running init (`{pid, starttime, monitor_pid}`) before
    /// it reports success, and removes it once the init is gone: a ctld that died in
    /// between finds the container from it.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// The monitor's own log (appended): its stderr from the moment it has read this spec,
    /// so what goes wrong in it after ctld stopped listening (a panic, an init killed by a
    /// signal, a cgroup it could not remove) is written down, not lost.
    #[serde(default)]
    pub monitor_log: Option<PathBuf>,
}

/// `/proc` files hidden from every container (a file gets `/dev/null` over it).
pub const PROC_MASKED: &[&str] = &[
    "proc/kcore",
    "proc/kmsg",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/latency_stats",
    "proc/acpi",
    "proc/scsi",
];

/// `/sys` directories hidden from every container (an empty read-only tmpfs over them).
pub const SYS_MASKED: &[&str] = &[
    "sys/firmware",
    "sys/kernel/security",
    "sys/kernel/debug",
    "sys/kernel/tracing",
];

/// The mount table every container gets: proc, read-only sys, a tmpfs `/dev` with the
/// standard device nodes bound from the host, a private devpts, shm and the fd links.
pub fn default_mounts(host_dev: &std::path::Path) -> Vec<MountEntry> {
    use MountFlag::*;
    let mut m = vec![
        MountEntry::Dir {
            path: "proc".into(),
            mode: 0o555,
        },
        MountEntry::Fs {
            fstype: "proc".into(),
            source: "proc".into(),
            target: "proc".into(),
            flags: vec![Nosuid, Nodev, Noexec],
            data: String::new(),
        },
        // As LXC's `proc:mixed`: the host's kernel knobs and sysrq are read-only; the
        // container's own network knobs stay writable.
        MountEntry::ReadOnly {
            path: "proc/sys".into(),
        },
        MountEntry::Writable {
            path: "proc/sys/net".into(),
        },
        MountEntry::ReadOnly {
            path: "proc/sysrq-trigger".into(),
        },
    ];
    // What Incus, LXC and the OCI defaults hide: kernel memory, the kernel log, timers and
    // keys of the whole host.
    for path in PROC_MASKED {
        m.push(MountEntry::Mask {
            path: (*path).into(),
        });
    }
    m.extend([
        MountEntry::Dir {
            path: "sys".into(),
            mode: 0o555,
        },
        MountEntry::Fs {
            fstype: "sysfs".into(),
            source: "sysfs".into(),
            target: "sys".into(),
            flags: vec![Rdonly, Nosuid, Nodev, Noexec],
            data: String::new(),
        },
    ]);
    for path in SYS_MASKED {
        m.push(MountEntry::Mask {
            path: (*path).into(),
        });
    }
    m.extend([
        MountEntry::Dir {
            path: "dev".into(),
            mode: 0o755,
        },
        // `nodev`: a node made in /dev cannot be opened; the standard ones are bound in.
        MountEntry::Fs {
            fstype: "tmpfs".into(),
            source: "none".into(),
            target: "dev".into(),
            flags: vec![Nosuid, Nodev, Strictatime],
            data: "mode=755,size=65536k".into(),
        },
    ]);
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        m.push(MountEntry::Bind {
            source: host_dev.join(dev),
            target: format!("dev/{dev}"),
            file: true,
            flags: vec![Nosuid, Noexec],
        });
    }
    // The console is wired to the monitor's PTY in a later step; until then it discards.
    m.push(MountEntry::Bind {
        source: host_dev.join("null"),
        target: "dev/console".into(),
        file: true,
        flags: vec![Nosuid, Noexec],
    });
    m.extend([
        MountEntry::Dir {
            path: "dev/pts".into(),
            mode: 0o755,
        },
        MountEntry::Fs {
            fstype: "devpts".into(),
            source: "devpts".into(),
            target: "dev/pts".into(),
            flags: vec![Nosuid, Noexec],
            data: "newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
        },
        MountEntry::Symlink {
            target: "pts/ptmx".into(),
            link: "dev/ptmx".into(),
        },
        MountEntry::Dir {
            path: "dev/shm".into(),
            mode: 0o1777,
        },
        MountEntry::Fs {
            fstype: "tmpfs".into(),
            source: "shm".into(),
            target: "dev/shm".into(),
            flags: vec![Nosuid, Nodev],
            data: "mode=1777,size=65536k".into(),
        },
        MountEntry::Symlink {
            target: "/proc/self/fd".into(),
            link: "dev/fd".into(),
        },
        MountEntry::Symlink {
            target: "/proc/self/fd/0".into(),
            link: "dev/stdin".into(),
        },
        MountEntry::Symlink {
            target: "/proc/self/fd/1".into(),
            link: "dev/stdout".into(),
        },
        MountEntry::Symlink {
            target: "/proc/self/fd/2".into(),
            link: "dev/stderr".into(),
        },
    ]);
    m
}

/// The mount table of a container that may run containers itself (`security.nesting`):
/// `/proc` and `/sys` without masks and read-only binds, since the kernel refuses a fresh
/// `/proc` or `/sys` in a nested user namespace while parts of the outer one are covered.
///
/// Files bound over `/proc` (lxcfs) cover it too, so, as LXD does, a second, uncovered
/// `proc` and `sysfs` are mounted under `/dev/.ctl/`: the kernel accepts a nested mount when
/// any mount of that filesystem is fully visible.
pub fn for_nesting(mounts: Vec<MountEntry>) -> Vec<MountEntry> {
    use MountFlag::*;
    let mut out: Vec<MountEntry> = mounts
        .into_iter()
        .filter(|m| {
            !matches!(
                m,
                MountEntry::Mask { .. } | MountEntry::ReadOnly { .. } | MountEntry::Writable { .. }
            )
        })
        .collect();
    for (fstype, dir) in [("proc", "dev/.ctl/proc"), ("sysfs", "dev/.ctl/sys")] {
        out.push(MountEntry::Dir {
            path: dir.into(),
            mode: 0o555,
        });
        out.push(MountEntry::Fs {
            fstype: fstype.into(),
            source: fstype.into(),
            target: dir.into(),
            flags: vec![Nosuid, Nodev, Noexec],
            data: String::new(),
        });
    }
    out
}

/// The container's view of its cgroups under `/sys/fs/cgroup`, mirroring the host's
/// layout. Inside the cgroup namespace each hierarchy's root is the container's own cgroup,
/// so the host's tree is invisible. v1 hierarchies are read-only (a privileged container
/// could otherwise raise its own limits); a v2 hierarchy is writable so sub-cgroups can be
/// nested (the host's `nsdelegate` keeps the namespace root's own files read-only).
pub fn cgroup_mounts(host: &[crate::worker::cgroup::HostCgroupMount]) -> Vec<MountEntry> {
    use MountFlag::*;
    let base = "sys/fs/cgroup";
    let mut out = Vec::new();
    if let Some(v2) = host
        .iter()
        .find(|m| m.name.is_empty() && m.fstype == "cgroup2")
    {
        out.push(MountEntry::Fs {
            fstype: "cgroup2".into(),
            source: "cgroup2".into(),
            target: base.into(),
            flags: vec![Nosuid, Nodev, Noexec],
            data: v2.options.clone(),
        });
        return out;
    }
    if host.is_empty() {
        return out;
    }
    out.push(MountEntry::Fs {
        fstype: "tmpfs".into(),
        source: "cgroup".into(),
        target: base.into(),
        flags: vec![Nosuid, Nodev, Noexec],
        data: "mode=755,size=64k".into(),
    });
    for m in host {
        let target = format!("{base}/{}", m.name);
        out.push(MountEntry::Dir {
            path: target.clone(),
            mode: 0o755,
        });
        let writable = m.fstype == "cgroup2";
        let mut flags = vec![Nosuid, Nodev, Noexec];
        if !writable {
            flags.push(Rdonly);
        }
        out.push(MountEntry::Fs {
            fstype: m.fstype.clone(),
            source: m.fstype.clone(),
            target,
            flags,
            data: m.options.clone(),
        });
    }
    out
}

/// Make the v1 cgroup hierarchies of a mount table writable (for a user-namespaced
/// container, whose root owns only its delegated cgroup).
pub fn writable_cgroups(mounts: &mut [MountEntry]) {
    for m in mounts {
        if let MountEntry::Fs { fstype, flags, .. } = m
            && fstype == "cgroup"
        {
            flags.retain(|f| *f != MountFlag::Rdonly);
        }
    }
}

/// Files lxcfs renders per container (from the reader's cgroup): bound over the
/// container's own `/proc` and `/sys` files so `free`, `top` and `nproc` see its limits.
pub const LXCFS_FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
];

/// Bind mounts of the lxcfs files that exist under `lxcfs` (its mount point), in the order
/// they must follow the `/proc` and `/sys` mounts.
pub fn lxcfs_mounts(lxcfs: &std::path::Path) -> Vec<MountEntry> {
    LXCFS_FILES
        .iter()
        .filter(|f| lxcfs.join(f).is_file())
        .map(|f| MountEntry::Bind {
            source: lxcfs.join(f),
            target: (*f).to_string(),
            file: true,
            flags: vec![],
        })
        .collect()
}

/// The namespaces of a privileged system container.
pub fn default_namespaces() -> Vec<Namespace> {
    vec![
        Namespace::Mount,
        Namespace::Uts,
        Namespace::Ipc,
        Namespace::Pid,
        Namespace::Net,
        Namespace::Cgroup,
    ]
}

/// Capabilities dropped from every container, as LXC does by default: loading kernel
/// modules, raw I/O, setting the clock, and MAC administration.
pub fn default_caps_drop() -> Vec<u32> {
    super::caps::DEFAULT_DROP.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mounts_cover_the_standard_dev_nodes() {
        let m = default_mounts(std::path::Path::new("/dev"));
        let binds: Vec<&str> = m
            .iter()
            .filter_map(|e| match e {
                MountEntry::Bind { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect();
        for dev in [
            "null", "zero", "full", "random", "urandom", "tty", "console",
        ] {
            assert!(binds.contains(&format!("dev/{dev}").as_str()), "{dev}");
        }
        let sys_ro = m.iter().any(|e| {
            matches!(e, MountEntry::Fs { fstype, flags, .. }
                if fstype == "sysfs" && flags.contains(&MountFlag::Rdonly))
        });
        assert!(sys_ro);
        // The /dev tmpfs must come before anything placed inside it.
        let dev_pos = m
            .iter()
            .position(|e| matches!(e, MountEntry::Fs { target, .. } if target == "dev"));
        let null_pos = m
            .iter()
            .position(|e| matches!(e, MountEntry::Bind { target, .. } if target == "dev/null"));
        assert!(dev_pos < null_pos);
    }

    #[test]
    fn cgroup_view_mirrors_the_host_layout() {
        use crate::worker::cgroup::HostCgroupMount;
        let m = |fstype: &str, name: &str, options: &str| HostCgroupMount {
            fstype: fstype.into(),
            name: name.into(),
            options: options.into(),
        };
        let hybrid = cgroup_mounts(&[m("cgroup", "memory", "memory"), m("cgroup2", "unified", "")]);
        assert!(matches!(&hybrid[0], MountEntry::Fs { fstype, target, .. }
            if fstype == "tmpfs" && target == "sys/fs/cgroup"));
        let v1_ro = hybrid.iter().any(|e| {
            matches!(e, MountEntry::Fs { fstype, target, data, flags, .. }
            if fstype == "cgroup" && target == "sys/fs/cgroup/memory" && data == "memory"
                && flags.contains(&MountFlag::Rdonly))
        });
        assert!(v1_ro, "{hybrid:?}");
        let unified_rw = hybrid.iter().any(|e| {
            matches!(e, MountEntry::Fs { fstype, flags, .. }
            if fstype == "cgroup2" && !flags.contains(&MountFlag::Rdonly))
        });
        assert!(unified_rw);
        let v2 = cgroup_mounts(&[m("cgroup2", "", "nsdelegate")]);
        assert_eq!(v2.len(), 1);
        assert!(
            matches!(&v2[0], MountEntry::Fs { fstype, target, flags, .. }
            if fstype == "cgroup2" && target == "sys/fs/cgroup" && !flags.contains(&MountFlag::Rdonly))
        );
        assert!(cgroup_mounts(&[]).is_empty());
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = SpawnSpec {
            name: "c1".into(),
            lower: "/l".into(),
            upper: "/u".into(),
            work: "/w".into(),
            rootfs: "/r".into(),
            namespaces: default_namespaces(),
            id_map: Some(IdMap {
                uids: vec![IdRange {
                    inside: 0,
                    outside: 100000,
                    count: 65536,
                }],
                gids: vec![],
            }),
            idmap_lower: true,
            mounts: default_mounts(std::path::Path::new("/dev")),
            caps_drop: default_caps_drop(),
            syscalls: crate::worker::seccomp::SyscallPolicy::default(),
            init: vec!["/sbin/init".into()],
            env: vec![("container".into(), "ctl".into())],
            cgroup_procs: vec!["/sys/fs/cgroup/pids/ctl/c1/cgroup.procs".into()],
            log: "/tmp/log".into(),
            console: Some("/tmp/console.sock".into()),
            state_file: Some("/tmp/init.json".into()),
            monitor_log: Some("/tmp/monitor.log".into()),
        };
        let json = serde_json::to_string(&spec).unwrap_or_default();
        let back: Option<SpawnSpec> = serde_json::from_str(&json).ok();
        assert_eq!(back, Some(spec));
    }
}
