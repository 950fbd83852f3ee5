//! The host's cgroup layout, read once at start-up: the version ([`detect`]), every mounted
//! hierarchy ([`hierarchies`], from `/proc/self/mountinfo`: the v1 controllers, named ones
//! such as `name=systemd`, and the unified tree), the hierarchies that exist without a mount
//! ([`unmounted_hierarchies`], from `/proc/self/cgroup`), and where lxcfs runs.
//!
//! Why every hierarchy matters: a container that is not in a cgroup of its own in some
//! hierarchy sits in the host's cgroup there, and a privileged one that mounts that
//! hierarchy (`mount -t cgroup -o none,name=systemd`) gets the host's tree, `release_agent`
//! included. So a container gets a cgroup in each hierarchy listed here, not only in the
//! controllers ctl sets limits with.

use std::path::{Path, PathBuf};

use super::{CgroupError, V1_CONTROLLERS};

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Only cgroup v1 controllers under `<root>/<controller>`.
    V1,
    /// v1 controllers plus a (mostly empty) cgroup2 at `<root>/unified`; limits use the v1
    /// side, the device policy both.
    Hybrid,
    /// Pure cgroup v2 at `<root>`.
    V2,
}

impl CgroupVersion {
    /// `v1`, `hybrid` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::Hybrid => "hybrid",
            CgroupVersion::V2 => "v2",
        }
    }

    pub(super) fn is_v2(self) -> bool {
        self == CgroupVersion::V2
    }
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Detect the layout mounted at `root` (normally `/sys/fs/cgroup`).
pub fn detect(root: &Path) -> Result<CgroupVersion, CgroupError> {
    if is_cgroup2(root) || root.join("cgroup.controllers").is_file() {
        return Ok(CgroupVersion::V2);
    }
    if !root.join("memory").is_dir() && !root.join("pids").is_dir() {
        return Err(CgroupError::NotFound(root.to_path_buf()));
    }
    let unified = root.join("unified");
    if is_cgroup2(&unified) || unified.join("cgroup.procs").is_file() {
        Ok(CgroupVersion::Hybrid)
    } else {
        Ok(CgroupVersion::V1)
    }
}

/// One cgroup filesystem as the container's `/sys/fs/cgroup` shows it (see
/// [`crate::worker::spec::cgroup_mounts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCgroupMount {
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    /// Directory under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`, `systemd`, `unified`, or
    /// empty for a pure v2 root).
    pub name: String,
    /// Mount options that select the hierarchy (`cpu`, `none,name=systemd`).
    pub options: String,
}

/// One cgroup hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The cgroup2 (unified) tree; otherwise a v1 hierarchy.
    pub unified: bool,
    /// Where the host has it mounted.
    pub path: PathBuf,
    /// Its directory in the container's `/sys/fs/cgroup`: the host's mount point name when
    /// that is directly under the cgroup root (`memory`, `cpu,cpuacct`, `systemd`, `unified`;
    /// empty for a pure v2 root), else taken from its options (`name=foo` → `foo`).
    pub name: String,
    /// The options that select it: its controllers and `name=`, `none,name=systemd` for a
    /// named hierarchy without controllers (never `release_agent=`, `xattr`...); for cgroup2
    /// the mount options without `rw`/`ro`.
    pub options: String,
}

impl Hierarchy {
    /// The v1 controllers this hierarchy carries (none for a named or the unified one).
    pub fn controllers(&self) -> impl Iterator<Item = &str> {
        self.options
            .split(',')
            .filter(move |o| !self.unified && !o.is_empty() && *o != "none" && !o.contains('='))
    }

    /// Whether it carries v1 controller `c`.
    pub fn has_controller(&self, c: &str) -> bool {
        self.controllers().any(|x| x == c)
    }

    /// How the container's `/sys/fs/cgroup` mounts it.
    pub fn view(&self) -> HostCgroupMount {
        HostCgroupMount {
            fstype: if self.unified { "cgroup2" } else { "cgroup" }.into(),
            name: self.name.clone(),
            options: self.options.clone(),
        }
    }

    /// The set that identifies a v1 hierarchy: controllers and `name=` (`none` dropped).
    fn key(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .options
            .split(',')
            .filter(|o| !o.is_empty() && *o != "none")
            .collect();
        k.sort_unstable();
        k
    }
}

/// v1 mount options that are flags, not controllers.
const V1_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "none",
    "noprefix",
    "xattr",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
];

/// The selecting options of a v1 mount: controllers, then `name=`; `none,name=X` without
/// controllers. `None` if nothing selects a hierarchy.
fn v1_options(opts: &str) -> Option<String> {
    let mut controllers: Vec<&str> = Vec::new();
    let mut name = None;
    for o in opts.split(',') {
        if let Some(n) = o.strip_prefix("name=") {
            name = Some(n);
        } else if !o.is_empty() && !o.contains('=') && !V1_FLAGS.contains(&o) {
            controllers.push(o);
        }
    }
    match (controllers.is_empty(), name) {
        (true, None) => None,
        (true, Some(n)) => Some(format!("none,name={n}")),
        (false, None) => Some(controllers.join(",")),
        (false, Some(n)) => Some(format!("{},name={n}", controllers.join(","))),
    }
}

/// Every cgroup hierarchy mounted on the host, from `/proc/self/mountinfo`: each v1
/// hierarchy once wherever it is mounted (its mount directly under `root` preferred), and
/// the cgroup2 tree when it is mounted at `root` or directly under it. In mountinfo order.
pub fn hierarchies(mountinfo: &str, root: &Path) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
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
        let point = Path::new(point);
        let under_root = point
            .strip_prefix(root)
            .ok()
            .filter(|rel| rel.components().count() <= 1);
        let h = match fstype {
            "cgroup2" => {
                let Some(rel) = under_root else { continue };
                if out.iter().any(|h| h.unified) {
                    continue;
                }
                Hierarchy {
                    unified: true,
                    path: point.to_path_buf(),
                    name: rel.display().to_string(),
                    options: opts
                        .split(',')
                        .filter(|o| *o != "rw" && *o != "ro")
                        .collect::<Vec<_>>()
                        .join(","),
                }
            }
            "cgroup" => {
                let Some(options) = v1_options(opts) else {
                    continue;
                };
                let name = match under_root.filter(|rel| rel.components().count() == 1) {
                    Some(rel) => rel.display().to_string(),
                    None => match options.split_once("name=") {
                        Some((_, n)) => n.to_string(),
                        None => options.clone(),
                    },
                };
                Hierarchy {
                    unified: false,
                    path: point.to_path_buf(),
                    name,
                    options,
                }
            }
            _ => continue,
        };
        let same = out
            .iter()
            .position(|o| !o.unified && !h.unified && o.key() == h.key());
        match same {
            // Mounted twice: keep the mount under the cgroup root.
            Some(i) if under_root.is_some() && !out[i].path.starts_with(root) => out[i] = h,
            Some(_) => {}
            None => out.push(h),
        }
    }
    out
}

/// The v1 hierarchies in `/proc/self/cgroup` (`ID:controllers:path`) that `known` lacks:
/// they exist but are mounted nowhere we could see, so no container gets a cgroup there.
pub fn unmounted_hierarchies(proc_cgroup: &str, known: &[Hierarchy]) -> Vec<String> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, ctrls) = (f.next()?, f.next()?);
            (id != "0" && !ctrls.is_empty()).then_some(ctrls)
        })
        .filter(|ctrls| {
            let mut k: Vec<&str> = ctrls.split(',').collect();
            k.sort_unstable();
            !known.iter().any(|h| !h.unified && h.key() == k)
        })
        .map(str::to_string)
        .collect()
}

/// Where lxcfs is mounted, if it runs (`fuse.lxcfs` in mountinfo).
pub fn lxcfs_mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "fuse.lxcfs")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The host's cgroup layout: what a [`super::Cgroup`] creates its directories in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The cgroup root (normally `/sys/fs/cgroup`).
    pub root: PathBuf,
    /// Where limits go: the v1 controllers (v1, hybrid) or the unified tree (v2).
    pub version: CgroupVersion,
    /// Every hierarchy a container gets a cgroup in. On v2 the first is the root's cgroup2.
    pub hierarchies: Vec<Hierarchy>,
    /// Whether the unified tree is a real cgroup2 filesystem, so the device policy is also
    /// enforced there with a BPF program (false only for test fixtures in plain dirs).
    pub bpf_devices: bool,
    /// ctld runs inside a container (a user namespace other than the initial one): the
    /// kernel refuses it a device policy of its own (v1 `devices.*` and BPF programs need
    /// capabilities in the initial namespace), and enforces its container's policy on
    /// every cgroup below instead (v1 children never allow more than their parent; BPF
    /// programs attached with `BPF_F_ALLOW_MULTI` run for every descendant).
    pub devices_inherited: bool,
}

impl CgroupLayout {
    /// The layout of a host of `version` whose mounts are `mountinfo`. A root that mountinfo
    /// does not list (a test fixture) falls back to the v1 controller directories that exist
    /// under it, plus `unified` on hybrid.
    pub fn new(root: &Path, version: CgroupVersion, mountinfo: &str) -> Self {
        let mut found = hierarchies(mountinfo, root);
        if version.is_v2() {
            found.retain(|h| !h.unified || h.name.is_empty());
            if !found.iter().any(|h| h.unified) {
                found.insert(0, unified(root, ""));
            }
        } else {
            found.retain(|h| !h.unified || version == CgroupVersion::Hybrid);
            if !found.iter().any(|h| !h.unified) {
                found = V1_CONTROLLERS
                    .iter()
                    .filter(|c| root.join(c).is_dir())
                    .map(|c| Hierarchy {
                        unified: false,
                        path: root.join(c),
                        name: (*c).to_string(),
                        options: (*c).to_string(),
                    })
                    .collect();
                if version == CgroupVersion::Hybrid {
                    found.push(unified(root, "unified"));
                }
            }
        }
        // The root cgroup2 first on v2: `dir("")` and the kill/usage paths look for it.
        found.sort_by_key(|h| !(h.unified && version.is_v2()));
        let bpf_devices = found.iter().any(|h| h.unified && is_cgroup2(&h.path));
        CgroupLayout {
            root: root.to_path_buf(),
            version,
            hierarchies: found,
            bpf_devices,
            devices_inherited: false,
        }
    }

    /// Detect the version under `root`, then [`CgroupLayout::new`].
    pub fn detect(root: &Path, mountinfo: &str) -> Result<Self, CgroupError> {
        Ok(Self::new(root, detect(root)?, mountinfo))
    }

    /// The unified tree, if the host has one (v2, hybrid).
    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.unified)
    }

    /// The hierarchy that carries v1 controller `c`.
    pub fn controller(&self, c: &str) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.has_controller(c))
    }
}

fn unified(root: &Path, name: &str) -> Hierarchy {
    Hierarchy {
        unified: true,
        path: if name.is_empty() {
            root.to_path_buf()
        } else {
            root.join(name)
        },
        name: name.to_string(),
        options: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
99 1 0:50 / /mnt/other rw - cgroup cgroup rw,memory
100 1 0:51 / /run/cg/elogind rw - cgroup cgroup rw,none,name=elogind
101 1 0:52 / /run/cg/perf rw - cgroup cgroup rw,perf_event
102 1 0:53 / /run/cg2 rw - cgroup2 cgroup2 rw
";

    fn table(hs: &[Hierarchy]) -> Vec<(bool, &str, &str, &str)> {
        hs.iter()
            .map(|h| {
                (
                    h.unified,
                    h.path.to_str().unwrap_or(""),
                    h.name.as_str(),
                    h.options.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn every_hierarchy_from_mountinfo() {
        let hs = hierarchies(HYBRID, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            table(&hs),
            vec![
                (
                    false,
                    "/sys/fs/cgroup/cpu,cpuacct",
                    "cpu,cpuacct",
                    "cpu,cpuacct"
                ),
                (false, "/sys/fs/cgroup/memory", "memory", "memory"),
                (
                    false,
                    "/sys/fs/cgroup/net_cls,net_prio",
                    "net_cls,net_prio",
                    "net_cls,net_prio"
                ),
                // Named: selected by `none,name=`; xattr and release_agent are not ours.
                (
                    false,
                    "/sys/fs/cgroup/systemd",
                    "systemd",
                    "none,name=systemd"
                ),
                (true, "/sys/fs/cgroup/unified", "unified", "nsdelegate"),
                // Mounted elsewhere only: still a hierarchy, named after its options.
                (false, "/run/cg/elogind", "elogind", "none,name=elogind"),
                (false, "/run/cg/perf", "perf_event", "perf_event"),
            ]
        );
        assert!(hs[0].has_controller("cpuacct") && !hs[0].has_controller("cpu,cpuacct"));
        assert_eq!(hs[3].controllers().count(), 0);
        assert_eq!(hs[4].controllers().count(), 0);
        assert_eq!(
            hs[3].view(),
            HostCgroupMount {
                fstype: "cgroup".into(),
                name: "systemd".into(),
                options: "none,name=systemd".into()
            }
        );
        // A second mount of a hierarchy first seen elsewhere moves it under the root.
        let later = "1 1 0:5 / /mnt/m rw - cgroup cgroup rw,memory
2 1 0:5 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let hs = hierarchies(later, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            table(&hs),
            vec![(false, "/sys/fs/cgroup/memory", "memory", "memory")]
        );
        let v2 =
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let hs = hierarchies(v2, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            table(&hs),
            vec![(
                true,
                "/sys/fs/cgroup",
                "",
                "nsdelegate,memory_recursiveprot"
            )]
        );
    }

    #[test]
    fn v1_options_keep_only_what_selects_a_hierarchy() {
        let cases = [
            ("rw,cpu,cpuacct", Some("cpu,cpuacct")),
            ("rw,noprefix,release_agent=/x,cpuset", Some("cpuset")),
            ("rw,xattr,name=systemd", Some("none,name=systemd")),
            ("rw,none,name=systemd", Some("none,name=systemd")),
            ("rw,cpu,name=mine", Some("cpu,name=mine")),
            ("rw,clone_children", None),
        ];
        for (opts, want) in cases {
            assert_eq!(v1_options(opts).as_deref(), want, "{opts}");
        }
    }

    #[test]
    fn unmounted_hierarchies_are_reported() {
        let hs = hierarchies(HYBRID, Path::new("/sys/fs/cgroup"));
        let proc_cgroup = "12:rdma:/
11:name=systemd:/init.scope
10:cpuacct,cpu:/
9:memory:/x
8:net_prio,net_cls:/
7:name=elogind:/
6:perf_event:/
5:name=other:/
0::/init.scope
";
        assert_eq!(
            unmounted_hierarchies(proc_cgroup, &hs),
            ["rdma", "name=other"]
        );
    }

    #[test]
    fn layout_keeps_every_hierarchy_of_its_version() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid = CgroupLayout::new(root, CgroupVersion::Hybrid, HYBRID);
        assert_eq!(hybrid.hierarchies.len(), 7);
        assert_eq!(
            hybrid.controller("cpu").map(|h| h.name.as_str()),
            Some("cpu,cpuacct")
        );
        assert_eq!(
            hybrid.unified().map(|h| h.path.as_path()),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        // v1 without a unified tree: the cgroup2 mount is not ours to use.
        let v1 = CgroupLayout::new(root, CgroupVersion::V1, HYBRID);
        assert!(v1.unified().is_none());
        assert_eq!(v1.hierarchies.len(), 6);
        // v2: the root first, named v1 hierarchies mounted elsewhere kept.
        let v2 = CgroupLayout::new(
            root,
            CgroupVersion::V2,
            "1 1 0:5 / /run/cg/elogind rw - cgroup cgroup rw,none,name=elogind\n",
        );
        assert_eq!(
            table(&v2.hierarchies),
            vec![
                (true, "/sys/fs/cgroup", "", ""),
                (false, "/run/cg/elogind", "elogind", "none,name=elogind"),
            ]
        );
    }

    #[test]
    fn lxcfs_is_found() {
        let mi = "1 1 0:5 / /var/lib/lxcfs rw - fuse.lxcfs lxcfs rw\n";
        assert_eq!(lxcfs_mount_point(mi), Some(PathBuf::from("/var/lib/lxcfs")));
        assert_eq!(lxcfs_mount_point(HYBRID), None);
    }
}
