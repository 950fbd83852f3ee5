//! End-to-end tests of the local Debian builder: `debian/bookworm` built with debootstrap
//! from the host's apt mirror (or taken from the shared build cache), booted with its real
//! sysvinit, templated per container, stopped cleanly through its init; the progress the
//! create operation reports; aliases; and what an unknown suite or a failing build leaves
//! (nothing). Run as root (`CTL_REQUIRE_ALL=1` makes a non-root run fail instead of
//! skipping). The first run of a day runs debootstrap (about a minute or two); later runs on
//! the same machine use the cache in [`ctl_tests::build_cache`].

use std::path::Path;
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, require_root, unique, wait_until};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// Mount points at or below `dir` in this process's mount table.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// The fingerprint an alias points at.
fn alias_target(d: &Daemon, alias: &str) -> String {
    let (code, v) = d.http("GET", &format!("/1.0/images/aliases/{alias}"), None);
    assert_eq!(code, 200, "{alias}: {v}");
    v["metadata"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The names in a directory (none when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Create (and start) `name` from `alias` through the API, polling the operation while it
/// runs; returns the operation's final JSON and every `(stage, percent)` it reported.
fn create_watching(
    d: &Daemon,
    name: &str,
    alias: &str,
) -> (serde_json::Value, Vec<(String, Option<u64>)>) {
    let body = format!(
        r#"{{"name":"{name}","source":{{"type":"image","alias":"{alias}"}},"start":true}}"#
    );
    let (code, v) = d.http("POST", "/1.0/instances", Some(&body));
    assert_eq!(code, 202, "{v}");
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    assert!(op.starts_with("/1.0/operations/"), "{v}");
    let mut seen: Vec<(String, Option<u64>)> = Vec::new();
    // A cold debootstrap on a busy 2-core machine can take minutes.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let (code, v) = d.http("GET", &op, None);
        assert_eq!(code, 200, "{v}");
        let md = &v["metadata"];
        let p = &md["metadata"]["progress"];
        if let Some(stage) = p["stage"].as_str() {
            let entry = (stage.to_string(), p["percent"].as_u64());
            if seen.last() != Some(&entry) {
                seen.push(entry);
            }
        }
        if md["status"] != "Running" {
            return (md.clone(), seen);
        }
        assert!(
            Instant::now() < deadline,
            "create of {alias} still running after 15 min; seen {seen:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn debian_bookworm_builds_boots_its_init_and_stops_cleanly() {
    root_or_skip!("debian_bookworm_builds_boots_its_init_and_stops_cleanly");
    let d = Daemon::start();
    let c1 = unique("deb");
    let started = Instant::now();
    let (op, seen) = create_watching(&d, &c1, "debian/bookworm");
    let build_time = started.elapsed();
    assert_eq!(op["status"], "Success", "{op}\n{}", d.log());
    let stages: Vec<String> = seen.iter().fold(Vec::new(), |mut acc, (s, _)| {
        if acc.last() != Some(s) {
            acc.push(s.clone());
        }
        acc
    });
    eprintln!("debian/bookworm ready in {build_time:?}; stages: {stages:?}");

    // Progress: stages with percentages, also on a cache hit (unpacking, then packing).
    assert!(
        seen.iter().any(|(_, p)| p.is_some_and(|p| p > 0)),
        "no percentage reported: {seen:?}"
    );
    // (`customising` takes milliseconds: polling need not catch it.)
    for stage in ["unpacking", "packing image"] {
        assert!(stages.iter().any(|s| s == stage), "{stage}: {stages:?}");
    }
    assert!(
        seen.iter()
            .any(|(s, p)| s == "unpacking" && p.is_some_and(|p| p > 0)),
        "{stages:?}"
    );
    let cold = seen.iter().any(|(s, _)| s.starts_with("debootstrap"));
    if cold {
        assert!(stages.iter().any(|s| s == "resolving mirror"), "{stages:?}");
        assert!(
            seen.iter()
                .any(|(s, p)| s == "debootstrap: retrieving packages" && p.is_some()),
            "{stages:?}"
        );
    }

    // The image: aliases of the suite, properties, cached.
    let fp = alias_target(&d, "debian/bookworm");
    assert_eq!(fp.len(), 64);
    assert_eq!(
        alias_target(&d, "debian/12"),
        fp,
        "debian/12 is the same image"
    );
    let (code, img) = d.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(code, 200, "{img}");
    let img = &img["metadata"];
    assert_eq!(img["cached"], true, "{img}");
    let props = &img["properties"];
    assert_eq!(props["os"], "Debian", "{img}");
    assert_eq!(props["release"], "bookworm", "{img}");
    assert_eq!(props["version"], "12", "{img}");
    assert_eq!(props["variant"], "default", "{img}");
    assert!(
        props["description"]
            .as_str()
            .is_some_and(|s| s.starts_with("Debian bookworm ")),
        "{img}"
    );
    assert!(
        d.path()
            .join("images")
            .join(&fp)
            .join("image.tar.zst")
            .is_file()
    );

    // The real init is PID 1 and reached runlevel 2 (rcS and rc 2 ran).
    let mut last = String::new();
    let booted = wait_until(Duration::from_secs(90), || {
        let r = d.ctl(&["exec", &c1, "--", "runlevel"]);
        last = format!("{r:?}");
        r.code == 0 && r.stdout.trim() == "N 2"
    });
    assert!(booted, "runlevel never said N 2: {last}\n{}", d.log());
    assert_eq!(
        d.ok(&["exec", &c1, "--", "cat", "/proc/1/comm"]).trim(),
        "init"
    );
    let os = d.ok(&["exec", &c1, "--", "cat", "/etc/os-release"]);
    assert!(os.contains("VERSION_CODENAME=bookworm"), "{os}");
    assert!(os.contains("ID=debian"), "{os}");
    let console = d.ok(&["console", &c1, "--show-log"]);
    assert!(
        console.contains("Configuring network interfaces"),
        "rcS's networking script did not run:\n{console}"
    );
    assert!(console.contains("Entering runlevel: 2"), "{console}");
    let ps = d.ok(&["exec", &c1, "--", "ps", "-eo", "pid,args"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("getty") && l.contains("console")),
        "no getty on the console: {ps}"
    );
    assert!(!ps.contains("tty1"), "{ps}");

    // Templates: the container's own hostname and hosts entry.
    assert_eq!(
        d.ok(&["exec", &c1, "--", "cat", "/etc/hostname"]),
        format!("{c1}\n")
    );
    let hosts = d.ok(&["exec", &c1, "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("127.0.1.1") && w.next() == Some(c1.as_str())
        }),
        "{hosts}"
    );
    assert_eq!(d.ok(&["exec", &c1, "--", "hostname"]).trim(), c1);
    assert_eq!(
        d.ok(&["exec", &c1, "--", "cat", "/etc/default/locale"]),
        "LANG=C.UTF-8\n"
    );
    // The shared image rootfs is untouched: no hostname baked in.
    assert!(
        !d.path()
            .join("images")
            .join(&fp)
            .join("rootfs/etc/hostname")
            .exists()
    );

    // A second container from the numeric alias shares the image, with its own hostname.
    let c2 = unique("deb");
    d.ok(&["init", "debian/12", &c2]);
    let (_, st) = d.http("GET", &format!("/1.0/instances/{c2}"), None);
    assert_eq!(st["metadata"]["config"]["volatile.base_image"], fp.as_str());
    assert_eq!(
        std::fs::read_to_string(
            d.path()
                .join("containers")
                .join(&c2)
                .join("upper/etc/hostname")
        )
        .unwrap_or_default(),
        format!("{c2}\n")
    );

    // Stop (not forced): SIGPWR → runlevel 0 → the K scripts → halt, well within the timeout.
    let t = Instant::now();
    let stop_issued = std::time::SystemTime::now();
    d.ok(&["stop", &c1]);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "clean stop took {took:?} (the kill timeout is 30 s)\n{}",
        d.log()
    );
    assert!(
        !d.log().contains("clean stop timed out"),
        "the stop fell back to SIGKILL"
    );
    // rc 0 ran its K scripts: K01urandom saved a new random seed during the stop (into the
    // container's own layer). (The console log is not used: its last lines can be lost when
    // the PID namespace ends while they are still in the PTY.)
    let seed = d
        .path()
        .join("containers")
        .join(&c1)
        .join("upper/var/lib/urandom/random-seed");
    let saved = std::fs::metadata(&seed)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
    assert!(
        saved >= stop_issued,
        "the random seed was not saved by rc 0 during the stop ({saved:?} < {stop_issued:?})"
    );
    assert_eq!(d.state(&c1)["status"], "Stopped");
    eprintln!("clean stop took {took:?}");

    // Nothing left mounted by debootstrap, nothing left in the scratch dir.
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    assert_eq!(
        mounts_under(&ctl_tests::build_cache()),
        Vec::<String>::new()
    );
    assert_eq!(names(&d.path().join("tmp")), Vec::<String>::new());
    // It starts again.
    d.ok(&["start", &c1]);
    assert!(wait_until(Duration::from_secs(60), || {
        d.ctl(&["exec", &c1, "--", "runlevel"]).stdout.trim() == "N 2"
    }));
    d.ok(&["delete", "--force", &c1, &c2]);
}

#[test]
fn an_unknown_suite_is_404_with_the_known_sources() {
    root_or_skip!("an_unknown_suite_is_404_with_the_known_sources");
    let d = Daemon::start();
    let body = r#"{"name":"x1","source":{"type":"image","alias":"debian/nosuch"},"start":true}"#;
    let (code, v) = d.http("POST", "/1.0/instances", Some(body));
    assert_eq!(code, 404, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    for known in [
        "debian/nosuch",
        "busybox",
        "debian/bookworm",
        "debian/12",
        "debian/trixie",
    ] {
        assert!(msg.contains(known), "{known} missing in {msg}");
    }
    let (code, _) = d.http("GET", "/1.0/images/aliases/debian/nosuch", None);
    assert_eq!(code, 404);
    let r = d.ctl(&["launch", "debian/nosuch", "x2"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("debian/bookworm"), "{r:?}");
    assert!(d.instances().is_empty());
}

#[test]
fn a_failed_build_leaves_no_image_alias_dir_or_mount() {
    root_or_skip!("a_failed_build_leaves_no_image_alias_dir_or_mount");
    // Its own empty cache, so debootstrap runs, against a mirror nothing answers on.
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cache_dir = cache.path().display().to_string();
    let d = Daemon::start_with(&[
        "--debian-mirror",
        "http://127.0.0.1:9/debian",
        "--build-cache",
        &cache_dir,
    ]);
    let r = d.ctl(&["launch", "debian/bookworm", "f1"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("debootstrap"), "{r:?}");
    assert!(r.stderr.contains("127.0.0.1:9"), "{r:?}");
    let (_, v) = d.http("GET", "/1.0/images", None);
    assert_eq!(v["metadata"], serde_json::json!([]), "{v}");
    let (_, v) = d.http("GET", "/1.0/images/aliases", None);
    assert_eq!(v["metadata"], serde_json::json!([]), "{v}");
    assert!(d.instances().is_empty());
    assert!(
        wait_until(Duration::from_secs(10), || names(&d.path().join("tmp"))
            .is_empty()),
        "left in tmp: {:?}",
        names(&d.path().join("tmp"))
    );
    assert_eq!(names(&d.path().join("images")), Vec::<String>::new());
    assert_eq!(
        names(cache.path()),
        Vec::<String>::new(),
        "no half file in the cache"
    );
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    // A bad mirror flag is refused at start-up.
    let out = std::process::Command::new(ctl_tests::bin_dir().join("ctld"))
        .args(["--dir", &d.path().join("other").display().to_string()])
        .args(["--debian-mirror", "not a url"])
        .output()
        .unwrap_or_else(|e| panic!("ctld: {e}"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mirror"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
