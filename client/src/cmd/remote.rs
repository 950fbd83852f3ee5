//! `ctl remote add|list|remove|rename|switch|get-default`: the servers this client knows
//! (see [`crate::remotes`]): image servers, and ctld servers reached over HTTPS (adding one
//! is [`add`]'s certificate and token dance).

pub mod add;

use std::io::Write;

use clap::Subcommand;
use serde_json::json;

use super::Error;
use crate::output::{Format, render};
use crate::remotes::{Config, config_dir, config_path, server_cert_path};

pub use add::AddArgs;

/// `ctl remote` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RemoteCommand {
    /// Add a ctld server (NAME https://HOST[:PORT], or NAME TOKEN from `ctl config trust
    /// add` on the server) or an image server (--protocol simplestreams)
    Add(AddArgs),
    /// List the remotes (the default one is marked "(current)")
    #[command(visible_alias = "ls")]
    List {
        /// Output format
        #[arg(short, long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a remote
    #[command(visible_alias = "rm")]
    Remove {
        /// Remote name
        name: String,
    },
    /// Rename a remote: NAME NEW_NAME
    #[command(visible_alias = "mv")]
    Rename {
        /// Remote name
        name: String,
        /// New name
        new_name: String,
    },
    /// Make a ctld remote the default: names without `REMOTE:` address it
    Switch {
        /// Remote name (`local` for the daemon on this machine)
        name: String,
    },
    /// Print the default remote's name
    GetDefault,
}

/// The columns of `ctl remote list`.
pub const HEADER: [&str; 5] = ["NAME", "URL", "PROTOCOL", "PUBLIC", "AUTH TYPE"];

/// The rows of `ctl remote list`, the default remote's name marked `(current)`.
pub fn rows(cfg: &Config) -> Vec<Vec<String>> {
    let default = cfg.default_name();
    cfg.remotes
        .iter()
        .map(|(name, r)| {
            let shown = if name == default {
                format!("{name} (current)")
            } else {
                name.clone()
            };
            vec![
                shown,
                r.addr.clone(),
                r.protocol.clone(),
                if r.public { "YES" } else { "NO" }.to_string(),
                r.auth_type.clone(),
            ]
        })
        .collect()
}

/// Run a remote subcommand against the config file in the config dir. `confirm` asks the
/// user to accept a server certificate (`None`: no terminal to ask on).
pub async fn run(
    command: &RemoteCommand,
    confirm: Option<&mut add::Confirm<'_>>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (dir, path) = (config_dir(), config_path());
    let mut cfg = Config::load(&path)?;
    match command {
        RemoteCommand::Add(args) => {
            add::add(&mut cfg, &dir, args, confirm, out).await?;
            cfg.save(&path)?;
        }
        RemoteCommand::Remove { name } => {
            cfg.remove(name)?;
            cfg.save(&path)?;
            let _ = std::fs::remove_file(server_cert_path(&dir, name));
        }
        RemoteCommand::Rename { name, new_name } => {
            cfg.rename(name, new_name)?;
            let (old, new) = (
                server_cert_path(&dir, name),
                server_cert_path(&dir, new_name),
            );
            if old.exists() {
                std::fs::rename(&old, &new)
                    .map_err(|source| Error::LocalFile { path: old, source })?;
            }
            cfg.save(&path)?;
        }
        RemoteCommand::Switch { name } => {
            cfg.switch(name)?;
            cfg.save(&path)?;
        }
        RemoteCommand::GetDefault => writeln!(out, "{}", cfg.default_name())?,
        RemoteCommand::List { format } => {
            let text = render(*format, &HEADER, &rows(&cfg), &json!(cfg.remotes))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotes::Remote;

    #[test]
    fn list_marks_the_default_and_keeps_the_image_columns_first() {
        let mut cfg = Config::default();
        cfg.insert("r1", Remote::server("https://127.0.0.1:8443"))
            .ok();
        cfg.add("ss", "http://127.0.0.1:9000", "").ok();
        let local = Remote {
            addr: "unix://".into(),
            protocol: "ctl".into(),
            auth_type: "file access".into(),
            public: false,
        };
        cfg.remotes.insert("local".into(), local);
        let shown = rows(&cfg);
        assert_eq!(shown[0][0], "local (current)");
        assert_eq!(
            shown[1],
            vec!["r1", "https://127.0.0.1:8443", "ctl", "NO", "tls"]
        );
        assert_eq!(
            shown[2],
            vec!["ss", "http://127.0.0.1:9000", "simplestreams", "YES", ""]
        );
        cfg.switch("r1").ok();
        let shown = rows(&cfg);
        assert_eq!(
            (shown[0][0].as_str(), shown[1][0].as_str()),
            ("local", "r1 (current)")
        );
    }
}
