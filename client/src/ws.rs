//! Websocket streams of operations: connecting (over the Unix socket or a remote's TLS) and
//! the exec protocol:
//! non-interactive (control, stdin, stdout and stderr on four websockets) and interactive
//! (a PTY: stream `0` both ways, plus control for window sizes and signals).
//!
//! Framing: data travels as Binary frames; an empty Text frame marks the end of a stream
//! (a Close frame ends it too). The helpers here are generic over streams and writers so the
//! framing can be tested without a daemon.

use std::io::Read;

use ctl_api::{InstanceExecPost, Operation};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{Client, encode_segment};
use crate::error::Error;
use crate::transport::Conn;

/// A websocket connected over the daemon's Unix socket or a remote's TLS.
pub type Websocket = WebSocketStream<Conn>;

/// How long closing a finished websocket may take before we give up on it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

impl Client {
    /// Connect to websocket `secret` of operation `operation` (an id), on a new connection.
    pub async fn websocket(&self, operation: &str, secret: &str) -> Result<Websocket, Error> {
        let stream = self.connect().await?;
        let url = format!(
            "ws://{}/1.0/operations/{}/websocket?secret={}",
            self.transport().host(),
            encode_segment(operation),
            encode_segment(secret)
        );
        let (socket, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|source| Error::Websocket {
                operation: operation.to_string(),
                stream: "handshake".into(),
                source: Box::new(source),
            })?;
        Ok(socket)
    }
}

/// The secrets of an exec operation's four websockets (`metadata.fds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSecrets {
    pub control: String,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl ExecSecrets {
    /// Read the secrets from an exec operation's `metadata.fds`.
    pub fn from_operation(operation: &Operation) -> Result<Self, Error> {
        let fds = operation.metadata.get("fds").and_then(Value::as_object);
        let secret = |key: &str| {
            fds.and_then(|fds| fds.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "exec operation {} has no websocket secret {key:?}",
                        operation.id
                    ))
                })
        };
        Ok(ExecSecrets {
            control: secret("control")?,
            stdin: secret("0")?,
            stdout: secret("1")?,
            stderr: secret("2")?,
        })
    }
}

/// Why copying one stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("websocket failed")]
    Websocket(#[source] Box<tungstenite::Error>),
    #[error("local write failed")]
    Write(#[source] std::io::Error),
}

impl StreamError {
    fn into_error(self, operation: &str, stream: &str) -> Error {
        match self {
            StreamError::Websocket(source) => Error::Websocket {
                operation: operation.to_string(),
                stream: stream.to_string(),
                source,
            },
            StreamError::Write(source) => Error::Io {
                what: "cannot write the command's output",
                source,
            },
        }
    }
}

/// Copy an output stream (stdout or stderr) of an operation to `out` until its end: an empty
/// Text frame, a Close frame, or the connection closing. Binary frames (and non-empty Text
/// frames) are data; each one is written and flushed. Returns the number of bytes written.
pub async fn pump_output<S, W>(stream: &mut S, out: &mut W) -> Result<u64, StreamError>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut written = 0u64;
    while let Some(message) = stream.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Text(text)) if text.is_empty() => break,
            Ok(Message::Text(text)) => text.into(),
            Ok(Message::Close(_)) => break,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(e) => return Err(StreamError::Websocket(Box::new(e))),
        };
        out.write_all(&data).await.map_err(StreamError::Write)?;
        out.flush().await.map_err(StreamError::Write)?;
        written += data.len() as u64;
    }
    Ok(written)
}

/// Forward input chunks to the stdin websocket as Binary frames; when the input ends, send
/// the end-of-stream marker (an empty Text frame). Returns the number of bytes sent.
pub async fn forward_input<S>(
    input: &mut mpsc::Receiver<Vec<u8>>,
    sink: &mut S,
) -> Result<u64, StreamError>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut sent = 0u64;
    let ws_err = |e| StreamError::Websocket(Box::new(e));
    while let Some(chunk) = input.recv().await {
        if chunk.is_empty() {
            continue;
        }
        sent += chunk.len() as u64;
        sink.send(Message::binary(chunk)).await.map_err(ws_err)?;
    }
    sink.send(Message::text("")).await.map_err(ws_err)?;
    Ok(sent)
}

/// Read this process's stdin on a plain thread (never a runtime thread, so a blocked read can
/// never hold up exit) and hand it over in chunks; the channel closes at EOF or on error.
pub fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    // If the thread cannot be started, `tx` is dropped with it and the command sees EOF.
    let _ = std::thread::Builder::new()
        .name("ctl-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
    rx
}

/// Run a non-interactive command in instance `name`: start the exec operation, connect its
/// four websockets (control first, then 0, 1, 2), forward `input` to stdin and copy stdout and
/// stderr to `stdout` and `stderr`. Once both output streams ended the operation is waited for
/// and the command's exit code (`metadata.return`) returned; input still pending does not
/// hold this up.
pub async fn run_exec<O, E>(
    client: &Client,
    name: &str,
    request: &InstanceExecPost,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut stdout: O,
    mut stderr: E,
    events: mpsc::Receiver<ControlEvent>,
) -> Result<i64, Error>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let operation = client.exec(name, request).await?;
    let id = operation.id.clone();
    let secrets = ExecSecrets::from_operation(&operation)?;

    let mut control = client.websocket(&id, &secrets.control).await?;
    let mut events = events;
    let mut ws_stdin = client.websocket(&id, &secrets.stdin).await?;
    let mut ws_stdout = client.websocket(&id, &secrets.stdout).await?;
    let mut ws_stderr = client.websocket(&id, &secrets.stderr).await?;

    let finished = {
        let output = async {
            let (out, err) = tokio::join!(
                pump_output(&mut ws_stdout, &mut stdout),
                pump_output(&mut ws_stderr, &mut stderr)
            );
            out.map_err(|e| e.into_error(&id, "1"))?;
            err.map_err(|e| e.into_error(&id, "2"))?;
            client.wait_operation(&id).await
        };
        // Stdin and the control channel run alongside but never decide when we are done.
        let background = async {
            let stdin = async {
                // The command may exit without reading its input: a refused send is not an error.
                let _ = forward_input(&mut input, &mut ws_stdin).await;
            };
            let control_loop = serve_control(&mut control, &mut events);
            tokio::join!(stdin, control_loop);
            std::future::pending::<Result<Operation, Error>>().await
        };
        tokio::select! {
            done = output => done,
            never = background => never,
        }
    };

    for socket in [&mut control, &mut ws_stdin, &mut ws_stdout, &mut ws_stderr] {
        let _ = tokio::time::timeout(CLOSE_GRACE, socket.close(None)).await;
    }

    let operation = finished?;
    exit_code(&operation)
}

/// The exit code of a finished exec operation (`metadata.return`).
pub fn exit_code(operation: &Operation) -> Result<i64, Error> {
    operation
        .metadata
        .get("return")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            Error::Protocol(format!(
                "exec operation {} reported no exit code",
                operation.id
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use serde_json::json;

    fn frames(messages: Vec<Message>) -> impl Stream<Item = Result<Message, tungstenite::Error>> {
        stream::iter(messages.into_iter().map(Ok))
    }

    #[tokio::test]
    async fn output_stops_at_empty_text() {
        let mut input = frames(vec![
            Message::binary(b"hello ".to_vec()),
            Message::binary(b"world\n".to_vec()),
            Message::text(""),
            Message::binary(b"after the end".to_vec()),
        ]);
        let mut out = Vec::new();
        let n = pump_output(&mut input, &mut out).await.ok();
        assert_eq!(n, Some(12));
        assert_eq!(out, b"hello world\n");
        // The frame after the end marker is still unread.
        assert!(input.next().await.is_some());
    }

    #[tokio::test]
    async fn output_stops_at_close_and_skips_pings() {
        let mut input = frames(vec![
            Message::Ping(b"p".to_vec().into()),
            Message::binary(b"data".to_vec()),
            Message::Close(None),
            Message::binary(b"ignored".to_vec()),
        ]);
        let mut out = Vec::new();
        let n = pump_output(&mut input, &mut out).await.ok();
        assert_eq!(n, Some(4));
        assert_eq!(out, b"data");
    }

    #[tokio::test]
    async fn output_ends_with_the_connection_and_reports_errors() {
        let mut input = frames(vec![Message::binary(b"x".to_vec())]);
        let mut out = Vec::new();
        assert_eq!(pump_output(&mut input, &mut out).await.ok(), Some(1));

        let mut broken = stream::iter(vec![
            Ok(Message::binary(b"y".to_vec())),
            Err(tungstenite::Error::Io(std::io::Error::other("reset"))),
        ]);
        let mut out = Vec::new();
        let result = pump_output(&mut broken, &mut out).await;
        assert!(matches!(result, Err(StreamError::Websocket(_))));
        assert_eq!(out, b"y");
    }

    #[tokio::test]
    async fn input_is_binary_then_empty_text() {
        let (tx, mut rx) = mpsc::channel(4);
        let _ = tx.send(b"abc".to_vec()).await;
        let _ = tx.send(Vec::new()).await;
        let _ = tx.send(b"de".to_vec()).await;
        drop(tx);
        let mut sent: Vec<Message> = Vec::new();
        let n = {
            let mut sink = std::pin::pin!(futures_util::sink::unfold(
                &mut sent,
                |sent, m: Message| async move {
                    sent.push(m);
                    Ok::<_, tungstenite::Error>(sent)
                }
            ));
            forward_input(&mut rx, &mut sink).await.ok()
        };
        assert_eq!(n, Some(5));
        assert_eq!(
            sent,
            vec![
                Message::binary(b"abc".to_vec()),
                Message::binary(b"de".to_vec()),
                Message::text(""),
            ]
        );
    }

    fn exec_operation(metadata: Value) -> Operation {
        let value = json!({"id": "op1", "class": "websocket", "description": "Executing command",
                           "created_at": "", "updated_at": "", "status": "Running",
                           "status_code": 103, "metadata": metadata, "may_cancel": false});
        serde_json::from_value(value).unwrap_or_else(|e| panic!("bad test operation: {e}"))
    }

    #[test]
    fn secrets_and_exit_code_come_from_metadata() {
        let op = exec_operation(json!({"fds": {"0": "s0", "1": "s1", "2": "s2", "control": "sc"}}));
        let secrets = ExecSecrets::from_operation(&op).ok();
        assert_eq!(
            secrets,
            Some(ExecSecrets {
                control: "sc".into(),
                stdin: "s0".into(),
                stdout: "s1".into(),
                stderr: "s2".into(),
            })
        );
        let missing = exec_operation(json!({"fds": {"0": "s0", "1": "s1", "2": "s2"}}));
        let err = ExecSecrets::from_operation(&missing).err();
        assert!(err.is_some_and(|e| e.to_string().contains("\"control\"")));

        assert_eq!(
            exit_code(&exec_operation(json!({"return": 3}))).ok(),
            Some(3)
        );
        assert!(exit_code(&exec_operation(json!({}))).is_err());
    }

    /// The whole exec flow against a fake ctld: websockets connected in order, output copied,
    /// stdin forwarded, and the exit code returned while stdin is still open.
    #[tokio::test]
    async fn run_exec_against_a_fake_server() {
        use crate::test_support::{async_envelope, read_request, sync_envelope, write_response};
        use tokio::net::UnixListener;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let op = json!({"id": "op9", "class": "websocket", "description": "Executing command",
                        "created_at": "", "updated_at": "", "status": "Running",
                        "status_code": 103, "may_cancel": false,
                        "metadata": {"fds": {"0": "s0", "1": "s1", "2": "s2", "control": "sc"}}});
        let server = tokio::spawn(async move {
            let mut log = Vec::new();
            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, body) = read_request(&mut stream).await;
            log.push(head.lines().next().unwrap_or_default().to_string());
            log.push(String::from_utf8_lossy(&body).into_owned());
            write_response(&mut stream, "202 Accepted", &async_envelope(op.clone())).await;

            let mut sockets = Vec::new();
            for _ in 0..4 {
                let (stream, _) = listener.accept().await.ok()?;
                let mut uri = String::new();
                // The error type is tungstenite's, fixed by its `Callback` trait.
                #[allow(clippy::result_large_err)]
                let callback = |request: &Request, response: Response| {
                    uri = request.uri().to_string();
                    Ok(response)
                };
                let socket = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .ok()?;
                log.push(uri);
                sockets.push(socket);
            }
            let [_control, mut stdin, mut stdout, mut stderr] = <[_; 4]>::try_from(sockets).ok()?;
            stdout.send(Message::binary(b"out\n".to_vec())).await.ok()?;
            stderr.send(Message::binary(b"err\n".to_vec())).await.ok()?;
            stdout.send(Message::text("")).await.ok()?;
            stderr.close(None).await.ok()?;
            let first_input = stdin.next().await?.ok()?;
            log.push(format!("{first_input:?}"));

            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, _) = read_request(&mut stream).await;
            log.push(head.lines().next().unwrap_or_default().to_string());
            let mut done = op;
            done["status"] = json!("Success");
            done["status_code"] = json!(200);
            done["metadata"] = json!({"return": 3});
            write_response(&mut stream, "200 OK", &sync_envelope(done)).await;
            Some(log)
        });

        let client = Client::from_dir(dir.path());
        let request = InstanceExecPost {
            command: vec!["sh".into(), "-c".into(), "cat; exit 3".into()],
            wait_for_websocket: true,
            ..Default::default()
        };
        // Stdin stays open for the whole run: exec must not wait for its end.
        let (input_tx, input_rx) = mpsc::channel(4);
        let _ = input_tx.send(b"input".to_vec()).await;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (_events_tx, events_rx) = mpsc::channel(1);
        let run = run_exec(
            &client, "c1", &request, input_rx, &mut out, &mut err, events_rx,
        );
        let code = tokio::time::timeout(std::time::Duration::from_secs(10), run).await;
        let log = server.await.ok().flatten().unwrap_or_default();
        drop(input_tx);

        assert_eq!(code.ok().and_then(Result::ok), Some(3));
        assert_eq!(out, b"out\n");
        assert_eq!(err, b"err\n");
        assert_eq!(log.len(), 8, "{log:?}");
        assert_eq!(log[0], "POST /1.0/instances/c1/exec HTTP/1.1");
        let sent: Value = serde_json::from_str(&log[1]).unwrap_or_default();
        assert_eq!(sent["wait-for-websocket"], json!(true));
        assert_eq!(sent["interactive"], json!(false));
        assert_eq!(sent["command"], json!(["sh", "-c", "cat; exit 3"]));
        let secrets: Vec<&str> = log[2..6].iter().map(String::as_str).collect();
        assert_eq!(
            secrets,
            [
                "/1.0/operations/op9/websocket?secret=sc",
                "/1.0/operations/op9/websocket?secret=s0",
                "/1.0/operations/op9/websocket?secret=s1",
                "/1.0/operations/op9/websocket?secret=s2",
            ]
        );
        assert_eq!(log[6], format!("{:?}", Message::binary(b"input".to_vec())));
        assert_eq!(log[7], "GET /1.0/operations/op9/wait?timeout=-1 HTTP/1.1");
    }
}

/// Something to tell a running command through the control websocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// The terminal now has this many columns and rows.
    Resize(u16, u16),
    /// Deliver this signal to the command.
    Signal(i32),
}

impl ControlEvent {
    /// The Incus control message.
    pub fn to_json(self) -> String {
        match self {
            ControlEvent::Resize(w, h) => serde_json::json!({
                "command": "window-resize",
                "args": {"width": w.to_string(), "height": h.to_string()}
            })
            .to_string(),
            ControlEvent::Signal(n) => {
                serde_json::json!({"command": "signal", "signal": n}).to_string()
            }
        }
    }
}

/// Send control events until their source ends, draining whatever the server sends.
async fn serve_control(control: &mut Websocket, events: &mut mpsc::Receiver<ControlEvent>) {
    let mut open = true;
    loop {
        tokio::select! {
            ev = events.recv(), if open => match ev {
                Some(ev) => {
                    if control.send(Message::text(ev.to_json())).await.is_err() {
                        return;
                    }
                }
                None => open = false,
            },
            msg = control.next() => if !matches!(msg, Some(Ok(_))) {
                return;
            },
        }
    }
}

/// Run a command on a PTY in instance `name`: stream `0` carries input and output, the
/// control stream window sizes and signals. Returns the exit code once the output ended
/// and the operation finished.
pub async fn run_exec_interactive<O>(
    client: &Client,
    name: &str,
    request: &InstanceExecPost,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut stdout: O,
    mut events: mpsc::Receiver<ControlEvent>,
) -> Result<i64, Error>
where
    O: AsyncWrite + Unpin,
{
    let operation = client.exec(name, request).await?;
    let id = operation.id.clone();
    let fds = operation.metadata.get("fds").and_then(Value::as_object);
    let secret = |key: &str| {
        fds.and_then(|f| f.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Protocol(format!("exec operation {id} has no secret {key:?}")))
    };
    let (s0, sc) = (secret("0")?, secret("control")?);
    let mut control = client.websocket(&id, &sc).await?;
    let (mut tx, mut rx) = client.websocket(&id, &s0).await?.split();
    let finished = {
        let output = async {
            pump_output(&mut rx, &mut stdout)
                .await
                .map_err(|e| e.into_error(&id, "0"))?;
            client.wait_operation(&id).await
        };
        let background = async {
            let keys = async {
                while let Some(chunk) = input.recv().await {
                    if tx.send(Message::binary(chunk)).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(keys, serve_control(&mut control, &mut events));
            std::future::pending::<Result<Operation, Error>>().await
        };
        tokio::select! {
            done = output => done,
            never = background => never,
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, control.close(None)).await;
    let _ = tokio::time::timeout(CLOSE_GRACE, tx.close()).await;
    exit_code(&finished?)
}
