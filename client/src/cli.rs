//! The `ctl` command line: clap definitions, which server a command addresses (the local
//! socket, or a remote over HTTPS: see [`crate::targets`]), and dispatch to [`crate::cmd`].

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use ctl_api::StateAction;

use crate::Client;
use crate::client::{DEFAULT_DIR, SOCKET_NAME};
use crate::cmd::{self, Error, config, create, delete, exec, image, info, list, state, top};
use crate::remotes::{Config, LOCAL, config_dir, config_path};
use crate::targets;

/// Manage system containers run by ctld.
#[derive(Debug, Parser)]
#[command(name = "ctl", version, propagate_version = true)]
pub struct Cli {
    /// ctld's state directory; the API socket (the `local` remote) is DIR/unix.socket
    /// [env: CTL_DIR, or CTL_SOCKET for the socket itself; default: /var/lib/ctld]
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create and start an instance from an image
    Launch(create::CreateArgs),
    /// Create an instance from an image without starting it
    Init(create::CreateArgs),
    /// Start instances
    Start(state::NamesArgs),
    /// Stop instances
    Stop(state::StopArgs),
    /// Restart instances
    Restart(state::StopArgs),
    /// Freeze instances
    #[command(visible_alias = "freeze")]
    Pause(state::NamesArgs),
    /// Unfreeze instances
    #[command(visible_alias = "unfreeze")]
    Resume(state::NamesArgs),
    /// Delete instances
    #[command(visible_alias = "rm")]
    Delete(delete::DeleteArgs),
    /// List instances
    #[command(visible_alias = "ls")]
    List(list::ListArgs),
    /// Show an instance's details and resource usage
    Info(info::InfoArgs),
    /// Show and change an instance's configuration
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Show the CPU, memory and process usage of every instance, refreshed
    Top(top::TopArgs),
    /// Run a command in an instance (on a PTY from a terminal; exits with the command's code)
    Exec(exec::ExecArgs),
    /// Attach to an instance's console (detach with Ctrl-a q), or show its log
    Console(cmd::console::ConsoleArgs),
    /// Open a login shell in an instance (`exec -t NAME -- su -l`)
    Shell {
        /// Instance name
        name: String,
    },
    /// Make an image of a stopped instance
    Publish(cmd::image_transfer::PublishArgs),
    /// Back an instance up into a tarball (Incus' backup format): NAME [FILE]
    Export(cmd::backup::ExportArgs),
    /// Create an instance from a backup tarball: FILE [NAME]
    Import(cmd::backup::ImportArgs),
    /// List, create and delete the backups an instance keeps on the server
    Backup {
        #[command(subcommand)]
        command: cmd::backup::BackupCommand,
    },
    /// Manage images
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Push, pull, delete and edit files in an instance
    File {
        #[command(subcommand)]
        command: cmd::file::FileCommand,
    },
    /// Manage the servers this client knows: ctld servers over HTTPS and image servers
    Remote {
        #[command(subcommand)]
        command: cmd::remote::RemoteCommand,
    },
    /// Take, list, delete and restore instance snapshots
    Snapshot {
        #[command(subcommand)]
        command: cmd::snapshot::SnapshotCommand,
    },
    /// Restore an instance to a snapshot: NAME SNAPSHOT (as `lxc restore`)
    Restore(cmd::snapshot::OneArgs),
    /// Copy an instance or a snapshot (NAME or NAME/SNAPSHOT) to a new instance
    #[command(visible_alias = "cp")]
    Copy(cmd::copy::CopyArgs),
    /// Rename a stopped instance: NAME NEW_NAME
    #[command(visible_alias = "mv", alias = "rename")]
    Move(cmd::copy::MoveArgs),
    /// Manage networks (bridges with addresses for the instances)
    Network {
        #[command(subcommand)]
        command: cmd::network::NetworkCommand,
    },
    /// Manage profiles (config and devices that instances apply, in order)
    Profile {
        #[command(subcommand)]
        command: cmd::profile::ProfileCommand,
    },
    /// Manage storage pools and volumes
    Storage {
        #[command(subcommand)]
        command: cmd::storage::StorageCommand,
    },
    /// Manage cluster members: enable clustering, add (a join token) and join, list, show,
    /// remove, evacuate and restore members
    Cluster {
        #[command(subcommand)]
        command: cmd::cluster::ClusterCommand,
    },
    /// Print the daemon's events (lifecycle, operations, log) as they happen
    Monitor(cmd::monitor::MonitorArgs),
    /// Print a single-use login link for the server's web UI: [REMOTE:]
    Ui {
        /// The server, as REMOTE: (default: the default remote)
        #[arg(value_name = "REMOTE:")]
        remote: Option<String>,
    },
    /// Show the client and server versions
    Version,
    /// Print a shell completion script (bash, zsh, fish): `source <(ctl completion bash)`
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// Where the API socket is: `--dir`, else `$CTL_SOCKET`, else `$CTL_DIR`, else the default.
pub fn socket_path(
    dir: Option<&Path>,
    env_socket: Option<OsString>,
    env_dir: Option<OsString>,
) -> PathBuf {
    let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty());
    if let Some(dir) = dir {
        return dir.join(SOCKET_NAME);
    }
    if let Some(socket) = non_empty(env_socket) {
        return PathBuf::from(socket);
    }
    non_empty(env_dir)
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
        .join(SOCKET_NAME)
}

impl Cli {
    /// The client for the local daemon this command line points at (reads
    /// `CTL_SOCKET`/`CTL_DIR`).
    pub fn client(&self) -> Client {
        Client::new(socket_path(
            self.dir.as_deref(),
            std::env::var_os("CTL_SOCKET"),
            std::env::var_os("CTL_DIR"),
        ))
    }

    /// The client for `remote`: `local` is the Unix socket, any other a ctld server in the
    /// client config over HTTPS.
    pub fn client_for(&self, remote: &str, remotes: &Config) -> Result<Client, Error> {
        if remote == LOCAL {
            return Ok(self.client());
        }
        Ok(Client::https(remotes.https_target(remote, &config_dir())?))
    }
}

/// Run a parsed command line, writing normal output to `out`. Returns the process exit code
/// (the command's own for `exec`, 0 otherwise).
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8, Error> {
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        // Into memory first: the generator panics on a failed write (a closed pipe).
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "ctl", &mut script);
        out.write_all(&script)?;
        return Ok(0);
    }
    if let Command::Remote { command } = &cli.command {
        let mut ask = cmd::remote::add::ask_on_terminal;
        let confirm = std::io::stdin()
            .is_terminal()
            .then_some(&mut ask as &mut cmd::remote::add::Confirm<'_>);
        cmd::remote::run(command, confirm, out).await?;
        out.flush()?;
        return Ok(0);
    }
    let remotes = Config::load(&config_path())?;
    let mut command = cli.command.clone();
    let remote = targets::take_remote(&mut command, remotes.default_name())?;
    let client = cli.client_for(&remote, &remotes)?;
    dispatch(&client, &command, out)
        .await
        .map_err(|e| not_authorized(&client, e))
}

/// A 403 from a remote becomes [`Error::NotAuthorized`], which says what to do about it.
fn not_authorized(client: &Client, error: Error) -> Error {
    match (client.remote_name(), error) {
        (Some(remote), Error::Client(crate::Error::Api { code: 403, message })) => {
            Error::NotAuthorized {
                remote: remote.to_string(),
                message,
            }
        }
        (_, error) => error,
    }
}

/// Run `command` against `client`.
async fn dispatch(client: &Client, command: &Command, out: &mut dyn Write) -> Result<u8, Error> {
    match command {
        Command::Launch(args) => create::run(client, args, true, out).await?,
        Command::Init(args) => create::run(client, args, false, out).await?,
        Command::Start(args) => {
            state::run(client, &args.names, StateAction::Start, -1, false).await?;
        }
        Command::Stop(args) => {
            let action = StateAction::Stop;
            state::run(client, &args.names, action, args.timeout, args.force).await?;
        }
        Command::Restart(args) => {
            let action = StateAction::Restart;
            state::run(client, &args.names, action, args.timeout, args.force).await?;
        }
        Command::Pause(args) => {
            state::run(client, &args.names, StateAction::Freeze, -1, false).await?;
        }
        Command::Resume(args) => {
            state::run(client, &args.names, StateAction::Unfreeze, -1, false).await?;
        }
        Command::Delete(args) => delete::run(client, args).await?,
        Command::List(args) => list::run(client, args, out).await?,
        Command::Info(args) => info::run(client, args, out).await?,
        Command::Config { command } => {
            let stdin_is_terminal = std::io::stdin().is_terminal();
            config::run(client, command, stdin_is_terminal, out).await?;
        }
        Command::Top(args) => {
            let stdout_is_terminal = std::io::stdout().is_terminal();
            top::run(client, args, stdout_is_terminal, out).await?;
        }
        Command::Exec(args) => {
            out.flush()?;
            return exec::run(client, args).await;
        }
        Command::Console(args) => cmd::console::run(client, args, out).await?,
        Command::Shell { name } => {
            out.flush()?;
            return exec::run(client, &exec::shell_args(name)).await;
        }
        Command::Publish(args) => {
            let fp = cmd::image_transfer::publish(client, args).await?;
            writeln!(out, "Instance published with fingerprint: {fp}")?;
        }
        Command::Export(args) => {
            let file = cmd::backup::export(client, args).await?;
            writeln!(out, "Backup exported to {}", file.display())?;
        }
        Command::Import(args) => {
            let name = cmd::backup::import(client, args).await?;
            writeln!(out, "Instance {name} imported")?;
        }
        Command::Backup { command } => cmd::backup::run(client, command, out).await?,
        Command::Image { command } => image::run(client, command, out).await?,
        Command::File { command } => {
            let stdin_is_terminal = std::io::stdin().is_terminal();
            cmd::file::run(client, command, stdin_is_terminal, out).await?;
        }
        Command::Monitor(args) => cmd::monitor::run(client, args, out).await?,
        Command::Ui { .. } => cmd::ui::run(client, out).await?,
        Command::Network { command } => cmd::network::run(client, command, out).await?,
        Command::Profile { command } => {
            let stdin_is_terminal = std::io::stdin().is_terminal();
            cmd::profile::run(client, command, stdin_is_terminal, out).await?;
        }
        Command::Storage { command } => {
            let stdin_is_terminal = std::io::stdin().is_terminal();
            cmd::storage::run(client, command, stdin_is_terminal, out).await?;
        }
        Command::Cluster { command } => {
            let mut ask = cmd::cluster::ask_on_terminal;
            let ask = std::io::stdin()
                .is_terminal()
                .then_some(&mut ask as &mut cmd::cluster::Ask<'_>);
            let mut stderr = std::io::stderr();
            let tty = stderr
                .is_terminal()
                .then_some(&mut stderr as &mut dyn Write);
            cmd::cluster::run(client, command, ask, tty, out).await?
        }
        Command::Snapshot { command } => cmd::snapshot::run(client, command, out).await?,
        Command::Restore(args) => {
            let command = cmd::snapshot::SnapshotCommand::Restore(args.clone());
            cmd::snapshot::run(client, &command, out).await?
        }
        Command::Copy(args) => cmd::copy::copy(client, args, out).await?,
        Command::Move(args) => cmd::copy::rename(client, args).await?,
        Command::Version => cmd::version::run(client, out).await?,
        // Answered in `run`, without a daemon.
        Command::Completion { .. } | Command::Remote { .. } => {}
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn launch_with_config() {
        let cli = parse(&[
            "launch", "busybox", "c1", "-c", "a=b", "--config", "x.y=1=2",
        ])
        .ok();
        let Some(Command::Launch(args)) = cli.map(|c| c.command) else {
            panic!("launch did not parse");
        };
        assert_eq!(args.image, "busybox");
        assert_eq!(args.name.as_deref(), Some("c1"));
        assert_eq!(
            args.config,
            vec![("a".into(), "b".into()), ("x.y".into(), "1=2".into())]
        );
        let cli = parse(&["init", "debian/bookworm"]).ok();
        let Some(Command::Init(args)) = cli.map(|c| c.command) else {
            panic!("init did not parse");
        };
        assert_eq!(args.name, None);
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        let err = parse(&["launch", "busybox", "-c", "novalue"]).err();
        let Some(err) = err else {
            panic!("-c novalue was accepted");
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains("expected KEY=VALUE"), "{text}");
        assert!(text.contains("novalue"), "{text}");
    }

    #[test]
    fn stop_flags() {
        let cli = parse(&["stop", "c1", "c2", "-f", "--timeout", "-1"]).ok();
        let Some(Command::Stop(args)) = cli.map(|c| c.command) else {
            panic!("stop did not parse");
        };
        assert_eq!(args.names, vec!["c1", "c2"]);
        assert!(args.force);
        assert_eq!(args.timeout, -1);
        let cli = parse(&["restart", "c1", "--timeout", "30"]).ok();
        let Some(Command::Restart(args)) = cli.map(|c| c.command) else {
            panic!("restart did not parse");
        };
        assert_eq!((args.force, args.timeout), (false, 30));
        assert!(parse(&["stop"]).is_err());
    }

    #[test]
    fn exec_takes_flags_then_the_command() {
        let cli = parse(&[
            "exec",
            "c1",
            "--env",
            "A=1",
            "--cwd",
            "/tmp",
            "--user",
            "1000",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ])
        .ok();
        let Some(Command::Exec(args)) = cli.map(|c| c.command) else {
            panic!("exec did not parse");
        };
        assert_eq!(args.name, "c1");
        assert_eq!(args.env, vec![("A".into(), "1".into())]);
        assert_eq!(args.cwd.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(args.user, 1000);
        assert_eq!(args.command, vec!["sh", "-c", "echo hi; exit 3"]);

        // Without `--` the command still starts at the first word after the name, and its
        // own flags stay its own.
        let cli = parse(&["exec", "c1", "ls", "-la", "--env", "X=1"]).ok();
        let Some(Command::Exec(args)) = cli.map(|c| c.command) else {
            panic!("exec without -- did not parse");
        };
        assert_eq!(args.command, vec!["ls", "-la", "--env", "X=1"]);
        assert!(args.env.is_empty());

        assert!(parse(&["exec", "c1"]).is_err());
        assert!(parse(&["exec", "c1", "--env", "oops", "--", "true"]).is_err());
    }

    #[test]
    fn formats_and_globals() {
        let cli = parse(&["list", "--format", "csv", "--dir", "/tmp/d"]).ok();
        let Some(cli) = cli else {
            panic!("list did not parse");
        };
        assert_eq!(cli.dir.as_deref(), Some(Path::new("/tmp/d")));
        let Command::List(args) = cli.command else {
            panic!("not list");
        };
        assert_eq!(args.format, Format::Csv);
        let cli = parse(&["image", "ls", "-f", "yaml"]).ok();
        assert!(matches!(
            cli.map(|c| c.command),
            Some(Command::Image {
                command: image::ImageCommand::List(image::ImageListArgs {
                    format: Format::Yaml
                })
            })
        ));
        assert!(parse(&["list", "--format", "xml"]).is_err());
    }

    #[test]
    fn config_and_top_parse() {
        let cli = parse(&["config", "set", "c1", "raw.init", "/bin/sh -c x=1"]).ok();
        let Some(Command::Config {
            command: config::ConfigCommand::Set(args),
        }) = cli.map(|c| c.command)
        else {
            panic!("config set did not parse");
        };
        assert_eq!(args.name, "c1");
        assert_eq!(args.values, vec!["raw.init", "/bin/sh -c x=1"]);
        // One word is the server form (`config set KEY=VALUE`, `config unset KEY`).
        assert!(parse(&["config", "set"]).is_err());
        assert!(parse(&["config", "unset"]).is_err());
        let cli = parse(&["config", "set", "core.https_address", "127.0.0.1:8443"]).ok();
        let Some(Command::Config {
            command: config::ConfigCommand::Set(args),
        }) = cli.map(|c| c.command)
        else {
            panic!("server config set did not parse");
        };
        assert!(config::server::set_is_server(&args.name, &args.values));
        let cli = parse(&["config", "show", "c1", "--expanded"]).ok();
        assert!(matches!(
            cli.map(|c| c.command),
            Some(Command::Config {
                command: config::ConfigCommand::Show(config::ShowArgs { expanded: true, .. })
            })
        ));

        let cli = parse(&["top"]).ok();
        let Some(Command::Top(args)) = cli.map(|c| c.command) else {
            panic!("top did not parse");
        };
        assert_eq!(args.refresh, std::time::Duration::from_secs(2));
        assert_eq!((args.count, args.format), (None, top::TopFormat::Table));
        let cli = parse(&["top", "--refresh", "0.5", "--count", "3", "-f", "csv"]).ok();
        let Some(Command::Top(args)) = cli.map(|c| c.command) else {
            panic!("top with flags did not parse");
        };
        assert_eq!(args.refresh, std::time::Duration::from_millis(500));
        assert_eq!((args.count, args.format), (Some(3), top::TopFormat::Csv));
        assert!(parse(&["top", "--count", "0"]).is_err());
        assert!(parse(&["top", "-f", "yaml"]).is_err());
    }

    #[test]
    fn monitor_flags() {
        use cmd::monitor::{MonitorFormat, MonitorType};
        let cli = parse(&["monitor"]).ok();
        let Some(Command::Monitor(args)) = cli.map(|c| c.command) else {
            panic!("monitor did not parse");
        };
        assert_eq!((args.types, args.format), (vec![], MonitorFormat::Pretty));
        let cli = parse(&["monitor", "--type=lifecycle", "--type=logging", "-fjson"]).ok();
        let Some(Command::Monitor(args)) = cli.map(|c| c.command) else {
            panic!("monitor with flags did not parse");
        };
        assert_eq!(args.types, [MonitorType::Lifecycle, MonitorType::Logging]);
        assert_eq!(args.format, MonitorFormat::Json);
        assert!(parse(&["monitor", "--type", "ovn"]).is_err());
        assert!(parse(&["monitor", "--format", "csv"]).is_err());
    }

    #[test]
    fn socket_resolution_order() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            socket_path(None, None, None),
            PathBuf::from("/var/lib/ctld/unix.socket")
        );
        assert_eq!(
            socket_path(None, None, os("/srv/ctld")),
            PathBuf::from("/srv/ctld/unix.socket")
        );
        assert_eq!(
            socket_path(None, os("/run/x.sock"), os("/srv/ctld")),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(
            socket_path(Some(Path::new("/d")), os("/run/x.sock"), None),
            PathBuf::from("/d/unix.socket")
        );
        assert_eq!(
            socket_path(None, os(""), None),
            PathBuf::from("/var/lib/ctld/unix.socket")
        );
    }
}
