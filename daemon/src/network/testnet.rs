//! Test-only scaffolding for the privileged network tests: unique bridges, network
//! namespaces and veth pairs made with `ip` (tests only: product code never runs `ip`), each
//! a guard that removes what it made when dropped, also when the test fails. Addresses are
//! random `10.x.y.0/24` subnets checked against the host's routes; all traffic stays
//! between the host and namespaces the test made.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// Whether the test may run: root, or skip with a printed reason (a failure when
/// `CTL_REQUIRE_ALL` is set, as in CI).
pub fn root_or_skip(test: &str) -> bool {
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

/// A short random hex suffix.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..8])
}

/// Run a command, returning its output (not checked).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"))
}

/// Run `ip args...` and panic with its stderr if it fails.
pub fn ip(args: &[&str]) -> String {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A random `10.x.y.1` whose /24 no host route or address uses.
pub fn free_gateway() -> Ipv4Addr {
    let routes = ip(&["-4", "route", "show", "table", "all"]) + &ip(&["-4", "addr"]);
    for _ in 0..100 {
        let b = uuid::Uuid::new_v4().into_bytes();
        let (x, y) = (b[0], b[1]);
        if x == 0 || x == 255 || routes.contains(&format!("10.{x}.{y}.")) {
            continue;
        }
        return Ipv4Addr::new(10, x, y, 1);
    }
    panic!("no free 10.x.y.0/24 subnet found");
}

/// A bridge with an IPv4 address, removed on drop.
pub struct TestBridge {
    pub name: String,
    pub gateway: Ipv4Addr,
}

impl TestBridge {
    /// Make bridge `name` with `gateway/24`, up.
    pub fn new(name: &str, gateway: Ipv4Addr) -> TestBridge {
        ip(&["link", "add", name, "type", "bridge"]);
        let bridge = TestBridge {
            name: name.to_string(),
            gateway,
        };
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
        ip(&["link", "set", name, "up"]);
        bridge
    }

    /// Add an IPv6 address (without duplicate address detection, so it is usable at once).
    pub fn add_ipv6(&self, cidr: &str) {
        ip(&["-6", "addr", "add", cidr, "dev", &self.name, "nodad"]);
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.name]);
    }
}

/// A named network namespace (`ip netns`), removed on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(name: &str) -> TestNetns {
        ip(&["netns", "add", name]);
        let ns = TestNetns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec <ns> args...`, not checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip args...` inside the namespace, checked.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A veth pair: `host` attached to `bridge` and up, `inner` inside this namespace with
    /// MAC `mac`, up.
    pub fn attach(&self, bridge: &TestBridge, host: &str, inner: &str, mac: &str) {
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", inner, "netns", &self.name,
        ]);
        ip(&["link", "set", host, "master", &bridge.name, "up"]);
        self.ip(&["link", "set", inner, "address", mac]);
        self.ip(&["link", "set", inner, "up"]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // The veth ends inside go with the namespace, and their host peers with them.
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// A child process the test started, killed (SIGKILL, by its PID) and reaped on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
