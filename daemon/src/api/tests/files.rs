//! Router tests of the file API over the fake worker, whose `open_root` hands out a temp dir:
//! headers in and out, the envelope, the errors, and that `..` stays in that root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{Harness, harness, header, run_op};

/// A harness with running instance `c1` whose files live in the returned temp dir.
async fn with_instance() -> (Harness, tempfile::TempDir) {
    let h = harness().await;
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"},"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    if let Ok(mut r) = h.worker.files_root.lock() {
        *r = Some(root.path().to_path_buf());
    }
    (h, root)
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).unwrap_or_else(|e| panic!("{e}"));
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (parts.status, parts.headers, bytes)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

const FILES: &str = "/1.0/instances/c1/files";

#[tokio::test]
async fn push_and_pull_round_trip_with_headers() {
    let (h, root) = with_instance().await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (s, _, body) = send(
        &h.app,
        "POST",
        &format!("{FILES}?path=/data.bin"),
        &[("X-Incus-mode", "0640"), ("X-Incus-type", "file")],
        data.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(
        (v["type"].as_str(), &v["metadata"]),
        (Some("sync"), &serde_json::json!({}))
    );
    let md = std::fs::metadata(root.path().join("data.bin")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);

    let (s, headers, body) = send(
        &h.app,
        "GET",
        &format!("{FILES}?path=/data.bin"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, data);
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    for prefix in ["X-Incus-", "X-LXD-"] {
        assert_eq!(header(&headers, &format!("{prefix}type")), "file");
        assert_eq!(header(&headers, &format!("{prefix}mode")), "0640");
        assert_eq!(
            header(&headers, &format!("{prefix}uid")),
            md.uid().to_string()
        );
        assert_eq!(
            header(&headers, &format!("{prefix}gid")),
            md.gid().to_string()
        );
    }

    // Append, then a relative path (made absolute as Incus does).
    let (s, _, _) = send(
        &h.app,
        "POST",
        &format!("{FILES}?path=data.bin"),
        &[("X-LXD-write", "append")],
        b"tail".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let on_disk = std::fs::read(root.path().join("data.bin")).unwrap_or_default();
    assert_eq!(on_disk.len(), data.len() + 4);
    assert!(on_disk.ends_with(b"tail"));
}

#[tokio::test]
async fn directories_symlinks_and_delete() {
    let (h, root) = with_instance().await;
    let post = |path: &str, kind: &'static str, body: &'static [u8]| {
        let uri = format!("{FILES}?path={path}");
        let app = h.app.clone();
        async move {
            send(&app, "POST", &uri, &[("X-Incus-type", kind)], body.to_vec())
                .await
                .0
        }
    };
    assert_eq!(post("/d", "directory", b"").await, StatusCode::OK);
    assert_eq!(post("/d", "directory", b"").await, StatusCode::OK);
    assert_eq!(post("/d/f", "file", b"x").await, StatusCode::OK);
    assert_eq!(post("/d/l", "symlink", b"/d/f").await, StatusCode::OK);
    assert_eq!(
        post("/d/l", "symlink", b"/other").await,
        StatusCode::CONFLICT
    );
    assert_eq!(post("/d/fifo", "fifo", b"").await, StatusCode::BAD_REQUEST);
    assert!(!root.path().join("d/fifo").exists());

    let (s, headers, body) = send(&h.app, "GET", &format!("{FILES}?path=/d"), &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&headers, "X-Incus-type"), "directory");
    assert_eq!(header(&headers, "X-Incus-mode"), "0755");
    let v = json(&body);
    assert_eq!(v["type"], "sync");
    assert_eq!(v["metadata"], serde_json::json!(["f", "l"]));

    let (s, headers, body) = send(&h.app, "GET", &format!("{FILES}?path=/d/l"), &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&headers, "X-Incus-type"), "symlink");
    assert_eq!(body, b"/d/f");

    // A non-empty directory stays; the rest goes; then it is not found.
    let del = |path: &str| {
        let uri = format!("{FILES}?path={path}");
        let app = h.app.clone();
        async move { send(&app, "DELETE", &uri, &[], vec![]).await.0 }
    };
    assert_eq!(del("/d").await, StatusCode::BAD_REQUEST);
    assert_eq!(del("/d/l").await, StatusCode::OK);
    assert_eq!(del("/d/f").await, StatusCode::OK);
    assert_eq!(del("/d").await, StatusCode::OK);
    assert_eq!(del("/d").await, StatusCode::NOT_FOUND);
    assert_eq!(del("/").await, StatusCode::BAD_REQUEST);
    assert!(!root.path().join("d").exists());
}

#[tokio::test]
async fn bad_requests_touch_nothing() {
    let (h, root) = with_instance().await;
    for (method, uri, headers) in [
        ("GET", FILES.to_string(), vec![]),
        ("GET", format!("{FILES}?path="), vec![]),
        (
            "POST",
            format!("{FILES}?path=/x"),
            vec![("X-Incus-mode", "0999")],
        ),
        (
            "POST",
            format!("{FILES}?path=/x"),
            vec![("X-Incus-uid", "nobody")],
        ),
        (
            "POST",
            format!("{FILES}?path=/x"),
            vec![("X-Incus-write", "truncate")],
        ),
        (
            "POST",
            "/1.0/instances/nope/files?path=/x".to_string(),
            vec![],
        ),
        ("GET", format!("{FILES}?path=/missing"), vec![]),
    ] {
        let (s, _, body) = send(&h.app, method, &uri, &headers, b"data".to_vec()).await;
        let v = json(&body);
        assert_eq!(v["type"], "error", "{method} {uri}");
        assert_eq!(
            v["error_code"].as_u64(),
            Some(u64::from(s.as_u16())),
            "{uri}"
        );
        assert!(s.is_client_error(), "{method} {uri}: {s}");
    }
    let left: Vec<_> = std::fs::read_dir(root.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // `..` cannot climb out of the root: it lands inside.
    let (s, _, _) = send(
        &h.app,
        "POST",
        &format!("{FILES}?path=/../../escaped"),
        &[],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(root.path().join("escaped").exists());
    assert!(
        root.path()
            .parent()
            .is_some_and(|p| !p.join("escaped").exists())
    );
}

#[tokio::test]
async fn a_stopped_instance_is_reached_through_its_overlay() {
    let (h, root) = with_instance().await;
    let op = run_op(
        &h.app,
        "PUT",
        "/1.0/instances/c1/state",
        r#"{"action":"stop","force":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    std::fs::write(root.path().join("x"), "stopped").unwrap_or_else(|e| panic!("{e}"));
    let (s, _, body) = send(&h.app, "GET", &format!("{FILES}?path=/x"), &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, b"stopped");
    assert!(
        h.worker
            .calls()
            .iter()
            .any(|c| c.starts_with("open_stopped_root")),
        "{:?}",
        h.worker.calls()
    );
}
