//! Router tests of `/ui/`: the embedded build and a `CTL_UI` directory, the SPA fallback,
//! caching and security headers, and paths that would leave the build.

use super::*;
use crate::api::ui::UiAssets;

/// `(status, headers, body)` of a GET.
async fn fetch(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let (status, headers, body) = get_raw(app, uri).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The router over a state whose UI comes from `dir` (no images: only `/ui/` is asked).
/// The state directory is `state_dir`.
async fn app_with_ui_dir(dir: &std::path::Path, state_dir: &std::path::Path) -> axum::Router {
    let pool = db::open_memory().await.unwrap_or_else(|e| panic!("{e}"));
    app(
        pool,
        state_dir,
        Arc::new(FakeWorker::default()),
        Events::default(),
        crate::images::unpack::Limits::default(),
        UiAssets::from_dir(dir.to_path_buf()),
    )
    .await
}

#[tokio::test]
async fn the_embedded_build_is_served_with_its_headers() {
    let h = harness().await;
    let (s, head, _) = fetch(&h.app, "/ui").await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&head, "location"), "/ui/");

    let (s, head, index) = fetch(&h.app, "/ui/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(index.contains("<div id=\"app\">"), "{index}");
    assert_eq!(header(&head, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&head, "cache-control"), "no-cache");
    assert!(header(&head, "content-security-policy").starts_with("default-src 'self';"));
    assert!(!header(&head, "content-security-policy").contains("unsafe"));
    assert_eq!(header(&head, "x-frame-options"), "DENY");
    assert_eq!(header(&head, "x-content-type-options"), "nosniff");
    assert_eq!(header(&head, "referrer-policy"), "no-referrer");

    // An in-app route gets the app.
    let (s, _, body) = fetch(&h.app, "/ui/instances/c1/terminal").await;
    assert_eq!((s, body == index), (StatusCode::OK, true));

    // The hashed script index.html names: immutable.
    let script = index
        .split("src=\"/ui/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        script.starts_with("assets/app-") && script.ends_with(".js"),
        "{script}"
    );
    let (s, head, _) = fetch(&h.app, &format!("/ui/{script}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        header(&head, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        header(&head, "cache-control"),
        "public, max-age=31536000, immutable"
    );

    for bad in [
        "/ui/../1.0",
        "/ui/assets/../../etc/passwd",
        "/ui/.env",
        "/ui/a//b",
    ] {
        let (s, _, _) = fetch(&h.app, bad).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn a_ui_directory_replaces_the_build_and_is_never_left() {
    let outer = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dist = outer.path().join("dist");
    let write =
        |p: &std::path::Path, s: &str| std::fs::write(p, s).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dist.join("assets")).unwrap_or_else(|e| panic!("{e}"));
    write(&dist.join("index.html"), "<html>custom</html>");
    write(&dist.join("assets/x-1.css"), "p{}");
    write(&outer.path().join("secret.txt"), "secret");
    std::os::unix::fs::symlink("../secret.txt", dist.join("leak.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let app = app_with_ui_dir(&dist, state.path()).await;

    let (s, head, body) = fetch(&app, "/ui/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "<html>custom</html>"));
    // Another build gets the policy LXD's and Incus' UIs need, not the embedded one's.
    let csp = header(&head, "content-security-policy");
    assert!(csp.contains("style-src 'self' 'unsafe-inline'"), "{csp}");
    assert!(
        csp.contains("script-src 'self';"),
        "no inline script in this index: {csp}"
    );
    let (s, head, body) = fetch(&app, "/ui/assets/x-1.css").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "p{}"));
    assert_eq!(header(&head, "content-type"), "text/css; charset=utf-8");
    // A directory and a missing file: the app.
    for path in [
        "/ui/assets",
        "/ui/assets/",
        "/ui/nothing.js",
        "/ui/instances/c1",
    ] {
        let (s, _, body) = fetch(&app, path).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, "<html>custom</html>"),
            "{path}"
        );
    }
    // A symlink out of the directory is refused, not followed.
    let (s, _, body) = fetch(&app, "/ui/leak.txt").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!body.contains("secret"));
}
