//! Events (`GET /1.0/events`): what the daemon streams to its listeners, one JSON object per
//! websocket text frame, shaped like Incus' `api.Event`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// An operation was created or changed status; `metadata` is the [`Operation`].
    ///
    /// [`Operation`]: crate::Operation
    Operation,
    /// Something happened to a resource; `metadata` is an [`EventLifecycle`].
    Lifecycle,
    /// A daemon log record; `metadata` is an [`EventLogging`].
    Logging,
}

impl EventType {
    /// Every type, in the order the API documents them.
    pub const ALL: [EventType; 3] = [
        EventType::Operation,
        EventType::Lifecycle,
        EventType::Logging,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Operation => "operation",
            EventType::Lifecycle => "lifecycle",
            EventType::Logging => "logging",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type name that is not one of [`EventType::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEventType(pub String);

impl fmt::Display for UnknownEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\" isn't a supported event type (use operation, lifecycle or logging)",
            self.0
        )
    }
}

impl std::error::Error for UnknownEventType {}

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

/// One event as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `operation`, `lifecycle` or `logging` (kept as text so a newer server's types still
    /// decode).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (RFC 3339, UTC).
    pub timestamp: String,
    /// The payload; its shape depends on `type`.
    #[serde(default)]
    pub metadata: Value,
    /// Cluster member; always `none`.
    #[serde(default)]
    pub location: String,
    /// Project; always `default`.
    #[serde(default)]
    pub project: String,
}

/// `metadata` of a lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLifecycle {
    /// What happened: `instance-created`, `instance-started`, `image-deleted`...
    pub action: String,
    /// The resource it happened to: `/1.0/instances/c1`.
    pub source: String,
    /// Details that depend on the action (the command of an `instance-exec`).
    #[serde(default)]
    pub context: BTreeMap<String, Value>,
    /// Who asked; `null` (the socket has no users).
    #[serde(default)]
    pub requestor: Option<Value>,
    /// The resource's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The resource's project.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
}

/// `metadata` of a logging event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLogging {
    /// The log message.
    pub message: String,
    /// `error`, `warn` or `info`.
    pub level: String,
    /// The record's structured fields, as text.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_and_print() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).ok(), Some(Value::from(t.as_str())));
        }
        assert_eq!(
            "ovn".parse::<EventType>(),
            Err(UnknownEventType("ovn".into()))
        );
    }
}
