//! Operations (`/1.0/operations`): the handle for every asynchronous action.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StatusCode;

/// `class` of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationClass {
    /// Background work; poll or wait for it.
    Task,
    /// Work that needs websocket connections (exec, console); secrets in `metadata.fds`.
    Websocket,
    /// A token.
    Token,
}

/// An operation as `GET /1.0/operations/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub class: OperationClass,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    pub status: String,
    pub status_code: StatusCode,
    /// Affected resources by kind: `{"instances": ["/1.0/instances/c1"]}`.
    #[serde(default)]
    pub resources: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub metadata: Value,
    pub may_cancel: bool,
    /// The error message when the operation failed.
    #[serde(default)]
    pub err: String,
    #[serde(default)]
    pub location: String,
}
