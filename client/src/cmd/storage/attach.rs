//! `ctl storage volume attach|detach|attach-profile|detach-profile`: a custom volume as a
//! disk device (`{type: disk, pool, source: VOLUME, path}`) of an instance or a profile.
//! The devices are changed by the same code as `ctl config device add|remove` and `ctl
//! profile device add|remove`.

use std::io::Write;

use clap::Args;
use ctl_api::instance::DeviceMap;

use super::super::device::{self, AddArgs, DeviceCommand, RemoveArgs};
use super::super::profile::{self, DeviceAddArgs, DeviceRemoveArgs, ProfileDeviceCommand};
use super::super::{Error, profile::ProfileCommand};
use super::volume::VolumeRef;
use crate::Client;

/// Arguments of `attach` and `attach-profile`.
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Instance (or profile) name
    pub target: String,
    /// [DEVICE] PATH: the device name (default: the volume's) and where the volume is
    /// mounted in the instance
    #[arg(num_args = 1..=2, required = true, value_name = "[DEVICE] PATH")]
    pub rest: Vec<String>,
}

/// Arguments of `detach` and `detach-profile`.
#[derive(Debug, Clone, Args)]
pub struct DetachArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Instance (or profile) name
    pub target: String,
    /// Device name (default: the one disk device of this volume)
    pub device: Option<String>,
}

/// The custom volume an attach or detach names.
fn custom_volume(arg: &str) -> Result<String, Error> {
    let volume = VolumeRef::parse_volume(arg, "attach and detach")?;
    if volume.kind != "custom" {
        return Err(Error::Usage(format!(
            "only custom volumes are attached, not {arg:?}"
        )));
    }
    Ok(volume.name)
}

/// The device name and the `KEY=VALUE`s of the disk device an attach adds.
pub fn disk_device(args: &AttachArgs) -> Result<(String, Vec<String>), Error> {
    let volume = custom_volume(&args.volume)?;
    let (device, path) = match args.rest.as_slice() {
        [path] => (volume.clone(), path),
        [device, path] => (device.clone(), path),
        _ => return Err(Error::Usage("expected [DEVICE] PATH".into())),
    };
    let values = vec![
        format!("pool={}", args.pool),
        format!("source={volume}"),
        format!("path={path}"),
    ];
    Ok((device, values))
}

/// The one disk device in `devices` that mounts `volume` of `pool`.
pub fn find_disk(
    devices: &DeviceMap,
    pool: &str,
    volume: &str,
    owner: &str,
) -> Result<String, Error> {
    let mut found = devices.iter().filter(|(_, d)| {
        let is = |k: &str, v: &str| d.get(k).map(String::as_str) == Some(v);
        is("type", "disk") && is("pool", pool) && is("source", volume)
    });
    match (found.next(), found.next()) {
        (Some((name, _)), None) => Ok(name.clone()),
        (None, _) => Err(Error::Usage(format!(
            "no device of \"{owner}\" uses the volume \"{pool}/{volume}\""
        ))),
        (Some(_), Some(_)) => Err(Error::Usage(format!(
            "more than one device of \"{owner}\" uses the volume \"{pool}/{volume}\"; name one"
        ))),
    }
}

/// Attach a volume to an instance, or with `to_profile` to a profile.
pub async fn attach(
    client: &Client,
    args: &AttachArgs,
    to_profile: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (device, values) = disk_device(args)?;
    if to_profile {
        let command = ProfileCommand::Device {
            command: ProfileDeviceCommand::Add(DeviceAddArgs {
                name: args.target.clone(),
                device,
                kind: "disk".into(),
                values,
            }),
        };
        profile::run(client, &command, false, out).await
    } else {
        let command = DeviceCommand::Add(AddArgs {
            name: args.target.clone(),
            device,
            kind: "disk".into(),
            values,
        });
        device::run(client, &command, out).await
    }
}

/// Detach a volume from an instance, or with `from_profile` from a profile.
pub async fn detach(
    client: &Client,
    args: &DetachArgs,
    from_profile: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let volume = custom_volume(&args.volume)?;
    if from_profile {
        let device = match &args.device {
            Some(d) => d.clone(),
            None => {
                let path = format!(
                    "/1.0/profiles/{}",
                    crate::client::encode_segment(&args.target)
                );
                let p: ctl_api::Profile = client.get(&path).await?;
                find_disk(&p.devices, &args.pool, &volume, &args.target)?
            }
        };
        let command = ProfileCommand::Device {
            command: ProfileDeviceCommand::Remove(DeviceRemoveArgs {
                name: args.target.clone(),
                devices: vec![device],
            }),
        };
        profile::run(client, &command, false, out).await
    } else {
        let instance = client.instance(&args.target).await?;
        let device = match &args.device {
            Some(d) => d.clone(),
            None => find_disk(&instance.devices, &args.pool, &volume, &args.target)?,
        };
        let command = DeviceCommand::Remove(RemoveArgs {
            name: args.target.clone(),
            devices: vec![device.clone()],
        });
        device::run_on(client, &args.target, &instance, &command, out).await?;
        writeln!(out, "Device {device} removed from {}", args.target)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run_against;
    use super::*;
    use crate::test_support::{Seen, sync_envelope};
    use serde_json::{Value, json};

    fn instance(devices: Value) -> Value {
        json!({"name": "c1", "status": "Stopped", "status_code": 102, "created_at": "",
               "type": "container", "architecture": "x86_64", "ephemeral": false,
               "stateful": false, "profiles": ["default"], "config": {}, "devices": devices,
               "expanded_config": {}, "expanded_devices": devices, "description": ""})
    }

    fn profile(devices: Value) -> Value {
        json!({"name": "web", "description": "", "config": {}, "devices": devices,
               "used_by": [], "project": "default"})
    }

    fn disk(pool: &str, source: &str, path: &str) -> Value {
        json!({"type": "disk", "pool": pool, "source": source, "path": path})
    }

    #[tokio::test]
    async fn attach_adds_a_disk_device_to_an_instance() {
        let eth0 = json!({"eth0": {"type": "nic", "network": "ctlbr0"}});
        let (result, out, seen) = run_against(
            &["volume", "attach", "default", "data", "c1", "/srv/data"],
            vec![
                sync_envelope(instance(eth0.clone())),
                sync_envelope(json!({})),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Device data added to c1\n");
        assert_eq!(
            seen,
            [
                Seen::new("GET", "/1.0/instances/c1", Value::Null),
                Seen::new(
                    "PUT",
                    "/1.0/instances/c1",
                    json!({"devices": {"eth0": eth0["eth0"],
                                       "data": disk("default", "data", "/srv/data")}})
                ),
            ]
        );
        // With a device name.
        let (_, out, seen) = run_against(
            &["volume", "attach", "default", "data", "c1", "store", "/srv"],
            vec![sync_envelope(instance(json!({}))), sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(out, "Device store added to c1\n");
        assert_eq!(
            seen[1].body,
            json!({"devices": {"store": disk("default", "data", "/srv")}})
        );
    }

    #[tokio::test]
    async fn detach_finds_the_volumes_device() {
        let devices = json!({"store": disk("default", "data", "/srv"),
                             "other": disk("fast", "data", "/x")});
        let (result, out, seen) = run_against(
            &["volume", "detach", "default", "data", "c1"],
            vec![sync_envelope(instance(devices)), sync_envelope(json!({}))],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Device store removed from c1\n");
        assert_eq!(
            seen,
            [
                Seen::new("GET", "/1.0/instances/c1", Value::Null),
                Seen::new(
                    "PUT",
                    "/1.0/instances/c1",
                    json!({"devices": {"other": disk("fast", "data", "/x")}})
                ),
            ]
        );
        let (result, _, seen) = run_against(
            &["volume", "detach", "default", "data", "c1"],
            vec![sync_envelope(instance(json!({})))],
        )
        .await;
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            Some("no device of \"c1\" uses the volume \"default/data\"")
        );
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test]
    async fn profiles_get_and_lose_the_device_too() {
        let (result, out, seen) = run_against(
            &[
                "volume",
                "attach-profile",
                "default",
                "data",
                "web",
                "/srv/data",
            ],
            vec![sync_envelope(profile(json!({}))), sync_envelope(json!({}))],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Device data added to web\n");
        assert_eq!(
            seen,
            [
                Seen::new("GET", "/1.0/profiles/web", Value::Null),
                Seen::new(
                    "PATCH",
                    "/1.0/profiles/web",
                    json!({"devices": {"data": disk("default", "data", "/srv/data")}})
                ),
            ]
        );
        let with_disk = profile(json!({"data": disk("default", "data", "/srv/data")}));
        let (result, out, seen) = run_against(
            &["volume", "detach-profile", "default", "data", "web"],
            vec![
                sync_envelope(with_disk.clone()),
                sync_envelope(with_disk),
                sync_envelope(json!({})),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Device data removed from web\n");
        assert_eq!(
            seen.last(),
            Some(&Seen::new(
                "PATCH",
                "/1.0/profiles/web",
                json!({"devices": {"data": {}}})
            ))
        );
    }

    #[test]
    fn arguments() {
        let args = |rest: &[&str]| AttachArgs {
            pool: "p".into(),
            volume: "custom/v".into(),
            target: "c1".into(),
            rest: rest.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            disk_device(&args(&["/mnt"])).ok(),
            Some((
                "v".to_string(),
                vec!["pool=p".to_string(), "source=v".into(), "path=/mnt".into()]
            ))
        );
        assert_eq!(
            disk_device(&args(&["d", "/mnt"])).ok().map(|d| d.0),
            Some("d".to_string())
        );
        let mut bad = args(&["/mnt"]);
        bad.volume = "container/c1".into();
        assert!(disk_device(&bad).is_err());
        let two: DeviceMap = serde_json::from_value(json!({
            "a": {"type": "disk", "pool": "p", "source": "v", "path": "/a"},
            "b": {"type": "disk", "pool": "p", "source": "v", "path": "/b"}
        }))
        .unwrap_or_default();
        assert!(find_disk(&two, "p", "v", "c1").is_err());
    }
}
