//! `ctl delete`: remove instances, stopping running ones first with `--force`.

use clap::Args;
use ctl_api::{StateAction, StatusCode};

use super::{Error, collect, state};
use crate::Client;

/// Arguments of `ctl delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Instance names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Stop running instances (forcefully) before deleting them
    #[arg(short, long)]
    pub force: bool,
}

/// Delete every named instance; failures are collected and reported together.
pub async fn run(client: &Client, args: &DeleteArgs) -> Result<(), Error> {
    let mut failures = Vec::new();
    for name in &args.names {
        if let Err(e) = delete_one(client, name, args.force).await {
            failures.push((name.clone(), e));
        }
    }
    collect(args.names.len(), failures)
}

async fn delete_one(client: &Client, name: &str, force: bool) -> Result<(), crate::Error> {
    if force {
        let instance = client.instance(name).await?;
        if instance.status_code != StatusCode::Stopped {
            let stop = state::request(StateAction::Stop, -1, true);
            if let Err(e) = state::change(client, name, &stop).await {
                // Stopped meanwhile by someone else (a `stop` sent at the same moment): the
                // delete goes on. Any other failure stands.
                if client.instance(name).await?.status_code != StatusCode::Stopped {
                    return Err(e);
                }
            }
        }
    }
    let operation = client.delete_instance(name).await?;
    client.wait_operation(&operation.id).await?;
    Ok(())
}
