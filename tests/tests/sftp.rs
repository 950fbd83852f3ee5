//! `GET /1.0/instances/{name}/sftp` driven by the real Incus 6.0 client: every `incus file`
//! command (push, pull, `-r`, `--uid/--gid/--mode`, edit, delete) runs SFTP over the upgraded
//! connection against a real ctld and a running unprivileged busybox container. Contents and
//! owners are checked from inside (`ctl exec`) and owners also from the host (shifted by the
//! container's id map); symlinks inside the container pointing at host paths, and `..`
//! climbing ones, must resolve inside the container. Run as root.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ctl_tests::{Daemon, require_root, unique};

/// `incus` pointed at one daemon's socket, with its own config dir.
struct Incus {
    bin: PathBuf,
    dir: PathBuf,
    conf: tempfile::TempDir,
}

impl Incus {
    fn new(bin: PathBuf, d: &Daemon) -> Incus {
        Incus {
            bin,
            dir: d.path().to_path_buf(),
            conf: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("INCUS_DIR", &self.dir)
            .env("INCUS_CONF", self.conf.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("incus {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "incus {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(mut seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sh -c script` inside the instance; its stdout.
fn sh(d: &Daemon, name: &str, script: &str) -> String {
    d.ok(&["exec", name, "--", "sh", "-c", script])
}

/// A host file that must never be read or written through the container, removed on drop.
struct HostProbe(PathBuf);

impl HostProbe {
    fn new(content: &str) -> HostProbe {
        let p = std::env::temp_dir().join(unique("ctl-sftp-host-probe"));
        write(&p, content.as_bytes());
        HostProbe(p)
    }
}

impl Drop for HostProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn incus_file_commands_run_over_sftp() {
    if !require_root("incus_file_commands_run_over_sftp") {
        return;
    }
    let Some(bin) = ctl_tests::clients::incus_program() else {
        return;
    };
    let d = Daemon::start();
    let c = unique("sftp");
    d.ok(&["launch", "busybox", &c]);
    let incus = Incus::new(bin, &d);
    let host_root_uid = d.init_host_uid(&c);
    assert_ne!(host_root_uid, 0, "the container should be unprivileged");
    let local = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let l = local.path();
    sh(&d, &c, "mkdir -p /root /tmp");

    // push: a file larger than one SFTP write, then pulled back byte for byte.
    let big = noise(7, 700_000 + 13);
    write(&l.join("big"), &big);
    incus.ok(&[
        "file",
        "push",
        &l.join("big").display().to_string(),
        &format!("{c}/root/big"),
    ]);
    assert_eq!(
        sh(&d, &c, "wc -c < /root/big; stat -c '%u:%g' /root/big")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["700013", "0:0"]
    );
    incus.ok(&[
        "file",
        "pull",
        &format!("{c}/root/big"),
        &l.join("big.back").display().to_string(),
    ]);
    assert!(read(&l.join("big.back")) == big, "pulled content differs");

    // --uid/--gid/--mode: container ids inside, shifted ids on the host.
    write(&l.join("owned"), b"owned\n");
    incus.ok(&[
        "file",
        "push",
        "--uid",
        "1000",
        "--gid",
        "1001",
        "--mode",
        "0640",
        &l.join("owned").display().to_string(),
        &format!("{c}/root/owned"),
    ]);
    assert_eq!(
        sh(&d, &c, "stat -c '%u %g %a' /root/owned; cat /root/owned"),
        "1000 1001 640\nowned\n"
    );
    let pid = d.init_pid(&c);
    let host = std::fs::metadata(format!("/proc/{pid}/root/root/owned"))
        .unwrap_or_else(|e| panic!("host view: {e}"));
    assert_eq!(
        (host.uid(), host.gid(), host.permissions().mode() & 0o7777),
        (host_root_uid + 1000, host_root_uid + 1001, 0o640),
        "host-side owner must be the shifted one"
    );

    // push -r: a tree with a nested directory, files and a symlink.
    let tree = l.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap_or_else(|e| panic!("{e}"));
    write(&tree.join("a.txt"), b"alpha\n");
    write(&tree.join("sub/deeper/b.bin"), &noise(3, 70_000));
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap_or_else(|e| panic!("{e}"));
    incus.ok(&[
        "file",
        "push",
        "-r",
        &tree.display().to_string(),
        &format!("{c}/root/"),
    ]);
    assert_eq!(
        sh(
            &d,
            &c,
            "cd /root/tree && cat a.txt && wc -c < sub/deeper/b.bin && readlink link && cat link"
        ),
        "alpha\n70000\na.txt\nalpha\n"
    );

    // pull -r: the same tree back.
    let back = l.join("back");
    std::fs::create_dir(&back).unwrap_or_else(|e| panic!("{e}"));
    incus.ok(&[
        "file",
        "pull",
        "-r",
        &format!("{c}/root/tree"),
        &back.display().to_string(),
    ]);
    assert_eq!(read(&back.join("tree/a.txt")), b"alpha\n");
    assert!(read(&back.join("tree/sub/deeper/b.bin")) == noise(3, 70_000));
    assert_eq!(
        std::fs::read_link(back.join("tree/link")).ok(),
        Some(PathBuf::from("a.txt"))
    );

    // edit: pulled, changed by $EDITOR on a terminal, pushed back.
    let editor = l.join("editor.sh");
    write(&editor, b"#!/bin/sh\necho edited >> \"$1\"\n");
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let edit = format!("{} file edit {c}/root/owned", incus.bin.display());
    let o = Command::new("script")
        .args(["-qec", &edit, "/dev/null"])
        .env("INCUS_DIR", &incus.dir)
        .env("INCUS_CONF", incus.conf.path())
        .env("EDITOR", &editor)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("script: {e}"));
    assert!(
        o.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        sh(&d, &c, "cat /root/owned; stat -c '%u %g %a' /root/owned"),
        "owned\nedited\n1000 1001 640\n"
    );

    // create: an empty file, a directory, a symlink.
    incus.ok(&["file", "create", &format!("{c}/root/empty")]);
    incus.ok(&[
        "file",
        "create",
        "--type=directory",
        &format!("{c}/root/newdir"),
    ]);
    incus.ok(&[
        "file",
        "create",
        "--type=symlink",
        &format!("{c}/root/newlink"),
        "/etc/hostname",
    ]);
    assert_eq!(
        sh(
            &d,
            &c,
            "wc -c < /root/empty; test -d /root/newdir && echo dir; readlink /root/newlink"
        ),
        "0\ndir\n/etc/hostname\n"
    );

    // delete: a file, then a directory tree (-f).
    incus.ok(&["file", "delete", &format!("{c}/root/big")]);
    assert_eq!(
        sh(&d, &c, "test -e /root/big && echo there || echo gone"),
        "gone\n"
    );
    incus.ok(&["file", "delete", "-f", &format!("{c}/root/tree")]);
    assert_eq!(
        sh(&d, &c, "test -e /root/tree && echo there || echo gone"),
        "gone\n"
    );
    let o = incus.run(&["file", "delete", &format!("{c}/root/missing")]);
    assert!(!o.status.success(), "deleting a missing file succeeded");
}

#[test]
fn sftp_paths_never_leave_the_container() {
    if !require_root("sftp_paths_never_leave_the_container") {
        return;
    }
    let Some(bin) = ctl_tests::clients::incus_program() else {
        return;
    };
    let d = Daemon::start();
    let c = unique("sftp-esc");
    d.ok(&["launch", "busybox", &c]);
    let incus = Incus::new(bin, &d);
    let local = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let l = local.path();
    let probe = HostProbe::new("HOST SECRET\n");
    let probe_path = probe.0.display().to_string();
    let probe_name = probe
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // The container's own /etc/shadow and a file at the probe's path inside it; symlinks
    // pointing at them the way a hostile container would.
    let probe_dir = probe
        .0
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    sh(
        &d,
        &c,
        &format!(
            "mkdir -p /tmp /root {probe_dir} && echo inside-shadow > /etc/shadow && \
             echo inside-probe > {probe_path} && ln -s /etc/shadow /tmp/x && \
             ln -s /etc /root/etcdir && ln -s ../../../../../../../.. /root/up && \
             ln -s {probe_dir} /root/probedir && ln -s /nonexistent-dir/{probe_name} /root/dangling"
        ),
    );
    let pull = |src: &str| -> Option<Vec<u8>> {
        let out = l.join(unique("pulled"));
        let o = incus.run(&[
            "file",
            "pull",
            &format!("{c}{src}"),
            &out.display().to_string(),
        ]);
        o.status.success().then(|| read(&out))
    };
    let host_shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    let inside_shadow = Some(&b"inside-shadow\n"[..]);
    // Pulling the symlink itself gives the symlink, as stored (incus makes it in its working
    // directory), never the host's file.
    let o = incus
        .command(&["file", "pull", &format!("{c}/tmp/x"), "pulled-link"])
        .current_dir(l)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_link(l.join("x")).ok(),
        Some(PathBuf::from("/etc/shadow"))
    );
    assert!(!l.join("pulled-link").is_file());
    // Through symlinked directories (absolute, climbing) and `..`: the container's files.
    assert_eq!(pull("/root/etcdir/shadow").as_deref(), inside_shadow);
    assert_eq!(pull("/root/up/etc/shadow").as_deref(), inside_shadow);
    assert_eq!(
        pull(&format!("/root/up{probe_path}")).as_deref(),
        Some(&b"inside-probe\n"[..])
    );
    assert_eq!(
        pull(&format!("/root/probedir/{probe_name}")).as_deref(),
        Some(&b"inside-probe\n"[..])
    );
    let got = pull("/root/../../../../etc/shadow");
    assert!(got.is_none() || got.as_deref() == inside_shadow, "{got:?}");

    // Pushes through the same links land inside; the host's files are untouched.
    write(&l.join("payload"), b"payload\n");
    let payload = l.join("payload").display().to_string();
    incus.ok(&["file", "push", &payload, &format!("{c}/tmp/x")]);
    assert_eq!(sh(&d, &c, "cat /etc/shadow"), "payload\n");
    incus.ok(&[
        "file",
        "push",
        &payload,
        &format!("{c}/root/probedir/{probe_name}"),
    ]);
    assert_eq!(sh(&d, &c, &format!("cat {probe_path}")), "payload\n");
    incus.ok(&[
        "file",
        "push",
        &payload,
        &format!("{c}/root/up/etc/passwd-probe"),
    ]);
    assert_eq!(sh(&d, &c, "cat /etc/passwd-probe"), "payload\n");
    assert!(
        !Path::new("/etc/passwd-probe").exists(),
        "a push reached the host"
    );
    // A dangling link into a directory that exists nowhere: refused, nothing made.
    let o = incus.run(&["file", "push", &payload, &format!("{c}/root/dangling")]);
    assert!(
        !o.status.success(),
        "push through a dangling link succeeded"
    );
    assert_eq!(read(&probe.0), b"HOST SECRET\n", "the host file changed");
    assert_eq!(
        std::fs::read("/etc/shadow").unwrap_or_default(),
        host_shadow
    );
    assert!(
        !Path::new("/nonexistent-dir").exists(),
        "a push reached the host"
    );
}

/// Send `request` on a new connection to the daemon; the status code of the answer and the
/// connection (positioned after the answer's head).
fn raw_request(d: &Daemon, request: &str) -> (u16, UnixStream) {
    let mut s = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("send: {e}"));
    // Read the head byte by byte, so nothing after it is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

fn upgrade_request(name: &str) -> String {
    format!(
        "GET /1.0/instances/{name}/sftp HTTP/1.1\r\nHost: ctl\r\nConnection: Upgrade\r\n\
         Upgrade: sftp\r\n\r\n"
    )
}

#[test]
fn the_upgrade_answers_101_then_speaks_sftp_and_refuses_before_it() {
    if !require_root("the_upgrade_answers_101_then_speaks_sftp_and_refuses_before_it") {
        return;
    }
    let d = Daemon::start();
    let c = unique("sftp-raw");
    d.ok(&["launch", "busybox", &c]);
    // No such instance: refused before any upgrade.
    let (status, _) = raw_request(&d, &upgrade_request("nope"));
    assert_eq!(status, 404);
    // Without `Upgrade: sftp`: a 400.
    let (status, body) = d.http("GET", &format!("/1.0/instances/{c}/sftp"), None);
    assert_eq!(status, 400, "{body}");
    // Upgraded: SSH_FXP_INIT (version 3) is answered by SSH_FXP_VERSION 3.
    let (status, mut s) = raw_request(&d, &upgrade_request(&c));
    assert_eq!(status, 101);
    s.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3])
        .unwrap_or_else(|e| panic!("send init: {e}"));
    let mut head = [0u8; 9];
    s.read_exact(&mut head)
        .unwrap_or_else(|e| panic!("read version: {e}"));
    assert_eq!(head[4], 2, "not SSH_FXP_VERSION: {head:?}");
    assert_eq!(&head[5..9], &[0, 0, 0, 3]);
    // The rest of the version packet (its extension pairs).
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut extensions = vec![0u8; len.saturating_sub(5)];
    s.read_exact(&mut extensions)
        .unwrap_or_else(|e| panic!("read version: {e}"));

    // SSH_FXP_STAT answers SSH_FXP_ATTRS while the instance runs; once it stopped, the
    // session's old root is no longer used: SSH_FXP_STATUS (failure).
    let stat = |s: &mut UnixStream, id: u8| -> Vec<u8> {
        let path = b"/etc/passwd";
        let mut p = vec![17, 0, 0, 0, id, 0, 0, 0, path.len() as u8];
        p.extend_from_slice(path);
        let mut packet = (p.len() as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&p);
        s.write_all(&packet)
            .unwrap_or_else(|e| panic!("send stat: {e}"));
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body)
            .unwrap_or_else(|e| panic!("read: {e}"));
        body
    };
    assert_eq!(stat(&mut s, 1)[0], 105, "not SSH_FXP_ATTRS");
    d.ok(&["stop", "-f", &c]);
    let answer = stat(&mut s, 2);
    assert_eq!(answer[0], 101, "not SSH_FXP_STATUS: {answer:?}");
    assert_eq!(
        &answer[5..9],
        &[0, 0, 0, 4],
        "not SSH_FX_FAILURE: {answer:?}"
    );
    assert!(
        String::from_utf8_lossy(&answer).contains("stopped"),
        "{answer:?}"
    );
    d.ok(&["start", &c]);
}
