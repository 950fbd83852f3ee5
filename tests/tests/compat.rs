//! Real LXD/Incus clients against ctld: LXD 5.0's `lxc` CLI (Debian's `lxd-client`) and
//! pylxd, pointed at the daemon's socket with `LXD_DIR`. These are the strongest checks that
//! the API follows Incus/LXD: envelopes, operations, events, exec websockets, files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ctl_tests::{Daemon, require_root};

fn available(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "{tool} is not installed (.ci/run installs it); CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("SKIP: {tool} not installed");
    }
    ok
}

struct Lxc {
    dir: PathBuf,
    conf: tempfile::TempDir,
}

impl Lxc {
    fn new(d: &Daemon) -> Lxc {
        Lxc {
            dir: d.path().to_path_buf(),
            conf: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("lxc");
        c.args(args)
            .env("LXD_DIR", &self.dir)
            .env("LXD_CONF", self.conf.path());
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().unwrap_or_else(|e| panic!("lxc {args:?}: {e}"));
        if let (Some(data), Some(mut si)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = si.write_all(data);
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("lxc {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "lxc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn lxd_lxc_cli_drives_ctld() {
    if !require_root("lxd_lxc_cli_drives_ctld") || !available("lxc", &["--version"]) {
        return;
    }
    let d = Daemon::start();
    let lxc = Lxc::new(&d);
    let info = lxc.ok(&["info"]);
    assert!(info.contains("api_version: \"1.0\""), "{info}");

    // lxc monitor sees what happens next.
    let mut monitor = lxc
        .cmd(&["monitor", "--type=lifecycle", "--format=json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("lxc monitor: {e}"));
    std::thread::sleep(Duration::from_millis(500));

    lxc.ok(&["launch", "busybox", "c1"]);
    let list = lxc.ok(&["list", "--format", "csv", "-c", "ns"]);
    assert_eq!(list.trim(), "c1,RUNNING");
    let table = lxc.ok(&["list"]);
    assert!(table.contains("c1") && table.contains("RUNNING"), "{table}");
    let info = lxc.ok(&["info", "c1"]);
    assert!(
        info.contains("Status: RUNNING") && info.contains("Processes:"),
        "{info}"
    );

    // exec: output, exit codes, stdin.
    let out = lxc.run(
        &[
            "exec",
            "c1",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = lxc.run(&["exec", "c1", "--", "wc", "-c"], Some(&[b'z'; 50_000]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "50000");
    // Interactive, on a real PTY.
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("pty_driver.py");
    let t = Command::new("python3")
        .arg(&driver)
        .arg("expect:#;;send:tty; stty size\\n;;expect:24 80;;send:exit 6\\n")
        .arg("--")
        .arg("lxc")
        .args(["exec", "c1", "--", "sh"])
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", lxc.conf.path())
        .output()
        .unwrap_or_else(|e| panic!("pty driver: {e}"));
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.contains("/dev/pts/") && t.trim_end().ends_with("EXIT 6"),
        "{t}"
    );

    // Files both ways, binary data.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let local = tmp.path().join("blob");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&local, &data).unwrap_or_else(|e| panic!("{e}"));
    lxc.ok(&[
        "file",
        "push",
        local.to_str().unwrap_or_default(),
        "c1/root/blob",
    ]);
    let back = tmp.path().join("back");
    lxc.ok(&[
        "file",
        "pull",
        "c1/root/blob",
        back.to_str().unwrap_or_default(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap_or_default(), data);

    // Server-side filters with LXD's semantics (case-insensitive, regular expressions).
    lxc.ok(&["init", "busybox", "idle"]);
    assert_eq!(
        lxc.ok(&["list", "status=running", "--format", "csv", "-c", "n"])
            .trim(),
        "c1"
    );
    assert_eq!(
        lxc.ok(&["list", "status=STOPPED", "--format", "csv", "-c", "n"])
            .trim(),
        "idle"
    );
    lxc.ok(&["delete", "idle"]);
    // Projects (the one there is), warnings (none), networks (the extensions advertised).
    let projects = lxc.ok(&["project", "list", "--format", "csv"]);
    assert!(projects.starts_with("default"), "{projects}");
    let refused = lxc.run(&["list", "--project", "other"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not found"),
        "{refused:?}"
    );
    lxc.ok(&["warning", "list"]);
    // `lxc console`, detached with Ctrl-a q, returns at once: the server ends the console
    // session when the client closes its control stream. (lxc looks for the escape at the
    // start of each read: Ctrl-a and q go as two writes, as typed.)
    let started = std::time::Instant::now();
    let t = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pty_driver.py"))
        .arg("expect:ctrl;;sleep:0.5;;send:\\x01;;sleep:0.3;;send:q")
        .arg("--")
        .arg("lxc")
        .args(["console", "c1"])
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", lxc.conf.path())
        .output()
        .unwrap_or_else(|e| panic!("pty driver: {e}"));
    let t = String::from_utf8_lossy(&t.stdout);
    assert!(t.trim_end().ends_with("EXIT 0"), "lxc console detach: {t}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "detaching took {:?}",
        started.elapsed()
    );
    let shown = lxc.ok(&["info", "c1", "--show-log"]);
    assert!(
        shown.contains("Log:") && shown.contains("started"),
        "{shown}"
    );
    let net = format!("cx{}", std::process::id() % 100_000);
    lxc.ok(&["network", "create", &net]);
    let nets = lxc.ok(&["network", "list", "--format", "csv"]);
    assert!(nets.contains(&net), "{nets}");
    let shown = lxc.ok(&["network", "info", &net]);
    assert!(shown.contains("State: up"), "{shown}");
    lxc.ok(&["network", "delete", &net]);

    lxc.ok(&["stop", "c1"]);
    assert_eq!(
        lxc.ok(&["list", "--format", "csv", "-c", "ns"]).trim(),
        "c1,STOPPED"
    );
    lxc.ok(&["start", "c1"]);
    lxc.ok(&["delete", "-f", "c1"]);
    assert_eq!(lxc.ok(&["list", "--format", "csv", "-c", "n"]).trim(), "");

    let _ = monitor.kill();
    let out = monitor
        .wait_with_output()
        .unwrap_or_else(|e| panic!("lxc monitor: {e}"));
    let events = String::from_utf8_lossy(&out.stdout);
    for action in [
        "instance-created",
        "instance-started",
        "instance-stopped",
        "instance-deleted",
    ] {
        assert!(
            events.contains(action),
            "lxc monitor missed {action}: {events}"
        );
    }
}

#[test]
fn incus_client_drives_ctld() {
    if !require_root("incus_client_drives_ctld") {
        return;
    }
    let Some(incus) = ctl_tests::clients::incus_program() else {
        return;
    };
    let d = Daemon::start();
    let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        Command::new(&incus)
            .args(args)
            .env("INCUS_DIR", d.path())
            .env("INCUS_CONF", conf.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("incus {args:?}: {e}"))
    };
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(
            o.status.success(),
            "incus {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // `launch` creates and starts in one operation (instance_create_start): exit 0.
    ok(&["launch", "busybox", "c1"]);
    assert_eq!(
        ok(&["list", "--format", "csv", "-c", "ns"]).trim(),
        "c1,RUNNING"
    );
    let o = run(&["exec", "c1", "--", "sh", "-c", "echo out; exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    let projects = ok(&["project", "list", "--format", "csv"]);
    assert!(projects.starts_with("default"), "{projects}");
    ok(&["network", "list"]);
    ok(&["config", "set", "c1", "boot.autostart", "true"]);
    assert_eq!(
        ok(&["config", "get", "c1", "boot.autostart"]).trim(),
        "true"
    );
    ok(&["stop", "c1"]);
    assert_eq!(
        ok(&["list", "--format", "csv", "-c", "ns"]).trim(),
        "c1,STOPPED"
    );
    ok(&["delete", "c1"]);
    assert_eq!(ok(&["list", "--format", "csv", "-c", "n"]).trim(), "");
}

#[test]
fn pylxd_drives_ctld() {
    if !require_root("pylxd_drives_ctld") || !available("python3", &["-c", "import pylxd"]) {
        return;
    }
    let d = Daemon::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pylxd_flow.py");
    let out = Command::new("python3")
        .arg(script)
        .env("LXD_DIR", d.path())
        .current_dir(d.path())
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in [
        "connect",
        "create",
        "all",
        "start",
        "execute",
        "files",
        "snapshots",
        "stop",
        "stopped files",
        "rename",
        "profiles",
        "delete",
        "image",
        "storage",
    ] {
        assert!(
            stdout.contains(&format!("ok {step}\n")),
            "missing {step}: {stdout}"
        );
    }
}
