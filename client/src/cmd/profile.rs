//! `ctl profile …`: profiles, shaped like `incus profile`: list, show, create, copy, rename,
//! delete, edit, get, set, unset, `device add|remove|list|show`, and the profile lists of
//! instances (`assign`, `add`, `remove`).

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::instance::{ConfigMap, DeviceMap};
use ctl_api::{InstancePut, Profile, ProfilePost, ProfilePut, ProfilesPost};
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::config::{Scalar, edit, present, strings};
use super::{Error, parse_key_value};
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl profile` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfileCommand {
    /// List the profiles
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a profile as YAML
    Show(NameArgs),
    /// Create a profile
    Create(CreateArgs),
    /// Copy a profile: SOURCE TARGET
    #[command(visible_alias = "cp")]
    Copy(TwoArgs),
    /// Rename a profile: OLD NEW (the instances using it follow)
    #[command(visible_alias = "mv")]
    Rename(TwoArgs),
    /// Delete profiles (refused while an instance uses one, and for `default`)
    #[command(visible_alias = "rm")]
    Delete(NamesArgs),
    /// Edit a profile as YAML: read from stdin, or in $VISUAL/$EDITOR on a terminal
    Edit(NameArgs),
    /// Print the value of a profile config key: NAME KEY
    Get(GetArgs),
    /// Set profile config keys: NAME KEY=VALUE... or NAME KEY VALUE
    Set(SetArgs),
    /// Unset profile config keys: NAME KEY...
    Unset(UnsetArgs),
    /// Manage a profile's devices
    Device {
        #[command(subcommand)]
        command: ProfileDeviceCommand,
    },
    /// Set the profiles of an instance: INSTANCE p1,p2 (in order; "" for none)
    Assign(AssignArgs),
    /// Append a profile to an instance's profiles: INSTANCE PROFILE
    Add(InstanceProfileArgs),
    /// Remove a profile from an instance's profiles: INSTANCE PROFILE
    Remove(InstanceProfileArgs),
}

/// `ctl profile device` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ProfileDeviceCommand {
    /// Add a device: PROFILE DEVICE TYPE [KEY=VALUE...]
    Add(DeviceAddArgs),
    /// Remove devices: PROFILE DEVICE...
    #[command(visible_alias = "rm")]
    Remove(DeviceRemoveArgs),
    /// List a profile's devices
    #[command(visible_alias = "ls")]
    List(NameArgs),
    /// Show a profile's devices as YAML
    Show(NameArgs),
}

/// Arguments of `ctl profile list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// One profile.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// Profile name
    pub name: String,
}

/// Several profiles.
#[derive(Debug, Clone, Args)]
pub struct NamesArgs {
    /// Profile names
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Two profile names (copy, rename).
#[derive(Debug, Clone, Args)]
pub struct TwoArgs {
    /// Profile name
    pub from: String,
    /// New profile name
    pub to: String,
}

/// Arguments of `ctl profile create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Profile name
    pub name: String,
    /// KEY=VALUE config pairs
    #[arg(value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Description
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Arguments of `ctl profile get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Profile name
    pub name: String,
    /// Config key
    pub key: String,
}

/// Arguments of `ctl profile set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Profile name
    pub name: String,
    /// KEY=VALUE pairs, or one KEY VALUE
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

/// Arguments of `ctl profile unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// Profile name
    pub name: String,
    /// Config keys
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// Arguments of `ctl profile device add`.
#[derive(Debug, Clone, Args)]
pub struct DeviceAddArgs {
    /// Profile name
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

/// Arguments of `ctl profile device remove`.
#[derive(Debug, Clone, Args)]
pub struct DeviceRemoveArgs {
    /// Profile name
    pub name: String,
    /// Device names
    #[arg(required = true)]
    pub devices: Vec<String>,
}

/// Arguments of `ctl profile assign`.
#[derive(Debug, Clone, Args)]
pub struct AssignArgs {
    /// Instance name
    pub instance: String,
    /// Comma-separated profile names, in order ("" for none)
    pub profiles: String,
}

/// Arguments of `ctl profile add` and `ctl profile remove`.
#[derive(Debug, Clone, Args)]
pub struct InstanceProfileArgs {
    /// Instance name
    pub instance: String,
    /// Profile name
    pub profile: String,
}

/// Columns of `ctl profile list` (as `incus profile list`).
pub const HEADER: [&str; 3] = ["NAME", "DESCRIPTION", "USED BY"];
/// Columns of `ctl profile device list`.
pub const DEVICE_HEADER: [&str; 2] = ["NAME", "TYPE"];

/// Table rows of profiles, sorted by name.
pub fn rows(profiles: &[Profile]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Profile> = profiles.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .into_iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.description.clone(),
                p.used_by.len().to_string(),
            ]
        })
        .collect()
}

/// The config a `set` command line sets: `KEY=VALUE...`, or one `KEY VALUE` pair (as
/// `incus profile set p1 limits.memory 96MiB`).
pub fn set_values(values: &[String]) -> Result<ConfigMap, Error> {
    if let [key, value] = values
        && !key.contains('=')
    {
        return Ok(BTreeMap::from([(key.clone(), value.clone())]));
    }
    values
        .iter()
        .map(|a| parse_key_value(a).map_err(Error::Usage))
        .collect()
}

/// The profile list of `assign`: comma-separated names in order; empty for none.
pub fn assign_list(arg: &str) -> Result<Vec<String>, Error> {
    if arg.trim().is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = arg.split(',').map(|p| p.trim().to_string()).collect();
    if list.iter().any(String::is_empty) {
        return Err(Error::Usage(format!("empty profile name in {arg:?}")));
    }
    Ok(list)
}

/// What `ctl profile show` prints and `ctl profile edit` opens (Incus's fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileDocument {
    pub name: String,
    pub description: String,
    pub config: ConfigMap,
    pub devices: DeviceMap,
    pub used_by: Vec<String>,
    pub project: String,
}

impl ProfileDocument {
    /// The document of `p`.
    pub fn of(p: &Profile) -> Self {
        ProfileDocument {
            name: p.name.clone(),
            description: p.description.clone(),
            config: p.config.clone(),
            devices: p.devices.clone(),
            used_by: p.used_by.clone(),
            project: p.project.clone(),
        }
    }

    /// The document as YAML (ends with a newline).
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml_ng::to_string(self).map_err(|e| Error::Output(crate::output::Error::Yaml(e)))
    }
}

/// An edited profile document. `name`, `used_by` and `project` are shown for reference and
/// not sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditedProfile {
    #[serde(default, rename = "name")]
    _name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    config: Option<BTreeMap<String, Scalar>>,
    #[serde(default, deserialize_with = "present")]
    devices: Option<BTreeMap<String, BTreeMap<String, Scalar>>>,
    #[serde(default, rename = "used_by")]
    _used_by: Option<Vec<String>>,
    #[serde(default, rename = "project")]
    _project: Option<String>,
}

/// The `PUT /1.0/profiles/{name}` body of an edited document; an empty one is refused.
pub fn parse_edited(text: &str) -> Result<ProfilePut, Error> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    if value.is_null() {
        return Err(Error::Yaml(serde::de::Error::custom(
            "the document is empty",
        )));
    }
    let edited: EditedProfile = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    Ok(ProfilePut {
        description: edited.description,
        config: edited.config.map(strings),
        devices: edited
            .devices
            .map(|d| d.into_iter().map(|(k, v)| (k, strings(v))).collect()),
    })
}

fn profile_path(name: &str) -> String {
    format!("/1.0/profiles/{}", encode_segment(name))
}

async fn send(
    client: &Client,
    method: Method,
    path: &str,
    body: &impl Serialize,
) -> Result<(), Error> {
    let body = serde_json::to_value(body).map_err(|source| crate::Error::Decode {
        what: "request body".into(),
        source,
    })?;
    client.request(method, path, Some(&body)).await?;
    Ok(())
}

async fn put_edited(client: &Client, name: &str, text: &str) -> Result<(), Error> {
    let body = parse_edited(text)?;
    send(client, Method::PUT, &profile_path(name), &body).await
}

/// Change the profile list of `instance` with `change` (a PATCH of `profiles` only).
async fn change_profiles(
    client: &Client,
    instance: &str,
    change: impl FnOnce(Vec<String>) -> Result<Vec<String>, Error>,
) -> Result<Vec<String>, Error> {
    let current = client.instance(instance).await?.profiles;
    let profiles = change(current)?;
    let body = InstancePut {
        profiles: Some(profiles.clone()),
        ..Default::default()
    };
    client.patch_instance(instance, &body).await?;
    Ok(profiles)
}

/// Run a profile subcommand. `stdin_is_terminal` decides whether `edit` opens an editor or
/// reads the document from stdin.
pub async fn run(
    client: &Client,
    command: &ProfileCommand,
    stdin_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ProfileCommand::List(args) => {
            let raw = client.get_value("/1.0/profiles?recursion=1").await?;
            let profiles: Vec<Profile> = match args.format {
                Format::Table | Format::Csv => {
                    serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                        what: "profile list".into(),
                        source,
                    })?
                }
                _ => Vec::new(),
            };
            out.write_all(
                output::render(args.format, &HEADER, &rows(&profiles), &raw)?.as_bytes(),
            )?;
        }
        ProfileCommand::Show(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            out.write_all(ProfileDocument::of(&p).to_yaml()?.as_bytes())?;
        }
        ProfileCommand::Create(args) => {
            let body = ProfilesPost {
                name: args.name.clone(),
                description: args.description.clone(),
                config: args
                    .config
                    .iter()
                    .map(|a| parse_key_value(a).map_err(Error::Usage))
                    .collect::<Result<_, _>>()?,
                devices: DeviceMap::new(),
            };
            send(client, Method::POST, "/1.0/profiles", &body).await?;
            writeln!(out, "Profile {} created", args.name)?;
        }
        ProfileCommand::Copy(args) => {
            let p: Profile = client.get(&profile_path(&args.from)).await?;
            let body = ProfilesPost {
                name: args.to.clone(),
                description: p.description,
                config: p.config,
                devices: p.devices,
            };
            send(client, Method::POST, "/1.0/profiles", &body).await?;
        }
        ProfileCommand::Rename(args) => {
            let body = ProfilePost {
                name: args.to.clone(),
            };
            send(client, Method::POST, &profile_path(&args.from), &body).await?;
            writeln!(out, "Profile {} renamed to {}", args.from, args.to)?;
        }
        ProfileCommand::Delete(args) => {
            let mut failures = Vec::new();
            for name in &args.names {
                match client
                    .request(Method::DELETE, &profile_path(name), None)
                    .await
                {
                    Ok(_) => writeln!(out, "Profile {name} deleted")?,
                    Err(e) => failures.push((name.clone(), e)),
                }
            }
            if !failures.is_empty() {
                return Err(Error::Several(failures));
            }
        }
        ProfileCommand::Edit(args) => {
            if stdin_is_terminal {
                let p: Profile = client.get(&profile_path(&args.name)).await?;
                let text = ProfileDocument::of(&p).to_yaml()?;
                edit::in_editor(text, async |text: &str| {
                    put_edited(client, &args.name, text).await
                })
                .await?;
            } else {
                let mut text = String::new();
                tokio::io::stdin()
                    .read_to_string(&mut text)
                    .await
                    .map_err(|source| crate::Error::Io {
                        what: "cannot read the profile from stdin",
                        source,
                    })?;
                put_edited(client, &args.name, &text).await?;
            }
        }
        ProfileCommand::Get(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            writeln!(
                out,
                "{}",
                p.config.get(&args.key).map(String::as_str).unwrap_or("")
            )?;
        }
        ProfileCommand::Set(args) => {
            let body = ProfilePut {
                config: Some(set_values(&args.values)?),
                ..Default::default()
            };
            send(client, Method::PATCH, &profile_path(&args.name), &body).await?;
        }
        ProfileCommand::Unset(args) => {
            let body = ProfilePut {
                config: Some(
                    args.keys
                        .iter()
                        .map(|k| (k.clone(), String::new()))
                        .collect(),
                ),
                ..Default::default()
            };
            send(client, Method::PATCH, &profile_path(&args.name), &body).await?;
        }
        ProfileCommand::Device { command } => run_device(client, command, out).await?,
        ProfileCommand::Assign(args) => {
            let list = assign_list(&args.profiles)?;
            change_profiles(client, &args.instance, |_| Ok(list)).await?;
            writeln!(
                out,
                "Profiles {} applied to {}",
                args.profiles, args.instance
            )?;
        }
        ProfileCommand::Add(args) => {
            change_profiles(client, &args.instance, |mut list| {
                if list.contains(&args.profile) {
                    return Err(Error::Usage(format!(
                        "profile \"{}\" is already applied to \"{}\"",
                        args.profile, args.instance
                    )));
                }
                list.push(args.profile.clone());
                Ok(list)
            })
            .await?;
            writeln!(out, "Profile {} added to {}", args.profile, args.instance)?;
        }
        ProfileCommand::Remove(args) => {
            change_profiles(client, &args.instance, |mut list| {
                let before = list.len();
                list.retain(|p| p != &args.profile);
                if list.len() == before {
                    return Err(Error::Usage(format!(
                        "profile \"{}\" is not applied to \"{}\"",
                        args.profile, args.instance
                    )));
                }
                Ok(list)
            })
            .await?;
            writeln!(
                out,
                "Profile {} removed from {}",
                args.profile, args.instance
            )?;
        }
    }
    Ok(())
}

async fn run_device(
    client: &Client,
    command: &ProfileDeviceCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ProfileDeviceCommand::List(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            let rows: Vec<Vec<String>> = p
                .devices
                .iter()
                .map(|(name, d)| vec![name.clone(), d.get("type").cloned().unwrap_or_default()])
                .collect();
            out.write_all(output::render_table(&DEVICE_HEADER, &rows, None).as_bytes())?;
        }
        ProfileDeviceCommand::Show(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            let yaml = serde_yaml_ng::to_string(&p.devices)
                .map_err(|e| Error::Output(crate::output::Error::Yaml(e)))?;
            out.write_all(yaml.as_bytes())?;
        }
        ProfileDeviceCommand::Add(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            if p.devices.contains_key(&args.device) {
                return Err(Error::Usage(format!(
                    "device \"{}\" already exists in profile \"{}\"",
                    args.device, args.name
                )));
            }
            let mut device: BTreeMap<String, String> = args
                .values
                .iter()
                .map(|a| parse_key_value(a).map_err(Error::Usage))
                .collect::<Result<_, _>>()?;
            device.insert("type".into(), args.kind.clone());
            let body = ProfilePut {
                devices: Some(BTreeMap::from([(args.device.clone(), device)])),
                ..Default::default()
            };
            send(client, Method::PATCH, &profile_path(&args.name), &body).await?;
            writeln!(out, "Device {} added to {}", args.device, args.name)?;
        }
        ProfileDeviceCommand::Remove(args) => {
            let p: Profile = client.get(&profile_path(&args.name)).await?;
            if let Some(d) = args.devices.iter().find(|d| !p.devices.contains_key(*d)) {
                return Err(Error::Usage(format!(
                    "device \"{d}\" not found in profile \"{}\"",
                    args.name
                )));
            }
            // An empty device entry removes it (PATCH).
            let body = ProfilePut {
                devices: Some(
                    args.devices
                        .iter()
                        .map(|d| (d.clone(), BTreeMap::new()))
                        .collect(),
                ),
                ..Default::default()
            };
            send(client, Method::PATCH, &profile_path(&args.name), &body).await?;
            for d in &args.devices {
                writeln!(out, "Device {d} removed from {}", args.name)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_takes_pairs_or_one_key_and_value() {
        let v = |a: &[&str]| set_values(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&["limits.memory", "96MiB"]).ok(),
            Some(BTreeMap::from([("limits.memory".into(), "96MiB".into())]))
        );
        assert_eq!(
            v(&["a=1", "b="]).ok(),
            Some(BTreeMap::from([
                ("a".into(), "1".into()),
                ("b".into(), String::new())
            ]))
        );
        assert!(v(&["a", "b", "c"]).is_err());
    }

    #[test]
    fn assign_lists_keep_their_order() {
        assert_eq!(
            assign_list("default,p1").ok(),
            Some(vec!["default".to_string(), "p1".to_string()])
        );
        assert_eq!(assign_list("").ok(), Some(vec![]));
        assert!(assign_list("a,,b").is_err());
    }

    #[test]
    fn show_then_edit_round_trips_into_the_put_body() -> Result<(), Error> {
        let p = Profile {
            name: "p1".into(),
            description: "small".into(),
            config: BTreeMap::from([("limits.memory".into(), "64MiB".into())]),
            devices: BTreeMap::from([(
                "eth0".into(),
                BTreeMap::from([
                    ("type".into(), "nic".into()),
                    ("network".into(), "ctlbr0".into()),
                ]),
            )]),
            used_by: vec!["/1.0/instances/c1".into()],
            project: "default".into(),
        };
        let yaml = ProfileDocument::of(&p).to_yaml()?;
        let put = parse_edited(&yaml)?;
        assert_eq!(put.description.as_deref(), Some("small"));
        assert_eq!(put.config, Some(p.config.clone()));
        assert_eq!(put.devices, Some(p.devices.clone()));
        // Numbers are read as the strings the API wants; unknown fields are refused.
        let put = parse_edited("config:\n  limits.processes: 100\n")?;
        assert_eq!(
            put.config.and_then(|c| c.get("limits.processes").cloned()),
            Some("100".into())
        );
        assert!(parse_edited("confg: {}\n").is_err());
        assert!(parse_edited("").is_err());
        Ok(())
    }

    #[test]
    fn list_rows() {
        let p = |name: &str, used: usize| Profile {
            name: name.into(),
            description: format!("{name} profile"),
            used_by: vec!["/1.0/instances/x".into(); used],
            ..Default::default()
        };
        assert_eq!(
            rows(&[p("p2", 0), p("default", 2)]),
            [
                vec!["default", "default profile", "2"],
                vec!["p2", "p2 profile", "0"]
            ]
        );
    }
}
