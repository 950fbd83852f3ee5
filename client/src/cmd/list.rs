//! `ctl list`: the instances with their state, as a table, CSV, JSON or YAML.
//!
//! On a clustered server (`environment.server_clustered` of `GET /1.0`) the table gains a
//! LOCATION column (the member an instance is on, as Incus' default columns end with `L`),
//! and an instance the server reports in `Error` because its member is offline shows as
//! `OFFLINE` (the members are asked for only when some instance is in `Error`).

use std::collections::BTreeSet;
use std::io::Write;

use clap::Args;
use ctl_api::{ClusterMember, InstanceFull, StatusCode};
use serde_json::Value;

use super::Error;
use crate::Client;
use crate::output::{self, Format};

/// Columns of the table and CSV output.
pub const HEADER: [&str; 7] = ["NAME", "STATE", "IPV4", "IPV6", "TYPE", "IMAGE", "PID"];
/// Columns on a clustered server.
pub const CLUSTERED_HEADER: [&str; 8] = [
    "NAME", "STATE", "IPV4", "IPV6", "TYPE", "IMAGE", "PID", "LOCATION",
];

/// What a clustered server's listing knows about its members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Members whose status is `Offline`.
    pub offline: BTreeSet<String>,
}

impl Cluster {
    /// From `GET /1.0/cluster/members?recursion=1`.
    pub fn from_members(members: &[ClusterMember]) -> Self {
        let offline = members
            .iter()
            .filter(|m| m.status.eq_ignore_ascii_case("offline"))
            .map(|m| m.server_name.clone())
            .collect();
        Cluster { offline }
    }
}

/// Arguments of `ctl list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The server to list, as REMOTE: (default: the default remote)
    #[arg(value_name = "REMOTE:")]
    pub remote: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// The IPv4 addresses of an instance, one `10.0.0.2 (eth0)` line per address, `lo` left out.
pub fn ipv4_addresses(instance: &InstanceFull) -> Vec<String> {
    addresses(instance, "inet")
}

/// The global IPv6 addresses of an instance, one `fd42::2 (eth0)` line per address.
pub fn ipv6_addresses(instance: &InstanceFull) -> Vec<String> {
    addresses(instance, "inet6")
}

fn addresses(instance: &InstanceFull, family: &str) -> Vec<String> {
    let Some(network) = instance.state.as_ref().and_then(|s| s.network.as_ref()) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for (interface, details) in network {
        if interface == "lo" {
            continue;
        }
        let addresses = details.get("addresses").and_then(Value::as_array);
        for address in addresses.into_iter().flatten() {
            if address.get("family").and_then(Value::as_str) != Some(family) {
                continue;
            }
            if family == "inet6" && address.get("scope").and_then(Value::as_str) != Some("global") {
                continue;
            }
            if let Some(ip) = address.get("address").and_then(Value::as_str) {
                lines.push(format!("{ip} ({interface})"));
            }
        }
    }
    lines
}

/// What the IMAGE column shows: `image.description`, else the base image's fingerprint
/// shortened to 12 characters.
pub fn image_label(instance: &InstanceFull) -> String {
    let config_value = |key: &str| {
        let inner = &instance.instance;
        inner
            .config
            .get(key)
            .or_else(|| inner.expanded_config.get(key))
            .filter(|v| !v.is_empty())
    };
    if let Some(description) = config_value("image.description") {
        return description.clone();
    }
    config_value("volatile.base_image")
        .map(|fp| fp.chars().take(12).collect())
        .unwrap_or_default()
}

/// What the TYPE column shows, as LXD does: `CONTAINER`, or `CONTAINER (PRIVILEGED)` for one
/// that runs without a user namespace (`security.privileged`).
pub fn type_label(instance: &InstanceFull) -> String {
    if is_privileged(&instance.instance) {
        "CONTAINER (PRIVILEGED)".into()
    } else {
        "CONTAINER".into()
    }
}

/// Whether `security.privileged` is on (the instance's own key, else its profiles').
pub fn is_privileged(instance: &ctl_api::Instance) -> bool {
    instance
        .config
        .get("security.privileged")
        .or_else(|| instance.expanded_config.get("security.privileged"))
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "yes" | "on"))
}

/// What the STATE column shows: the status in capitals, `OFFLINE` for an instance in error
/// on a member that is offline.
pub fn state_label(instance: &ctl_api::Instance, cluster: Option<&Cluster>) -> String {
    let on_offline_member = cluster.is_some_and(|c| c.offline.contains(&instance.location));
    if instance.status_code == StatusCode::Error && on_offline_member {
        "OFFLINE".into()
    } else {
        instance.status.to_uppercase()
    }
}

/// One table row per instance, sorted by name.
pub fn rows(instances: &[InstanceFull]) -> Vec<Vec<String>> {
    rows_in(instances, None)
}

/// One table row per instance, sorted by name; on a clustered server (`cluster`) with the
/// instance's member last.
pub fn rows_in(instances: &[InstanceFull], cluster: Option<&Cluster>) -> Vec<Vec<String>> {
    let mut sorted: Vec<&InstanceFull> = instances.iter().collect();
    sorted.sort_by(|a, b| a.instance.name.cmp(&b.instance.name));
    sorted
        .into_iter()
        .map(|full| {
            let pid = full
                .state
                .as_ref()
                .map(|s| s.pid)
                .filter(|pid| *pid > 0)
                .map(|pid| pid.to_string())
                .unwrap_or_default();
            let mut row = vec![
                full.instance.name.clone(),
                state_label(&full.instance, cluster),
                ipv4_addresses(full).join("\n"),
                ipv6_addresses(full).join("\n"),
                type_label(full),
                image_label(full),
                pid,
            ];
            if cluster.is_some() {
                row.push(full.instance.location.clone());
            }
            row
        })
        .collect()
}

/// Render the API answer of `GET /1.0/instances?recursion=2` in `format`.
pub fn render(raw: &Value, format: Format) -> Result<String, Error> {
    render_in(raw, format, None)
}

/// Render the API answer of `GET /1.0/instances?recursion=2` in `format`, for a clustered
/// server when `cluster` is given (JSON and YAML are the API's objects either way).
pub fn render_in(raw: &Value, format: Format, cluster: Option<&Cluster>) -> Result<String, Error> {
    let rows = match format {
        Format::Table | Format::Csv => {
            let instances: Vec<InstanceFull> =
                serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                    what: "instance list".into(),
                    source,
                })?;
            rows_in(&instances, cluster)
        }
        Format::Json | Format::Yaml => Vec::new(),
    };
    let header: &[&str] = if cluster.is_some() {
        &CLUSTERED_HEADER
    } else {
        &HEADER
    };
    Ok(output::render(format, header, &rows, raw)?)
}

/// List the instances.
pub async fn run(client: &Client, args: &ListArgs, out: &mut dyn Write) -> Result<(), Error> {
    let cluster = match args.format {
        Format::Table | Format::Csv => cluster_of(client).await?,
        Format::Json | Format::Yaml => None,
    };
    let raw = client.instances_value().await?;
    let cluster = match cluster {
        Some(_) if any_in_error(&raw) => Some(offline_members(client).await),
        other => other,
    };
    out.write_all(render_in(&raw, args.format, cluster.as_ref())?.as_bytes())?;
    Ok(())
}

/// `Some` (no member known offline yet) when the server says it is clustered.
async fn cluster_of(client: &Client) -> Result<Option<Cluster>, Error> {
    let server = client.get_value("/1.0").await?;
    let clustered = server
        .pointer("/environment/server_clustered")
        .and_then(Value::as_bool)
        == Some(true);
    Ok(clustered.then(Cluster::default))
}

/// Whether some instance of the listing is in `Error` (status code 112).
fn any_in_error(raw: &Value) -> bool {
    let error = u64::from(StatusCode::Error.code());
    raw.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .any(|i| i.get("status_code").and_then(Value::as_u64) == Some(error))
}

/// The offline members (`GET /1.0/cluster/members?recursion=1`). The listing does not fail
/// for want of them: without, an instance in error shows as `ERROR`.
async fn offline_members(client: &Client) -> Cluster {
    client
        .get::<Vec<ClusterMember>>("/1.0/cluster/members?recursion=1")
        .await
        .map(|members| Cluster::from_members(&members))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two instances as `GET /1.0/instances?recursion=2` returns them.
    fn golden() -> Value {
        json!([
            {
                "name": "web", "description": "", "status": "Running", "status_code": 103,
                "created_at": "2026-01-02T03:04:05Z", "last_used_at": "2026-01-02T03:04:06Z",
                "location": "none", "type": "container", "architecture": "x86_64",
                "ephemeral": false, "stateful": false, "profiles": ["default"],
                "config": {"image.description": "Debian bookworm",
                           "volatile.base_image": "0123456789abcdef0123"},
                "devices": {}, "expanded_config": {}, "expanded_devices": {}, "project": "default",
                "state": {
                    "status": "Running", "status_code": 103, "pid": 4242, "processes": 3,
                    "cpu": {"usage": 1500000000},
                    "memory": {"usage": 1289748, "usage_peak": 2097152},
                    "disk": {},
                    "network": {
                        "eth0": {"addresses": [
                            {"family": "inet", "address": "10.0.0.2", "netmask": "24", "scope": "global"},
                            {"family": "inet6", "address": "fd42::2", "netmask": "64", "scope": "global"},
                            {"family": "inet", "address": "10.0.0.3", "netmask": "24", "scope": "global"}
                        ]},
                        "lo": {"addresses": [
                            {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"}
                        ]}
                    }
                },
                "snapshots": null, "backups": null
            },
            {
                "name": "db", "status": "Stopped", "status_code": 102,
                "created_at": "2026-01-02T03:04:05Z", "type": "container",
                "architecture": "x86_64",
                "config": {"volatile.base_image": "fedcba9876543210fedc",
                           "security.privileged": "true"},
                "state": null
            }
        ])
    }

    #[test]
    fn rows_from_golden_instances() {
        let instances: Vec<InstanceFull> = serde_json::from_value(golden()).unwrap_or_default();
        assert_eq!(instances.len(), 2);
        assert_eq!(
            rows(&instances),
            vec![
                vec![
                    "db".to_string(),
                    "STOPPED".into(),
                    String::new(),
                    String::new(),
                    "CONTAINER (PRIVILEGED)".into(),
                    "fedcba987654".into(),
                    String::new()
                ],
                vec![
                    "web".to_string(),
                    "RUNNING".into(),
                    "10.0.0.2 (eth0)\n10.0.0.3 (eth0)".into(),
                    "fd42::2 (eth0)".into(),
                    "CONTAINER".into(),
                    "Debian bookworm".into(),
                    "4242".into()
                ],
            ]
        );
    }

    #[test]
    fn csv_from_golden_instances() {
        let csv = render(&golden(), Format::Csv).ok();
        assert_eq!(
            csv.as_deref(),
            Some(
                "NAME,STATE,IPV4,IPV6,TYPE,IMAGE,PID\n\
                 db,STOPPED,,,CONTAINER (PRIVILEGED),fedcba987654,\n\
                 web,RUNNING,\"10.0.0.2 (eth0)\n10.0.0.3 (eth0)\",fd42::2 (eth0),CONTAINER,Debian bookworm,4242\n"
            )
        );
    }

    #[test]
    fn table_from_golden_instances() {
        let instances: Vec<InstanceFull> = serde_json::from_value(golden()).unwrap_or_default();
        let table = output::render_table(&HEADER, &rows(&instances), Some(140));
        let expected = "\
+------+---------+-----------------+----------------+------------------------+-----------------+------+
| NAME | STATE   | IPV4            | IPV6           | TYPE                   | IMAGE           | PID  |
+------+---------+-----------------+----------------+------------------------+-----------------+------+
| db   | STOPPED |                 |                | CONTAINER (PRIVILEGED) | fedcba987654    |      |
+------+---------+-----------------+----------------+------------------------+-----------------+------+
| web  | RUNNING | 10.0.0.2 (eth0) | fd42::2 (eth0) | CONTAINER              | Debian bookworm | 4242 |
|      |         | 10.0.0.3 (eth0) |                |                        |                 |      |
+------+---------+-----------------+----------------+------------------------+-----------------+------+
";
        assert_eq!(table, expected);
    }

    #[test]
    fn json_keeps_the_api_objects() {
        let json = render(&golden(), Format::Json).unwrap_or_default();
        let back: Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, golden());
    }

    #[test]
    fn bad_answer_is_a_decode_error() {
        let err = render(&json!([{"name": 1}]), Format::Table).err();
        assert!(matches!(
            err,
            Some(Error::Client(crate::Error::Decode { .. }))
        ));
    }

    /// Three instances on a cluster: one running on node1, two in error, one of them on
    /// node2 (offline), the other on node1.
    fn clustered() -> Value {
        let instance = |name: &str, status: &str, code: u16, location: &str| {
            json!({"name": name, "status": status, "status_code": code,
                   "created_at": "2026-01-02T03:04:05Z", "type": "container",
                   "architecture": "x86_64", "location": location, "config": {},
                   "state": null})
        };
        json!([
            instance("web", "Running", 103, "node1"),
            instance("db", "Error", 112, "node2"),
            instance("broken", "Error", 112, "node1"),
        ])
    }

    fn member(name: &str, status: &str) -> Value {
        json!({"server_name": name, "url": format!("https://{name}:8443"), "database": true,
               "status": status, "message": "", "architecture": "x86_64", "roles": [],
               "failure_domain": "default", "description": "", "config": {}, "groups": []})
    }

    #[test]
    fn clustered_table_has_a_location_and_offline_members() {
        let members: Vec<ClusterMember> = serde_json::from_value(json!([
            member("node1", "Online"),
            member("node2", "Offline")
        ]))
        .unwrap_or_default();
        let cluster = Cluster::from_members(&members);
        assert_eq!(cluster.offline, BTreeSet::from(["node2".to_string()]));
        let instances: Vec<InstanceFull> = serde_json::from_value(clustered()).unwrap_or_default();
        let table = output::render_table(
            &CLUSTERED_HEADER,
            &rows_in(&instances, Some(&cluster)),
            Some(140),
        );
        let expected = "\
+--------+---------+------+------+-----------+-------+-----+----------+
| NAME   | STATE   | IPV4 | IPV6 | TYPE      | IMAGE | PID | LOCATION |
+--------+---------+------+------+-----------+-------+-----+----------+
| broken | ERROR   |      |      | CONTAINER |       |     | node1    |
+--------+---------+------+------+-----------+-------+-----+----------+
| db     | OFFLINE |      |      | CONTAINER |       |     | node2    |
+--------+---------+------+------+-----------+-------+-----+----------+
| web    | RUNNING |      |      | CONTAINER |       |     | node1    |
+--------+---------+------+------+-----------+-------+-----+----------+
";
        assert_eq!(table, expected);
        // Standalone rendering of the same answer: no LOCATION, ERROR as it is.
        let csv = render(&clustered(), Format::Csv).unwrap_or_default();
        assert_eq!(
            csv,
            "NAME,STATE,IPV4,IPV6,TYPE,IMAGE,PID\n\
             broken,ERROR,,,CONTAINER,,\n\
             db,ERROR,,,CONTAINER,,\n\
             web,RUNNING,,,CONTAINER,,\n"
        );
    }

    fn list_args(format: Format) -> ListArgs {
        ListArgs {
            remote: None,
            format,
        }
    }

    #[tokio::test]
    async fn a_clustered_server_is_listed_with_its_members() {
        use crate::test_support::{FakeServer, sync_envelope};
        let server = FakeServer::serve(vec![
            sync_envelope(json!({"environment": {"server_clustered": true,
                                                 "server_name": "node1"}})),
            sync_envelope(clustered()),
            sync_envelope(json!([
                member("node1", "Online"),
                member("node2", "Offline")
            ])),
        ]);
        let mut out = Vec::new();
        let listed = run(&server.client(), &list_args(Format::Csv), &mut out).await;
        assert!(listed.is_ok(), "{listed:?}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "NAME,STATE,IPV4,IPV6,TYPE,IMAGE,PID,LOCATION\n\
             broken,ERROR,,,CONTAINER,,,node1\n\
             db,OFFLINE,,,CONTAINER,,,node2\n\
             web,RUNNING,,,CONTAINER,,,node1\n"
        );
        let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(
            paths,
            [
                "/1.0",
                "/1.0/instances?recursion=2",
                "/1.0/cluster/members?recursion=1"
            ]
        );
    }

    #[tokio::test]
    async fn a_standalone_server_is_listed_as_before() {
        use crate::test_support::{FakeServer, sync_envelope};
        let server = FakeServer::serve(vec![
            sync_envelope(json!({"environment": {"server_clustered": false}})),
            sync_envelope(golden()),
        ]);
        let mut out = Vec::new();
        let listed = run(&server.client(), &list_args(Format::Csv), &mut out).await;
        assert!(listed.is_ok(), "{listed:?}");
        assert_eq!(
            Some(String::from_utf8_lossy(&out).into_owned()),
            render(&golden(), Format::Csv).ok()
        );
        let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/1.0", "/1.0/instances?recursion=2"]);
        // JSON asks for the instances alone.
        let server = FakeServer::serve(vec![sync_envelope(golden())]);
        let listed = run(&server.client(), &list_args(Format::Json), &mut Vec::new()).await;
        assert!(listed.is_ok(), "{listed:?}");
        assert_eq!(server.seen().len(), 1);
    }

    #[tokio::test]
    async fn members_are_not_asked_for_when_nothing_is_in_error() {
        use crate::test_support::{FakeServer, sync_envelope};
        let healthy = json!([clustered()[0].clone()]);
        let server = FakeServer::serve(vec![
            sync_envelope(json!({"environment": {"server_clustered": true}})),
            sync_envelope(healthy),
        ]);
        let mut out = Vec::new();
        let listed = run(&server.client(), &list_args(Format::Csv), &mut out).await;
        assert!(listed.is_ok(), "{listed:?}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "NAME,STATE,IPV4,IPV6,TYPE,IMAGE,PID,LOCATION\nweb,RUNNING,,,CONTAINER,,,node1\n"
        );
        assert_eq!(server.seen().len(), 2);
    }
}
