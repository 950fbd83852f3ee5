//! A Debian bookworm container whose init is systemd, unprivileged: it boots to `running`
//! (or `degraded` with no unit failed for lack of a permission), its init is a non-root host
//! user, and it stops cleanly through systemd in well under 3 s.
//!
//! The image is made here as a user would: debootstrap (`minbase` plus `systemd-sysv` and
//! `dbus`) from the host's own apt mirror, packed with a `metadata.yaml`, and imported with
//! `ctl image import`. The tarball is kept in the shared build cache
//! ([`ctl_tests::build_cache`]) per day, so only the first run of a day runs debootstrap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, build_cache, require_root, wait_until};

/// The host's main Debian archive from its apt sources (deb822 `.sources` files and the
/// one-line `sources.list`), leaving out security and updates suites.
fn host_mirror() -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sources" || x == "list")
                && let Ok(t) = std::fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    for text in &texts {
        // One-line form: `deb [opts] URL SUITE COMPONENTS`.
        for l in text.lines().map(str::trim) {
            let words: Vec<&str> = l
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.first() == Some(&"deb")
                && words.len() >= 3
                && words[1].starts_with("http")
                && !words[2].contains('-')
            {
                return Some(words[1].to_string());
            }
        }
        // deb822: a stanza with `URIs:` and a plain suite.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites.split_whitespace().any(|s| !s.contains('-'))
                && let Some(uri) = uris.split_whitespace().find(|u| u.starts_with("http"))
            {
                return Some(uri.to_string());
            }
        }
    }
    None
}

fn today() -> String {
    let out = Command::new("date").args(["-u", "+%Y%m%d"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Detach whatever debootstrap left mounted below `dir`.
fn unmount_below(dir: &Path) {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// The systemd image tarball: from the cache, or made now.
fn systemd_image() -> PathBuf {
    let cache = build_cache();
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("{}: {e}", cache.display()));
    let tarball = cache.join(format!("systemd-bookworm-{}.tar", today()));
    if tarball.is_file() {
        return tarball;
    }
    let mirror = host_mirror().unwrap_or_else(|| panic!("no Debian mirror in /etc/apt"));
    let work = tempfile::Builder::new()
        .prefix("ctl-systemd-image-")
        .tempdir_in(&cache)
        .unwrap_or_else(|e| panic!("{e}"));
    let rootfs = work.path().join("rootfs");
    let started = Instant::now();
    let st = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd-sysv,dbus",
            "bookworm",
        ])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(std::process::Stdio::null())
        .status();
    unmount_below(work.path());
    assert!(
        st.is_ok_and(|s| s.success()),
        "debootstrap from {mirror} failed"
    );
    eprintln!(
        "debootstrap with systemd: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // A container gets its hostname and machine id at boot.
    let _ = std::fs::remove_file(rootfs.join("etc/hostname"));
    let _ = std::fs::write(rootfs.join("etc/machine-id"), "");
    std::fs::write(
        work.path().join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  description: Debian bookworm with systemd\n  os: debian\n  release: bookworm\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let part = work.path().join("image.tar");
    let st = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(&part)
        .arg("-C")
        .arg(work.path())
        .args(["metadata.yaml", "rootfs"])
        .status();
    assert!(st.is_ok_and(|s| s.success()), "tar failed");
    std::fs::rename(&part, &tarball).unwrap_or_else(|e| panic!("{e}"));
    tarball
}

#[test]
fn systemd_boots_and_stops_in_an_unprivileged_container() {
    if !require_root("systemd_boots_and_stops_in_an_unprivileged_container") {
        return;
    }
    let image = systemd_image();
    let d = Daemon::start();
    d.ok(&[
        "image",
        "import",
        image.to_str().unwrap_or_default(),
        "--alias",
        "sysd",
    ]);
    d.ok(&["launch", "sysd", "s1"]);
    let pid = d.init_pid("s1");
    let uid = d.init_host_uid("s1");
    assert!(uid >= 100_000, "init runs as host uid {uid}");
    // Exec'd as /sbin/init, systemd names itself a moment later.
    let mut comm = String::new();
    let named = wait_until(Duration::from_secs(10), || {
        comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim() == "systemd"
    });
    assert!(named, "PID 1 is {comm:?}");
    // Boot to the end of its transaction.
    let mut state = String::new();
    let booted = wait_until(Duration::from_secs(90), || {
        let r = d.ctl(&["exec", "s1", "--", "systemctl", "is-system-running"]);
        state = r.stdout.trim().to_string();
        state == "running" || state == "degraded"
    });
    let failed = d.ctl(&[
        "exec",
        "s1",
        "--",
        "systemctl",
        "--failed",
        "--plain",
        "--no-legend",
        "--no-pager",
    ]);
    assert!(
        booted,
        "systemd state {state:?}; failed units:\n{}",
        failed.stdout
    );
    // No unit may have failed for want of a permission.
    for unit in failed
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        let status = d.ctl(&[
            "exec",
            "s1",
            "--",
            "systemctl",
            "status",
            "--no-pager",
            unit,
        ]);
        for word in [
            "Permission denied",
            "Operation not permitted",
            "Read-only file system",
        ] {
            assert!(
                !status.stdout.contains(word),
                "{unit} failed: {}",
                status.stdout
            );
        }
    }
    // systemd made its own cgroups in the one delegated to it, on every hierarchy.
    let cg = d.ok(&["exec", "s1", "--", "cat", "/proc/1/cgroup"]);
    assert!(
        cg.lines().any(|l| l.ends_with("name=systemd:/init.scope")),
        "{cg}"
    );
    // A clean stop through systemd (SIGRTMIN+3, halt, as LXD sends it), not the SIGKILL at the timeout.
    let t = Instant::now();
    d.ok(&["stop", "s1", "--timeout", "20"]);
    let took = t.elapsed();
    eprintln!("systemd container stopped in {:.2} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    // And it comes back.
    d.ok(&["start", "s1"]);
    assert!(wait_until(Duration::from_secs(60), || {
        let r = d.ctl(&["exec", "s1", "--", "systemctl", "is-system-running"]);
        matches!(r.stdout.trim(), "running" | "degraded")
    }));
    d.ok(&["delete", "-f", "s1"]);
}
