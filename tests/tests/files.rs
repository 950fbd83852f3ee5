//! End-to-end tests of the file API and `ctl file`: the real daemon and client against a
//! running busybox container. Content must round-trip byte for byte, owners and modes must
//! land, and no path (`..`, symlinks inside the container pointing at `/` or `/etc`, magic
//! links) may ever reach the host. Run as root (`CTL_REQUIRE_ALL=1` makes a non-root run fail
//! instead of skipping).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctl_tests::{Daemon, bin_dir, require_root, unique};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// A daemon with running busybox instance `c1`.
fn with_instance() -> Daemon {
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    d
}

/// Deterministic pseudo-random bytes (xorshift), so no test data is stored.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        Noise(seed).fill(&mut v);
        v
    }
}

/// An HTTP answer: status, lowercase head, body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request with extra headers and a body of `len` bytes written by `write_body` (so
/// huge bodies are generated as they are sent).
fn request_with(
    d: &Daemon,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    len: usize,
    write_body: impl FnOnce(&mut UnixStream),
) -> Answer {
    let mut s = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
    let mut head = format!(
        "{method} {uri} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    write_body(&mut s);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let payload = raw.get(split + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(payload)
    } else {
        payload.to_vec()
    };
    Answer { status, head, body }
}

fn request(d: &Daemon, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    request_with(d, method, uri, headers, body.len(), |s| {
        // A request refused on its headers may be answered (and closed) before its body is
        // sent: the answer tells.
        let _ = s.write_all(body);
    })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            break;
        }
        out.extend_from_slice(&data[..n]);
        rest = data[n..].strip_prefix(b"\r\n").unwrap_or(&data[n..]);
    }
    out
}

/// `/1.0/instances/c1/files?path=<path>` (the path percent-encoded where it matters).
fn files_uri(path: &str) -> String {
    let encoded: String = path
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/1.0/instances/c1/files?path={encoded}")
}

fn exec(d: &Daemon, script: &str) -> String {
    d.ok(&["exec", "c1", "--", "sh", "-c", script])
}

fn exists_inside(d: &Daemon, path: &str) -> bool {
    d.ctl(&["exec", "c1", "--", "test", "-e", path]).code == 0
}

/// The container's writable layer, where everything it writes lands on the host.
fn upper(d: &Daemon) -> PathBuf {
    d.path().join("containers/c1/upper")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ctl-files-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

#[test]
fn push_and_pull_round_trip_binary_data() {
    root_or_skip!("push_and_pull_round_trip_binary_data");
    let d = with_instance();
    let local = temp_dir();
    let data = Noise::bytes(0x5eed, 3 * 1024 * 1024 + 123);
    let src = local.path().join("data.bin");
    std::fs::write(&src, &data).unwrap_or_else(|e| panic!("{e}"));

    d.ok(&["file", "push", path_str(&src), "c1/root/data.bin"]);
    assert_eq!(
        exec(&d, "stat -c %s /root/data.bin").trim(),
        data.len().to_string()
    );
    assert!(
        std::fs::read(upper(&d).join("root/data.bin")).unwrap_or_default() == data,
        "the container's copy differs"
    );

    let back = local.path().join("back.bin");
    d.ok(&["file", "pull", "c1/root/data.bin", path_str(&back)]);
    assert!(
        std::fs::read(&back).unwrap_or_default() == data,
        "pulled bytes differ"
    );

    // Into a directory target (existing, or named with a trailing slash), under its name.
    d.ok(&["file", "push", path_str(&src), "c1/tmp"]);
    d.ok(&["file", "push", path_str(&src), "c1/etc/"]);
    assert!(exists_inside(&d, "/tmp/data.bin") && exists_inside(&d, "/etc/data.bin"));
    // Several sources into a local directory; stdout for one file.
    let many = local.path().join("many");
    std::fs::create_dir(&many).unwrap_or_else(|e| panic!("{e}"));
    d.ok(&[
        "file",
        "pull",
        "c1/tmp/data.bin",
        "c1/etc/passwd",
        path_str(&many),
    ]);
    assert!(std::fs::read(many.join("data.bin")).unwrap_or_default() == data);
    assert_eq!(
        std::fs::read_to_string(many.join("passwd")).unwrap_or_default(),
        d.ok(&["file", "pull", "c1/etc/passwd", "-"])
    );

    // Stdin in, stdout out.
    let r = d.ctl_stdin(
        &["file", "push", "-", "c1/root/from-stdin"],
        Some(b"piped\0bytes"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        d.ok(&["file", "pull", "c1/root/from-stdin", "-"]),
        "piped\0bytes"
    );
}

#[test]
fn modes_and_owners_are_applied() {
    root_or_skip!("modes_and_owners_are_applied");
    let d = with_instance();
    let local = temp_dir();
    let src = local.path().join("script.sh");
    std::fs::write(&src, "#!/bin/sh\necho hi\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let stat = |path: &str| {
        exec(&d, &format!("stat -c '%a %u %g' {path}"))
            .trim()
            .to_string()
    };

    // Flags win; without them a new file gets the local mode and root.
    d.ok(&[
        "file",
        "push",
        "--mode",
        "0640",
        "--uid",
        "1000",
        "--gid",
        "100",
        path_str(&src),
        "c1/root/a.sh",
    ]);
    assert_eq!(stat("/root/a.sh"), "640 1000 100");
    d.ok(&["file", "push", path_str(&src), "c1/root/b.sh"]);
    assert_eq!(stat("/root/b.sh"), "755 0 0");
    assert_eq!(exec(&d, "/root/b.sh"), "hi\n");

    // Pushing over an existing file keeps its owner and mode unless flags say otherwise.
    d.ok(&["file", "push", path_str(&src), "c1/root/a.sh"]);
    assert_eq!(stat("/root/a.sh"), "640 1000 100");
    d.ok(&[
        "file",
        "push",
        "--mode",
        "600",
        path_str(&src),
        "c1/root/a.sh",
    ]);
    assert_eq!(stat("/root/a.sh"), "600 1000 100");

    // The API reports them, under both header families.
    let a = request(&d, "GET", &files_uri("/root/a.sh"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    for prefix in ["x-incus-", "x-lxd-"] {
        assert_eq!(
            a.header(&format!("{prefix}mode")),
            Some("0600"),
            "{}",
            a.head
        );
        assert_eq!(a.header(&format!("{prefix}uid")), Some("1000"));
        assert_eq!(a.header(&format!("{prefix}gid")), Some("100"));
        assert_eq!(a.header(&format!("{prefix}type")), Some("file"));
    }
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));

    // Raw headers, LXD style, for a new file and a directory; defaults 0644 and 0755.
    let a = request(
        &d,
        "POST",
        &files_uri("/root/lxd"),
        &[
            ("X-LXD-uid", "7"),
            ("X-LXD-gid", "8"),
            ("X-LXD-mode", "0604"),
        ],
        b"x",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(stat("/root/lxd"), "604 7 8");
    request(&d, "POST", &files_uri("/root/plain"), &[], b"x");
    request(
        &d,
        "POST",
        &files_uri("/root/dir"),
        &[("X-Incus-type", "directory")],
        b"",
    );
    assert_eq!(stat("/root/plain"), "644 0 0");
    assert_eq!(stat("/root/dir"), "755 0 0");

    // Pulling sets the local mode.
    let back = local.path().join("back.sh");
    d.ok(&["file", "pull", "c1/root/b.sh", path_str(&back)]);
    let md = std::fs::metadata(&back).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn parents_and_recursive_trees() {
    root_or_skip!("parents_and_recursive_trees");
    let d = with_instance();
    let local = temp_dir();
    let src = local.path().join("f");
    std::fs::write(&src, "deep\n").unwrap_or_else(|e| panic!("{e}"));

    // Without -p a missing parent is an error; with it the parents are made.
    let r = d.ctl(&["file", "push", path_str(&src), "c1/srv/a/b/c/f"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such file or directory"), "{r:?}");
    d.ok(&["file", "push", "-p", path_str(&src), "c1/srv/a/b/c/f"]);
    assert_eq!(exec(&d, "cat /srv/a/b/c/f"), "deep\n");
    assert_eq!(exec(&d, "stat -c %a /srv/a/b").trim(), "755");

    // A small tree: files, an empty dir, a nested dir with its own mode, a relative symlink.
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(tree.join("empty")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(tree.join("top.txt"), "top\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(tree.join("sub/deeper/bin"), Noise::bytes(9, 70_000))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(tree.join("sub"), std::fs::Permissions::from_mode(0o750))
        .unwrap_or_else(|e| panic!("{e}"));
    symlink("../top.txt", tree.join("sub/link")).unwrap_or_else(|e| panic!("{e}"));

    let r = d.ctl(&["file", "push", path_str(&tree), "c1/opt/"]);
    assert_eq!(r.code, 1, "a directory without -r: {r:?}");
    d.ok(&["file", "push", "-r", "-p", path_str(&tree), "c1/opt/"]);
    let listing = exec(
        &d,
        "cd /opt/tree && find . | sort && readlink sub/link && cat sub/link && stat -c %a sub",
    );
    assert_eq!(
        listing,
        ".\n./empty\n./sub\n./sub/deeper\n./sub/deeper/bin\n./sub/link\n./top.txt\n\
         ../top.txt\ntop\n750\n"
    );

    // Pull it back into a new directory and compare.
    let back = local.path().join("back");
    let r = d.ctl(&["file", "pull", "c1/opt/tree", path_str(&back)]);
    assert_eq!(r.code, 1, "a directory without -r: {r:?}");
    d.ok(&["file", "pull", "-r", "c1/opt/tree", path_str(&back)]);
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    assert_eq!(read(&back.join("top.txt")), b"top\n");
    assert!(read(&back.join("sub/deeper/bin")) == Noise::bytes(9, 70_000));
    assert!(back.join("empty").is_dir());
    assert_eq!(
        std::fs::read_link(back.join("sub/link")).ok(),
        Some(PathBuf::from("../top.txt"))
    );
    let md = std::fs::metadata(back.join("sub")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(md.permissions().mode() & 0o7777, 0o750);

    // Pulling a tree again over itself never writes through a local symlink in the way.
    let into = local.path().join("into");
    let into_arg = format!("{}/", path_str(&into));
    d.ok(&["file", "pull", "-r", "-p", "c1/opt/tree", &into_arg]);
    let victim = local.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap_or_else(|e| panic!("{e}"));
    let planted = into.join("tree/top.txt");
    std::fs::remove_file(&planted).unwrap_or_else(|e| panic!("{e}"));
    symlink(&victim, &planted).unwrap_or_else(|e| panic!("{e}"));
    d.ok(&["file", "pull", "-r", "c1/opt/tree", &into_arg]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap_or_default(),
        "keep\n"
    );
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap_or_default(),
        "top\n"
    );
    assert!(!std::fs::symlink_metadata(&planted).is_ok_and(|m| m.is_symlink()));

    // -p on pull makes local parents.
    let nested = local.path().join("x/y/z.txt");
    d.ok(&[
        "file",
        "pull",
        "-p",
        "c1/opt/tree/top.txt",
        path_str(&nested),
    ]);
    assert_eq!(
        std::fs::read_to_string(&nested).unwrap_or_default(),
        "top\n"
    );
}

#[test]
fn append_listing_symlinks_and_delete() {
    root_or_skip!("append_listing_symlinks_and_delete");
    let d = with_instance();

    // Overwrite then append.
    let a = request(&d, "POST", &files_uri("/root/log"), &[], b"one\n");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["type"], "sync");
    assert_eq!(a.json()["metadata"], serde_json::json!({}));
    let a = request(
        &d,
        "POST",
        &files_uri("/root/log"),
        &[("X-Incus-write", "append")],
        b"two\n",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(exec(&d, "cat /root/log"), "one\ntwo\n");
    request(&d, "POST", &files_uri("/root/log"), &[], b"three\n");
    assert_eq!(exec(&d, "cat /root/log"), "three\n");
    let a = request(
        &d,
        "POST",
        &files_uri("/root/log"),
        &[("X-Incus-write", "sideways")],
        b"x",
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(exec(&d, "cat /root/log"), "three\n");

    // A directory listing is a sync envelope of names, typed by header.
    exec(
        &d,
        "mkdir -p /root/d/sub && touch /root/d/f1 /root/d/.hidden",
    );
    let a = request(&d, "GET", &files_uri("/root/d"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-incus-type"), Some("directory"));
    assert_eq!(a.json()["type"], "sync");
    assert_eq!(
        a.json()["metadata"],
        serde_json::json!([".hidden", "f1", "sub"])
    );
    let a = request(&d, "GET", &files_uri("/"), &[], b"");
    let names = a.json()["metadata"].clone();
    assert!(
        names
            .as_array()
            .is_some_and(|n| n.contains(&"etc".into()) && n.contains(&"root".into())),
        "{names}"
    );

    // Symlinks: created with the body as target, read back as the target.
    let a = request(
        &d,
        "POST",
        &files_uri("/root/ln"),
        &[("X-Incus-type", "symlink")],
        b"/etc/passwd",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(exec(&d, "readlink /root/ln"), "/etc/passwd\n");
    let a = request(&d, "GET", &files_uri("/root/ln"), &[], b"");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-incus-type"), Some("symlink"));
    assert_eq!(a.text(), "/etc/passwd");
    // The same again is fine; another target conflicts.
    let again = |target: &[u8]| {
        request(
            &d,
            "POST",
            &files_uri("/root/ln"),
            &[("X-Incus-type", "symlink")],
            target,
        )
        .status
    };
    assert_eq!(again(b"/etc/passwd"), 200);
    assert_eq!(again(b"/etc/group"), 409);

    // Delete: a symlink (not its target), a file, an empty directory; a full one is refused.
    let del = |path: &str| request(&d, "DELETE", &files_uri(path), &[], b"").status;
    assert_eq!(del("/root/ln"), 200);
    assert!(!exists_inside(&d, "/root/ln") && exists_inside(&d, "/etc/passwd"));
    assert_eq!(del("/root/d"), 400);
    assert_eq!(del("/root/d/sub"), 200);
    d.ok(&["file", "delete", "c1/root/d/f1", "c1/root/d/.hidden"]);
    assert_eq!(del("/root/d"), 200);
    assert_eq!(del("/root/d"), 404);
    assert!(!exists_inside(&d, "/root/d"));
    let r = d.ctl(&["file", "rm", "c1/root/nothing"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no such file or directory"), "{r:?}");
    assert_eq!(
        request(&d, "GET", &files_uri("/root/nothing"), &[], b"").status,
        404
    );
    assert_eq!(
        request(&d, "GET", "/1.0/instances/c1/files", &[], b"").status,
        400
    );
    assert_eq!(
        request(&d, "GET", "/1.0/instances/nope/files?path=/", &[], b"").status,
        404
    );
}

#[test]
fn paths_never_escape_the_container() {
    root_or_skip!("paths_never_escape_the_container");
    let d = with_instance();
    let host_file = Path::new("/etc/ctl-escape-test");
    assert!(
        !host_file.exists(),
        "{} exists on the host before the test",
        host_file.display()
    );
    let tag = unique("ctl-escape");
    let host_tmp = PathBuf::from("/tmp").join(&tag);

    // `..` above the root stays at the root.
    exec(&d, "echo inside-name > /etc/hostname");
    let a = request(&d, "GET", &files_uri("/../../etc/hostname"), &[], b"");
    assert_eq!((a.status, a.text().as_str()), (200, "inside-name\n"));
    let a = request(
        &d,
        "POST",
        &files_uri(&format!("/../../../tmp/{tag}")),
        &[],
        b"x",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(!host_tmp.exists(), "a write through .. reached the host");
    assert!(exists_inside(&d, &format!("/tmp/{tag}")));

    // Symlinks made inside the container to / and /etc, and one climbing out.
    exec(
        &d,
        "ln -s / /tmp/evil && ln -s /etc /tmp/evil-etc && ln -s ../../../../../.. /tmp/up",
    );
    for (path, inside) in [
        ("/tmp/evil/etc/ctl-escape-test", "/etc/ctl-escape-test"),
        ("/tmp/evil-etc/ctl-escape-test-2", "/etc/ctl-escape-test-2"),
        ("/tmp/up/etc/ctl-escape-test-3", "/etc/ctl-escape-test-3"),
    ] {
        let a = request(&d, "POST", &files_uri(path), &[], b"contained\n");
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert!(
            !Path::new(inside).exists(),
            "{path} created {inside} on the host"
        );
        assert_eq!(exec(&d, &format!("cat {inside}")), "contained\n", "{path}");
    }
    // Through ctl as well, both ways.
    let r = d.ctl_stdin(
        &["file", "push", "-", "c1/tmp/evil/etc/ctl-escape-test"],
        Some(b"again\n"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!host_file.exists());
    assert_eq!(
        d.ok(&["file", "pull", "c1/tmp/evil/etc/hostname", "-"]),
        "inside-name\n"
    );

    // A final symlink to a host path: followed inside the container.
    exec(&d, "ln -s /etc/ctl-escape-final /tmp/final");
    let a = request(&d, "POST", &files_uri("/tmp/final"), &[], b"final\n");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(!Path::new("/etc/ctl-escape-final").exists());
    assert_eq!(exec(&d, "cat /etc/ctl-escape-final"), "final\n");

    // A delete through the escaping link removes nothing on the host.
    std::fs::write(&host_tmp, "host").unwrap_or_else(|e| panic!("{e}"));
    exec(&d, &format!("rm -f /tmp/{tag}"));
    let a = request(
        &d,
        "DELETE",
        &files_uri(&format!("/tmp/evil/tmp/{tag}")),
        &[],
        b"",
    );
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(host_tmp.exists(), "a delete reached the host");
    let _ = std::fs::remove_file(&host_tmp);

    // Magic links (/proc/<pid>/root) are refused, not followed.
    for (method, path) in [
        ("GET", "/proc/1/root/etc/hostname".to_string()),
        ("POST", format!("/proc/1/root/tmp/{tag}")),
        ("POST", format!("/proc/self/root/tmp/{tag}")),
    ] {
        let a = request(&d, method, &files_uri(&path), &[], b"x");
        assert!(
            a.status == 400 || a.status == 404,
            "{method} {path}: {} {}",
            a.status,
            a.text()
        );
    }
    assert!(
        !host_tmp.exists(),
        "a write through a magic link reached the host"
    );

    // Reading a path that exists only on the host: not found.
    let a = request(
        &d,
        "GET",
        &files_uri(&format!("/tmp/evil{}", d.path().display())),
        &[],
        b"",
    );
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(!host_file.exists());
}

/// Host uid of file `rel` in `c1`'s upper layer.
fn host_uid(d: &Daemon, rel: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(upper(d).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .uid()
}

/// `forkuserns` helpers of the daemon still alive (there must be none between requests).
fn userns_helpers(d: &Daemon) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(d.pid()) && cmd.split(|b| *b == 0).any(|a| a == b"forkuserns")
        })
        .collect()
}

#[test]
fn files_of_a_stopped_instance() {
    root_or_skip!("files_of_a_stopped_instance");
    let d = Daemon::start();
    d.ok(&["init", "busybox", "c1"]);
    let local = temp_dir();
    let src = local.path().join("f");
    std::fs::write(&src, "before the first start\n").unwrap_or_else(|e| panic!("{e}"));

    // Never started: the image's files are there, and new ones belong to the ids asked for.
    let a = request(&d, "GET", &files_uri("/etc/os-release"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        String::from_utf8_lossy(&a.body).contains("ID="),
        "{}",
        a.text()
    );
    d.ok(&[
        "file",
        "push",
        "--uid",
        "1000",
        "--gid",
        "100",
        path_str(&src),
        "c1/root/first",
    ]);
    d.ok(&["file", "push", "-p", path_str(&src), "c1/srv/new/dir/f"]);
    d.ok(&["file", "delete", "c1/etc/inittab"]);
    assert!(userns_helpers(&d).is_empty());

    // The container sees all of it as pushed.
    d.ok(&["start", "c1"]);
    let stat = |path: &str| {
        exec(&d, &format!("stat -c '%a %u %g' {path}"))
            .trim()
            .to_string()
    };
    assert_eq!(exec(&d, "cat /root/first"), "before the first start\n");
    assert_eq!(stat("/root/first"), "644 1000 100");
    assert_eq!(stat("/srv/new/dir/f"), "644 0 0");
    assert!(!exists_inside(&d, "/etc/inittab"));
    let base = host_uid(&d, "srv/new/dir/f");
    assert_ne!(base, 0, "an unprivileged container's root is not host root");
    assert_eq!(host_uid(&d, "root/first"), base + 1000);

    // Written inside while running, then stopped: read back in the container's ids, and
    // changed with copy-ups that keep them (a lower-layer file edited in place).
    exec(
        &d,
        "echo inside > /root/made-inside; chown 1000 /root/made-inside",
    );
    exec(
        &d,
        "mkdir -p /tmp/evil && rm -rf /tmp/evil && ln -s / /tmp/evil",
    );
    d.ok(&["stop", "-f", "c1"]);
    let a = request(&d, "GET", &files_uri("/root/made-inside"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.body, b"inside\n");
    assert_eq!(a.header("x-incus-uid"), Some("1000"), "{}", a.head);
    let a = request(&d, "GET", &files_uri("/etc/passwd"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-incus-uid"), Some("0"), "{}", a.head);
    let a = request(
        &d,
        "POST",
        &files_uri("/etc/passwd"),
        &[("X-Incus-write-mode", "append")],
        b"extra:x:5000:5000::/:/bin/sh\n",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(host_uid(&d, "etc/passwd"), base);

    // A symlink the container planted resolves inside it, never on the host.
    let tag = format!("ctl-stopped-{}", std::process::id());
    let host_tmp = std::path::PathBuf::from("/tmp").join(&tag);
    let a = request(
        &d,
        "POST",
        &files_uri(&format!("/tmp/evil/tmp/{tag}")),
        &[],
        b"x",
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        !host_tmp.exists(),
        "a write through a symlink reached the host"
    );
    assert!(upper(&d).join("tmp").join(&tag).exists());
    let a = request(&d, "GET", &files_uri("/tmp/evil/etc/passwd"), &[], b"");
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body).contains("extra:x:5000"));
    assert!(userns_helpers(&d).is_empty());

    // It starts again and sees what was written while it was stopped.
    d.ok(&["start", "c1"]);
    assert!(exec(&d, "cat /etc/passwd").contains("extra:x:5000"));
    assert_eq!(stat("/etc/passwd"), "644 0 0");
    assert!(exists_inside(&d, &format!("/tmp/{tag}")));

    // A missing instance is still 404.
    let a = request(
        &d,
        "GET",
        "/1.0/instances/nope/files?path=/etc/passwd",
        &[],
        b"",
    );
    assert_eq!(a.status, 404, "{}", a.text());
}

/// Peak resident memory of process `pid`, in KiB.
fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_large_upload_streams_through_the_daemon() {
    root_or_skip!("a_large_upload_streams_through_the_daemon");
    let d = with_instance();
    const SIZE: usize = 200 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let before = vm_hwm_kib(d.pid());
    assert!(before > 0, "no VmHWM for ctld");
    let mut last = vec![0u8; CHUNK];
    let a = request_with(&d, "POST", &files_uri("/root/big"), &[], SIZE, |s| {
        let mut noise = Noise(42);
        for _ in 0..SIZE / CHUNK {
            noise.fill(&mut last);
            s.write_all(&last)
                .unwrap_or_else(|e| panic!("write body: {e}"));
        }
    });
    assert_eq!(a.status, 200, "{}", a.text());
    let after = vm_hwm_kib(d.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "ctld's peak RSS grew by {grown_mib} MiB for a 200 MiB upload ({before} -> {after} KiB)"
    );
    // All of it landed, in order.
    let on_disk = upper(&d).join("root/big");
    let md = std::fs::metadata(&on_disk).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(md.len(), SIZE as u64);
    // Owned by the container's root, a host user of its own (unprivileged container).
    let root_uid = d.init_host_uid("c1");
    assert!(root_uid > 0, "container root is host uid {root_uid}");
    assert_eq!(md.uid(), root_uid);
    let mut f = std::fs::File::open(&on_disk).unwrap_or_else(|e| panic!("{e}"));
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(-(CHUNK as i64)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tail = vec![0u8; CHUNK];
    f.read_exact(&mut tail).unwrap_or_else(|e| panic!("{e}"));
    assert!(tail == last, "the last chunk differs");

    // And back out through the client, streamed to a file.
    let local = temp_dir();
    let back = local.path().join("big");
    d.ok(&["file", "pull", "c1/root/big", path_str(&back)]);
    assert_eq!(
        std::fs::metadata(&back).map(|m| m.len()).unwrap_or(0),
        SIZE as u64
    );
    let after_pull = vm_hwm_kib(d.pid());
    assert!(
        after_pull.saturating_sub(before) / 1024 < 64,
        "ctld's peak RSS grew to {after_pull} KiB serving a 200 MiB download"
    );
}

#[test]
fn edit_from_stdin_and_through_an_editor() {
    root_or_skip!("edit_from_stdin_and_through_an_editor");
    let d = with_instance();
    // Not a terminal: the new content comes from stdin; a new file is created.
    let r = d.ctl_stdin(&["file", "edit", "c1/etc/motd"], Some(b"hello\nworld\n"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(exec(&d, "cat /etc/motd"), "hello\nworld\n");
    exec(&d, "chmod 600 /etc/motd");

    // On a terminal: the editor gets the current content and its result is pushed back
    // (the mode stays). `script` gives ctl a terminal.
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("SKIP editor part: no `script` to provide a terminal");
        return;
    }
    let ctl = bin_dir().join("ctl");
    let status = Command::new("script")
        .args([
            "-qec",
            &format!("{} file edit c1/etc/motd", ctl.display()),
            "/dev/null",
        ])
        .env("CTL_DIR", d.path())
        .env_remove("CTL_SOCKET")
        .env_remove("VISUAL")
        .env("EDITOR", "sed -i s/world/edited/")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("script: {e}"));
    assert!(status.status.success(), "{status:?}");
    assert_eq!(exec(&d, "cat /etc/motd"), "hello\nedited\n");
    assert_eq!(exec(&d, "stat -c %a /etc/motd").trim(), "600");
}

#[test]
fn device_nodes_planted_inside_are_never_opened_for_writing() {
    if !ctl_tests::require_root("device_nodes_planted_inside_are_never_opened_for_writing") {
        return;
    }
    let d = ctl_tests::Daemon::start();
    // An unprivileged container cannot make device nodes at all: a privileged one can.
    d.ok(&["launch", "busybox", "udev"]);
    let r = d.ctl(&["exec", "udev", "--", "mknod", "/root/node", "c", "1", "3"]);
    assert_ne!(r.code, 0, "{r:?}");
    d.ok(&["launch", "busybox", "dev", "-c", "security.privileged=true"]);
    d.ok(&["exec", "dev", "--", "mknod", "/root/node", "c", "1", "3"]);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let local = tmp.path().join("f");
    std::fs::write(&local, b"data").unwrap_or_else(|e| panic!("{e}"));
    let r = d.ctl(&[
        "file",
        "push",
        local.to_str().unwrap_or_default(),
        "dev/root/node",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("regular file"), "{r:?}");
    // Still the device it was.
    let ls = d.ok(&["exec", "dev", "--", "ls", "-l", "/root/node"]);
    assert!(ls.starts_with('c'), "{ls}");
}

#[test]
fn kernel_filesystems_inside_are_never_reached() {
    root_or_skip!("kernel_filesystems_inside_are_never_reached");
    let d = with_instance();
    // The container unmasks what it can and points its own paths at kernel files. Writes
    // there would be host root's: they must be refused before anything is opened. (The
    // bodies are empty, so even a broken check writes nothing to the kernel.)
    exec(
        &d,
        "umount /proc/sys 2>/dev/null; umount /proc/sysrq-trigger 2>/dev/null; \
         ln -s /proc/sysrq-trigger /root/sq; ln -s /proc/sys/vm/drop_caches /root/dc; \
         ln -s /sys/kernel /root/sk; true",
    );
    for path in ["/root/dc", "/root/sk/uevent_helper"] {
        let a = request(&d, "POST", &files_uri(path), &[], b"");
        assert_eq!(a.status, 400, "POST {path}: {}", a.text());
        assert!(
            a.text().contains("kernel filesystem"),
            "{path}: {}",
            a.text()
        );
    }
    // Read, a final symlink is the link itself (not followed); through one, refused.
    let a = request(&d, "GET", &files_uri("/root/dc"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-incus-type"), Some("symlink"), "{}", a.head);
    // Absent where the kernel has no magic SysRq: then not found, never written.
    for path in ["/root/sq", "/proc/sysrq-trigger"] {
        let a = request(&d, "POST", &files_uri(path), &[], b"");
        assert!(
            a.status == 400 || a.status == 404,
            "POST {path}: {}",
            a.text()
        );
    }
    // ctld is no process of the container's: its /proc/self leads nowhere.
    let a = request(&d, "GET", &files_uri("/proc/self/environ"), &[], b"");
    assert!(a.status == 400 || a.status == 404, "{}", a.text());
    for path in [
        "/proc/cpuinfo",
        "/sys/kernel/uevent_helper",
        "/root/sk/uevent_helper",
    ] {
        let a = request(&d, "GET", &files_uri(path), &[], b"");
        assert_eq!(a.status, 400, "GET {path}: {}", a.text());
    }
    let a = request(
        &d,
        "DELETE",
        &files_uri("/proc/sys/vm/drop_caches"),
        &[],
        b"",
    );
    assert_eq!(a.status, 400, "{}", a.text());
    // Files elsewhere, and the symlinks themselves, are still the container's.
    let a = request(&d, "POST", &files_uri("/root/plain"), &[], b"ok");
    assert_eq!(a.status, 200, "{}", a.text());
    let a = request(&d, "DELETE", &files_uri("/root/sq"), &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
}

#[test]
fn lxc_and_incus_push_pull_and_edit_files_of_a_stopped_instance() {
    root_or_skip!("lxc_and_incus_push_pull_and_edit_files_of_a_stopped_instance");
    let d = Daemon::start();
    let (Some(lxc), Some(incus)) = (
        ctl_tests::clients::Cli::lxc(&d),
        ctl_tests::clients::Cli::incus(&d),
    ) else {
        return;
    };
    d.ok(&["launch", "busybox", "c1"]);
    d.ok(&["stop", "-f", "c1"]);
    let local = temp_dir();
    let src = local.path().join("src.txt");
    std::fs::write(&src, "pushed while stopped\n").unwrap_or_else(|e| panic!("{e}"));
    // `file edit` without a terminal takes the new content from stdin.
    let edited = local.path().join("edited.txt");
    std::fs::write(&edited, "pushed while stopped\nedited\n").unwrap_or_else(|e| panic!("{e}"));
    for (cli, name) in [(&lxc, "lxc"), (&incus, "incus")] {
        let target = format!("c1/root/{name}.txt");
        cli.ok(&["file", "push", "--uid", "1000", path_str(&src), &target]);
        let back = local.path().join(format!("{name}.back"));
        cli.ok(&["file", "pull", &target, path_str(&back)]);
        assert_eq!(
            std::fs::read_to_string(&back).unwrap_or_default(),
            "pushed while stopped\n",
            "{name}"
        );
        let stdin = std::fs::File::open(&edited).unwrap_or_else(|e| panic!("{e}"));
        let out = cli
            .command(&["file", "edit", &target])
            .stdin(stdin)
            .output()
            .unwrap_or_else(|e| panic!("{name} file edit: {e}"));
        assert!(out.status.success(), "{name} file edit: {out:?}");
        cli.ok(&["file", "delete", "c1/etc/inittab"]);
        cli.fails(&["file", "pull", "c1/etc/inittab", path_str(&back)]);
        d.ok(&["file", "push", path_str(&src), "c1/etc/inittab"]);
    }
    // Started, the container sees what both clients wrote, with the owners they gave.
    d.ok(&["start", "c1"]);
    for name in ["lxc", "incus"] {
        assert_eq!(
            exec(&d, &format!("cat /root/{name}.txt")),
            "pushed while stopped\nedited\n",
            "{name}"
        );
        assert_eq!(
            exec(&d, &format!("stat -c %u /root/{name}.txt")).trim(),
            "1000",
            "{name}"
        );
    }
    // And incus restores snapshots (an unknown one is an error).
    incus.ok(&["snapshot", "create", "c1", "s0"]);
    exec(&d, "echo after > /root/after");
    incus.ok(&["snapshot", "restore", "c1", "s0"]);
    assert!(!exists_inside(&d, "/root/after"));
    incus.fails(&["snapshot", "restore", "c1", "nope"]);
}
