//! Which server a command line addresses. Instance arguments may carry a `REMOTE:` prefix
//! (`r1:c1`, `r1:c1/snap0`, `r1:c1/etc/hosts`; a bare `r1:` where a command takes just a
//! server); an argument without one addresses the default remote (`local`, the Unix socket,
//! unless `ctl remote switch` chose another). [`take_remote`] strips the prefixes so the
//! command modules see plain names, and returns the one remote the command runs against:
//! a command's arguments must all address the same server.
//!
//! Image arguments (`launch images:debian/12 r1:c1`) are left alone: an image remote names
//! where the image comes from, independent of where the instance goes. Instance names never
//! contain `:`, so the first `:` always ends a remote name.

use crate::cli::Command;
use crate::cmd::Error;
use crate::cmd::backup::BackupCommand;
use crate::cmd::cluster::ClusterCommand;
use crate::cmd::config::{ConfigCommand, server, trust::TrustCommand};
use crate::cmd::device::DeviceCommand;
use crate::cmd::file::FileCommand;
use crate::cmd::snapshot::SnapshotCommand;
use crate::remotes::split_remote;

/// The remote the arguments seen so far address.
struct Resolver<'a> {
    default: &'a str,
    /// The remote and the argument that named it first.
    chosen: Option<(String, String)>,
}

impl Resolver<'_> {
    fn choose(&mut self, remote: &str, arg: &str) -> Result<(), Error> {
        match &self.chosen {
            None => {
                self.chosen = Some((remote.to_string(), arg.to_string()));
                Ok(())
            }
            Some((chosen, _)) if chosen == remote => Ok(()),
            Some((chosen, first)) => Err(Error::Usage(format!(
                "{first} is on remote \"{chosen}\" but {arg} on \"{remote}\": one command \
                 works on one server"
            ))),
        }
    }

    /// An instance argument: strip its prefix; without one it addresses the default remote.
    fn strip(&mut self, arg: &mut String) -> Result<(), Error> {
        let (remote, rest) = split_remote(arg);
        let remote = remote.unwrap_or(self.default).to_string();
        let rest = rest.to_string();
        self.choose(&remote, arg)?;
        *arg = rest;
        Ok(())
    }

    fn strip_opt(&mut self, arg: &mut Option<String>) -> Result<(), Error> {
        if let Some(value) = arg {
            self.strip(value)?;
            if value.is_empty() {
                *arg = None;
            }
        }
        Ok(())
    }

    fn strip_all(&mut self, args: &mut [String]) -> Result<(), Error> {
        args.iter_mut().try_for_each(|a| self.strip(a))
    }

    /// A `[REMOTE:]` argument that names only a server: it must end with `:`.
    fn server_only(&mut self, arg: &mut Option<String>) -> Result<(), Error> {
        if let Some(value) = arg.take() {
            match value.strip_suffix(':') {
                Some(remote) if !remote.is_empty() && !remote.contains(':') => {
                    self.choose(remote, &value)?;
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "expected REMOTE: (a remote name and a colon), got \"{value}\""
                    )));
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> String {
        self.chosen
            .map_or_else(|| self.default.to_string(), |(remote, _)| remote)
    }
}

/// Strip the `REMOTE:` prefixes from `command`'s instance arguments and return the remote
/// it addresses (`default` when none is named).
pub fn take_remote(command: &mut Command, default: &str) -> Result<String, Error> {
    let mut r = Resolver {
        default,
        chosen: None,
    };
    match command {
        Command::Launch(args) | Command::Init(args) => {
            r.strip_opt(&mut args.name)?;
            local_image_for(&r, &args.image)?;
        }
        Command::Start(args) | Command::Pause(args) | Command::Resume(args) => {
            r.strip_all(&mut args.names)?
        }
        Command::Stop(args) | Command::Restart(args) => r.strip_all(&mut args.names)?,
        Command::Delete(args) => r.strip_all(&mut args.names)?,
        Command::List(args) => r.server_only(&mut args.remote)?,
        Command::Info(args) => r.strip_opt(&mut args.name)?,
        Command::Config { command } => config(&mut r, command)?,
        Command::Exec(args) => r.strip(&mut args.name)?,
        Command::Console(args) => r.strip(&mut args.name)?,
        Command::Shell { name } => r.strip(name)?,
        Command::Publish(args) => r.strip(&mut args.name)?,
        Command::Export(args) => r.strip(&mut args.name)?,
        Command::Import(args) => r.strip_opt(&mut args.name)?,
        Command::Backup { command } => match command {
            BackupCommand::List { name, .. }
            | BackupCommand::Create { name, .. }
            | BackupCommand::Delete { name, .. } => r.strip(name)?,
        },
        Command::File { command } => file(&mut r, command)?,
        Command::Snapshot { command } => snapshot(&mut r, command)?,
        Command::Restore(args) => r.strip(&mut args.name)?,
        Command::Copy(args) => {
            r.strip(&mut args.source)?;
            r.strip_opt(&mut args.target)?;
        }
        Command::Move(args) => {
            r.strip(&mut args.name)?;
            r.strip(&mut args.new_name)?;
        }
        Command::Cluster { command } => cluster(&mut r, command)?,
        Command::Monitor(args) => r.server_only(&mut args.remote)?,
        Command::Ui { remote } => r.server_only(remote)?,
        Command::Top(_)
        | Command::Image { .. }
        | Command::Remote { .. }
        | Command::Network { .. }
        | Command::Profile { .. }
        | Command::Storage { .. }
        | Command::Version
        | Command::Completion { .. } => {}
    }
    Ok(r.finish())
}

/// An image named `local:` is the local daemon's: a remote instance cannot be made from it
/// (images are not copied between ctld servers; an unprefixed image is looked up on the
/// server that makes the instance).
fn local_image_for(r: &Resolver<'_>, image: &str) -> Result<(), Error> {
    let remote = r
        .chosen
        .as_ref()
        .map_or(r.default, |(remote, _)| remote.as_str());
    if image.starts_with("local:") && remote != crate::remotes::LOCAL {
        return Err(Error::Usage(format!(
            "{image} is on this machine's daemon, the instance on remote \"{remote}\": images \
             are not copied between ctld servers (name an image {remote} has, or one on an \
             image server)"
        )));
    }
    Ok(())
}

fn config(r: &mut Resolver<'_>, command: &mut ConfigCommand) -> Result<(), Error> {
    match command {
        ConfigCommand::Show(args) => r.strip_opt(&mut args.name)?,
        ConfigCommand::Get(args) => {
            if !server::get_is_server(&args.name, args.key.as_deref()) {
                r.strip(&mut args.name)?;
            }
        }
        ConfigCommand::Set(args) => {
            if !server::set_is_server(&args.name, &args.values) {
                r.strip(&mut args.name)?;
            }
        }
        ConfigCommand::Unset(args) => {
            if !server::unset_is_server(&args.name, &args.keys) {
                r.strip(&mut args.name)?;
            }
        }
        ConfigCommand::Edit(args) => r.strip(&mut args.name)?,
        ConfigCommand::Device { command } => match command {
            DeviceCommand::Add(a) => r.strip(&mut a.name)?,
            DeviceCommand::List(a) | DeviceCommand::Show(a) => r.strip(&mut a.name)?,
            DeviceCommand::Remove(a) => r.strip(&mut a.name)?,
            DeviceCommand::Set(a) => r.strip(&mut a.name)?,
        },
        ConfigCommand::Trust { command } => match command {
            TrustCommand::Add(a) => r.strip(&mut a.name)?,
            TrustCommand::List(a) | TrustCommand::ListTokens(a) => r.server_only(&mut a.remote)?,
            TrustCommand::RevokeToken { name } => r.strip(name)?,
            TrustCommand::Remove { fingerprint } | TrustCommand::Show { fingerprint } => {
                r.strip(fingerprint)?
            }
            TrustCommand::AddCertificate(_) => {}
        },
    }
    Ok(())
}

/// Member names and tokens carry the prefix (`r1:node2`, `r1:TOKEN`: a join token is
/// base64, which has no `:`); `list` takes a bare `REMOTE:`.
fn cluster(r: &mut Resolver<'_>, command: &mut ClusterCommand) -> Result<(), Error> {
    match command {
        ClusterCommand::Enable(a) => r.strip(&mut a.name),
        ClusterCommand::Add(a) => r.strip(&mut a.name),
        ClusterCommand::Join(a) => r.strip(&mut a.token),
        ClusterCommand::List(a) => r.server_only(&mut a.remote),
        ClusterCommand::Show { name } => r.strip(name),
        ClusterCommand::Remove(a) => r.strip(&mut a.name),
        ClusterCommand::Evacuate(a) | ClusterCommand::Restore(a) => r.strip(&mut a.name),
    }
}

fn file(r: &mut Resolver<'_>, command: &mut FileCommand) -> Result<(), Error> {
    match command {
        // Local sources, then the instance target.
        FileCommand::Push(args) => match args.paths.last_mut() {
            Some(target) => r.strip(target),
            None => Ok(()),
        },
        // Instance sources, then the local target.
        FileCommand::Pull(args) => {
            let sources = args.paths.len().saturating_sub(1);
            r.strip_all(&mut args.paths[..sources])
        }
        FileCommand::Delete(args) => r.strip_all(&mut args.paths),
        FileCommand::Edit(args) => r.strip(&mut args.target),
    }
}

fn snapshot(r: &mut Resolver<'_>, command: &mut SnapshotCommand) -> Result<(), Error> {
    match command {
        SnapshotCommand::Create(a) => r.strip(&mut a.name),
        SnapshotCommand::List(a) => r.strip(&mut a.name),
        SnapshotCommand::Show(a) | SnapshotCommand::Restore(a) => r.strip(&mut a.name),
        SnapshotCommand::Delete(a) => r.strip(&mut a.name),
        SnapshotCommand::Rename(a) => r.strip(&mut a.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    /// Parse `args`, resolve against default remote `default`: (remote, the command after).
    fn resolve(default: &str, args: &[&str]) -> Result<(String, Command), String> {
        let cli = Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let mut command = cli.command;
        let remote = take_remote(&mut command, default).map_err(|e| e.to_string())?;
        Ok((remote, command))
    }

    fn remote_of(default: &str, args: &[&str]) -> String {
        resolve(default, args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .0
    }

    #[test]
    fn prefixes_choose_the_server_and_are_stripped() {
        let table: &[(&[&str], &str)] = &[
            (&["list"], "local"),
            (&["list", "r1:"], "r1"),
            (&["exec", "r1:c1", "--", "echo", "hi"], "r1"),
            (&["exec", "c1", "--", "echo"], "local"),
            (&["launch", "images:debian/12", "r1:c1"], "r1"),
            (&["launch", "busybox", "r1:"], "r1"),
            (&["launch", "images:debian/12"], "local"),
            (&["start", "r1:c1", "r1:c2"], "r1"),
            (&["delete", "local:c1"], "local"),
            (&["file", "push", "./a:b", "r1:c1/tmp/x"], "r1"),
            (&["file", "pull", "r1:c1/etc/hosts", "./x:y"], "r1"),
            (&["snapshot", "create", "r1:c1", "s0"], "r1"),
            (&["copy", "r1:c1", "r1:c2"], "r1"),
            (&["config", "set", "r1:c1", "limits.cpu", "2"], "r1"),
            (
                &["config", "set", "core.https_address", "127.0.0.1:8443"],
                "local",
            ),
            (
                &["config", "set", "core.https_address=127.0.0.1:8443"],
                "local",
            ),
            (
                &[
                    "config",
                    "set",
                    "r1:",
                    "core.https_address",
                    "127.0.0.1:8443",
                ],
                "r1",
            ),
            (&["config", "get", "core.https_address"], "local"),
            (&["config", "show", "r1:"], "r1"),
            (&["config", "trust", "add", "r1:laptop"], "r1"),
            (&["config", "trust", "list", "r1:"], "r1"),
            (&["ui", "r1:"], "r1"),
            (&["cluster", "list", "r1:"], "r1"),
            (&["cluster", "list"], "local"),
            (
                &[
                    "cluster",
                    "enable",
                    "r1:node1",
                    "--database",
                    "postgres://u:p@h:5432/d",
                ],
                "r1",
            ),
            (&["cluster", "add", "r1:node2"], "r1"),
            (
                &["cluster", "join", "r2:eyJzZXJ2ZXJfbmFtZSI6Im4ifQ=="],
                "r2",
            ),
            (
                &["cluster", "join", "eyJzZXJ2ZXJfbmFtZSI6Im4ifQ=="],
                "local",
            ),
            (&["cluster", "evacuate", "r1:node2", "--force"], "r1"),
            (&["cluster", "rm", "r1:node2"], "r1"),
            (&["launch", "busybox", "r1:c1", "--target", "node2"], "r1"),
            (&["ui"], "local"),
        ];
        for (args, want) in table {
            assert_eq!(remote_of("local", args), *want, "{args:?}");
        }
        // After `remote switch r1`, plain names go to r1 and local: is still local.
        assert_eq!(remote_of("r1", &["list"]), "r1");
        assert_eq!(remote_of("r1", &["exec", "c1", "--", "true"]), "r1");
        assert_eq!(
            remote_of("r1", &["exec", "local:c1", "--", "true"]),
            "local"
        );
    }

    #[test]
    fn commands_see_plain_names() {
        let Ok((_, Command::Exec(args))) = resolve("local", &["exec", "r1:c1", "--", "true"])
        else {
            panic!("exec");
        };
        assert_eq!(args.name, "c1");
        let Ok((_, Command::Launch(args))) =
            resolve("local", &["launch", "images:debian/12", "r1:c1"])
        else {
            panic!("launch");
        };
        assert_eq!(
            (args.image.as_str(), args.name.as_deref()),
            ("images:debian/12", Some("c1"))
        );
        let Ok((_, Command::Launch(args))) = resolve("local", &["launch", "busybox", "r1:"]) else {
            panic!("launch without a name");
        };
        assert_eq!(args.name, None);
        let Ok((
            _,
            Command::File {
                command: FileCommand::Push(args),
            },
        )) = resolve("local", &["file", "push", "./a:b", "r1:c1/tmp/x"])
        else {
            panic!("push");
        };
        assert_eq!(args.paths, vec!["./a:b", "c1/tmp/x"]);
        let Ok((
            _,
            Command::Config {
                command: ConfigCommand::Set(args),
            },
        )) = resolve("local", &["config", "set", "r1:", "k", "v"])
        else {
            panic!("config set");
        };
        assert_eq!((args.name.as_str(), args.values.len()), ("", 2));
        let Ok((
            _,
            Command::Config {
                command: ConfigCommand::Set(args),
            },
        )) = resolve("local", &["config", "set", "k=127.0.0.1:8443"])
        else {
            panic!("config set server");
        };
        assert_eq!(args.name, "k=127.0.0.1:8443");
    }

    #[test]
    fn one_command_one_server() {
        let err = resolve("local", &["start", "r1:c1", "c2"]).err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("one command works on one server")),
            "{err:?}"
        );
        assert!(resolve("local", &["copy", "r1:c1", "r2:c1"]).is_err());
        assert!(resolve("local", &["list", "r1"]).is_err());
        assert!(resolve("local", &["launch", "local:busybox", "r1:c1"]).is_err());
        assert!(resolve("r1", &["launch", "local:busybox", "c1"]).is_err());
        assert_eq!(
            remote_of("r1", &["launch", "local:busybox", "local:c1"]),
            "local"
        );
        // Unprefixed names follow the default remote, so they mix with it.
        assert_eq!(remote_of("r1", &["start", "r1:c1", "c2"]), "r1");
    }
}
