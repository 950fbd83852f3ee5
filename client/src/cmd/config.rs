//! `ctl config show|get|set|unset|edit`: an instance's editable configuration, Incus style;
//! with no instance named, the server's config ([`server`]); `ctl config trust` the
//! server's trust store ([`trust`]).
//!
//! `show` prints the [`ctl_api::InstancePut`] fields of an instance as a YAML document; `set`
//! and `unset` merge into its config with `PATCH` (an empty value unsets a key); `edit`
//! ([`edit`]) sends an edited document back with `PUT`. This module owns the document: how it
//! is printed and how an edited one is read back into a request body.

pub mod edit;
pub mod server;
pub mod trust;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::instance::{ConfigMap, DeviceMap};
use ctl_api::{Instance, InstancePut};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::{Error, parse_key_value};
use crate::Client;

/// `ctl config` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Show an instance's configuration as YAML: [REMOTE:]NAME (the server's with no NAME)
    Show(ShowArgs),
    /// Print the value of one config key (an empty line when it is unset):
    /// [REMOTE:]NAME KEY, or KEY for the server
    Get(GetArgs),
    /// Set config keys: [REMOTE:]NAME KEY=VALUE... (or KEY VALUE); without NAME (KEY=VALUE...,
    /// KEY VALUE, REMOTE: KEY VALUE) the server's keys, such as core.https_address
    Set(SetArgs),
    /// Unset config keys: [REMOTE:]NAME KEY..., or KEY for the server
    Unset(UnsetArgs),
    /// Edit the configuration as YAML: read from stdin, or in $VISUAL/$EDITOR on a terminal
    Edit(EditArgs),
    /// Manage the instance's devices (NICs)
    Device {
        #[command(subcommand)]
        command: super::device::DeviceCommand,
    },
    /// Manage the clients the server trusts (certificates and join tokens)
    Trust {
        #[command(subcommand)]
        command: trust::TrustCommand,
    },
}

/// Arguments of `ctl config show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// Instance name, as [REMOTE:]NAME (none, or REMOTE:, for the server's config)
    pub name: Option<String>,
    /// Show the expanded configuration (with profiles applied)
    #[arg(short, long)]
    pub expanded: bool,
}

/// Arguments of `ctl config get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Instance name, as [REMOTE:]NAME (REMOTE: for the server), or the server's KEY
    pub name: String,
    /// Config key
    pub key: Option<String>,
    /// Read the expanded configuration (with profiles applied)
    #[arg(short, long)]
    pub expanded: bool,
}

/// Arguments of `ctl config set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Instance name, as [REMOTE:]NAME (REMOTE: for the server), or the server's first
    /// KEY=VALUE or KEY
    pub name: String,
    /// KEY=VALUE pairs, or one KEY and its VALUE
    #[arg(value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

/// Arguments of `ctl config unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// Instance name, as [REMOTE:]NAME (REMOTE: for the server), or the server's KEY
    pub name: String,
    /// Config keys
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,
}

/// Arguments of `ctl config edit`.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// Instance name, as [REMOTE:]NAME
    pub name: String,
}

/// What `ctl config show` prints: the editable fields of an instance, in Incus's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigDocument {
    pub architecture: String,
    pub config: ConfigMap,
    pub devices: DeviceMap,
    pub ephemeral: bool,
    pub profiles: Vec<String>,
    pub stateful: bool,
    pub description: String,
}

impl ConfigDocument {
    /// The document of `instance`: its own config and devices, or with `expanded` the
    /// expanded ones.
    pub fn of(instance: &Instance, expanded: bool) -> Self {
        let (config, devices) = if expanded {
            (&instance.expanded_config, &instance.expanded_devices)
        } else {
            (&instance.config, &instance.devices)
        };
        ConfigDocument {
            architecture: instance.architecture.clone(),
            config: config.clone(),
            devices: devices.clone(),
            ephemeral: instance.ephemeral,
            profiles: instance.profiles.clone(),
            stateful: instance.stateful,
            description: instance.description.clone(),
        }
    }

    /// The document as YAML (ends with a newline).
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml_ng::to_string(self).map_err(|e| Error::Output(crate::output::Error::Yaml(e)))
    }
}

/// An edited document as it is read back. Fields left out stay `None` and are not sent (the
/// server keeps them); a field present but empty (`config:`) reads as empty. Config and
/// device values may be any YAML scalar (`limits.processes: 100`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditedDocument {
    /// Shown for reference; the server does not change it, so it is not sent.
    #[serde(default, rename = "architecture")]
    _architecture: Option<String>,
    #[serde(default, deserialize_with = "present")]
    config: Option<BTreeMap<String, Scalar>>,
    #[serde(default, deserialize_with = "present")]
    devices: Option<BTreeMap<String, BTreeMap<String, Scalar>>>,
    #[serde(default)]
    ephemeral: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    profiles: Option<Vec<String>>,
    /// Shown for reference; the server does not change it, so it is not sent.
    #[serde(default, rename = "stateful")]
    _stateful: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    description: Option<String>,
}

/// A field that is present: `null` (as `config:` with nothing under it) reads as the default.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

/// A YAML scalar read as the string the API wants (`100` as `"100"`, `true` as `"true"`,
/// nothing as `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(String::new()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(String::new()))
    }
}

pub(crate) fn strings(map: BTreeMap<String, Scalar>) -> ConfigMap {
    map.into_iter().map(|(k, Scalar(v))| (k, v)).collect()
}

/// The `PUT /1.0/instances/{name}` body for an edited document: `config`, `devices`,
/// `description`, `ephemeral` and `profiles` as far as the document has them. `architecture`
/// and `stateful` are read but not sent. An empty document (or one of only comments) is
/// refused rather than sent as a no-op.
pub fn parse_edited(text: &str) -> Result<InstancePut, Error> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    if value.is_null() {
        return Err(Error::Yaml(serde::de::Error::custom(
            "the document is empty",
        )));
    }
    let edited: EditedDocument = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    Ok(InstancePut {
        architecture: None,
        config: edited.config.map(strings),
        devices: edited
            .devices
            .map(|devices| devices.into_iter().map(|(k, v)| (k, strings(v))).collect()),
        ephemeral: edited.ephemeral,
        profiles: edited.profiles,
        stateful: None,
        description: edited.description,
        restore: None,
    })
}

/// The config a `ctl config set` command line sets: every argument `KEY=VALUE` (the value
/// may contain `=`), or exactly `KEY VALUE` where the key has no `=` (Incus's older form).
pub fn set_values(values: &[String]) -> Result<ConfigMap, Error> {
    if values.is_empty() {
        return Err(Error::Usage(
            "nothing to set: give KEY=VALUE pairs or a KEY and its VALUE".into(),
        ));
    }
    if let [key, value] = values
        && !key.contains('=')
    {
        if key.is_empty() {
            return Err(Error::Usage("config key must not be empty".into()));
        }
        return Ok(ConfigMap::from([(key.clone(), value.clone())]));
    }
    values
        .iter()
        .map(|arg| parse_key_value(arg).map_err(Error::Usage))
        .collect()
}

/// The config a `ctl config unset` command line sends: every key with an empty value.
pub fn unset_values(keys: &[String]) -> Result<ConfigMap, Error> {
    keys.iter()
        .map(|key| {
            if key.is_empty() {
                Err(Error::Usage("config key must not be empty".into()))
            } else {
                Ok((key.clone(), String::new()))
            }
        })
        .collect()
}

/// The `PATCH /1.0/instances/{name}` body that merges `config`.
pub fn patch_body(config: ConfigMap) -> InstancePut {
    InstancePut {
        config: Some(config),
        ..Default::default()
    }
}

/// The value of `key` in the instance's config (or expanded config), empty when unset.
pub fn value_of<'a>(instance: &'a Instance, key: &str, expanded: bool) -> &'a str {
    let config = if expanded {
        &instance.expanded_config
    } else {
        &instance.config
    };
    config.get(key).map_or("", String::as_str)
}

/// Run a config subcommand. `stdin_is_terminal` decides whether `edit` opens an editor or
/// reads the document from stdin.
pub async fn run(
    client: &Client,
    command: &ConfigCommand,
    stdin_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ConfigCommand::Show(args) => match args.name.as_deref().filter(|n| !n.is_empty()) {
            None => server::show(client, out).await?,
            Some(name) => {
                let instance = client.instance(name).await?;
                let yaml = ConfigDocument::of(&instance, args.expanded).to_yaml()?;
                out.write_all(yaml.as_bytes())?;
            }
        },
        ConfigCommand::Get(args) => match &args.key {
            None => server::get(client, &args.name, out).await?,
            Some(key) if args.name.is_empty() => server::get(client, key, out).await?,
            Some(key) => {
                let instance = client.instance(&args.name).await?;
                writeln!(out, "{}", value_of(&instance, key, args.expanded))?;
            }
        },
        ConfigCommand::Set(args) => {
            if server::set_is_server(&args.name, &args.values) {
                let values = server::server_args(&args.name, &args.values);
                server::patch(client, set_values(&values)?).await?;
            } else {
                let body = patch_body(set_values(&args.values)?);
                client.patch_instance(&args.name, &body).await?;
            }
        }
        ConfigCommand::Unset(args) => {
            if server::unset_is_server(&args.name, &args.keys) {
                let keys = server::server_args(&args.name, &args.keys);
                server::patch(client, unset_values(&keys)?).await?;
            } else {
                let body = patch_body(unset_values(&args.keys)?);
                client.patch_instance(&args.name, &body).await?;
            }
        }
        ConfigCommand::Trust { command } => trust::run(client, command, out).await?,
        ConfigCommand::Device { command } => super::device::run(client, command, out).await?,
        ConfigCommand::Edit(args) => {
            if stdin_is_terminal {
                edit::interactive(client, &args.name).await?;
            } else {
                edit::from_stdin(client, &args.name).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{read_request, sync_envelope, write_response};
    use serde_json::{Value, json};
    use tokio::net::UnixListener;

    fn golden_instance() -> Instance {
        let instance = serde_json::from_value(json!({
            "name": "c1", "description": "web server", "status": "Running", "status_code": 103,
            "created_at": "2026-01-02T03:04:05Z", "type": "container", "architecture": "x86_64",
            "ephemeral": false, "stateful": false, "profiles": ["default"],
            "config": {"image.description": "Debian bookworm", "limits.memory": "64MiB",
                       "limits.processes": "100", "user.note": "a: b", "volatile.base_image": "abc"},
            "devices": {},
            "expanded_config": {"image.description": "Debian bookworm", "limits.memory": "64MiB",
                                "limits.cpu.allowance": "50%"},
            "expanded_devices": {"root": {"path": "/", "type": "disk"}}
        }));
        match instance {
            Ok(instance) => instance,
            Err(e) => panic!("golden instance does not decode: {e}"),
        }
    }

    #[test]
    fn show_prints_incus_fields_in_order() {
        let yaml = ConfigDocument::of(&golden_instance(), false).to_yaml().ok();
        assert_eq!(
            yaml.as_deref(),
            Some(
                "architecture: x86_64\n\
                 config:\n  image.description: Debian bookworm\n  limits.memory: 64MiB\n  \
                 limits.processes: '100'\n  user.note: 'a: b'\n  volatile.base_image: abc\n\
                 devices: {}\n\
                 ephemeral: false\n\
                 profiles:\n- default\n\
                 stateful: false\n\
                 description: web server\n"
            )
        );
    }

    #[test]
    fn show_expanded_uses_expanded_maps() {
        let doc = ConfigDocument::of(&golden_instance(), true);
        assert_eq!(
            doc.config.get("limits.cpu.allowance").map(String::as_str),
            Some("50%")
        );
        assert!(!doc.config.contains_key("volatile.base_image"));
        assert_eq!(
            doc.devices
                .get("root")
                .and_then(|d| d.get("type"))
                .map(String::as_str),
            Some("disk")
        );
    }

    #[test]
    fn show_then_edit_round_trips_into_the_put_body() {
        let instance = golden_instance();
        let yaml = ConfigDocument::of(&instance, false)
            .to_yaml()
            .unwrap_or_default();
        let put = parse_edited(&yaml);
        let Ok(put) = put else {
            panic!("show output does not parse back: {put:?}");
        };
        assert_eq!(put.config.as_ref(), Some(&instance.config));
        let body = serde_json::to_value(&put).unwrap_or_default();
        assert_eq!(
            body,
            json!({
                "config": {"image.description": "Debian bookworm", "limits.memory": "64MiB",
                           "limits.processes": "100", "user.note": "a: b",
                           "volatile.base_image": "abc"},
                "devices": {},
                "ephemeral": false,
                "profiles": ["default"],
                "description": "web server"
            })
        );
    }

    #[test]
    fn edited_documents() {
        // Scalars become strings, an empty `config:` is an empty map, missing fields are
        // not sent.
        let put = parse_edited(
            "config:\n  limits.processes: 100\n  user.flag: true\n  user.gone:\n\
             description:\nprofiles:\n",
        );
        let body = put.map(|p| serde_json::to_value(p).unwrap_or_default());
        assert_eq!(
            body.ok(),
            Some(json!({
                "config": {"limits.processes": "100", "user.flag": "true", "user.gone": ""},
                "profiles": [],
                "description": ""
            }))
        );
        let body = parse_edited("config:\n").map(|p| serde_json::to_value(p).unwrap_or_default());
        assert_eq!(body.ok(), Some(json!({"config": {}})));
        assert_eq!(
            parse_edited("").ok(),
            None,
            "an empty document is not a config"
        );

        // A typo is an error naming the field, not a silent no-op.
        let err = parse_edited("confg:\n  a: b\n").err();
        let text = err
            .as_ref()
            .map(|e| super::super::chain(e))
            .unwrap_or_default();
        assert!(matches!(err, Some(Error::Yaml(_))));
        assert!(text.contains("unknown field `confg`"), "{text}");
        assert!(parse_edited("config: [1, 2]\n").is_err());
        assert!(parse_edited("config:\n  a: {b: c}\n").is_err());
    }

    #[test]
    fn set_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let map = |pairs: &[(&str, &str)]| -> ConfigMap {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases: &[(&[&str], Option<ConfigMap>)] = &[
            (
                &["limits.memory=64MiB"],
                Some(map(&[("limits.memory", "64MiB")])),
            ),
            (
                &["a=1", "b=x=y", "c="],
                Some(map(&[("a", "1"), ("b", "x=y"), ("c", "")])),
            ),
            (
                &["raw.init", "/bin/sh -c a=b"],
                Some(map(&[("raw.init", "/bin/sh -c a=b")])),
            ),
            (&["user.x", ""], Some(map(&[("user.x", "")]))),
            (&["a=1", "b"], None),
            (&["a"], None),
            (&["a", "b", "c"], None),
            (&["=x"], None),
            (&["", "x"], None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                set_values(&args(input)).ok().as_ref(),
                expected.as_ref(),
                "{input:?}"
            );
        }
        let err = set_values(&args(&["novalue"])).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("expected KEY=VALUE, got \"novalue\""));
    }

    #[test]
    fn unset_sends_empty_values() {
        let keys = vec!["limits.memory".to_string(), "user.a".to_string()];
        let body = unset_values(&keys).map(patch_body);
        assert_eq!(
            body.map(|b| serde_json::to_value(b).unwrap_or_default())
                .ok(),
            Some(json!({"config": {"limits.memory": "", "user.a": ""}}))
        );
        assert!(unset_values(&[String::new()]).is_err());
    }

    #[test]
    fn get_reads_config_or_expanded() {
        let instance = golden_instance();
        assert_eq!(value_of(&instance, "limits.memory", false), "64MiB");
        assert_eq!(value_of(&instance, "limits.cpu.allowance", false), "");
        assert_eq!(value_of(&instance, "limits.cpu.allowance", true), "50%");
    }

    #[tokio::test]
    async fn set_sends_one_patch_with_every_key() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.ok()?;
            let (head, body) = read_request(&mut stream).await;
            write_response(&mut stream, "200 OK", &sync_envelope(json!({}))).await;
            Some((head, body))
        });

        let client = Client::from_dir(dir.path());
        let command = ConfigCommand::Set(SetArgs {
            name: "c 1".into(),
            values: vec!["limits.memory=128MiB".into(), "user.eq=a=b".into()],
        });
        let mut out = Vec::new();
        let result = run(&client, &command, false, &mut out).await;
        let seen = server.await.ok().flatten();
        let Some((head, body)) = seen else {
            panic!("the fake server saw no request");
        };

        assert!(result.is_ok(), "{result:?}");
        assert!(out.is_empty());
        assert!(
            head.starts_with("PATCH /1.0/instances/c%201 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(
            sent,
            json!({"config": {"limits.memory": "128MiB", "user.eq": "a=b"}})
        );
    }

    #[tokio::test]
    async fn set_reports_the_server_error() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let message = "invalid value \"banana\" for \"limits.memory\": not a size";
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.ok()?;
            let _ = read_request(&mut stream).await;
            let envelope = json!({"type": "error", "status": "", "status_code": 0,
                                  "operation": "", "error_code": 400, "error": message,
                                  "metadata": null});
            write_response(&mut stream, "400 Bad Request", &envelope).await;
            Some(())
        });
        let client = Client::from_dir(dir.path());
        let command = ConfigCommand::Set(SetArgs {
            name: "c1".into(),
            values: vec!["limits.memory".into(), "banana".into()],
        });
        let err = run(&client, &command, false, &mut Vec::new()).await.err();
        let _ = server.await;
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some(message));
    }
}
