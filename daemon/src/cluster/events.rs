//! `/1.0/events` across a cluster: every member writes its own lifecycle and operation
//! events into the database and announces each with `NOTIFY` carrying only the row's id
//! (a notification's payload is small; an event may not be); every member `LISTEN`s,
//! reads the rows of the others and publishes them on its own bus with their location.
//! The leader deletes rows older than a minute. Events sent while a member's listening
//! connection is down are lost to it, as Incus' are while a member is unreachable.

use std::time::Duration;

use ctl_api::EventType;

use super::Cluster;
use crate::events::Events;

/// How long rows are kept for members that read them late.
pub const KEEP: Duration = Duration::from_secs(60);

impl Cluster {
    /// Publish this member's events to the others (until the bus closes).
    pub(super) async fn publish_events(&self, events: Events) {
        let mut sub = events.subscribe();
        while let Ok(published) = sub.recv().await {
            if published.kind == EventType::Logging {
                continue;
            }
            // Token operations carry secrets: they stay on the member that made them.
            if published.kind == EventType::Operation
                && published.event.metadata["class"] == "token"
            {
                continue;
            }
            let Some(me) = self.me() else { continue };
            // Only our own: the others' came from the database.
            if published.event.location != me {
                continue;
            }
            if let Err(e) = self.store().publish_event(&me, &published.text).await {
                tracing::debug!(error = %e, "event not shared with the cluster");
            }
        }
    }

    /// Relay the other members' events onto `events` (until the daemon stops).
    pub(super) async fn relay_events(&self, events: Events) {
        loop {
            let store = self.store();
            let mut listener = match store.listen_events().await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for the cluster's events; retrying");
                    tokio::time::sleep(super::HEARTBEAT_INTERVAL).await;
                    continue;
                }
            };
            loop {
                let id = match listener.recv().await {
                    Ok(n) => n.payload().parse::<i64>().ok(),
                    Err(e) => {
                        tracing::debug!(error = %e, "the cluster's event stream broke; reconnecting");
                        break;
                    }
                };
                let Some(id) = id else { continue };
                let me = self.me().unwrap_or_default();
                match store.event(id).await {
                    Ok(Some((member, body))) if member != me => {
                        match serde_json::from_str::<ctl_api::Event>(&body) {
                            Ok(event) => {
                                if let Ok(kind) = event.kind.parse::<EventType>() {
                                    events.relay(kind, event);
                                }
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "a member's event does not decode")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "reading a member's event"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
