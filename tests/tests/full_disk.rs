//! A full disk under the state directory (a small tmpfs of the test's own): every request
//! that needs space fails with an error that says so, and leaves nothing half-made; one that
//! did its work (a stop) says so; once space is freed, everything works again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctl_tests::{Daemon, require_root};

/// A tmpfs mounted for this test, unmounted (lazily) when dropped, after the daemon.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("ctl-full-")
            .tempdir()
            .unwrap_or_else(|e| panic!("{e}"))
            .keep();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "ctl-full",
            ])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount a tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fill the filesystem at `dir` with `dir/filler` until it refuses more; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let chunk = vec![0x5au8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Whatever still fits in smaller pieces too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    path
}

/// The names of files under `dir` (recursively) whose name contains `needle`.
fn files_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_full_disk_gives_clear_errors_leaves_nothing_half_made_and_passes() {
    if !require_root("a_full_disk_gives_clear_errors_leaves_nothing_half_made_and_passes") {
        return;
    }
    let disk = Tmpfs::mount("64m");
    let d = Daemon::start_in(&disk.0, &[]);
    d.ok(&["launch", "busybox", "c1"]);
    d.ok(&["exec", "c1", "--", "sh", "-c", "echo old > /root/data"]);
    let upload = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(upload.path(), vec![7u8; 4 << 20]).unwrap_or_else(|e| panic!("{e}"));
    let images_before = d.ok(&["image", "list", "--format", "csv"]);

    let filler = fill(&disk.0);
    let no_space = |r: &ctl_tests::Run| {
        let e = r.stderr.to_lowercase();
        r.code != 0 && (e.contains("no space left") || e.contains("disk is full"))
    };

    // A launch: refused with the reason, no record, no directory.
    let r = d.ctl(&["launch", "busybox", "c2"]);
    println!("launch on a full disk: {}", r.stderr.trim());
    assert!(no_space(&r), "launch on a full disk: {r:?}");
    assert_eq!(d.instances(), vec!["c1"]);
    let dir = d.path().join("containers/c2");
    assert!(!dir.exists(), "{} left", dir.display());

    // A push over an existing file: refused, the old content kept, no part left.
    let target = "c1/root/data";
    let r = d.ctl(&["file", "push", &upload.path().display().to_string(), target]);
    println!("push on a full disk: {}", r.stderr.trim());
    assert!(no_space(&r), "push on a full disk: {r:?}");
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/data"]).trim(),
        "old"
    );
    let parts = files_named(&d.path().join("containers/c1"), "ctl-upload");
    assert!(parts.is_empty(), "partial uploads left: {parts:?}");

    // A stop: it did its work (the container is stopped), so it says so, even though the
    // record of it could not be written.
    let r = d.ctl(&["stop", "-f", "c1"]);
    assert_eq!(
        r.code, 0,
        "the container stopped, the stop must say so: {r:?}"
    );
    assert_eq!(d.state("c1")["status"], "Stopped");

    // A publish: refused, no image and no image directory.
    let r = d.ctl(&["publish", "c1", "--alias", "full"]);
    println!("publish on a full disk: {}", r.stderr.trim());
    assert!(no_space(&r), "publish on a full disk: {r:?}");
    assert_eq!(d.ok(&["image", "list", "--format", "csv"]), images_before);
    let tmp_left: Vec<_> = std::fs::read_dir(d.path().join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp_left.is_empty(), "scratch left: {tmp_left:?}");

    // A start: refused with the reason, and nothing runs.
    let r = d.ctl(&["start", "c1"]);
    println!("start on a full disk: {}", r.stderr.trim());
    assert!(no_space(&r), "start on a full disk: {r:?}");
    assert_eq!(d.state("c1")["status"], "Stopped");
    let cgroups: Vec<_> = ctl_tests::cgroup_parents(&d.cgroup_parent)
        .into_iter()
        .filter(|p| p.join("c1").exists())
        .collect();
    assert!(
        cgroups.is_empty(),
        "cgroups left by the failed start: {cgroups:?}"
    );

    // Space again: everything works.
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    d.ok(&["launch", "busybox", "c2"]);
    d.ok(&["start", "c1"]);
    d.ok(&["file", "push", &upload.path().display().to_string(), target]);
    let size = d.ok(&["exec", "c1", "--", "wc", "-c", "/root/data"]);
    assert!(size.trim().starts_with(&(4u64 << 20).to_string()), "{size}");
    d.ok(&["stop", "-f", "c2"]);
    d.ok(&["publish", "c2", "--alias", "after"]);
    d.ok(&["delete", "-f", "c1", "c2"]);
}
