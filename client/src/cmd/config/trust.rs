//! `ctl config trust`: the clients a server trusts (`/1.0/certificates`) and the join tokens
//! it has handed out (token operations), as `incus config trust` manages them.
//!
//! `add NAME` asks the server for a token operation and prints the token a new client passes
//! to `ctl remote add` ([`crate::token`]); `list-tokens` and `revoke-token` read and cancel
//! those operations. Fingerprints may be given as unique prefixes.

use std::io::Write;
use std::path::PathBuf;

use base64::Engine as _;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::super::Error;
use crate::Client;
use crate::client::{encode_segment, operation_id};
use crate::output::{Format, render};
use crate::token::{self, AddToken};

/// `ctl config trust` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TrustCommand {
    /// Make a join token for a new client: [REMOTE:]NAME (prints the token for
    /// `ctl remote add REMOTE TOKEN`)
    Add(AddArgs),
    /// Trust a client certificate from a PEM file
    AddCertificate(AddCertificateArgs),
    /// List the trusted clients: [REMOTE:]
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// List the join tokens not used yet: [REMOTE:]
    ListTokens(ListArgs),
    /// Revoke the join tokens made for a client: [REMOTE:]NAME
    RevokeToken {
        /// The client name given to `trust add`
        name: String,
    },
    /// Stop trusting a client: [REMOTE:]FINGERPRINT (a unique prefix will do)
    #[command(visible_alias = "rm")]
    Remove {
        /// Certificate fingerprint
        fingerprint: String,
    },
    /// Show a trusted client as YAML: [REMOTE:]FINGERPRINT
    Show {
        /// Certificate fingerprint
        fingerprint: String,
    },
}

/// Arguments of `ctl config trust add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// Name of the new client, as [REMOTE:]NAME
    pub name: String,
    /// Restrict the client to the projects of --projects
    #[arg(long)]
    pub restricted: bool,
    /// Projects a restricted client may use (comma-separated; implies --restricted)
    #[arg(long, value_delimiter = ',', value_name = "PROJECTS")]
    pub projects: Vec<String>,
}

/// Arguments of `ctl config trust add-certificate`.
#[derive(Debug, Clone, Args)]
pub struct AddCertificateArgs {
    /// The client's certificate (PEM)
    pub file: PathBuf,
    /// Name of the client (default: the file name without its extension)
    #[arg(long)]
    pub name: Option<String>,
    /// Restrict the client to the projects of --projects
    #[arg(long)]
    pub restricted: bool,
    /// Projects a restricted client may use (comma-separated; implies --restricted)
    #[arg(long, value_delimiter = ',', value_name = "PROJECTS")]
    pub projects: Vec<String>,
    /// Description
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Arguments of `ctl config trust list` and `list-tokens`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The server to ask, as REMOTE: (default: the default remote)
    #[arg(value_name = "REMOTE:")]
    pub remote: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// Columns of `trust list`.
pub const LIST_HEADER: [&str; 5] = ["NAME", "TYPE", "FINGERPRINT", "RESTRICTED", "DESCRIPTION"];
/// Columns of `trust list-tokens`.
pub const TOKEN_HEADER: [&str; 3] = ["NAME", "TOKEN", "EXPIRES AT"];

/// Run a trust subcommand against `client`'s server.
pub async fn run(
    client: &Client,
    command: &TrustCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        TrustCommand::Add(args) => {
            let token = add(client, args).await?;
            writeln!(out, "Client {} certificate add token:", args.name)?;
            writeln!(out, "{}", token::encode(&token))?;
        }
        TrustCommand::AddCertificate(args) => add_certificate(client, args).await?,
        TrustCommand::List(args) => {
            let certs = client.get_value("/1.0/certificates?recursion=1").await?;
            let rows = certificate_rows(&certs);
            out.write_all(render(args.format, &LIST_HEADER, &rows, &certs)?.as_bytes())?;
        }
        TrustCommand::ListTokens(args) => {
            let tokens: Vec<AddToken> = token_operations(client)
                .await?
                .iter()
                .filter_map(|op| token_of(op).ok())
                .collect();
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    let expires = t.expires_at.clone().unwrap_or_default();
                    vec![t.client_name.clone(), token::encode(t), expires]
                })
                .collect();
            let raw = serde_json::to_value(&tokens).unwrap_or_default();
            out.write_all(render(args.format, &TOKEN_HEADER, &rows, &raw)?.as_bytes())?;
        }
        TrustCommand::RevokeToken { name } => revoke_token(client, name).await?,
        TrustCommand::Remove { fingerprint } => {
            let fingerprint = resolve_fingerprint(client, fingerprint).await?;
            let path = format!("/1.0/certificates/{}", encode_segment(&fingerprint));
            client.request_settled(Method::DELETE, &path, None).await?;
        }
        TrustCommand::Show { fingerprint } => {
            let fingerprint = resolve_fingerprint(client, fingerprint).await?;
            let path = format!("/1.0/certificates/{}", encode_segment(&fingerprint));
            let cert = client.get_value(&path).await?;
            out.write_all(render(Format::Yaml, &[], &[], &cert)?.as_bytes())?;
        }
    }
    Ok(())
}

/// `POST /1.0/certificates` with `token: true`: the token operation's metadata as a token.
pub async fn add(client: &Client, args: &AddArgs) -> Result<AddToken, Error> {
    if args.name.is_empty() {
        return Err(Error::Usage("the client needs a name".into()));
    }
    let body = json!({
        "name": args.name,
        "type": "client",
        "restricted": args.restricted || !args.projects.is_empty(),
        "projects": args.projects,
        "token": true,
    });
    let operation = client
        .request_operation(Method::POST, "/1.0/certificates", Some(&body))
        .await?;
    token::from_operation(&operation.metadata, &args.name)
        .map_err(|e| Error::Usage(format!("the server made no usable token: {e}")))
}

async fn add_certificate(client: &Client, args: &AddCertificateArgs) -> Result<(), Error> {
    let der = crate::tls::read_cert(&args.file).map_err(crate::Error::Identity)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let body = json!({
        "name": name,
        "type": "client",
        "certificate": base64::engine::general_purpose::STANDARD.encode(&der),
        "restricted": args.restricted || !args.projects.is_empty(),
        "projects": args.projects,
        "description": args.description,
    });
    client
        .request_settled(Method::POST, "/1.0/certificates", Some(&body))
        .await?;
    Ok(())
}

/// One row per certificate: name, type, the fingerprint's first 12 digits, restricted.
pub fn certificate_rows(certs: &Value) -> Vec<Vec<String>> {
    let text = |c: &Value, key: &str| c.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    certs
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let fingerprint = text(c, "fingerprint");
            let restricted = c.get("restricted").and_then(Value::as_bool) == Some(true);
            vec![
                text(c, "name"),
                text(c, "type"),
                fingerprint.chars().take(12).collect(),
                if restricted { "YES" } else { "NO" }.to_string(),
                text(c, "description"),
            ]
        })
        .collect()
}

/// The server's running token operations (`GET /1.0/operations?recursion=1`, class
/// `token`).
async fn token_operations(client: &Client) -> Result<Vec<Value>, Error> {
    let groups = client.get_value("/1.0/operations?recursion=1").await?;
    Ok(running_tokens(&groups))
}

/// The running token operations among operations grouped by status.
pub fn running_tokens(groups: &Value) -> Vec<Value> {
    let Some(groups) = groups.as_object() else {
        return Vec::new();
    };
    groups
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter(|op| op.get("class").and_then(Value::as_str) == Some("token"))
        .filter(|op| op.get("status_code").and_then(Value::as_u64) == Some(103))
        .cloned()
        .collect()
}

fn token_of(op: &Value) -> Result<AddToken, token::TokenError> {
    let metadata = op.get("metadata").cloned().unwrap_or(Value::Null);
    token::from_operation(&metadata, "")
}

async fn revoke_token(client: &Client, name: &str) -> Result<(), Error> {
    let ops = token_operations(client).await?;
    let ids: Vec<String> = ops
        .iter()
        .filter(|op| op.pointer("/metadata/request/name").and_then(Value::as_str) == Some(name))
        .filter_map(|op| op.get("id").and_then(Value::as_str))
        .map(|id| operation_id(id).to_string())
        .collect();
    if ids.is_empty() {
        return Err(Error::Usage(format!(
            "no pending token for client \"{name}\""
        )));
    }
    for id in ids {
        let path = format!("/1.0/operations/{}", encode_segment(&id));
        client.request(Method::DELETE, &path, None).await?;
    }
    Ok(())
}

/// The one trusted fingerprint starting with `prefix` (a whole fingerprint is taken as it is).
async fn resolve_fingerprint(client: &Client, prefix: &str) -> Result<String, Error> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() == 64 {
        return Ok(prefix);
    }
    let urls: Vec<String> = client.get("/1.0/certificates").await?;
    pick_fingerprint(&urls, &prefix)
}

/// The one fingerprint among certificate URLs that starts with `prefix`.
pub fn pick_fingerprint(urls: &[String], prefix: &str) -> Result<String, Error> {
    if prefix.is_empty() {
        return Err(Error::Usage("name a certificate fingerprint".into()));
    }
    let matches: Vec<&str> = urls
        .iter()
        .map(|u| operation_id(u))
        .filter(|fp| fp.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(Error::Usage(format!(
            "no trusted certificate has fingerprint {prefix}"
        ))),
        _ => Err(Error::Usage(format!(
            "fingerprint {prefix} matches several certificates; give more digits"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeServer, Seen, async_envelope, sync_envelope};

    #[test]
    fn certificate_rows_are_short() {
        let certs = json!([
            {"name": "laptop", "type": "client", "fingerprint": "0123456789abcdef0123",
             "restricted": false, "description": ""},
            {"name": "ci", "type": "metrics", "fingerprint": "fedcba9876543210",
             "restricted": true, "projects": ["default"], "description": "scraper"}
        ]);
        assert_eq!(
            certificate_rows(&certs),
            vec![
                vec!["laptop", "client", "0123456789ab", "NO", ""],
                vec!["ci", "metrics", "fedcba987654", "YES", "scraper"],
            ]
        );
    }

    #[test]
    fn fingerprints_resolve_from_unique_prefixes() {
        let urls = vec![
            "/1.0/certificates/abc123".to_string(),
            "/1.0/certificates/abd456".to_string(),
        ];
        assert_eq!(
            pick_fingerprint(&urls, "abc").ok().as_deref(),
            Some("abc123")
        );
        assert!(pick_fingerprint(&urls, "ab").is_err());
        assert!(pick_fingerprint(&urls, "ff").is_err());
        assert!(pick_fingerprint(&urls, "").is_err());
    }

    #[test]
    fn only_running_token_operations_count() {
        let op = |id: &str, class: &str, code: u64| json!({"id": id, "class": class, "status_code": code});
        let groups = json!({
            "running": [op("t1", "token", 103), op("w1", "websocket", 103)],
            "success": [op("t0", "token", 200)],
        });
        let ids: Vec<Value> = running_tokens(&groups)
            .iter()
            .map(|o| o["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!("t1")]);
        assert!(running_tokens(&json!(null)).is_empty());
    }

    #[tokio::test]
    async fn add_prints_a_token_and_revoke_cancels_its_operation() {
        let metadata = json!({"secret": "s3cret", "fingerprint": "ab".repeat(32),
                              "addresses": ["127.0.0.1:8443"],
                              "request": {"name": "laptop", "type": "client"}});
        let op = json!({"id": "tok1", "class": "token", "description": "", "created_at": "",
                        "updated_at": "", "status": "Running", "status_code": 103,
                        "resources": {}, "metadata": metadata, "may_cancel": true,
                        "err": "", "location": ""});
        let server = FakeServer::serve(vec![
            async_envelope(op.clone()),
            sync_envelope(json!({"running": [op]})),
            sync_envelope(json!({})),
        ]);
        let client = server.client();
        let mut out = Vec::new();
        let add = TrustCommand::Add(AddArgs {
            name: "laptop".into(),
            restricted: false,
            projects: vec!["default".into()],
        });
        let added = run(&client, &add, &mut out).await;
        assert!(added.is_ok(), "{added:?}");
        let text = String::from_utf8_lossy(&out).into_owned();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("Client laptop certificate add token:"));
        let token = lines.next().map(token::decode);
        let Some(Ok(token)) = token else {
            panic!("no token in {text:?}");
        };
        assert_eq!(token.secret, "s3cret");
        assert_eq!(token.client_name, "laptop");
        assert_eq!(token.addresses, vec!["127.0.0.1:8443"]);

        let revoke = TrustCommand::RevokeToken {
            name: "laptop".into(),
        };
        let revoked = run(&client, &revoke, &mut Vec::new()).await;
        assert!(revoked.is_ok(), "{revoked:?}");
        let seen = server.seen();
        assert_eq!(
            seen[0],
            Seen::new(
                "POST",
                "/1.0/certificates",
                json!({"name": "laptop", "type": "client", "restricted": true,
                       "projects": ["default"], "token": true})
            )
        );
        assert_eq!(seen[1].path, "/1.0/operations?recursion=1");
        assert_eq!(seen[2].method, "DELETE");
        assert_eq!(seen[2].path, "/1.0/operations/tok1");
    }
}
