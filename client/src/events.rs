//! The event stream: `GET /1.0/events` as a websocket (Unix socket or TLS), one JSON event
//! per text frame (see `ctl_api::Event`).

use ctl_api::EventType;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::client::{Client, decode_envelope};
use crate::error::Error;
use crate::ws::Websocket;

/// The request path for a listener of `types` (all types when empty).
pub fn events_path(types: &[EventType]) -> String {
    if types.is_empty() {
        return "/1.0/events".to_string();
    }
    let list: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    format!("/1.0/events?type={}", list.join(","))
}

impl Client {
    /// Open the event stream for `types` (all when empty) on a new connection.
    pub async fn events(&self, types: &[EventType]) -> Result<Websocket, Error> {
        let stream = self.connect().await?;
        let url = format!("ws://{}{}", self.transport().host(), events_path(types));
        match tokio_tungstenite::client_async(url, stream).await {
            Ok((socket, _)) => Ok(socket),
            // Refused: the body is the error envelope; say what it says.
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response.body().as_deref().unwrap_or_default();
                Err(
                    decode_envelope(status.as_u16(), status.canonical_reason(), body)
                        .err()
                        .unwrap_or_else(|| {
                            Error::Protocol(format!("/1.0/events answered {status}"))
                        }),
                )
            }
            Err(e) => Err(Error::Events(Box::new(e))),
        }
    }
}

/// The next event of the stream as JSON, or `None` once the server closed it. Control
/// frames are skipped; a frame that is not JSON is an error.
pub async fn next_event<S>(stream: &mut S) -> Result<Option<Value>, Error>
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(message) = stream.next().await {
        let data = match message {
            Ok(Message::Text(text)) => text.as_bytes().to_vec(),
            Ok(Message::Binary(data)) => data.to_vec(),
            Ok(Message::Close(_)) => return Ok(None),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            // A daemon that went away without a close frame (killed) ends the stream too.
            Err(
                tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            ) => return Ok(None),
            Err(e) => return Err(Error::Events(Box::new(e))),
        };
        return serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| Error::Decode {
                what: "an event".into(),
                source,
            });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[test]
    fn paths() {
        assert_eq!(events_path(&[]), "/1.0/events");
        assert_eq!(
            events_path(&[EventType::Lifecycle, EventType::Operation]),
            "/1.0/events?type=lifecycle,operation"
        );
    }

    #[tokio::test]
    async fn events_until_close() {
        let mut frames = stream::iter(
            vec![
                Message::Ping(b"p".to_vec().into()),
                Message::text(r#"{"type":"lifecycle","n":1}"#),
                Message::binary(br#"{"type":"logging"}"#.to_vec()),
                Message::Close(None),
                Message::text("{}"),
            ]
            .into_iter()
            .map(Ok),
        );
        let mut got = Vec::new();
        while let Ok(Some(v)) = next_event(&mut frames).await {
            got.push(v);
        }
        assert_eq!(
            got,
            vec![
                serde_json::json!({"type": "lifecycle", "n": 1}),
                serde_json::json!({"type": "logging"})
            ]
        );
        let mut bad = stream::iter(vec![Ok(Message::text("not json"))]);
        assert!(matches!(
            next_event(&mut bad).await,
            Err(Error::Decode { .. })
        ));
        let mut gone = stream::iter(Vec::<Result<Message, tungstenite::Error>>::new());
        assert!(matches!(next_event(&mut gone).await, Ok(None)));
        let mut killed = stream::iter(vec![Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))]);
        assert!(matches!(next_event(&mut killed).await, Ok(None)));
    }
}
