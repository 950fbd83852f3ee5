//! Storage pools end to end, as root, on unprivileged containers: a btrfs pool on a loop
//! file the daemon makes (launch, exec, snapshot, restore, copy, publish, a root disk quota
//! that stops a write inside while the host has space, O(1) snapshots as subvolumes), a
//! `dir` pool, custom volumes, refusals of bad input with the right status, LXD's and Incus'
//! clients, and nothing left behind (loop devices, mounts, files).

use std::path::Path;
use std::process::Command;

use ctl_tests::clients::Cli;
use ctl_tests::{Daemon, require_root};

fn sh(d: &Daemon, name: &str, script: &str) -> ctl_tests::Run {
    d.ctl(&["exec", name, "--", "sh", "-c", script])
}

/// The loop devices backed by `file`.
fn loops_of(file: &Path) -> String {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(file)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.trim().to_string()
}

/// The mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

fn subvolumes(root: &Path) -> String {
    Command::new("btrfs")
        .args(["subvolume", "list", "-o"])
        .arg(root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn btrfs_pool_instances_snapshots_copies_quota_and_cleanup() {
    if !require_root("btrfs_pool_instances_snapshots_copies_quota_and_cleanup") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["storage", "create", "bt", "btrfs", "size=1GiB"]);
    let list = d.ok(&["storage", "list", "--format", "csv"]);
    assert!(list.lines().any(|l| l.starts_with("bt,btrfs,")), "{list}");
    let file = d.path().join("disks/bt.img");
    let root = d.path().join("storage-pools/bt");
    assert!(!loops_of(&file).is_empty(), "the pool is on a loop device");
    assert_eq!(mounts_under(&root).len(), 1);

    // A quota of 64 MiB on the root disk: a write inside stops there, the host has space.
    d.ok(&[
        "launch",
        "busybox",
        "c1",
        "-s",
        "bt",
        "-d",
        "root,size=64MiB",
    ]);
    let home = d.path().join("containers/c1");
    assert_eq!(
        std::fs::read_link(&home).ok(),
        Some(root.join("containers/c1")),
        "the instance's directory is on the pool"
    );
    let dd = sh(&d, "c1", "dd if=/dev/zero of=/root/big bs=1M count=100");
    assert_ne!(dd.code, 0, "the write must fail at the quota: {dd:?}");
    assert!(
        dd.stderr.contains("Disk quota exceeded") || dd.stderr.contains("No space left"),
        "{dd:?}"
    );
    let size: u64 = sh(&d, "c1", "wc -c < /root/big")
        .stdout
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        size > 50 << 20 && size <= 64 << 20,
        "stopped at the quota: {size} bytes"
    );
    let state = d.state("c1");
    assert_eq!(state["disk"]["root"]["total"], 64 << 20);
    assert!(
        state["disk"]["root"]["usage"].as_u64().unwrap_or(0) > 50 << 20,
        "{state}"
    );
    let info = d.ok(&["info", "c1"]);
    assert!(info.contains("Disk usage"), "{info}");
    // The host (and the pool) still take writes; another instance is not limited by it.
    std::fs::write(d.path().join("tmp/host-write"), vec![0u8; 1 << 20])
        .unwrap_or_else(|e| panic!("host write: {e}"));
    d.ok(&["launch", "busybox", "c2", "-s", "bt"]);
    let big = sh(
        &d,
        "c2",
        "dd if=/dev/zero of=/root/big bs=1M count=80 && echo ok",
    );
    assert_eq!(big.stdout.trim().lines().last(), Some("ok"), "{big:?}");
    sh(&d, "c1", "rm /root/big && echo one > /root/a");
    // A size given live takes effect at once on the running instance, and goes again.
    d.ok(&["config", "device", "set", "c2", "root", "size=32MiB"]);
    let dd = sh(&d, "c2", "dd if=/dev/zero of=/root/more bs=1M count=10");
    assert_ne!(dd.code, 0, "past the new quota: {dd:?}");
    d.ok(&["config", "device", "set", "c2", "root", "size="]);
    let dd = sh(
        &d,
        "c2",
        "rm /root/more; dd if=/dev/zero of=/root/more bs=1M count=10 && echo ok",
    );
    assert!(dd.stdout.contains("ok"), "no quota any more: {dd:?}");
    // The pool of an instance's root disk cannot change in place.
    let moved = d.ctl(&["config", "device", "set", "c2", "root", "pool=default"]);
    assert!(
        moved.code != 0 && moved.stderr.contains("cannot change"),
        "{moved:?}"
    );

    // Snapshots are subvolumes (O(1)), restore brings the files back.
    d.ok(&["snapshot", "create", "c1", "s0"]);
    let subs = subvolumes(&root);
    assert!(
        subs.contains("containers/c1/snapshots/s0/layer") && subs.contains("containers/c1/layer"),
        "{subs}"
    );
    sh(&d, "c1", "echo two > /root/a");
    d.ok(&["restore", "c1", "s0"]);
    assert_eq!(sh(&d, "c1", "cat /root/a").stdout.trim(), "one");
    let dd = sh(&d, "c1", "dd if=/dev/zero of=/root/big bs=1M count=100");
    assert_ne!(dd.code, 0, "the quota holds after a restore: {dd:?}");
    sh(&d, "c1", "rm /root/big");

    // A snapshot on the pool is deleted there (not through the state dir's trash, which is
    // on another filesystem), and the daemon still starts after.
    d.ok(&["snapshot", "create", "c1", "gone"]);
    d.ok(&["snapshot", "delete", "c1", "gone"]);
    assert!(!root.join("containers/c1/snapshots/gone").exists());
    assert!(!subvolumes(&root).contains("snapshots/gone"));
    // Root's alone: what containers' roots wrote (setuid files among them) is out of reach
    // of the host's other users.
    use std::os::unix::fs::PermissionsExt;
    for dir in [
        root.clone(),
        root.join("containers"),
        root.join("custom"),
        root.join("images"),
    ] {
        let mode = std::fs::metadata(&dir)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let line = opts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*root.to_string_lossy()))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");

    // A copy is a snapshot of the layer, on the pool, with the snapshot.
    d.ok(&["copy", "c1", "c3"]);
    assert!(subvolumes(&root).contains("containers/c3/layer"));
    d.ok(&["start", "c3"]);
    assert_eq!(sh(&d, "c3", "cat /root/a").stdout.trim(), "one");
    let snaps = d.ok(&["snapshot", "list", "c3", "--format", "csv"]);
    assert!(snaps.contains("s0"), "{snaps}");

    // A backup of an instance on the pool (with its snapshot) imports back (to `default`).
    let tarball = d.path().join("tmp/c3.tar.gz");
    d.ok(&["export", "c3", &tarball.to_string_lossy()]);
    d.ok(&["import", &tarball.to_string_lossy(), "c3b"]);
    d.ok(&["start", "c3b"]);
    assert_eq!(sh(&d, "c3b", "cat /root/a").stdout.trim(), "one");
    let snaps = d.ok(&["snapshot", "list", "c3b", "--format", "csv"]);
    assert!(snaps.contains("s0"), "{snaps}");
    d.ok(&["delete", "-f", "c3b"]);

    // Publish, and launch the published image on the pool.
    d.ok(&["stop", "-f", "c1"]);
    // A restore of a stopped instance brings a new layer: its quota is set at once.
    d.ok(&["restore", "c1", "s0"]);
    let limit = Command::new("btrfs")
        .args(["qgroup", "show", "-re", "--raw", "-f"])
        .arg(root.join("containers/c1/layer"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        limit
            .lines()
            .any(|l| l.starts_with("0/") && l.contains(&(64u64 << 20).to_string())),
        "{limit}"
    );
    d.ok(&["publish", "c1", "--alias", "pub1"]);
    d.ok(&["launch", "pub1", "c4", "-s", "bt"]);
    assert_eq!(sh(&d, "c4", "cat /root/a").stdout.trim(), "one");
    // The image is unpacked once in the pool, as a read-only subvolume.
    let images: Vec<_> = std::fs::read_dir(root.join("images"))
        .map(|r| {
            r.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .into_iter()
        .collect();
    assert_eq!(images, vec![2], "busybox and pub1, once each");

    // LXD's and Incus' clients see the pool and its volumes.
    if let Some(lxc) = Cli::lxc(&d) {
        let pools = lxc.ok(&["storage", "list", "--format", "csv"]);
        assert!(pools.lines().any(|l| l.starts_with("bt,btrfs")), "{pools}");
        let vols = lxc.ok(&["storage", "volume", "list", "bt", "--format", "csv"]);
        assert!(vols.contains("container,c1"), "{vols}");
    }
    if let Some(incus) = Cli::incus(&d) {
        let pools = incus.ok(&["storage", "list", "--format", "csv"]);
        assert!(pools.lines().any(|l| l.starts_with("bt,btrfs")), "{pools}");
        let shown = incus.ok(&["storage", "show", "bt"]);
        assert!(shown.contains("driver: btrfs"), "{shown}");
    }

    // A volume moved in from a dir pool becomes a subvolume of its own, so its size is a
    // quota on it alone.
    d.ok(&["storage", "volume", "create", "default", "mv"]);
    d.ok(&["storage", "volume", "move", "default/mv", "bt/mv"]);
    assert!(
        subvolumes(&root).contains("custom/mv"),
        "{}",
        subvolumes(&root)
    );
    d.ok(&["storage", "volume", "set", "bt", "mv", "size=8MiB"]);
    d.ok(&["storage", "volume", "delete", "bt", "mv"]);

    // In use: 409, and nothing changes.
    let (code, _) = d.http("DELETE", "/1.0/storage-pools/bt", None);
    assert_eq!(code, 409);
    for c in ["c1", "c2", "c3", "c4"] {
        d.ok(&["delete", "-f", c]);
    }
    d.ok(&["image", "delete", "pub1"]);
    d.ok(&["storage", "delete", "bt"]);
    assert!(loops_of(&file).is_empty(), "no loop device is left");
    assert!(mounts_under(&root).is_empty(), "no mount is left");
    assert!(!file.exists() && !root.exists(), "no file is left");
}

#[test]
fn dir_pools_refusals_and_custom_volumes() {
    if !require_root("dir_pools_refusals_and_custom_volumes") {
        return;
    }
    let d = Daemon::start();
    // Bad input: a clear error, the right status, nothing made.
    for (body, code) in [
        (r#"{"name":"a/b","driver":"dir"}"#, 400),
        (r#"{"name":"z","driver":"zfs"}"#, 400),
        (
            r#"{"name":"s","driver":"btrfs","config":{"size":"16MiB"}}"#,
            400,
        ),
        (
            r#"{"name":"k","driver":"dir","config":{"colour":"red"}}"#,
            400,
        ),
        (r#"{"name":"default","driver":"dir"}"#, 409),
    ] {
        let (got, v) = d.http("POST", "/1.0/storage-pools", Some(body));
        assert_eq!(got, code, "{body}: {v}");
    }
    let inside = d.path().join("images");
    let (got, v) = d.http(
        "POST",
        "/1.0/storage-pools",
        Some(&format!(
            r#"{{"name":"in","driver":"dir","config":{{"source":"{}"}}}}"#,
            inside.display()
        )),
    );
    assert_eq!(got, 400, "a source inside the state directory: {v}");
    let (got, _) = d.http("DELETE", "/1.0/storage-pools/default", None);
    assert_eq!(got, 409, "the default profile's root disk uses it");
    let (got, _) = d.http("GET", "/1.0/storage-pools/nope", None);
    assert_eq!(got, 404);

    // A dir pool of its own: launch, exec, snapshot, restore, copy, publish.
    let src = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = src.path().join("pool");
    d.ok(&[
        "storage",
        "create",
        "dp",
        "dir",
        &format!("source={}", source.display()),
    ]);
    d.ok(&["launch", "busybox", "c1", "-s", "dp"]);
    assert!(source.join("containers/c1/upper").is_dir());
    sh(&d, "c1", "echo one > /root/a");
    d.ok(&["snapshot", "create", "c1", "s0"]);
    sh(&d, "c1", "echo two > /root/a");
    d.ok(&["restore", "c1", "s0"]);
    assert_eq!(sh(&d, "c1", "cat /root/a").stdout.trim(), "one");
    d.ok(&["copy", "c1", "c2"]);
    assert!(source.join("containers/c2/upper/root/a").is_file());
    d.ok(&["stop", "-f", "c1"]);
    d.ok(&["publish", "c1", "--alias", "pub2"]);
    // This kernel's filesystems have no project quotas: a size is refused, clearly.
    let refused = d.ctl(&[
        "launch",
        "busybox",
        "c3",
        "-s",
        "dp",
        "-d",
        "root,size=64MiB",
    ]);
    assert!(
        refused.code != 0 && refused.stderr.contains("project quotas"),
        "{refused:?}"
    );
    assert!(
        !d.instances().contains(&"c3".to_string()),
        "nothing half-made"
    );
    let unknown = d.ctl(&["launch", "busybox", "c3", "-s", "nope"]);
    assert!(
        unknown.code != 0 && unknown.stderr.contains("not found"),
        "{unknown:?}"
    );

    // Custom volumes: create, snapshot, restore, rename, copy, resize refused, state.
    d.ok(&["storage", "volume", "create", "dp", "data"]);
    assert!(source.join("custom/data").is_dir());
    let vols = d.ok(&["storage", "volume", "list", "dp", "--format", "csv"]);
    assert!(vols.contains("custom,data"), "{vols}");
    std::fs::write(source.join("custom/data/f"), "v1").unwrap_or_else(|e| panic!("{e}"));
    d.ok(&[
        "storage", "volume", "snapshot", "create", "dp", "data", "v1",
    ]);
    std::fs::write(source.join("custom/data/f"), "v2").unwrap_or_else(|e| panic!("{e}"));
    d.ok(&["storage", "volume", "restore", "dp", "data", "v1"]);
    assert_eq!(
        std::fs::read_to_string(source.join("custom/data/f")).unwrap_or_default(),
        "v1"
    );
    d.ok(&["storage", "volume", "copy", "dp/data", "default/data2"]);
    assert_eq!(
        std::fs::read_to_string(d.path().join("custom/data2/f")).unwrap_or_default(),
        "v1"
    );
    let snaps = d.ok(&[
        "storage", "volume", "snapshot", "list", "default", "data2", "--format", "csv",
    ]);
    assert!(snaps.contains("v1"), "the copy has the snapshot: {snaps}");
    d.ok(&["storage", "volume", "rename", "default", "data2", "data3"]);
    let (code, v) = d.http(
        "PATCH",
        "/1.0/storage-pools/default/volumes/custom/data3",
        Some(r#"{"config":{"size":"1GiB"}}"#),
    );
    assert_eq!(code, 400, "no project quotas here: {v}");
    let (code, v) = d.http(
        "GET",
        "/1.0/storage-pools/default/volumes/custom/data3/state",
        None,
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["metadata"]["usage"]["used"].as_u64().is_some(), "{v}");
    if let Some(lxc) = Cli::lxc(&d) {
        let vols = lxc.ok(&["storage", "volume", "list", "default", "--format", "csv"]);
        assert!(vols.contains("data3"), "{vols}");
    }
    d.ok(&["storage", "volume", "delete", "default", "data3"]);
    assert!(!d.path().join("custom/data3").exists());

    // A pool in use cannot go; once empty it can, and its source keeps nothing of ctld's.
    let busy = d.ctl(&["storage", "delete", "dp"]);
    assert!(busy.code != 0 && busy.stderr.contains("in use"), "{busy:?}");
    for c in ["c1", "c2"] {
        d.ok(&["delete", "-f", c]);
    }
    d.ok(&["image", "delete", "pub2"]);
    d.ok(&["storage", "volume", "delete", "dp", "data"]);
    d.ok(&["storage", "delete", "dp"]);
    let left: Vec<_> = std::fs::read_dir(&source)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn custom_volume_outlives_the_container_that_wrote_it() {
    if !require_root("custom_volume_outlives_the_container_that_wrote_it") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["storage", "volume", "create", "default", "db"]);
    d.ok(&["launch", "busybox", "c1"]);
    // Attached to a running (unprivileged) container: mounted at once, id-mapped, so the
    // container's root owns what it writes and the host sees the container's own ids.
    d.ok(&[
        "storage",
        "volume",
        "attach",
        "default",
        "db",
        "c1",
        "/var/lib/db",
    ]);
    let w = sh(
        &d,
        "c1",
        "echo kept > /var/lib/db/file && stat -c %u /var/lib/db/file",
    );
    assert_eq!(w.stdout.trim(), "0", "{w:?}");
    let on_host = d.path().join("custom/db/file");
    assert_eq!(
        std::fs::read_to_string(&on_host).unwrap_or_default(),
        "kept\n"
    );
    let (code, v) = d.http(
        "DELETE",
        "/1.0/storage-pools/default/volumes/custom/db",
        None,
    );
    assert_eq!(code, 409, "in use: {v}");
    let used = d.ok(&["storage", "volume", "show", "default", "db"]);
    assert!(used.contains("/1.0/instances/c1"), "{used}");

    d.ok(&["delete", "-f", "c1"]);
    assert!(on_host.is_file(), "the volume outlives the container");
    d.ok(&["launch", "busybox", "c2"]);
    d.ok(&[
        "storage", "volume", "attach", "default", "db", "c2", "/data",
    ]);
    assert_eq!(sh(&d, "c2", "cat /data/file").stdout.trim(), "kept");
    // And after a restart of the container, from its devices.
    d.ok(&["restart", "-f", "c2"]);
    assert_eq!(sh(&d, "c2", "cat /data/file").stdout.trim(), "kept");
    // An unknown volume is refused before anything changes.
    let bad = d.ctl(&["storage", "volume", "attach", "default", "nope", "c2", "/x"]);
    assert_ne!(bad.code, 0, "{bad:?}");
    d.ok(&["storage", "volume", "detach", "default", "db", "c2"]);
    assert_ne!(sh(&d, "c2", "test -e /data/file").code, 0, "detached live");
    d.ok(&["storage", "volume", "delete", "default", "db"]);
    assert!(!d.path().join("custom/db").exists());
}
