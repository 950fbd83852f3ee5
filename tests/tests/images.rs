//! End-to-end tests of image tarballs: export, import (unified and split, every
//! compression), publish, and what a hostile or damaged tarball can and cannot do. Each test
//! owns its daemons on temp dirs; run as root (`CTL_REQUIRE_ALL=1` makes a non-root run fail
//! instead of skipping).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ctl_tests::{Daemon, require_root, wait_until};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// sha256 of files, one after the other.
fn sha256(files: &[&Path]) -> String {
    let mut cat = Vec::new();
    for f in files {
        cat.extend(std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())));
    }
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&cat);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The fingerprint an alias points at (a built-in one is built on first lookup).
fn alias_target(d: &Daemon, alias: &str) -> String {
    let (code, v) = d.http("GET", &format!("/1.0/images/aliases/{alias}"), None);
    assert_eq!(code, 200, "{v}");
    let fp = v["metadata"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(fp.len(), 64, "{v}");
    fp
}

/// Every stored image's fingerprint.
fn fingerprints(d: &Daemon) -> Vec<String> {
    let (_, v) = d.http("GET", "/1.0/images", None);
    v["metadata"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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

/// What a tree is: every path with its type, mode, owner, size and link target.
fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            let link = std::fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let size = if md.is_file() { md.len() } else { 0 };
            out.push(format!(
                "{rel} {:o} {}:{} {size} {link}",
                md.mode(),
                md.uid(),
                md.gid()
            ));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `ctl image export` into `dir`; the one file written.
fn export(d: &Daemon, image: &str, dir: &Path, compression: Option<&str>) -> PathBuf {
    let mut args = vec!["image", "export", image, dir.to_str().unwrap_or_default()];
    if let Some(c) = compression {
        args.extend(["--compression", c]);
    }
    let out = d.ok(&args);
    let path = out
        .trim()
        .strip_prefix("Image exported to ")
        .unwrap_or_else(|| panic!("export said: {out}"));
    PathBuf::from(path)
}

/// `ctl image import`; the fingerprint it reports.
fn import(d: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["image", "import"];
    all.extend(args);
    let out = d.ok(&all);
    out.trim()
        .strip_prefix("Image imported with fingerprint: ")
        .unwrap_or_else(|| panic!("import said: {out}"))
        .to_string()
}

/// No image row, no image directory, nothing left in tmp/.
fn assert_nothing_stored(d: &Daemon) {
    assert!(fingerprints(d).is_empty(), "{:?}", fingerprints(d));
    assert!(names(&d.path().join("images")).is_empty());
    assert!(
        wait_until(Duration::from_secs(10), || names(&d.path().join("tmp"))
            .is_empty()),
        "work directories left: {:?}",
        names(&d.path().join("tmp"))
    );
}

/// A POST with a raw body and extra headers: `(status, body as JSON)`.
fn post_bytes(
    d: &Daemon,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// Wait for an operation; its final state.
fn wait_op(d: &Daemon, answer: &serde_json::Value) -> serde_json::Value {
    let op = answer["operation"].as_str().unwrap_or_default();
    assert!(!op.is_empty(), "no operation: {answer}");
    d.http("GET", &format!("{op}/wait?timeout=60"), None).1["metadata"].clone()
}

// ----- hand-made tarballs (ustar, byte by byte: tar tools refuse to write hostile names)

enum Kind {
    File(&'static str),
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
            octal(&mut h[329..337], 1);
            octal(&mut h[337..345], 3);
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

fn metadata() -> (String, Kind) {
    (
        "metadata.yaml".into(),
        Kind::File("architecture: x86_64\ncreation_date: 1600000000\nproperties:\n  os: Evil\n"),
    )
}

// ----- tests

#[test]
fn export_import_keeps_the_fingerprint_and_the_image_runs() {
    root_or_skip!("export_import_keeps_the_fingerprint_and_the_image_runs");
    let d1 = Daemon::start();
    let fp = alias_target(&d1, "busybox");
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = export(&d1, "busybox", out.path(), None);
    assert_eq!(file, out.path().join(format!("{fp}.tar.gz")));
    assert_eq!(sha256(&[&file]), fp, "the export is the image file itself");
    // Exporting again gives the same bytes.
    let again = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file2 = export(&d1, &fp[..12], &again.path().join("copy.tar.gz"), None);
    assert_eq!(sha256(&[&file2]), fp);

    let d2 = Daemon::start();
    assert_eq!(
        import(&d2, &[file.to_str().unwrap_or_default(), "--alias", "bb"]),
        fp
    );
    assert_eq!(alias_target(&d2, "bb"), fp);
    let (_, image) = d2.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(image["metadata"]["properties"]["os"], "BusyBox", "{image}");
    assert_eq!(image["metadata"]["architecture"], "x86_64", "{image}");
    // The unpacked rootfs is the original's.
    assert_eq!(
        tree_listing(&d2.path().join("images").join(&fp).join("rootfs")),
        tree_listing(&d1.path().join("images").join(&fp).join("rootfs"))
    );
    d2.ok(&["launch", "bb", "c1"]);
    let os = d2.ok(&["exec", "c1", "--", "cat", "/etc/os-release"]);
    assert!(os.contains("ID=busybox"), "{os}");
    // And from the second daemon it exports byte for byte.
    let back = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sha256(&[&export(&d2, "bb", back.path(), None)]), fp);
    // The same image again is a conflict; the store is unchanged.
    let r = d2.ctl(&["image", "import", file.to_str().unwrap_or_default()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("already exists"), "{r:?}");
    assert_eq!(fingerprints(&d2), vec![fp.clone()]);
    // Aliases: list, create, delete.
    d2.ok(&["image", "alias", "create", "other", &fp[..12]]);
    let list = d2.ok(&["image", "alias", "list", "--format", "csv"]);
    assert!(list.contains("bb,") && list.contains("other,"), "{list}");
    d2.ok(&["image", "alias", "delete", "other"]);
    let r = d2.ctl(&["image", "alias", "delete", "other"]);
    assert!(r.stderr.contains("not found"), "{r:?}");
}

#[test]
fn every_compression_round_trips() {
    root_or_skip!("every_compression_round_trips");
    let d1 = Daemon::start();
    let fp = alias_target(&d1, "busybox");
    let d2 = Daemon::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (c, ext, magic) in [
        ("gzip", "tar.gz", &[0x1f, 0x8b][..]),
        ("xz", "tar.xz", &[0xfd, b'7', b'z', b'X', b'Z'][..]),
        ("zstd", "tar.zst", &[0x28, 0xb5, 0x2f, 0xfd][..]),
        ("none", "tar", &[][..]),
    ] {
        let sub = dir.path().join(c);
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        let file = export(&d1, "busybox", &sub, Some(c));
        assert_eq!(file, sub.join(format!("{fp}.{ext}")));
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(bytes.starts_with(magic), "{c}");
        let sum = sha256(&[&file]);
        if c == "gzip" {
            assert_eq!(sum, fp, "gzip is how the image is stored");
        } else {
            assert_ne!(sum, fp);
        }
        if c == "gzip" {
            continue;
        }
        // Imported elsewhere, the file's sha256 is the fingerprint, and it comes back as is.
        let new_fp = import(&d2, &[file.to_str().unwrap_or_default()]);
        assert_eq!(new_fp, sum, "{c}");
        let back = dir.path().join(format!("back-{c}"));
        std::fs::create_dir(&back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sha256(&[&export(&d2, &new_fp, &back, None)]), sum, "{c}");
        assert_eq!(
            tree_listing(&d2.path().join("images").join(&new_fp).join("rootfs")),
            tree_listing(&d1.path().join("images").join(&fp).join("rootfs")),
            "{c}"
        );
    }
    let xz = fingerprints(&d2)
        .into_iter()
        .find(|f| std::fs::metadata(d2.path().join("images").join(f).join("image.tar.xz")).is_ok())
        .unwrap_or_default();
    d2.ok(&["launch", &xz, "cx"]);
    assert_eq!(d2.ok(&["exec", "cx", "--", "echo", "ok"]).trim(), "ok");
}

#[test]
fn split_images_import_and_export_as_two_files() {
    root_or_skip!("split_images_import_and_export_as_two_files");
    let d1 = Daemon::start();
    let fp = alias_target(&d1, "busybox");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let meta = dir.path().join("meta.tar");
    std::fs::write(
        &meta,
        tar(&[(
            "metadata.yaml".into(),
            Kind::File("architecture: amd64\ncreation_date: 1600000000\nproperties:\n  os: Split\n  description: two files\n"),
        )]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rootfs = dir.path().join("rootfs.tar.gz");
    let src = d1.path().join("images").join(&fp).join("rootfs");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap_or_else(|e| panic!("tar: {e}"));
    assert!(st.success());
    let d2 = Daemon::start();
    let split = import(
        &d2,
        &[
            meta.to_str().unwrap_or_default(),
            rootfs.to_str().unwrap_or_default(),
            "--alias",
            "split",
            "--property",
            "release=two",
        ],
    );
    assert_eq!(
        split,
        sha256(&[&meta, &rootfs]),
        "sha256 of metadata then rootfs"
    );
    let (_, image) = d2.http("GET", &format!("/1.0/images/{split}"), None);
    assert_eq!(image["metadata"]["properties"]["os"], "Split", "{image}");
    assert_eq!(image["metadata"]["properties"]["release"], "two", "{image}");
    d2.ok(&["launch", "split", "c1"]);
    assert!(
        d2.ok(&["exec", "c1", "--", "cat", "/etc/os-release"])
            .contains("BusyBox")
    );
    // Export gives back both files as they were.
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let said = d2.ok(&[
        "image",
        "export",
        "split",
        out.path().to_str().unwrap_or_default(),
    ]);
    let written = names(out.path());
    assert_eq!(written.len(), 2, "{said}");
    let m = out.path().join(format!("meta-{split}.tar"));
    let r = out.path().join(format!("{split}.tar.gz"));
    assert_eq!(
        std::fs::read(&m).ok(),
        std::fs::read(&meta).ok(),
        "{written:?}"
    );
    assert_eq!(
        std::fs::read(&r).ok(),
        std::fs::read(&rootfs).ok(),
        "{written:?}"
    );
}

#[test]
fn publish_makes_an_image_of_the_overlay_view() {
    root_or_skip!("publish_makes_an_image_of_the_overlay_view");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    d.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo published > /root/new && rm /etc/hosts && rm -rf /usr/sbin && mkdir /usr/sbin \
         && echo only > /usr/sbin/only && echo changed > /etc/motd",
    ]);
    // A running instance is refused.
    let r = d.ctl(&["publish", "c1", "--alias", "mine"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("stop it first"), "{r:?}");
    assert!(d.http("GET", "/1.0/images/aliases/mine", None).0 == 404);
    d.ok(&["stop", "c1"]);
    let out = d.ok(&[
        "publish",
        "c1",
        "--alias",
        "mine",
        "--property",
        "description=mine",
    ]);
    let fp = out
        .trim()
        .strip_prefix("Instance published with fingerprint: ")
        .unwrap_or_else(|| panic!("publish said: {out}"))
        .to_string();
    assert_eq!(alias_target(&d, "mine"), fp);
    let (_, image) = d.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(
        image["metadata"]["properties"]["description"], "mine",
        "{image}"
    );
    assert_eq!(image["metadata"]["properties"]["os"], "BusyBox", "{image}");
    // The fingerprint is the sha256 of the image file export sends.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let exported = export(&d, "mine", dir.path(), None);
    assert_eq!(sha256(&[&exported]), fp);
    // The container wrote as its root, a host user of its own; the image says root, never
    // a host id.
    let listing = std::process::Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(&exported)
        .output()
        .unwrap_or_else(|e| panic!("tar: {e}"));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let new_entry = listing
        .lines()
        .find(|l| l.ends_with("rootfs/root/new"))
        .unwrap_or_else(|| panic!("rootfs/root/new not in the image:\n{listing}"));
    assert!(new_entry.contains(" 0/0 "), "{new_entry}");
    for l in listing.lines() {
        let owner = l.split_whitespace().nth(1).unwrap_or_default();
        let ids: Vec<u32> = owner.split('/').filter_map(|i| i.parse().ok()).collect();
        assert!(ids.iter().all(|i| *i < 65536), "host ids in the image: {l}");
    }
    // A taken alias is refused before anything is made.
    let r = d.ctl(&["publish", "c1", "--alias", "mine"]);
    assert!(r.stderr.contains("already exists"), "{r:?}");

    d.ok(&["launch", "mine", "c2"]);
    assert_eq!(
        d.ok(&["exec", "c2", "--", "cat", "/root/new"]),
        "published\n"
    );
    assert_eq!(d.ok(&["exec", "c2", "--", "cat", "/etc/motd"]), "changed\n");
    let gone = d.ctl(&["exec", "c2", "--", "test", "-e", "/etc/hosts"]);
    assert_eq!(
        gone.code, 1,
        "/etc/hosts was deleted before publishing: {gone:?}"
    );
    assert_eq!(
        d.ok(&["exec", "c2", "--", "ls", "/usr/sbin"]).trim(),
        "only"
    );
    // The new image's rootfs has no overlay leftovers: no whiteout devices.
    let rootfs = d.path().join("images").join(&fp).join("rootfs");
    assert!(std::fs::symlink_metadata(rootfs.join("etc/hosts")).is_err());
    assert!(tree_listing(&rootfs).iter().all(|l| !l.contains(" 20000 ")));
    // The container that was published is untouched and starts again.
    d.ok(&["start", "c1"]);
    assert_eq!(
        d.ok(&["exec", "c1", "--", "cat", "/root/new"]),
        "published\n"
    );
}

#[test]
fn damaged_tarballs_are_refused_and_leave_nothing() {
    root_or_skip!("damaged_tarballs_are_refused_and_leave_nothing");
    let d1 = Daemon::start();
    let fp = alias_target(&d1, "busybox");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = std::fs::read(export(&d1, "busybox", dir.path(), None)).unwrap_or_default();
    let d2 = Daemon::start();
    let truncated = dir.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    let tampered = dir.path().join("tampered.tar.gz");
    std::fs::write(&tampered, &flipped).unwrap_or_else(|e| panic!("{e}"));
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, b"this is not an image at all").unwrap_or_else(|e| panic!("{e}"));
    for (file, says) in [
        (&truncated, "truncated"),
        (&tampered, "invalid image"),
        (&junk, "not a tarball"),
    ] {
        let r = d2.ctl(&[
            "image",
            "import",
            file.to_str().unwrap_or_default(),
            "--alias",
            "x",
        ]);
        assert_ne!(r.code, 0, "{file:?} was accepted");
        assert!(r.stderr.contains(says), "{file:?}: {r:?}");
        assert_nothing_stored(&d2);
    }
    // A fingerprint that does not match the upload is refused before any operation.
    let (code, v) = post_bytes(
        &d2,
        "/1.0/images",
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-Incus-fingerprint", &"0".repeat(64)),
        ],
        &good,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("fingerprint mismatch"),
        "{v}"
    );
    assert_nothing_stored(&d2);
    // The right one (or none) is accepted over raw HTTP too, as Incus clients send it.
    let (code, v) = post_bytes(
        &d2,
        "/1.0/images",
        &[
            ("Content-Type", "application/octet-stream"),
            ("X-LXD-fingerprint", &fp),
            ("X-Incus-aliases", "alias=raw"),
            ("X-Incus-properties", "description=over%20http"),
        ],
        &good,
    );
    assert_eq!(code, 202, "{v}");
    let op = wait_op(&d2, &v);
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(op["metadata"]["fingerprint"], fp.as_str(), "{op}");
    assert_eq!(alias_target(&d2, "raw"), fp);
    let (_, image) = d2.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(image["metadata"]["properties"]["description"], "over http");
}

#[test]
fn hostile_tarballs_cannot_write_outside_the_image() {
    root_or_skip!("hostile_tarballs_cannot_write_outside_the_image");
    let d = Daemon::start();
    let victim = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let v = victim.path().display().to_string();
    let up = "../".repeat(10);
    let cases: Vec<(&str, Vec<(String, Kind)>)> = vec![
        (
            "goes through a symlink",
            vec![
                metadata(),
                ("rootfs/evil".into(), Kind::Symlink(v.clone())),
                ("rootfs/evil/pwned".into(), Kind::File("x")),
            ],
        ),
        (
            "goes through a symlink",
            vec![
                metadata(),
                ("rootfs/evil".into(), Kind::Symlink("/".into())),
                ("rootfs/evil/etc/".into(), Kind::Dir),
            ],
        ),
        (
            "\"..\"",
            vec![
                metadata(),
                (format!("rootfs/{up}{}/pwned", &v[1..]), Kind::File("x")),
            ],
        ),
        (
            "outside the rootfs",
            vec![
                metadata(),
                ("rootfs/passwd".into(), Kind::HardLink("/etc/passwd".into())),
            ],
        ),
        (
            "goes through a symlink",
            vec![
                metadata(),
                ("rootfs/etc".into(), Kind::Symlink("/etc".into())),
                (
                    "rootfs/passwd".into(),
                    Kind::HardLink("rootfs/etc/passwd".into()),
                ),
            ],
        ),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    });
    for (i, (says, entries)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("evil{i}.tar"));
        std::fs::write(&file, tar(entries)).unwrap_or_else(|e| panic!("{e}"));
        let r = d.ctl(&["image", "import", file.to_str().unwrap_or_default()]);
        assert_ne!(r.code, 0, "case {i} was accepted");
        assert!(
            r.stderr.contains("unsafe entry") && r.stderr.contains(says),
            "case {i}: {r:?}"
        );
        assert!(names(victim.path()).is_empty(), "case {i} wrote outside");
        assert_nothing_stored(&d);
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.nlink()
            })
            .ok(),
        passwd_links.ok(),
        "no hard link was made to the host's /etc/passwd"
    );
    // A leading slash is dropped, as GNU tar and LXD do: "/rootfs/hello" is the rootfs'
    // /hello, and "/<victim>/pwned" a name inside the image (not under rootfs/: ignored).
    let file = dir.path().join("slashes.tar");
    std::fs::write(
        &file,
        tar(&[
            metadata(),
            ("/rootfs/".into(), Kind::Dir),
            ("/rootfs/hello".into(), Kind::File("hi")),
            (format!("{v}/pwned"), Kind::File("x")),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.ok(&[
        "image",
        "import",
        file.to_str().unwrap_or_default(),
        "--alias",
        "slashes",
    ]);
    assert!(
        names(victim.path()).is_empty(),
        "a leading slash wrote outside"
    );
    d.ok(&["image", "delete", "slashes"]);
    // Device nodes are skipped, the rest of the image is fine.
    let file = dir.path().join("devices.tar");
    std::fs::write(
        &file,
        tar(&[
            metadata(),
            ("rootfs/".into(), Kind::Dir),
            ("rootfs/dev/".into(), Kind::Dir),
            ("rootfs/dev/mem".into(), Kind::CharDev),
            ("rootfs/hello".into(), Kind::File("hi")),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fp = import(&d, &[file.to_str().unwrap_or_default()]);
    let rootfs = d.path().join("images").join(&fp).join("rootfs");
    assert!(std::fs::symlink_metadata(rootfs.join("dev/mem")).is_err());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello"))
            .ok()
            .as_deref(),
        Some("hi")
    );
}

/// LXD 5.0's `lxc` (Debian's `lxd-client`) against ctld: it checks the sha256 of what it
/// downloads against the fingerprint, uploads raw tarballs and publishes with its own JSON.
#[test]
fn lxd_client_exports_imports_and_publishes() {
    root_or_skip!("lxd_client_exports_imports_and_publishes");
    let installed = Command::new("lxc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "lxc is not installed (.ci/run installs lxd-client); CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("SKIP: lxc not installed");
        return;
    }
    let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let lxc = |d: &Daemon, args: &[&str]| {
        let out = Command::new("lxc")
            .args(args)
            .env("LXD_DIR", d.path())
            .env("LXD_CONF", conf.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("lxc {args:?}: {e}"));
        assert!(
            out.status.success(),
            "lxc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let d1 = Daemon::start();
    let fp = alias_target(&d1, "busybox");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let target = dir.path().join("bb");
    lxc(
        &d1,
        &[
            "image",
            "export",
            "busybox",
            target.to_str().unwrap_or_default(),
        ],
    );
    let file = dir.path().join("bb.tar.gz");
    assert_eq!(sha256(&[&file]), fp);

    let d2 = Daemon::start();
    lxc(
        &d2,
        &[
            "image",
            "import",
            file.to_str().unwrap_or_default(),
            "--alias",
            "bb",
        ],
    );
    assert_eq!(alias_target(&d2, "bb"), fp);
    lxc(&d2, &["init", "bb", "c1"]);
    lxc(&d2, &["start", "c1"]);
    lxc(
        &d2,
        &["exec", "c1", "--", "sh", "-c", "echo via-lxc > /root/x"],
    );
    lxc(&d2, &["stop", "c1"]);
    let out = lxc(&d2, &["publish", "c1", "--alias", "pub"]);
    let published = alias_target(&d2, "pub");
    assert!(out.contains(&published), "{out}");
    d2.ok(&["launch", "pub", "c2"]);
    assert_eq!(d2.ok(&["exec", "c2", "--", "cat", "/root/x"]), "via-lxc\n");
}
