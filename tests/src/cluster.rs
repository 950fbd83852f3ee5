//! Harness for cluster tests: a host bridge with a /24 of its own ([`TestBridge`]), cluster
//! members each in their own network and mount namespace ([`MemberNs`], [`Member`]), and a
//! PostgreSQL server listening on the bridge ([`ClusterPg`]).
//!
//! ```text
//! host netns   bridge ccb<pid>x<n>, 10.X.Y.1/24        ← postgres listens here
//!                ├─ ccv<pid>x<n> ⇄ eth0 10.X.Y.11/24    netns ccm<pid>x<n> (member 1)
//!                ├─ ccv…         ⇄ eth0 10.X.Y.12/24    (member 2)
//!                └─ ccv…         ⇄ eth0 10.X.Y.13/24    (member 3)
//! ```
//!
//! A member's ctld runs behind `nsenter --net=/run/netns/NS --mount=PIN --` (nsenter execs
//! it: the PID the [`Daemon`] records is ctld's). PIN is a bind-mounted nsfs file that keeps
//! the member's mount namespace alive while no process is in it, so a ctld killed with
//! SIGKILL and started again sees the mounts it made before (its storage pools; a container's
//! root is in the container's own mount namespace). In that namespace `/sys` is a
//! sysfs of the member's network namespace (its `/sys/class/net` lists the member's
//! interfaces, not the host's) with the host's `/sys` submounts (the cgroup hierarchies)
//! bound back at the same places. `ctl` runs on the host against the member's socket: the
//! state directory is on the host filesystem.
//!
//! Drop order: a [`Daemon`] started in a [`MemberNs`] must drop before it, since its cleanup
//! runs inside the member's namespaces ([`Member`] holds both in that order; with separate
//! variables, declare the namespace first). Declare the [`TestBridge`] first of all and the
//! [`ClusterPg`] before the members, so both outlive them. Nothing here ends a process it
//! did not start: a member's processes are its daemon's to end.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Daemon;

mod member_ns;
mod pg;

pub use member_ns::{MemberNs, NsListener};
pub use pg::{ClusterPg, pg_bin_dir};

static N: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call that fits an interface name (15 characters):
/// `<kind><pid>x<n>`, with `kind` three letters.
pub fn short_name(kind: &str) -> String {
    let name = format!(
        "{kind}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= 15, "interface name {name} is too long");
    name
}

/// Run a set-up step; panics with its stderr when it fails. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a teardown step: a failure is added to `errors`, never a panic.
fn try_run(cmd: &mut Command, errors: &mut Vec<String>) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => errors.push(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => errors.push(format!("{cmd:?}: {e}")),
    }
}

fn report(what: &str, errors: &[String]) {
    if !errors.is_empty() {
        eprintln!("{what}: teardown failed in part: {}", errors.join("; "));
    }
}

/// One line of a mountinfo table.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub point: String,
    pub fstype: String,
    /// In a peer group (`shared:N`): mounts and unmounts under it propagate.
    pub shared: bool,
}

/// Parse a `/proc/<pid>/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(MountEntry {
                id: f.first()?.parse().ok()?,
                parent: f.get(1)?.parse().ok()?,
                point: f.get(4)?.replace("\\040", " "),
                fstype: right.split(' ').next()?.to_string(),
                shared: f.iter().skip(6).any(|o| o.starts_with("shared:")),
            })
        })
        .collect()
}

/// The host's mount points.
fn host_mount_points() -> BTreeSet<String> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
        .into_iter()
        .map(|m| m.point)
        .collect()
}

/// Whether `path` is a mount point in the host's mount namespace.
pub fn is_host_mount(path: &Path) -> bool {
    host_mount_points().contains(&path.display().to_string())
}

/// Interface names in the host's network namespace.
pub fn host_interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Names `ip netns list` shows.
pub fn netns_names() -> BTreeSet<String> {
    run(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// `(network, prefix length)` of every IPv4 address and route on the host.
fn host_ipv4_nets() -> Vec<(u32, u8)> {
    let parse = |cidr: &str| -> Option<(u32, u8)> {
        let (a, p) = cidr.split_once('/').unwrap_or((cidr, "32"));
        Some((u32::from(a.parse::<Ipv4Addr>().ok()?), p.parse().ok()?))
    };
    let addrs = run(Command::new("ip").args(["-4", "-o", "addr", "show"]));
    let routes = run(Command::new("ip").args(["-4", "route", "show"]));
    let from_addrs = addrs.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        w.find(|t| *t == "inet")?;
        parse(w.next()?)
    });
    let from_routes = routes
        .lines()
        .filter_map(|l| parse(l.split_whitespace().next()?));
    from_addrs.chain(from_routes).collect()
}

fn overlaps((a, pa): (u32, u8), (b, pb): (u32, u8)) -> bool {
    let p = pa.min(pb).min(32);
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    a & mask == b & mask
}

/// A `10.X.Y.0/24` free on the host, picked from this process's PID (and a call counter),
/// so concurrent runs try different ones first.
fn free_slash24() -> (u8, u8) {
    let taken = host_ipv4_nets();
    let seed = std::process::id()
        .wrapping_mul(7)
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed).wrapping_mul(101));
    (0..512u32)
        .map(|k| seed.wrapping_add(k.wrapping_mul(257)) % (128 * 256))
        // X in 64..192, clear of 10.0.x.y and of the top of 10/8.
        .map(|s| (64 + (s / 256) as u8, (s % 256) as u8))
        .find(|&(x, y)| {
            let net = (u32::from(Ipv4Addr::new(10, x, y, 0)), 24);
            !taken.iter().any(|t| overlaps(*t, net))
        })
        .unwrap_or_else(|| panic!("no free 10.X.Y.0/24 on this host"))
}

/// A free TCP port on `ip` (bound and released: good enough for one test run).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port on {ip}: {e}"))
}

/// A bridge in the host's network namespace with `10.X.Y.1/24`, the members' meeting point.
/// Dropping it deletes it.
pub struct TestBridge {
    name: String,
    x: u8,
    y: u8,
    made: bool,
}

impl TestBridge {
    /// Make the bridge (unique name, a /24 no host interface or route uses) and bring it up.
    pub fn new() -> TestBridge {
        let (x, y) = free_slash24();
        let mut bridge = TestBridge {
            name: short_name("ccb"),
            x,
            y,
            made: false,
        };
        run(Command::new("ip").args(["link", "add", &bridge.name, "type", "bridge"]));
        bridge.made = true;
        let cidr = format!("{}/24", bridge.gateway());
        run(Command::new("ip").args(["addr", "add", &cidr, "dev", &bridge.name]));
        run(Command::new("ip").args(["link", "set", &bridge.name, "up"]));
        bridge
    }

    /// The bridge's interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `10.X.Y.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.{}.{}.0/24", self.x, self.y)
    }

    /// The bridge's own address, `10.X.Y.1` (where [`ClusterPg`] listens).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.x, self.y, 1)
    }

    /// Member `index`'s address, `10.X.Y.(10+index)`.
    pub fn member_ip(&self, index: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.x, self.y, 10 + index)
    }
}

impl Default for TestBridge {
    fn default() -> Self {
        TestBridge::new()
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        if self.made {
            try_run(
                Command::new("ip").args(["link", "del", &self.name]),
                &mut errors,
            );
        }
        report(&format!("bridge {}", self.name), &errors);
    }
}

/// A cluster member: its ctld, then (dropped after it) its namespaces.
pub struct Member {
    pub daemon: Daemon,
    pub ns: MemberNs,
}

impl Member {
    /// Make member `index`'s namespaces on `bridge` and start a ctld in them with `args`
    /// (`--default-network=false` unless they say otherwise, as for [`Daemon::start_with`]).
    pub fn start(bridge: &TestBridge, index: u8, args: &[&str]) -> Member {
        let ns = MemberNs::new(bridge, index);
        let daemon = ns.start_daemon(args);
        Member { daemon, ns }
    }
}
