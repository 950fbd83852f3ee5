//! End-to-end tests of the event stream: a websocket on `/1.0/events` over the real daemon's
//! socket sees the lifecycle and operation events of real `ctl` commands, `ctl monitor`
//! prints them, and a listener that never reads is disconnected without slowing the daemon.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, bin_dir, require_root, wait_until};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// A websocket on `/1.0/events` of a daemon.
struct Listener {
    ws: WebSocket<UnixStream>,
}

/// What reading the next event gave.
#[derive(Debug)]
enum Next {
    Event(Value),
    /// Nothing arrived in time.
    Quiet,
    /// The server closed the stream (a close frame, EOF or a broken connection).
    Closed(String),
}

impl Listener {
    /// Connect with `query` (`""`, `"?type=lifecycle"`...) and wait until the daemon has
    /// subscribed it.
    fn connect(d: &Daemon, query: &str) -> Listener {
        let before = connected_listeners(d);
        let stream = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
        let url = format!("ws://localhost/1.0/events{query}");
        let (ws, response) =
            tungstenite::client(url, stream).unwrap_or_else(|e| panic!("handshake: {e}"));
        assert_eq!(response.status().as_u16(), 101);
        assert!(
            wait_until(Duration::from_secs(5), || connected_listeners(d) > before),
            "listener never subscribed; log:\n{}",
            d.log()
        );
        Listener { ws }
    }

    /// The next event, waiting at most `timeout`.
    fn next(&mut self, timeout: Duration) -> Next {
        let _ = self.ws.get_ref().set_read_timeout(Some(timeout));
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let v = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("event is not JSON ({e}): {text}"));
                    return Next::Event(v);
                }
                Ok(Message::Close(frame)) => return Next::Closed(format!("{frame:?}")),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Next::Quiet;
                }
                Err(e) => return Next::Closed(e.to_string()),
            }
        }
    }

    /// Events until one satisfies `last` (included); panics after `timeout`.
    fn until(&mut self, timeout: Duration, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            match self.next(Duration::from_millis(200)) {
                Next::Event(v) => {
                    let done = last(&v);
                    got.push(v);
                    if done {
                        return got;
                    }
                }
                Next::Quiet => {}
                Next::Closed(why) => panic!("stream closed ({why}) after {got:#?}"),
            }
        }
        panic!("the awaited event never came; got {got:#?}");
    }
}

/// How many listeners the daemon has logged as connected (debug log).
fn connected_listeners(d: &Daemon) -> usize {
    d.log().matches("event listener connected").count()
}

fn is_lifecycle(v: &Value, action: &str, source: &str) -> bool {
    v["type"] == "lifecycle"
        && v["metadata"]["action"] == action
        && v["metadata"]["source"] == source
}

#[test]
fn a_listener_sees_lifecycle_operation_and_logging_events() {
    root_or_skip!("a_listener_sees_lifecycle_operation_and_logging_events");
    let d = Daemon::start();
    let mut l = Listener::connect(&d, "");
    d.ok(&["launch", "busybox", "c1"]);
    assert_eq!(d.ok(&["exec", "c1", "--", "true"]), "");
    d.ok(&["stop", "c1"]);
    d.ok(&["delete", "c1"]);
    let events = l.until(Duration::from_secs(30), |v| {
        is_lifecycle(v, "instance-deleted", "/1.0/instances/c1")
    });

    for v in &events {
        assert_eq!(
            (&v["location"], &v["project"]),
            (&"none".into(), &"default".into())
        );
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(ts.len() >= 20 && ts.ends_with('Z'), "timestamp {ts}");
    }
    let lifecycle: Vec<&str> = events
        .iter()
        .filter(|v| v["type"] == "lifecycle")
        .inspect(|v| assert_eq!(v["metadata"]["source"], "/1.0/instances/c1", "{v}"))
        .filter_map(|v| v["metadata"]["action"].as_str())
        .collect();
    assert_eq!(
        lifecycle,
        [
            "instance-created",
            "instance-started",
            "instance-exec",
            "instance-stopped",
            "instance-deleted"
        ]
    );
    let exec = events
        .iter()
        .find(|v| v["metadata"]["action"] == "instance-exec");
    assert_eq!(
        exec.map(|v| &v["metadata"]["context"]["command"]),
        Some(&serde_json::json!(["true"]))
    );

    // The create operation: the full object, first running, then successful.
    let create_id = events
        .iter()
        .find(|v| v["type"] == "operation" && v["metadata"]["description"] == "Creating instance")
        .and_then(|v| v["metadata"]["id"].as_str())
        .unwrap_or_else(|| panic!("no create operation in {events:#?}"));
    let create: Vec<&Value> = events
        .iter()
        .filter(|v| v["type"] == "operation" && v["metadata"]["id"] == create_id)
        .map(|v| &v["metadata"])
        .collect();
    // Progress updates (building the image) are more `Running` events of the same
    // operation.
    let mut statuses: Vec<&str> = create.iter().filter_map(|o| o["status"].as_str()).collect();
    statuses.dedup();
    assert_eq!(statuses, ["Running", "Success"]);
    assert_eq!(create[0]["status_code"], 103);
    assert_eq!(
        create.last().map(|o| &o["status_code"]),
        Some(&serde_json::json!(200))
    );
    assert_eq!(
        create[0]["resources"]["instances"],
        serde_json::json!(["/1.0/instances/c1"])
    );

    // The daemon's own log, at info.
    assert!(
        events.iter().any(|v| v["type"] == "logging"
            && v["metadata"]["level"] == "info"
            && v["metadata"]["message"] == "started"
            && v["metadata"]["context"]["instance"] == "c1"),
        "no logging event for the start: {events:#?}"
    );
}

#[test]
fn type_filter_and_ctl_monitor() {
    root_or_skip!("type_filter_and_ctl_monitor");
    let d = Daemon::start();
    let mut lifecycle_only = Listener::connect(&d, "?type=lifecycle&project=default");

    // `ctl monitor` as a child process, its output in a file.
    let out_path = d.path().join("monitor.out");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
    let before = connected_listeners(&d);
    let mut monitor = Command::new(bin_dir().join("ctl"))
        .args(["monitor", "--type", "lifecycle", "--format", "json"])
        .env("CTL_DIR", d.path())
        .env_remove("CTL_SOCKET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start ctl monitor: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), || connected_listeners(&d) > before),
        "ctl monitor never connected"
    );

    d.ok(&["launch", "busybox", "c2"]);
    let events = lifecycle_only.until(Duration::from_secs(30), |v| {
        is_lifecycle(v, "instance-started", "/1.0/instances/c2")
    });
    assert!(
        events.iter().all(|v| v["type"] == "lifecycle"),
        "{events:#?}"
    );
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let seen = wait_until(Duration::from_secs(10), || {
        printed().contains("\"instance-started\"")
    });
    let _ = monitor.kill();
    let _ = monitor.wait();
    let text = printed();
    assert!(seen, "ctl monitor printed:\n{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|v| v["type"] == "lifecycle"), "{text}");
    assert!(
        lines
            .iter()
            .any(|v| is_lifecycle(v, "instance-started", "/1.0/instances/c2")),
        "{text}"
    );

    // A bad type is refused before the upgrade.
    let (status, v) = d.http("GET", "/1.0/events?type=nope", None);
    assert_eq!(status, 400, "{v}");

    // `ctl monitor` ends cleanly when the daemon goes away.
    let before = connected_listeners(&d);
    let mut monitor = Command::new(bin_dir().join("ctl"))
        .arg("monitor")
        .env("CTL_DIR", d.path())
        .env_remove("CTL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start ctl monitor: {e}"));
    assert!(wait_until(Duration::from_secs(5), || {
        connected_listeners(&d) > before
    }));
    let mut d = d;
    d.kill(15);
    let ended = wait_until(Duration::from_secs(5), || {
        matches!(monitor.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = monitor.kill();
    }
    let status = monitor.wait().ok().and_then(|s| s.code());
    assert!(ended, "ctl monitor outlived the daemon");
    assert_eq!(status, Some(0));
}

#[test]
fn a_listener_that_never_reads_is_disconnected() {
    root_or_skip!("a_listener_that_never_reads_is_disconnected");
    let d = Daemon::start();
    d.ok(&["init", "busybox", "c3"]);
    let mut stuck = Listener::connect(&d, "");

    // About 10k events: each PUT makes an operation (created, succeeded) and an
    // instance-updated event.
    let total_events = 10_000;
    let puts = total_events / 3 + 1;
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let d = &d;
            s.spawn(move || {
                for i in (t..puts).step_by(threads) {
                    let body = format!(r#"{{"config":{{"user.n":"{i}"}}}}"#);
                    let (status, v) = d.http("PUT", "/1.0/instances/c3", Some(&body));
                    assert_eq!(status, 202, "{v}");
                }
            });
        }
    });

    // The daemon answers at once.
    let start = Instant::now();
    let (status, _) = d.http("GET", "/1.0", None);
    assert_eq!(status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    // The stuck listener was cut off: it finds what was buffered, then the end.
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        assert!(
            Instant::now() < deadline,
            "still connected after {received} events"
        );
        match stuck.next(Duration::from_secs(2)) {
            Next::Event(_) => received += 1,
            Next::Quiet => panic!("stream went quiet but open after {received} events"),
            Next::Closed(why) => break why,
        }
    };
    eprintln!("the stuck listener read {received} events, then: {end}");
    assert!(received < total_events, "got all {received} events ({end})");
    assert!(
        d.log().contains("disconnecting"),
        "no disconnect in the log:\n{}",
        d.log()
    );

    // A new listener works.
    let mut fresh = Listener::connect(&d, "?type=lifecycle");
    let (status, _) = d.http(
        "PATCH",
        "/1.0/instances/c3",
        Some(r#"{"config":{"user.n":"x"}}"#),
    );
    assert_eq!(status, 200);
    fresh.until(Duration::from_secs(10), |v| {
        is_lifecycle(v, "instance-updated", "/1.0/instances/c3")
    });
}
