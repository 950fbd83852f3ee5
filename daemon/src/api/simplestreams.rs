//! The simplestreams tree of ctld's public images: `streams/v1/index.json`, the
//! `streams/v1/images.json` catalog and the image files it points at (`images/<fp>/<file>`,
//! with `Range` support so pullers can resume). Served on the Unix socket and, with
//! `--http-address`, alone on a TCP listener ([`super::public_router`]).

use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncSeekExt;

use super::images_transfer::{download, file_chunks, open};
use super::{ApiError, AppState};
use crate::images::simplestreams;

/// `GET /streams/v1/index.json`.
pub async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (index, _) = simplestreams::publish(&state.images.published().await?);
    Ok(Json(index).into_response())
}

/// `GET /streams/v1/images.json`.
pub async fn catalog(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (_, catalog) = simplestreams::publish(&state.images.published().await?);
    Ok(Json(catalog).into_response())
}

/// The start offset of a `Range: bytes=N-` header (the only form pullers send).
fn range_start(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// `GET /images/{fingerprint}/{file}`: a stored file of a public image.
pub async fn file(
    State(state): State<AppState>,
    Path((fingerprint, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let path: PathBuf = state.images.published_file(&fingerprint, &name).await?;
    let mut f = open(&path).await?;
    let len = f
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .len();
    let content_type = "application/octet-stream";
    match range_start(&headers) {
        Some(start) if start >= len => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(resp)
        }
        Some(start) => {
            f.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut resp = download(
                Body::from_stream(file_chunks(f)),
                content_type,
                Some(len - start),
                None,
            );
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", len - 1)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(resp)
        }
        None => Ok(download(
            Body::from_stream(file_chunks(f)),
            content_type,
            Some(len),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_start_reads_open_ended_ranges_only() {
        let mut h = HeaderMap::new();
        assert_eq!(range_start(&h), None);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=100-"));
        assert_eq!(range_start(&h), Some(100));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=1-5"));
        assert_eq!(range_start(&h), None);
    }
}
