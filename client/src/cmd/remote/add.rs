//! `ctl remote add`: an image server is only written down; a ctld server is contacted.
//!
//! For a ctld server (`NAME https://HOST[:PORT]`, `NAME TOKEN`, `--token`): the client's
//! certificate is made if it has none; the server's certificate is read from the handshake
//! and its fingerprint either matched against the token's or shown for the user to accept
//! (`--accept-certificate` accepts it unasked); it is pinned as `servercerts/NAME.crt`.
//! Then, over the pinned connection, `GET /1.0` says whether the server trusts this client;
//! if not, the token is spent on `POST /1.0/certificates` and trust checked again.
//!
//! Without `--protocol`, an `http://` URL is an image server (ctld only speaks HTTPS) and an
//! `https://` URL is a ctld server when its `GET /1.0` answers like one, else an image
//! server, as `ctl remote add NAME URL` always meant.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use clap::Args;
use hyper::Method;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use super::super::Error;
use crate::Client;
use crate::remotes::{CTL_PROTOCOL, Config, Remote, SIMPLESTREAMS, host_port, server_cert_path};
use crate::tls::{self, Identity};
use crate::token::{self, AddToken};
use crate::transport::HttpsTarget;

/// Asks the user whether to trust a certificate (its fingerprint given); `Ok(true)` to
/// accept.
pub type Confirm<'a> = dyn FnMut(&str) -> std::io::Result<bool> + 'a;

/// Arguments of `ctl remote add`.
#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// Remote name (used as `NAME:` in instance and image arguments)
    pub name: String,
    /// Server URL (https://HOST[:PORT]; http(s):// for an image server), or a trust token
    /// from `ctl config trust add` on the server
    #[arg(value_name = "URL|TOKEN")]
    pub addr: String,
    /// Server protocol: `ctl` (a ctld server; `incus` means the same) or `simplestreams`
    /// (an image server); default: found out from the URL
    #[arg(long)]
    pub protocol: Option<String>,
    /// Trust the server's certificate without asking (check its fingerprint first)
    #[arg(long)]
    pub accept_certificate: bool,
    /// Trust token from `ctl config trust add` on the server
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// What kind of remote an `add` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An image server at this URL.
    Images(String),
    /// A ctld server at these `HOST:PORT` addresses (tried in order), maybe with a token.
    Server {
        addrs: Vec<String>,
        token: Option<(String, AddToken)>,
    },
    /// An `https://` URL that is either: ask it.
    Probe(String),
}

/// Decide what `args` add, without contacting anything.
pub fn kind(args: &AddArgs) -> Result<Kind, Error> {
    let addr = args.addr.trim();
    let flag_token = match &args.token {
        Some(text) => Some((text.trim().to_string(), decode_token(text)?)),
        None => None,
    };
    let protocol = args.protocol.as_deref().unwrap_or("");
    let as_token = token::decode(addr).ok();
    if let Some(token) = as_token {
        if protocol == SIMPLESTREAMS {
            return Err(Error::Usage("a trust token names a ctld server".into()));
        }
        return Ok(Kind::Server {
            addrs: token.addresses.clone(),
            token: Some((addr.to_string(), token)),
        });
    }
    match protocol {
        SIMPLESTREAMS => return Ok(Kind::Images(addr.to_string())),
        "" | CTL_PROTOCOL | "incus" | "lxd" => {}
        other => {
            return Err(Error::Usage(format!(
                "unknown protocol \"{other}\" (ctl or simplestreams)"
            )));
        }
    }
    if addr.starts_with("http://") {
        if protocol.is_empty() && flag_token.is_none() && !args.accept_certificate {
            return Ok(Kind::Images(addr.to_string()));
        }
        return Err(Error::Usage(format!(
            "a ctld server is reached over https, not {addr}"
        )));
    }
    let server = !protocol.is_empty()
        || flag_token.is_some()
        || args.accept_certificate
        || !addr.starts_with("https://");
    let host = host_port(addr)?;
    if server {
        Ok(Kind::Server {
            addrs: vec![host],
            token: flag_token,
        })
    } else {
        Ok(Kind::Probe(addr.to_string()))
    }
}

fn decode_token(text: &str) -> Result<AddToken, Error> {
    token::decode(text).map_err(|e| Error::Usage(format!("invalid trust token: {e}")))
}

/// Add the remote `args` describe to `cfg` (the caller saves it); a server's certificate is
/// pinned in config dir `dir`.
pub async fn add(
    cfg: &mut Config,
    dir: &Path,
    args: &AddArgs,
    confirm: Option<&mut Confirm<'_>>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    cfg.check_new(&args.name)?;
    let (addrs, token) = match kind(args)? {
        Kind::Images(url) => return Ok(cfg.add(&args.name, &url, SIMPLESTREAMS)?),
        Kind::Probe(url) => {
            let addr = host_port(&url)?;
            if !is_ctld(&args.name, &addr).await {
                return Ok(cfg.add(&args.name, &url, SIMPLESTREAMS)?);
            }
            (vec![addr], None)
        }
        Kind::Server { addrs, token } => (addrs, token),
    };
    let identity = Identity::load_or_create(dir).map_err(crate::Error::Identity)?;
    let (addr, cert) = first_reachable(&args.name, &addrs, &identity).await?;
    let seen = tls::fingerprint(&cert);
    match &token {
        Some((_, token)) if !token.fingerprint.eq_ignore_ascii_case(&seen) => {
            return Err(Error::Usage(format!(
                "certificate fingerprint mismatch: the token names {}, but the server at \
                 {addr} presented {seen}",
                token.fingerprint
            )));
        }
        Some(_) => {}
        None if args.accept_certificate => {}
        None => accept(&addr, &seen, confirm)?,
    }

    let pin = server_cert_path(dir, &args.name);
    if let Some(parent) = pin.parent() {
        tls::ensure_private_dir(parent).map_err(crate::Error::Identity)?;
    }
    tls::write_private(&pin, tls::cert_pem(&cert).as_bytes(), 0o644)
        .map_err(crate::Error::Identity)?;
    let config = tls::pinned_config(&identity, cert).map_err(crate::Error::Identity)?;
    let client = Client::https(HttpsTarget {
        remote: args.name.clone(),
        addr: addr.clone(),
        config,
    });
    let joined = match trust(&client, token.as_ref().map(|(text, _)| text.as_str())).await {
        Ok(joined) => joined,
        Err(e) => {
            let _ = std::fs::remove_file(&pin);
            return Err(match e {
                Trust::NotTrusted => not_trusted(&args.name, &addr, &identity),
                Trust::Refused(message) => Error::Usage(format!(
                    "the server at {addr} refused the token (used already, revoked or \
                     expired?): {message}"
                )),
                Trust::Failed(e) => e,
            });
        }
    };
    cfg.insert(&args.name, Remote::server(&format!("https://{addr}")))?;
    if joined {
        writeln!(
            out,
            "Client certificate now trusted by server: {}",
            args.name
        )?;
    }
    Ok(())
}

/// The message for a server that does not trust this client and no token to change it.
fn not_trusted(name: &str, addr: &str, identity: &Identity) -> Error {
    Error::Usage(format!(
        "the server at {addr} does not trust this client (certificate {}). On the server, \
         run `ctl config trust add CLIENT_NAME` and add the remote with the token it prints: \
         `ctl remote add {name} TOKEN`",
        identity.fingerprint()
    ))
}

/// Why [`trust`] failed.
enum Trust {
    /// Not trusted, and no token.
    NotTrusted,
    /// The server refused the token; its message.
    Refused(String),
    Failed(Error),
}

/// Whether the server at `addr` answers `GET /1.0` like a ctld (or Incus) server.
async fn is_ctld(name: &str, addr: &str) -> bool {
    let slot = Arc::new(Mutex::new(None));
    let Ok(config) = tls::capture_config(None, slot) else {
        return false;
    };
    let client = Client::https(HttpsTarget {
        remote: name.to_string(),
        addr: addr.to_string(),
        config,
    });
    match client.get_value("/1.0").await {
        Ok(server) => server.get("api_version").is_some(),
        Err(_) => false,
    }
}

/// Connect to the addresses in turn; the first that completes a handshake gives its
/// certificate.
async fn first_reachable(
    name: &str,
    addrs: &[String],
    identity: &Identity,
) -> Result<(String, CertificateDer<'static>), Error> {
    let mut last = None;
    for addr in addrs {
        let slot = Arc::new(Mutex::new(None));
        let config = tls::capture_config(Some(identity), Arc::clone(&slot))
            .map_err(crate::Error::Identity)?;
        let connected = crate::transport::tls_connect(addr, config).await;
        let cert = slot.lock().ok().and_then(|mut s| s.take());
        match (connected, cert) {
            (Ok(_), Some(cert)) => return Ok((addr.clone(), cert)),
            (Ok(_), None) => {
                last = Some(crate::Error::Protocol(format!(
                    "{addr} presented no certificate"
                )));
            }
            (Err(e), _) => last = Some(e.for_remote(name)),
        }
    }
    Err(last
        .map(Error::Client)
        .unwrap_or_else(|| Error::Usage("the token names no server address".into())))
}

/// Ask about a certificate nobody vouched for.
fn accept(addr: &str, fingerprint: &str, confirm: Option<&mut Confirm<'_>>) -> Result<(), Error> {
    let Some(confirm) = confirm else {
        return Err(Error::Usage(format!(
            "the server at {addr} presented certificate {fingerprint}; with no terminal to \
             confirm it, pass --accept-certificate (after checking the fingerprint on the \
             server) or add the remote with a trust token"
        )));
    };
    if confirm(fingerprint)? {
        Ok(())
    } else {
        Err(Error::Usage("server certificate not accepted".into()))
    }
}

/// Make sure the server trusts this client, spending `token` if it does not yet. Returns
/// whether the token was spent.
async fn trust(client: &Client, token: Option<&str>) -> Result<bool, Trust> {
    if auth(client).await? == "trusted" {
        return Ok(false);
    }
    let Some(token) = token else {
        return Err(Trust::NotTrusted);
    };
    let body = json!({"type": "client", "trust_token": token});
    client
        .request_settled(Method::POST, "/1.0/certificates", Some(&body))
        .await
        .map_err(|e| match e {
            crate::Error::Api { code: 403, message } => Trust::Refused(message),
            other => Trust::Failed(Error::Client(other)),
        })?;
    match auth(client).await?.as_str() {
        "trusted" => Ok(true),
        other => Err(Trust::Failed(Error::Usage(format!(
            "the server took the token but still says auth {other:?}"
        )))),
    }
}

/// `GET /1.0`'s `auth`.
async fn auth(client: &Client) -> Result<String, Trust> {
    let server = client
        .get_value("/1.0")
        .await
        .map_err(|e| Trust::Failed(Error::Client(e)))?;
    Ok(server
        .get("auth")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// Ask on the terminal: print the fingerprint on stderr, read `y` or `n` from stdin.
pub fn ask_on_terminal(fingerprint: &str) -> std::io::Result<bool> {
    let mut stderr = std::io::stderr();
    write!(stderr, "Certificate fingerprint: {fingerprint}\nok (y/n)? ")?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: &str, protocol: Option<&str>) -> AddArgs {
        AddArgs {
            name: "r1".into(),
            addr: addr.into(),
            protocol: protocol.map(str::to_string),
            accept_certificate: false,
            token: None,
        }
    }

    fn token() -> AddToken {
        AddToken {
            client_name: "laptop".into(),
            fingerprint: "ab".repeat(32),
            addresses: vec!["127.0.0.1:8443".into(), "10.0.0.1:8443".into()],
            secret: "s".into(),
            expires_at: None,
        }
    }

    #[test]
    fn what_an_add_means() {
        let server = |addrs: &[&str]| Kind::Server {
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            token: None,
        };
        let cases: Vec<(AddArgs, Kind)> = vec![
            (
                args("http://h:80", None),
                Kind::Images("http://h:80".into()),
            ),
            (args("https://h", None), Kind::Probe("https://h".into())),
            (
                args("https://h", Some("simplestreams")),
                Kind::Images("https://h".into()),
            ),
            (args("https://h", Some("ctl")), server(&["h:8443"])),
            (args("https://h:9443", Some("incus")), server(&["h:9443"])),
            (args("127.0.0.1:9443", None), server(&["127.0.0.1:9443"])),
            (
                AddArgs {
                    accept_certificate: true,
                    ..args("https://h", None)
                },
                server(&["h:8443"]),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(kind(&args).ok(), Some(want), "{args:?}");
        }
        let text = token::encode(&token());
        let want = Kind::Server {
            addrs: token().addresses,
            token: Some((text.clone(), token())),
        };
        assert_eq!(kind(&args(&text, None)).ok(), Some(want));
        let with_flag = AddArgs {
            token: Some(text.clone()),
            ..args("https://127.0.0.1:1", None)
        };
        assert!(matches!(
            kind(&with_flag),
            Ok(Kind::Server { addrs, token: Some(_) }) if addrs == ["127.0.0.1:1"]
        ));
        assert!(kind(&args(&text, Some("simplestreams"))).is_err());
        assert!(kind(&args("https://h", Some("ftp"))).is_err());
        assert!(kind(&args("http://h", Some("ctl"))).is_err());
        let bad_flag = AddArgs {
            token: Some("nope".into()),
            ..args("https://h", None)
        };
        assert!(kind(&bad_flag).is_err());
    }

    #[test]
    fn without_a_terminal_the_fingerprint_must_be_accepted_by_flag() {
        let err = accept("h:1", "abcd", None).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("--accept-certificate") && e.contains("abcd")),
            "{err:?}"
        );
        let mut yes = |_: &str| Ok(true);
        assert!(accept("h:1", "abcd", Some(&mut yes)).is_ok());
        let mut no = |_: &str| Ok(false);
        assert!(accept("h:1", "abcd", Some(&mut no)).is_err());
    }
}
