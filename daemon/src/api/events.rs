//! `GET /1.0/events`: the event bus as a websocket, the Incus way. `?type=` picks the event
//! types (comma-separated; all by default), `project` and `all-projects` are accepted and
//! ignored. Each event is one text frame of JSON.
//!
//! A listener never holds the daemon up: it reads from a bounded broadcast, and one that
//! falls more than [`CAPACITY`](crate::events::CAPACITY) events behind (because it does not
//! read its socket) is disconnected.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use super::{ApiError, AppState};
use crate::events::{RecvError, Subscription, TypeFilter};

/// How long a goodbye (a close frame) may take to a listener that is being dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// `GET /1.0/events?type=operation,lifecycle,logging`.
pub async fn get_events(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<super::auth::Caller>,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let types = TypeFilter::parse(q.get("type").map(String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ws = ws.map_err(|e| ApiError::BadRequest(format!("websocket upgrade required: {e}")))?;
    // Subscribed before the 101 goes out: whatever happens after the client sees the
    // upgrade reaches it.
    let events = state.events.subscribe();
    let admin = caller.admin();
    Ok(ws
        .on_upgrade(move |socket| async move {
            tracing::debug!(types = ?types, "event listener connected");
            let why = stream(socket, events, types, admin).await;
            tracing::debug!(reason = why.as_str(), "event listener gone");
        })
        .into_response())
}

/// Why a listener's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The listener closed the socket or went away.
    Left,
    /// The listener fell too far behind and was disconnected.
    Lagged,
    /// The bus is gone (the daemon is stopping).
    Closed,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Left => "left",
            Ended::Lagged => "lagged",
            Ended::Closed => "closed",
        }
    }
}

/// Whether an event is a trust token's operation (its secret admits new clients).
fn is_token(published: &crate::events::Published) -> bool {
    published.kind == ctl_api::EventType::Operation
        && published
            .event
            .metadata
            .get("class")
            .and_then(|c| c.as_str())
            == Some("token")
}

/// Send the events that pass `types` to `socket` until the listener leaves or lags; trust
/// tokens' operations only to an `admin`.
///
/// While a write is pending (the listener is not reading and its socket buffer is full),
/// the listener's lag is watched; once it is more than the bus capacity behind, the socket
/// is dropped without waiting for the write.
pub async fn stream<S, E>(
    mut socket: S,
    mut events: Subscription,
    types: TypeFilter,
    admin: bool,
) -> Ended
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    loop {
        let published = tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ended::Left,
                // Pings are answered by the websocket layer; anything else is ignored.
                Some(Ok(_)) => continue,
            },
            received = events.recv() => match received {
                Ok(published) => published,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "event listener too slow, disconnecting");
                    goodbye(&mut socket, close_code::POLICY, "too slow: events were lost").await;
                    return Ended::Lagged;
                }
                Err(RecvError::Closed) => {
                    goodbye(&mut socket, close_code::AWAY, "daemon stopping").await;
                    return Ended::Closed;
                }
            },
        };
        if !types.contains(published.kind) || (!admin && is_token(&published)) {
            continue;
        }
        let frame = Message::Text(published.text.clone().into());
        tokio::select! {
            sent = socket.send(frame) => if sent.is_err() {
                return Ended::Left;
            },
            () = events.lagging() => {
                tracing::warn!("event listener not reading, disconnecting");
                return Ended::Lagged;
            }
        }
    }
}

/// A close frame, best effort and bounded in time.
async fn goodbye<S>(socket: &mut S, code: u16, reason: &'static str)
where
    S: Sink<Message> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(frame)).await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use super::*;
    use crate::events::Events;

    /// A websocket peer that never sends; it accepts `accept` frames, then its socket is
    /// "full" forever.
    #[derive(Clone)]
    struct Peer {
        sent: Arc<Mutex<Vec<Message>>>,
        accept: usize,
    }

    impl Peer {
        fn new(accept: usize) -> Self {
            Peer {
                sent: Arc::default(),
                accept,
            }
        }

        fn texts(&self) -> Vec<serde_json::Value> {
            let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.iter()
                .filter_map(|m| match m {
                    Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
                    _ => None,
                })
                .collect()
        }

        fn frames(&self) -> usize {
            self.sent.lock().unwrap_or_else(|p| p.into_inner()).len()
        }
    }

    impl Sink<Message> for Peer {
        type Error = std::io::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.frames() < self.accept {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(item);
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Stream for Peer {
        type Item = Result<Message, std::io::Error>;

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    /// Poll `f` for up to two seconds.
    async fn wait_until(f: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f()
    }

    #[tokio::test]
    async fn a_reading_listener_gets_the_events_of_its_types_in_order() {
        let bus = Events::new(16);
        let peer = Peer::new(usize::MAX);
        let types = TypeFilter::parse(Some("lifecycle")).unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(stream(
            peer.clone(),
            bus.subscribe(),
            TypeFilter::all(),
            true,
        ));
        let filtered = Peer::new(usize::MAX);
        let sub = bus.subscribe();
        let task2 = {
            let filtered = filtered.clone();
            tokio::spawn(async move { stream(filtered, sub, types, true).await })
        };
        bus.instance("instance-created", "c1", BTreeMap::new());
        bus.logging("info", "created".into(), BTreeMap::new());
        bus.instance("instance-started", "c1", BTreeMap::new());
        let ok = wait_until(|| peer.frames() == 3 && filtered.frames() == 2).await;
        assert!(ok, "got {:?} and {:?}", peer.texts(), filtered.texts());
        let actions: Vec<_> = filtered
            .texts()
            .iter()
            .map(|v| {
                v["metadata"]["action"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(actions, ["instance-created", "instance-started"]);
        assert_eq!(peer.texts()[1]["type"], "logging");
        task.abort();
        task2.abort();
    }

    #[tokio::test]
    async fn a_listener_that_does_not_read_is_dropped_and_the_bus_never_blocks() {
        let bus = Events::new(8);
        // The socket takes two frames, then is full.
        let peer = Peer::new(2);
        let task = tokio::spawn({
            let sub = bus.subscribe();
            let peer = peer.clone();
            async move { stream(peer, sub, TypeFilter::all(), true).await }
        });
        // Two frames go out, the third write hangs.
        for i in 0..3 {
            bus.instance("instance-updated", &format!("c{i}"), BTreeMap::new());
        }
        assert!(wait_until(|| peer.frames() == 2).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        let start = std::time::Instant::now();
        for i in 0..10_000 {
            bus.instance("instance-updated", &format!("c{i}"), BTreeMap::new());
        }
        assert!(start.elapsed() < Duration::from_secs(2), "emitting blocked");
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap_or_else(|_| panic!("the listener was not disconnected"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Dropped while its write hung, without waiting for a close frame to get through.
        assert!(start.elapsed() < CLOSE_GRACE, "{:?}", start.elapsed());
        assert_eq!(ended, Ended::Lagged);
        assert_eq!(peer.frames(), 2);
        assert!(!bus.has_listeners());
    }

    #[tokio::test]
    async fn a_listener_that_lagged_while_idle_gets_a_close_frame() {
        let bus = Events::new(4);
        let peer = Peer::new(usize::MAX);
        let sub = bus.subscribe();
        // Lag before the stream even starts reading.
        for i in 0..6 {
            bus.instance("instance-updated", &format!("c{i}"), BTreeMap::new());
        }
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            stream(peer.clone(), sub, TypeFilter::all(), true),
        )
        .await
        .unwrap_or_else(|_| panic!("the listener was not disconnected"));
        assert_eq!(ended, Ended::Lagged);
        let sent = peer.sent.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            matches!(sent.last(), Some(Message::Close(Some(f))) if f.code == close_code::POLICY),
            "{sent:?}"
        );
    }
}
