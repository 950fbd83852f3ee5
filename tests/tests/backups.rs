//! Instance backups end to end, as root, on unprivileged containers: `ctl export` → delete →
//! `ctl import` brings the instance back with its files, owners (inside ids kept, host ids
//! shifted into the new map) and snapshots; LXD's `lxc` and Incus' `incus` clients do the
//! same round trip; hostile backup tarballs are 400s that leave nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Duration;

use ctl_tests::{Daemon, require_root, unique, wait_until};

fn sh(d: &Daemon, name: &str, script: &str) -> String {
    d.ok(&["exec", name, "--", "sh", "-c", script])
}

/// `tar -tv` of a tarball, numeric owners.
fn listing(file: &Path) -> String {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("tar: {e}"));
    assert!(out.status.success(), "tar -tvf {}", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Write a file in the container, give it to uid/gid 1000 inside, snapshot, change things
/// after the snapshot. What [`check_restored`] expects.
fn prepare(d: &Daemon, name: &str) {
    d.ok(&["launch", "busybox", name]);
    sh(
        d,
        name,
        "echo one > /root/a && chown 1000:1000 /root/a && rm /bin/vi",
    );
    d.ok(&["snapshot", "create", name, "snap0"]);
    sh(d, name, "echo two > /root/b && echo changed > /root/a");
}

/// The imported instance runs with both files, the owners inside as they were, the upper
/// layer's host owners in its own map, the deleted image file still deleted, and its
/// snapshot restores.
fn check_restored(d: &Daemon, name: &str) {
    assert_eq!(d.state(name)["status"], "Running", "{name} boots");
    assert_eq!(sh(d, name, "cat /root/a").trim(), "changed");
    assert_eq!(sh(d, name, "cat /root/b").trim(), "two");
    assert_eq!(sh(d, name, "stat -c %u:%g /root/a").trim(), "1000:1000");
    assert_eq!(sh(d, name, "stat -c %u:%g /root/b").trim(), "0:0");
    assert_eq!(
        sh(d, name, "ls /bin/vi 2>/dev/null || echo gone").trim(),
        "gone"
    );
    let root = d.init_host_uid(name);
    assert_ne!(root, 0, "unprivileged");
    let upper = d.path().join("containers").join(name).join("upper/root/a");
    let md = std::fs::metadata(&upper).unwrap_or_else(|e| panic!("{}: {e}", upper.display()));
    assert_eq!(md.uid(), root + 1000, "host owner shifted into the new map");
    d.ok(&["restore", name, "snap0"]);
    assert_eq!(sh(d, name, "cat /root/a").trim(), "one");
    assert_eq!(sh(d, name, "stat -c %u /root/a").trim(), "1000");
    assert_eq!(
        sh(d, name, "ls /root/b 2>/dev/null || echo gone").trim(),
        "gone"
    );
}

#[test]
fn ctl_export_delete_import_brings_the_instance_back() {
    if !require_root("ctl_export_delete_import_brings_the_instance_back") {
        return;
    }
    let d = Daemon::start();
    let name = unique("bk");
    prepare(&d, &name);
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = out.path().join("c.tar.gz");
    let said = d.ok(&["export", &name, file.to_str().unwrap_or_default()]);
    assert!(said.contains("exported"), "{said}");
    // The server's copy is gone again.
    let (_, kept) = d.http("GET", &format!("/1.0/instances/{name}/backups"), None);
    assert_eq!(kept["metadata"], serde_json::json!([]), "{kept}");
    // The tarball is Incus' layout, owners as the container sees them.
    let tv = listing(&file);
    assert!(tv.contains("backup/index.yaml"), "{tv}");
    assert!(tv.contains("backup/container/backup.yaml"), "{tv}");
    assert!(tv.contains("backup/snapshots/snap0/rootfs/root/a"), "{tv}");
    assert!(tv.contains("backup/container/rootfs/bin/busybox"), "{tv}");
    let a = tv
        .lines()
        .find(|l| l.ends_with("backup/container/rootfs/root/a"))
        .unwrap_or_default();
    assert!(a.contains(" 1000/1000 "), "inside ids in the tarball: {a}");
    assert!(
        !tv.contains("rootfs/bin/vi"),
        "deleted files stay deleted: {tv}"
    );

    d.ok(&["delete", "-f", &name]);
    assert!(!d.instances().contains(&name));
    let said = d.ok(&["import", file.to_str().unwrap_or_default()]);
    assert!(said.contains(&name), "{said}");
    d.ok(&["start", &name]);
    check_restored(&d, &name);

    // The same backup again is a conflict; under another name it is a second instance.
    let again = d.ctl(&["import", file.to_str().unwrap_or_default()]);
    assert!(
        again.code != 0 && again.stderr.contains("already exists"),
        "{again:?}"
    );
    let other = unique("bk");
    d.ok(&["import", file.to_str().unwrap_or_default(), &other]);
    d.ok(&["start", &other]);
    assert_eq!(sh(&d, &other, "cat /root/b").trim(), "two");
    assert_eq!(sh(&d, &other, "stat -c %u /root/a").trim(), "1000");

    // Server-side backups: create, list, rename, export, delete; an instance-only one has
    // no snapshot; an uncompressed one is a bare tar.
    d.ok(&[
        "backup",
        "create",
        &other,
        "nightly",
        "--instance-only",
        "--compression",
        "none",
    ]);
    let list = d.ok(&["backup", "list", &other, "--format", "csv"]);
    assert!(list.lines().any(|l| l.starts_with("nightly,")), "{list}");
    let (code, _) = d.http(
        "POST",
        &format!("/1.0/instances/{other}/backups/nightly"),
        Some(r#"{"name":"weekly"}"#),
    );
    assert_eq!(code, 202);
    let (code, got) = d.http(
        "GET",
        &format!("/1.0/instances/{other}/backups/weekly"),
        None,
    );
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["metadata"]["instance_only"], true, "{got}");
    let raw = out.path().join("weekly.tar");
    let st = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&raw)
        .arg("--unix-socket")
        .arg(d.socket())
        .arg(format!(
            "http://localhost/1.0/instances/{other}/backups/weekly/export"
        ))
        .status()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(st.success());
    let tv = listing(&raw);
    assert!(!tv.contains("backup/snapshots/"), "{tv}");
    assert!(tv.contains("backup/container/rootfs/root/b"), "{tv}");
    d.ok(&["backup", "delete", &other, "weekly"]);
    let (code, _) = d.http(
        "GET",
        &format!("/1.0/instances/{other}/backups/weekly"),
        None,
    );
    assert_eq!(code, 404);
    let files = std::fs::read_dir(d.path().join("containers").join(&other).join("backups"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(files, 0, "the tarball went with the record");
}

/// A client (`lxc` or `incus`) pointed at the daemon.
struct Client {
    bin: PathBuf,
    env: [(&'static str, PathBuf); 2],
}

impl Client {
    fn ok(&self, args: &[&str]) -> String {
        let o = Command::new(&self.bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_os_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.bin.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success(),
            "{} {args:?}: {text}",
            self.bin.display()
        );
        text
    }
}

fn round_trip_with(d: &Daemon, client: &Client) {
    let name = unique("bk");
    prepare(d, &name);
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = out.path().join("b.tar.gz");
    client.ok(&["export", &name, file.to_str().unwrap_or_default()]);
    assert!(listing(&file).contains("backup/index.yaml"));
    let (_, kept) = d.http("GET", &format!("/1.0/instances/{name}/backups"), None);
    assert_eq!(
        kept["metadata"],
        serde_json::json!([]),
        "deleted after: {kept}"
    );
    client.ok(&["delete", "-f", &name]);
    client.ok(&["import", file.to_str().unwrap_or_default()]);
    client.ok(&["start", &name]);
    check_restored(d, &name);
}

#[test]
fn lxc_exports_and_imports() {
    if !require_root("lxc_exports_and_imports") {
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
    let lxc = Client {
        bin: PathBuf::from("lxc"),
        env: [
            ("LXD_DIR", d.path().to_path_buf()),
            ("LXD_CONF", conf.path().to_path_buf()),
        ],
    };
    round_trip_with(&d, &lxc);
}

#[test]
fn incus_exports_and_imports() {
    if !require_root("incus_exports_and_imports") {
        return;
    }
    let incus = std::env::var_os("CTL_INCUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ctl-tests/incus-client/usr/bin/incus"));
    if !incus.is_file() {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "{} is missing (.ci/run unpacks it)",
            incus.display()
        );
        eprintln!("SKIP: no incus client at {}", incus.display());
        return;
    }
    let d = Daemon::start();
    let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let client = Client {
        bin: incus,
        env: [
            ("INCUS_DIR", d.path().to_path_buf()),
            ("INCUS_CONF", conf.path().to_path_buf()),
        ],
    };
    round_trip_with(&d, &client);
}

// ----- hand-made tarballs (ustar byte by byte, as tests/images.rs makes them: tar tools
// refuse to write hostile names)

enum Kind {
    File(String),
    Dir,
    Symlink(String),
    HardLink(String),
    CharDev,
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{value:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

fn tar(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind) in entries {
        let mut h = [0u8; 512];
        assert!(name.len() <= 100, "{name}");
        h[..name.len()].copy_from_slice(name.as_bytes());
        let (mode, size, flag, link) = match kind {
            Kind::File(data) => (0o644, data.len(), b'0', ""),
            Kind::Dir => (0o755, 0, b'5', ""),
            Kind::Symlink(t) => (0o777, 0, b'2', t.as_str()),
            Kind::HardLink(t) => (0o644, 0, b'1', t.as_str()),
            Kind::CharDev => (0o666, 0, b'3', ""),
        };
        octal(&mut h[100..108], mode);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size as u64);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(kind, Kind::CharDev) {
            octal(&mut h[329..337], 8);
            octal(&mut h[337..345], 0);
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        if let Kind::File(data) = kind {
            out.extend_from_slice(data.as_bytes());
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn index(name: &str, snapshots: &[&str]) -> (String, Kind) {
    let list: String = snapshots.iter().map(|s| format!("- {s}\n")).collect();
    let snaps = if snapshots.is_empty() {
        String::new()
    } else {
        format!("snapshots:\n{list}")
    };
    (
        "backup/index.yaml".into(),
        Kind::File(format!(
            "name: {name}\nbackend: dir\npool: default\n{snaps}type: container\nconfig:\n  container:\n    name: {name}\n    architecture: x86_64\n    profiles: [default]\n"
        )),
    )
}

fn file(path: &str, data: &str) -> (String, Kind) {
    (path.into(), Kind::File(data.into()))
}

/// POST a backup tarball the way the clients do; `(status, body)`.
fn post_backup(d: &Daemon, data: &[u8], name: Option<&str>) -> (u16, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("b.tar");
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}", "-X", "POST"])
        .arg("--unix-socket")
        .arg(d.socket())
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", path.display()));
    if let Some(n) = name {
        c.args(["-H", &format!("X-Incus-name: {n}")]);
    }
    let out = c
        .arg("http://localhost/1.0/instances")
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hostile_backups_are_refused_and_leave_nothing() {
    if !require_root("hostile_backups_are_refused_and_leave_nothing") {
        return;
    }
    let d = Daemon::start();
    // A victim directory outside, and an existing instance another backup aims at.
    let victim = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let v = victim.path().display().to_string();
    d.ok(&["init", "busybox", "existing"]);
    let existing_upper = d.path().join("containers/existing/upper");
    let before = entries(&existing_upper);
    let up = "../".repeat(10);
    let root = "backup/container/rootfs";
    let cases: Vec<(&str, Vec<(String, Kind)>)> = vec![
        (
            "symlink then write",
            vec![
                index("h1", &[]),
                (format!("{root}/evil"), Kind::Symlink(v.clone())),
                file(&format!("{root}/evil/pwned"), "x"),
            ],
        ),
        (
            "symlink to / then a directory",
            vec![
                index("h2", &[]),
                (format!("{root}/evil"), Kind::Symlink("/".into())),
                (format!("{root}/evil/etc/"), Kind::Dir),
            ],
        ),
        (
            "dot-dot escape",
            vec![
                index("h3", &[]),
                file(&format!("{root}/{up}{}/pwned", &v[1..]), "x"),
            ],
        ),
        (
            "hard link to the host",
            vec![
                index("h4", &[]),
                (
                    format!("{root}/passwd"),
                    Kind::HardLink("/etc/passwd".into()),
                ),
            ],
        ),
        (
            "hard link from a snapshot into the container's rootfs",
            vec![
                index("h5", &["s1"]),
                file(&format!("{root}/x"), "x"),
                (
                    "backup/snapshots/s1/rootfs/x".into(),
                    Kind::HardLink(format!("{root}/x")),
                ),
            ],
        ),
        (
            "an index naming another instance's path",
            vec![index("../existing", &[]), file(&format!("{root}/x"), "x")],
        ),
        (
            "a snapshot named as a path",
            vec![
                index("h7", &["../../existing"]),
                file(&format!("{root}/x"), "x"),
            ],
        ),
        (
            "a snapshot directory that escapes",
            vec![
                index("h8", &[]),
                file(&format!("{root}/x"), "x"),
                file("backup/snapshots/../../../existing/rootfs/x", "x"),
            ],
        ),
        ("no index", vec![file(&format!("{root}/x"), "x")]),
        ("no rootfs", vec![index("h10", &[])]),
        (
            "a rootfs that is a symlink",
            vec![index("h11", &[]), (root.into(), Kind::Symlink("/".into()))],
        ),
    ];
    for (says, entries_) in &cases {
        let (code, body) = post_backup(&d, &tar(entries_), None);
        assert_eq!(code, 400, "{says}: {body}");
        assert!(entries(victim.path()).is_empty(), "{says} wrote outside");
    }
    // An index naming an instance that exists is a conflict, never a write into it.
    let (code, body) = post_backup(
        &d,
        &tar(&[index("existing", &[]), file(&format!("{root}/x"), "x")]),
        None,
    );
    assert_eq!(code, 409, "{body}");
    // A rename header that is a path is refused too.
    let (code, body) = post_backup(
        &d,
        &tar(&[index("fine", &[]), file(&format!("{root}/x"), "x")]),
        Some("../existing"),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        entries(&existing_upper),
        before,
        "the other instance is untouched"
    );
    assert_eq!(d.instances(), ["existing"], "nothing half-created");
    assert_eq!(
        entries(&d.path().join("containers")),
        ["existing"],
        "no directory left"
    );
    let tmp = d.path().join("tmp");
    assert!(
        wait_until(Duration::from_secs(10), || entries(&tmp).is_empty()),
        "no scratch left: {:?}",
        entries(&tmp)
    );

    // A leading slash is dropped (as image import does) and a device node is not made;
    // the rest imports.
    let (code, body) = post_backup(
        &d,
        &tar(&[
            index("slashes", &[]),
            (format!("/{root}/"), Kind::Dir),
            file(&format!("/{root}/hello"), "hi"),
            (format!("{root}/sda"), Kind::CharDev),
            file(&format!("{v}/pwned"), "x"),
        ]),
        None,
    );
    assert_eq!(code, 202, "{body}");
    let op = body["operation"].as_str().unwrap_or_default().to_string();
    let (_, done) = d.http("GET", &format!("{op}/wait?timeout=60"), None);
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    let upper = d.path().join("containers/slashes/upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("hello")).unwrap_or_default(),
        "hi"
    );
    assert!(!upper.join("sda").exists(), "no device node");
    assert!(entries(victim.path()).is_empty());
}
