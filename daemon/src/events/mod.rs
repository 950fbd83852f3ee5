//! The event bus behind `GET /1.0/events`: operation, lifecycle and logging events, shaped
//! like Incus' `api.Event`, published on a bounded `tokio::sync::broadcast` channel.
//!
//! Invariants: publishing never blocks and never fails (a full channel overwrites its oldest
//! event, and a listener that falls more than the capacity behind is disconnected by its
//! websocket task); an event is built and serialized only when someone listens, and once for
//! all listeners. Who emits: the operations registry (every create and update), the instance
//! service and the image store (lifecycle, after a step succeeded), the exec handler
//! (`instance-exec`) and [`logging`] (the daemon's own records at info and above).

pub mod logging;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ctl_api::{Event, EventLifecycle, EventLogging, EventType, Operation, UnknownEventType};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

pub use tokio::sync::broadcast::error::RecvError;

/// How many events a listener may fall behind before it is disconnected.
pub const CAPACITY: usize = 1024;

/// How often a listener whose socket is full is checked for lagging.
const LAG_POLL: Duration = Duration::from_millis(50);

/// One published event: the wire object and its JSON text, serialized once for every
/// listener.
#[derive(Debug)]
pub struct Published {
    pub kind: EventType,
    pub event: Event,
    pub text: String,
}

/// The bus. Cheap to clone; every clone publishes to the same listeners.
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<Arc<Published>>,
    capacity: usize,
    /// Set once the daemon stops: listeners are told goodbye.
    closing: Arc<watch::Sender<bool>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new(CAPACITY)
    }
}

impl Events {
    /// A bus on which a listener may fall `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        let (closing, _) = watch::channel(false);
        Events {
            tx,
            capacity,
            closing: Arc::new(closing),
        }
    }

    /// Whether anyone listens (when nobody does, emitting costs one atomic load).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A new listener; it sees every event published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            capacity: self.capacity,
            closing: self.closing.subscribe(),
        }
    }

    /// End every listener's stream (their next [`Subscription::recv`] is `Closed`) and wait
    /// up to `grace` for them to be gone. Listeners that subscribe afterwards end at once.
    pub async fn close(&self, grace: Duration) {
        self.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.tx.receiver_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publish an event of `kind` whose metadata `metadata` builds, if anyone listens.
    pub fn emit(&self, kind: EventType, metadata: impl FnOnce() -> Value) {
        if !self.has_listeners() {
            return;
        }
        let event = event(kind, crate::clock::now_rfc3339(), metadata());
        let text = serde_json::to_string(&event).unwrap_or_default();
        // An error only means every listener left in the meantime.
        let _ = self.tx.send(Arc::new(Published { kind, event, text }));
    }

    /// Publish `event` as it is: one another cluster member published.
    pub fn relay(&self, kind: EventType, event: Event) {
        if !self.has_listeners() {
            return;
        }
        let text = serde_json::to_string(&event).unwrap_or_default();
        let _ = self.tx.send(Arc::new(Published { kind, event, text }));
    }

    /// An `operation` event: the operation as it is now.
    pub fn operation(&self, op: &Operation) {
        self.emit(EventType::Operation, || {
            serde_json::to_value(op).unwrap_or(Value::Null)
        });
    }

    /// A `lifecycle` event about instance `name`.
    pub fn instance(&self, action: &str, name: &str, context: BTreeMap<String, Value>) {
        self.emit(EventType::Lifecycle, || {
            lifecycle(action, &format!("/1.0/instances/{name}"), name, context)
        });
    }

    /// `instance-exec`: `command` was started in instance `name`.
    pub fn instance_exec(&self, name: &str, command: &[String]) {
        if !self.has_listeners() {
            return;
        }
        let context = BTreeMap::from([("command".to_string(), Value::from(command.to_vec()))]);
        self.instance("instance-exec", name, context);
    }

    /// A `lifecycle` event about profile `name` (`profile-created`, `profile-updated`...).
    pub fn profile(&self, action: &str, name: &str, context: BTreeMap<String, Value>) {
        self.emit(EventType::Lifecycle, || {
            lifecycle(action, &format!("/1.0/profiles/{name}"), name, context)
        });
    }

    /// A `lifecycle` event about the image `fingerprint`.
    pub fn image(&self, action: &str, fingerprint: &str) {
        self.emit(EventType::Lifecycle, || {
            lifecycle(
                action,
                &format!("/1.0/images/{fingerprint}"),
                fingerprint,
                BTreeMap::new(),
            )
        });
    }

    /// A `logging` event.
    pub fn logging(&self, level: &str, message: String, context: BTreeMap<String, String>) {
        self.emit(EventType::Logging, || {
            serde_json::to_value(EventLogging {
                message,
                level: level.to_string(),
                context,
            })
            .unwrap_or(Value::Null)
        });
    }
}

/// The wire event of `kind` at `timestamp`.
pub fn event(kind: EventType, timestamp: String, metadata: Value) -> Event {
    Event {
        kind: kind.as_str().to_string(),
        timestamp,
        metadata,
        location: crate::cluster::location(),
        project: "default".into(),
    }
}

/// Lifecycle metadata (`api.EventLifecycle`): `action` happened to `source`.
pub fn lifecycle(
    action: &str,
    source: &str,
    name: &str,
    context: BTreeMap<String, Value>,
) -> Value {
    serde_json::to_value(EventLifecycle {
        action: action.to_string(),
        source: source.to_string(),
        context,
        requestor: None,
        name: name.to_string(),
        project: "default".into(),
    })
    .unwrap_or(Value::Null)
}

/// One listener's end of the bus.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Published>>,
    capacity: usize,
    closing: watch::Receiver<bool>,
}

impl Subscription {
    /// The next event. `Err(Lagged)` means this listener fell more than the capacity behind
    /// and lost events; the caller disconnects it. `Err(Closed)`: the daemon is stopping.
    pub async fn recv(&mut self) -> Result<Arc<Published>, RecvError> {
        // Events published before the close still go out.
        tokio::select! {
            biased;
            received = self.rx.recv() => received,
            _ = self.closing.wait_for(|closing| *closing) => Err(RecvError::Closed),
        }
    }

    /// Whether this listener is more than the capacity behind (it has lost events, or is
    /// about to).
    pub fn is_lagging(&self) -> bool {
        self.rx.len() > self.capacity
    }

    /// Resolves once [`is_lagging`](Self::is_lagging): raced against a write to a listener
    /// that does not read, so it is noticed even though the write never completes.
    pub async fn lagging(&self) {
        while !self.is_lagging() {
            tokio::time::sleep(LAG_POLL).await;
        }
    }
}

/// Which event types a listener wants (`?type=operation,lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter(BTreeSet<EventType>);

impl TypeFilter {
    /// Every type.
    pub fn all() -> Self {
        TypeFilter(EventType::ALL.into_iter().collect())
    }

    /// Parse a comma-separated list; absent or empty means every type. Blank entries are
    /// skipped; an unknown type is an error.
    pub fn parse(list: Option<&str>) -> Result<Self, UnknownEventType> {
        let mut set = BTreeSet::new();
        for entry in list.unwrap_or_default().split(',').map(str::trim) {
            if !entry.is_empty() {
                set.insert(entry.parse::<EventType>()?);
            }
        }
        Ok(if set.is_empty() {
            TypeFilter::all()
        } else {
            TypeFilter(set)
        })
    }

    /// Whether events of `kind` pass.
    pub fn contains(&self, kind: EventType) -> bool {
        self.0.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctl_api::{OperationClass, StatusCode};
    use serde_json::json;

    #[test]
    fn lifecycle_event_shape() {
        let ev = event(
            EventType::Lifecycle,
            "2026-11-29T00:00:00Z".into(),
            lifecycle(
                "instance-exec",
                "/1.0/instances/c1",
                "c1",
                BTreeMap::from([("command".to_string(), json!(["true"]))]),
            ),
        );
        let golden = json!({
            "type": "lifecycle",
            "timestamp": "2026-11-29T00:00:00Z",
            "metadata": {
                "action": "instance-exec",
                "source": "/1.0/instances/c1",
                "context": {"command": ["true"]},
                "requestor": null,
                "name": "c1",
                "project": "default"
            },
            "location": "none",
            "project": "default"
        });
        assert_eq!(serde_json::to_value(&ev).ok(), Some(golden));
    }

    #[test]
    fn logging_and_operation_event_shapes() {
        let bus = Events::new(8);
        let mut sub = bus.subscribe();
        bus.logging(
            "info",
            "started".into(),
            BTreeMap::from([("instance".to_string(), "c1".to_string())]),
        );
        let op = Operation {
            id: "6916".into(),
            class: OperationClass::Task,
            description: "Creating instance".into(),
            created_at: "t0".into(),
            updated_at: "t1".into(),
            status: "Running".into(),
            status_code: StatusCode::Running,
            resources: BTreeMap::new(),
            metadata: Value::Null,
            may_cancel: false,
            err: String::new(),
            location: "none".into(),
        };
        bus.operation(&op);
        let Ok(first) = sub.rx.try_recv() else {
            panic!("no logging event");
        };
        let v: Value = serde_json::from_str(&first.text).unwrap_or_default();
        assert_eq!(first.kind, EventType::Logging);
        assert_eq!(v["type"], "logging");
        assert_eq!(
            v["metadata"],
            json!({"message": "started", "level": "info", "context": {"instance": "c1"}})
        );
        assert_eq!(
            (&v["location"], &v["project"]),
            (&json!("none"), &json!("default"))
        );
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        let Ok(second) = sub.rx.try_recv() else {
            panic!("no operation event");
        };
        let v: Value = serde_json::from_str(&second.text).unwrap_or_default();
        assert_eq!(v["type"], "operation");
        assert_eq!(v["metadata"], serde_json::to_value(&op).unwrap_or_default());
    }

    #[test]
    fn type_filter_parsing() {
        let all = TypeFilter::all();
        assert_eq!(TypeFilter::parse(None), Ok(all.clone()));
        assert_eq!(TypeFilter::parse(Some("")), Ok(all.clone()));
        assert_eq!(TypeFilter::parse(Some(" , ")), Ok(all));
        let Ok(f) = TypeFilter::parse(Some("lifecycle, operation,")) else {
            panic!("valid list refused");
        };
        assert!(f.contains(EventType::Lifecycle) && f.contains(EventType::Operation));
        assert!(!f.contains(EventType::Logging));
        assert_eq!(
            TypeFilter::parse(Some("lifecycle,ovn")),
            Err(UnknownEventType("ovn".into()))
        );
        assert!(TypeFilter::parse(Some("Lifecycle")).is_err());
    }

    #[test]
    fn nothing_is_built_without_listeners() {
        let bus = Events::new(4);
        let mut built = false;
        bus.emit(EventType::Lifecycle, || {
            built = true;
            Value::Null
        });
        assert!(!built);
        let _sub = bus.subscribe();
        bus.emit(EventType::Lifecycle, || {
            built = true;
            Value::Null
        });
        assert!(built);
    }

    #[tokio::test]
    async fn close_ends_every_stream_and_waits_for_them() {
        let bus = Events::new(4);
        let mut sub = bus.subscribe();
        let listener = tokio::spawn(async move {
            let first = sub.recv().await.map(|p| p.kind);
            let then = sub.recv().await.map(|p| p.kind);
            (first, then)
        });
        bus.instance("instance-started", "c1", BTreeMap::new());
        tokio::time::timeout(Duration::from_secs(2), bus.close(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|_| panic!("close waited for a listener that was gone"));
        assert!(!bus.has_listeners());
        let got = listener.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            got,
            (Ok(EventType::Lifecycle), Err(RecvError::Closed))
        ));
        let mut late = bus.subscribe();
        assert!(matches!(late.recv().await, Err(RecvError::Closed)));
    }

    #[tokio::test]
    async fn a_lagging_listener_is_told_and_others_are_not_held_up() {
        let bus = Events::new(4);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        for i in 0..4 {
            bus.instance("instance-updated", &format!("c{i}"), BTreeMap::new());
            assert!(fast.recv().await.is_ok());
        }
        assert!(!slow.is_lagging());
        bus.instance("instance-updated", "c4", BTreeMap::new());
        assert!(fast.recv().await.is_ok());
        assert!(slow.is_lagging());
        tokio::time::timeout(Duration::from_secs(1), slow.lagging())
            .await
            .unwrap_or_else(|_| panic!("lagging() did not resolve"));
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(_))));
    }
}
