//! Lenient views of an instance's live state (`GET /1.0/instances/{name}/state`, and `state`
//! in `recursion=2` listings) for `ctl info` and `ctl top`.
//!
//! Unlike [`ctl_api::InstanceState`], every field here is optional: a missing or `null` field
//! reads as its default, so the display commands work against servers that report only part
//! of the state (no `disk`, `network: null`, no counters...).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// An instance's live state, every part optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub status: String,
    /// PID of the instance's init as the host sees it (0 when stopped).
    pub pid: i64,
    /// Processes in the instance (negative when the server does not know).
    pub processes: i64,
    pub cpu: Cpu,
    pub memory: Memory,
    /// Disk usage per device (`root`...).
    pub disk: BTreeMap<String, Disk>,
    /// Network interfaces by name.
    pub network: BTreeMap<String, Network>,
}

/// CPU part of [`State`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// CPU time used, in nanoseconds.
    pub usage: i64,
}

/// Memory part of [`State`], in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub usage: i64,
    pub usage_peak: i64,
    pub swap_usage: i64,
    pub swap_usage_peak: i64,
}

/// One disk device of [`State`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// Bytes used.
    pub usage: i64,
}

/// One network interface of [`State`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub addresses: Vec<Address>,
    /// Traffic counters; `None` when the server sent none.
    pub counters: Option<Counters>,
    pub hwaddr: String,
    /// The host side of the interface (a veth peer), when the server names it.
    pub host_name: String,
    pub mtu: i64,
    /// `up` or `down`.
    pub state: String,
    /// `broadcast`, `loopback`...
    #[serde(rename = "type")]
    pub kind: String,
}

/// One address of a [`Network`] interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    /// `inet` or `inet6`.
    pub family: String,
    pub address: String,
    /// Prefix length, as a string (`24`).
    pub netmask: String,
    /// `global`, `link`, `local`.
    pub scope: String,
}

/// Traffic counters of a [`Network`] interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub bytes_received: i64,
    pub bytes_sent: i64,
    pub packets_received: i64,
    pub packets_sent: i64,
}

/// An instance of a `recursion=2` listing, reduced to what `ctl top` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceUsage {
    pub name: String,
    pub status: String,
    /// `None` when the server sent no state.
    pub state: Option<State>,
}

/// `value` with every `null` object member removed (recursively), so that `#[serde(default)]`
/// fills it in.
pub fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// Decode a raw API value (`what` names it in errors) leniently: nulls read as defaults.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T, Error> {
    serde_json::from_value(strip_nulls(value)).map_err(|source| Error::Decode {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_state_decodes_with_defaults() {
        let state: Result<State, _> = decode(
            "state",
            json!({"status": "Running", "cpu": {"usage": 5}, "network": null,
                   "memory": {"usage": 10, "usage_peak": null}}),
        );
        let Ok(state) = state else {
            panic!("partial state does not decode: {state:?}");
        };
        assert_eq!(state.status, "Running");
        assert_eq!(state.cpu.usage, 5);
        assert_eq!(state.memory.usage, 10);
        assert_eq!(state.memory.usage_peak, 0);
        assert!(state.network.is_empty());
        assert!(state.disk.is_empty());
    }

    #[test]
    fn listing_with_and_without_state() {
        let list: Result<Vec<InstanceUsage>, _> = decode(
            "instance list",
            json!([{"name": "a", "status": "Stopped", "state": null, "extra": 1},
                   {"name": "b", "status": "Running", "state": {"processes": 3}}]),
        );
        let Ok(list) = list else {
            panic!("listing does not decode: {list:?}");
        };
        assert_eq!(list[0].state, None);
        assert_eq!(list[1].state.as_ref().map(|s| s.processes), Some(3));
    }

    #[test]
    fn wrong_types_are_still_errors() {
        let state: Result<State, _> = decode("state", json!({"pid": "many"}));
        assert!(matches!(state, Err(Error::Decode { .. })));
    }
}
