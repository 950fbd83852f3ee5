//! Network types (`/1.0/networks`), Incus-shaped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::ConfigMap;

/// A managed network as `GET /1.0/networks/{name}` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `bridge` (the only type ctl manages).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub managed: bool,
    /// `Created` once the bridge exists.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub config: ConfigMap,
    /// URLs of the instances and profiles using it.
    #[serde(default)]
    pub used_by: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub project: String,
}

/// Body of `POST /1.0/networks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworksPost {
    pub name: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub description: String,
    /// Empty means `bridge`.
    #[serde(rename = "type", default, deserialize_with = "crate::null_as_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "crate::null_as_default")]
    pub config: ConfigMap,
}

/// Body of `PUT /1.0/networks/{name}` (and `PATCH`, where only the given keys change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkPut {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigMap>,
}

/// One address handed out on a network (`GET /1.0/networks/{name}/leases`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkLease {
    pub hostname: String,
    pub address: String,
    #[serde(default)]
    pub hwaddr: String,
    /// `static` (set by `ipv4.address` on the device) or `dynamic` (picked by ctl).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub project: String,
}

/// One address of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStateAddress {
    /// `inet` or `inet6`.
    pub family: String,
    pub address: String,
    /// The prefix length, as a string (Incus's format).
    pub netmask: String,
    /// `global`, `link` or `local`.
    pub scope: String,
}

/// Traffic counters of an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStateCounters {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
}

/// `GET /1.0/networks/{name}/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkState {
    pub addresses: Vec<NetworkStateAddress>,
    pub counters: NetworkStateCounters,
    pub hwaddr: String,
    pub mtu: u32,
    /// `up` or `down`.
    pub state: String,
    /// `broadcast`, `loopback`...
    #[serde(rename = "type")]
    pub kind: String,
    /// ctl's addition: the health of the network's DHCP and DNS server, for a network that
    /// has one (a managed bridge with addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnsmasq: Option<DnsmasqState>,
}

/// The health of a managed network's dnsmasq (`dnsmasq` of the network state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsmasqState {
    /// `running`, `restarting` (it died; its supervisor starts it again after a pause) or
    /// `down` (it could not be started: the daemon's log says why).
    pub status: String,
    /// Its PID while running, else 0.
    pub pid: i32,
    /// How often it died and was started again since the daemon started it.
    pub restarts: u32,
}

/// One interface of a running instance (`network` of the instance state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStateNetwork {
    pub addresses: Vec<NetworkStateAddress>,
    pub counters: NetworkStateCounters,
    pub hwaddr: String,
    /// The host side of the veth pair (empty for `lo`).
    pub host_name: String,
    pub mtu: u32,
    pub state: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Map of interface name to its state, as in [`crate::InstanceState::network`].
pub type InstanceNetworkMap = BTreeMap<String, InstanceStateNetwork>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lease_and_state_use_incus_field_names() {
        let lease = NetworkLease {
            hostname: "c1".into(),
            address: "10.0.0.2".into(),
            hwaddr: "00:16:3e:00:00:01".into(),
            kind: "dynamic".into(),
            location: "none".into(),
            project: "default".into(),
        };
        let v = serde_json::to_value(&lease).unwrap_or_default();
        assert_eq!(v["type"], "dynamic");
        let st: Option<NetworkState> = serde_json::from_value(json!({
            "addresses": [{"family": "inet", "address": "10.0.0.1", "netmask": "24", "scope": "global"}],
            "counters": {"bytes_received": 1, "bytes_sent": 2, "packets_received": 3, "packets_sent": 4},
            "hwaddr": "aa:bb:cc:dd:ee:ff", "mtu": 1500, "state": "up", "type": "broadcast"
        }))
        .ok();
        assert_eq!(st.map(|s| (s.mtu, s.addresses.len())), Some((1500, 1)));
    }

    #[test]
    fn networks_post_takes_nulls() {
        let p: Option<NetworksPost> =
            serde_json::from_value(json!({"name": "n1", "config": null, "type": null})).ok();
        assert_eq!(
            p.map(|p| (p.name, p.kind)),
            Some(("n1".into(), String::new()))
        );
    }
}
