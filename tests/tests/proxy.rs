//! `proxy` devices end to end, as root: the real ctld forwards a port on the host's
//! 127.0.0.1 to busybox `httpd` on the loopback *inside* a container (no NIC: the proxy
//! reaches into the container's network namespace itself). Added and removed live,
//! kept across an instance restart and a daemon restart, closed by a stop; an invalid
//! spec is a 400 that changes nothing; a port in use fails the start and leaves nothing
//! running.
//!
//! Traffic stays on 127.0.0.1 and inside containers these tests made; names are unique and
//! the daemon handle deletes the instances when it drops, also on failure.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ctl_tests::{Daemon, require_root, unique, wait_until};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// One HTTP GET of `path` on 127.0.0.1:`port`; the whole answer (empty when it failed).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr(port), Duration::from_secs(3)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Whether nothing listens on 127.0.0.1:`port` (the connection is refused).
fn closed(port: u16) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr(port), Duration::from_secs(3)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// Serve `token` as `/index.html` with busybox httpd on the container's own 127.0.0.1:80
/// (httpd puts itself in the background).
fn serve_token(d: &Daemon, name: &str, token: &str) {
    let script =
        format!("mkdir -p /www && echo {token} > /www/index.html && httpd -p 127.0.0.1:80 -h /www");
    d.ok(&["exec", name, "--", "sh", "-c", &script]);
}

/// Fetch through the forward until the token comes back (or 10 s pass).
fn assert_forwards(d: &Daemon, port: u16, token: &str, when: &str) {
    let mut got = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        got = http_get(port, "/index.html");
        got.contains(token)
    });
    assert!(
        ok,
        "{when}: no token through 127.0.0.1:{port}: {got:?}\n--- ctld log ---\n{}",
        d.log()
    );
}

fn devices_of(d: &Daemon, name: &str) -> serde_json::Value {
    let (s, v) = d.http("GET", &format!("/1.0/instances/{name}"), None);
    assert_eq!(s, 200, "{v}");
    v["metadata"]["devices"].clone()
}

#[test]
fn proxy_forwards_into_a_container_live_and_across_restarts() {
    root_or_skip!("proxy_forwards_into_a_container_live_and_across_restarts");
    let mut d = Daemon::start();
    let name = unique("px");
    let token = unique("token");
    let port = free_port();
    let listen = format!("listen=tcp:127.0.0.1:{port}");
    let add = [
        "config",
        "device",
        "add",
        &name,
        "web",
        "proxy",
        &listen,
        "connect=tcp:127.0.0.1:80",
    ];
    d.ok(&["launch", "busybox", &name]);
    serve_token(&d, &name, &token);

    // Added to the running container: forwards at once.
    d.ok(&add);
    assert_forwards(&d, port, &token, "after device add");
    let shown = d.ok(&["config", "device", "show", &name]);
    assert!(
        shown.contains("proxy") && shown.contains(&listen[7..]),
        "{shown}"
    );

    // Removed: the port is closed at once.
    d.ok(&["config", "device", "remove", &name, "web"]);
    assert!(closed(port), "port still open after device remove");

    // Back, then the instance restarts: the forward comes back with the new netns.
    d.ok(&add);
    assert_forwards(&d, port, &token, "after the second add");
    let pid_before = d.init_pid(&name);
    d.ok(&["restart", &name]);
    let pid_after = d.init_pid(&name);
    assert!(
        pid_after > 0 && pid_after != pid_before,
        "{pid_before} → {pid_after}"
    );
    // httpd died with the old container; the listener is up, into the new netns.
    serve_token(&d, &name, &token);
    assert_forwards(&d, port, &token, "after ctl restart");

    // The daemon restarts: the container keeps running, the forward is started again.
    d.restart();
    assert_eq!(
        d.init_pid(&name),
        pid_after,
        "the container did not survive"
    );
    assert_forwards(&d, port, &token, "after the daemon restarted");

    // Stopped: closed.
    d.ok(&["stop", &name]);
    assert!(closed(port), "port still open after stop");
    // Started again (httpd is not running yet): the listener is back.
    d.ok(&["start", &name]);
    assert!(!closed(port), "no listener after start");
    serve_token(&d, &name, &token);
    assert_forwards(&d, port, &token, "after stop and start");
    d.ok(&["delete", "--force", &name]);
    assert!(closed(port), "port still open after delete");
}

#[test]
fn invalid_proxy_specs_are_refused_and_change_nothing() {
    root_or_skip!("invalid_proxy_specs_are_refused_and_change_nothing");
    let d = Daemon::start();
    let name = unique("pxbad");
    d.ok(&["launch", "busybox", &name]);
    let before = devices_of(&d, &name);

    let r = d.ctl(&[
        "config",
        "device",
        "add",
        &name,
        "web",
        "proxy",
        "listen=tcp:127.0.0.1:99999",
        "connect=tcp:127.0.0.1:80",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("\"web\"") && r.stderr.contains("listen"),
        "{r:?}"
    );
    let (s, v) = d.http(
        "PATCH",
        &format!("/1.0/instances/{name}"),
        Some(r#"{"devices":{"web":{"type":"proxy","listen":"tcp:127.0.0.1:8080","connect":"unix:/run/x"}}}"#),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("connect"),
        "{v}"
    );
    assert_eq!(devices_of(&d, &name), before);

    // At create time: 400, no instance.
    let other = unique("pxbad");
    let body = format!(
        r#"{{"name":"{other}","source":{{"type":"image","alias":"busybox"}},"devices":{{"web":{{"type":"proxy","listen":"tcp:127.0.0.1:80"}}}}}}"#
    );
    let (s, v) = d.http("POST", "/1.0/instances", Some(&body));
    assert_eq!(s, 400, "{v}");
    assert!(!d.instances().contains(&other));
    // In the default profile: 400, the profile unchanged.
    let (s, v) = d.http(
        "PATCH",
        "/1.0/profiles/default",
        Some(r#"{"devices":{"web":{"type":"proxy","listen":"tcp:127.0.0.1:80","connect":"tcp:127.0.0.1:80","bind":"instance"}}}"#),
    );
    assert_eq!(s, 400, "{v}");
    let (_, v) = d.http("GET", "/1.0/profiles/default", None);
    assert!(v["metadata"]["devices"].get("web").is_none(), "{v}");
}

#[test]
fn a_port_in_use_fails_the_start_and_leaves_nothing_running() {
    root_or_skip!("a_port_in_use_fails_the_start_and_leaves_nothing_running");
    let d = Daemon::start();
    let name = unique("pxbusy");
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("{e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let listen = format!("listen=tcp:127.0.0.1:{port}");
    d.ok(&["init", "busybox", &name]);
    // Stopped: the device is only recorded.
    d.ok(&[
        "config",
        "device",
        "add",
        &name,
        "web",
        "proxy",
        &listen,
        "connect=tcp:127.0.0.1:80",
    ]);
    let r = d.ctl(&["start", &name]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("\"web\"")
            && r.stderr.contains("in use")
            && r.stderr.contains(&port.to_string()),
        "{r:?}"
    );
    let (_, v) = d.http("GET", &format!("/1.0/instances/{name}"), None);
    assert_eq!(v["metadata"]["status"], "Stopped", "{v}");
    assert_eq!(d.init_pid(&name), 0);
    assert!(
        !d.cgroup_dir("pids", &name).exists(),
        "cgroup left after a failed start"
    );

    // Running, a live add on a port in use: refused, devices unchanged.
    d.ok(&["config", "device", "remove", &name, "web"]);
    d.ok(&["start", &name]);
    let before = devices_of(&d, &name);
    let r = d.ctl(&[
        "config",
        "device",
        "add",
        &name,
        "web",
        "proxy",
        &listen,
        "connect=tcp:127.0.0.1:80",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("in use"), "{r:?}");
    assert_eq!(devices_of(&d, &name), before);
    assert!(d.init_pid(&name) > 0, "the running container was touched");
    drop(taken);
}
