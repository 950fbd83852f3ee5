//! A database that lost its records never costs a container its data: ctld refuses to start
//! on a database that lost every instance while container directories remain, keeps a
//! directory whose record alone was lost (and refuses to create over it), and `ctld recover`
//! rebuilds the records from each directory's `backup.yaml`; the containers then start with
//! their files, config and id maps.

use std::process::Command;

use ctl_tests::{Daemon, bin_dir, require_root};

/// Run `ctld ARGS` on `d`'s state directory and cgroup parent (not as the harness' daemon).
fn ctld(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("ctld"))
        .arg("--dir")
        .arg(d.path())
        .arg("--cgroup-parent")
        .arg(&d.cgroup_parent)
        .arg("--default-network=false")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ctld: {e}"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run one SQL statement on `d`'s database behind ctld's back (with `name` as its one
/// parameter); it must change exactly one row.
fn sql_one_row(d: &Daemon, statement: &str, name: &str) {
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1])\n\
                  c.execute('PRAGMA foreign_keys = ON')\n\
                  n = c.execute(sys.argv[2], (sys.argv[3],)).rowcount\n\
                  c.commit()\n\
                  sys.exit(0 if n == 1 else 1)\n";
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(d.path().join("ctld.db"))
        .args([statement, name])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{statement} ({name})");
}

/// Remove one instance's record (as a database restored from an older copy would).
fn forget(d: &Daemon, name: &str) {
    sql_one_row(d, "DELETE FROM instances WHERE name = ?", name);
}

/// Make the database say `name` is stopped, as when ctld died between starting a container
/// and recording it.
fn forget_running(d: &Daemon, name: &str) {
    sql_one_row(
        d,
        "UPDATE instances SET init_pid = 0, init_starttime = 0, monitor_pid = 0 WHERE name = ?",
        name,
    );
}

#[test]
fn a_lost_database_is_refused_and_recover_brings_every_container_back() {
    if !require_root("a_lost_database_is_refused_and_recover_brings_every_container_back") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&["launch", "busybox", "c1", "-c", "limits.memory=96MiB"]);
    d.ok(&[
        "launch",
        "busybox",
        "c2",
        "-c",
        "security.idmap.isolated=true",
    ]);
    d.ok(&["init", "busybox", "c3"]);
    d.ok(&["exec", "c1", "--", "sh", "-c", "echo precious > /root/data"]);
    let uids = (d.init_host_uid("c1"), d.init_host_uid("c2"));
    d.ok(&["stop", "-f", "c1", "c2"]);
    for n in ["c1", "c2", "c3"] {
        let b = d.path().join("containers").join(n).join("backup.yaml");
        let text = std::fs::read_to_string(&b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
        assert!(text.contains(&format!("name: {n}")), "{text}");
    }

    // The database is lost: an empty file where it was.
    d.kill(9);
    for f in ["ctld.db", "ctld.db-wal", "ctld.db-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(d.path().join("ctld.db"), b"").unwrap_or_else(|e| panic!("{e}"));
    let refused = ctld(&d, &[]);
    assert!(!refused.status.success());
    let why = text(&refused);
    assert!(
        why.contains("refusing to start") && why.contains("3 container directories"),
        "{why}"
    );
    assert!(
        why.contains("recover"),
        "the message names the way out: {why}"
    );
    let data = d.path().join("containers/c1/upper/root/data");
    assert!(data.exists(), "nothing was deleted");

    let recovered = ctld(&d, &["recover"]);
    let out = text(&recovered);
    assert!(recovered.status.success(), "{out}");
    assert!(
        out.contains("recovered c1 (and its image's record)"),
        "{out}"
    );
    assert!(out.contains("3 instance(s) recovered, 0 skipped"), "{out}");
    d.restart();
    assert_eq!(d.instances(), vec!["c1", "c2", "c3"]);
    for n in ["c1", "c2", "c3"] {
        d.ok(&["start", n]);
    }
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/data"]).trim(),
        "precious"
    );
    assert_eq!(
        d.ok(&["config", "get", "c1", "limits.memory"]).trim(),
        "96MiB"
    );
    assert_eq!(
        (d.init_host_uid("c1"), d.init_host_uid("c2")),
        uids,
        "the same id maps (the isolated range kept)"
    );
    // Not while a daemon runs on the directory.
    let busy = ctld(&d, &["recover"]);
    assert!(!busy.status.success());
    assert!(text(&busy).contains("stop it first"), "{}", text(&busy));

    // One record lost (an older copy of the database): ctld starts, keeps the directory,
    // and will not create over it.
    d.ok(&["stop", "-f", "c3"]);
    d.kill(15);
    forget(&d, "c3");
    d.restart();
    assert_eq!(d.instances(), vec!["c1", "c2"]);
    assert!(
        d.log()
            .contains("container directory without a record: kept")
    );
    let r = d.ctl(&["launch", "busybox", "c3"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("ctld recover"), "{}", r.stderr);
    let (status, _) = d.http(
        "POST",
        "/1.0/instances",
        Some(r#"{"name":"c3","source":{"type":"image","alias":"busybox"}}"#),
    );
    assert_eq!(status, 409);
    assert!(d.path().join("containers/c3/backup.yaml").exists());
    d.kill(15);
    let again = ctld(&d, &["recover"]);
    assert!(
        text(&again).contains("recovered c3") && text(&again).contains("1 instance(s) recovered"),
        "{}",
        text(&again)
    );
    d.restart();
    assert_eq!(d.instances(), vec!["c1", "c2", "c3"]);
    d.ok(&["start", "c3"]);
}

#[test]
fn a_container_started_but_not_recorded_is_adopted_or_stopped_never_left_running_unseen() {
    if !require_root(
        "a_container_started_but_not_recorded_is_adopted_or_stopped_never_left_running_unseen",
    ) {
        return;
    }
    let mut d = Daemon::start();
    let net = ctl_tests::unique("rb").replace('-', "");
    let net = net[net.len().saturating_sub(12)..].to_string();
    let net = format!("r{net}");
    d.ok(&["network", "create", &net]);
    d.ok(&["launch", "busybox", "plain"]);
    d.ok(&["init", "busybox", "wired"]);
    let nic = format!("network={net}");
    d.ok(&["config", "device", "add", "wired", "eth0", "nic", &nic]);
    d.ok(&["start", "wired"]);
    let plain_pid = d.init_pid("plain");
    let wired_pid = d.init_pid("wired");
    let state = d.path().join("containers/plain/init.json");
    let recorded = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(
        recorded.contains(&format!("\"pid\":{plain_pid}")),
        "{recorded}"
    );

    // "wired" lost its host-side veth (its start never got that far, as it were).
    let host = d.state("wired")["network"]["eth0"]["host_name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!host.is_empty());
    d.kill(9);
    let deleted = Command::new("ip")
        .args(["link", "del", &host])
        .status()
        .is_ok_and(|s| s.success());
    assert!(deleted, "delete {host}");
    forget_running(&d, "plain");
    forget_running(&d, "wired");
    d.restart();
    // The complete one is adopted as it runs; the incomplete one is stopped, not left
    // running where no one sees it.
    assert_eq!(d.state("plain")["status"], "Running");
    assert_eq!(d.init_pid("plain"), plain_pid);
    assert_eq!(
        d.ok(&["exec", "plain", "--", "echo", "adopted"]).trim(),
        "adopted"
    );
    assert!(d.log().contains("adopted a running container"));
    assert!(
        d.log()
            .contains("found running but not fully started: stopping it"),
        "{}",
        d.log()
    );
    assert!(
        !ctl_tests::pid_alive(wired_pid),
        "the half-started init was stopped"
    );
    // It was meant to run (its last power state is RUNNING): the daemon's autostart gives
    // it a fresh, complete start, recorded like any other.
    assert!(
        ctl_tests::wait_until(std::time::Duration::from_secs(10), || {
            d.state("wired")["status"] == "Running"
        }),
        "wired started again"
    );
    assert_ne!(d.init_pid("wired"), wired_pid);
    d.ok(&["exec", "wired", "--", "true"]);
    // A clean stop removes the monitor's file; the next start works.
    d.ok(&["stop", "-f", "plain"]);
    assert!(!state.exists());
    d.ok(&["start", "plain"]);
    d.ok(&["delete", "-f", "plain", "wired"]);
    d.ok(&["network", "delete", &net]);
}

#[test]
fn a_delete_cut_short_by_a_crash_ends_as_before_or_as_after_never_half() {
    if !require_root("a_delete_cut_short_by_a_crash_ends_as_before_or_as_after_never_half") {
        return;
    }
    let mut d = Daemon::start();
    for n in ["early", "late"] {
        d.ok(&["init", "busybox", n]);
    }
    let containers = d.path().join("containers");
    let dir = |n: &str| containers.join(n);
    let mark = |n: &str| {
        let b = dir(n).join("backup.yaml");
        let text = std::fs::read_to_string(&b).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&b, format!("deleting: true\n{text}")).unwrap_or_else(|e| panic!("{e}"));
    };
    d.kill(9);
    // "early": the delete marked its intent, then ctld died before the record went.
    mark("early");
    // "late": it died after the record went, before the files did.
    mark("late");
    forget(&d, "late");
    d.restart();
    // Before: "early" is whole and its backup no longer says deleting.
    assert_eq!(d.instances(), vec!["early"]);
    let b = std::fs::read_to_string(dir("early").join("backup.yaml")).unwrap_or_default();
    assert!(!b.contains("deleting"), "{b}");
    d.ok(&["start", "early"]);
    // After: "late" is gone for good, and its name is free.
    assert!(!dir("late").exists(), "the interrupted delete was finished");
    assert!(d.log().contains("finishing an interrupted delete"));
    d.ok(&["launch", "busybox", "late"]);
    // A normal delete leaves nothing.
    d.ok(&["delete", "-f", "early", "late"]);
    assert!(!dir("early").exists() && !dir("late").exists());
    assert!(d.instances().is_empty());
}

/// A damaged database file stops ctld with a message that names the file and the way out;
/// nothing on disk changes, and once the file is moved aside `ctld recover` brings the
/// container back with its data.
#[test]
fn a_damaged_database_is_named_with_the_way_out() {
    if !require_root("a_damaged_database_is_named_with_the_way_out") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    d.ok(&["exec", "c1", "--", "sh", "-c", "echo kept > /root/data"]);
    d.ok(&["stop", "-f", "c1"]);
    d.kill(9);
    let db = d.path().join("ctld.db");
    for f in ["ctld.db-wal", "ctld.db-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap_or_else(|e| panic!("{e}"));
    let refused = ctld(&d, &[]);
    assert!(!refused.status.success());
    let why = text(&refused);
    assert!(
        why.contains(&format!("cannot open the database {}", db.display())),
        "{why}"
    );
    assert!(why.contains("recover"), "{why}");
    assert!(d.path().join("containers/c1/upper/root/data").exists());
    std::fs::rename(&db, d.path().join("ctld.db.damaged")).unwrap_or_else(|e| panic!("{e}"));
    let recovered = ctld(&d, &["recover"]);
    assert!(recovered.status.success(), "{}", text(&recovered));
    d.restart();
    d.ok(&["start", "c1"]);
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/data"]).trim(),
        "kept"
    );
}

/// A partial download waits for its pull to resume; one nobody resumed for a week is
/// removed at the next start (logged), a recent one is kept.
#[test]
fn stale_partial_downloads_go_at_start_up_recent_ones_stay() {
    if !require_root("stale_partial_downloads_go_at_start_up_recent_ones_stay") {
        return;
    }
    let mut d = Daemon::start();
    let downloads = d.path().join("downloads");
    let old = downloads.join("a".repeat(64));
    let recent = downloads.join("b".repeat(64));
    for dir in [&old, &recent] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("rootfs.part"), b"partial").unwrap_or_else(|e| panic!("{e}"));
    }
    let aged = Command::new("touch")
        .args(["-d", "10 days ago"])
        .arg(&old)
        .status()
        .is_ok_and(|s| s.success());
    assert!(aged);
    d.restart();
    assert!(
        !old.exists(),
        "a download nobody resumed for 10 days is removed"
    );
    assert!(recent.join("rootfs.part").exists(), "a recent one is kept");
    assert!(d.log().contains("removing a partial download"));
}

/// A lost database and a reboot (the pool's loop mount gone) with instances and a custom
/// volume on a btrfs pool: the start is refused, `ctld recover` brings the pool back from
/// `storage.json` (mounted again), then its volume and the instances on it, with their files.
#[test]
fn recover_brings_back_storage_pools_and_what_is_on_them() {
    if !require_root("recover_brings_back_storage_pools_and_what_is_on_them") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&["storage", "create", "bt", "btrfs", "size=512MiB"]);
    d.ok(&["storage", "volume", "create", "bt", "vol"]);
    d.ok(&["launch", "busybox", "c1", "-s", "bt"]);
    d.ok(&["storage", "volume", "attach", "bt", "vol", "c1", "/data"]);
    d.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo precious > /root/data && echo kept > /data/f",
    ]);
    d.ok(&["stop", "-f", "c1"]);
    let root = d.path().join("storage-pools/bt");

    // The database is lost, and the host rebooted (the pool is no longer mounted).
    d.kill(9);
    for f in ["ctld.db", "ctld.db-wal", "ctld.db-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(d.path().join("ctld.db"), b"").unwrap_or_else(|e| panic!("{e}"));
    ctl_tests::unmount_under(&root);
    assert!(!d.path().join("containers/c1").exists(), "unreachable now");
    let refused = ctld(&d, &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("recover"), "{}", text(&refused));

    let recovered = ctld(&d, &["recover"]);
    let out = text(&recovered);
    assert!(recovered.status.success(), "{out}");
    assert!(out.contains("recovered storage pool bt"), "{out}");
    assert!(
        out.contains("recovered storage volume vol of pool bt"),
        "{out}"
    );
    assert!(out.contains("recovered c1"), "{out}");
    d.restart();
    assert_eq!(d.state("c1")["status"], "Stopped", "{}", d.log());
    d.ok(&["start", "c1"]);
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/data", "/data/f"]),
        "precious\nkept\n"
    );
}

/// Volume changes a crash cut off end as before or as after at the next start: a rename
/// whose directory moved but whose row did not goes back where the row is; a create that made
/// its directory but no row leaves nothing, and the name can be used again.
#[test]
fn a_volume_change_cut_short_by_a_crash_is_finished_or_undone() {
    if !require_root("a_volume_change_cut_short_by_a_crash_is_finished_or_undone") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&["storage", "volume", "create", "default", "v1"]);
    std::fs::write(d.path().join("custom/v1/f"), "kept").unwrap_or_else(|e| panic!("{e}"));
    d.kill(9);
    // The state a crash in the middle of `rename v1 v2` leaves: files moved, row not.
    std::fs::rename(d.path().join("custom/v1"), d.path().join("custom/v2"))
        .unwrap_or_else(|e| panic!("{e}"));
    let intent =
        "INSERT INTO intents (kind, name, created_at) VALUES (?2, ?1, '2026-01-01T00:00:00Z')";
    sql_one_row(
        &d,
        &intent.replace("?2", "'volume-rename'"),
        "default/v1/v2",
    );
    // And in the middle of `create orphan`: its directory made, no row.
    std::fs::create_dir(d.path().join("custom/orphan")).unwrap_or_else(|e| panic!("{e}"));
    sql_one_row(
        &d,
        &intent.replace("?2", "'volume-create'"),
        "default/orphan",
    );
    d.restart();
    assert_eq!(
        std::fs::read_to_string(d.path().join("custom/v1/f")).unwrap_or_default(),
        "kept",
        "the files went back where the row is"
    );
    assert!(!d.path().join("custom/v2").exists());
    assert!(
        !d.path().join("custom/orphan").exists(),
        "the half-made volume is gone"
    );
    d.ok(&["storage", "volume", "create", "default", "orphan"]);
    d.ok(&["storage", "volume", "rename", "default", "v1", "v2"]);
    assert!(d.path().join("custom/v2/f").is_file());
}
