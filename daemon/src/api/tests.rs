//! Router tests: the real handlers, services and an in-memory database over the recording
//! fake worker. They check the wire shape and the lifecycle order without touching the host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, exec::ExecRegistry, router, server_info::StaticInfo};
use crate::db;
use crate::events::Events;
use crate::images::ImageStore;
use crate::instance::Instances;
use crate::operations::Operations;
use crate::paths::Paths;
use crate::worker::fake::FakeWorker;

mod files;
mod images_transfer;
mod networks;
mod profiles;
mod proxies;
mod ui;

struct Harness {
    app: axum::Router,
    worker: Arc<FakeWorker>,
    events: Events,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(crate::images::unpack::Limits::default()).await
}

/// A harness whose image store holds unpacked images to `limits`.
async fn harness_with(limits: crate::images::unpack::Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = db::open_memory().await.unwrap_or_else(|e| panic!("{e}"));
    // A stored image with the `busybox` alias, so nothing is built.
    db::images::insert(
        &pool,
        &db::NewImage {
            fingerprint: "ab12ab12ab12ab12",
            filename: "",
            size: 1,
            architecture: "x86_64",
            created_at: "t",
            properties: &BTreeMap::from([("os".to_string(), "test".to_string())]),
            public: false,
            cached: true,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    db::images::set_alias(&pool, "busybox", "ab12ab12ab12ab12", "")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let worker = Arc::new(FakeWorker::default());
    let events = Events::default();
    let app = app(
        pool,
        dir.path(),
        worker.clone(),
        events.clone(),
        limits,
        super::ui::UiAssets::default(),
    )
    .await;
    Harness {
        app,
        worker,
        events,
        _dir: dir,
    }
}

/// The router over the real services on `pool` and state directory `dir`, the web UI from
/// `ui`, every request as the Unix socket's (root).
async fn app(
    pool: db::Pool,
    dir: &std::path::Path,
    worker: Arc<FakeWorker>,
    events: Events,
    limits: crate::images::unpack::Limits,
    ui: super::ui::UiAssets,
) -> axum::Router {
    let paths = Arc::new(Paths::new(dir));
    let images = ImageStore::new(pool.clone(), paths.clone())
        .with_events(events.clone())
        .with_limits(limits);
    let store = crate::db::shared::SharedStore::new(crate::db::store::Store::sqlite(pool.clone()));
    let remote = crate::remote::Remote::load(
        pool.clone(),
        store.clone(),
        dir,
        crate::server::ConnLimits::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let instances =
        Instances::new(pool.clone(), worker, paths, images.clone()).with_events(events.clone());
    let ops = Operations::with_events(events.clone());
    let cluster = crate::cluster::Cluster::load(crate::cluster::Parts {
        local: pool.clone(),
        instances: instances.clone(),
        store,
        remote: remote.clone(),
        ops: ops.clone(),
        events: events.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let state = AppState {
        remote,
        cluster,
        networks: instances.networks().clone(),
        instances,
        images,
        ops,
        execs: ExecRegistry::default(),
        info: StaticInfo::gather("v2"),
        events,
        ui,
    };
    router(state).layer(axum::middleware::map_request(
        |mut req: axum::extract::Request| async move {
            req.extensions_mut().insert(crate::server::Peer::Unix);
            req
        },
    ))
}

/// A header's value as text ("" when absent).
fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Run an async request and wait for its operation; returns the finished operation.
async fn run_op(app: &axum::Router, method: &str, uri: &str, body: &str) -> Value {
    let (status, v) = call(app, method, uri, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{method} {uri}: {v}");
    assert_eq!(v["type"], "async");
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    let (status, done) = call(app, "GET", &format!("{op}/wait?timeout=10"), "").await;
    assert_eq!(status, StatusCode::OK);
    done["metadata"].clone()
}

#[tokio::test]
async fn lifecycle_calls_the_worker_in_order() {
    let h = harness().await;
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"},
            "config":{"limits.memory":"64MiB"},"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c1", "").await;
    assert_eq!(v["metadata"]["status"], "Running");
    assert_eq!(
        v["metadata"]["config"]["volatile.base_image"],
        "ab12ab12ab12ab12"
    );
    assert_eq!(v["metadata"]["config"]["image.os"], "test");

    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"stop","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let op = run_op(&h.app, "DELETE", "/1.0/instances/c1", "").await;
    assert_eq!(op["status"], "Success", "{op}");
    let calls = h.worker.calls();
    // Unprivileged: the inner cgroup is handed to the container's root before the spawn.
    let ids = crate::instance::idmap::HostIds::of_host();
    let delegate = format!("delegate_cgroup c1 {} {}", ids.uids.start, ids.gids.start);
    let want = [
        "prepare_container_dir c1",
        "remove_cgroup c1",
        "create_cgroup c1 Some(67108864)",
        delegate.as_str(),
        "spawn_init c1",
        "signal 1000 9",
        "remove_cgroup c1",
        "remove_cgroup c1",
        "remove_container_dir c1",
    ];
    assert_eq!(calls, want);
}

#[tokio::test]
async fn failed_spawn_rolls_back_the_cgroup() {
    let h = harness().await;
    h.worker.fail_spawn.store(true, Ordering::SeqCst);
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c2","source":{"alias":"busybox"},"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Failure");
    assert!(
        op["err"].as_str().unwrap_or_default().contains("exec init"),
        "{op}"
    );
    let calls = h.worker.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("remove_cgroup c2"),
        "{calls:?}"
    );
    let (_, v) = call(&h.app, "GET", "/1.0/instances/c2/state", "").await;
    assert_eq!(v["metadata"]["status"], "Stopped");
}

#[tokio::test]
async fn live_limit_update_reaches_the_cgroup() {
    let h = harness().await;
    run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c3","source":{"alias":"busybox"},"start":true}"#,
    )
    .await;
    let (status, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c3",
        r#"{"config":{"limits.memory":"128MiB"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        h.worker
            .calls()
            .contains(&"apply_limits c3 Some(134217728)".to_string())
    );
    let (status, v) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c3",
        r#"{"config":{"volatile.base_image":"other"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn errors_use_the_envelope() {
    let h = harness().await;
    for (method, uri, body, status) in [
        ("POST", "/1.0/instances", "{not json", 400),
        ("GET", "/1.0/instances/nope", "", 404),
        ("GET", "/1.0/nothing-here", "", 404),
        ("GET", "/1.0/instances?recursion=7", "", 400),
        ("GET", "/1.0/instances?filter=name%20gt%201", "", 400),
        ("DELETE", "/1.0/operations/nope", "", 404),
        ("DELETE", "/1.0", "", 405),
        ("PUT", "/1.0", "", 400),
        (
            "PATCH",
            "/1.0",
            r#"{"config": {"core.nonsense": "1"}}"#,
            400,
        ),
        (
            "PATCH",
            "/1.0",
            r#"{"config": {"core.https_address": "nowhere"}}"#,
            400,
        ),
        ("GET", "/1.0/certificates/abcdef", "", 404),
        (
            "POST",
            "/1.0/certificates",
            r#"{"type": "client", "token": true}"#,
            400,
        ),
        (
            "POST",
            "/1.0/certificates",
            r#"{"type": "client", "certificate": "junk"}"#,
            400,
        ),
        ("POST", "/1.0/ui/login-links", "", 400),
    ] {
        let (s, v) = call(&h.app, method, uri, body).await;
        assert_eq!(s.as_u16(), status, "{method} {uri}: {v}");
        assert_eq!(v["type"], "error", "{method} {uri}");
        assert_eq!(v["error_code"], json!(status));
    }
    let (s, v) = call(&h.app, "GET", "/", "").await;
    assert_eq!((s, &v["metadata"]), (StatusCode::OK, &json!(["/1.0"])));
}

#[tokio::test]
async fn the_default_project_holds_everything_and_no_other_exists() {
    let h = harness().await;
    run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"}}"#,
    )
    .await;
    let (_, v) = call(&h.app, "GET", "/1.0/projects", "").await;
    assert_eq!(v["metadata"], json!(["/1.0/projects/default"]));
    let (s, v) = call(&h.app, "GET", "/1.0/projects/default?project=default", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["name"], "default");
    assert!(
        v["metadata"]["used_by"]
            .to_string()
            .contains("/1.0/instances/c1"),
        "{v}"
    );
    let (_, v) = call(&h.app, "GET", "/1.0/projects/default/state", "").await;
    assert_eq!(v["metadata"]["resources"]["containers"]["Usage"], 1, "{v}");
    let (_, v) = call(&h.app, "GET", "/1.0/warnings?recursion=1", "").await;
    assert_eq!(v["metadata"], json!([]));
    // Another project, by path or by query, anywhere: 404, nothing done.
    for uri in [
        "/1.0/projects/other",
        "/1.0/instances?project=other",
        "/1.0/networks?project=other",
    ] {
        let (s, v) = call(&h.app, "GET", uri, "").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {v}");
    }
    let (s, _) = call(
        &h.app,
        "POST",
        "/1.0/instances?project=other",
        r#"{"name":"c2","source":{"type":"image","alias":"busybox"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = call(&h.app, "GET", "/1.0/instances?all-projects=true", "").await;
    assert_eq!(v["metadata"], json!(["/1.0/instances/c1"]));
    let (_, v) = call(&h.app, "GET", "/1.0", "").await;
    for ext in [
        "instance_create_start",
        "network",
        "network_state",
        "network_leases",
        "projects",
        "warnings",
    ] {
        assert!(
            v["metadata"]["api_extensions"]
                .to_string()
                .contains(&format!("\"{ext}\"")),
            "{ext}"
        );
    }
}

/// Every event published so far (waits briefly for stragglers).
async fn drain(sub: &mut crate::events::Subscription) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Ok(p)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), sub.recv()).await
    {
        out.push(serde_json::from_str(&p.text).unwrap_or_default());
    }
    out
}

#[tokio::test]
async fn lifecycle_and_operation_events_follow_each_step() {
    let h = harness().await;
    let mut sub = h.events.subscribe();
    let create = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"},"start":true}"#,
    )
    .await;
    let (status, _) = call(
        &h.app,
        "PATCH",
        "/1.0/instances/c1",
        r#"{"config":{"user.a":"b"}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for action in ["freeze", "unfreeze", "restart", "stop"] {
        let body = format!(r#"{{"action":"{action}","force":true}}"#);
        let op = run_op(&h.app, "PUT", "/1.0/instances/c1/state", &body).await;
        assert_eq!(op["status"], "Success", "{action}: {op}");
    }
    run_op(&h.app, "DELETE", "/1.0/instances/c1", "").await;
    run_op(&h.app, "DELETE", "/1.0/images/ab12ab12ab12ab12", "").await;
    // A failed step announces nothing.
    let (status, _) = call(&h.app, "DELETE", "/1.0/instances/c1", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let events = drain(&mut sub).await;
    for e in &events {
        assert_eq!(
            (&e["location"], &e["project"]),
            (&json!("none"), &json!("default"))
        );
    }
    let lifecycle: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "lifecycle")
        .map(|e| {
            let m = &e["metadata"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&m["action"]), text(&m["source"]))
        })
        .collect();
    let c1 = "/1.0/instances/c1".to_string();
    let want: Vec<(String, String)> = [
        "instance-created",
        "instance-started",
        "instance-updated",
        "instance-paused",
        "instance-resumed",
        "instance-restarted",
        "instance-stopped",
        "instance-deleted",
    ]
    .iter()
    .map(|a| (a.to_string(), c1.clone()))
    .chain([(
        "image-deleted".to_string(),
        "/1.0/images/ab12ab12ab12ab12".to_string(),
    )])
    .collect();
    assert_eq!(lifecycle, want);

    // The create operation: announced running, then successful, as the full object.
    let create_id = create["id"].as_str().unwrap_or_default();
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "operation" && e["metadata"]["id"] == create_id)
        .map(|e| e["metadata"]["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["Running", "Success"]);
    let last = events
        .iter()
        .rfind(|e| e["type"] == "operation" && e["metadata"]["id"] == create_id);
    assert_eq!(last.map(|e| &e["metadata"]), Some(&create));
}

#[tokio::test]
async fn events_endpoint_wants_a_websocket_and_known_types() {
    let h = harness().await;
    for (uri, want) in [
        (
            "/1.0/events?type=lifecycle,ovn",
            "isn't a supported event type",
        ),
        ("/1.0/events", "websocket upgrade required"),
        (
            "/1.0/events?type=operation&project=default",
            "websocket upgrade required",
        ),
    ] {
        let (s, v) = call(&h.app, "GET", uri, "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{uri}: {error}");
    }
}

#[tokio::test]
async fn a_recorded_exec_runs_through_the_worker_and_keeps_its_output() {
    let h = harness().await;
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"},"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    // The fake worker's exec helper is /bin/echo with the command as its arguments.
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances/c1/exec",
        r#"{"command":["hello","world"],"wait-for-websocket":false,"record-output":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(op["metadata"]["return"], 0, "{op}");
    let url = op["metadata"]["output"]["1"].as_str().unwrap_or_default();
    assert!(url.starts_with("/1.0/instances/c1/logs/exec_"), "{op}");
    let (status, _, body) = get_raw(&h.app, url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello world\n");
    // Without recording: the exit code only.
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances/c1/exec",
        r#"{"command":["x"],"wait-for-websocket":false}"#,
    )
    .await;
    assert_eq!(op["metadata"]["return"], 0, "{op}");
    assert!(op["metadata"].get("output").is_none(), "{op}");
}

/// A GET whose body is returned as bytes.
async fn get_raw(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let res = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (parts.status, parts.headers, bytes.to_vec())
}
