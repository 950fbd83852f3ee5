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
    /// Cluster member to put the copy on (`POST /1.0/instances?target=MEMBER`)
    #[arg(long = "target", value_name = "MEMBER")]
    pub member: Option<String>,
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
    let operation = client
        .create_instance_on(&request(args), args.member.as_deref())
        .await?;
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
            member: None,
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

    #[tokio::test]
    async fn a_copy_goes_to_the_target_member() {
        use crate::test_support::{FakeServer, async_envelope, operation, sync_envelope};
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["ctl", "copy", "c1", "c2", "--target", "node3"]);
        let Ok(crate::cli::Command::Copy(args)) = cli.map(|c| c.command) else {
            panic!("copy --target did not parse");
        };
        assert_eq!(
            (args.target.as_deref(), args.member.as_deref()),
            (Some("c2"), Some("node3"))
        );
        let server = FakeServer::serve(vec![
            async_envelope(operation("op1", 103, "")),
            sync_envelope(operation("op1", 200, "")),
        ]);
        let copied = copy(&server.client(), &args, &mut Vec::new()).await;
        assert!(copied.is_ok(), "{copied:?}");
        let seen = server.seen();
        assert_eq!(seen[0].path, "/1.0/instances?target=node3");
        assert_eq!(seen[0].body["source"]["source"], serde_json::json!("c1"));
        assert_eq!(seen[1].path, "/1.0/operations/op1/wait?timeout=-1");
    }
}
