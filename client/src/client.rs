//! The typed ctld client: HTTP/1.1 over the daemon's Unix socket or a remote's HTTPS (see
//! [`crate::transport`]), the response envelope, and waiting for operations.
//!
//! One connection per request keeps the client simple; every answer is decoded as a
//! [`ctl_api::Response`] and error envelopes become [`Error::Api`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ctl_api::{
    Image, ImageAliasesEntry, Instance, InstanceExecPost, InstanceFull, InstancePut, InstanceState,
    InstanceStatePut, InstancesPost, Operation, Response, ResponseType, Server, StatusCode,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::transport::{Conn, HttpsTarget, Transport};

/// Default state directory of ctld; the socket is `unix.socket` inside it.
pub const DEFAULT_DIR: &str = "/var/lib/ctld";
/// File name of the API socket inside the state directory.
pub const SOCKET_NAME: &str = "unix.socket";

/// Bytes left alone in a path segment (RFC 3986 unreserved); everything else is escaped,
/// so `debian/bookworm` becomes `debian%2Fbookworm`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode one URL path segment (or query value).
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The id at the end of an operation URL such as `/1.0/operations/<id>` (a bare id is
/// returned unchanged).
pub fn operation_id(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// A client for one ctld, addressed by its Unix socket or, for a remote, over HTTPS.
#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
}

impl Client {
    /// A client talking to the socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            transport: Transport::Unix(socket.into()),
        }
    }

    /// A client for the daemon whose state directory is `dir` (socket `dir/unix.socket`).
    pub fn from_dir(dir: &Path) -> Self {
        Client::new(dir.join(SOCKET_NAME))
    }

    /// A client for a remote daemon over HTTPS.
    pub fn https(target: HttpsTarget) -> Self {
        Client {
            transport: Transport::Https(Arc::new(target)),
        }
    }

    /// How this client reaches its daemon.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The socket this client connects to (`None` for a remote over HTTPS).
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Unix(path) => Some(path),
            Transport::Https(_) => None,
        }
    }

    /// The remote this client talks to over HTTPS (`None` for the Unix socket).
    pub fn remote_name(&self) -> Option<&str> {
        match &self.transport {
            Transport::Unix(_) => None,
            Transport::Https(target) => Some(&target.remote),
        }
    }

    /// A fresh connection to the daemon (used for HTTP and for websockets).
    pub async fn connect(&self) -> Result<Conn, Error> {
        self.transport.connect().await
    }

    /// Send one request and decode the envelope. Error envelopes (and non-JSON error
    /// answers) become [`Error::Api`]; sync and async envelopes are returned as they are.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, Error> {
        let http_err = |source| Error::Http {
            method: method.to_string(),
            path: path.to_string(),
            source,
        };
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        let driver = tokio::spawn(connection);

        let payload = match body {
            Some(value) => {
                Bytes::from(serde_json::to_vec(value).map_err(|source| Error::Decode {
                    what: "request body".into(),
                    source,
                })?)
            }
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.transport.host());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| Error::Protocol(format!("invalid request {method} {path}: {e}")))?;

        let answer = sender.send_request(request).await.map_err(http_err)?;
        let status = answer.status();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        drop(sender);
        driver.abort();

        decode_envelope(status.as_u16(), status.canonical_reason(), &bytes)
    }

    /// `GET path` and return the metadata of a sync answer as raw JSON.
    pub async fn get_value(&self, path: &str) -> Result<Value, Error> {
        let response = self.request(Method::GET, path, None).await?;
        Ok(response.metadata)
    }

    /// `GET path` and decode the metadata of a sync answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        decode(path, self.get_value(path).await?)
    }

    /// Send a request that answers with an operation (an async envelope) and return the
    /// operation as created.
    pub async fn request_operation(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Operation, Error> {
        let response = self.request(method, path, body).await?;
        if response.kind != ResponseType::Async {
            return Err(Error::Protocol(format!(
                "{path} answered {:?} where an operation was expected",
                response.kind
            )));
        }
        operation_of(path, response)
    }

    /// Wait for operation `id` (an id or its URL) to finish. A failed or cancelled operation
    /// becomes [`Error::Operation`] carrying its `err`.
    pub async fn wait_operation(&self, id: &str) -> Result<Operation, Error> {
        let id = operation_id(id);
        let path = format!("/1.0/operations/{}/wait?timeout=-1", encode_segment(id));
        let operation: Operation = self.get(&path).await?;
        check_operation(operation)
    }

    /// Send a request that answers with an operation and wait for it to finish.
    pub async fn run_operation(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Operation, Error> {
        let operation = self.request_operation(method, path, body).await?;
        self.wait_operation(&operation.id).await
    }

    /// Send a request that may answer either way: a sync answer is done, an operation is
    /// waited for (and its failure becomes [`Error::Operation`]).
    pub async fn request_settled(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Operation>, Error> {
        let response = self.request(method, path, body).await?;
        if response.kind != ResponseType::Async {
            return Ok(None);
        }
        let operation = operation_of(path, response)?;
        self.wait_operation(&operation.id).await.map(Some)
    }

    /// Send a request that may answer either way and return the operation it started, not
    /// waited for (`None` for a sync answer: done already). The caller waits, with
    /// [`crate::progress::wait`] to show progress.
    pub async fn request_started(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Operation>, Error> {
        let response = self.request(method, path, body).await?;
        if response.kind != ResponseType::Async {
            return Ok(None);
        }
        operation_of(path, response).map(Some)
    }

    /// `GET /1.0`: the server and its environment.
    pub async fn server(&self) -> Result<Server, Error> {
        self.get("/1.0").await
    }

    /// `GET /1.0/instances?recursion=2` as raw JSON (for json/yaml output).
    pub async fn instances_value(&self) -> Result<Value, Error> {
        self.get_value("/1.0/instances?recursion=2").await
    }

    /// `GET /1.0/instances?recursion=2`: every instance with its state.
    pub async fn instances(&self) -> Result<Vec<InstanceFull>, Error> {
        self.get("/1.0/instances?recursion=2").await
    }

    /// `GET /1.0/instances/{name}`.
    pub async fn instance(&self, name: &str) -> Result<Instance, Error> {
        self.get(&instance_path(name)).await
    }

    /// `GET /1.0/instances/{name}/state`.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState, Error> {
        self.get(&format!("{}/state", instance_path(name))).await
    }

    /// `GET /1.0/instances/{name}/state` as raw JSON (for lenient decoding, see
    /// [`crate::usage`]).
    pub async fn instance_state_value(&self, name: &str) -> Result<Value, Error> {
        self.get_value(&format!("{}/state", instance_path(name)))
            .await
    }

    /// `PATCH /1.0/instances/{name}`: merge `request` into the instance (an empty config
    /// value unsets the key). ctld answers sync; an operation, as Incus answers, is waited for.
    pub async fn patch_instance(&self, name: &str, request: &InstancePut) -> Result<(), Error> {
        let body = to_value(request)?;
        self.request_settled(Method::PATCH, &instance_path(name), Some(&body))
            .await
            .map(drop)
    }

    /// `PUT /1.0/instances/{name}`: replace the instance's config with `request` and wait for
    /// the operation it answers with (a sync answer is accepted too).
    pub async fn replace_instance(&self, name: &str, request: &InstancePut) -> Result<(), Error> {
        let body = to_value(request)?;
        self.request_settled(Method::PUT, &instance_path(name), Some(&body))
            .await
            .map(drop)
    }

    /// `POST /1.0/instances`: start creating an instance; returns the operation.
    pub async fn create_instance(&self, request: &InstancesPost) -> Result<Operation, Error> {
        self.create_instance_on(request, None).await
    }

    /// `POST /1.0/instances[?target=MEMBER]`: start creating an instance, on cluster member
    /// `target` when given; returns the operation.
    pub async fn create_instance_on(
        &self,
        request: &InstancesPost,
        target: Option<&str>,
    ) -> Result<Operation, Error> {
        let body = to_value(request)?;
        self.request_operation(Method::POST, &instances_url(target), Some(&body))
            .await
    }

    /// `PUT /1.0/instances/{name}/state`: start, stop, restart, freeze or unfreeze;
    /// returns the operation.
    pub async fn update_instance_state(
        &self,
        name: &str,
        request: &InstanceStatePut,
    ) -> Result<Operation, Error> {
        let body = to_value(request)?;
        let path = format!("{}/state", instance_path(name));
        self.request_operation(Method::PUT, &path, Some(&body))
            .await
    }

    /// `DELETE /1.0/instances/{name}`; returns the operation.
    pub async fn delete_instance(&self, name: &str) -> Result<Operation, Error> {
        self.request_operation(Method::DELETE, &instance_path(name), None)
            .await
    }

    /// `POST /1.0/instances/{name}/exec`; returns the websocket operation whose
    /// `metadata.fds` holds the stream secrets.
    pub async fn exec(&self, name: &str, request: &InstanceExecPost) -> Result<Operation, Error> {
        let body = to_value(request)?;
        let path = format!("{}/exec", instance_path(name));
        self.request_operation(Method::POST, &path, Some(&body))
            .await
    }

    /// `GET /1.0/images?recursion=1` as raw JSON (for json/yaml output).
    pub async fn images_value(&self) -> Result<Value, Error> {
        self.get_value("/1.0/images?recursion=1").await
    }

    /// `GET /1.0/images?recursion=1`: every image.
    pub async fn images(&self) -> Result<Vec<Image>, Error> {
        self.get("/1.0/images?recursion=1").await
    }

    /// `GET /1.0/images`: the fingerprints of every image (taken from their URLs).
    pub async fn image_fingerprints(&self) -> Result<Vec<String>, Error> {
        let urls: Vec<String> = self.get("/1.0/images").await?;
        Ok(urls
            .iter()
            .map(|url| operation_id(url).to_string())
            .collect())
    }

    /// `GET /1.0/images/aliases/{name}`: what an alias points at.
    pub async fn image_alias(&self, name: &str) -> Result<ImageAliasesEntry, Error> {
        self.get(&format!("/1.0/images/aliases/{}", encode_segment(name)))
            .await
    }

    /// `DELETE /1.0/images/{fingerprint}`; returns the operation.
    pub async fn delete_image(&self, fingerprint: &str) -> Result<Operation, Error> {
        let path = format!("/1.0/images/{}", encode_segment(fingerprint));
        self.request_operation(Method::DELETE, &path, None).await
    }

    /// Send `request`, whose body may stream, and return the answer with its body unread, to
    /// be streamed too (the connection lives until it is read or dropped). The `Host` header
    /// is added. Use [`envelope_of`] on answers that are not a raw body.
    pub async fn send<B>(
        &self,
        mut request: Request<B>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().to_string();
        let path = request.uri().to_string();
        let http_err = |source| Error::Http {
            method: method.clone(),
            path: path.clone(),
            source,
        };
        let host = hyper::header::HeaderValue::from_str(self.transport.host())
            .map_err(|e| Error::Protocol(format!("invalid host header: {e}")))?;
        request.headers_mut().insert(HOST, host);
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // Ends by itself once the exchange is over (the answer's body read or dropped).
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(http_err)
    }
}

/// Read an answer's body and decode it as an envelope; error envelopes (and error statuses
/// without one) become [`Error::Api`].
pub async fn envelope_of(
    answer: hyper::Response<hyper::body::Incoming>,
) -> Result<Response, Error> {
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|source| Error::Http {
            method: String::new(),
            path: "(answer body)".into(),
            source,
        })?
        .to_bytes();
    decode_envelope(status.as_u16(), status.canonical_reason(), &bytes)
}

/// Bytes read per chunk of a streamed request body.
const BODY_CHUNK: usize = 256 * 1024;

/// A request body that streams `reader` (a file, stdin) chunk by chunk as the connection
/// takes it, never holding more than one chunk.
pub fn reader_body<R>(
    reader: R,
) -> impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    use tokio::io::AsyncReadExt;
    let chunks = futures_util::stream::try_unfold(reader, |mut reader| async move {
        let mut chunk = vec![0u8; BODY_CHUNK];
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok(Some((hyper::body::Frame::data(Bytes::from(chunk)), reader)))
    });
    http_body_util::StreamBody::new(chunks)
}

/// `/1.0/instances`, with `?target=MEMBER` to create an instance on that cluster member.
pub fn instances_url(target: Option<&str>) -> String {
    match target {
        Some(member) => format!("/1.0/instances?target={}", encode_segment(member)),
        None => "/1.0/instances".to_string(),
    }
}

/// `/1.0/instances/{name}` with the name percent-encoded.
fn instance_path(name: &str) -> String {
    format!("/1.0/instances/{}", encode_segment(name))
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|source| Error::Decode {
        what: "request body".into(),
        source,
    })
}

/// The operation an async answer to `path` carries, its id taken from the operation URL when
/// the metadata has none.
fn operation_of(path: &str, response: Response) -> Result<Operation, Error> {
    let mut operation: Operation = decode("operation", response.metadata)?;
    if operation.id.is_empty() {
        operation.id = operation_id(&response.operation).to_string();
    }
    if operation.id.is_empty() {
        return Err(Error::Protocol(format!("{path} answered no operation id")));
    }
    Ok(operation)
}

fn decode<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|source| Error::Decode {
        what: format!("answer to {what}"),
        source,
    })
}

/// Turn a raw HTTP answer into an envelope, mapping error envelopes (and answers that are
/// not an envelope at all but carry an HTTP error status) to [`Error::Api`].
pub fn decode_envelope(status: u16, reason: Option<&str>, body: &[u8]) -> Result<Response, Error> {
    let response: Response = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(_) if status >= 400 => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let message = if text.is_empty() {
                reason.unwrap_or("request failed").to_string()
            } else {
                text
            };
            return Err(Error::Api {
                code: status,
                message,
            });
        }
        Err(source) => {
            return Err(Error::Decode {
                what: "response envelope".into(),
                source,
            });
        }
    };
    if response.kind == ResponseType::Error {
        let code = if response.error_code == 0 {
            status
        } else {
            response.error_code
        };
        let message = if response.error.is_empty() {
            reason.unwrap_or("request failed").to_string()
        } else {
            response.error
        };
        return Err(Error::Api { code, message });
    }
    Ok(response)
}

/// A finished operation, or its failure as an error.
pub fn check_operation(operation: Operation) -> Result<Operation, Error> {
    let default = match operation.status_code {
        StatusCode::Failure => "operation failed",
        StatusCode::Cancelled => "operation cancelled",
        _ => return Ok(operation),
    };
    let message = if operation.err.is_empty() {
        default.to_string()
    } else {
        operation.err
    };
    Err(Error::Operation {
        id: operation.id,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{read_request, sync_envelope, write_response};
    use serde_json::json;
    use tokio::net::UnixListener;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("debian/bookworm"), "debian%2Fbookworm");
        assert_eq!(encode_segment("c1"), "c1");
        assert_eq!(encode_segment("a b?c"), "a%20b%3Fc");
        assert_eq!(encode_segment("x-y_z.1~"), "x-y_z.1~");
    }

    #[test]
    fn a_target_member_is_a_query() {
        assert_eq!(instances_url(None), "/1.0/instances");
        assert_eq!(instances_url(Some("node2")), "/1.0/instances?target=node2");
        assert_eq!(instances_url(Some("a b")), "/1.0/instances?target=a%20b");
    }

    #[test]
    fn operation_ids_come_from_urls() {
        assert_eq!(operation_id("/1.0/operations/abc-123"), "abc-123");
        assert_eq!(operation_id("/1.0/operations/abc/"), "abc");
        assert_eq!(operation_id("abc"), "abc");
        assert_eq!(operation_id("/1.0/images/ff00?x=1"), "ff00");
    }

    #[test]
    fn error_envelope_becomes_api_error() {
        let body = json!({"type": "error", "error_code": 404, "error": "instance \"c1\" not found",
                          "status": "", "status_code": 0, "operation": "", "metadata": null});
        let err = decode_envelope(404, Some("Not Found"), body.to_string().as_bytes()).err();
        assert_eq!(err.as_ref().and_then(Error::api_code), Some(404));
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("instance \"c1\" not found".to_string())
        );
    }

    #[test]
    fn non_json_error_uses_body_or_reason() {
        let err = decode_envelope(502, Some("Bad Gateway"), b"").err();
        assert_eq!(err.map(|e| e.to_string()), Some("Bad Gateway".to_string()));
        let err = decode_envelope(500, None, b"boom\n").err();
        assert_eq!(err.map(|e| e.to_string()), Some("boom".to_string()));
        let err = decode_envelope(200, None, b"not json").err();
        assert!(matches!(err, Some(Error::Decode { .. })));
    }

    fn operation(status_code: StatusCode, err: &str) -> Operation {
        Operation {
            id: "op1".into(),
            class: ctl_api::OperationClass::Task,
            description: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            status: status_code.as_str().into(),
            status_code,
            resources: Default::default(),
            metadata: Value::Null,
            may_cancel: false,
            err: err.into(),
            location: String::new(),
        }
    }

    #[test]
    fn failed_operations_are_errors() {
        let failed = check_operation(operation(StatusCode::Failure, "no such image")).err();
        assert_eq!(
            failed.map(|e| e.to_string()),
            Some("no such image".to_string())
        );
        let cancelled = check_operation(operation(StatusCode::Cancelled, "")).err();
        assert_eq!(
            cancelled.map(|e| e.to_string()),
            Some("operation cancelled".to_string())
        );
        let ok = check_operation(operation(StatusCode::Success, "")).ok();
        assert_eq!(ok.map(|o| o.id), Some("op1".to_string()));
    }

    #[tokio::test]
    async fn fake_server_error_envelope_reaches_caller() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else {
            panic!("cannot create a temp dir");
        };
        let listener = UnixListener::bind(dir.path().join(SOCKET_NAME));
        let Ok(listener) = listener else {
            panic!("cannot bind the fake socket");
        };
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, _) = read_request(&mut stream).await;
            let envelope = json!({"type": "error", "status": "", "status_code": 0, "operation": "",
                                  "error_code": 404, "error": "instance \"c1\" not found",
                                  "metadata": null});
            write_response(&mut stream, "404 Not Found", &envelope).await;
            Some(head)
        });

        let client = Client::from_dir(dir.path());
        let err = client.instance("c1").await.err();
        let head = server.await.ok().flatten().unwrap_or_default();

        assert!(
            head.starts_with("GET /1.0/instances/c1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("host: localhost"),
            "{head}"
        );
        assert_eq!(err.as_ref().and_then(Error::api_code), Some(404));
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("instance \"c1\" not found".to_string())
        );
    }

    #[tokio::test]
    async fn fake_server_failed_operation_reports_its_err() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            // 1: the POST answers an async envelope.
            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, body) = read_request(&mut stream).await;
            seen.push((head, body));
            let op = json!({"id": "op-7", "class": "task", "description": "Creating instance",
                            "created_at": "", "updated_at": "", "status": "Running",
                            "status_code": 103, "resources": {}, "metadata": null,
                            "may_cancel": false, "err": "", "location": ""});
            let envelope = json!({"type": "async", "status": "Operation created",
                                  "status_code": 100, "operation": "/1.0/operations/op-7",
                                  "error_code": 0, "error": "", "metadata": op});
            write_response(&mut stream, "202 Accepted", &envelope).await;
            // 2: the wait answers the failed operation.
            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, body) = read_request(&mut stream).await;
            seen.push((head, body));
            let mut failed = op;
            failed["status"] = json!("Failure");
            failed["status_code"] = json!(400);
            failed["err"] = json!("image \"nope\" not found");
            write_response(&mut stream, "200 OK", &sync_envelope(failed)).await;
            Some(seen)
        });

        let client = Client::from_dir(dir.path());
        let request = InstancesPost {
            name: "c1".into(),
            source: ctl_api::InstanceSource {
                kind: "image".into(),
                alias: "nope".into(),
                ..Default::default()
            },
            start: true,
            ..Default::default()
        };
        let created = client.create_instance(&request).await;
        let id = created.as_ref().map(|op| op.id.clone()).unwrap_or_default();
        let waited = client.wait_operation(&id).await.err();
        let seen = server.await.ok().flatten().unwrap_or_default();

        assert_eq!(id, "op-7");
        assert_eq!(
            waited.map(|e| e.to_string()),
            Some("image \"nope\" not found".to_string())
        );
        assert_eq!(seen.len(), 2);
        assert!(seen[0].0.starts_with("POST /1.0/instances HTTP/1.1"));
        let sent: Value = serde_json::from_slice(&seen[0].1).unwrap_or_default();
        assert_eq!(sent["source"], json!({"type": "image", "alias": "nope"}));
        assert_eq!(sent["start"], json!(true));
        assert!(
            seen[1]
                .0
                .starts_with("GET /1.0/operations/op-7/wait?timeout=-1 HTTP/1.1")
        );
    }
}
