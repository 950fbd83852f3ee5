//! Status codes shared by operations and instances (Incus `api.StatusCode`).

use serde::{Deserialize, Serialize};

/// Numeric status code with its Incus meaning; serialized as the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum StatusCode {
    OperationCreated,
    Started,
    Stopped,
    Running,
    Cancelling,
    Pending,
    Starting,
    Stopping,
    Aborting,
    Freezing,
    Frozen,
    Thawed,
    Error,
    Ready,
    Success,
    Failure,
    Cancelled,
}

const TABLE: &[(StatusCode, u16, &str)] = &[
    (StatusCode::OperationCreated, 100, "Operation created"),
    (StatusCode::Started, 101, "Started"),
    (StatusCode::Stopped, 102, "Stopped"),
    (StatusCode::Running, 103, "Running"),
    (StatusCode::Cancelling, 104, "Cancelling"),
    (StatusCode::Pending, 105, "Pending"),
    (StatusCode::Starting, 106, "Starting"),
    (StatusCode::Stopping, 107, "Stopping"),
    (StatusCode::Aborting, 108, "Aborting"),
    (StatusCode::Freezing, 109, "Freezing"),
    (StatusCode::Frozen, 110, "Frozen"),
    (StatusCode::Thawed, 111, "Thawed"),
    (StatusCode::Error, 112, "Error"),
    (StatusCode::Ready, 113, "Ready"),
    (StatusCode::Success, 200, "Success"),
    (StatusCode::Failure, 400, "Failure"),
    (StatusCode::Cancelled, 401, "Cancelled"),
];

impl StatusCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        TABLE
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or(0, |(_, c, _)| *c)
    }

    /// The human name Incus puts in `status` fields ("Running", "Success"...).
    pub fn as_str(self) -> &'static str {
        TABLE
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or("Unknown", |(_, _, n)| n)
    }

    /// Whether an operation in this state has finished (successfully or not).
    pub fn is_final(self) -> bool {
        self.code() >= 200
    }
}

impl From<StatusCode> for u16 {
    fn from(s: StatusCode) -> u16 {
        s.code()
    }
}

impl TryFrom<u16> for StatusCode {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        TABLE
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(s, _, _)| *s)
            .ok_or_else(|| format!("unknown status code {code}"))
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_as_numbers() {
        for (s, c, _) in TABLE {
            assert_eq!(serde_json::to_string(s).ok(), Some(c.to_string()));
            assert_eq!(
                serde_json::from_str::<StatusCode>(&c.to_string()).ok(),
                Some(*s)
            );
        }
        assert!(serde_json::from_str::<StatusCode>("999").is_err());
    }

    #[test]
    fn finality() {
        assert!(StatusCode::Success.is_final());
        assert!(StatusCode::Failure.is_final());
        assert!(!StatusCode::Running.is_final());
    }
}
