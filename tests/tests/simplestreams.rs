//! Image servers end to end: one ctld pulls over simplestreams from another ctld (unified
//! and split squashfs images, `ctl launch REMOTE:ALIAS`, `ctl image copy`), and from a
//! static tree on loopback that misbehaves: a cut connection is resumed with `Range`, a
//! tampered or truncated file is refused and nothing is stored. All traffic is on
//! 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ctl_tests::{Daemon, require_root, unique, wait_until};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn sha256_of(paths: &[&Path]) -> String {
    let mut cat = Vec::new();
    for p in paths {
        cat.extend(std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
    }
    let tmp = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("tmp: {e}"));
    std::fs::write(tmp.path(), &cat).unwrap_or_else(|e| panic!("write: {e}"));
    sha256(tmp.path())
}

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

/// A daemon serving its public images on a loopback port.
fn serving_daemon() -> (Daemon, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--http-address", &addr]);
    let url = format!("http://{addr}");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            &addr
        )
        .is_ok()),
        "no listener on {addr}; log:\n{}",
        d.log()
    );
    (d, url)
}

/// The busybox image of `d`, built now; returns its fingerprint.
fn busybox_fingerprint(d: &Daemon) -> String {
    let (code, alias) = d.http("GET", "/1.0/images/aliases/busybox", None);
    assert_eq!(code, 200, "{alias}");
    alias["metadata"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A split image (metadata tarball + squashfs rootfs with `/etc/marker`) made from `d`'s
/// busybox rootfs in `dir`; returns (metadata, rootfs).
fn split_squashfs_image(d: &Daemon, dir: &Path, marker: &str) -> (PathBuf, PathBuf) {
    let fp = busybox_fingerprint(d);
    let src = d.path().join("images").join(&fp).join("rootfs");
    let root = dir.join("rootfs");
    run(Command::new("cp").arg("-a").arg(&src).arg(&root));
    std::fs::write(root.join("etc/marker"), marker).unwrap_or_else(|e| panic!("marker: {e}"));
    let meta_dir = dir.join("meta");
    std::fs::create_dir_all(&meta_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(
        meta_dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1764300000\nproperties:\n  os: Marker\n  release: one\n  description: split squashfs test image\n",
    )
    .unwrap_or_else(|e| panic!("metadata: {e}"));
    let meta = dir.join("incus.tar.xz");
    run(Command::new("tar")
        .arg("-C")
        .arg(&meta_dir)
        .arg("-cJf")
        .arg(&meta)
        .arg("metadata.yaml"));
    let squash = dir.join("rootfs.squashfs");
    run(Command::new("mksquashfs")
        .arg(&root)
        .arg(&squash)
        .args(["-noappend", "-quiet", "-no-progress"])
        .stdout(Stdio::null()));
    (meta, squash)
}

#[test]
fn a_daemon_pulls_unified_and_squashfs_images_from_another() {
    if !require_root("a_daemon_pulls_unified_and_squashfs_images_from_another") {
        return;
    }
    let (a, url) = serving_daemon();
    let fp = busybox_fingerprint(&a);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let (meta, squash) = split_squashfs_image(&a, work.path(), "from-a");
    let split_fp = sha256_of(&[&meta, &squash]);
    a.ok(&[
        "image",
        "import",
        meta.to_str().unwrap_or_default(),
        squash.to_str().unwrap_or_default(),
        "--alias",
        "marker/one",
        "--public",
    ]);
    // Private images are not served; make busybox public.
    let (code, _) = a.http("GET", "/streams/v1/images.json", None);
    assert_eq!(code, 200);
    let (_, catalog) = a.http("GET", "/streams/v1/images.json", None);
    let text = catalog.to_string();
    assert!(text.contains(&split_fp), "{text}");
    assert!(!text.contains(&fp), "private busybox listed: {text}");
    let (code, body) = a.http(
        "PATCH",
        &format!("/1.0/images/{fp}"),
        Some(r#"{"public": true}"#),
    );
    assert_eq!(code, 200, "{body}");

    let b = Daemon::start();
    b.ok(&["remote", "add", "a", &url, "--protocol", "simplestreams"]);
    assert!(
        b.ok(&["remote", "list", "--format", "csv"])
            .contains(&format!("a,{url},simplestreams,YES"))
    );
    // Two launches at once share one download.
    std::thread::scope(|s| {
        let first = s.spawn(|| b.ctl(&["launch", "a:busybox", "c1"]));
        let second = b.ctl(&["launch", "a:busybox", "c0"]);
        let first = first.join().unwrap_or_else(|_| panic!("launch thread"));
        assert_eq!(first.code, 0, "{first:?}");
        assert_eq!(second.code, 0, "{second:?}");
    });
    assert_eq!(
        b.ok(&["exec", "c1", "--", "echo", "pulled"]).trim(),
        "pulled"
    );
    let (code, img) = b.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(code, 200, "the pulled image keeps its fingerprint: {img}");
    assert_eq!(img["metadata"]["cached"], true);
    assert_eq!(img["metadata"]["update_source"]["server"], url.as_str());
    assert_eq!(img["metadata"]["update_source"]["alias"], "busybox");
    let info = b.ok(&["image", "info", &fp]);
    assert!(
        info.contains("Cached: yes") && info.contains(&url),
        "{info}"
    );

    // The split squashfs image, copied explicitly under a local alias.
    let out = b.ok(&["image", "copy", "a:marker/one", "local:", "--alias", "mine"]);
    assert!(out.contains(&split_fp), "{out}");
    let (_, img) = b.http("GET", &format!("/1.0/images/{split_fp}"), None);
    assert_eq!(img["metadata"]["cached"], false);
    assert_eq!(img["metadata"]["properties"]["os"], "Marker");
    assert!(
        b.path()
            .join("images")
            .join(&split_fp)
            .join("rootfs.squashfs")
            .is_file()
    );
    b.ok(&["launch", "mine", "c2"]);
    assert_eq!(b.ok(&["exec", "c2", "--", "cat", "/etc/marker"]), "from-a");
    let show = b.ok(&["image", "show", "mine"]);
    assert!(show.contains(&format!("fingerprint: {split_fp}")), "{show}");

    // A second launch of the same remote image downloads nothing new.
    b.ok(&["launch", "a:busybox", "c3"]);
    let (_, all) = b.http("GET", "/1.0/images", None);
    assert_eq!(all["metadata"].as_array().map(Vec::len), Some(2), "{all}");

    // Unknown alias: 404 naming what the server has.
    let r = b.ctl(&["launch", "a:nosuch", "c4"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("nosuch")
            && r.stderr.contains("busybox")
            && r.stderr.contains("marker/one"),
        "{}",
        r.stderr
    );
    let (code, body) = b.http(
        "POST",
        "/1.0/instances",
        Some(&format!(
            r#"{{"name": "c5", "source": {{"type": "image", "mode": "pull", "server": "{url}", "protocol": "simplestreams", "alias": "nosuch"}}}}"#
        )),
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = b.http(
        "POST",
        "/1.0/instances",
        Some(&format!(
            r#"{{"name": "c5", "source": {{"type": "image", "server": "{url}", "protocol": "lxd", "alias": "busybox"}}}}"#
        )),
    );
    assert_eq!(code, 400, "{body}");
    assert!(!b.instances().contains(&"c5".to_string()));
}

/// A static simplestreams tree served by `tests/ss_server.py`, killed on drop.
struct StaticServer {
    child: Child,
    url: String,
    log: PathBuf,
}

impl StaticServer {
    fn start(root: &Path, log: &Path, cuts: &[String]) -> StaticServer {
        StaticServer::start_tls(root, log, cuts, None)
    }

    /// With `tls` (cert, key): HTTPS, and the URL names `localhost`.
    fn start_tls(
        root: &Path,
        log: &Path,
        cuts: &[String],
        tls: Option<(&Path, &Path)>,
    ) -> StaticServer {
        StaticServer::start_full(root, log, cuts, tls, &[])
    }

    /// With `redirects` (`PATH=URL`): those paths answer 302 to the URL.
    fn start_full(
        root: &Path,
        log: &Path,
        cuts: &[String],
        tls: Option<(&Path, &Path)>,
        redirects: &[String],
    ) -> StaticServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ss_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(root).arg(log);
        for r in redirects {
            cmd.arg("--redirect").arg(r);
        }
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        for c in cuts {
            cmd.arg("--cut").arg(c);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start ss_server.py: {e}"));
        let mut port = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut port);
        }
        let url = match tls {
            Some(_) => format!("https://localhost:{}", port.trim()),
            None => format!("http://127.0.0.1:{}", port.trim()),
        };
        StaticServer {
            child,
            url,
            log: log.to_path_buf(),
        }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stored image file (`images/<fp>/image.*`) of `d`'s image `fp`.
fn stored_image_file(d: &Daemon, fp: &str) -> PathBuf {
    let image_dir = d.path().join("images").join(fp);
    std::fs::read_dir(&image_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", image_dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("image."))
        })
        .unwrap_or_else(|| panic!("no stored image file in {}", image_dir.display()))
}

/// Write a simplestreams tree under `root`: `streams/v1/index.json` and an images.json
/// with `products` (id → product).
fn write_tree(root: &Path, products: serde_json::Value) {
    std::fs::create_dir_all(root.join("streams/v1")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let ids: Vec<String> = products
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let catalog = serde_json::json!({
        "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
        "products": products,
    });
    let index = serde_json::json!({"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json",
        "format": "products:1.0", "products": ids}}});
    std::fs::write(root.join("streams/v1/images.json"), catalog.to_string())
        .unwrap_or_else(|e| panic!("w: {e}"));
    std::fs::write(root.join("streams/v1/index.json"), index.to_string())
        .unwrap_or_else(|e| panic!("w: {e}"));
}

/// A product entry for a unified image file.
fn product(alias: &str, path: &str, sha: &str, size: u64) -> serde_json::Value {
    serde_json::json!({
        "aliases": alias, "arch": "amd64", "os": "BusyBox", "release": alias,
        "variant": "default",
        "versions": {"20261129_00:00": {"items": {
            "incus_combined.tar.gz": {"ftype": "incus_combined.tar.gz", "sha256": sha,
                                      "size": size, "path": path}
        }}}
    })
}

#[test]
fn downloads_resume_and_bad_files_are_refused() {
    if !require_root("downloads_resume_and_bad_files_are_refused") {
        return;
    }
    let a = Daemon::start();
    let fp = busybox_fingerprint(&a);
    let tree = tempfile::tempdir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let root = tree.path().join("www");
    std::fs::create_dir_all(root.join("files")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let stored = stored_image_file(&a, &fp);
    let good = root.join("files/good.tar");
    std::fs::copy(&stored, &good).unwrap_or_else(|e| panic!("copy: {e}"));
    let size = std::fs::metadata(&good)
        .map(|m| m.len())
        .unwrap_or_default();
    assert_eq!(sha256(&good), fp);
    // Another image the server claims (never stored here): the good file plus padding.
    let mut other = std::fs::read(&good).unwrap_or_else(|e| panic!("read: {e}"));
    other.extend_from_slice(&[0u8; 4096]);
    std::fs::write(tree.path().join("other.tar"), &other).unwrap_or_else(|e| panic!("w: {e}"));
    let other_fp = sha256(&tree.path().join("other.tar"));
    let other_size = other.len() as u64;
    // Tampered: one byte changed, the catalog still gives the original checksum.
    let mut bytes = other.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(root.join("files/tampered.tar"), &bytes).unwrap_or_else(|e| panic!("w: {e}"));
    // Truncated: the server only has half of it.
    std::fs::write(root.join("files/short.tar"), &other[..mid])
        .unwrap_or_else(|e| panic!("w: {e}"));
    write_tree(
        &root,
        serde_json::json!({
            "busybox:good:amd64:default": product("good", "files/good.tar", &fp, size),
            "busybox:tampered:amd64:default":
                product("tampered", "files/tampered.tar", &other_fp, other_size),
            "busybox:short:amd64:default":
                product("short", "files/short.tar", &other_fp, other_size),
        }),
    );
    let server = StaticServer::start(
        &root,
        &tree.path().join("requests.log"),
        &[format!("/files/good.tar={}", size / 3)],
    );

    let b = Daemon::start();
    let remote = unique("ss");
    b.ok(&["remote", "add", &remote, &server.url]);

    // Tampered: refused with the checksum in the message; nothing stored.
    let r = b.ctl(&["launch", &format!("{remote}:tampered"), "t1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("checksum mismatch"), "{}", r.stderr);
    // Truncated: refused after retries, with a clear message.
    let r = b.ctl(&["launch", &format!("{remote}:short"), "t2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!("of {other_size} bytes")),
        "{}",
        r.stderr
    );
    let (_, images) = b.http("GET", "/1.0/images", None);
    assert_eq!(images["metadata"], serde_json::json!([]), "nothing stored");
    assert!(b.instances().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(b.path().join("images"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "image dirs left: {leftovers:?}");
    let tmp: Vec<_> = std::fs::read_dir(b.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "work dirs left: {tmp:?}");

    // The good file: the first GET is cut after a third; the download resumes with Range.
    b.ok(&["launch", &format!("{remote}:good"), "g1"]);
    assert_eq!(b.ok(&["exec", "g1", "--", "echo", "ok"]).trim(), "ok");
    let log = server.requests();
    assert!(
        log.contains(&format!("GET /files/good.tar range=bytes={}-", size / 3)),
        "no resumed request in:\n{log}"
    );
    let (code, _) = b.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(code, 200);
    assert!(
        !b.path().join("downloads").join(&fp).exists(),
        "the download dir is removed once imported"
    );
}

#[test]
fn https_servers_are_verified_against_the_trusted_cas() {
    if !require_root("https_servers_are_verified_against_the_trusted_cas") {
        return;
    }
    let a = Daemon::start();
    let fp = busybox_fingerprint(&a);
    let tree = tempfile::tempdir().unwrap_or_else(|e| panic!("tmp: {e}"));
    let root = tree.path().join("www");
    let stored = stored_image_file(&a, &fp);
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::copy(&stored, root.join("image.tar")).unwrap_or_else(|e| panic!("copy: {e}"));
    let size = std::fs::metadata(&stored)
        .map(|m| m.len())
        .unwrap_or_default();
    write_tree(
        &root,
        serde_json::json!({
            "busybox:tls:amd64:default": product("tls/busybox", "image.tar", &fp, size),
            "busybox:redir:amd64:default":
                product("tls/redirected", "redir.tar", &"e".repeat(64), size),
        }),
    );
    // A test CA, and a certificate for localhost it signs; only the second daemon trusts it.
    let ca_key = tree.path().join("ca.key");
    let ca = tree.path().join("ca.pem");
    let cert = tree.path().join("cert.pem");
    let key = tree.path().join("key.pem");
    let csr = tree.path().join("cert.csr");
    let ext = tree.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap_or_else(|e| panic!("w: {e}"));
    let openssl = |args: &[&str]| {
        run(Command::new("openssl")
            .current_dir(tree.path())
            .args(args)
            .stderr(Stdio::null()));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=ctl test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    assert!(ca_key.is_file() && csr.is_file());
    let server = StaticServer::start_full(
        &root,
        &tree.path().join("log"),
        &[],
        Some((&cert, &key)),
        // A downgrade to plain http (never contacted: refused before).
        &["/redir.tar=http://127.0.0.1:9/redir.tar".to_string()],
    );

    // Not trusted: refused with a TLS error, nothing stored.
    let untrusting = Daemon::start();
    untrusting.ok(&["remote", "add", "tls", &server.url]);
    let r = untrusting.ctl(&["launch", "tls:tls/busybox", "x1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("TLS"), "{}", r.stderr);
    assert!(untrusting.instances().is_empty());

    let cert_file = ca.to_string_lossy().into_owned();
    let b = Daemon::start_with_env(&[], &[("SSL_CERT_FILE", &cert_file)]);
    b.ok(&["remote", "add", "tls", &server.url]);
    let r = b.ctl(&["launch", "tls:tls/redirected", "t0"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("refusing a redirect from https"),
        "{}",
        r.stderr
    );
    b.ok(&["launch", "tls:tls/busybox", "t1"]);
    assert_eq!(b.ok(&["exec", "t1", "--", "echo", "tls"]).trim(), "tls");
    let (code, _) = b.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(code, 200);
}
