//! `ctl launch` and `ctl init`: create an instance from an image (and start it).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use clap::Args;
use ctl_api::instance::DeviceMap;
use ctl_api::{InstanceSource, InstancesPost, Operation};

use super::{Error, parse_key_value};
use crate::Client;
use crate::remotes::{Config, config_path};

/// Arguments of `ctl launch` and `ctl init`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Image alias or fingerprint (prefix of 12+ hex digits), optionally on an image server
    /// remote (`images:debian/12`; see `ctl remote list`); without one, the image of the
    /// server that makes the instance
    pub image: String,
    /// Instance name, as [REMOTE:]NAME (the server picks one when omitted; `REMOTE:` alone
    /// names only the server)
    pub name: Option<String>,
    /// Instance config as KEY=VALUE (repeatable)
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Profiles to apply, in order (repeatable; default: `default`)
    #[arg(short = 'p', long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Apply no profile at all
    #[arg(long, conflicts_with = "profiles")]
    pub no_profiles: bool,
    /// Give the instance an `eth0` on this managed network (instead of its profiles' one)
    #[arg(short = 'n', long = "network", value_name = "NETWORK")]
    pub network: Option<String>,
    /// Put the instance's root disk in this storage pool (a `root` disk device of its own,
    /// instead of its profiles' one; `-d root,size=...` changes it further)
    #[arg(short = 's', long = "storage", value_name = "POOL")]
    pub storage: Option<String>,
    /// Make the instance ephemeral (deleted when it stops)
    #[arg(short = 'e', long)]
    pub ephemeral: bool,
    /// Override a device its profiles give it: DEVICE,KEY=VALUE (repeatable)
    #[arg(short = 'd', long = "device", value_name = "DEVICE,KEY=VALUE", value_parser = parse_device_override)]
    pub device_overrides: Vec<(String, String, String)>,
    /// Cluster member to create the instance on (`POST /1.0/instances?target=MEMBER`)
    #[arg(long, value_name = "MEMBER")]
    pub target: Option<String>,
}

/// `DEVICE,KEY=VALUE` of `-d`.
fn parse_device_override(s: &str) -> Result<(String, String, String), String> {
    let (device, kv) = s
        .split_once(',')
        .ok_or_else(|| format!("\"{s}\": expected DEVICE,KEY=VALUE"))?;
    let (k, v) = parse_key_value(kv)?;
    if device.is_empty() {
        return Err(format!("\"{s}\": the device name is empty"));
    }
    Ok((device.to_string(), k, v))
}

/// Whether `s` looks like an image fingerprint or a prefix of one (12 to 64 hex digits).
pub fn is_fingerprint(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The image reference without a `local:` remote prefix.
pub fn strip_remote(image: &str) -> &str {
    image.strip_prefix("local:").unwrap_or(image)
}

/// The creation source for an image argument: a fingerprint when it looks like one, else an
/// alias.
pub fn image_source(image: &str) -> InstanceSource {
    let image = strip_remote(image);
    let mut source = InstanceSource {
        kind: "image".into(),
        ..Default::default()
    };
    if is_fingerprint(image) {
        source.fingerprint = image.to_ascii_lowercase();
    } else {
        source.alias = image.to_string();
    }
    source
}

/// The creation source for an image argument that may name a remote (`images:debian/12`):
/// a remote image is pulled by the daemon from the remote's server.
pub fn remote_image_source(image: &str, remotes: &Config) -> Result<InstanceSource, Error> {
    let (remote, name) = remotes
        .image_ref(image)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let Some(remote) = remote else {
        return Ok(image_source(name));
    };
    Ok(InstanceSource {
        kind: "image".into(),
        alias: name.to_string(),
        server: remote.addr.clone(),
        protocol: remote.protocol.clone(),
        mode: "pull".into(),
        ..Default::default()
    })
}

/// The `POST /1.0/instances` body for these arguments.
pub fn request(args: &CreateArgs, start: bool, remotes: &Config) -> Result<InstancesPost, Error> {
    let profiles = if args.no_profiles {
        Some(Vec::new())
    } else if args.profiles.is_empty() {
        None
    } else {
        Some(args.profiles.clone())
    };
    let device = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut devices = DeviceMap::new();
    if let Some(net) = &args.network {
        let nic = device(&[("type", "nic"), ("network", net), ("name", "eth0")]);
        devices.insert("eth0".to_string(), nic);
    }
    if let Some(pool) = &args.storage {
        let root = device(&[("type", "disk"), ("path", "/"), ("pool", pool)]);
        devices.insert("root".to_string(), root);
    }
    Ok(InstancesPost {
        name: args.name.clone().unwrap_or_default(),
        source: remote_image_source(&args.image, remotes)?,
        config: args.config.iter().cloned().collect(),
        profiles,
        devices,
        ephemeral: args.ephemeral,
        start,
        ..Default::default()
    })
}

/// Apply `-d DEVICE,KEY=VALUE` to `req`: a device the request has is changed; one only its
/// profiles give (looked up on the server, later profiles winning) is copied into the
/// request with the change, as `incus launch -d` does.
async fn apply_device_overrides(
    client: &Client,
    args: &CreateArgs,
    req: &mut InstancesPost,
) -> Result<(), Error> {
    for (device, key, value) in &args.device_overrides {
        if !req.devices.contains_key(device) {
            let profiles = req
                .profiles
                .clone()
                .unwrap_or_else(|| vec!["default".to_string()]);
            let mut found = None;
            for p in &profiles {
                let profile: ctl_api::Profile = client
                    .get(&format!(
                        "/1.0/profiles/{}",
                        crate::client::encode_segment(p)
                    ))
                    .await?;
                if let Some(d) = profile.devices.get(device) {
                    found = Some(d.clone());
                }
            }
            let Some(d) = found else {
                return Err(Error::Usage(format!(
                    "device \"{device}\" is in none of the instance's profiles ({})",
                    profiles.join(", ")
                )));
            };
            req.devices.insert(device.clone(), d);
        }
        if let Some(d) = req.devices.get_mut(device) {
            d.insert(key.clone(), value.clone());
        }
    }
    Ok(())
}

/// The instance an operation created: the name in its first `resources.instances` URL.
pub fn created_instance(operation: &Operation) -> Option<String> {
    let url = operation.resources.get("instances")?.first()?;
    let name = url.strip_prefix("/1.0/instances/").unwrap_or(url);
    let name = name.split(['?', '/']).next().unwrap_or(name);
    (!name.is_empty()).then(|| name.to_string())
}

/// Ask the server to create the instance (on `--target`'s member when given); returns the
/// creation operation, not waited for.
pub async fn begin(
    client: &Client,
    args: &CreateArgs,
    start: bool,
    remotes: &Config,
) -> Result<Operation, Error> {
    let mut req = request(args, start, remotes)?;
    apply_device_overrides(client, args, &mut req).await?;
    Ok(client
        .create_instance_on(&req, args.target.as_deref())
        .await?)
}

/// Create the instance, start it when `start`, and report its name if the server chose it.
pub async fn run(
    client: &Client,
    args: &CreateArgs,
    start: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let verb = if start { "Launching" } else { "Creating" };
    let remotes = Config::load(&config_path()).map_err(|e| Error::Usage(e.to_string()))?;
    let operation = begin(client, args, start, &remotes).await?;
    let early = args.name.clone().or_else(|| created_instance(&operation));
    match &early {
        Some(name) => writeln!(out, "{verb} {name}")?,
        None => writeln!(out, "{verb} the instance")?,
    }
    out.flush()?;
    let mut stderr = std::io::stderr();
    let tty = stderr
        .is_terminal()
        .then_some(&mut stderr as &mut dyn Write);
    let finished = crate::progress::wait(client, &operation.id, tty).await?;
    if args.name.is_none()
        && let Some(name) = created_instance(&finished).or(early)
    {
        writeln!(out, "Instance name is: {name}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_argument_picks_alias_or_fingerprint() {
        let fp = "a".repeat(64);
        let cases: &[(&str, &str, &str)] = &[
            ("busybox", "busybox", ""),
            ("local:debian/bookworm", "debian/bookworm", ""),
            ("deadbeef", "deadbeef", ""),
            ("0123456789AB", "", "0123456789ab"),
            (&fp, "", &fp),
            ("local:0123456789abcdef", "", "0123456789abcdef"),
            ("0123456789abcdeg", "0123456789abcdeg", ""),
        ];
        for (arg, alias, fingerprint) in cases {
            let source = image_source(arg);
            assert_eq!(source.kind, "image");
            assert_eq!(
                (source.alias.as_str(), source.fingerprint.as_str()),
                (*alias, *fingerprint),
                "{arg}"
            );
        }
        assert!(!is_fingerprint(&"a".repeat(65)));
    }

    #[test]
    fn device_overrides_parse() {
        assert_eq!(
            parse_device_override("eth0,ipv4.address=10.0.0.5"),
            Ok(("eth0".into(), "ipv4.address".into(), "10.0.0.5".into()))
        );
        assert!(parse_device_override("eth0").is_err());
        assert!(parse_device_override(",a=b").is_err());
    }

    #[test]
    fn request_body_matches_the_api() {
        let mut args = CreateArgs {
            image: "busybox".into(),
            name: None,
            config: vec![("limits.memory".into(), "64MiB".into())],
            profiles: Vec::new(),
            no_profiles: false,
            network: None,
            storage: None,
            ephemeral: false,
            device_overrides: Vec::new(),
            target: None,
        };
        let remotes = Config::default();
        let body = serde_json::to_value(request(&args, true, &remotes).ok()).unwrap_or_default();
        assert_eq!(body["name"], json!(""));
        assert_eq!(body["source"], json!({"type": "image", "alias": "busybox"}));
        assert_eq!(body["config"], json!({"limits.memory": "64MiB"}));
        assert_eq!(body["start"], json!(true));
        let body = serde_json::to_value(request(&args, false, &remotes).ok()).unwrap_or_default();
        assert_eq!(body["start"], json!(false));
        assert!(body.get("profiles").is_none_or(|p| p.is_null()), "{body}");
        // -n NET: an eth0 on it; -p: these profiles; --no-profiles: none.
        args.network = Some("lab".into());
        args.profiles = vec!["default".into(), "web".into()];
        let body = serde_json::to_value(request(&args, true, &remotes).ok()).unwrap_or_default();
        assert_eq!(
            body["devices"]["eth0"],
            json!({"type": "nic", "network": "lab", "name": "eth0"})
        );
        assert_eq!(body["profiles"], json!(["default", "web"]));
        args.profiles.clear();
        args.no_profiles = true;
        let body = serde_json::to_value(request(&args, true, &remotes).ok()).unwrap_or_default();
        assert_eq!(body["profiles"], json!([]));
    }

    fn parse_launch(args: &[&str]) -> CreateArgs {
        use clap::Parser;
        let argv = ["ctl", "launch"].into_iter().chain(args.iter().copied());
        match crate::cli::Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(crate::cli::Command::Launch(args)) => args,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn storage_pool_gives_a_root_disk_that_device_overrides_change() {
        let args = parse_launch(&["busybox", "c1", "-s", "fast", "-d", "root,size=64MiB"]);
        assert_eq!(args.storage.as_deref(), Some("fast"));
        let mut req = request(&args, true, &Config::default()).expect("request");
        assert_eq!(
            serde_json::to_value(&req.devices).unwrap_or_default(),
            json!({"root": {"type": "disk", "path": "/", "pool": "fast"}})
        );
        // The root disk is the request's own: no profile is read.
        let server = crate::test_support::FakeServer::serve(Vec::new());
        apply_device_overrides(&server.client(), &args, &mut req)
            .await
            .expect("overrides");
        assert!(server.seen().is_empty());
        assert_eq!(
            serde_json::to_value(&req.devices).unwrap_or_default(),
            json!({"root": {"type": "disk", "path": "/", "pool": "fast", "size": "64MiB"}})
        );
        let long = parse_launch(&["busybox", "--storage", "fast", "-n", "lab"]);
        let req = request(&long, false, &Config::default()).expect("request");
        assert_eq!(
            req.devices.keys().collect::<Vec<_>>(),
            ["eth0", "root"],
            "-n and -s together"
        );
    }

    #[tokio::test]
    async fn without_storage_a_root_override_copies_the_profiles_root() {
        use crate::test_support::{Seen, sync_envelope};
        let args = parse_launch(&["busybox", "c1", "-d", "root,size=64MiB"]);
        let mut req = request(&args, true, &Config::default()).expect("request");
        let default = json!({"name": "default", "description": "", "config": {},
            "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            "used_by": [], "project": "default"});
        let server = crate::test_support::FakeServer::serve(vec![sync_envelope(default)]);
        apply_device_overrides(&server.client(), &args, &mut req)
            .await
            .expect("overrides");
        assert_eq!(
            server.seen(),
            [Seen::new(
                "GET",
                "/1.0/profiles/default",
                serde_json::Value::Null
            )]
        );
        assert_eq!(
            serde_json::to_value(&req.devices).unwrap_or_default(),
            json!({"root": {"type": "disk", "path": "/", "pool": "default", "size": "64MiB"}})
        );
    }

    #[test]
    fn remote_image_arguments_pull_from_the_remote() {
        let mut remotes = Config::default();
        remotes
            .add("mirror", "http://127.0.0.1:9/", "simplestreams")
            .expect("add");
        let source = remote_image_source("mirror:debian/12", &remotes).expect("source");
        assert_eq!(
            serde_json::to_value(&source).unwrap_or_default(),
            json!({"type": "image", "alias": "debian/12", "server": "http://127.0.0.1:9",
                   "protocol": "simplestreams", "mode": "pull"})
        );
        let local = remote_image_source("local:busybox", &remotes).expect("local");
        assert_eq!(local.alias, "busybox");
        assert!(local.server.is_empty());
        assert!(remote_image_source("nope:x", &remotes).is_err());
    }

    #[tokio::test]
    async fn a_target_member_goes_in_the_query() {
        use crate::test_support::{FakeServer, async_envelope, operation};
        let args = parse_launch(&["busybox", "c1", "--target", "node2"]);
        assert_eq!(args.target.as_deref(), Some("node2"));
        let server = FakeServer::serve(vec![async_envelope(operation("op1", 103, ""))]);
        let started = begin(&server.client(), &args, true, &Config::default()).await;
        assert_eq!(started.map(|op| op.id).ok().as_deref(), Some("op1"));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/1.0/instances?target=node2")
        );
        assert_eq!(seen[0].body["name"], json!("c1"));
        // Without --target, the plain collection.
        let args = parse_launch(&["busybox", "c1"]);
        let server = FakeServer::serve(vec![async_envelope(operation("op2", 103, ""))]);
        let started = begin(&server.client(), &args, false, &Config::default()).await;
        assert!(started.is_ok(), "{started:?}");
        assert_eq!(server.seen()[0].path, "/1.0/instances");
    }

    #[test]
    fn created_name_comes_from_resources() {
        let op: Option<Operation> = serde_json::from_value(json!({
            "id": "x", "class": "task", "description": "", "created_at": "", "updated_at": "",
            "status": "Success", "status_code": 200, "may_cancel": false,
            "resources": {"instances": ["/1.0/instances/quiet-fox"]}
        }))
        .ok();
        assert_eq!(
            op.as_ref().and_then(created_instance).as_deref(),
            Some("quiet-fox")
        );
    }
}
