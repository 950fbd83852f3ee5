//! `ctl remote add|list|remove`: the image servers this client knows (see
//! [`crate::remotes`]).

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::json;

use super::Error;
use crate::output::{Format, render};
use crate::remotes::{Config, config_path};

/// `ctl remote` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RemoteCommand {
    /// Add an image server
    Add(AddArgs),
    /// List the remotes
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
}

/// Arguments of `ctl remote add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// Remote name (used as `NAME:` in image arguments)
    pub name: String,
    /// Server URL (http:// or https://)
    pub url: String,
    /// Server protocol (only `simplestreams`)
    #[arg(long, default_value = "simplestreams")]
    pub protocol: String,
}

fn remote_error(e: crate::remotes::RemoteError) -> Error {
    Error::Usage(e.to_string())
}

/// Run a remote subcommand against the config file at `config_path()`.
pub fn run(command: &RemoteCommand, out: &mut dyn Write) -> Result<(), Error> {
    let path = config_path();
    let mut cfg = Config::load(&path).map_err(remote_error)?;
    match command {
        RemoteCommand::Add(a) => {
            cfg.add(&a.name, &a.url, &a.protocol)
                .map_err(remote_error)?;
            cfg.save(&path).map_err(remote_error)?;
        }
        RemoteCommand::Remove { name } => {
            cfg.remove(name).map_err(remote_error)?;
            cfg.save(&path).map_err(remote_error)?;
        }
        RemoteCommand::List { format } => {
            let header = ["NAME", "URL", "PROTOCOL", "PUBLIC"];
            let rows: Vec<Vec<String>> = cfg
                .remotes
                .iter()
                .map(|(name, r)| {
                    vec![
                        name.clone(),
                        r.addr.clone(),
                        r.protocol.clone(),
                        if r.public { "YES" } else { "NO" }.to_string(),
                    ]
                })
                .collect();
            let text = render(*format, &header, &rows, &json!(cfg.remotes))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}
