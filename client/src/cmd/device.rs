//! `ctl config device add|list|show|remove|set`: an instance's devices, Incus style. Each
//! command reads the instance, changes its own device map and sends it back with `PUT`.

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::InstancePut;
use ctl_api::instance::DeviceMap;

use super::{Error, parse_key_value};
use crate::Client;

/// `ctl config device` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeviceCommand {
    /// Add a device: NAME DEVICE TYPE [KEY=VALUE...] (e.g. eth1 nic network=ctlbr0, or web
    /// proxy listen=tcp:0.0.0.0:8080 connect=tcp:127.0.0.1:80)
    Add(AddArgs),
    /// List the instance's own devices
    #[command(visible_alias = "ls")]
    List(InstanceArgs),
    /// Show the instance's own devices as YAML
    Show(InstanceArgs),
    /// Remove devices
    #[command(visible_alias = "rm")]
    Remove(RemoveArgs),
    /// Set device keys: NAME DEVICE KEY=VALUE... (a profile's device is copied first)
    Set(SetArgs),
}

/// One instance.
#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    /// Instance name
    pub name: String,
}

/// Arguments of `ctl config device add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// Instance name
    pub name: String,
    /// Device name
    pub device: String,
    /// Device type (`nic`, `proxy`)
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// KEY=VALUE pairs
    #[arg(value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

/// Arguments of `ctl config device remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// Instance name
    pub name: String,
    /// Device names
    #[arg(required = true)]
    pub devices: Vec<String>,
}

/// Arguments of `ctl config device set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Instance name
    pub name: String,
    /// Device name
    pub device: String,
    /// KEY=VALUE pairs (an empty value unsets the key)
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

fn key_values(values: &[String]) -> Result<Vec<(String, String)>, Error> {
    values
        .iter()
        .map(|a| parse_key_value(a).map_err(Error::Usage))
        .collect()
}

/// The device map after `command` (for the commands that change it).
pub fn apply(
    own: &DeviceMap,
    expanded: &DeviceMap,
    command: &DeviceCommand,
) -> Result<DeviceMap, Error> {
    let mut devices = own.clone();
    match command {
        DeviceCommand::Add(a) => {
            if devices.contains_key(&a.device) {
                return Err(Error::Usage(format!(
                    "device \"{}\" already exists on \"{}\"",
                    a.device, a.name
                )));
            }
            let mut dev: std::collections::BTreeMap<String, String> =
                key_values(&a.values)?.into_iter().collect();
            dev.insert("type".into(), a.kind.clone());
            devices.insert(a.device.clone(), dev);
        }
        DeviceCommand::Remove(r) => {
            for d in &r.devices {
                if devices.remove(d).is_none() {
                    let why = if expanded.contains_key(d) {
                        "comes from a profile"
                    } else {
                        "not found"
                    };
                    return Err(Error::Usage(format!("device \"{d}\" {why}")));
                }
            }
        }
        DeviceCommand::Set(s) => {
            let dev = match devices.get(&s.device).or_else(|| expanded.get(&s.device)) {
                Some(d) => d.clone(),
                None => return Err(Error::Usage(format!("device \"{}\" not found", s.device))),
            };
            let mut dev = dev;
            for (k, v) in key_values(&s.values)? {
                if v.is_empty() {
                    dev.remove(&k);
                } else {
                    dev.insert(k, v);
                }
            }
            devices.insert(s.device.clone(), dev);
        }
        DeviceCommand::List(_) | DeviceCommand::Show(_) => {}
    }
    Ok(devices)
}

/// Run a device subcommand.
pub async fn run(
    client: &Client,
    command: &DeviceCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let name = match command {
        DeviceCommand::Add(a) => &a.name,
        DeviceCommand::List(a) | DeviceCommand::Show(a) => &a.name,
        DeviceCommand::Remove(a) => &a.name,
        DeviceCommand::Set(a) => &a.name,
    };
    let instance = client.instance(name).await?;
    run_on(client, name, &instance, command, out).await
}

/// Run a device subcommand on an instance already read (`GET`), so a caller that had to
/// read it to choose the device does not read it twice.
pub async fn run_on(
    client: &Client,
    name: &str,
    instance: &ctl_api::Instance,
    command: &DeviceCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        DeviceCommand::List(_) => {
            for d in instance.devices.keys() {
                writeln!(out, "{d}")?;
            }
        }
        DeviceCommand::Show(_) => {
            let yaml = serde_yaml_ng::to_string(&instance.devices)
                .map_err(|e| Error::Output(crate::output::Error::Yaml(e)))?;
            out.write_all(yaml.as_bytes())?;
        }
        _ => {
            let devices = apply(&instance.devices, &instance.expanded_devices, command)?;
            let body = InstancePut {
                devices: Some(devices),
                ..Default::default()
            };
            client.replace_instance(name, &body).await?;
            if let DeviceCommand::Add(a) = command {
                writeln!(out, "Device {} added to {name}", a.device)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[(&str, &str)])]) -> DeviceMap {
        pairs
            .iter()
            .map(|(d, kv)| {
                (
                    d.to_string(),
                    kv.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn add_set_remove() {
        let own = map(&[]);
        let expanded = map(&[("eth0", &[("type", "nic"), ("network", "ctlbr0")])]);
        let add = DeviceCommand::Add(AddArgs {
            name: "c1".into(),
            device: "eth1".into(),
            kind: "nic".into(),
            values: vec!["network=n1".into(), "ipv4.address=10.0.0.5".into()],
        });
        let got = apply(&own, &expanded, &add).unwrap_or_default();
        assert_eq!(
            got,
            map(&[(
                "eth1",
                &[
                    ("type", "nic"),
                    ("network", "n1"),
                    ("ipv4.address", "10.0.0.5")
                ]
            )])
        );
        assert!(apply(&got, &expanded, &add).is_err(), "duplicate");
        let set = DeviceCommand::Set(SetArgs {
            name: "c1".into(),
            device: "eth0".into(),
            values: vec!["mtu=1400".into()],
        });
        let got2 = apply(&got, &expanded, &set).unwrap_or_default();
        assert_eq!(got2["eth0"]["network"], "ctlbr0", "copied from the profile");
        assert_eq!(got2["eth0"]["mtu"], "1400");
        let rm = DeviceCommand::Remove(RemoveArgs {
            name: "c1".into(),
            devices: vec!["eth1".into()],
        });
        assert!(
            !apply(&got2, &expanded, &rm)
                .unwrap_or_default()
                .contains_key("eth1")
        );
        let rm0 = DeviceCommand::Remove(RemoveArgs {
            name: "c1".into(),
            devices: vec!["eth0".into()],
        });
        assert!(apply(&own, &expanded, &rm0).is_err(), "a profile's device");
    }
}
