//! `ctl network list|show|create|delete|set|list-leases`: managed networks (bridges).

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::{Network, NetworkLease, NetworkPut, NetworksPost};
use hyper::Method;
use serde_json::Value;

use super::{Error, parse_key_value};
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl network` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum NetworkCommand {
    /// List the managed networks
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a network as YAML
    Show(NameArgs),
    /// Create a network: NAME [KEY=VALUE...] (e.g. ipv4.address=10.99.0.1/24)
    Create(CreateArgs),
    /// Delete networks (refused while an instance or profile uses one)
    #[command(visible_alias = "rm")]
    Delete(NamesArgs),
    /// Set network config keys: NAME KEY=VALUE... (an empty value unsets)
    Set(SetArgs),
    /// List the addresses a network handed out
    ListLeases(LeasesArgs),
}

/// Arguments of `ctl network list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// One network.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// Network name
    pub name: String,
}

/// Several networks.
#[derive(Debug, Clone, Args)]
pub struct NamesArgs {
    /// Network names
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Arguments of `ctl network create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Network name (at most 15 characters: it is the bridge's name)
    pub name: String,
    /// KEY=VALUE config pairs
    #[arg(value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Description
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Arguments of `ctl network set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Network name
    pub name: String,
    /// KEY=VALUE config pairs
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

/// Arguments of `ctl network list-leases`.
#[derive(Debug, Clone, Args)]
pub struct LeasesArgs {
    /// Network name
    pub name: String,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// Columns of `ctl network list`.
pub const HEADER: [&str; 6] = ["NAME", "TYPE", "IPV4", "IPV6", "USED BY", "STATE"];
/// Columns of `ctl network list-leases`.
pub const LEASE_HEADER: [&str; 4] = ["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"];

fn key_values(args: &[String]) -> Result<ctl_api::instance::ConfigMap, Error> {
    args.iter()
        .map(|a| parse_key_value(a).map_err(Error::Usage))
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|source| {
        Error::Client(crate::Error::Decode {
            what: what.into(),
            source,
        })
    })
}

/// Table rows of networks, sorted by name.
pub fn rows(networks: &[Network]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Network> = networks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .into_iter()
        .map(|n| {
            let get = |k: &str| n.config.get(k).cloned().unwrap_or_default();
            vec![
                n.name.clone(),
                n.kind.clone(),
                get("ipv4.address"),
                get("ipv6.address"),
                n.used_by.len().to_string(),
                n.status.to_uppercase(),
            ]
        })
        .collect()
}

/// Table rows of leases.
pub fn lease_rows(leases: &[NetworkLease]) -> Vec<Vec<String>> {
    leases
        .iter()
        .map(|l| {
            vec![
                l.hostname.clone(),
                l.hwaddr.clone(),
                l.address.clone(),
                l.kind.to_uppercase(),
            ]
        })
        .collect()
}

/// Run a network subcommand.
pub async fn run(
    client: &Client,
    command: &NetworkCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        NetworkCommand::List(args) => {
            let raw = client.get_value("/1.0/networks?recursion=1").await?;
            let networks: Vec<Network> = match args.format {
                Format::Table | Format::Csv => decode("network list", raw.clone())?,
                _ => Vec::new(),
            };
            out.write_all(
                output::render(args.format, &HEADER, &rows(&networks), &raw)?.as_bytes(),
            )?;
        }
        NetworkCommand::Show(args) => {
            let raw = client
                .get_value(&format!("/1.0/networks/{}", encode_segment(&args.name)))
                .await?;
            out.write_all(output::render_structured(&raw, Format::Yaml)?.as_bytes())?;
        }
        NetworkCommand::Create(args) => {
            let body = NetworksPost {
                name: args.name.clone(),
                description: args.description.clone(),
                kind: "bridge".into(),
                config: key_values(&args.config)?,
            };
            let body = serde_json::to_value(body).unwrap_or_default();
            client
                .request(Method::POST, "/1.0/networks", Some(&body))
                .await?;
            writeln!(out, "Network {} created", args.name)?;
        }
        NetworkCommand::Delete(args) => {
            let mut failures = Vec::new();
            for name in &args.names {
                let path = format!("/1.0/networks/{}", encode_segment(name));
                if let Err(e) = client.request(Method::DELETE, &path, None).await {
                    failures.push((name.clone(), e));
                }
            }
            if !failures.is_empty() {
                return Err(Error::Several(failures));
            }
        }
        NetworkCommand::Set(args) => {
            let body = NetworkPut {
                description: None,
                config: Some(key_values(&args.config)?),
            };
            let body = serde_json::to_value(body).unwrap_or_default();
            let path = format!("/1.0/networks/{}", encode_segment(&args.name));
            client.request(Method::PATCH, &path, Some(&body)).await?;
        }
        NetworkCommand::ListLeases(args) => {
            let path = format!("/1.0/networks/{}/leases", encode_segment(&args.name));
            let raw = client.get_value(&path).await?;
            let leases: Vec<NetworkLease> = match args.format {
                Format::Table | Format::Csv => decode("lease list", raw.clone())?,
                _ => Vec::new(),
            };
            let text = output::render(args.format, &LEASE_HEADER, &lease_rows(&leases), &raw)?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn network_rows() {
        let n: Vec<Network> = serde_json::from_value(json!([
            {"name": "n2", "type": "bridge", "status": "Created", "config": {"ipv4.address": "10.0.2.1/24", "ipv6.address": "none"}, "used_by": ["/1.0/instances/c1"]},
            {"name": "n1", "type": "bridge", "status": "Created", "config": {}, "used_by": []}
        ]))
        .unwrap_or_default();
        let r = rows(&n);
        assert_eq!(r[0][0], "n1");
        assert_eq!(
            r[1],
            ["n2", "bridge", "10.0.2.1/24", "none", "1", "CREATED"]
        );
        let l: Vec<NetworkLease> = serde_json::from_value(json!([
            {"hostname": "c1", "address": "10.0.2.2", "hwaddr": "00:16:3e:00:00:01", "type": "dynamic"}
        ]))
        .unwrap_or_default();
        assert_eq!(
            lease_rows(&l)[0],
            ["c1", "00:16:3e:00:00:01", "10.0.2.2", "DYNAMIC"]
        );
    }
}
