//! `logging` events: a `tracing` layer that forwards the daemon's own records (targets under
//! `ctld`, level info and above) to the event bus, as Incus' `api.EventLogging`
//! (`{"level": "info", "message": "...", "context": {"instance": "c1"}}`).
//!
//! The layer has its own filter, so it sees info records whatever `CTL_LOG` says, and it
//! returns at once when nobody listens. Span fields are not included.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::Events;

/// The layer to add to the daemon's subscriber: records of `ctld` at info and above become
/// `logging` events on `events`.
pub fn layer<S>(events: Events) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    EventsLayer { events }.with_filter(Targets::new().with_target("ctld", LevelFilter::INFO))
}

/// Forwards log records to the bus.
struct EventsLayer {
    events: Events,
}

impl<S: Subscriber> Layer<S> for EventsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !self.events.has_listeners() {
            return;
        }
        let mut record = Record::default();
        event.record(&mut record);
        self.events.logging(
            level_name(*event.metadata().level()),
            record.message,
            record.context,
        );
    }
}

/// Incus' level names.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A record's message and its other fields as text.
#[derive(Default)]
struct Record {
    message: String,
    context: BTreeMap<String, String>,
}

impl Visit for Record {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.context
                .insert(field.name().to_string(), value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.context.insert(field.name().to_string(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn info_records_of_the_daemon_become_logging_events() {
        let bus = Events::new(16);
        let mut sub = bus.subscribe();
        let subscriber = tracing_subscriber::registry().with(layer(bus.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(instance = %"c1", pid = 42, "started");
            tracing::debug!("too chatty");
            tracing::warn!(target: "hyper", "not ours");
            tracing::error!(error = "boom", "request failed");
        });
        let mut got = Vec::new();
        while let Ok(p) = sub.rx.try_recv() {
            got.push(p.event.metadata.clone());
        }
        assert_eq!(
            got,
            vec![
                serde_json::json!({"level": "info", "message": "started",
                    "context": {"instance": "c1", "pid": "42"}}),
                serde_json::json!({"level": "error", "message": "request failed",
                    "context": {"error": "boom"}}),
            ]
        );
    }
}
