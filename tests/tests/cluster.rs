//! A cluster of three real ctld, each in its own network and mount namespace with its own
//! state dir, cgroup parent and bridge name, sharing one PostgreSQL that the test initdb's
//! in a temp dir and runs on a bridge it makes: forming it with tokens, placement,
//! forwarding of exec, console, files and state changes, a member killed and cut off
//! (listed as OFFLINE, its instances as Error, new launches elsewhere), that member back
//! with its container still running, and the leader lease moving when the leader dies.
//! A second test restarts PostgreSQL under load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ctl_tests::clients::Cli;
use ctl_tests::cluster::{ClusterPg, Member, MemberNs, TestBridge, free_port, short_name};
use ctl_tests::{Daemon, pid_alive, require_root, wait_until};
use serde_json::Value;

/// `ctl cluster list --format json` as name → member.
fn members(d: &Daemon) -> BTreeMap<String, Value> {
    let out = d.ok(&["cluster", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m["server_name"].as_str().unwrap_or_default().to_string(), m))
        .collect()
}

fn status_of(d: &Daemon, member: &str) -> String {
    members(d)
        .get(member)
        .and_then(|m| m["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn leader(d: &Daemon) -> Option<String> {
    members(d).into_iter().find_map(|(name, m)| {
        m["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "leader"))
            .then_some(name)
    })
}

/// `ctl list --format json` as name → instance.
fn instances(d: &Daemon) -> BTreeMap<String, Value> {
    let out = d.ok(&["list", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i["name"].as_str().unwrap_or_default().to_string(), i))
        .collect()
}

fn location(d: &Daemon, name: &str) -> String {
    instances(d)
        .get(name)
        .and_then(|i| i["location"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The instances a member holds itself, asked of its own socket without forwarding:
/// `GET /1.0/instances/NAME` answered locally means it is there.
fn local_names(m: &Member) -> Vec<String> {
    let dir = m.daemon.path().join("containers");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn form_cluster(bridge: &TestBridge, pg: &ClusterPg) -> (Member, Member, Member) {
    // Each member has a managed network of its own, its bridge (named per run) inside the
    // member's network namespace: networks are per member (docs/CLUSTER.md).
    let net = |_member: u8| short_name("ccn");
    let m1 = Member::start(bridge, 1, &["--default-network-name", &net(1)]);
    let m3 = Member::start(bridge, 3, &["--default-network-name", &net(3)]);
    let addr1 = format!("{}:8443", m1.ns.ip());
    m1.daemon
        .ok(&["config", "set", "core.https_address", &addr1]);
    m1.daemon
        .ok(&["cluster", "enable", "m1", "--database", &pg.url()]);
    assert_eq!(status_of(&m1.daemon, "m1"), "Online");
    // m2 joins with `ctld --join TOKEN` (its address: the one that routes to m1), m3 with
    // `ctl cluster join` on a running ctld.
    let token2 = m1.daemon.ok(&["cluster", "add", "m2", "--quiet"]);
    let token3 = m1.daemon.ok(&["cluster", "add", "m3", "--quiet"]);
    let m2 = {
        let ns = MemberNs::new(bridge, 2);
        let daemon = ns.start_daemon(&["--join", token2.trim(), "--default-network-name", &net(2)]);
        Member { daemon, ns }
    };
    m3.daemon.ok(&["cluster", "join", token3.trim()]);
    // A token is single use.
    let again = m3.daemon.ctl(&["cluster", "join", token3.trim()]);
    assert_ne!(again.code, 0, "a spent token or a second join must fail");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let all = members(&m1.daemon);
            all.len() == 3 && all.values().all(|m| m["status"] == "Online")
        }),
        "3 ONLINE members: {:?}",
        members(&m1.daemon)
    );
    let table = m1.daemon.ok(&["cluster", "list"]);
    assert_eq!(table.matches("ONLINE").count(), 3, "{table}");
    (m1, m2, m3)
}

#[test]
fn three_members_place_forward_and_survive_a_member_and_the_leader() {
    if !require_root("three_members_place_forward_and_survive_a_member_and_the_leader") {
        return;
    }
    let bridge = TestBridge::new();
    let pg = ClusterPg::start(bridge.gateway(), free_port(bridge.gateway()));
    let (mut m1, mut m2, mut m3) = form_cluster(&bridge, &pg);

    // Clients see a cluster.
    let (_, server) = m1.daemon.http("GET", "/1.0", None);
    assert_eq!(server["metadata"]["environment"]["server_clustered"], true);
    assert_eq!(server["metadata"]["environment"]["server_name"], "m1");

    // Placement: a target, then the least loaded.
    m1.daemon.ok(&["launch", "busybox", "c1", "--target", "m2"]);
    assert_eq!(location(&m1.daemon, "c1"), "m2");
    assert_eq!(local_names(&m2), ["c1"]);
    m1.daemon.ok(&["launch", "busybox", "c2"]);
    m1.daemon.ok(&["launch", "busybox", "c3"]);
    let mut spread = vec![location(&m1.daemon, "c2"), location(&m1.daemon, "c3")];
    spread.sort();
    assert_eq!(
        spread,
        ["m1", "m3"],
        "c2 and c3 go to the two empty members"
    );
    // Every member lists every instance with its location.
    for m in [&m1, &m2, &m3] {
        let all = instances(&m.daemon);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.values().all(|i| i["status"] == "Running"), "{all:?}");
    }
    let table = m3.daemon.ok(&["list"]);
    assert!(
        table.contains("LOCATION") && table.contains("m2"),
        "{table}"
    );
    // A name is the cluster's: taken on another member is taken.
    let dup = m3.daemon.ctl(&["launch", "busybox", "c1"]);
    assert_ne!(dup.code, 0, "{dup:?}");

    // Forwarded from m1 to m2: exec, files, console, stop and start.
    let out = m1.daemon.ok(&["exec", "c1", "--", "hostname"]);
    assert_eq!(out.trim(), "c1");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = tmp.path().join("hello");
    std::fs::write(&file, "forwarded file\n").unwrap_or_else(|e| panic!("{e}"));
    m1.daemon
        .ok(&["file", "push", &file.display().to_string(), "c1/root/hello"]);
    let out = m1.daemon.ok(&["exec", "c1", "--", "cat", "/root/hello"]);
    assert_eq!(out, "forwarded file\n");
    // The file is on m2's disk, in c1's root.
    let on_m2 = m2.daemon.ok(&["exec", "c1", "--", "cat", "/root/hello"]);
    assert_eq!(on_m2, "forwarded file\n");
    // m1 lists m2's operations too: an exec running there.
    std::thread::scope(|scope| {
        let exec = scope.spawn(|| m2.daemon.ctl(&["exec", "c1", "--", "sleep", "3"]));
        let listed = wait_until(Duration::from_secs(3), || {
            let (_, ops) = m1.daemon.http("GET", "/1.0/operations?recursion=1", None);
            ops["metadata"]["running"]
                .as_array()
                .is_some_and(|r| r.iter().any(|o| o["location"] == "m2"))
        });
        let run = exec.join().unwrap_or_else(|_| panic!("exec thread"));
        assert_eq!(run.code, 0, "{run:?}");
        assert!(listed, "m2's running exec not listed on m1");
    });
    let console = m1.daemon.ctl(&["console", "c1", "--show-log"]);
    assert_eq!(console.code, 0, "{console:?}");
    m1.daemon.ok(&["stop", "c1", "--force"]);
    assert_eq!(m2.daemon.state("c1")["status"], "Stopped");
    m1.daemon.ok(&["start", "c1"]);
    assert_eq!(m2.daemon.state("c1")["status"], "Running");

    // LXD's and Incus' clients see a cluster: LOCATION, and --target.
    let lxc = Cli::lxc(&m1.daemon).unwrap_or_else(|| panic!("lxc (lxd-client) is needed"));
    let rows = lxc.ok(&["list", "--format", "csv", "-c", "nL"]);
    assert!(rows.lines().any(|l| l == "c1,m2"), "{rows}");
    lxc.ok(&["init", "busybox", "lx1", "--target", "m3"]);
    assert_eq!(location(&m1.daemon, "lx1"), "m3");
    let incus = Cli::incus(&m3.daemon).unwrap_or_else(|| panic!("the Incus client is needed"));
    let rows = incus.ok(&["list", "--format", "csv", "-c", "nL"]);
    assert!(rows.lines().any(|l| l == "lx1,m3"), "{rows}");
    let listed = incus.ok(&["cluster", "list", "--format", "csv"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    m1.daemon.ok(&["delete", "lx1"]);

    // Profiles are the cluster's: made on m1, changed on m3, seen and used on m2.
    m1.daemon
        .ok(&["profile", "create", "shared", "limits.memory=64MiB"]);
    m3.daemon
        .ok(&["profile", "set", "shared", "limits.memory", "96MiB"]);
    assert!(
        wait_until(Duration::from_secs(6), || m2
            .daemon
            .ctl(&["profile", "get", "shared", "limits.memory"])
            .stdout
            .trim()
            == "96MiB"),
        "m2 never got the profile: {}",
        m2.daemon.log()
    );
    m1.daemon.ok(&[
        "launch", "busybox", "cp", "--target", "m2", "-p", "default", "-p", "shared",
    ]);
    let limit = m2
        .daemon
        .cgroup_dir("memory", "cp")
        .join("memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(&limit).unwrap_or_default().trim(),
        (96u64 << 20).to_string(),
        "{}",
        limit.display()
    );
    m1.daemon.ok(&["delete", "--force", "cp"]);
    m2.daemon.ok(&["profile", "delete", "shared"]);
    assert!(wait_until(Duration::from_secs(6), || m1
        .daemon
        .ctl(&["profile", "show", "shared"])
        .code
        != 0));

    // An image only m1 has is copied to m3 for a launch there.
    m1.daemon.ok(&["init", "busybox", "src", "--target", "m1"]);
    m1.daemon.ok(&["publish", "src", "--alias", "only-on-m1"]);
    m1.daemon.ok(&["delete", "src"]);
    assert!(!m3.daemon.ok(&["image", "list"]).contains("only-on-m1"));
    m1.daemon
        .ok(&["launch", "only-on-m1", "c5", "--target", "m3"]);
    assert_eq!(instances(&m3.daemon)["c5"]["status"], "Running");
    let images_m3 = m3.daemon.ok(&["image", "list"]);
    assert!(images_m3.contains("only-on-m1"), "{images_m3}");

    // Events cross members: a monitor on m3 sees c1 (on m2) stop when m1 asks.
    let out_path = m3.daemon.path().join("monitor.out");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
    let mut monitor = m3
        .daemon
        .ctl_command(&["monitor", "--type", "lifecycle", "--format", "json"])
        .stdout(out)
        .spawn()
        .unwrap_or_else(|e| panic!("ctl monitor: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    m1.daemon.ok(&["stop", "c5", "--force"]);
    m1.daemon.ok(&["restart", "c1", "--force"]);
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let seen = wait_until(Duration::from_secs(10), || {
        printed().lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["metadata"]["action"] == "instance-restarted"
                && v["metadata"]["source"] == "/1.0/instances/c1"
                && v["location"] == "m2"
        })
    });
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(seen, "m3's monitor printed:\n{}", printed());
    m1.daemon.ok(&["delete", "c5"]);

    // Evacuating m3 stops its running instances and keeps new ones off it; restoring
    // starts them again.
    let on_m3: Vec<String> = instances(&m1.daemon)
        .into_iter()
        .filter(|(_, i)| i["location"] == "m3" && i["status"] == "Running")
        .map(|(n, _)| n)
        .collect();
    assert!(!on_m3.is_empty());
    m1.daemon.ok(&["cluster", "evacuate", "m3", "--force"]);
    assert_eq!(status_of(&m1.daemon, "m3"), "Evacuated");
    for n in &on_m3 {
        assert_eq!(instances(&m1.daemon)[n]["status"], "Stopped", "{n}");
    }
    let refused = m1
        .daemon
        .ctl(&["launch", "busybox", "nope", "--target", "m3"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    m1.daemon.ok(&["launch", "busybox", "c6"]);
    assert_ne!(location(&m1.daemon, "c6"), "m3");
    m1.daemon.ok(&["delete", "--force", "c6"]);
    m1.daemon.ok(&["cluster", "restore", "m3", "--force"]);
    assert_eq!(status_of(&m1.daemon, "m3"), "Online");
    for n in &on_m3 {
        assert_eq!(instances(&m1.daemon)[n]["status"], "Running", "{n}");
    }
    let c1_init = m2.daemon.init_pid("c1");

    // m2 dies and is cut off.
    m1.daemon
        .ok(&["config", "set", "cluster.offline_threshold", "10"]);
    let killed = Instant::now();
    m2.daemon.kill(9);
    m2.ns.link_down();
    std::thread::sleep(Duration::from_secs(11).saturating_sub(killed.elapsed()));
    assert_eq!(status_of(&m1.daemon, "m2"), "Offline");
    let t = Instant::now();
    let all = instances(&m1.daemon);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "listing took {took:?}");
    assert_eq!(all["c1"]["status"], "Error", "{all:?}");
    assert_eq!(all["c1"]["location"], "m2");
    assert_eq!(all["c2"]["status"], "Running");
    let table = m1.daemon.ok(&["list"]);
    assert!(table.contains("OFFLINE"), "{table}");
    // A request about c1 fails cleanly, it does not hang.
    let t = Instant::now();
    let (code, _) = m1.daemon.http("GET", "/1.0/instances/c1", None);
    assert_eq!(code, 503);
    assert!(t.elapsed() < Duration::from_secs(5));
    // New instances go to live members.
    m3.daemon.ok(&["launch", "busybox", "c4"]);
    let c4 = location(&m1.daemon, "c4");
    assert!(c4 == "m1" || c4 == "m3", "c4 on {c4}");
    assert_eq!(instances(&m3.daemon)["c4"]["status"], "Running");
    // c1 itself never stopped.
    assert!(pid_alive(c1_init), "c1's init died with its daemon");

    // m2 comes back: c1 is Running again, same init.
    m2.ns.link_up();
    m2.daemon.restart();
    assert!(
        wait_until(Duration::from_secs(10), || status_of(&m1.daemon, "m2")
            == "Online"),
        "m2 back online"
    );
    assert_eq!(instances(&m1.daemon)["c1"]["status"], "Running");
    assert_eq!(m2.daemon.init_pid("c1"), c1_init);

    // The leader dies: another member takes the lease within its TTL (6 s) and a
    // heartbeat.
    let first =
        leader(&m1.daemon).unwrap_or_else(|| panic!("no leader: {:?}", members(&m1.daemon)));
    let (dead, watcher): (&mut Member, &Member) = if first == "m1" {
        (&mut m1, &m3)
    } else if first == "m2" {
        (&mut m2, &m1)
    } else {
        (&mut m3, &m1)
    };
    let killed = Instant::now();
    dead.daemon.kill(9);
    assert!(
        wait_until(Duration::from_secs(9), || leader(&watcher.daemon)
            .is_some_and(|l| l != first)),
        "no new leader after {:?}: {:?}",
        killed.elapsed(),
        members(&watcher.daemon)
    );
    eprintln!("leader {first} replaced after {:?}", killed.elapsed());
    dead.daemon.restart();
    assert!(wait_until(Duration::from_secs(10), || {
        members(&watcher.daemon)
            .values()
            .all(|m| m["status"] == "Online")
    }));
    drop((m1, m2, m3));
    drop(pg);
}

#[test]
fn postgres_restarted_under_load() {
    if !require_root("postgres_restarted_under_load") {
        return;
    }
    let bridge = TestBridge::new();
    let mut pg = ClusterPg::start(bridge.gateway(), free_port(bridge.gateway()));
    let m1 = Member::start(&bridge, 1, &[]);
    let addr = format!("{}:8443", m1.ns.ip());
    m1.daemon
        .ok(&["config", "set", "core.https_address", &addr]);
    m1.daemon
        .ok(&["cluster", "enable", "m1", "--database", &pg.url()]);
    m1.daemon.ok(&["launch", "busybox", "c1"]);
    let init = m1.daemon.init_pid("c1");

    let stop = std::sync::atomic::AtomicBool::new(false);
    let daemon = &m1.daemon;
    let (seen, slowest) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let mut seen: BTreeMap<u16, u32> = BTreeMap::new();
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let code = daemon
                    .http_text("GET", "/1.0/instances?recursion=1", None)
                    .0;
                slowest = slowest.max(t.elapsed());
                *seen.entry(code).or_default() += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (seen, slowest)
        });
        std::thread::sleep(Duration::from_millis(500));
        pg.stop();
        std::thread::sleep(Duration::from_secs(4));
        // While it is down: the container runs; what needs the database is refused.
        assert!(pid_alive(init));
        let (code, body) = daemon.http(
            "POST",
            "/1.0/instances",
            Some(r#"{"name":"c2","source":{"type":"image","alias":"busybox"}}"#),
        );
        assert_eq!(code, 503, "{body}");
        pg.start_again();
        assert!(
            wait_until(Duration::from_secs(15), || daemon
                .http("GET", "/1.0/instances", None)
                .0
                == 200),
            "ctld did not reconnect: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        load.join().unwrap_or_else(|_| panic!("load thread"))
    });
    eprintln!("answers while PostgreSQL restarted: {seen:?}, slowest {slowest:?}");
    assert!(seen.get(&503).is_some_and(|n| *n > 0), "{seen:?}");
    assert!(seen.get(&200).is_some_and(|n| *n > 0), "{seen:?}");
    assert!(
        seen.keys().all(|c| *c == 200 || *c == 503),
        "only 200 and 503: {seen:?}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a request hung for {slowest:?}"
    );
    assert!(pid_alive(init), "the container kept running");
    assert!(wait_until(Duration::from_secs(10), || status_of(
        &m1.daemon, "m1"
    ) == "Online"));
    m1.daemon.ok(&["launch", "busybox", "c2"]);
    assert_eq!(instances(&m1.daemon).len(), 2);
    drop(m1);
    drop(pg);
}

/// The daemon dies after the cluster's database recorded its founding but before the
/// server remembered it (simulated: the two local settings removed while it is down).
/// Enabling again takes the same cluster up; a different server is still refused.
#[test]
fn enabling_again_resumes_a_founding_the_daemon_forgot() {
    if !require_root("enabling_again_resumes_a_founding_the_daemon_forgot") {
        return;
    }
    let bridge = TestBridge::new();
    let pg = ClusterPg::start(bridge.gateway(), free_port(bridge.gateway()));
    let mut m1 = Member::start(&bridge, 1, &[]);
    let addr = format!("{}:8443", m1.ns.ip());
    m1.daemon
        .ok(&["config", "set", "core.https_address", &addr]);
    m1.daemon.ok(&["launch", "busybox", "c1"]);
    m1.daemon
        .ok(&["cluster", "enable", "m1", "--database", &pg.url()]);
    m1.daemon.kill(9);
    let db = m1.daemon.path().join("ctld.db");
    let forget = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"DELETE FROM settings WHERE key LIKE 'cluster.%'\"); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(forget.success());
    m1.daemon.restart();
    let (_, cluster) = m1.daemon.http("GET", "/1.0/cluster", None);
    assert_eq!(cluster["metadata"]["enabled"], false, "{cluster}");
    // Another server may not take it.
    let m2 = Member::start(&bridge, 2, &[]);
    let addr2 = format!("{}:8443", m2.ns.ip());
    m2.daemon
        .ok(&["config", "set", "core.https_address", &addr2]);
    let refused = m2
        .daemon
        .ctl(&["cluster", "enable", "m1", "--database", &pg.url()]);
    assert_ne!(refused.code, 0, "{refused:?}");
    // The founder takes it up again.
    m1.daemon
        .ok(&["cluster", "enable", "m1", "--database", &pg.url()]);
    assert_eq!(status_of(&m1.daemon, "m1"), "Online");
    assert_eq!(location(&m1.daemon, "c1"), "m1");
    assert_eq!(instances(&m1.daemon)["c1"]["status"], "Running");
    drop(m2);
    drop(m1);
    drop(pg);
}
