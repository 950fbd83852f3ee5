//! dnsmasq tests: the pure pieces (command line, files, leases, validation) as tables, then
//! privileged tests that run the host's dnsmasq on a bridge the test made and a busybox DHCP
//! client and resolver inside a network namespace the test made.

use super::*;
use crate::network::testnet::{self, TestBridge, TestNetns};

fn host(name: &str, mac: &str, ip: Option<&str>) -> StaticHost {
    StaticHost {
        hwaddr: mac.to_string(),
        ipv4: ip.map(|i| i.parse().expect("parse")),
        ipv6: None,
        name: name.to_string(),
    }
}

fn config() -> DnsmasqConfig {
    let mut cfg = DnsmasqConfig::new("net0", "ctlbr0", "/var/lib/ctld/networks/net0");
    cfg.ipv4 = Some((Ipv4Addr::new(10, 1, 2, 1), 24));
    cfg
}

#[test]
fn command_line_for_ipv4_with_dhcp() {
    let args = config().args();
    for want in [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--strict-order",
        "--bind-interfaces",
        "--except-interface=lo",
        "--no-ping",
        "--no-resolv",
        "--no-hosts",
        "--interface=ctlbr0",
        "--listen-address=10.1.2.1",
        "--dhcp-range=10.1.2.2,10.1.2.254,3600",
        "--dhcp-rapid-commit",
        "--dhcp-authoritative",
        "--dhcp-no-override",
        "--dhcp-hostsfile=/var/lib/ctld/networks/net0/dhcp-hosts",
        "--addn-hosts=/var/lib/ctld/networks/net0/dns-hosts",
        "--dhcp-leasefile=/var/lib/ctld/networks/net0/dnsmasq.leases",
        "--pid-file=/var/lib/ctld/networks/net0/dnsmasq.pid",
        "--domain=ctl",
        "--local=/ctl/",
        "--user=root",
    ] {
        assert!(
            args.iter().any(|a| a == want),
            "{want} missing from {args:?}"
        );
    }
    assert!(!args.iter().any(|a| a.starts_with("--server")));
    assert!(!args.iter().any(|a| a.contains("resolv.conf")));
    assert!(!args.iter().any(|a| a == "--enable-ra"));
}

#[test]
fn command_line_variants() {
    let mut cfg = config();
    cfg.dhcp = false;
    cfg.upstream = vec![
        "192.0.2.53".parse().expect("parse"),
        "2001:db8::53".parse().expect("parse"),
    ];
    cfg.domain = "lab.example".into();
    cfg.user = "dnsmasq".into();
    let args = cfg.args();
    assert!(!args.iter().any(|a| a.starts_with("--dhcp-range")));
    assert!(!args.iter().any(|a| a.starts_with("--dhcp-hostsfile")));
    assert!(args.contains(&"--server=192.0.2.53".to_string()));
    assert!(args.contains(&"--server=2001:db8::53".to_string()));
    assert!(args.contains(&"--local=/lab.example/".to_string()));
    assert!(args.contains(&"--user=dnsmasq".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--group")));

    let mut cfg = config();
    cfg.ipv6 = Some(("fd42::1".parse().expect("parse"), 64));
    cfg.dhcp_range = Some((Ipv4Addr::new(10, 1, 2, 100), Ipv4Addr::new(10, 1, 2, 199)));
    cfg.lease_time = Duration::from_secs(600);
    let args = cfg.args();
    assert!(args.contains(&"--listen-address=fd42::1".to_string()));
    assert!(args.contains(&"--enable-ra".to_string()));
    assert!(args.contains(&"--dhcp-range=::,constructor:ctlbr0,ra-stateless,ra-names".to_string()));
    assert!(args.contains(&"--dhcp-range=10.1.2.100,10.1.2.199,600".to_string()));
}

#[test]
fn default_dhcp_ranges() {
    let a = |s: &str| s.parse::<Ipv4Addr>().expect("parse");
    let cases = [
        ("10.0.0.1", 24, Some(("10.0.0.2", "10.0.0.254"))),
        ("10.0.0.254", 24, Some(("10.0.0.1", "10.0.0.253"))),
        ("10.0.0.100", 24, Some(("10.0.0.101", "10.0.0.254"))),
        ("10.0.0.200", 24, Some(("10.0.0.1", "10.0.0.199"))),
        ("10.0.0.0", 24, None),
        ("10.0.0.255", 24, None),
        ("10.0.0.1", 30, Some(("10.0.0.2", "10.0.0.2"))),
        ("10.0.0.2", 30, Some(("10.0.0.1", "10.0.0.1"))),
        ("10.0.0.1", 29, Some(("10.0.0.2", "10.0.0.6"))),
        ("172.16.5.1", 16, Some(("172.16.5.2", "172.16.255.254"))),
        ("10.0.0.1", 31, None),
        ("10.0.0.1", 0, None),
    ];
    for (gw, prefix, want) in cases {
        let got = default_dhcp_range(a(gw), prefix);
        assert_eq!(got, want.map(|(f, l)| (a(f), a(l))), "{gw}/{prefix}");
    }
}

#[test]
fn host_files() {
    let mut c2 = host("c2", "00:16:3E:00:00:02", Some("10.1.2.20"));
    c2.ipv6 = Some("fd42::20".parse().expect("parse"));
    let hosts = [
        host("c1", "00:16:3e:00:00:01", Some("10.1.2.10")),
        c2,
        host("c3", "00:16:3e:00:00:03", None),
    ];
    assert_eq!(
        dhcp_hosts_file(&hosts),
        "00:16:3e:00:00:01,10.1.2.10,c1\n00:16:3e:00:00:02,10.1.2.20,c2\n00:16:3e:00:00:03,c3\n"
    );
    assert_eq!(
        dns_hosts_file(&hosts, "ctl"),
        "10.1.2.10 c1.ctl c1\n10.1.2.20 c2.ctl c2\nfd42::20 c2.ctl c2\n"
    );
    assert_eq!(dhcp_hosts_file(&[]), "");
}

#[test]
fn parses_lease_file() {
    let text = "1700000000 00:16:3e:00:00:01 10.1.2.10 c1 01:00:16:3e:00:00:01\n\
                0 00:16:3e:00:00:02 10.1.2.11 * *\n\
                duid 00:01:00:01:2c:00:00:00:00:16:3e:00:00:09\n\
                1700000100 3e000009 fd42::99 c9 00:01:00:01\n\
                garbage\n";
    let leases = parse_leases(text);
    assert_eq!(leases.len(), 3);
    assert_eq!(leases[0].hwaddr, "00:16:3e:00:00:01");
    assert_eq!(
        leases[0].address,
        "10.1.2.10".parse::<IpAddr>().expect("parse")
    );
    assert_eq!(leases[0].hostname.as_deref(), Some("c1"));
    assert_eq!(leases[0].expiry, 1_700_000_000);
    assert_eq!(leases[1].hostname, None);
    assert_eq!(
        leases[2].address,
        "fd42::99".parse::<IpAddr>().expect("parse")
    );
}

#[test]
fn validation_rejects_what_would_break_dnsmasq() {
    let ok = config();
    assert!(ok.validate().is_ok());
    type Change = Box<dyn Fn(&mut DnsmasqConfig)>;
    let bad: Vec<(&str, Change)> = vec![
        ("bridge with comma", Box::new(|c| c.bridge = "br,0".into())),
        (
            "bridge too long",
            Box::new(|c| c.bridge = "a-very-long-bridge".into()),
        ),
        ("empty bridge", Box::new(|c| c.bridge = String::new())),
        ("domain with slash", Box::new(|c| c.domain = "a/b".into())),
        ("domain with space", Box::new(|c| c.domain = "a b".into())),
        ("empty domain label", Box::new(|c| c.domain = "a..b".into())),
        ("nothing to serve", Box::new(|c| c.ipv4 = None)),
        (
            "prefix 31",
            Box::new(|c| c.ipv4 = Some((Ipv4Addr::new(10, 0, 0, 1), 31))),
        ),
        (
            "range outside",
            Box::new(|c| {
                c.dhcp_range = Some((Ipv4Addr::new(10, 1, 3, 1), Ipv4Addr::new(10, 1, 3, 9)))
            }),
        ),
        (
            "range reversed",
            Box::new(|c| {
                c.dhcp_range = Some((Ipv4Addr::new(10, 1, 2, 9), Ipv4Addr::new(10, 1, 2, 1)))
            }),
        ),
        (
            "short lease",
            Box::new(|c| c.lease_time = Duration::from_secs(60)),
        ),
        ("user with space", Box::new(|c| c.user = "a b".into())),
    ];
    for (what, change) in bad {
        let mut cfg = config();
        change(&mut cfg);
        assert!(cfg.validate().is_err(), "{what} accepted");
    }

    assert!(validate_hosts(&[host("c1", "00:16:3e:00:00:01", None)]).is_ok());
    for h in [
        host("c,1", "00:16:3e:00:00:01", None),
        host("c1\n10.0.0.1 evil", "00:16:3e:00:00:01", None),
        host("-c1", "00:16:3e:00:00:01", None),
        host("", "00:16:3e:00:00:01", None),
        host("c1", "00:16:3e:00:00", None),
        host("c1", "00:16:3e:00:00:0g", None),
        host("c1", "00:16:3e:00:00:01,10.0.0.9", None),
    ] {
        assert!(
            validate_hosts(std::slice::from_ref(&h)).is_err(),
            "{h:?} accepted"
        );
    }
}

#[test]
fn recognizes_its_own_dnsmasq() {
    let pid_file = Path::new("/x/net0/dnsmasq.pid");
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(is_dnsmasq_with(
        &args(&[
            "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--pid-file=/x/net0/dnsmasq.pid"
        ]),
        pid_file
    ));
    assert!(!is_dnsmasq_with(
        &args(&["/usr/sbin/dnsmasq", "--pid-file=/x/net1/dnsmasq.pid"]),
        pid_file
    ));
    assert!(!is_dnsmasq_with(
        &args(&["/bin/sleep", "--pid-file=/x/net0/dnsmasq.pid"]),
        pid_file
    ));
    assert!(!is_dnsmasq_with(&[], pid_file));
}

// ------------------------------------------------------------------ privileged

/// Kills the dnsmasq named by the PID file in `dir` (if it is that dnsmasq) on drop, so a
/// failing test leaves no process behind. Drop the handle first, so its supervisor does not
/// restart it.
struct DnsmasqGuard(PathBuf);

impl Drop for DnsmasqGuard {
    fn drop(&mut self) {
        let pid_file = self.0.join(PID_FILE);
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = worker::signal_if(pid, libc::SIGKILL, |a| is_dnsmasq_with(a, &pid_file));
        }
    }
}

/// A temp dir any user can enter (dnsmasq may drop to its own user).
fn network_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// `busybox nslookup name server` inside `ns`: the addresses of the answer section.
fn resolve(ns: &TestNetns, name: &str, server: Ipv4Addr) -> Vec<IpAddr> {
    let out = ns.exec(&["busybox", "nslookup", name, &server.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    // busybox prints the server first ("Server: ...", "Address: <server>:53"), then
    // "Name: <name>" followed by "Address: <ip>" lines per answer.
    text.split_once("Name:")
        .map(|(_, answers)| answers)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_static_lease_and_names_restarts_and_stops_clean() {
    if !testnet::root_or_skip("dnsmasq serves static lease") {
        return;
    }
    let gw = testnet::free_gateway();
    let octets = gw.octets();
    let net = |last: u8| Ipv4Addr::new(octets[0], octets[1], octets[2], last);
    let bridge = TestBridge::new(&testnet::unique("ctdb"), gw);
    let ula = format!("fd42:{:x}{:02x}::", octets[1], octets[2]);
    bridge.add_ipv6(&format!("{ula}1/64"));
    let ns = TestNetns::new(&testnet::unique("ctl-dnsmasq-"));
    let mac = "02:16:3e:5a:00:01";
    ns.attach(&bridge, &testnet::unique("ctdv"), "eth0", mac);

    let dir = network_dir();
    let _guard = DnsmasqGuard(dir.path().to_path_buf());
    let user = if nix::unistd::User::from_name("dnsmasq")
        .ok()
        .flatten()
        .is_some()
    {
        "dnsmasq"
    } else {
        "root"
    };
    let mut cfg = DnsmasqConfig::new("t", &bridge.name, dir.path());
    cfg.ipv4 = Some((gw, 24));
    cfg.ipv6 = Some((format!("{ula}1").parse().expect("parse"), 64));
    cfg.domain = "ctltest".into();
    cfg.user = user.into();
    let c1 = host("c1", mac, Some(&net(77).to_string()));
    let handle = Dnsmasq::start(cfg, std::slice::from_ref(&c1))
        .await
        .expect("from ref");
    let first_pid = handle.pid().expect("dnsmasq runs");
    assert!(worker::proc::exists(first_pid));

    // A DHCP client in the namespace gets the reserved address.
    let script = dir.path().join("udhcpc.sh");
    let lease_out = dir.path().join("udhcpc.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $mask $router\" > {}\nexit 0\n",
            lease_out.display()
        ),
    )
    .expect("display");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let script_s = script.display().to_string();
    let out = tokio::task::spawn_blocking({
        let ns_name = ns.name.clone();
        move || {
            testnet::run(
                "ip",
                &[
                    "netns", "exec", &ns_name, "busybox", "udhcpc", "-i", "eth0", "-q", "-n", "-t",
                    "10", "-T", "1", "-s", &script_s,
                ],
            )
        }
    })
    .await
    .expect("run");
    assert!(
        out.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read_to_string(&lease_out).expect("read to string");
    assert_eq!(
        got.trim(),
        format!("{} 24 {gw}", net(77)),
        "udhcpc got {got}"
    );
    let leases = handle.leases().expect("leases");
    assert!(
        leases
            .iter()
            .any(|l| l.address == IpAddr::V4(net(77)) && l.hwaddr == mac),
        "{leases:?}"
    );

    // DNS: the container's names, from inside the namespace.
    ns.ip(&["addr", "add", &format!("{}/24", net(77)), "dev", "eth0"]);
    assert_eq!(resolve(&ns, "c1.ctltest", gw), [IpAddr::V4(net(77))]);
    assert_eq!(resolve(&ns, "c1", gw), [IpAddr::V4(net(77))]);
    assert!(resolve(&ns, "c2.ctltest", gw).is_empty());

    // New hosts are served after update_hosts (files rewritten + SIGHUP), no restart.
    let mut c2 = host("c2", "02:16:3e:5a:00:02", Some(&net(88).to_string()));
    let c2_v6: Ipv6Addr = format!("{ula}88").parse().expect("parse");
    c2.ipv6 = Some(c2_v6);
    handle
        .update_hosts(&[c1.clone(), c2.clone()])
        .await
        .expect("update hosts");
    let answers = wait_for("c2 in DNS", Duration::from_secs(5), || {
        let a = resolve(&ns, "c2.ctltest", gw);
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert!(answers.contains(&IpAddr::V4(net(88))), "{answers:?}");
    assert!(answers.contains(&IpAddr::V6(c2_v6)), "{answers:?}");
    assert_eq!(handle.pid(), Some(first_pid));
    assert_eq!(handle.restarts(), 0);

    // Killed: the supervisor starts a new one, which serves the same names.
    nix::sys::signal::kill(Pid::from_raw(first_pid), Signal::SIGKILL).expect("from raw");
    let second_pid = wait_for("dnsmasq restarted", Duration::from_secs(10), || {
        handle.pid().filter(|p| *p != first_pid)
    })
    .await;
    assert_eq!(handle.restarts(), 1);
    assert!(worker::proc::exists(second_pid));
    assert!(!worker::proc::exists(first_pid));
    let after = resolve(&ns, "c2.ctltest", gw);
    assert!(after.contains(&IpAddr::V4(net(88))), "{after:?}");

    // Stopped: no process, no file of its own left.
    handle.stop().await.expect("stop");
    assert!(!worker::proc::exists(second_pid));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["udhcpc.out", "udhcpc.sh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_is_reported_and_leaves_nothing() {
    if !testnet::root_or_skip("dnsmasq start failure") {
        return;
    }
    let dir = network_dir();
    let _guard = DnsmasqGuard(dir.path().to_path_buf());
    // A bridge that does not exist: dnsmasq cannot bind its listen address.
    let mut cfg = DnsmasqConfig::new("t", &testnet::unique("ctdx"), dir.path());
    cfg.ipv4 = Some((testnet::free_gateway(), 24));
    let err = Dnsmasq::start(cfg, &[])
        .await
        .expect_err("dnsmasq on a missing bridge");
    assert!(matches!(err, DnsmasqError::Exited { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("dnsmasq exited at start"), "{msg}");
    assert!(
        msg.len() > "network t: dnsmasq exited at start ()".len() + 10,
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dnsmasq_left_by_a_previous_run_is_stopped() {
    if !testnet::root_or_skip("stale dnsmasq") {
        return;
    }
    let bridge = TestBridge::new(&testnet::unique("ctdb"), testnet::free_gateway());
    let dir = network_dir();
    let _guard = DnsmasqGuard(dir.path().to_path_buf());
    let mut cfg = DnsmasqConfig::new("t", &bridge.name, dir.path());
    cfg.ipv4 = Some((bridge.gateway, 24));

    // A daemon that went away: the handle is dropped, dnsmasq keeps serving.
    let handle = Dnsmasq::start(cfg.clone(), &[])
        .await
        .expect("start dnsmasq");
    let old = handle.pid().expect("dnsmasq runs");
    drop(handle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        worker::proc::exists(old),
        "a detached dnsmasq keeps running"
    );

    // The next start stops it first (same listen address: both could not bind).
    let handle = Dnsmasq::start(cfg.clone(), &[])
        .await
        .expect("start dnsmasq");
    let new = handle.pid().expect("dnsmasq runs");
    assert_ne!(new, old);
    assert!(!worker::proc::exists(old));
    handle.stop().await.expect("stop");
    assert!(!worker::proc::exists(new));

    // A PID file naming a process that is not this dnsmasq: only the file goes.
    let bystander = testnet::ChildGuard(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep"),
    );
    let bystander_pid = bystander.0.id() as i32;
    std::fs::write(dir.path().join(PID_FILE), bystander_pid.to_string()).expect("write pid file");
    assert_eq!(stop_stale(dir.path()).await.expect("stop stale"), None);
    assert!(worker::proc::exists(bystander_pid));
    assert!(!dir.path().join(PID_FILE).exists());
    assert_eq!(stop_stale(dir.path()).await.expect("stop stale"), None);
}

/// PIDs of every dnsmasq using the PID file in `dir`, found by scanning `/proc`.
fn dnsmasqs_for(dir: &Path) -> Vec<i32> {
    let pid_file = dir.join(PID_FILE);
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            worker::proc::cmdline(*pid).is_some_and(|args| is_dnsmasq_with(&args, &pid_file))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_keeps_trying_and_still_answers_while_restarts_fail() {
    if !testnet::root_or_skip("dnsmasq failing restarts") {
        return;
    }
    let bridge = TestBridge::new(&testnet::unique("ctdb"), testnet::free_gateway());
    let dir = network_dir();
    let _guard = DnsmasqGuard(dir.path().to_path_buf());
    let mut cfg = DnsmasqConfig::new("t", &bridge.name, dir.path());
    cfg.ipv4 = Some((bridge.gateway, 24));
    let handle = Dnsmasq::start(cfg, &[]).await.expect("start dnsmasq");
    let pid = handle.pid().expect("dnsmasq runs");

    // The bridge goes away, then dnsmasq dies: every restart fails (no such interface).
    drop(bridge);
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill dnsmasq");
    wait_for("dnsmasq gone", Duration::from_secs(10), || {
        handle.pid().is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(handle.pid(), None);
    assert_eq!(handle.restarts(), 0);
    assert!(dnsmasqs_for(dir.path()).is_empty());

    // Requests are still answered: new hosts are written for the next start, stop is clean.
    let c1 = host("c1", "02:16:3e:5a:00:01", Some("10.9.9.9"));
    handle
        .update_hosts(std::slice::from_ref(&c1))
        .await
        .expect("update hosts while restarting");
    assert!(
        std::fs::read_to_string(dir.path().join(DHCP_HOSTS_FILE))
            .expect("read hosts")
            .contains("c1")
    );
    handle.stop().await.expect("stop while restarting");
    assert!(matches!(
        handle.update_hosts(&[]).await,
        Err(DnsmasqError::SupervisorGone { .. })
    ));
    assert!(dnsmasqs_for(dir.path()).is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);
}
