//! The in-memory registry of asynchronous operations (`/1.0/operations`).
//!
//! An operation is created running, its task updates it, and it ends with success or
//! failure. Waiters use a watch channel, so `/wait` returns the moment it ends. Finished
//! operations are kept for a while for late pollers, then pruned.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ctl_api::{Operation, OperationClass, StatusCode};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

/// How long a finished operation stays visible.
const KEEP_FINISHED: Duration = Duration::from_secs(300);
/// How long a finished operation stays in the list (`GET /1.0/operations`): web UIs read
/// "an operation on this instance is under way" from it.
const LISTED_FINISHED: Duration = Duration::from_secs(5);

/// How many finished operations stay visible at most: a burst of thousands of short
/// operations would otherwise hold all of them (and their metadata) for five minutes.
const MAX_FINISHED: usize = 1000;

/// Forget finished operations older than [`KEEP_FINISHED`], then the oldest finished ones
/// beyond [`MAX_FINISHED`] (once a quarter more have piled up, so most creates only scan).
fn prune(map: &mut HashMap<String, Entry>) {
    map.retain(|_, e| e.finished_at.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
    let mut finished: Vec<(Instant, String)> = map
        .iter()
        .filter_map(|(id, e)| Some((e.finished_at?, id.clone())))
        .collect();
    if finished.len() <= MAX_FINISHED + MAX_FINISHED / 4 {
        return;
    }
    finished.sort_unstable();
    let excess = finished.len() - MAX_FINISHED;
    for (_, id) in finished.into_iter().take(excess) {
        map.remove(&id);
    }
}

struct Entry {
    op: Operation,
    finished_at: Option<Instant>,
    tx: watch::Sender<Operation>,
    cancel: Option<CancelToken>,
}

/// A shared cancellation flag (a watch of a bool).
#[derive(Debug, Clone)]
pub struct CancelToken {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A fresh, not-cancelled token.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        CancelToken { tx: Arc::new(tx) }
    }

    /// Cancel.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Operations {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    /// Where creations and updates are published as `operation` events.
    events: Option<crate::events::Events>,
}

/// Handle held by the task doing an operation's work.
#[derive(Clone)]
pub struct OpHandle {
    ops: Operations,
    /// The operation id.
    pub id: String,
}

/// Errors looking up operations.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("operation not found")]
    NotFound,
    #[error("operation cannot be cancelled")]
    NotCancellable,
}

fn now() -> String {
    crate::clock::now_rfc3339()
}

impl Operations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A registry that publishes every creation and update on `events`.
    pub fn with_events(events: crate::events::Events) -> Self {
        Operations {
            inner: Arc::default(),
            events: Some(events),
        }
    }

    /// Register a running operation.
    pub fn create(
        &self,
        class: OperationClass,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        metadata: Value,
        cancel: Option<CancelToken>,
    ) -> (OpHandle, Operation) {
        let id = Uuid::new_v4().to_string();
        let t = now();
        let op = Operation {
            id: id.clone(),
            class,
            description: description.to_string(),
            created_at: t.clone(),
            updated_at: t,
            status: StatusCode::Running.as_str().into(),
            status_code: StatusCode::Running,
            resources,
            metadata,
            may_cancel: cancel.is_some(),
            err: String::new(),
            location: crate::cluster::location(),
        };
        let (tx, _) = watch::channel(op.clone());
        let mut map = self.lock();
        prune(&mut map);
        map.insert(
            id.clone(),
            Entry {
                op: op.clone(),
                finished_at: None,
                tx,
                cancel,
            },
        );
        if let Some(events) = &self.events {
            events.operation(&op);
        }
        (
            OpHandle {
                ops: self.clone(),
                id,
            },
            op,
        )
    }

    /// One operation.
    pub fn get(&self, id: &str) -> Result<Operation, OpError> {
        self.lock()
            .get(id)
            .map(|e| e.op.clone())
            .ok_or(OpError::NotFound)
    }

    /// All operations but those finished more than [`LISTED_FINISHED`] ago (as Incus, which
    /// forgets them after five seconds; here they can still be read by id for a while).
    pub fn list(&self) -> Vec<Operation> {
        let mut map = self.lock();
        prune(&mut map);
        let mut v: Vec<Operation> = map
            .values()
            .filter(|e| e.finished_at.is_none_or(|t| t.elapsed() < LISTED_FINISHED))
            .map(|e| e.op.clone())
            .collect();
        drop(map);
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        v
    }

    /// Wait until the operation ends or `timeout` passes (`None`: forever); returns its
    /// state at that point.
    pub async fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<Operation, OpError> {
        let mut rx = self
            .lock()
            .get(id)
            .map(|e| e.tx.subscribe())
            .ok_or(OpError::NotFound)?;
        let done = rx.wait_for(|op| op.status_code.is_final());
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, done).await.ok(),
            None => Some(done.await),
        };
        match result {
            Some(Ok(op)) => Ok(op.clone()),
            _ => self.get(id),
        }
    }

    /// Ask the operation to cancel.
    pub fn cancel(&self, id: &str) -> Result<(), OpError> {
        let map = self.lock();
        let e = map.get(id).ok_or(OpError::NotFound)?;
        match &e.cancel {
            Some(c) if !e.op.status_code.is_final() => {
                c.cancel();
                Ok(())
            }
            _ => Err(OpError::NotCancellable),
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Operation)) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(id) {
            f(&mut e.op);
            e.op.updated_at = now();
            if e.op.status_code.is_final() {
                e.finished_at = Some(Instant::now());
                e.op.may_cancel = false;
            }
            e.tx.send_replace(e.op.clone());
            if let Some(events) = &self.events {
                events.operation(&e.op);
            }
        }
    }
}

impl OpHandle {
    /// Replace the metadata.
    pub fn set_metadata(&self, metadata: Value) {
        self.ops.update(&self.id, |op| op.metadata = metadata);
    }

    /// Add resources (e.g. the instance a create made).
    pub fn add_resource(&self, kind: &str, url: String) {
        self.ops.update(&self.id, |op| {
            op.resources.entry(kind.to_string()).or_default().push(url)
        });
    }

    /// End with success.
    pub fn succeed(&self) {
        self.ops.update(&self.id, |op| {
            op.status_code = StatusCode::Success;
            op.status = StatusCode::Success.as_str().into();
        });
    }

    /// End with failure and message `err`.
    pub fn fail(&self, err: String) {
        self.ops.update(&self.id, |op| {
            op.status_code = StatusCode::Failure;
            op.status = StatusCode::Failure.as_str().into();
            op.err = err;
        });
    }

    /// End as cancelled.
    pub fn cancelled(&self) {
        self.ops.update(&self.id, |op| {
            op.status_code = StatusCode::Cancelled;
            op.status = StatusCode::Cancelled.as_str().into();
            op.err = "operation cancelled".into();
        });
    }

    /// The operation's metadata now.
    pub fn metadata(&self) -> Value {
        self.ops
            .get(&self.id)
            .map(|o| o.metadata)
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_when_finished() {
        let ops = Operations::default();
        let (h, op) = ops.create(
            OperationClass::Task,
            "Creating instance",
            BTreeMap::new(),
            Value::Null,
            None,
        );
        assert_eq!(op.status_code, StatusCode::Running);
        let waiter = {
            let ops = ops.clone();
            let id = op.id.clone();
            tokio::spawn(async move { ops.wait(&id, None).await })
        };
        h.fail("boom".into());
        let done = waiter.await.ok().and_then(Result::ok);
        assert_eq!(
            done.map(|o| (o.status_code, o.err)),
            Some((StatusCode::Failure, "boom".to_string()))
        );
        assert!(matches!(ops.get("nope"), Err(OpError::NotFound)));
    }

    #[tokio::test]
    async fn wait_times_out_while_running_and_cancel_rules() {
        let ops = Operations::default();
        let token = CancelToken::new();
        let (h, op) = ops.create(
            OperationClass::Task,
            "x",
            BTreeMap::new(),
            Value::Null,
            Some(token.clone()),
        );
        let got = ops.wait(&op.id, Some(Duration::from_millis(20))).await;
        assert_eq!(got.map(|o| o.status_code).ok(), Some(StatusCode::Running));
        assert!(ops.cancel(&op.id).is_ok());
        assert!(token.is_cancelled());
        h.succeed();
        assert!(matches!(ops.cancel(&op.id), Err(OpError::NotCancellable)));
        assert_eq!(ops.list().len(), 1);
    }

    #[test]
    fn finished_operations_are_bounded_by_count_and_running_ones_kept() {
        let ops = Operations::default();
        let new = |ops: &Operations| {
            ops.create(
                OperationClass::Task,
                "t",
                BTreeMap::new(),
                Value::Null,
                None,
            )
        };
        let (_running, running) = new(&ops);
        let mut first_finished = None;
        for _ in 0..3 * MAX_FINISHED {
            let (h, op) = new(&ops);
            first_finished.get_or_insert(op.id);
            h.succeed();
        }
        let kept = ops.list();
        let finished = kept
            .iter()
            .filter(|o| o.status_code != StatusCode::Running)
            .count();
        assert!(
            finished <= MAX_FINISHED + MAX_FINISHED / 4,
            "{finished} kept"
        );
        assert!(finished >= MAX_FINISHED, "{finished} kept");
        // The running one stays whatever the count; the oldest finished went first.
        assert!(ops.get(&running.id).is_ok());
        assert!(first_finished.is_some_and(|id| ops.get(&id).is_err()));
    }
}
