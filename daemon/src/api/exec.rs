//! `POST /1.0/instances/{name}/exec` and `GET /1.0/operations/{id}/websocket`, the Incus
//! way: the exec is an operation of class `websocket` whose `metadata.fds` holds one secret
//! per stream (`0` stdin, `1` stdout, `2` stderr, `control`). Clients connect each stream
//! with its secret; the command starts once all are connected. Data travels in binary
//! frames, an empty text frame ends a stream, and the exit code lands in the operation's
//! `metadata.return`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use ctl_api::{InstanceExecPost, OperationClass};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{ApiError, AppState, accepted, instance_resources, parse_json};
use crate::instance::ExecPlan;
use crate::instance::exec::OUTPUT_GRACE;
use crate::operations::OpHandle;
use crate::worker::exec::{Control, ExecChild};

/// How long an exec waits for its websockets before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams of a non-interactive exec; an interactive one has `0` (both directions of the
/// PTY) and `control`.
const STREAMS: [&str; 4] = ["0", "1", "2", "control"];
const INTERACTIVE_STREAMS: [&str; 2] = ["0", "control"];

pub(super) type Slot = (String, Option<oneshot::Sender<WebSocket>>);

/// Execs waiting for their websockets: operation id → secret → (stream, hand-off).
#[derive(Clone, Default)]
pub struct ExecRegistry {
    inner: Arc<Mutex<HashMap<String, HashMap<String, Slot>>>>,
}

impl ExecRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Slot>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the hand-off for `secret` of operation `id`, once.
    fn claim(&self, id: &str, secret: &str) -> Option<oneshot::Sender<WebSocket>> {
        self.lock()
            .get_mut(id)
            .and_then(|slots| slots.get_mut(secret))
            .and_then(|(_, tx)| tx.take())
    }

    /// Whether `secret` is a not yet used secret of operation `id`.
    fn is_open(&self, id: &str, secret: &str) -> bool {
        self.lock()
            .get(id)
            .and_then(|slots| slots.get(secret))
            .is_some_and(|(_, tx)| tx.is_some())
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The websocket handoff of an operation's streams.
pub(super) type Receivers = HashMap<&'static str, oneshot::Receiver<WebSocket>>;

/// Secrets for `streams`: the `fds` metadata, the registry slots and the receivers the
/// operation's task waits on.
pub(super) fn new_streams(
    streams: &[&'static str],
) -> (
    serde_json::Map<String, serde_json::Value>,
    HashMap<String, Slot>,
    Receivers,
) {
    let mut fds = serde_json::Map::new();
    let mut slots = HashMap::new();
    let mut receivers = HashMap::new();
    for &stream in streams {
        let s = secret();
        let (tx, rx) = oneshot::channel();
        fds.insert(stream.to_string(), json!(s));
        slots.insert(s, (stream.to_string(), Some(tx)));
        receivers.insert(stream, rx);
    }
    (fds, slots, receivers)
}

impl ExecRegistry {
    /// Make operation `id`'s stream secrets joinable.
    pub(super) fn register(&self, id: &str, slots: HashMap<String, Slot>) {
        self.lock().insert(id.to_string(), slots);
    }

    /// Forget operation `id`'s streams.
    pub(super) fn unregister(&self, id: &str) {
        self.remove(id);
    }
}

/// `POST /1.0/instances/{name}/exec`.
pub async fn post_exec(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: InstanceExecPost = parse_json(&body)?;
    let plan = state.instances.plan_exec(&name, &req).await?;
    if !req.wait_for_websocket && !req.interactive {
        return Ok(run_without_websockets(&state, &name, plan, &req));
    }
    let streams: &[&'static str] = if req.interactive {
        &INTERACTIVE_STREAMS
    } else {
        &STREAMS
    };
    let (fds, slots, receivers) = new_streams(streams);
    let metadata = json!({ "fds": fds });
    let (handle, op) = state.ops.create(
        OperationClass::Websocket,
        "Executing command",
        instance_resources(&name),
        metadata.clone(),
        None,
    );
    state.execs.register(&op.id, slots);
    let execs = state.execs.clone();
    let svc = state.instances.clone();
    tokio::spawn(async move {
        let id = handle.id.clone();
        let result = run(&svc, plan, receivers, &handle, metadata).await;
        execs.remove(&id);
        match result {
            Ok(()) => handle.succeed(),
            Err(e) => handle.fail(e),
        }
    });
    state.events.instance_exec(&name, &req.command);
    Ok(accepted(&op))
}

/// An exec with `wait-for-websocket: false` (Incus semantics): a task operation that runs
/// the command at once with no input. With `record-output` its stdout and stderr go to
/// instance log files named in `metadata.output` (`/1.0/instances/NAME/logs/exec_ID.stdout`);
/// without, they are discarded. The exit code lands in `metadata.return`.
fn run_without_websockets(
    state: &AppState,
    name: &str,
    plan: ExecPlan,
    req: &InstanceExecPost,
) -> Response {
    let (handle, op) = state.ops.create(
        OperationClass::Task,
        "Executing command",
        instance_resources(name),
        json!({}),
        None,
    );
    let record = req.record_output;
    let files = record.then(|| {
        [("1", "stdout"), ("2", "stderr")].map(|(fd, ext)| {
            let file = format!("exec_{}.{ext}", handle.id);
            (
                fd,
                state.instances.log_path(name, &file),
                format!("/1.0/instances/{name}/logs/{file}"),
            )
        })
    });
    let events = state.events.clone();
    let (n, command) = (name.to_string(), req.command.clone());
    let svc = state.instances.clone();
    tokio::spawn(async move {
        let record = files.as_ref().map(|f| (f[0].1.clone(), f[1].1.clone()));
        match svc.exec_recorded(&plan, record).await {
            Ok(code) => {
                let mut metadata = json!({ "return": code });
                if let (Some(m), Some(f)) = (metadata.as_object_mut(), &files) {
                    m.insert("output".into(), json!({ f[0].0: f[0].2, f[1].0: f[1].2 }));
                }
                handle.set_metadata(metadata);
                handle.succeed();
            }
            Err(e) => handle.fail(e.to_string()),
        }
    });
    events.instance_exec(&n, &command);
    accepted(&op)
}

/// `GET /1.0/operations/{id}/websocket?secret=S`: join one stream of an exec.
pub async fn websocket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let secret = q.get("secret").map(String::as_str).unwrap_or_default();
    // Unknown operation, wrong or reused secret: all the same to the client.
    let forbidden = || ApiError::Forbidden("invalid or already used websocket secret".into());
    if !state.execs.is_open(&id, secret) {
        return Err(forbidden());
    }
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("websocket upgrade required: {e}")))?;
    let tx = state.execs.claim(&id, secret).ok_or_else(forbidden)?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _ = tx.send(socket);
        })
        .into_response())
}

/// Wait for the data websockets (`control` is optional, as in LXD: pylxd never opens it),
/// run the command, pump the streams, record the exit code. Interactive: stream `0` carries
/// both directions of the PTY.
async fn run(
    instances: &crate::instance::Instances,
    plan: ExecPlan,
    mut receivers: HashMap<&'static str, oneshot::Receiver<WebSocket>>,
    handle: &OpHandle,
    mut metadata: serde_json::Value,
) -> Result<(), String> {
    let control_rx = receivers.remove("control");
    let mut sockets = HashMap::new();
    for (stream, rx) in receivers {
        match tokio::time::timeout(CONNECT_TIMEOUT, rx).await {
            Ok(Ok(ws)) => {
                sockets.insert(stream, ws);
            }
            _ => return Err(format!("websocket for stream {stream} never connected")),
        }
    }
    let ExecChild {
        mut child,
        control: control_pipe,
    } = instances.spawn_exec(&plan).map_err(|e| e.to_string())?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("exec helper pipes missing".into());
    };
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::channel::<()>(4);
    // Set once the command exited and the output had its grace: streams end then.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut outputs = Vec::new();
    if plan.interactive {
        let Some(ws0) = sockets.remove("0") else {
            return Err("missing websocket".into());
        };
        let (sink, stream) = ws0.split();
        tasks.push(tokio::spawn(pump_in(stream, stdin)));
        // The helper's own errors (before the PTY exists) come on its stderr: after the
        // terminal's output, on the same stream.
        outputs.push(tokio::spawn(pump_out(
            stdout.chain(stderr),
            sink,
            gone_tx.clone(),
            stop_rx.clone(),
        )));
    } else {
        let (Some(ws0), Some(ws1), Some(ws2)) = (
            sockets.remove("0"),
            sockets.remove("1"),
            sockets.remove("2"),
        ) else {
            return Err("missing websocket".into());
        };
        tasks.push(tokio::spawn(pump_in(ws0, stdin)));
        outputs.push(tokio::spawn(pump_out(
            stdout,
            ws1,
            gone_tx.clone(),
            stop_rx.clone(),
        )));
        outputs.push(tokio::spawn(pump_out(
            stderr,
            ws2,
            gone_tx.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(async move {
        if let Some(rx) = control_rx
            && let Ok(ws) = rx.await
        {
            serve_control(ws, control_pipe, gone_tx).await;
        }
    }));
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| format!("wait for command: {e}"))?,
        Some(()) = gone_rx.recv() => {
            // The client went away: end the command (the helper takes it down with it).
            let _ = child.start_kill();
            child.wait().await.map_err(|e| format!("wait for command: {e}"))?
        }
    };
    // Output still held open by a background process of the command may not keep the
    // operation alive: a short grace to drain, then the streams end.
    let all_out = futures_util::future::join_all(outputs);
    tokio::pin!(all_out);
    if tokio::time::timeout(OUTPUT_GRACE, &mut all_out)
        .await
        .is_err()
    {
        // Still held open by something the command left behind: end the streams cleanly.
        let _ = stop_tx.send(true);
        let _ = all_out.await;
    }
    for t in tasks {
        t.abort();
    }
    let code = status.code().unwrap_or(-1);
    if let Some(m) = metadata.as_object_mut() {
        m.insert("return".into(), json!(code));
    }
    handle.set_metadata(metadata);
    Ok(())
}

/// Client → command stdin. An empty text frame or a close ends stdin.
async fn pump_in(
    mut ws: impl futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
    mut stdin: tokio::process::ChildStdin,
) {
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Binary(b) => {
                if stdin.write_all(&b).await.is_err() {
                    break;
                }
            }
            Message::Text(t) if t.is_empty() => break,
            Message::Text(t) => {
                if stdin.write_all(t.as_bytes()).await.is_err() {
                    break;
                }
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    drop(stdin);
    // Keep reading so the socket's close handshake completes.
    while let Some(Ok(msg)) = ws.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
}

/// Command output → client, then the end-of-stream marker and a close (also when `stop`
/// is set while the source is still open).
async fn pump_out(
    mut src: impl tokio::io::AsyncRead + Unpin,
    mut ws: impl futures_util::Sink<Message> + Unpin,
    gone: tokio::sync::mpsc::Sender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = tokio::select! {
            r = src.read(&mut buf) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if ws
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    let _ = gone.send(()).await;
                    return;
                }
            }
        }
    }
    let _ = ws.send(Message::Text("".into())).await;
    let _ = ws.send(Message::Close(None)).await;
}

/// An Incus control message: `{"command": "window-resize", "args": {"width": "80",
/// "height": "24"}}` or `{"command": "signal", "signal": 2}`.
pub fn parse_control(text: &str) -> Option<Control> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let num = |x: &serde_json::Value| {
        x.as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
    };
    match v["command"].as_str()? {
        "window-resize" => {
            let w = u16::try_from(num(&v["args"]["width"])?).ok()?;
            let h = u16::try_from(num(&v["args"]["height"])?).ok()?;
            Some(Control::Resize(w, h))
        }
        "signal" => Control::parse(&format!("signal {}", num(&v["signal"])?)),
        _ => None,
    }
}

/// The control stream: window sizes and signals go to the helper; when the client closes
/// it or goes away, the command is ended.
async fn serve_control(
    mut ws: WebSocket,
    mut pipe: tokio::net::unix::pipe::Sender,
    gone: tokio::sync::mpsc::Sender<()>,
) {
    while let Some(Ok(msg)) = ws.next().await {
        let text = match &msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        if let Some(c) = parse_control(&text)
            && pipe.write_all(c.line().as_bytes()).await.is_err()
        {
            break;
        }
    }
    let _ = gone.send(()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incus_control_messages() {
        assert_eq!(
            parse_control(r#"{"command":"window-resize","args":{"width":"100","height":"30"}}"#),
            Some(Control::Resize(100, 30))
        );
        assert_eq!(
            parse_control(r#"{"command":"signal","signal":15}"#),
            Some(Control::Signal(15))
        );
        assert_eq!(parse_control(r#"{"command":"signal","signal":0}"#), None);
        assert_eq!(parse_control(r#"{"command":"dance"}"#), None);
        assert_eq!(parse_control("not json"), None);
    }
}
