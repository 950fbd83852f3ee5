//! Test helpers: a hand-written HTTP/1.1 side for fake ctld servers (on a Unix socket, or
//! any stream such as a TLS one).

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read one HTTP request (head and Content-Length body) from a fake-server connection.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Vec<u8>) {
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
pub async fn write_response<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, body: &Value) {
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

/// One request a [`FakeServer`] saw: method, path with query, and the JSON body (`Null`
/// when there was none).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Value,
}

impl Seen {
    /// What a test expects: `method path` and a body.
    pub fn new(method: &str, path: &str, body: Value) -> Self {
        Seen {
            method: method.to_string(),
            path: path.to_string(),
            body,
        }
    }
}

/// A fake ctld that answers its connections, one request each, with the given envelopes in
/// order (the HTTP status follows the envelope: 200 sync, 202 async, `error_code` for an
/// error), and records what it was asked.
pub struct FakeServer {
    dir: tempfile::TempDir,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serve `answers` on a fresh socket in a temp dir.
    pub fn serve(answers: Vec<Value>) -> FakeServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME))
            .expect("bind the fake socket");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            for answer in answers {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (head, body) = read_request(&mut stream).await;
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Ok(mut seen) = record.lock() {
                    seen.push(Seen { method, path, body });
                }
                let status = match answer["type"].as_str() {
                    Some("async") => "202 Accepted".to_string(),
                    Some("error") => format!("{} Error", answer["error_code"]),
                    _ => "200 OK".to_string(),
                };
                write_response(&mut stream, &status, &answer).await;
            }
        });
        FakeServer { dir, seen, task }
    }

    /// A client for this server.
    pub fn client(&self) -> crate::Client {
        crate::Client::from_dir(self.dir.path())
    }

    /// Stop serving and return the requests seen, in order.
    pub fn seen(self) -> Vec<Seen> {
        self.task.abort();
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An operation as the daemon shows it (`status_code` 103 running, 200 success, 400 failure).
pub fn operation(id: &str, status_code: u16, err: &str) -> Value {
    let status = match status_code {
        103 => "Running",
        200 => "Success",
        _ => "Failure",
    };
    serde_json::json!({"id": id, "class": "task", "description": "", "created_at": "",
        "updated_at": "", "status": status, "status_code": status_code, "resources": {},
        "metadata": null, "may_cancel": false, "err": err, "location": ""})
}

/// An error envelope with `code` and `message`.
pub fn error_envelope(code: u16, message: &str) -> Value {
    serde_json::json!({"type": "error", "status": "", "status_code": 0, "operation": "",
        "error_code": code, "error": message, "metadata": null})
}
