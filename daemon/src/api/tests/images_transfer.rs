//! Router tests of image import, export, publish and aliases over the fake worker: the
//! wire shape, the statuses, and that a refused upload leaves nothing behind.

use std::io::Read;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::{Harness, call, harness, harness_with, run_op};
use crate::images::busybox::hex;
use crate::images::tarball::{Compression, ImageMetadata, Tree, write_unified};

/// A request with a raw body and headers: status, headers and the body bytes.
async fn raw(
    h: &Harness,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body)).unwrap_or_else(|e| panic!("{e}"));
    let resp = h
        .app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, headers, bytes)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// A gzip unified tarball of a small tree.
fn image_tarball() -> Vec<u8> {
    let tree = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::create_dir(tree.path().join("etc"));
    let _ = std::fs::write(tree.path().join("etc/hostname"), "box\n");
    let meta = ImageMetadata {
        architecture: "x86_64".into(),
        creation_date: 1_700_000_000,
        properties: [("os".to_string(), "Tiny".to_string())].into(),
        ..ImageMetadata::default()
    };
    let mut enc = Compression::Gzip
        .encoder(Vec::new())
        .unwrap_or_else(|e| panic!("{e}"));
    write_unified(&mut enc, &meta, &Tree::dir(tree.path())).unwrap_or_else(|e| panic!("{e}"));
    enc.finish().unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `$CTL_DIR/tmp` empties (work directories are removed in the background).
async fn tmp_empties(h: &Harness) -> bool {
    let tmp = h._dir.path().join("tmp");
    for _ in 0..100 {
        let empty = std::fs::read_dir(&tmp).map_or(true, |mut rd| rd.next().is_none());
        if empty {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn aliases_are_created_and_deleted() {
    let h = harness().await;
    let create = |body: &'static str| call(&h.app, "POST", "/1.0/images/aliases", body);
    let (status, v) = create(r#"{"name":"mine","target":"ab12","description":"d"}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["type"], "sync");
    let (_, v) = call(&h.app, "GET", "/1.0/images/aliases/mine", "").await;
    assert_eq!(v["metadata"]["target"], "ab12ab12ab12ab12", "{v}");
    assert_eq!(v["metadata"]["description"], "d");
    let (status, v) = create(r#"{"name":"mine","target":"ab12"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, _) = create(r#"{"name":"other","target":"ffff"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = create(r#"{"name":"","target":"ab12"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = create("not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&h.app, "DELETE", "/1.0/images/aliases/mine", "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = call(&h.app, "DELETE", "/1.0/images/aliases/mine", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "image alias \"mine\" not found");
}

#[tokio::test]
async fn publish_requests_are_checked_first() {
    let h = harness().await;
    let post = |body: &'static str| call(&h.app, "POST", "/1.0/images", body);
    for (body, status, says) in [
        ("{}", StatusCode::BAD_REQUEST, "source is required"),
        (
            r#"{"source":{"type":"url","name":"x"}}"#,
            StatusCode::BAD_REQUEST,
            "not supported",
        ),
        (
            r#"{"source":{"type":"instance"}}"#,
            StatusCode::BAD_REQUEST,
            "source.name",
        ),
        (
            r#"{"source":{"type":"instance","name":"nope"}}"#,
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            r#"{"source":{"type":"instance","name":"c1"},"compression_algorithm":"lz4"}"#,
            StatusCode::BAD_REQUEST,
            "unknown compression",
        ),
        (
            r#"{"source":{"type":"instance","name":"c1"},"aliases":[{"name":"busybox"}]}"#,
            StatusCode::CONFLICT,
            "already exists",
        ),
    ] {
        let (got, v) = post(body).await;
        assert_eq!(got, status, "{body}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body}: {v}"
        );
    }
    let op = run_op(
        &h.app,
        "POST",
        "/1.0/instances",
        r#"{"name":"c1","source":{"type":"image","alias":"busybox"},"start":true}"#,
    )
    .await;
    assert_eq!(op["status"], "Success", "{op}");
    let (status, v) = post(r#"{"source":{"type":"instance","name":"c1"}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "instance \"c1\" is running: stop it first");
}

#[tokio::test]
async fn an_upload_is_imported_and_exported_byte_for_byte() {
    let h = harness().await;
    let tarball = image_tarball();
    let fp = hex(&Sha256::digest(&tarball));
    let (status, _, body) = raw(
        &h,
        "POST",
        "/1.0/images",
        &[
            ("content-type", "application/octet-stream"),
            ("x-incus-fingerprint", &fp),
            ("x-incus-aliases", "alias=tiny&alias=small"),
            ("x-incus-properties", "description=a%20tiny%20one"),
        ],
        tarball.clone(),
    )
    .await;
    let v = json(&body);
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    let (_, done) = call(&h.app, "GET", &format!("{op}/wait?timeout=10"), "").await;
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    assert_eq!(done["metadata"]["metadata"]["fingerprint"], fp.as_str());
    let (_, image) = call(&h.app, "GET", &format!("/1.0/images/{fp}"), "").await;
    let image = &image["metadata"];
    assert_eq!(image["properties"]["os"], "Tiny", "{image}");
    assert_eq!(image["properties"]["description"], "a tiny one", "{image}");
    assert_eq!(image["created_at"], "2023-11-14T22:13:20Z");
    assert_ne!(image["uploaded_at"], image["created_at"], "uploaded now");
    assert_eq!(image["size"], 4);
    let aliases: Vec<&str> = image["aliases"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(aliases, ["small", "tiny"]);
    let dir = h._dir.path().join("images").join(&fp);
    assert_eq!(
        std::fs::read_to_string(dir.join("rootfs/etc/hostname"))
            .ok()
            .as_deref(),
        Some("box\n")
    );

    // Export: the stored file, with its length and a file name.
    let uri = format!("/1.0/images/{}/export", &fp[..12]);
    let (status, headers, body) = raw(&h, "GET", &uri, &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == tarball, "the export is the uploaded file");
    assert_eq!(
        headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok()),
        Some(format!("attachment; filename={fp}.tar.gz").as_str())
    );
    assert_eq!(
        headers.get("content-length").and_then(|v| v.to_str().ok()),
        Some(tarball.len().to_string().as_str())
    );
    // Recompressed on the way out.
    let (status, _, body) = raw(&h, "GET", &format!("{uri}?compression=xz"), &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Compression::detect(&body).ok(), Some(Compression::Xz));
    let mut plain = Vec::new();
    let _ = liblzma::read::XzDecoder::new(body.as_slice()).read_to_end(&mut plain);
    let mut gunzipped = Vec::new();
    let _ = flate2::read::GzDecoder::new(tarball.as_slice()).read_to_end(&mut gunzipped);
    assert!(plain == gunzipped, "same tar inside");

    // The same image again is a conflict, answered before any operation.
    let (status, _, body) = raw(&h, "POST", "/1.0/images", &[], tarball.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{}", json(&body));
    assert!(tmp_empties(&h).await);
}

#[tokio::test]
async fn a_large_upload_streams_through() {
    let h = harness().await;
    // 8 MiB that do not compress, as a bare tar: past any in-memory body limit.
    let tree = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let _ = std::fs::write(tree.path().join("noise"), &noise);
    let meta = ImageMetadata {
        architecture: "x86_64".into(),
        creation_date: 1_700_000_000,
        properties: Default::default(),
        ..ImageMetadata::default()
    };
    let (tarball, _) =
        write_unified(Vec::new(), &meta, &Tree::dir(tree.path())).unwrap_or_else(|e| panic!("{e}"));
    let fp = hex(&Sha256::digest(&tarball));
    let (status, _, body) = raw(&h, "POST", "/1.0/images", &[], tarball).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", json(&body));
    let op = json(&body)["operation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, done) = call(&h.app, "GET", &format!("{op}/wait?timeout=30"), "").await;
    assert_eq!(
        done["metadata"]["metadata"]["fingerprint"],
        fp.as_str(),
        "{done}"
    );
    let stored = std::fs::read(h._dir.path().join("images").join(&fp).join("rootfs/noise"))
        .unwrap_or_default();
    assert!(stored == noise, "the rootfs holds the file as uploaded");
}

#[tokio::test]
async fn refused_uploads_leave_nothing() {
    let h = harness().await;
    let tarball = image_tarball();
    let (status, _, body) = raw(
        &h,
        "POST",
        "/1.0/images",
        &[("x-lxd-fingerprint", &"0".repeat(64))],
        tarball,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = json(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("fingerprint mismatch"), "{error}");
    assert!(tmp_empties(&h).await);

    // Junk is accepted as an upload, then refused by the operation.
    let (status, _, body) = raw(&h, "POST", "/1.0/images", &[], b"junk".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let op = json(&body)["operation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, done) = call(&h.app, "GET", &format!("{op}/wait?timeout=10"), "").await;
    assert_eq!(done["metadata"]["status"], "Failure");
    assert!(
        done["metadata"]["err"]
            .as_str()
            .is_some_and(|e| e.contains("not a tarball")),
        "{done}"
    );
    assert!(tmp_empties(&h).await);
    let (_, images) = call(&h.app, "GET", "/1.0/images", "").await;
    assert_eq!(images["metadata"].as_array().map(Vec::len), Some(1));

    // An empty body and a broken multipart body are 400s.
    let (status, _, _) = raw(&h, "POST", "/1.0/images", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = raw(
        &h,
        "POST",
        "/1.0/images",
        &[("content-type", "multipart/form-data; boundary=xyz")],
        b"--xyz\r\nContent-Disposition: form-data; name=\"rootfs\"\r\n\r\nx\r\n--xyz--\r\n"
            .to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", json(&body));
    assert!(tmp_empties(&h).await);
}

/// Upload `tarball` and wait for its operation; returns the finished operation.
async fn upload_and_wait(h: &Harness, tarball: Vec<u8>) -> Value {
    let (status, _, body) = raw(h, "POST", "/1.0/images", &[], tarball).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", json(&body));
    let op = json(&body)["operation"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    call(&h.app, "GET", &format!("{op}/wait?timeout=30"), "")
        .await
        .1
}

#[tokio::test]
async fn a_sparse_image_is_stored_sparsely() {
    use crate::images::unpack::fixtures::{gnu_sparse, unified};
    use std::os::unix::fs::MetadataExt;
    let h = harness().await;
    let tarball = unified(&[gnu_sparse(
        "rootfs/big",
        1 << 30,
        &[(1 << 20, &[b'x'; 4096])],
    )]);
    let done = upload_and_wait(&h, tarball).await;
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    let fp = done["metadata"]["metadata"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let big = h._dir.path().join("images").join(&fp).join("rootfs/big");
    let md = std::fs::metadata(&big).unwrap_or_else(|e| panic!("{}: {e}", big.display()));
    assert_eq!(md.len(), 1 << 30);
    assert!(
        md.blocks() * 512 <= 64 * 1024,
        "{} bytes allocated",
        md.blocks() * 512
    );
    let (_, image) = call(&h.app, "GET", &format!("/1.0/images/{fp}"), "").await;
    assert_eq!(image["metadata"]["size"], 1 << 30, "{image}");
}

#[tokio::test]
async fn an_image_over_the_size_limits_leaves_nothing() {
    use crate::images::unpack::{
        Limits,
        fixtures::{file, gnu_sparse, unified},
    };
    let h = harness_with(Limits {
        max_entry: 1 << 20,
        max_total: 2 << 20,
    })
    .await;
    let images_dir = h._dir.path().join("images");
    let stored = || std::fs::read_dir(&images_dir).map_or(0, |rd| rd.count());
    let before = stored();
    // One file claiming 1 GiB, after a file that was written.
    let done = upload_and_wait(
        &h,
        unified(&[
            file("rootfs/etc/hostname", b"box\n"),
            gnu_sparse("rootfs/big", 1 << 30, &[(0, &[b'x'; 512])]),
        ]),
    )
    .await;
    assert_eq!(done["metadata"]["status"], "Failure", "{done}");
    let err = done["metadata"]["err"].as_str().unwrap_or_default();
    assert!(err.contains("over the 1 MiB one file may have"), "{err}");
    assert!(tmp_empties(&h).await, "the work directory was left");
    // Files that each fit but add up to more than the image may have.
    let done = upload_and_wait(
        &h,
        unified(&[
            gnu_sparse("rootfs/a", 1 << 20, &[(0, &[b'a'; 512])]),
            gnu_sparse("rootfs/b", 1 << 20, &[(0, &[b'b'; 512])]),
            file("rootfs/c", b"c"),
        ]),
    )
    .await;
    assert_eq!(done["metadata"]["status"], "Failure", "{done}");
    let err = done["metadata"]["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("the image unpacks to more than 2 MiB"),
        "{err}"
    );
    assert!(tmp_empties(&h).await, "the work directory was left");
    assert_eq!(stored(), before, "a refused image was stored");
    let (_, images) = call(&h.app, "GET", "/1.0/images", "").await;
    assert_eq!(images["metadata"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_image_without_its_file_is_exported_from_its_rootfs() {
    let h = harness().await;
    // The harness's image has a row but no files: give it a rootfs.
    let rootfs = h._dir.path().join("images/ab12ab12ab12ab12/rootfs");
    let _ = std::fs::create_dir_all(rootfs.join("etc"));
    let _ = std::fs::write(rootfs.join("etc/motd"), "hi\n");
    let (status, headers, body) = raw(
        &h,
        "GET",
        "/1.0/images/ab12/export?compression=zstd",
        &[],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers
            .get("content-disposition")
            .and_then(|v| v.to_str().ok()),
        Some("attachment; filename=ab12ab12ab12ab12.tar.zst")
    );
    let mut plain = Vec::new();
    let _ = zstd::stream::read::Decoder::new(body.as_slice())
        .and_then(|mut d| d.read_to_end(&mut plain));
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(plain.as_slice());
    for e in archive.entries().into_iter().flatten().flatten() {
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
    }
    assert_eq!(
        names,
        ["metadata.yaml", "rootfs", "rootfs/etc", "rootfs/etc/motd"]
    );
    for (uri, status) in [
        (
            "/1.0/images/ab12/export?compression=lz4",
            StatusCode::BAD_REQUEST,
        ),
        ("/1.0/images/ffff/export", StatusCode::NOT_FOUND),
    ] {
        let (got, _, _) = raw(&h, "GET", uri, &[], vec![]).await;
        assert_eq!(got, status, "{uri}");
    }
}
