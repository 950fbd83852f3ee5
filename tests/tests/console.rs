//! End-to-end tests of the container console: a PTY held by the monitor, its bounded ring
//! log (`GET`/`DELETE /1.0/instances/{name}/console`, `ctl console --show-log`), attaching
//! through `ctl console` on a real PTY (tests/pty_driver.py) and detaching with Ctrl-a q.

use ctl_tests::{Daemon, require_root};

#[test]
fn console_log_attach_detach_and_clear() {
    if !require_root("console_log_attach_detach_and_clear") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "con"]);
    // The busybox image runs a shell on its console: its banner is in the log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut log = String::new();
    while std::time::Instant::now() < deadline && !log.contains("built-in shell") {
        log = d.ok(&["console", "--show-log", "con"]);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(log.contains("built-in shell"), "{log:?}");
    // Writes to /dev/console from inside land there too.
    d.ok(&[
        "exec",
        "con",
        "--",
        "sh",
        "-c",
        "echo from-exec > /dev/console",
    ]);
    let (code, raw) = d.http_text("GET", "/1.0/instances/con/console", None);
    assert_eq!(code, 200);
    assert!(raw.contains("from-exec"), "{raw:?}");

    // Attach, type into the console's shell, detach with Ctrl-a q.
    let (ok, t) = d.ctl_on_pty(
        "expect:detach;;send:\\r;;send:echo hello-$((6*7))\\r;;expect:hello-42;;send:\\x01q",
        &["console", "con"],
    );
    assert!(ok, "{t}");
    assert!(t.trim_end().ends_with("EXIT 0"), "{t}");
    // The session's output is in the ring log; the shell is still there.
    assert!(d.ok(&["console", "--show-log", "con"]).contains("hello-42"));

    // Clearing empties it.
    let (code, _) = d.http("DELETE", "/1.0/instances/con/console", None);
    assert_eq!(code, 200);
    assert!(!d.ok(&["console", "--show-log", "con"]).contains("hello-42"));

    // After a stop the last output stays readable; attaching is refused.
    d.ok(&[
        "exec",
        "con",
        "--",
        "sh",
        "-c",
        "echo last-words > /dev/console",
    ]);
    d.ok(&["stop", "-f", "con"]);
    assert!(
        d.ok(&["console", "--show-log", "con"])
            .contains("last-words")
    );
    let r = d.ctl(&["console", "con"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not running"), "{r:?}");
    // The monitor's socket is gone with it.
    assert!(!d.path().join("run/con.console").exists());
}

#[test]
fn console_ring_is_bounded() {
    if !require_root("console_ring_is_bounded") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "big"]);
    // 1 MiB through the console: the log keeps only the newest 128 KiB.
    d.ok(&[
        "exec",
        "big",
        "--",
        "sh",
        "-c",
        "head -c 1048576 /dev/zero | tr '\\0' 'x' > /dev/console; echo THE-END > /dev/console",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, raw) = d.http_text("GET", "/1.0/instances/big/console", None);
    assert_eq!(code, 200);
    assert!(raw.len() <= 128 * 1024 + 64, "{} bytes", raw.len());
    assert!(raw.len() >= 100 * 1024, "{} bytes", raw.len());
    assert!(raw.contains("THE-END"));
}

#[test]
fn a_flooded_console_never_blocks_the_monitor() {
    if !require_root("a_flooded_console_never_blocks_the_monitor") {
        return;
    }
    use std::io::Write;
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "fl"]);
    // Attach straight to the monitor and paste 8 MiB while the console's shell is busy.
    let sock = d.path().join("run/fl.console");
    let mut conn = std::os::unix::net::UnixStream::connect(&sock)
        .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    conn.write_all(b"attach\n")
        .unwrap_or_else(|e| panic!("{e}"));
    conn.write_all(b"sleep 5\r")
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(3)));
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..128 {
            if conn.write_all(&chunk).is_err() {
                break;
            }
        }
        conn
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    // The monitor still answers, and a stop completes (it reaps the init).
    let start = std::time::Instant::now();
    let (code, _) = d.http_text("GET", "/1.0/instances/fl/console", None);
    assert_eq!(code, 200);
    d.ok(&["stop", "-f", "fl"]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let _ = writer.join();
}
