//! `GET /1.0/metadata/configuration` (`metadata_configuration`): the configuration keys
//! ctld understands, in Incus' shape (`configs.<entity>.<group>.keys[]`), so web UIs show
//! help and types for exactly what works here.

use axum::response::Response;
use serde_json::{Map, Value, json};

use super::sync;

/// `(entity, group, key, type, short description)`.
const KEYS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "instance",
        "resource-limits",
        "limits.cpu",
        "string",
        "Number of CPUs, or a list/range of CPU ids",
    ),
    (
        "instance",
        "resource-limits",
        "limits.cpu.allowance",
        "string",
        "CPU time: a share (50%) or a quota (25ms/100ms)",
    ),
    (
        "instance",
        "resource-limits",
        "limits.cpu.priority",
        "integer",
        "CPU scheduling priority, 0 to 10",
    ),
    (
        "instance",
        "resource-limits",
        "limits.memory",
        "string",
        "Memory limit, in bytes (256MiB) or % of the host",
    ),
    (
        "instance",
        "resource-limits",
        "limits.memory.enforce",
        "string",
        "hard or soft",
    ),
    (
        "instance",
        "resource-limits",
        "limits.memory.swap",
        "bool",
        "Whether the instance may swap",
    ),
    (
        "instance",
        "resource-limits",
        "limits.processes",
        "integer",
        "Maximum number of processes",
    ),
    (
        "instance",
        "resource-limits",
        "limits.disk.priority",
        "integer",
        "Disk I/O priority, 0 to 10",
    ),
    (
        "instance",
        "boot",
        "boot.autostart",
        "bool",
        "Start the instance when the daemon starts",
    ),
    (
        "instance",
        "boot",
        "boot.autostart.priority",
        "integer",
        "Order of autostart (highest first)",
    ),
    (
        "instance",
        "boot",
        "boot.autostart.delay",
        "integer",
        "Seconds to wait after starting it",
    ),
    (
        "instance",
        "boot",
        "boot.stop.priority",
        "integer",
        "Order of shutdown (highest first)",
    ),
    (
        "instance",
        "boot",
        "boot.stop.signal",
        "string",
        "Signal sent to init to stop it",
    ),
    (
        "instance",
        "raw",
        "raw.init",
        "string",
        "Command run as the instance's init",
    ),
    (
        "instance",
        "raw",
        "raw.idmap",
        "blob",
        "Extra id mappings (uid/gid/both HOST CONTAINER)",
    ),
    (
        "instance",
        "security",
        "security.privileged",
        "bool",
        "Run without a user namespace (unsafe)",
    ),
    (
        "instance",
        "security",
        "security.nesting",
        "bool",
        "Allow containers inside the instance",
    ),
    (
        "instance",
        "security",
        "security.idmap.isolated",
        "bool",
        "Use an id map of its own",
    ),
    (
        "instance",
        "security",
        "security.idmap.base",
        "integer",
        "First host id of the id map",
    ),
    (
        "instance",
        "security",
        "security.idmap.size",
        "integer",
        "Size of the id map",
    ),
    (
        "instance",
        "security",
        "security.capabilities.drop",
        "string",
        "Capabilities to drop",
    ),
    (
        "instance",
        "security",
        "security.syscalls.allow",
        "string",
        "Syscalls allowed (allow list)",
    ),
    (
        "instance",
        "security",
        "security.syscalls.deny",
        "string",
        "Syscalls denied",
    ),
    (
        "instance",
        "security",
        "security.syscalls.deny_compat",
        "bool",
        "Deny 32-bit syscalls",
    ),
    (
        "instance",
        "security",
        "security.syscalls.deny_default",
        "bool",
        "Use the default deny list",
    ),
    (
        "instance",
        "snapshots",
        "snapshots.schedule",
        "string",
        "Cron schedule of automatic snapshots",
    ),
    (
        "instance",
        "snapshots",
        "snapshots.schedule.stopped",
        "bool",
        "Also snapshot stopped instances",
    ),
    (
        "instance",
        "snapshots",
        "snapshots.pattern",
        "string",
        "Name pattern of automatic snapshots",
    ),
    (
        "instance",
        "snapshots",
        "snapshots.expiry",
        "string",
        "When automatic snapshots expire (1d 2w)",
    ),
    (
        "instance",
        "snapshots",
        "snapshots.expiry.manual",
        "string",
        "When manual snapshots expire",
    ),
    (
        "server",
        "core",
        "core.https_address",
        "string",
        "Address to serve the API on over HTTPS",
    ),
    (
        "server",
        "cluster",
        "cluster.offline_threshold",
        "integer",
        "Seconds without a heartbeat after which a cluster member is offline (10 or more)",
    ),
    (
        "server",
        "images",
        "images.remote_cache_expiry",
        "integer",
        "Days an unused cached image is kept",
    ),
    (
        "storage_btrfs",
        "common",
        "size",
        "string",
        "Size of the loop file",
    ),
    (
        "storage_btrfs",
        "common",
        "source",
        "string",
        "Block device, loop file or btrfs directory",
    ),
    (
        "storage_dir",
        "common",
        "source",
        "string",
        "Directory of the pool",
    ),
];

/// The whole document.
fn document() -> Value {
    let mut configs = Map::new();
    for (entity, group, key, kind, short) in KEYS {
        let groups = configs
            .entry(entity.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(groups) = groups.as_object_mut() else {
            continue;
        };
        let keys = groups
            .entry(group.to_string())
            .or_insert_with(|| json!({"keys": []}));
        if let Some(list) = keys["keys"].as_array_mut() {
            list.push(json!({ *key: {"type": kind, "shortdesc": short, "longdesc": ""} }));
        }
    }
    json!({ "configs": configs })
}

/// `GET /1.0/metadata/configuration`.
pub async fn configuration() -> Response {
    sync(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instance_key_ctld_knows_is_described() {
        let doc = document();
        let described: Vec<String> = doc["configs"]["instance"]
            .as_object()
            .into_iter()
            .flat_map(|groups| groups.values())
            .flat_map(|g| g["keys"].as_array().cloned().unwrap_or_default())
            .filter_map(|k| k.as_object().and_then(|o| o.keys().next().cloned()))
            .collect();
        for key in crate::instance::config::known_keys() {
            assert!(described.iter().any(|d| d == key), "{key} is not described");
        }
        assert_eq!(
            doc["configs"]["server"]["core"]["keys"][0]["core.https_address"]["type"],
            "string"
        );
    }
}
