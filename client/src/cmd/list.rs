//! `ctl list`: the instances with their state, as a table, CSV, JSON or YAML.

use std::io::Write;

use clap::Args;
use ctl_api::InstanceFull;
use serde_json::Value;

use super::Error;
use crate::Client;
use crate::output::{self, Format};

/// Columns of the table and CSV output.
pub const HEADER: [&str; 7] = ["NAME", "STATE", "IPV4", "IPV6", "TYPE", "IMAGE", "PID"];

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

/// One table row per instance, sorted by name.
pub fn rows(instances: &[InstanceFull]) -> Vec<Vec<String>> {
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
            vec![
                full.instance.name.clone(),
                full.instance.status.to_uppercase(),
                ipv4_addresses(full).join("\n"),
                ipv6_addresses(full).join("\n"),
                type_label(full),
                image_label(full),
                pid,
            ]
        })
        .collect()
}

/// Render the API answer of `GET /1.0/instances?recursion=2` in `format`.
pub fn render(raw: &Value, format: Format) -> Result<String, Error> {
    let rows = match format {
        Format::Table | Format::Csv => {
            let instances: Vec<InstanceFull> =
                serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                    what: "instance list".into(),
                    source,
                })?;
            rows(&instances)
        }
        Format::Json | Format::Yaml => Vec::new(),
    };
    Ok(output::render(format, &HEADER, &rows, raw)?)
}

/// List the instances.
pub async fn run(client: &Client, args: &ListArgs, out: &mut dyn Write) -> Result<(), Error> {
    let raw = client.instances_value().await?;
    out.write_all(render(&raw, args.format)?.as_bytes())?;
    Ok(())
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
}
