//! Copies, renames and ephemeral instances end to end, as root, on unprivileged containers:
//! driven by `ctl`, by LXD 5.0's `lxc` and by Incus 6.0's `incus`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ctl_tests::clients::Cli;
use ctl_tests::{Daemon, require_root, wait_until};

static N: AtomicU32 = AtomicU32::new(0);

/// A bridge name unique to this process and call (at most 15 characters).
fn net_name() -> String {
    format!(
        "ctc{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the bridge when the test ends, whatever happened (the daemon deletes it first
/// when it can).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.0).exists() {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

fn sh(d: &Daemon, name: &str, script: &str) -> String {
    d.ok(&["exec", name, "--", "sh", "-c", script])
}

fn config_key(d: &Daemon, name: &str, key: &str) -> String {
    d.ok(&["config", "get", name, key]).trim().to_string()
}

fn address_of(d: &Daemon, name: &str) -> String {
    d.state(name)["network"]["eth0"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["family"] == "inet")
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn snapshots(d: &Daemon, name: &str) -> Vec<String> {
    d.ok(&["snapshot", "list", name, "--format", "csv"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect()
}

#[test]
fn copies_get_their_own_files_mac_address_and_snapshots() {
    if !require_root("copies_get_their_own_files_mac_address_and_snapshots") {
        return;
    }
    let d = Daemon::start();
    let net = Bridge(net_name());
    d.ok(&["network", "create", &net.0]);
    d.ok(&["launch", "busybox", "c1", "-n", &net.0]);
    sh(&d, "c1", "echo one > /root/a; chown 1000:1000 /root/a");
    d.ok(&["snapshot", "create", "c1", "snap0"]);
    sh(&d, "c1", "echo two > /root/a; rm /bin/vi");

    // A running source is copied (frozen meanwhile) and keeps running.
    d.ok(&["copy", "c1", "c2"]);
    assert_eq!(d.state("c1")["status"], "Running");
    assert_eq!(d.state("c2")["status"], "Stopped");
    let mac1 = config_key(&d, "c1", "volatile.eth0.hwaddr");
    let mac2 = config_key(&d, "c2", "volatile.eth0.hwaddr");
    assert!(!mac2.is_empty() && mac1 != mac2, "{mac1} {mac2}");
    d.ok(&["start", "c2"]);
    assert_eq!(sh(&d, "c2", "cat /root/a").trim(), "two");
    assert_eq!(sh(&d, "c2", "stat -c %u /root/a").trim(), "1000");
    assert_eq!(
        sh(&d, "c2", "ls /bin/vi 2>/dev/null || echo gone").trim(),
        "gone",
        "the whiteout came along"
    );
    let (a1, a2) = (address_of(&d, "c1"), address_of(&d, "c2"));
    assert!(!a2.is_empty() && a1 != a2, "{a1} {a2}");
    let upper = d.path().join("containers/c2/upper/root/a");
    let owner = std::fs::metadata(&upper).map(|m| m.uid()).unwrap_or(0);
    assert_eq!(
        owner,
        d.init_host_uid("c2") + 1000,
        "host owners in c2's map"
    );
    // The two are separate: a change in one is not in the other.
    sh(&d, "c2", "echo three > /root/a");
    assert_eq!(sh(&d, "c1", "cat /root/a").trim(), "two");
    // Its snapshots came along and restore.
    assert_eq!(snapshots(&d, "c2"), vec!["snap0"]);
    d.ok(&["restore", "c2", "snap0"]);
    assert_eq!(sh(&d, "c2", "cat /root/a").trim(), "one");

    // From a snapshot, and without snapshots.
    d.ok(&["copy", "c1/snap0", "c3"]);
    d.ok(&[
        "copy",
        "c1",
        "c4",
        "--instance-only",
        "-c",
        "limits.memory=64MiB",
    ]);
    assert!(snapshots(&d, "c3").is_empty());
    assert!(snapshots(&d, "c4").is_empty());
    assert_eq!(config_key(&d, "c4", "limits.memory"), "64MiB");
    d.ok(&["start", "c3"]);
    assert_eq!(sh(&d, "c3", "cat /root/a").trim(), "one");

    // Refused, with nothing made.
    let before = d.instances();
    let dup = d.ctl(&["copy", "c1", "c2"]);
    assert!(
        dup.code != 0 && dup.stderr.contains("already exists"),
        "{dup:?}"
    );
    let unknown = d.ctl(&["copy", "nope", "c5"]);
    assert!(
        unknown.code != 0 && unknown.stderr.contains("not found"),
        "{unknown:?}"
    );
    let unknown = d.ctl(&["copy", "c1/nope", "c5"]);
    assert!(
        unknown.code != 0 && unknown.stderr.contains("not found"),
        "{unknown:?}"
    );
    let (code, v) = d.http(
        "POST",
        "/1.0/instances",
        Some(r#"{"name":"c5","source":{"type":"copy","source":"c1","live":true}}"#),
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(d.instances(), before);
    assert!(!d.path().join("containers/c5").exists());
}

#[test]
fn renames_move_files_snapshots_and_leases() {
    if !require_root("renames_move_files_snapshots_and_leases") {
        return;
    }
    let mut d = Daemon::start();
    let net = Bridge(net_name());
    d.ok(&["network", "create", &net.0]);
    d.ok(&["launch", "busybox", "c1", "-n", &net.0]);
    let address = address_of(&d, "c1");
    sh(&d, "c1", "echo kept > /root/a");
    d.ok(&["snapshot", "create", "c1", "snap0"]);
    let running = d.ctl(&["move", "c1", "c9"]);
    assert!(
        running.code != 0 && running.stderr.contains("stop"),
        "{running:?}"
    );
    d.ok(&["stop", "-f", "c1"]);
    d.ok(&["launch", "busybox", "other"]);
    let taken = d.ctl(&["rename", "c1", "other"]);
    assert!(
        taken.code != 0 && taken.stderr.contains("already exists"),
        "{taken:?}"
    );
    let bad = d.ctl(&["rename", "c1", "bad_name!"]);
    assert_ne!(bad.code, 0, "{bad:?}");

    d.ok(&["rename", "c1", "c9"]);
    let names = d.instances();
    assert!(names.contains(&"c9".to_string()) && !names.contains(&"c1".to_string()));
    assert!(!d.path().join("containers/c1").exists());
    assert!(d.path().join("containers/c9/upper/root/a").exists());
    let (code, _) = d.http("GET", "/1.0/instances/c1", None);
    assert_eq!(code, 404);
    assert_eq!(snapshots(&d, "c9"), vec!["snap0"]);
    d.ok(&["start", "c9"]);
    assert_eq!(sh(&d, "c9", "cat /root/a").trim(), "kept");
    assert_eq!(address_of(&d, "c9"), address, "the lease moved with it");
    assert_eq!(sh(&d, "c9", "hostname").trim(), "c9");

    // Snapshots rename too, and restore under the new name.
    d.ok(&["snapshot", "rename", "c9", "snap0", "first"]);
    assert_eq!(snapshots(&d, "c9"), vec!["first"]);
    let dup = d.ctl(&["snapshot", "rename", "c9", "first", "first"]);
    assert_ne!(dup.code, 0, "{dup:?}");
    sh(&d, "c9", "echo changed > /root/a");
    d.ok(&["restore", "c9", "first"]);
    assert_eq!(sh(&d, "c9", "cat /root/a").trim(), "kept");

    // All of it survives a daemon restart.
    d.restart();
    assert_eq!(d.state("c9")["status"], "Running");
    assert_eq!(snapshots(&d, "c9"), vec!["first"]);
}

#[test]
fn ephemeral_instances_go_when_they_stop() {
    if !require_root("ephemeral_instances_go_when_they_stop") {
        return;
    }
    let d = Daemon::start();
    let gone = |name: &str| {
        wait_until(Duration::from_secs(15), || {
            !d.instances().contains(&name.to_string())
        }) && !d.path().join("containers").join(name).exists()
    };
    // Stopped through the API.
    d.ok(&["launch", "busybox", "e1", "-e"]);
    let (_, v) = d.http("GET", "/1.0/instances/e1", None);
    assert_eq!(v["metadata"]["ephemeral"], true, "{v}");
    d.ok(&["stop", "-f", "e1"]);
    assert!(gone("e1"), "a stopped ephemeral instance is deleted");
    // Powered off from inside.
    d.ok(&["launch", "busybox", "e2", "--ephemeral"]);
    let pid = d.init_pid("e2");
    let _ = d.ctl(&["exec", "e2", "--", "poweroff", "-f"]);
    assert!(
        gone("e2"),
        "an ephemeral instance that stops itself is deleted"
    );
    assert!(!ctl_tests::pid_alive(pid));
    // A restart is no stop.
    d.ok(&["launch", "busybox", "e3", "-e"]);
    d.ok(&["restart", "-f", "e3"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.state("e3")["status"], "Running");
    // Made ephemeral while it runs: its stop deletes it too.
    d.ok(&["launch", "busybox", "e4"]);
    let (code, v) = d.http("PATCH", "/1.0/instances/e4", Some(r#"{"ephemeral": true}"#));
    assert_eq!(code, 200, "{v}");
    let _ = d.ctl(&["exec", "e4", "--", "poweroff", "-f"]);
    assert!(
        gone("e4"),
        "an instance made ephemeral is deleted when it stops"
    );
    // A plain instance stays.
    d.ok(&["launch", "busybox", "p1"]);
    d.ok(&["stop", "-f", "p1"]);
    assert!(d.instances().contains(&"p1".to_string()));
}

#[test]
fn lxc_and_incus_copy_move_and_launch_ephemeral() {
    if !require_root("lxc_and_incus_copy_move_and_launch_ephemeral") {
        return;
    }
    let d = Daemon::start();
    let (Some(lxc), Some(incus)) = (Cli::lxc(&d), Cli::incus(&d)) else {
        return;
    };
    d.ok(&["launch", "busybox", "c1"]);
    sh(&d, "c1", "echo from-c1 > /root/a");
    d.ok(&["stop", "-f", "c1"]);
    let snapshot_lxc: &[&str] = &["snapshot"];
    let snapshot_incus: &[&str] = &["snapshot", "create"];
    for (cli, copy, moved, snapshot) in [
        (&lxc, "l2", "l3", snapshot_lxc),
        (&incus, "i2", "i3", snapshot_incus),
    ] {
        cli.ok(&["copy", "c1", copy]);
        cli.ok(&["start", copy]);
        assert_eq!(sh(&d, copy, "cat /root/a").trim(), "from-c1");
        cli.ok(&["stop", "-f", copy]);
        cli.ok(&["move", copy, moved]);
        let list = cli.ok(&["list", "--format", "csv", "-c", "n"]);
        assert!(list.lines().any(|l| l == moved), "{list}");
        assert!(!list.lines().any(|l| l == copy), "{list}");
        cli.ok(&[snapshot, &[moved, "s0"]].concat());
        cli.ok(&[
            "copy",
            &format!("{moved}/s0"),
            &format!("{moved}-from-snap"),
        ]);
        assert!(d.instances().contains(&format!("{moved}-from-snap")));
        cli.fails(&["copy", "nope", "x1"]);
    }
    // `launch -e`: exit 0, and the instance goes when it stops.
    lxc.ok(&["launch", "busybox", "le", "-e"]);
    incus.ok(&["launch", "busybox", "ie", "--ephemeral"]);
    lxc.ok(&["stop", "-f", "le"]);
    incus.ok(&["stop", "-f", "ie"]);
    assert!(wait_until(Duration::from_secs(15), || {
        let names = d.instances();
        !names.contains(&"le".to_string()) && !names.contains(&"ie".to_string())
    }));
    incus.ok(&["rename", "i3", "i4"]);
    assert!(d.instances().contains(&"i4".to_string()));
}
