//! End-to-end tests of `ctl exec` on a real PTY (driven by `tests/pty_driver.py`, a small
//! pty harness: keystrokes in, transcript out, window resizes), signal forwarding, users,
//! and concurrent execs. Real daemon, real containers, real devpts.

use std::process::{Command, Stdio};
use std::time::Duration;

use ctl_tests::{Daemon, bin_dir, require_root};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn interactive_exec_on_a_real_pty() {
    root_or_skip!("interactive_exec_on_a_real_pty");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "tty1"]);
    let script = [
        "expect:#",
        "send:tty; stty size\\n",
        "expect:24 80",
        "resize:40x120",
        "sleep:0.5",
        "send:stty size\\n",
        "expect:40 120",
        "send:sleep 100; echo after\\n",
        "sleep:1",
        "send:\\x03",
        "send:echo done $?\\n",
        "expect:done 130",
        "send:echo $TERM\\n",
        "expect:xterm",
        "send:exit 3\\n",
    ]
    .join(";;");
    let (ok, t) = d.ctl_on_pty(&script, &["exec", "tty1", "--", "sh"]);
    assert!(ok, "{t}");
    // The PTY comes from the container's own devpts.
    assert!(t.contains("/dev/pts/0"), "{t}");
    // (The typed line is echoed; the command's own output would be a line of its own.)
    assert!(
        !t.lines().any(|l| l.trim() == "after"),
        "Ctrl-C did not reach the sleep: {t}"
    );
    assert!(t.trim_end().ends_with("EXIT 3"), "{t}");
    // Nothing of the session is left in the container.
    let ps = d.ok(&["exec", "tty1", "--", "ps", "-o", "comm"]);
    assert!(!ps.contains("sleep"), "{ps}");
}

#[test]
fn shell_is_a_login_shell() {
    root_or_skip!("shell_is_a_login_shell");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "sh1"]);
    let (ok, t) = d.ctl_on_pty(
        "expect:#;;send:echo shell=$0 home=$HOME\\n;;expect:shell=-sh home=/root;;send:exit 0\\n",
        &["shell", "sh1"],
    );
    assert!(ok, "{t}");
    assert!(t.trim_end().ends_with("EXIT 0"), "{t}");
}

#[test]
fn no_pty_when_forced_or_piped() {
    root_or_skip!("no_pty_when_forced_or_piped");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "np"]);
    // On a terminal but with -T: pipes, so `tty` says so.
    let (_, t) = d.ctl_on_pty("", &["exec", "-T", "np", "--", "tty"]);
    assert!(t.contains("not a tty"), "{t}");
    // Piped (the test's own stdio) but -t: a PTY.
    let out = d.ok(&["exec", "-t", "np", "--", "tty"]);
    assert!(out.starts_with("/dev/pts/"), "{out}");
}

#[test]
fn signals_are_forwarded_without_a_terminal() {
    root_or_skip!("signals_are_forwarded_without_a_terminal");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "sig"]);
    let child = Command::new(bin_dir().join("ctl"))
        .args([
            "exec",
            "sig",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 1; done",
        ])
        .env("CTL_DIR", d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ctl: {e}"));
    std::thread::sleep(Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for ctl: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ready") && stdout.contains("got-term"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(7), "{stdout}");
}

#[test]
fn users_groups_cwd_and_concurrent_execs() {
    root_or_skip!("users_groups_cwd_and_concurrent_execs");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "cc"]);
    let out = d.ok(&[
        "exec", "cc", "--user", "1000", "--group", "1001", "--cwd", "/tmp", "--", "sh", "-c",
        "id; pwd",
    ]);
    assert_eq!(out, "uid=1000 gid=1001 groups=1001\n/tmp\n");
    // Eight at once, each with its own output and exit code.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let bin = bin_dir().join("ctl");
            let dir = d.path().to_path_buf();
            std::thread::spawn(move || {
                Command::new(bin)
                    .args([
                        "exec",
                        "cc",
                        "--",
                        "sh",
                        "-c",
                        &format!("echo job-{i}; exit {i}"),
                    ])
                    .env("CTL_DIR", dir)
                    .stdin(Stdio::null())
                    .output()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h
            .join()
            .unwrap_or_else(|_| panic!("thread {i}"))
            .unwrap_or_else(|e| panic!("ctl {i}: {e}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("job-{i}\n"));
        assert_eq!(out.status.code(), Some(i as i32));
    }
}

#[test]
fn recorded_exec_output_lands_in_instance_logs() {
    root_or_skip!("recorded_exec_output_lands_in_instance_logs");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "rec"]);
    let (code, v) = d.http(
        "POST",
        "/1.0/instances/rec/exec",
        Some(
            r#"{"command":["sh","-c","echo to-out; echo to-err >&2; exit 9"],
                "wait-for-websocket":false,"record-output":true,"interactive":false}"#,
        ),
    );
    assert_eq!(code, 202, "{v}");
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    let (_, done) = d.http("GET", &format!("{op}/wait?timeout=30"), None);
    let m = &done["metadata"]["metadata"];
    assert_eq!(m["return"], 9, "{done}");
    let (out, err) = (
        m["output"]["1"].as_str().unwrap_or_default().to_string(),
        m["output"]["2"].as_str().unwrap_or_default().to_string(),
    );
    assert!(out.starts_with("/1.0/instances/rec/logs/exec_"), "{done}");
    assert_eq!(
        d.http_text("GET", &out, None),
        (200, "to-out\n".to_string())
    );
    assert_eq!(
        d.http_text("GET", &err, None),
        (200, "to-err\n".to_string())
    );
    let (_, logs) = d.http("GET", "/1.0/instances/rec/logs", None);
    // The two recorded outputs, and the monitor's own log (as LXD lists lxc.log).
    assert_eq!(logs["metadata"].as_array().map(Vec::len), Some(3), "{logs}");
    assert!(logs.to_string().contains("/logs/monitor.log"), "{logs}");
    let (code, _) = d.http("DELETE", &out, None);
    assert_eq!(code, 200);
    assert_eq!(d.http("GET", &out, None).0, 404);
    assert_eq!(
        d.http("GET", "/1.0/instances/rec/logs/..%2Fconsole.log", None)
            .0,
        404
    );
}

#[test]
fn exec_inherits_no_daemon_descriptor() {
    root_or_skip!("exec_inherits_no_daemon_descriptor");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "fds"]);
    // `ls` itself opens one descriptor for the directory it lists.
    for args in [
        vec!["exec", "-T", "fds", "--"],
        vec!["exec", "-t", "fds", "--"],
    ] {
        let mut argv = args.clone();
        argv.extend(["ls", "/proc/self/fd"]);
        let out = d.ok(&argv);
        let fds: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{argv:?}: {out:?}");
    }
}

#[test]
fn a_flooded_pty_or_a_lingering_child_never_hangs_an_exec() {
    root_or_skip!("a_flooded_pty_or_a_lingering_child_never_hangs_an_exec");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "flood"]);
    // 4 MiB into a PTY whose command never reads: the exit still comes through.
    let start = std::time::Instant::now();
    let r = d.ctl_stdin(
        &["exec", "-t", "flood", "--", "sh", "-c", "sleep 1; exit 4"],
        Some(&vec![b'y'; 4 << 20]),
    );
    assert_eq!(r.code, 4, "{:?}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    // A background process keeping stdout open does not keep the exec alive.
    let start = std::time::Instant::now();
    let r = d.ctl(&["exec", "flood", "--", "sh", "-c", "sleep 30 & echo started"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "started\n"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}
