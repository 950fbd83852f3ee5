//! Snapshots end to end, as root, on unprivileged containers: taken running (frozen for
//! the copy) or stopped, restored with their files (overlay whiteouts included), their
//! config and their owners, refused clearly for an unknown name, driven by `ctl` and by LXD's
//! `lxc`, and what a crash leaves of them cleaned at the next start.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use ctl_tests::{Daemon, require_root};

fn sh(d: &Daemon, script: &str) -> String {
    d.ok(&["exec", "c1", "--", "sh", "-c", script])
}

#[test]
fn snapshots_restore_files_config_and_owners() {
    if !require_root("snapshots_restore_files_config_and_owners") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    // A file of the container's own, and one of the image's removed (a whiteout).
    sh(&d, "echo one > /root/a && rm /bin/vi");
    d.ok(&["snapshot", "create", "c1"]);
    let list = d.ok(&["snapshot", "list", "c1", "--format", "csv"]);
    assert!(list.lines().any(|l| l.starts_with("snap0,")), "{list}");
    assert_eq!(d.state("c1")["status"], "Running", "thawed after the copy");

    // Everything changes after it.
    sh(
        &d,
        "echo two > /root/a && touch /root/b && ln -s busybox /bin/vi",
    );
    d.ok(&["config", "set", "c1", "limits.memory=64MiB"]);
    let uid_before = d.init_host_uid("c1");

    d.ok(&["restore", "c1", "snap0"]);
    assert_eq!(d.state("c1")["status"], "Running", "started again");
    assert_eq!(sh(&d, "cat /root/a").trim(), "one");
    assert_eq!(sh(&d, "ls /root/b 2>/dev/null || echo gone").trim(), "gone");
    assert_eq!(
        sh(&d, "ls /bin/vi 2>/dev/null || echo gone").trim(),
        "gone",
        "the whiteout came back"
    );
    assert_eq!(
        d.ok(&["config", "get", "c1", "limits.memory"]).trim(),
        "",
        "the config as it was"
    );
    let upper = d.path().join("containers/c1/upper/root/a");
    let owner = std::fs::metadata(&upper).map(|m| m.uid()).unwrap_or(0);
    assert_eq!(owner, uid_before, "owners kept in the container's host ids");
    assert_eq!(d.init_host_uid("c1"), uid_before);

    // Named, stopped, duplicate, bad and unknown names.
    d.ok(&["stop", "-f", "c1"]);
    d.ok(&["snapshot", "create", "c1", "before-upgrade"]);
    let dup = d.ctl(&["snapshot", "create", "c1", "before-upgrade"]);
    assert!(
        dup.code != 0 && dup.stderr.contains("already exists"),
        "{dup:?}"
    );
    let bad = d.ctl(&["snapshot", "create", "c1", "a/b"]);
    assert_ne!(bad.code, 0, "{bad:?}");
    let unknown = d.ctl(&["restore", "c1", "nope"]);
    assert!(
        unknown.code != 0 && unknown.stderr.contains("not found"),
        "restoring an unknown snapshot must fail: {unknown:?}"
    );
    let (code, _) = d.http("PUT", "/1.0/instances/c1", Some(r#"{"restore":"nope"}"#));
    assert_eq!(code, 404);
    let shown = d.ok(&["snapshot", "show", "c1", "before-upgrade"]);
    assert!(shown.contains("name: before-upgrade"), "{shown}");
    d.ok(&["restore", "c1", "before-upgrade"]);
    assert_eq!(
        d.state("c1")["status"],
        "Stopped",
        "a stopped one stays stopped"
    );

    // Delete: the record and the files.
    d.ok(&["snapshot", "delete", "c1", "snap0", "before-upgrade"]);
    assert_eq!(
        d.ok(&["snapshot", "list", "c1", "--format", "csv"]).trim(),
        "NAME,TAKEN AT,EXPIRES AT,SIZE"
    );
    let dir = d.path().join("containers/c1/snapshots");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    d.ok(&["start", "c1"]);
    d.ok(&["delete", "-f", "c1"]);
}

#[test]
fn what_a_crash_leaves_of_snapshots_is_finished_or_removed_never_lost() {
    if !require_root("what_a_crash_leaves_of_snapshots_is_finished_or_removed_never_lost") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&["init", "busybox", "c1"]);
    d.ok(&["snapshot", "create", "c1", "kept"]);
    let snaps = d.path().join("containers/c1/snapshots");
    // A copy cut short, a delete that removed only the record, files whose record is lost.
    let half = snaps.join(".tmp-0123");
    std::fs::create_dir_all(half.join("upper")).unwrap_or_else(|e| panic!("{e}"));
    let deleting = snaps.join("gone");
    std::fs::create_dir_all(deleting.join("upper")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(deleting.join(".deleting"), b"").unwrap_or_else(|e| panic!("{e}"));
    let unknown = snaps.join("unrecorded");
    std::fs::create_dir_all(unknown.join("upper")).unwrap_or_else(|e| panic!("{e}"));
    d.kill(9);
    d.restart();
    assert!(!half.exists() && !deleting.exists(), "garbage removed");
    assert!(
        unknown.exists(),
        "files of a snapshot whose record was lost are kept"
    );
    assert!(d.log().contains("snapshot files without a record: kept"));
    let list = d.ok(&["snapshot", "list", "c1", "--format", "csv"]);
    assert!(list.lines().any(|l| l.starts_with("kept,")), "{list}");
    let _ = std::fs::remove_dir_all(&unknown);
}

#[test]
fn lxc_takes_restores_and_deletes_snapshots() {
    if !require_root("lxc_takes_restores_and_deletes_snapshots") {
        return;
    }
    if Command::new("lxc").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "lxc is not installed (.ci/run installs it)"
        );
        eprintln!("SKIP: lxc not installed");
        return;
    }
    let d = Daemon::start();
    let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let lxc = |args: &[&str]| {
        let o = Command::new("lxc")
            .args(args)
            .env("LXD_DIR", d.path())
            .env("LXD_CONF", conf.path())
            .output()
            .unwrap_or_else(|e| panic!("lxc: {e}"));
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let ok = |args: &[&str]| {
        let (good, text) = lxc(args);
        assert!(good, "lxc {args:?}: {text}");
        text
    };
    ok(&["launch", "busybox", "c1"]);
    d.ok(&["exec", "c1", "--", "sh", "-c", "echo first > /root/f"]);
    ok(&["snapshot", "c1", "s1"]);
    let info = ok(&["info", "c1"]);
    assert!(info.contains("s1"), "lxc info lists the snapshot: {info}");
    d.ok(&["exec", "c1", "--", "sh", "-c", "echo second > /root/f"]);
    ok(&["restore", "c1", "s1"]);
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/f"]).trim(),
        "first"
    );
    let (good, text) = lxc(&["restore", "c1", "missing"]);
    assert!(!good, "an unknown snapshot must fail: {text}");
    ok(&["delete", "c1/s1"]);
    assert_eq!(
        d.ok(&["snapshot", "list", "c1", "--format", "csv"]).trim(),
        "NAME,TAKEN AT,EXPIRES AT,SIZE"
    );
    ok(&["delete", "-f", "c1"]);
}

#[test]
fn a_snapshot_publishes_as_an_image_of_its_files() {
    if !require_root("a_snapshot_publishes_as_an_image_of_its_files") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    sh(&d, "echo before > /root/before && rm /bin/vi");
    d.ok(&["snapshot", "create", "c1", "snap0"]);
    sh(
        &d,
        "echo after > /root/after && echo changed > /root/before",
    );

    // Bad sources: 400 or 404, and no image.
    let images_before = d.ok(&["image", "list", "--format", "csv"]);
    let (code, body) = d.http(
        "POST",
        "/1.0/images",
        Some(r#"{"source":{"type":"snapshot","name":"c1"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.http(
        "POST",
        "/1.0/images",
        Some(r#"{"source":{"type":"snapshot","name":"c1/nope"}}"#),
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(d.ok(&["image", "list", "--format", "csv"]), images_before);

    // From a running instance's snapshot: the snapshot's files, not the instance's now.
    d.ok(&["publish", "c1/snap0", "--alias", "fromsnap"]);
    assert_eq!(d.state("c1")["status"], "Running");
    d.ok(&["launch", "fromsnap", "c2"]);
    let c2 = |script: &str| d.ok(&["exec", "c2", "--", "sh", "-c", script]);
    assert_eq!(c2("cat /root/before").trim(), "before");
    assert_eq!(c2("ls /root/after 2>/dev/null || echo gone").trim(), "gone");
    assert_eq!(
        c2("ls /bin/vi 2>/dev/null || echo gone").trim(),
        "gone",
        "the snapshot's whiteout is in the image"
    );
    assert!(
        c2("ls /bin/sh").contains("/bin/sh"),
        "the image layer is there"
    );
    d.ok(&["delete", "-f", "c2", "c1"]);
    d.ok(&["image", "delete", "fromsnap"]);
}

#[test]
fn lxc_publishes_a_snapshot() {
    if !require_root("lxc_publishes_a_snapshot") {
        return;
    }
    let d = Daemon::start();
    let Some(lxc) = ctl_tests::clients::Cli::lxc(&d) else {
        return;
    };
    d.ok(&["launch", "busybox", "c1"]);
    sh(&d, "echo before > /root/before");
    lxc.ok(&["snapshot", "c1", "s0"]);
    sh(&d, "echo after > /root/after");
    lxc.ok(&["publish", "c1/s0", "--alias", "fromlxc"]);
    let aliases = d.ok(&["image", "alias", "list", "--format", "csv"]);
    assert!(aliases.contains("fromlxc"), "{aliases}");
    lxc.ok(&["launch", "fromlxc", "c2"]);
    let c2 = |script: &str| d.ok(&["exec", "c2", "--", "sh", "-c", script]);
    assert_eq!(c2("cat /root/before").trim(), "before");
    assert_eq!(c2("ls /root/after 2>/dev/null || echo gone").trim(), "gone");
    lxc.ok(&["delete", "-f", "c2"]);
    lxc.ok(&["delete", "-f", "c1"]);
    lxc.ok(&["image", "delete", "fromlxc"]);
}
