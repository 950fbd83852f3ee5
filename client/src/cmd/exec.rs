//! `ctl exec` and `ctl shell`: run a command in an instance, on a PTY when our stdin and
//! stdout are terminals (raw mode, window size followed on SIGWINCH, Ctrl-C reaches the
//! container) or on plain pipes otherwise (signals forwarded); the exit code passes through.

use std::path::PathBuf;

use clap::Args;
use ctl_api::InstanceExecPost;

use super::{Error, parse_key_value};
use crate::Client;
use crate::ws;

/// Arguments of `ctl exec`.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Instance name, as [REMOTE:]NAME
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
    /// Force a terminal (PTY) even when stdin/stdout are not terminals
    #[arg(
        short = 't',
        long = "force-interactive",
        conflicts_with = "force_noninteractive"
    )]
    pub force_interactive: bool,
    /// Don't allocate a terminal, even on a terminal
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

/// Whether to run on a PTY: forced either way, else when stdin and stdout are terminals.
pub fn interactive(args: &ExecArgs, stdin_tty: bool, stdout_tty: bool) -> bool {
    if args.force_interactive {
        return true;
    }
    !args.force_noninteractive && stdin_tty && stdout_tty
}

/// The `POST /1.0/instances/{name}/exec` body for these arguments.
pub fn request(args: &ExecArgs, interactive: bool, size: (u16, u16)) -> InstanceExecPost {
    let mut environment: std::collections::BTreeMap<String, String> =
        args.env.iter().cloned().collect();
    if interactive
        && !environment.contains_key("TERM")
        && let Ok(term) = std::env::var("TERM")
    {
        environment.insert("TERM".into(), term);
    }
    InstanceExecPost {
        command: args.command.clone(),
        environment,
        interactive,
        wait_for_websocket: true,
        record_output: false,
        width: u32::from(size.0),
        height: u32::from(size.1),
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
    use std::io::IsTerminal;
    let tty = interactive(
        args,
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    );
    let code = if tty {
        let size = terminal_size().unwrap_or((80, 24));
        // Raw mode only when stdin really is a terminal (-t on a pipe just asks for a PTY).
        let _raw = RawMode::enter();
        let events = forward_signals(true);
        ws::run_exec_interactive(
            client,
            &args.name,
            &request(args, true, size),
            ws::spawn_stdin_reader(),
            tokio::io::stdout(),
            events,
        )
        .await?
    } else {
        ws::run_exec(
            client,
            &args.name,
            &request(args, false, (0, 0)),
            ws::spawn_stdin_reader(),
            tokio::io::stdout(),
            tokio::io::stderr(),
            forward_signals(false),
        )
        .await?
    };
    Ok(process_exit_code(code))
}

/// `ctl shell NAME`: a login shell on a PTY, as `incus shell` does.
pub fn shell_args(name: &str) -> ExecArgs {
    ExecArgs {
        name: name.to_string(),
        env: Vec::new(),
        cwd: None,
        user: 0,
        group: 0,
        force_interactive: true,
        force_noninteractive: false,
        command: vec!["su".into(), "-l".into()],
    }
}

/// The terminal's (columns, rows), from stdout or stdin.
fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Stdin in raw mode until dropped (nothing happens when stdin is not a terminal).
pub(crate) struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        match tcsetattr(&stdin, OptionalActions::Now, &raw) {
            Ok(()) => RawMode(Some(saved)),
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// Signals to pass to the command: window changes become resizes on a terminal; SIGTERM,
/// SIGHUP (and, without a terminal, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2) are forwarded.
fn forward_signals(tty: bool) -> tokio::sync::mpsc::Receiver<ws::ControlEvent> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut kinds = vec![
        (SignalKind::terminate(), libc_sig::TERM),
        (SignalKind::hangup(), libc_sig::HUP),
    ];
    if !tty {
        kinds.extend([
            (SignalKind::interrupt(), libc_sig::INT),
            (SignalKind::quit(), libc_sig::QUIT),
            (SignalKind::user_defined1(), libc_sig::USR1),
            (SignalKind::user_defined2(), libc_sig::USR2),
        ]);
    }
    for (kind, number) in kinds {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(ws::ControlEvent::Signal(number)).await.is_err() {
                    break;
                }
            }
        });
    }
    if tty && let Ok(mut winch) = signal(SignalKind::window_change()) {
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                if let Some((c, r)) = terminal_size()
                    && tx.send(ws::ControlEvent::Resize(c, r)).await.is_err()
                {
                    break;
                }
            }
        });
    }
    rx
}

/// Linux signal numbers forwarded to the container (the same on every Linux architecture
/// we run on).
mod libc_sig {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mode_choice() {
        let mut a = shell_args("c1");
        assert!(interactive(&a, false, false), "-t forces a PTY");
        a.force_interactive = false;
        assert!(interactive(&a, true, true));
        assert!(!interactive(&a, true, false), "output to a pipe: no PTY");
        assert!(!interactive(&a, false, true));
        a.force_noninteractive = true;
        assert!(!interactive(&a, true, true));
        let body = serde_json::to_value(request(&a, true, (100, 30))).unwrap_or_default();
        assert_eq!(
            (body["interactive"].as_bool(), body["width"].as_u64()),
            (Some(true), Some(100))
        );
    }

    #[test]
    fn control_events_are_incus_messages() {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ws::ControlEvent::Resize(80, 24).to_json())
                .unwrap_or_default(),
            json!({"command": "window-resize", "args": {"width": "80", "height": "24"}})
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ws::ControlEvent::Signal(15).to_json())
                .unwrap_or_default(),
            json!({"command": "signal", "signal": 15})
        );
    }

    #[test]
    fn exec_body_matches_the_api() {
        let args = ExecArgs {
            name: "c1".into(),
            env: vec![("A".into(), "1".into())],
            cwd: Some("/root".into()),
            user: 1000,
            group: 100,
            force_interactive: false,
            force_noninteractive: false,
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        };
        let body = serde_json::to_value(request(&args, false, (0, 0))).unwrap_or_default();
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
