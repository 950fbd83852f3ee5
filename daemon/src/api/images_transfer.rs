//! Images in and out: `POST /1.0/images` (import an uploaded tarball, raw or multipart, or
//! publish an instance or one of its snapshots from a JSON body), `GET /1.0/images/{fingerprint}/export` (the image
//! file, streamed), and `POST`/`DELETE` of `/1.0/images/aliases`.
//!
//! Uploads stream to a file under `$CTL_DIR/tmp` as they arrive (see
//! [`crate::images::transfer`]); the request is answered once the upload is complete and its
//! fingerprint checked, with an operation that unpacks and stores the image and ends with
//! the fingerprint in `metadata.fingerprint`, as in Incus.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ctl_api::{ImageAliasesPost, ImagesPost, OperationClass};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

use super::{ApiError, AppState, accepted, parse_json, sync};
use crate::images::ImageError;
use crate::images::progress::Progress;
use crate::images::remote::CopyOptions;
use crate::images::tarball::Compression;
use crate::images::transfer::{Export, ImportOptions, Upload, form_pairs};

/// The largest JSON body of `POST /1.0/images`.
const MAX_JSON: usize = 1 << 20;

/// Bytes read per chunk of a streamed export.
const READ_CHUNK: usize = 256 * 1024;

fn not_found_404(e: ImageError) -> ApiError {
    match e {
        e @ (ImageError::NotFound { .. } | ImageError::Ambiguous(_)) => {
            ApiError::NotFound(e.to_string())
        }
        e => e.into(),
    }
}

/// A request header, `X-Incus-<name>` or else `X-LXD-<name>`.
fn incus_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    [format!("x-incus-{name}"), format!("x-lxd-{name}")]
        .iter()
        .find_map(|h| headers.get(h.as_str()))
        .and_then(|v| v.to_str().ok())
}

fn import_options(headers: &HeaderMap) -> ImportOptions {
    let pairs = |name| {
        incus_header(headers, name)
            .map(form_pairs)
            .unwrap_or_default()
    };
    ImportOptions {
        properties: pairs("properties").into_iter().collect(),
        aliases: pairs("aliases")
            .into_iter()
            .filter(|(k, v)| k == "alias" && !v.is_empty())
            .map(|(_, v)| v)
            .collect(),
        filename: incus_header(headers, "filename")
            .unwrap_or_default()
            .to_string(),
        public: matches!(incus_header(headers, "public"), Some("true" | "1")),
        cached: false,
    }
}

/// Run `work` as a task operation that ends with `metadata.fingerprint`; answer 202.
fn image_task<F>(
    state: &AppState,
    description: &str,
    resources: BTreeMap<String, Vec<String>>,
    work: F,
) -> Response
where
    F: Future<Output = Result<String, ImageError>> + Send + 'static,
{
    image_task_with(state, description, resources, |_| work)
}

/// Like [`image_task`], for work that reports progress into its operation.
fn image_task_with<W, F>(
    state: &AppState,
    description: &str,
    resources: BTreeMap<String, Vec<String>>,
    work: W,
) -> Response
where
    W: FnOnce(Progress) -> F,
    F: Future<Output = Result<String, ImageError>> + Send + 'static,
{
    let (handle, op) = state.ops.create(
        OperationClass::Task,
        description,
        resources,
        serde_json::Value::Null,
        None,
    );
    let desc = description.to_string();
    let work = work(Progress::for_op(handle.clone()));
    tokio::spawn(async move {
        match work.await {
            Ok(fingerprint) => {
                handle.add_resource("images", format!("/1.0/images/{fingerprint}"));
                handle.set_metadata(serde_json::json!({ "fingerprint": fingerprint }));
                handle.succeed();
            }
            Err(e) => {
                tracing::warn!(operation = %handle.id, %desc, error = %e, "operation failed");
                handle.fail(e.to_string());
            }
        }
    });
    accepted(&op)
}

/// Copy an image from a simplestreams server (`source.type` `image`): resolved before
/// answering (an unknown alias is a 404 listing the server's aliases), downloaded in the
/// operation.
async fn copy(state: AppState, req: ImagesPost) -> Result<Response, ApiError> {
    let source = req.source.unwrap_or_default();
    if !source.mode.is_empty() && source.mode != "pull" {
        return Err(ApiError::BadRequest(format!(
            "source mode \"{}\" is not supported (only \"pull\")",
            source.mode
        )));
    }
    if source.server.is_empty() {
        return Err(ApiError::BadRequest("source.server is required".into()));
    }
    let name = if source.alias.is_empty() {
        &source.fingerprint
    } else {
        &source.alias
    };
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "source.alias or source.fingerprint is required".into(),
        ));
    }
    let remote = state
        .images
        .resolve_remote(&source.server, &source.protocol, name)
        .await?;
    let options = CopyOptions {
        aliases: req.aliases.iter().map(|a| a.name.clone()).collect(),
        public: req.public,
    };
    let store = state.images.clone();
    Ok(image_task_with(
        &state,
        "Downloading image",
        BTreeMap::new(),
        move |progress| async move { store.pull(&remote, &progress, Some(&options)).await },
    ))
}

/// `POST /1.0/images`: a JSON body publishes (`source.type` `instance`); a multipart body
/// (`metadata` then `rootfs` parts) imports a split image; any other body is a unified
/// tarball to import.
pub async fn post_images(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut stream = body.into_data_stream();
    if content_type.starts_with("multipart/form-data") {
        return import_split(state, &headers, &content_type, stream).await;
    }
    let first = stream
        .next()
        .await
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("upload interrupted: {e}")))?;
    let looks_json = first
        .as_ref()
        .and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace()))
        == Some(&b'{');
    let json = content_type.starts_with("application/json")
        || (!content_type.starts_with("application/octet-stream") && looks_json);
    let stream = futures_util::stream::iter(first.map(Ok)).chain(stream);
    if json {
        let body = collect_json(stream).await?;
        return publish(state, parse_json(&body)?).await;
    }
    import_raw(state, &headers, stream).await
}

async fn collect_json<S>(stream: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, axum::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
        if body.len() + chunk.len() > MAX_JSON {
            return Err(ApiError::BadRequest("request body too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Check the received upload and start the import.
async fn start_import(
    state: AppState,
    headers: &HeaderMap,
    mut upload: Upload,
) -> Result<Response, ApiError> {
    let fingerprint = upload
        .finish(incus_header(headers, "fingerprint"))?
        .to_string();
    state.images.check_new(&fingerprint).await?;
    let options = import_options(headers);
    let store = state.images.clone();
    Ok(image_task(
        &state,
        "Importing image",
        BTreeMap::new(),
        async move { store.import(upload, options).await },
    ))
}

async fn import_raw<S>(
    state: AppState,
    headers: &HeaderMap,
    stream: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, axum::Error>>,
{
    let mut upload = state.images.upload().await?;
    upload.receive(stream).await?;
    start_import(state, headers, upload).await
}

async fn import_split<S>(
    state: AppState,
    headers: &HeaderMap,
    content_type: &str,
    stream: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
{
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::BadRequest(format!("multipart body: {e}")))?;
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut upload = state.images.upload().await?;
    for expected in ["metadata", "rootfs"] {
        let field = parts
            .next_field()
            .await
            .map_err(|e| ApiError::BadRequest(format!("multipart body: {e}")))?
            .ok_or_else(|| {
                ApiError::BadRequest(format!("multipart body: no \"{expected}\" part"))
            })?;
        let name = field.name().unwrap_or_default().to_string();
        if name != expected {
            return Err(ApiError::BadRequest(format!(
                "multipart body: expected the \"{expected}\" part, got \"{name}\" \
                 (only container images: metadata, then rootfs)"
            )));
        }
        upload.receive(field).await?;
    }
    start_import(state, headers, upload).await
}

/// Publish a stopped instance as an image.
async fn publish(state: AppState, req: ImagesPost) -> Result<Response, ApiError> {
    let source = req.source.clone().unwrap_or_default();
    let snapshot = match source.kind.as_str() {
        "instance" | "container" => false,
        "snapshot" => true,
        "image" => return copy(state, req).await,
        "" => {
            return Err(ApiError::BadRequest(
                "a source is required: {\"source\": {\"type\": \"instance\", \"name\": ...}}"
                    .into(),
            ));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "image source type \"{other}\" is not supported (only \"instance\", \
                 \"snapshot\" and \"image\")"
            )));
        }
    };
    if source.name.is_empty() {
        return Err(ApiError::BadRequest("source.name is required".into()));
    }
    let snapshot_of = match (snapshot, source.name.split_once('/')) {
        (true, Some((instance, snap))) if !instance.is_empty() && !snap.is_empty() => {
            Some((instance.to_string(), snap.to_string()))
        }
        (true, _) => {
            return Err(ApiError::BadRequest(format!(
                "source.name \"{}\" of a snapshot must be INSTANCE/SNAPSHOT",
                source.name
            )));
        }
        (false, _) => None,
    };
    let compression = match req.compression_algorithm.as_str() {
        "" => Compression::DEFAULT,
        c => Compression::parse(c).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown compression \"{c}\": use gzip, xz, zstd or none"
            ))
        })?,
    };
    let aliases: Vec<String> = req.aliases.iter().map(|a| a.name.clone()).collect();
    for alias in &aliases {
        state.images.check_alias_free(alias).await?;
    }
    let held = match &snapshot_of {
        Some((instance, snap)) => state.instances.hold_snapshot(instance, snap).await?,
        None => state.instances.hold_stopped(&source.name).await?,
    };
    let store = state.images.clone();
    let properties = req.properties;
    let public = req.public;
    Ok(image_task(
        &state,
        if snapshot_of.is_some() {
            "Publishing snapshot"
        } else {
            "Publishing instance"
        },
        super::instance_resources(&held.name),
        async move {
            let made = store
                .publish(
                    held.source.clone(),
                    properties,
                    aliases,
                    compression,
                    public,
                )
                .await;
            drop(held);
            made
        },
    ))
}

/// A file's bytes as a stream of chunks.
pub(super) fn file_chunks(
    file: tokio::fs::File,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok(Some((chunk, file)))
    })
}

pub(super) async fn open(path: &PathBuf) -> Result<tokio::fs::File, ApiError> {
    tokio::fs::File::open(path).await.map_err(|source| {
        ApiError::Image(ImageError::Io {
            path: path.clone(),
            source,
        })
    })
}

pub(super) fn download(
    body: Body,
    content_type: &str,
    len: Option<u64>,
    name: Option<&str>,
) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(v) =
        name.and_then(|n| HeaderValue::from_str(&format!("attachment; filename={n}")).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// `GET /1.0/images/{fingerprint}/export[?compression=gzip|xz|zstd|none]`: the image file,
/// streamed. A split image comes as `multipart/form-data` with `metadata` and `rootfs` parts.
pub async fn export(
    State(state): State<AppState>,
    Path(fingerprint): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let compression = match q.get("compression").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(Compression::parse(c).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown compression \"{c}\": use gzip, xz, zstd or none"
            ))
        })?),
    };
    let export = state
        .images
        .export(&fingerprint, compression)
        .await
        .map_err(not_found_404)?;
    const OCTETS: &str = "application/octet-stream";
    Ok(match export {
        Export::File { path, len, name } => {
            let body = Body::from_stream(file_chunks(open(&path).await?));
            download(body, OCTETS, Some(len), Some(&name))
        }
        Export::Stream { chunks, name } => {
            let chunks = futures_util::stream::unfold(chunks, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            download(Body::from_stream(chunks), OCTETS, None, Some(&name))
        }
        Export::Split { metadata, rootfs } => {
            let boundary = uuid::Uuid::new_v4().simple().to_string();
            let head = |part: &str, name: &str, first: bool| {
                format!(
                    "{}--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; \
                     filename=\"{name}\"\r\nContent-Type: {OCTETS}\r\n\r\n",
                    if first { "" } else { "\r\n" }
                )
                .into_bytes()
            };
            let (h1, h2) = (
                head("metadata", &metadata.2, true),
                head("rootfs", &rootfs.2, false),
            );
            let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
            let len = [h1.len(), h2.len(), tail.len()]
                .iter()
                .map(|n| *n as u64)
                .sum::<u64>()
                + metadata.1
                + rootfs.1;
            let once = |b: Vec<u8>| futures_util::stream::iter([Ok::<_, std::io::Error>(b)]);
            let body = once(h1)
                .chain(file_chunks(open(&metadata.0).await?))
                .chain(once(h2))
                .chain(file_chunks(open(&rootfs.0).await?))
                .chain(once(tail));
            download(
                Body::from_stream(body),
                &format!("multipart/form-data; boundary={boundary}"),
                Some(len),
                None,
            )
        }
    })
}

/// `POST /1.0/images/aliases` with `{name, target, description}`: 409 when the name is
/// taken, 404 when the target is not an image.
pub async fn create_alias(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ImageAliasesPost = parse_json(&body)?;
    state
        .images
        .create_alias(&req.name, &req.target, &req.description)
        .await
        .map_err(not_found_404)?;
    Ok(sync(serde_json::json!({})))
}

/// `DELETE /1.0/images/aliases/{name}`: the image stays.
pub async fn delete_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = name.trim_start_matches('/');
    match state.images.delete_alias(name).await {
        Ok(()) => Ok(sync(serde_json::json!({}))),
        Err(ImageError::NotFound { .. }) => Err(ApiError::NotFound(format!(
            "image alias \"{name}\" not found"
        ))),
        Err(e) => Err(e.into()),
    }
}
