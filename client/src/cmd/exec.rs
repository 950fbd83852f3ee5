//! `ctl exec`: run a command in an instance, non-interactively, passing its exit code through.

use std::path::PathBuf;

use clap::Args;
use ctl_api::InstanceExecPost;

use super::{Error, parse_key_value};
use crate::Client;
use crate::ws;

/// Arguments of `ctl exec`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Instance name
    pub name: String,
    /// Environment variable as KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command inside the instance
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// User ID to run the command as
    #[arg(long, value_name = "UID", default_value_t = 0)]
    pub user: u32,
    /// Group ID to run the command as
    #[arg(long, value_name = "GID", default_value_t = 0)]
    pub group: u32,
    /// Don't allocate a terminal (the only mode for now: no PTY support yet)
    #[arg(short = 'T', long = "force-noninteractive")]
    pub force_noninteractive: bool,
    /// The command and its arguments (put them after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// The `POST /1.0/instances/{name}/exec` body for these arguments.
pub fn request(args: &ExecArgs) -> InstanceExecPost {
    InstanceExecPost {
        command: args.command.clone(),
        environment: args.env.iter().cloned().collect(),
        interactive: false,
        wait_for_websocket: true,
        record_output: false,
        width: 0,
        height: 0,
        user: args.user,
        group: args.group,
        cwd: args
            .cwd
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// A command's exit status as a process exit code (wrapped into 0..=255 like a shell does).
pub fn process_exit_code(code: i64) -> u8 {
    u8::try_from(code.rem_euclid(256)).unwrap_or(1)
}

/// Run the command with this process's stdin, stdout and stderr; returns its exit code.
pub async fn run(client: &Client, args: &ExecArgs) -> Result<u8, Error> {
    let code = ws::run_exec(
        client,
        &args.name,
        &request(args),
        ws::spawn_stdin_reader(),
        tokio::io::stdout(),
        tokio::io::stderr(),
    )
    .await?;
    Ok(process_exit_code(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exec_body_matches_the_api() {
        let args = ExecArgs {
            name: "c1".into(),
            env: vec![("A".into(), "1".into())],
            cwd: Some("/root".into()),
            user: 1000,
            group: 100,
            force_noninteractive: false,
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        };
        let body = serde_json::to_value(request(&args)).unwrap_or_default();
        assert_eq!(
            body,
            json!({"command": ["sh", "-c", "exit 3"], "environment": {"A": "1"},
                   "interactive": false, "wait-for-websocket": true, "record-output": false,
                   "width": 0, "height": 0, "user": 1000, "group": 100, "cwd": "/root"})
        );
    }

    #[test]
    fn exit_codes_wrap_like_a_shell() {
        assert_eq!(process_exit_code(0), 0);
        assert_eq!(process_exit_code(3), 3);
        assert_eq!(process_exit_code(137), 137);
        assert_eq!(process_exit_code(256), 0);
        assert_eq!(process_exit_code(-1), 255);
    }
}
