//! The cluster harness itself, as root: a test bridge with PostgreSQL on it, three ctld
//! members each in its own network and mount namespace, reaching PostgreSQL and each other
//! over the bridge only; a member's ctld killed with SIGKILL leaves its container running,
//! and started again in the same namespaces adopts it; and after everything drops, nothing
//! of the run is left on the host (namespaces, interfaces, mounts, processes, cgroups).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ctl_tests::cluster::{
    ClusterPg, Member, TestBridge, free_port, host_interfaces, netns_names, parse_mountinfo,
    pg_bin_dir, short_name,
};
use ctl_tests::{cgroup_parent_exists, pid_alive, require_root, wait_until};

/// The inode of `/proc/<pid>/ns/<kind>` (`mnt:[4026532239]` → 4026532239).
fn ns_inode(pid: i32, kind: &str) -> u64 {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.split_once('[')?.1.trim_end_matches(']').parse().ok()
        })
        .unwrap_or(0)
}

/// PIDs of processes in the namespace `kind` with `inode`.
fn pids_in_ns(kind: &str, inode: u64) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns_inode(*p, kind) == inode)
        .collect()
}

/// The mount ID of `path` in the member's mount namespace, if it is a mount point there.
fn pool_mount_id(m: &Member, path: &Path) -> Option<u32> {
    let point = path.display().to_string();
    parse_mountinfo(&m.ns.mountinfo())
        .into_iter()
        .rfind(|e| e.point == point)
        .map(|e| e.id)
}

/// What the run made, for the check that none of it is left.
struct Made {
    netns: Vec<String>,
    interfaces: Vec<String>,
    mnt_inodes: Vec<u64>,
    net_inodes: Vec<u64>,
    cgroup_parents: Vec<String>,
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
}

#[test]
fn three_members_on_a_test_bridge_with_postgres() {
    if !require_root("three_members_on_a_test_bridge_with_postgres") {
        return;
    }
    let started = Instant::now();
    let bridge = TestBridge::new();
    let mut pg = ClusterPg::start(bridge.gateway(), free_port(bridge.gateway()));
    let pg_dir = pg.dir().to_path_buf();
    // Member 1 makes a managed network (its bridge in its own network namespace); the
    // others none, the harness' default.
    let managed = short_name("ccn");
    let m1 = Member::start(&bridge, 1, &["--default-network-name", &managed]);
    let mut m2 = Member::start(&bridge, 2, &[]);
    let m3 = Member::start(&bridge, 3, &[]);
    eprintln!(
        "harness: bridge, postgres and 3 members up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Each ctld runs in its member's namespaces; `ctl` on the host talks to it.
    for m in [&m1, &m2, &m3] {
        let pid = m.daemon.pid();
        assert_eq!(
            ns_inode(pid, "mnt"),
            m.ns.mount_ns_inode(),
            "member {}",
            m.ns.index()
        );
        assert_eq!(
            ns_inode(pid, "net"),
            m.ns.netns_inode(),
            "member {}",
            m.ns.index()
        );
        assert_ne!(
            ns_inode(pid, "net"),
            ns_inode(std::process::id() as i32, "net")
        );
        m.daemon.ok(&["list"]);
        // Its /sys shows its own interfaces.
        let net = m.ns.sys_class_net();
        assert!(net.contains("eth0"), "{net:?}");
        assert!(!net.contains(bridge.name()), "{net:?}");
    }
    // Member 1's managed bridge (and its dnsmasq) live in member 1's network namespace.
    let (_, v) = m1
        .daemon
        .http("GET", &format!("/1.0/networks/{managed}"), None);
    assert_eq!(v["metadata"]["managed"], true, "{v}");
    // ctld finds its bridge through /sys/class/net: with the host's /sys it would say
    // "Unavailable".
    assert_eq!(v["metadata"]["status"], "Created", "{v}");
    assert!(!host_interfaces().contains(&managed));
    assert!(m1.ns.sys_class_net().contains(&managed));
    let shown = m1
        .ns
        .command("ip")
        .args(["-br", "link", "show", "type", "bridge"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(shown.contains(&managed), "{shown}");
    for m in [&m2, &m3] {
        assert!(!m.ns.sys_class_net().contains(&managed));
    }
    let dnsmasq_pid: i32 = std::fs::read_to_string(
        m1.daemon
            .path()
            .join("networks")
            .join(&managed)
            .join("dnsmasq.pid"),
    )
    .ok()
    .and_then(|p| p.trim().parse().ok())
    .unwrap_or(0);
    assert!(pid_alive(dnsmasq_pid), "dnsmasq of {managed}");
    assert_eq!(ns_inode(dnsmasq_pid, "net"), m1.ns.netns_inode());

    // Every member reaches PostgreSQL on the bridge, as `ctl` with the URL's password.
    for m in [&m1, &m2, &m3] {
        let out =
            m.ns.command(pg_bin_dir().join("psql"))
                .args(["-X", "-At", "-c", "SELECT current_user", &pg.url()])
                .output()
                .unwrap_or_else(|e| panic!("psql: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ctl",
            "member {}: {}",
            m.ns.index(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Member 1 reaches member 2 over the bridge.
    // (Nothing else listens in a member's network namespace: any port is free there.)
    let listener = m2.ns.listen(7000, "member-2");
    for m in [&m1, &m3] {
        assert_eq!(
            m.ns.read_greeting(listener.addr()).as_deref(),
            Some("member-2"),
            "member {}",
            m.ns.index()
        );
    }

    // A container on member 2, on a btrfs pool: a loop device ctld mounts in its own mount
    // namespace. Its ctld is killed with SIGKILL; the container runs on.
    m2.daemon
        .ok(&["storage", "create", "bt", "btrfs", "size=512MiB"]);
    m2.daemon.ok(&["launch", "busybox", "c1", "-s", "bt"]);
    let init = m2.daemon.init_pid("c1");
    assert!(pid_alive(init));
    // Its cgroups are under member 2's parent, found through the replaced /sys.
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
    assert!(
        cgroups
            .lines()
            .filter(|l| l.contains(":memory:") || l.contains(":pids:"))
            .all(|l| l.contains(&format!("/{}/", m2.daemon.cgroup_parent))),
        "{cgroups}"
    );
    assert!(m2.daemon.cgroup_dir("memory", "c1").is_dir());
    // The pool is mounted in member 2's mount namespace only.
    let pool = m2.daemon.path().join("storage-pools/bt");
    let pool_mount = pool_mount_id(&m2, &pool);
    assert!(
        pool_mount.is_some(),
        "{} not mounted in member 2",
        pool.display()
    );
    let state_dir = m2.daemon.path().display().to_string();
    let on_host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !on_host.contains(&state_dir),
        "member 2's mounts leaked to the host"
    );

    let old = m2.daemon.pid();
    m2.daemon.kill(9);
    assert!(!pid_alive(old));
    assert!(pid_alive(init), "the container died with its daemon");
    // Off the bridge and back.
    m2.ns.link_down();
    assert!(!m1.ns.can_connect(listener.addr()));
    m2.ns.link_up();
    assert!(
        wait_until(Duration::from_secs(10), || {
            m1.ns.read_greeting(listener.addr()).as_deref() == Some("member-2")
        }),
        "member 2 back on the bridge"
    );
    // Started again, ctld is in the same mount namespace (the pool's mount is the one it
    // made before, not a new one) and adopts the container.
    m2.daemon.restart();
    assert_eq!(ns_inode(m2.daemon.pid(), "mnt"), m2.ns.mount_ns_inode());
    assert_eq!(pool_mount_id(&m2, &pool), pool_mount);
    assert_eq!(m2.daemon.state("c1")["status"], "Running");
    assert_eq!(m2.daemon.init_pid("c1"), init);
    assert_eq!(
        m2.daemon
            .ok(&["exec", "c1", "--", "echo", "adopted"])
            .trim(),
        "adopted"
    );
    // PostgreSQL stops and starts on the same data directory.
    pg.stop();
    assert!(!m1.ns.can_connect(pg.addr()));
    pg.start_again();
    assert!(m1.ns.can_connect(pg.addr()));
    eprintln!(
        "harness: checks done at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let members = [m1, m2, m3];
    let made = Made {
        netns: members.iter().map(|m| m.ns.netns().to_string()).collect(),
        interfaces: members
            .iter()
            .map(|m| m.ns.host_veth().to_string())
            .chain([bridge.name().to_string(), managed.clone()])
            .collect(),
        mnt_inodes: members.iter().map(|m| m.ns.mount_ns_inode()).collect(),
        net_inodes: members.iter().map(|m| m.ns.netns_inode()).collect(),
        cgroup_parents: members
            .iter()
            .map(|m| m.daemon.cgroup_parent.clone())
            .collect(),
        pids: members
            .iter()
            .map(|m| m.daemon.pid())
            .chain([init, dnsmasq_pid, pg.pid(), listener.pid()])
            .collect(),
        dirs: members
            .iter()
            .flat_map(|m| [m.daemon.path().to_path_buf(), m.ns.dir().to_path_buf()])
            .chain([pg_dir])
            .collect(),
    };
    drop(listener);
    drop(members);
    drop(pg);
    drop(bridge);
    eprintln!(
        "harness: torn down at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_nothing_left(&made);
}

fn assert_nothing_left(made: &Made) {
    let netns = netns_names();
    for n in &made.netns {
        assert!(!netns.contains(n), "netns {n} left");
    }
    // Deleted network namespaces go asynchronously, and with them their interfaces.
    let gone = wait_until(Duration::from_secs(10), || {
        let ifs = host_interfaces();
        made.interfaces.iter().all(|i| !ifs.contains(i))
    });
    assert!(gone, "interfaces left: {:?}", host_interfaces());
    let mounts =
        parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for d in &made.dirs {
        assert!(
            !mounts.iter().any(|m| Path::new(&m.point).starts_with(d)),
            "mount under {} left",
            d.display()
        );
        let d = d.display().to_string();
        assert!(
            !loops.contains(&d),
            "loop device on a file in {d} left: {loops}"
        );
    }
    for (kind, inodes) in [("mnt", &made.mnt_inodes), ("net", &made.net_inodes)] {
        for i in inodes {
            let pids = pids_in_ns(kind, *i);
            assert!(pids.is_empty(), "processes {pids:?} left in {kind}:[{i}]");
        }
    }
    for p in &made.cgroup_parents {
        assert!(!cgroup_parent_exists(p), "cgroup parent {p} left");
    }
    for p in &made.pids {
        assert!(!pid_alive(*p), "process {p} left");
    }
    let postgres: BTreeSet<i32> = made
        .dirs
        .iter()
        .flat_map(|d| processes_mentioning(d))
        .collect();
    assert!(
        postgres.is_empty(),
        "processes {postgres:?} still use the run's dirs"
    );
    for d in &made.dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
}

/// PIDs whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&needle)
            })
        })
        .collect()
}
