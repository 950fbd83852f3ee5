//! `/1.0/instances/{name}/console`: the console's ring log (`GET` returns it, `DELETE`
//! clears it) and attaching over websockets (`POST`: an operation of class `websocket` with
//! streams `0` (both directions) and `control`, as Incus does).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ctl_api::OperationClass;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exec::new_streams;
use super::{ApiError, AppState, accepted, instance_resources, sync};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /1.0/instances/{name}/console`: the recent console output, raw.
pub async fn get_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let log = state.instances.console_log(&name).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], log).into_response())
}

/// `DELETE /1.0/instances/{name}/console`: clear the log.
pub async fn clear_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.instances.console_clear(&name).await?;
    Ok(sync(json!({})))
}

/// `POST /1.0/instances/{name}/console`: attach (body `{"width", "height", "type"}`; only
/// `console` type).
pub async fn attach(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: HashMap<String, serde_json::Value> = if body.is_empty() {
        HashMap::new()
    } else {
        super::parse_json(&body)?
    };
    if let Some(t) = req.get("type").and_then(|t| t.as_str())
        && t != "console"
    {
        return Err(ApiError::BadRequest(format!(
            "console type \"{t}\" is not supported (only \"console\")"
        )));
    }
    let conn = state.instances.console_attach(&name).await?;
    let (fds, slots, mut receivers) = new_streams(&["0", "control"]);
    let metadata = json!({ "fds": fds });
    let (handle, op) = state.ops.create(
        OperationClass::Websocket,
        "Showing console",
        instance_resources(&name),
        metadata,
        None,
    );
    state.execs.register(&op.id, slots);
    let execs = state.execs.clone();
    tokio::spawn(async move {
        let (Some(data_rx), control_rx) = (receivers.remove("0"), receivers.remove("control"))
        else {
            return;
        };
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, data_rx).await {
            Ok(Ok(ws)) => {
                // The control stream carries window sizes (which do not apply to a
                // console); its end is the client detaching (`lxc console`'s Ctrl-a q),
                // which ends the console session too.
                let (detached_tx, detached) = tokio::sync::oneshot::channel::<()>();
                let control = tokio::spawn(async move {
                    // A control stream never connected is no detach.
                    let Some(Ok(mut c)) = (match control_rx {
                        Some(rx) => Some(rx.await),
                        None => None,
                    }) else {
                        return std::future::pending::<()>().await;
                    };
                    while let Some(Ok(m)) = c.next().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                    let _ = detached_tx.send(());
                });
                relay(ws, conn, detached).await;
                control.abort();
                Ok(())
            }
            _ => Err("console websocket never connected".to_string()),
        };
        execs.unregister(&handle.id);
        match result {
            Ok(()) => handle.succeed(),
            Err(e) => handle.fail(e),
        }
    });
    Ok(accepted(&op))
}

/// Copy between the websocket and the monitor's console connection until either ends, or
/// the client detaches (`detached`); the websocket is closed either way.
async fn relay(
    ws: axum::extract::ws::WebSocket,
    conn: tokio::net::UnixStream,
    detached: tokio::sync::oneshot::Receiver<()>,
) {
    let (sink, mut stream) = ws.split();
    let sink = tokio::sync::Mutex::new(sink);
    let (mut rd, mut wr) = conn.into_split();
    let to_console = async {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) if !t.is_empty() => t.as_bytes().to_vec(),
                Message::Close(_) | Message::Text(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    let from_console = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .lock()
                        .await
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = to_console => {}
        () = from_console => {}
        _ = detached => {}
    }
    let mut sink = sink.lock().await;
    let _ = sink.send(Message::Text("".into())).await;
    let _ = sink.send(Message::Close(None)).await;
}
