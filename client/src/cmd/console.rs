//! `ctl console NAME [--show-log]`: attach to an instance's console (detach with Ctrl-a q),
//! or print its recent output.

use std::io::Write;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use super::Error;
use crate::Client;
use crate::client::{encode_segment, envelope_of};

/// Arguments of `ctl console`.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Instance name
    pub name: String,
    /// Print the console's recent output instead of attaching
    #[arg(long)]
    pub show_log: bool,
}

/// How long sending to (or closing) the console may take before we give up on the server.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The detach sequence: Ctrl-a then q.
const ESCAPE: u8 = 0x01;

/// What to do with input while attached: bytes to send, and whether Ctrl-a q was typed. A
/// lone Ctrl-a is held back until the next byte shows what it was (Ctrl-a Ctrl-a sends one).
#[derive(Debug, Default)]
pub struct Detacher {
    pending_escape: bool,
}

impl Detacher {
    /// Filter a chunk of input; returns (bytes to forward, detach requested).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    b'q' => return (out, true),
                    ESCAPE => out.push(ESCAPE),
                    other => out.extend([ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.pending_escape = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// The body of `GET path` as it is (a log), or the API's error.
pub async fn raw_get(client: &Client, path: &str) -> Result<Bytes, Error> {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Usage(format!("bad request: {e}")))?;
    let answer = client.send(request).await?;
    if !answer.status().is_success() {
        envelope_of(answer).await?;
        return Ok(Bytes::new());
    }
    Ok(answer
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::Usage(format!("reading {path}: {e}")))?
        .to_bytes())
}

/// Run `ctl console`.
pub async fn run(client: &Client, args: &ConsoleArgs, out: &mut dyn Write) -> Result<(), Error> {
    let path = format!("/1.0/instances/{}/console", encode_segment(&args.name));
    if args.show_log {
        out.write_all(&raw_get(client, &path).await?)?;
        out.flush()?;
        return Ok(());
    }
    let op = client
        .request_operation(Method::POST, &path, Some(&json!({"type": "console"})))
        .await?;
    let fds = op.metadata.get("fds").and_then(Value::as_object);
    let secret = |k: &str| {
        fds.and_then(|f| f.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Usage(format!("console operation has no secret {k:?}")))
    };
    let (s0, sc) = (secret("0")?, secret("control")?);
    let control = client.websocket(&op.id, &sc).await?;
    let data = client.websocket(&op.id, &s0).await?;
    writeln!(out, "To detach from the console, press: <ctrl>+a q")?;
    out.flush()?;
    let _raw = super::exec::RawMode::enter();
    let (mut tx, mut rx) = data.split();
    let mut input = crate::ws::spawn_stdin_reader();
    let mut stdout = tokio::io::stdout();
    let mut detacher = Detacher::default();
    loop {
        tokio::select! {
            chunk = input.recv() => {
                let Some(chunk) = chunk else { break };
                let (bytes, detach) = detacher.feed(&chunk);
                if !bytes.is_empty() {
                    // A stalled server must not keep us undetachable in raw mode.
                    let sent =
                        tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::binary(bytes))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
                if detach {
                    break;
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let _ = stdout.write_all(&b).await;
                    let _ = stdout.flush().await;
                }
                Some(Ok(Message::Text(t))) if !t.is_empty() => {
                    let _ = stdout.write_all(t.as_bytes()).await;
                    let _ = stdout.flush().await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                _ => break,
            },
        }
    }
    drop(_raw);
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.close()).await;
    drop(control);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_q_detaches_and_ctrl_a_passes_through() {
        let mut d = Detacher::default();
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(d.feed(&[ESCAPE]), (vec![], false));
        assert_eq!(d.feed(b"q"), (vec![], true));
        let mut d = Detacher::default();
        assert_eq!(d.feed(&[ESCAPE, ESCAPE, b'x']), (vec![ESCAPE, b'x'], false));
        assert_eq!(
            d.feed(&[b'a', ESCAPE, b'b']),
            (vec![b'a', ESCAPE, b'b'], false)
        );
        assert_eq!(d.feed(&[b'z', ESCAPE, b'q', b'y']), (vec![b'z'], true));
    }
}
