//! Router tests of `proxy` devices over the fake worker: validation everywhere devices are
//! accepted (nothing changes on a refusal), and the listeners' life: they really listen on
//! 127.0.0.1 from the start of an instance until its stop, change live with PATCH, a port
//! in use fails a start (rolled back) or a PATCH (nothing changed), and an init that exits
//! on its own takes its forwards along. (The fake's "container" netns is the test's own;
//! traffic into a real container is the e2e tests' part.)

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::{Harness, call, harness, run_op};

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

fn proxy(port: u16) -> String {
    format!(r#"{{"type":"proxy","listen":"tcp:127.0.0.1:{port}","connect":"tcp:127.0.0.1:80"}}"#)
}

async fn launch(h: &Harness, name: &str, devices: &str) -> Value {
    let body = format!(
        r#"{{"name":"{name}","source":{{"type":"image","alias":"busybox"}},"devices":{devices},"start":true}}"#
    );
    run_op(&h.app, "POST", "/1.0/instances", &body).await
}

async fn devices_of(h: &Harness, name: &str) -> Value {
    let (s, v) = call(&h.app, "GET", &format!("/1.0/instances/{name}"), "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["metadata"]["devices"].clone()
}

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn bad_proxy_devices_are_refused_everywhere_and_change_nothing() {
    let h = harness().await;
    let bad =
        r#"{"web":{"type":"proxy","listen":"tcp:0.0.0.0:70000","connect":"tcp:127.0.0.1:80"}}"#;
    // Create: 400 before anything exists.
    let body =
        format!(r#"{{"name":"c1","source":{{"type":"image","alias":"busybox"}},"devices":{bad}}}"#);
    let (s, v) = call(&h.app, "POST", "/1.0/instances", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = error_of(&v);
    assert!(msg.contains("\"web\"") && msg.contains("listen"), "{msg}");
    assert!(h.worker.calls().is_empty(), "{:?}", h.worker.calls());
    let (s, _) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // PUT/PATCH of an instance (running or not): 400, devices unchanged.
    let op = launch(&h, "c1", "{}").await;
    assert_eq!(op["status"], "Success", "{op}");
    let cases = [
        (
            "PATCH",
            r#"{"devices":{"web":{"type":"proxy","listen":"tcp:127.0.0.1:80"}}}"#,
            "connect",
        ),
        (
            "PATCH",
            r#"{"devices":{"web":{"type":"proxy","listen":"tcp:127.0.0.1:80","connect":"tcp:nowhere:80"}}}"#,
            "connect",
        ),
        (
            "PUT",
            r#"{"devices":{"web":{"type":"proxy","listen":"udp:127.0.0.1:80","connect":"tcp:127.0.0.1:80"}}}"#,
            "listen",
        ),
        (
            "PUT",
            r#"{"devices":{"web":{"type":"proxy","listen":"tcp:127.0.0.1:80","connect":"tcp:127.0.0.1:80","bind":"instance"}}}"#,
            "bind",
        ),
    ];
    let calls = h.worker.calls().len();
    for (method, body, key) in cases {
        let (s, v) = call(&h.app, method, "/1.0/instances/c1", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = error_of(&v);
        assert!(msg.contains("\"web\"") && msg.contains(key), "{msg}");
        assert_eq!(devices_of(&h, "c1").await, serde_json::json!({}));
    }
    assert_eq!(h.worker.calls().len(), calls, "{:?}", h.worker.calls());

    // The default profile: 400, unchanged.
    for method in ["PUT", "PATCH"] {
        let body = format!(r#"{{"devices":{bad}}}"#);
        let (s, v) = call(&h.app, method, "/1.0/profiles/default", &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(error_of(&v).contains("\"web\""), "{v}");
        let (_, v) = call(&h.app, "GET", "/1.0/profiles/default", "").await;
        assert_eq!(
            v["metadata"]["devices"],
            serde_json::json!({"root": {"path": "/", "pool": "default", "type": "disk"}}),
            "only its root disk, as before"
        );
    }
}

#[tokio::test]
async fn proxies_listen_while_running_and_change_live() {
    let h = harness().await;
    let (p1, p2) = (free_port(), free_port());
    let op = launch(&h, "c1", &format!(r#"{{"web":{}}}"#, proxy(p1))).await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(listening(p1));
    let calls = h.worker.calls();
    let spawn = calls.iter().position(|c| c == "spawn_init c1");
    let netns = calls.iter().position(|c| c.starts_with("open_netns"));
    assert!(spawn.is_some() && spawn < netns, "{calls:?}");

    // Added live; removed live (an empty entry removes a device in a PATCH).
    let body = format!(r#"{{"devices":{{"web2":{}}}}}"#, proxy(p2));
    let (s, v) = call(&h.app, "PATCH", "/1.0/instances/c1", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(listening(p1) && listening(p2));
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"devices":{"web":{}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!listening(p1), "removed device still listens");
    assert!(listening(p2));
    // Changed live: the new port listens, the old one is closed.
    let body = format!(r#"{{"devices":{{"web2":{}}}}}"#, proxy(p1));
    let (s, v) = call(&h.app, "PUT", "/1.0/instances/c1", &body).await;
    // PUT answers with an (already finished) operation.
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(listening(p1) && !listening(p2));

    // A port in use: 400 naming the device, devices and listeners unchanged.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("{e}"));
    let taken_port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let before = devices_of(&h, "c1").await;
    let body = format!(r#"{{"devices":{{"busy":{}}}}}"#, proxy(taken_port));
    let (s, v) = call(&h.app, "PATCH", "/1.0/instances/c1", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = error_of(&v);
    assert!(msg.contains("\"busy\"") && msg.contains("in use"), "{msg}");
    assert_eq!(devices_of(&h, "c1").await, before);
    assert!(listening(p1));
    // Same when a changed device fails: the old listener is back.
    let body = format!(r#"{{"devices":{{"web2":{}}}}}"#, proxy(taken_port));
    let (s, v) = call(&h.app, "PATCH", "/1.0/instances/c1", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(devices_of(&h, "c1").await, before);
    assert!(listening(p1), "the old forward was not restored");

    // NICs still need a restart.
    let (s, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"devices":{"eth9":{"type":"nic","nictype":"bridged","parent":"nobr"}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Stop closes, start opens, restart keeps.
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"stop","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(!listening(p1));
    // Changed while stopped: only the database.
    let body = format!(r#"{{"devices":{{"web2":{}}}}}"#, proxy(p2));
    let (s, v) = call(&h.app, "PATCH", "/1.0/instances/c1", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!listening(p2));
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"start"}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(listening(p2) && !listening(p1));
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"restart","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(listening(p2));

    // The init exits on its own: the watcher closes the port.
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1/state", "").await;
    let pid = v["metadata"]["pid"].as_i64().unwrap_or_default() as i32;
    assert!(pid > 0, "{v}");
    h.worker.exit(pid);
    let mut closed = false;
    for _ in 0..50 {
        if !listening(p2) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "forward outlived its init");
    drop(taken);
}

#[tokio::test]
async fn a_port_in_use_fails_the_start_and_rolls_it_back() {
    let h = harness().await;
    let free = free_port();
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("{e}"));
    let taken_port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    // Two devices: "a" starts first (device order), "b" fails; "a" must be closed again.
    let devices = format!(r#"{{"a":{},"b":{}}}"#, proxy(free), proxy(taken_port));
    let op = launch(&h, "c1", &devices).await;
    assert_eq!(op["status"], "Failure", "{op}");
    let err = op["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("\"b\"") && err.contains("in use") && err.contains(&taken_port.to_string()),
        "{err}"
    );
    assert!(!listening(free), "the first proxy was left listening");
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(v["metadata"]["status"], "Stopped", "{v}");
    let calls = h.worker.calls();
    let spawn = calls.iter().rposition(|c| c == "spawn_init c1");
    let kill = calls
        .iter()
        .rposition(|c| c.starts_with("signal") && c.ends_with(" 9"));
    let cgroup = calls.iter().rposition(|c| c == "remove_cgroup c1");
    assert!(spawn < kill && kill < cgroup, "{calls:?}");
    drop(taken);
    // Free again: the start works.
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"start"}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(listening(free) && listening(taken_port));
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"stop","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert!(!listening(free) && !listening(taken_port));
}
