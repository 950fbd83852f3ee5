//! Clients that hold connections without using them cannot take the daemon down: idle
//! connections are closed after the header timeout, connections beyond the cap are closed
//! when accepted, `ctl list` answers meanwhile, and the memory they took is given back.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, require_root, wait_until};

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Let this test process hold `n` descriptors (its soft limit is often 1024).
fn allow_open_files(n: u64) {
    let ok = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={n}:{n}"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "prlimit --nofile={n}");
}

/// Whether the server closed `s` (a read returns end-of-file, or the connection was reset)
/// within `wait`.
fn closed_by_server(s: &mut UnixStream, wait: Duration) -> bool {
    let _ = s.set_read_timeout(Some(wait));
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// `ctl list` run to the end: its wall time.
fn timed_list(d: &Daemon) -> Duration {
    let t = Instant::now();
    d.ok(&["list", "--format", "csv"]);
    t.elapsed()
}

#[test]
fn two_thousand_idle_connections_time_out_and_list_still_answers() {
    if !require_root("two_thousand_idle_connections_time_out_and_list_still_answers") {
        return;
    }
    allow_open_files(8192);
    let d = Daemon::start_with(&["--header-timeout", "3"]);
    d.ok(&["init", "busybox", "c1"]);
    let before = rss_kib(d.pid());
    let opened = Instant::now();
    let mut idle: Vec<UnixStream> = (0..2000)
        .map(|i| UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let list_held = timed_list(&d);
    let during = rss_kib(d.pid());
    println!(
        "2000 idle connections: ctl list {:.1} ms; RSS {} KiB before, {} KiB with them open",
        list_held.as_secs_f64() * 1000.0,
        before,
        during
    );
    // A generous bound (a loaded CI machine); the number is printed above.
    assert!(
        list_held < Duration::from_secs(2),
        "ctl list took {list_held:?}"
    );
    // The header timeout (3 s) closes every one of them.
    let mut closed = 0;
    for s in &mut idle {
        let left = Duration::from_secs(10).saturating_sub(opened.elapsed());
        if closed_by_server(s, left.max(Duration::from_millis(10))) {
            closed += 1;
        }
    }
    println!(
        "{closed} of 2000 idle connections closed by the daemon after {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    assert_eq!(closed, 2000, "idle connections must time out");
    drop(idle);
    // The memory they took is given back: RSS within 8 MiB of where it was before they
    // opened (they took ~20 MiB), whatever the build's own baseline.
    let bound = before + 8 * 1024;
    let mut after = rss_kib(d.pid());
    wait_until(Duration::from_secs(5), || {
        after = rss_kib(d.pid());
        after < bound
    });
    println!("RSS after they closed: {after} KiB");
    assert!(
        after < bound,
        "RSS {after} KiB after the connections closed ({before} KiB before them)"
    );
    let list_after = timed_list(&d);
    assert!(list_after < Duration::from_secs(2));
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    if !require_root("connections_beyond_the_cap_are_closed_at_once") {
        return;
    }
    let d = Daemon::start_with(&["--max-connections", "20"]);
    // The harness' readiness probe connected once: let the daemon see it end.
    std::thread::sleep(Duration::from_millis(200));
    let mut held: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}")))
        .collect();
    // The daemon accepts the held ones first (they came first); give it the moment to.
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(2)),
        "the 21st connection must be closed"
    );
    // Held connections are served: one answers a request.
    use std::io::Write;
    let s = &mut held[0];
    s.write_all(b"GET /1.0 HTTP/1.1\r\nHost: ctl\r\n\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(held);
    // Once they are gone, new clients get in again.
    assert!(
        wait_until(Duration::from_secs(5), || d.ctl(&["list"]).code == 0),
        "ctl list after the held connections closed"
    );
    assert!(
        d.log().contains("too many connections"),
        "the refusal is logged"
    );
}

/// Websockets (events, exec, console) keep their connection's slot after the upgrade:
/// they count against the cap until they close.
#[test]
fn upgraded_connections_count_against_the_cap() {
    if !require_root("upgraded_connections_count_against_the_cap") {
        return;
    }
    let d = Daemon::start_with(&["--max-connections", "5"]);
    std::thread::sleep(Duration::from_millis(200));
    let mut sockets = Vec::new();
    for i in 0..5 {
        let stream = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
        let (ws, response) = tungstenite::client("ws://ctl/1.0/events?type=lifecycle", stream)
            .unwrap_or_else(|e| panic!("websocket {i}: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        sockets.push(ws);
    }
    let mut extra = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(2)),
        "five websockets hold the five slots"
    );
    for mut ws in sockets {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    assert!(
        wait_until(Duration::from_secs(5), || d.ctl(&["list"]).code == 0),
        "slots given back when the websockets closed"
    );
}
