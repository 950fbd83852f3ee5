//! The crash suite: ctld is killed with SIGKILL at random moments inside bursts of
//! launches, deletes, copies, renames, snapshots, publishes and network creates and
//! deletes; after each restart the host and the database must agree, and nothing ctld made
//! may be left without an owner.
//!
//! After every kill and restart it checks, against the real host:
//! - every instance `list` shows RUNNING has a live init and answers `exec`; every STOPPED
//!   one starts (no ghost: a record whose files are gone could not);
//! - every instance has its directory, and every directory with a backup file a record;
//!   every snapshot its directory, and every snapshot directory a record;
//! - cgroups under the daemon's parent, host-side veths on its bridges, mounts under its
//!   state directory belong to running instances only;
//! - bridges and nftables tables named for this run belong to recorded networks, and each
//!   recorded network has its bridge and table; no dnsmasq runs for a network that is gone;
//! - image directories and image records match; the scratch and trash directories are empty.
//!
//! It prints `crash suite: N kills, I inconsistencies, L leaks` and fails unless both are 0.
//! `CTL_CRASH_KILLS` sets N (default 6, the light form CI runs; the issue's heavy form is
//! 20); `CTL_CRASH_SEED` replays a run (the seed is printed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, cgroup_parents, require_root, wait_until};

/// xorshift64*: enough randomness for kill moments, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Host objects this run names (bridges `<prefix>…`, tables `ctl_<prefix>…`) are removed when
/// the test ends, whatever happened; the daemon handle removes what it still records.
struct HostGuard {
    prefix: String,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        for b in bridges_named(&self.prefix) {
            let _ = Command::new("ip").args(["link", "del", &b]).status();
        }
        for t in tables_named(&self.prefix) {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &t])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn bridges_named(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .filter(|n| Path::new("/sys/class/net").join(n).join("bridge").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn tables_named(prefix: &str) -> BTreeSet<String> {
    let out = Command::new("nft")
        .args(["list", "tables", "inet"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let want = format!("ctl_{prefix}");
    out.lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .map(|t| t.trim().to_string())
        .filter(|t| t.starts_with(&want))
        .collect()
}

/// The interfaces attached to `bridge`.
fn ports_of(bridge: &str) -> BTreeSet<String> {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `(name, status)` of every instance.
fn statuses(d: &Daemon) -> Vec<(String, String)> {
    let (_, v) = d.http("GET", "/1.0/instances?recursion=1", None);
    v["metadata"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or_default().to_string(),
                        i["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names_at(d: &Daemon, path: &str) -> BTreeSet<String> {
    let (_, v) = d.http("GET", path, None);
    v["metadata"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// PIDs of the dnsmasq processes whose command line names `needle`.
fn dnsmasqs_naming(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "dnsmasq" {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// What a check found: inconsistencies (host and database disagree) and leaks (something
/// ctld made that nothing owns), each described.
#[derive(Default)]
struct Findings {
    inconsistencies: Vec<String>,
    leaks: Vec<String>,
}

/// Check the host against the daemon's records (see the module comment). Stopped
/// instances are started on the way (the proof that they are not ghosts).
fn check(d: &Daemon, prefix: &str) -> Findings {
    let mut f = Findings::default();
    let instances = statuses(d);
    let containers = d.path().join("containers");
    for (name, status) in &instances {
        let dir = containers.join(name);
        if !dir.join("backup.yaml").exists() {
            f.inconsistencies.push(format!(
                "{name}: recorded, but no directory with a backup file"
            ));
        }
        match status.as_str() {
            "Running" => {
                let pid = d.init_pid(name);
                if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                    f.inconsistencies
                        .push(format!("{name}: RUNNING without a live init ({pid})"));
                }
                let r = d.ctl(&["exec", name, "--", "true"]);
                if r.code != 0 {
                    f.inconsistencies.push(format!(
                        "{name}: RUNNING but exec fails: {}",
                        r.stderr.trim()
                    ));
                }
            }
            "Stopped" => {
                let r = d.ctl(&["start", name]);
                // Started meanwhile by the daemon's autostart (it was running when killed).
                let autostarted = r.stderr.contains("already running")
                    && d.ctl(&["exec", name, "--", "true"]).code == 0;
                if r.code != 0 && !autostarted {
                    f.inconsistencies.push(format!(
                        "{name}: STOPPED and cannot start (a ghost?): {}",
                        r.stderr.trim()
                    ));
                }
            }
            other => f
                .inconsistencies
                .push(format!("{name}: unexpected status {other}")),
        }
    }
    let recorded: BTreeSet<String> = instances.iter().map(|(n, _)| n.clone()).collect();
    for name in dir_names(&containers) {
        if !recorded.contains(&name) {
            f.leaks
                .push(format!("container directory {name} without a record"));
        }
    }
    // Snapshots: a directory for each record, a record for each directory.
    for name in &recorded {
        let (_, v) = d.http("GET", &format!("/1.0/instances/{name}/snapshots"), None);
        let snaps: BTreeSet<String> = v["metadata"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_owned))
            .collect();
        let dirs = dir_names(&containers.join(name).join("snapshots"));
        for s in dirs.difference(&snaps) {
            f.leaks
                .push(format!("{name}: snapshot directory {s} without a record"));
        }
        for s in snaps.difference(&dirs) {
            f.inconsistencies.push(format!(
                "{name}: snapshot {s} recorded without its directory"
            ));
        }
    }
    // Every instance runs now (the stopped ones were started above).
    let running: BTreeSet<String> = statuses(d)
        .into_iter()
        .filter(|(_, s)| s == "Running")
        .map(|(n, _)| n)
        .collect();
    for parent in cgroup_parents(&d.cgroup_parent) {
        for child in dir_names(&parent) {
            if parent.join(&child).is_dir() && !running.contains(&child) {
                f.leaks
                    .push(format!("cgroup {}", parent.join(&child).display()));
            }
        }
    }
    // Host-side veths: each port of our bridges is a running instance's NIC.
    let mut host_names = BTreeSet::new();
    for name in &running {
        let st = d.state(name);
        if let Some(nets) = st["network"].as_object() {
            for n in nets.values() {
                if let Some(h) = n["host_name"].as_str().filter(|h| !h.is_empty()) {
                    host_names.insert(h.to_string());
                }
            }
        }
    }
    let networks = names_at(d, "/1.0/networks");
    let bridges = bridges_named(prefix);
    for b in &bridges {
        if !networks.contains(b) {
            f.leaks.push(format!("bridge {b} without a network"));
        }
        for port in ports_of(b) {
            if !host_names.contains(&port) {
                f.leaks
                    .push(format!("veth {port} on {b} of no running instance"));
            }
        }
    }
    let tables = tables_named(prefix);
    for t in &tables {
        if !networks.iter().any(|n| &format!("ctl_{n}") == t) {
            f.leaks
                .push(format!("nftables table {t} without a network"));
        }
    }
    for n in networks.iter().filter(|n| n.starts_with(prefix)) {
        if !bridges.contains(n) {
            f.inconsistencies
                .push(format!("network {n} recorded without its bridge"));
        }
        if !tables.contains(&format!("ctl_{n}")) {
            f.inconsistencies
                .push(format!("network {n} recorded without its nftables table"));
        }
    }
    // dnsmasq: one per recorded network, none for a network that is gone.
    for n in bridges_or_dirs(d) {
        let pids = dnsmasqs_naming(&format!("--interface={n}"));
        if !networks.contains(&n) && !pids.is_empty() {
            f.leaks
                .push(format!("dnsmasq {pids:?} for network {n} that is gone"));
        }
    }
    for n in networks.iter().filter(|n| n.starts_with(prefix)) {
        let pids = dnsmasqs_naming(&format!("--interface={n}"));
        if pids.len() != 1 {
            f.inconsistencies.push(format!(
                "network {n}: {} dnsmasq processes {pids:?}, not one",
                pids.len()
            ));
        }
    }
    // Mounts under the state directory: only the running containers' own.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = d.path().display().to_string();
    for line in mountinfo.lines() {
        let Some(point) = line.split_whitespace().nth(4) else {
            continue;
        };
        let Some(rest) = point.strip_prefix(&root) else {
            continue;
        };
        let owner = rest
            .strip_prefix("/containers/")
            .and_then(|r| r.split('/').next());
        if !owner.is_some_and(|o| running.contains(o)) {
            f.leaks.push(format!("mount {point}"));
        }
    }
    // Images: a directory for each record, a record for each directory.
    let images = names_at(d, "/1.0/images");
    let image_dirs = dir_names(&d.path().join("images"));
    for fp in &image_dirs {
        if !images.contains(fp) {
            f.leaks
                .push(format!("image directory {fp} without a record"));
        }
    }
    for fp in &images {
        if !image_dirs.contains(fp) {
            f.inconsistencies
                .push(format!("image {fp} recorded without its directory"));
        }
    }
    for scratch in ["tmp", "trash"] {
        let left = dir_names(&d.path().join(scratch));
        if !left.is_empty() {
            f.leaks.push(format!("{scratch}/ holds {left:?}"));
        }
    }
    f
}

/// Network names that may have a dnsmasq: the directories of dnsmasq's files (under the
/// state directory or its `/run/ctld` twin) and the bridges, whatever owns them now.
fn bridges_or_dirs(d: &Daemon) -> BTreeSet<String> {
    let mut out = dir_names(&d.path().join("networks"));
    let log = d.log();
    // The daemon logs where dnsmasq's files go when not under its state directory.
    if let Some(dir) = log
        .lines()
        .filter_map(|l| l.split("services=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or_default().to_string())
        .next_back()
    {
        out.extend(dir_names(Path::new(&dir)));
    }
    out
}

/// `ctl ARGS` as a child process of its own (killed with the daemon, then reaped).
fn spawn_ctl(d: &Daemon, args: &[&str]) -> Child {
    d.ctl_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("ctl {args:?}: {e}"))
}

#[test]
fn sigkill_at_random_moments_leaves_no_ghost_and_no_leak() {
    if !require_root("sigkill_at_random_moments_leaves_no_ghost_and_no_leak") {
        return;
    }
    let kills: u32 = std::env::var("CTL_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("CTL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |t| t.as_nanos() as u64)
                | 1
        });
    println!("crash suite: seed {seed} (CTL_CRASH_SEED replays it)");
    let mut rng = Rng(seed);
    // ≤ 15 characters with the round number: `ck<5 digits>n<round>`.
    let prefix = format!("ck{}", std::process::id() % 100_000);
    let _guard = HostGuard {
        prefix: prefix.clone(),
    };
    let mut d = Daemon::start();
    let base = format!("{prefix}b");
    d.ok(&["network", "create", &base]);
    let nic =
        format!(r#"{{"devices":{{"eth0":{{"type":"nic","network":"{base}","name":"eth0"}}}}}}"#);
    let (code, _) = d.http("PATCH", "/1.0/profiles/default", Some(&nic));
    assert_eq!(code, 200, "default profile gets a NIC on {base}");
    d.ok(&["init", "busybox", "pubsrc"]);
    // A few to delete in the first round.
    for i in 0..3 {
        d.ok(&["launch", "busybox", &format!("seed{i}")]);
    }

    let mut total = Findings::default();
    let mut created_networks: Vec<String> = Vec::new();
    let started = Instant::now();
    for round in 0..kills {
        // The burst: launches, deletes of what earlier rounds made, a publish, a network
        // create and the delete of an earlier one, all at once.
        let mut children = Vec::new();
        let existing: Vec<String> = d
            .instances()
            .into_iter()
            .filter(|n| n != "pubsrc")
            .collect();
        // A stopped one to rename in the burst.
        let mover = format!("r{round}mv");
        d.ok(&["init", "busybox", &mover]);
        for i in 0..4 {
            let name = format!("r{round}c{i}");
            children.push(spawn_ctl(&d, &["launch", "busybox", &name]));
        }
        for victim in existing.iter().take(2) {
            children.push(spawn_ctl(&d, &["delete", "--force", victim]));
        }
        children.push(spawn_ctl(&d, &["move", &mover, &format!("{mover}x")]));
        // A copy (with snapshots) and a snapshot of one that stays.
        if let Some(src) = existing.get(2) {
            children.push(spawn_ctl(&d, &["copy", src, &format!("r{round}cp")]));
            children.push(spawn_ctl(
                &d,
                &["snapshot", "create", src, &format!("s{round}")],
            ));
        }
        let alias = format!("r{round}img");
        children.push(spawn_ctl(&d, &["publish", "pubsrc", "--alias", &alias]));
        let net = format!("{prefix}n{round}");
        children.push(spawn_ctl(&d, &["network", "create", &net]));
        if let Some(old) = created_networks.pop() {
            children.push(spawn_ctl(&d, &["network", "delete", &old]));
        }
        created_networks.push(net);
        let images = names_at(&d, "/1.0/images");
        if let Some(fp) = images.iter().nth(round as usize % images.len().max(1)) {
            children.push(spawn_ctl(&d, &["image", "delete", fp]));
        }
        // The kill lands somewhere inside the burst (which takes a few hundred ms).
        std::thread::sleep(Duration::from_millis(5 + rng.below(400)));
        d.kill(9);
        for mut c in children {
            let _ = c.wait();
        }
        let log_at = d.log().len();
        d.restart();
        let found = check(&d, &prefix);
        for i in &found.inconsistencies {
            println!("round {round}: INCONSISTENT: {i}");
        }
        for l in &found.leaks {
            println!("round {round}: LEAK: {l}");
        }
        if !found.inconsistencies.is_empty() || !found.leaks.is_empty() {
            // What the daemon said about it since this round's restart.
            let log = d.log();
            for line in log[log_at.min(log.len())..]
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                println!("round {round}: log: {line}");
            }
        }
        total.inconsistencies.extend(found.inconsistencies);
        total.leaks.extend(found.leaks);
    }
    println!(
        "crash suite: {kills} kills, {} inconsistencies, {} leaks ({:.1} s)",
        total.inconsistencies.len(),
        total.leaks.len(),
        started.elapsed().as_secs_f64()
    );
    // Everything still goes away cleanly.
    for name in d.instances() {
        d.ok(&["delete", "--force", &name]);
    }
    let (code, _) = d.http("PUT", "/1.0/profiles/default", Some(r#"{"devices":{}}"#));
    assert_eq!(code, 200);
    for n in names_at(&d, "/1.0/networks") {
        d.ok(&["network", "delete", &n]);
    }
    assert!(
        wait_until(Duration::from_secs(5), || bridges_named(&prefix).is_empty()),
        "bridges left after deleting every network: {:?}",
        bridges_named(&prefix)
    );
    assert!(
        total.inconsistencies.is_empty() && total.leaks.is_empty(),
        "crash suite: {kills} kills, {} inconsistencies, {} leaks (seed {seed}); see above",
        total.inconsistencies.len(),
        total.leaks.len()
    );
}

/// `stop` and `delete --force` sent together to 50 running containers: every delete
/// succeeds (a delete whose stop finds the container already stopped goes on), and nothing
/// is left of them.
#[test]
fn stop_and_delete_force_sent_together_delete_all_50() {
    if !require_root("stop_and_delete_force_sent_together_delete_all_50") {
        return;
    }
    let d = Daemon::start();
    let names: Vec<String> = (0..50).map(|i| format!("race{i}")).collect();
    for n in &names {
        d.ok(&["launch", "busybox", n]);
    }
    let mut deleted = 0;
    let mut failures = Vec::new();
    // Ten containers at a time: twenty ctl processes racing in pairs.
    for batch in names.chunks(10) {
        let pairs: Vec<(Child, Child)> = batch
            .iter()
            .map(|n| {
                let stop = spawn_ctl(&d, &["stop", n]);
                let delete = d
                    .ctl_command(&["delete", "--force", n])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("ctl delete: {e}"));
                (stop, delete)
            })
            .collect();
        for ((mut stop, delete), n) in pairs.into_iter().zip(batch) {
            let _ = stop.wait();
            let out = delete
                .wait_with_output()
                .unwrap_or_else(|e| panic!("ctl delete: {e}"));
            if out.status.success() {
                deleted += 1;
            } else {
                failures.push(format!(
                    "{n}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    println!("stop+delete race: {deleted} of 50 deleted");
    assert!(failures.is_empty(), "delete --force failed: {failures:#?}");
    assert_eq!(deleted, 50);
    assert!(d.instances().is_empty(), "left: {:?}", d.instances());
    for parent in cgroup_parents(&d.cgroup_parent) {
        let left: Vec<String> = dir_names(&parent)
            .into_iter()
            .filter(|c| parent.join(c).is_dir())
            .collect();
        assert!(
            left.is_empty(),
            "cgroups left under {}: {left:?}",
            parent.display()
        );
    }
    assert!(dir_names(&d.path().join("containers")).is_empty());
}
