//! `ctl copy` and `ctl move`/`ctl rename`: copies and renames of instances on one server.

use std::io::Write;

use clap::Args;
use ctl_api::{InstanceSource, InstancesPost};
use hyper::Method;
use serde_json::json;

use super::{Error, parse_key_value};
use crate::Client;
use crate::client::encode_segment;

/// Arguments of `ctl copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// Source instance, or snapshot as NAME/SNAPSHOT
    pub source: String,
    /// Name of the copy (the server picks one when omitted)
    pub target: Option<String>,
    /// Copy the instance without its snapshots
    #[arg(long)]
    pub instance_only: bool,
    /// Make the copy ephemeral (deleted when it stops)
    #[arg(short = 'e', long)]
    pub ephemeral: bool,
    /// Config keys of the copy as KEY=VALUE, over the source's (repeatable)
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// Profiles of the copy, in order (repeatable; default: the source's)
    #[arg(short = 'p', long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Apply no profile at all
    #[arg(long, conflicts_with = "profiles")]
    pub no_profiles: bool,
}

/// Arguments of `ctl move` (a rename on one server).
#[derive(Debug, Clone, Args)]
pub struct MoveArgs {
    /// Instance name
    pub name: String,
    /// New name
    pub new_name: String,
}

/// The `POST /1.0/instances` body of a copy.
pub fn request(args: &CopyArgs) -> InstancesPost {
    let profiles = if args.no_profiles {
        Some(Vec::new())
    } else if args.profiles.is_empty() {
        None
    } else {
        Some(args.profiles.clone())
    };
    InstancesPost {
        name: args.target.clone().unwrap_or_default(),
        source: InstanceSource {
            kind: "copy".into(),
            source: args.source.clone(),
            instance_only: args.instance_only,
            ..Default::default()
        },
        config: args.config.iter().cloned().collect(),
        profiles,
        ephemeral: args.ephemeral,
        ..Default::default()
    }
}

/// Copy an instance (or a snapshot) and report the copy's name if the server chose it.
pub async fn copy(client: &Client, args: &CopyArgs, out: &mut dyn Write) -> Result<(), Error> {
    let operation = client.create_instance(&request(args)).await?;
    let finished = client.wait_operation(&operation.id).await?;
    if args.target.is_none()
        && let Some(name) = super::create::created_instance(&finished)
            .or_else(|| super::create::created_instance(&operation))
    {
        writeln!(out, "Instance name is: {name}")?;
    }
    Ok(())
}

/// Rename a stopped instance.
pub async fn rename(client: &Client, args: &MoveArgs) -> Result<(), Error> {
    let path = format!("/1.0/instances/{}", encode_segment(&args.name));
    let body = json!({"name": args.new_name});
    client
        .run_operation(Method::POST, &path, Some(&body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_request_names_its_source_and_keeps_its_profiles_unless_told() {
        let args = CopyArgs {
            source: "c1/snap0".into(),
            target: Some("c2".into()),
            instance_only: true,
            ephemeral: true,
            config: vec![("limits.cpu".into(), "1".into())],
            profiles: vec![],
            no_profiles: false,
        };
        let r = request(&args);
        assert_eq!(r.source.kind, "copy");
        assert_eq!(r.source.source, "c1/snap0");
        assert!(r.source.instance_only && r.ephemeral);
        assert_eq!(r.profiles, None);
        assert_eq!(r.config.get("limits.cpu").map(String::as_str), Some("1"));
        let none = request(&CopyArgs {
            no_profiles: true,
            ..args
        });
        assert_eq!(none.profiles, Some(vec![]));
    }
}
