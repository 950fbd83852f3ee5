//! `disk` devices end to end, as root: host directories and files bound into unprivileged
//! busybox containers by the real ctld, at start and hot-plugged into running ones.
//! Owners with and without `shift` (id-mapped mounts), read-only binds the container cannot
//! remount writable, single files, add and remove while running, the 400s (a source in the
//! daemon's state directory, a missing source, I/O limits on a tmpfs), `required=false`,
//! the `lxc` client, and `limits.read`/`limits.write` as blkio (or io.max) rules on a loop
//! device the test makes.
//!
//! Everything lives in temp dirs these tests make; the loop device is detached and its
//! mount removed by a guard, also on failure; no traffic leaves the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctl_tests::clients::Cli;
use ctl_tests::{Daemon, Run, require_root, unique};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// A host directory for binds (mode 0755, so the container's root can pass it even where
/// it shows as nobody): `root.txt` owned by root, `user.txt` by 1000:1000.
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ctl-disk-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    std::fs::write(dir.path().join("root.txt"), "root\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("user.txt"), "user\n").unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::chown(dir.path().join("user.txt"), Some(1000), Some(1000))
        .unwrap_or_else(|e| panic!("chown: {e}"));
    dir
}

fn sh(d: &Daemon, name: &str, script: &str) -> Run {
    d.ctl(&["exec", name, "--", "sh", "-c", script])
}

/// Run `script` in the container; it must succeed; its trimmed stdout.
fn sh_ok(d: &Daemon, name: &str, script: &str) -> String {
    let r = sh(d, name, script);
    assert_eq!(r.code, 0, "{script}: {r:?}\n--- ctld log ---\n{}", d.log());
    r.stdout.trim().to_string()
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn add_device(d: &Daemon, name: &str, dev: &str, keys: &[&str]) {
    let mut args = vec!["config", "device", "add", name, dev, "disk"];
    args.extend_from_slice(keys);
    d.ok(&args);
}

fn status(d: &Daemon, name: &str) -> String {
    d.state(name)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn shift_shows_host_owners_and_a_plain_bind_shows_nobody() {
    root_or_skip!("shift_shows_host_owners_and_a_plain_bind_shows_nobody");
    let src = host_dir();
    let d = Daemon::start();
    let name = unique("dsk");
    d.ok(&["init", "busybox", &name]);
    let source = format!("source={}", path_str(src.path()));
    add_device(
        &d,
        &name,
        "shifted",
        &[&source, "path=/shifted", "shift=true"],
    );
    add_device(&d, &name, "plain", &[&source, "path=/mnt/plain"]);
    d.ok(&["start", &name]);
    assert!(d.init_host_uid(&name) != 0, "the container is unprivileged");
    let owners = sh_ok(
        &d,
        &name,
        "stat -c %u /shifted/root.txt /shifted/user.txt /mnt/plain/root.txt /mnt/plain/user.txt",
    );
    let owners: Vec<&str> = owners.lines().collect();
    assert_eq!(owners, ["0", "1000", "65534", "65534"], "{owners:?}");
    // Through the id-mapped mount the container's root is the host's root on that tree.
    sh_ok(&d, &name, "echo written > /shifted/new.txt");
    let made = std::fs::metadata(src.path().join("new.txt")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 0);
    // And it survives a restart (the start path again, with the mount points existing).
    d.ok(&["restart", &name]);
    assert_eq!(sh_ok(&d, &name, "cat /shifted/new.txt"), "written");
}

#[test]
fn read_only_binds_cannot_be_made_writable() {
    root_or_skip!("read_only_binds_cannot_be_made_writable");
    let src = host_dir();
    let d = Daemon::start();
    let name = unique("dsk");
    d.ok(&["init", "busybox", &name]);
    // With shift the container's root owns the files: only the locked read-only flag
    // stands between it and a write.
    let source = format!("source={}", path_str(src.path()));
    add_device(
        &d,
        &name,
        "ro",
        &[&source, "path=/ro", "shift=true", "readonly=true"],
    );
    add_device(&d, &name, "rw", &[&source, "path=/rw", "shift=true"]);
    d.ok(&["start", &name]);
    // The container's root can change the flags of a bind that is not locked (so the
    // refusals below are the lock's doing, not a mount command that cannot work).
    sh_ok(&d, &name, "mount -o remount,bind,ro /rw");
    assert_ne!(
        sh(&d, &name, "echo x > /rw/new.txt").code,
        0,
        "/rw made read-only"
    );
    assert_eq!(sh_ok(&d, &name, "cat /ro/root.txt"), "root");
    let w = sh(&d, &name, "echo x > /ro/new.txt");
    assert_ne!(w.code, 0, "{w:?}");
    assert!(w.stderr.contains("Read-only file system"), "{w:?}");
    for remount in ["mount -o remount,rw /ro", "mount -o remount,bind,rw /ro"] {
        let r = sh(&d, &name, remount);
        assert_ne!(r.code, 0, "{remount} succeeded: {r:?}");
    }
    let w = sh(&d, &name, "echo x > /ro/new.txt");
    assert_ne!(w.code, 0, "writable after the remount attempts: {w:?}");
    assert!(!src.path().join("new.txt").exists());
}

#[test]
fn hot_plug_adds_and_removes_binds_on_a_running_container() {
    root_or_skip!("hot_plug_adds_and_removes_binds_on_a_running_container");
    let src = host_dir();
    let file_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = file_dir.path().join("app.conf");
    std::fs::write(&file, "hello from the host\n").unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start();
    let name = unique("dsk");
    d.ok(&["launch", "busybox", &name]);
    let pid = d.init_pid(&name);
    let source = format!("source={}", path_str(src.path()));
    add_device(
        &d,
        &name,
        "data",
        &[&source, "path=/srv/data", "shift=true"],
    );
    assert_eq!(sh_ok(&d, &name, "stat -c %u /srv/data/user.txt"), "1000");
    // A single file, read-only (the locked path of the hot-plug), at a new path.
    let fsource = format!("source={}", path_str(&file));
    add_device(
        &d,
        &name,
        "conf",
        &[&fsource, "path=/etc/app/app.conf", "readonly=true"],
    );
    assert_eq!(
        sh_ok(&d, &name, "cat /etc/app/app.conf"),
        "hello from the host"
    );
    assert_ne!(sh(&d, &name, "echo x >> /etc/app/app.conf").code, 0);
    // The mount point was made for the container's root.
    assert_eq!(sh_ok(&d, &name, "stat -c %u /etc/app"), "0");
    d.ok(&["config", "device", "remove", &name, "data", "conf"]);
    assert_eq!(sh_ok(&d, &name, "ls /srv/data | wc -l"), "0", "unmounted");
    assert_eq!(sh_ok(&d, &name, "cat /etc/app/app.conf | wc -c"), "0");
    assert_eq!(d.init_pid(&name), pid, "the container was not restarted");
    assert_eq!(status(&d, &name), "Running");
    // Through a profile the instance uses, too.
    d.ok(&["profile", "create", "disks"]);
    d.ok(&[
        "profile", "device", "add", "disks", "pdata", "disk", &source, "path=/p",
    ]);
    d.ok(&["profile", "add", &name, "disks"]);
    assert_eq!(sh_ok(&d, &name, "cat /p/root.txt"), "root");
    d.ok(&["profile", "device", "remove", "disks", "pdata"]);
    assert_eq!(sh_ok(&d, &name, "ls /p | wc -l"), "0");
    assert_eq!(d.init_pid(&name), pid);
}

#[test]
fn bad_sources_are_refused_and_optional_ones_skipped() {
    root_or_skip!("bad_sources_are_refused_and_optional_ones_skipped");
    let d = Daemon::start();
    let name = unique("dsk");
    d.ok(&["init", "busybox", &name]);
    let patch = |dev: &str| {
        d.http(
            "PATCH",
            &format!("/1.0/instances/{name}"),
            Some(&format!(r#"{{"devices":{{"d":{dev}}}}}"#)),
        )
    };
    let state = path_str(d.path()).to_string();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            format!(r#"{{"type":"disk","source":"{state}/containers","path":"/x"}}"#),
            "state directory",
        ),
        (
            r#"{"type":"disk","source":"/proc/1","path":"/x"}"#.to_string(),
            "/proc",
        ),
        (
            r#"{"type":"disk","source":"/","path":"/x"}"#.to_string(),
            "whole filesystem",
        ),
        (
            r#"{"type":"disk","source":"/nonexistent-ctl-disk","path":"/x"}"#.to_string(),
            "does not exist",
        ),
        (
            r#"{"type":"disk","source":"/srv","path":"x"}"#.to_string(),
            "absolute",
        ),
        (
            r#"{"type":"disk","source":"/srv","path":"/a/../b"}"#.to_string(),
            "..",
        ),
        (
            r#"{"type":"disk","source":"/srv","path":"/x","bogus":"1"}"#.to_string(),
            "bogus",
        ),
        (
            format!(
                r#"{{"type":"disk","source":"{}","path":"/x","limits.read":"10MB"}}"#,
                path_str(shm.path())
            ),
            "no block device",
        ),
        (
            r#"{"type":"disk","pool":"default","source":"vol1","path":"/x"}"#.to_string(),
            "storage volume \"vol1\" not found in pool \"default\"",
        ),
        (
            r#"{"type":"disk","pool":"nopool","source":"vol1","path":"/x"}"#.to_string(),
            "storage pool \"nopool\" not found",
        ),
    ];
    for (dev, words) in &cases {
        let (code, v) = patch(dev);
        let msg = v["error"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{dev}: {v}");
        assert!(msg.contains(words), "{dev}: {msg:?} lacks {words:?}");
    }
    // Two devices on one path.
    let (code, v) = d.http(
        "PATCH",
        &format!("/1.0/instances/{name}"),
        Some(
            r#"{"devices":{"a":{"type":"disk","source":"/srv","path":"/x"},"b":{"type":"disk","source":"/srv","path":"/x/"}}}"#,
        ),
    );
    assert_eq!(code, 400, "{v}");
    // Nothing was recorded.
    let (_, inst) = d.http("GET", &format!("/1.0/instances/{name}"), None);
    assert!(inst["metadata"]["devices"].get("d").is_none(), "{inst}");
    // Not required: the instance starts without it.
    add_device(
        &d,
        &name,
        "opt",
        &[
            "source=/nonexistent-ctl-disk",
            "path=/opt/x",
            "required=false",
        ],
    );
    d.ok(&["start", &name]);
    assert_eq!(status(&d, &name), "Running");
    assert_ne!(sh(&d, &name, "test -e /opt/x").code, 0, "skipped, not made");
}

#[test]
fn the_lxc_client_adds_a_disk() {
    root_or_skip!("the_lxc_client_adds_a_disk");
    let src = host_dir();
    let d = Daemon::start();
    let Some(lxc) = Cli::lxc(&d) else {
        return;
    };
    let name = unique("dsk");
    d.ok(&["launch", "busybox", &name]);
    let source = format!("source={}", path_str(src.path()));
    lxc.ok(&[
        "config",
        "device",
        "add",
        &name,
        "data",
        "disk",
        &source,
        "path=/data",
    ]);
    assert_eq!(sh_ok(&d, &name, "cat /data/user.txt"), "user");
    let shown = lxc.ok(&["config", "device", "show", &name]);
    assert!(shown.contains("path: /data"), "{shown}");
    lxc.ok(&["config", "device", "remove", &name, "data"]);
    assert_eq!(sh_ok(&d, &name, "ls /data | wc -l"), "0");
}

/// A loop device with an ext4 filesystem mounted in a temp dir; detached and unmounted on
/// drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    device: String,
    mnt: PathBuf,
}

impl LoopFs {
    fn new() -> LoopFs {
        let dir = tempfile::Builder::new()
            .prefix("ctl-disk-loop-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"));
        let img = dir.path().join("disk.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap_or_else(|e| panic!("{e}"));
        let f = std::fs::File::create(&img).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(32 << 20).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .unwrap_or_else(|e| panic!("losetup: {e}"));
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !device.is_empty(),
            "losetup: {out:?}"
        );
        // From here on, drop cleans up.
        let fs = LoopFs {
            _dir: dir,
            device,
            mnt,
        };
        let run = |cmd: &mut Command| {
            let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(o.status.success(), "{cmd:?}: {o:?}");
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F", &fs.device]));
        run(Command::new("mount").arg(&fs.device).arg(&fs.mnt));
        std::fs::write(fs.mnt.join("data.txt"), "on loop\n").unwrap_or_else(|e| panic!("{e}"));
        fs
    }

    /// `MAJ:MIN` of the loop device.
    fn dev(&self) -> String {
        std::fs::read_to_string(format!(
            "/sys/class/block/{}/dev",
            self.device.trim_start_matches("/dev/")
        ))
        .unwrap_or_default()
        .trim()
        .to_string()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// The container's I/O rules as the cgroup shows them (blkio on v1 and hybrid hosts, io.max
/// on v2).
fn io_rules(d: &Daemon, name: &str) -> String {
    let dir = d.cgroup_dir("blkio", name);
    let files: &[&str] = if dir.join("io.max").exists() {
        &["io.max"]
    } else {
        &[
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_iops_device",
        ]
    };
    files
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("")
}

#[test]
fn io_limits_become_cgroup_rules_for_the_backing_device() {
    root_or_skip!("io_limits_become_cgroup_rules_for_the_backing_device");
    let lo = LoopFs::new();
    let d = Daemon::start();
    let name = unique("dsk");
    d.ok(&["launch", "busybox", &name]);
    let dev = lo.dev();
    assert!(!dev.is_empty(), "loop device number");
    let source = format!("source={}", path_str(&lo.mnt));
    add_device(
        &d,
        &name,
        "fast",
        &[
            &source,
            "path=/loop",
            "limits.read=10MB",
            "limits.write=100iops",
        ],
    );
    assert_eq!(sh_ok(&d, &name, "cat /loop/data.txt"), "on loop");
    let rules = io_rules(&d, &name);
    let v1 = rules.contains(&format!("{dev} 10000000")) && rules.contains(&format!("{dev} 100"));
    let v2 = rules.contains(&format!("{dev} rbps=10000000 wbps=max riops=max wiops=100"));
    assert!(v1 || v2, "no rule for {dev}: {rules:?}");
    // Kept across a restart (the start path writes them with the cgroup).
    d.ok(&["restart", &name]);
    assert!(
        io_rules(&d, &name).contains(&dev),
        "{}",
        io_rules(&d, &name)
    );
    // Removing the device lifts them.
    d.ok(&["config", "device", "remove", &name, "fast"]);
    let rules = io_rules(&d, &name);
    assert!(!rules.contains(&format!("{dev} 10000000")), "{rules:?}");
    assert!(!rules.contains("rbps=10000000"), "{rules:?}");
}
