//! The response envelope every endpoint answers with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `type` of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseType {
    Sync,
    Async,
    Error,
}

/// The Incus/LXD response envelope.
///
/// Sync answers carry `status`/`status_code` 200 "Success" and the payload in `metadata`;
/// async answers carry 100 "Operation created", the operation URL in `operation` and the
/// operation itself in `metadata`; errors carry `error_code` (the HTTP status) and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "type")]
    pub kind: ResponseType,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub error_code: u16,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub metadata: Value,
}

impl Response {
    /// A synchronous success carrying `metadata`.
    pub fn sync(metadata: Value) -> Self {
        Response {
            kind: ResponseType::Sync,
            status: "Success".into(),
            status_code: 200,
            operation: String::new(),
            error_code: 0,
            error: String::new(),
            metadata,
        }
    }

    /// An asynchronous answer pointing at operation `url`, with the operation as metadata.
    pub fn async_op(url: String, operation: Value) -> Self {
        Response {
            kind: ResponseType::Async,
            status: "Operation created".into(),
            status_code: 100,
            operation: url,
            error_code: 0,
            error: String::new(),
            metadata: operation,
        }
    }

    /// An error answer; `code` is the HTTP status.
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        Response {
            kind: ResponseType::Error,
            status: String::new(),
            status_code: 0,
            operation: String::new(),
            error_code: code,
            error: message.into(),
            metadata: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sync_envelope_has_incus_fields() {
        let v = serde_json::to_value(Response::sync(json!(["/1.0/instances/c1"]))).ok();
        assert_eq!(
            v,
            Some(json!({
                "type": "sync", "status": "Success", "status_code": 200, "operation": "",
                "error_code": 0, "error": "", "metadata": ["/1.0/instances/c1"]
            }))
        );
    }

    #[test]
    fn error_envelope_has_incus_fields() {
        let v = serde_json::to_value(Response::error(404, "instance not found")).ok();
        assert_eq!(
            v,
            Some(json!({
                "type": "error", "status": "", "status_code": 0, "operation": "",
                "error_code": 404, "error": "instance not found", "metadata": null
            }))
        );
    }

    #[test]
    fn async_envelope_points_at_operation() {
        let r = Response::async_op("/1.0/operations/x".into(), json!({"id": "x"}));
        let v = serde_json::to_value(&r).ok();
        assert_eq!(
            v.as_ref().and_then(|v| v["status_code"].as_u64()),
            Some(100)
        );
        assert_eq!(
            v.as_ref().and_then(|v| v["operation"].as_str()),
            Some("/1.0/operations/x")
        );
    }
}
