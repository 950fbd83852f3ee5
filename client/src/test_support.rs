//! Test helpers: a hand-written HTTP/1.1 side for fake ctld servers on a Unix socket.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Read one HTTP request (head and Content-Length body) from a fake-server connection.
pub async fn read_request(stream: &mut UnixStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return (String::from_utf8_lossy(&data).into_owned(), Vec::new());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

/// Write a hand-made HTTP/1.1 answer carrying `body` as JSON.
pub async fn write_response(stream: &mut UnixStream, status: &str, body: &Value) {
    let body = body.to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A sync envelope around `metadata`.
pub fn sync_envelope(metadata: Value) -> Value {
    serde_json::to_value(ctl_api::Response::sync(metadata)).unwrap_or_default()
}

/// An async envelope for operation `op` (its `id` names the URL).
pub fn async_envelope(op: Value) -> Value {
    let url = format!("/1.0/operations/{}", op["id"].as_str().unwrap_or_default());
    serde_json::to_value(ctl_api::Response::async_op(url, op)).unwrap_or_default()
}
