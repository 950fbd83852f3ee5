//! `ctl start`, `stop`, `restart`, `pause` and `resume`: change instance state.

use clap::Args;
use ctl_api::{InstanceStatePut, StateAction};

use super::{Error, collect};
use crate::Client;

/// Arguments naming instances only.
#[derive(Debug, Clone, Args)]
pub struct NamesArgs {
    /// Instance names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `ctl stop` and `ctl restart`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Instance names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Kill the instance instead of asking it to shut down
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for a clean shutdown (-1: the server's default)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub timeout: i64,
}

/// The `PUT /1.0/instances/{name}/state` body.
pub fn request(action: StateAction, timeout: i64, force: bool) -> InstanceStatePut {
    InstanceStatePut {
        action,
        timeout,
        force,
        stateful: false,
    }
}

/// Apply `action` to every instance in `names`, waiting for each; failures are collected
/// and reported together.
pub async fn run(
    client: &Client,
    names: &[String],
    action: StateAction,
    timeout: i64,
    force: bool,
) -> Result<(), Error> {
    let body = request(action, timeout, force);
    let mut failures = Vec::new();
    for name in names {
        if let Err(e) = change(client, name, &body).await {
            failures.push((name.clone(), e));
        }
    }
    collect(names.len(), failures)
}

/// Change one instance's state and wait for the operation.
pub async fn change(
    client: &Client,
    name: &str,
    body: &InstanceStatePut,
) -> Result<(), crate::Error> {
    let operation = client.update_instance_state(name, body).await?;
    client.wait_operation(&operation.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_body_matches_the_api() {
        let body = serde_json::to_value(request(StateAction::Stop, -1, true)).unwrap_or_default();
        assert_eq!(
            body,
            json!({"action": "stop", "timeout": -1, "force": true, "stateful": false})
        );
        let body =
            serde_json::to_value(request(StateAction::Unfreeze, 5, false)).unwrap_or_default();
        assert_eq!(body["action"], json!("unfreeze"));
        assert_eq!(body["timeout"], json!(5));
    }
}
