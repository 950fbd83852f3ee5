//! `ctl config show|get|set|unset` with no instance named: the server's own config
//! (`GET /1.0`, `PATCH /1.0`), as `incus config` does. Keys such as `core.https_address`
//! take effect at once; an empty value unsets a key.
//!
//! Which form a command line is follows Incus: `set KEY=VALUE...`, `set KEY VALUE`,
//! `get KEY`, `unset KEY` and `show` are the server's; `REMOTE:` in the instance's place
//! (`set r1: KEY VALUE`) is that remote's server; anything else names an instance. The
//! functions here decide, both before the remote is stripped (`crate::targets`) and after.

use std::io::Write;

use ctl_api::instance::ConfigMap;
use hyper::Method;
use serde_json::{Value, json};

use super::super::Error;
use crate::Client;

/// Whether `config set NAME VALUES...` sets server keys: `NAME` is empty (it was `REMOTE:`)
/// or a `KEY=VALUE`, or the line is `KEY VALUE`.
pub fn set_is_server(name: &str, values: &[String]) -> bool {
    name.is_empty() || name.contains('=') || (values.len() == 1 && !values[0].contains('='))
}

/// Whether `config get NAME [KEY]` reads a server key (`get KEY`, `get REMOTE: KEY`).
pub fn get_is_server(name: &str, key: Option<&str>) -> bool {
    key.is_none() || name.is_empty()
}

/// Whether `config unset NAME [KEYS...]` unsets server keys (`unset KEY`,
/// `unset REMOTE: KEY...`).
pub fn unset_is_server(name: &str, keys: &[String]) -> bool {
    keys.is_empty() || name.is_empty()
}

/// The server-form arguments of `set`/`unset`: `NAME` joined to the rest unless it was a
/// bare `REMOTE:` (now empty).
pub fn server_args(name: &str, rest: &[String]) -> Vec<String> {
    let mut args = Vec::with_capacity(rest.len() + 1);
    if !name.is_empty() {
        args.push(name.to_string());
    }
    args.extend(rest.iter().cloned());
    args
}

/// The server's config (`GET /1.0`'s `config`).
pub async fn config(client: &Client) -> Result<ConfigMap, Error> {
    let server = client.get_value("/1.0").await?;
    let config = server.get("config").cloned().unwrap_or(Value::Null);
    if config.is_null() {
        return Ok(ConfigMap::new());
    }
    serde_json::from_value(config).map_err(|source| {
        Error::Client(crate::Error::Decode {
            what: "server config".into(),
            source,
        })
    })
}

/// `config show`: the server's config as YAML (`config:` and its keys, as Incus prints it).
pub async fn show(client: &Client, out: &mut dyn Write) -> Result<(), Error> {
    let config = config(client).await?;
    let yaml = serde_yaml_ng::to_string(&json!({ "config": config }))
        .map_err(|e| Error::Output(crate::output::Error::Yaml(e)))?;
    out.write_all(yaml.as_bytes())?;
    Ok(())
}

/// `config get KEY`: the value, an empty line when unset.
pub async fn get(client: &Client, key: &str, out: &mut dyn Write) -> Result<(), Error> {
    let config = config(client).await?;
    writeln!(out, "{}", config.get(key).map_or("", String::as_str))?;
    Ok(())
}

/// `config set`/`unset`: merge `changes` into the server's config (`PATCH /1.0`; an empty
/// value unsets).
pub async fn patch(client: &Client, changes: ConfigMap) -> Result<(), Error> {
    let body = json!({ "config": changes });
    client
        .request_settled(Method::PATCH, "/1.0", Some(&body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeServer, sync_envelope};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn which_lines_are_server_config() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("core.https_address", &["127.0.0.1:8443"], true),
            ("core.https_address=127.0.0.1:8443", &[], true),
            ("a=1", &["b=2"], true),
            ("", &["core.https_address", "127.0.0.1:8443"], true),
            ("", &["k=v"], true),
            ("c1", &["limits.cpu", "2"], false),
            ("c1", &["limits.cpu=2"], false),
            ("c1", &["limits.cpu=2", "limits.memory=1GiB"], false),
        ];
        for (name, values, server) in cases {
            assert_eq!(
                set_is_server(name, &strings(values)),
                *server,
                "set {name} {values:?}"
            );
        }
        assert!(get_is_server("core.https_address", None));
        assert!(get_is_server("", Some("core.https_address")));
        assert!(!get_is_server("c1", Some("limits.cpu")));
        assert!(unset_is_server("core.https_address", &[]));
        assert!(unset_is_server("", &strings(&["a", "b"])));
        assert!(!unset_is_server("c1", &strings(&["limits.cpu"])));
        assert_eq!(server_args("", &strings(&["k", "v"])), strings(&["k", "v"]));
        assert_eq!(server_args("k", &strings(&["v"])), strings(&["k", "v"]));
    }

    #[tokio::test]
    async fn server_config_is_read_and_patched() {
        let answers = vec![
            sync_envelope(json!({"config": {"core.https_address": "127.0.0.1:8443"},
                                 "auth": "trusted"})),
            sync_envelope(json!({})),
            sync_envelope(json!({"config": null})),
        ];
        let server = FakeServer::serve(answers);
        let client = server.client();
        let mut out = Vec::new();
        let shown = show(&client, &mut out).await;
        assert!(shown.is_ok(), "{shown:?}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "config:\n  core.https_address: 127.0.0.1:8443\n"
        );
        let changes = ConfigMap::from([("core.https_address".to_string(), String::new())]);
        assert!(patch(&client, changes).await.is_ok());
        let mut out = Vec::new();
        assert!(get(&client, "core.https_address", &mut out).await.is_ok());
        assert_eq!(out, b"\n");
        let seen = server.seen();
        assert_eq!(seen[1].method, "PATCH");
        assert_eq!(seen[1].path, "/1.0");
        assert_eq!(seen[1].body, json!({"config": {"core.https_address": ""}}));
    }
}
