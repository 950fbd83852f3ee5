//! `ctl storage …`: storage pools, shaped like `incus storage`: list, show, create, get, set,
//! unset, edit, delete, info; `ctl storage volume …` is in [`volume`] (custom volumes and
//! their snapshots in [`snapshot`], disk devices for them in [`attach`]).
//!
//! Every change is sent as the API wants it (`POST` create, `PATCH` merge for `set`/`unset`,
//! where an empty value unsets a key, `PUT` replace for `edit`) and may be answered sync or
//! with an operation, which is waited for.

pub mod attach;
pub mod snapshot;
pub mod volume;

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::instance::ConfigMap;
use ctl_api::{StoragePool, StoragePoolPut, StoragePoolResources, StoragePoolsPost};
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::config::{Scalar, edit, present, set_values, strings, unset_values};
use super::{Error, collect, parse_key_value};
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl storage` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StorageCommand {
    /// List the storage pools
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a storage pool as YAML
    Show(PoolArgs),
    /// Create a storage pool: POOL DRIVER [KEY=VALUE...] (drivers: dir, btrfs)
    Create(CreateArgs),
    /// Print the value of a pool config key: POOL KEY
    Get(GetArgs),
    /// Set pool config keys: POOL KEY=VALUE... or POOL KEY VALUE
    Set(SetArgs),
    /// Unset pool config keys: POOL KEY...
    Unset(UnsetArgs),
    /// Edit a pool as YAML: read from stdin, or in $VISUAL/$EDITOR on a terminal
    Edit(PoolArgs),
    /// Delete storage pools (refused while something uses one)
    #[command(visible_alias = "rm")]
    Delete(PoolsArgs),
    /// Show a pool's space and inodes, and what uses it
    Info(InfoArgs),
    /// Manage storage volumes (custom volumes, and the volumes of instances and images)
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
}

/// Arguments of `ctl storage list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// One pool.
#[derive(Debug, Clone, Args)]
pub struct PoolArgs {
    /// Storage pool name
    pub pool: String,
}

/// Several pools.
#[derive(Debug, Clone, Args)]
pub struct PoolsArgs {
    /// Storage pool names
    #[arg(required = true)]
    pub pools: Vec<String>,
}

/// Arguments of `ctl storage create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Storage pool name
    pub pool: String,
    /// Storage driver (`dir`, `btrfs`)
    pub driver: String,
    /// KEY=VALUE config pairs (e.g. source=/srv/pool, size=10GiB)
    #[arg(value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Description
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Arguments of `ctl storage get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Storage pool name
    pub pool: String,
    /// Config key
    pub key: String,
}

/// Arguments of `ctl storage set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Storage pool name
    pub pool: String,
    /// KEY=VALUE pairs, or one KEY and its VALUE
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

/// Arguments of `ctl storage unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// Storage pool name
    pub pool: String,
    /// Config keys
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

/// Arguments of `ctl storage info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Storage pool name
    pub pool: String,
    /// Show sizes in bytes rather than in human units
    #[arg(long)]
    pub bytes: bool,
}

/// Columns of `ctl storage list` (as `incus storage list`).
pub const HEADER: [&str; 6] = [
    "NAME",
    "DRIVER",
    "SOURCE",
    "DESCRIPTION",
    "USED BY",
    "STATE",
];

/// `/1.0/storage-pools/{pool}`.
pub fn pool_path(pool: &str) -> String {
    format!("/1.0/storage-pools/{}", encode_segment(pool))
}

/// Decode an answer's metadata as `T`.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|source| {
        Error::Client(crate::Error::Decode {
            what: what.into(),
            source,
        })
    })
}

/// Send a change and settle it: a sync answer is done, an operation is waited for.
pub(crate) async fn send(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<(), crate::Error> {
    let body = body
        .map(serde_json::to_value)
        .transpose()
        .map_err(|source| crate::Error::Decode {
            what: "request body".into(),
            source,
        })?;
    client
        .request_settled(method, path, body.as_ref())
        .await
        .map(drop)
}

/// The `KEY=VALUE` arguments of a create.
pub(crate) fn key_values(args: &[String]) -> Result<ConfigMap, Error> {
    args.iter()
        .map(|a| parse_key_value(a).map_err(Error::Usage))
        .collect()
}

/// Read a whole edited document from stdin.
pub(crate) async fn read_stdin() -> Result<String, Error> {
    let mut text = String::new();
    tokio::io::stdin()
        .read_to_string(&mut text)
        .await
        .map_err(|source| crate::Error::Io {
            what: "cannot read the document from stdin",
            source,
        })?;
    Ok(text)
}

/// A YAML document (ends with a newline).
pub(crate) fn to_yaml(value: &impl Serialize) -> Result<String, Error> {
    serde_yaml_ng::to_string(value).map_err(|e| Error::Output(crate::output::Error::Yaml(e)))
}

/// Refuse an edited document that is empty (or only comments) rather than send a no-op.
pub(crate) fn not_empty(text: &str) -> Result<(), Error> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    if value.is_null() {
        return Err(Error::Yaml(serde::de::Error::custom(
            "the document is empty",
        )));
    }
    Ok(())
}

/// Table rows of pools, sorted by name.
pub fn rows(pools: &[StoragePool]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&StoragePool> = pools.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .into_iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.driver.clone(),
                p.config.get("source").cloned().unwrap_or_default(),
                p.description.clone(),
                p.used_by.len().to_string(),
                p.status.to_uppercase(),
            ]
        })
        .collect()
}

/// An edited pool document (`ctl storage show` output). Only `description` and `config`
/// are sent; the other fields are shown for reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditedPool {
    #[serde(default, rename = "name")]
    _name: Option<String>,
    #[serde(default, rename = "driver")]
    _driver: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    config: Option<BTreeMap<String, Scalar>>,
    #[serde(default, rename = "used_by")]
    _used_by: Option<Vec<String>>,
    #[serde(default, rename = "status")]
    _status: Option<String>,
    #[serde(default, rename = "locations")]
    _locations: Option<Vec<String>>,
}

/// The `PUT /1.0/storage-pools/{pool}` body of an edited document.
pub fn parse_edited_pool(text: &str) -> Result<StoragePoolPut, Error> {
    not_empty(text)?;
    let edited: EditedPool = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    Ok(StoragePoolPut {
        description: edited.description,
        config: edited.config.map(strings),
    })
}

async fn put_edited_pool(client: &Client, pool: &str, text: &str) -> Result<(), Error> {
    let body = parse_edited_pool(text)?;
    send(client, Method::PUT, &pool_path(pool), Some(&body)).await?;
    Ok(())
}

/// What uses a pool, grouped by kind as `incus storage info` shows it: `instances`,
/// `profiles`, `images`, `volumes` (`TYPE/NAME` unless custom). Snapshots are left out.
pub fn used_by_groups(used_by: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for url in used_by {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        let rest = path.strip_prefix("/1.0/").unwrap_or(path);
        let fields: Vec<&str> = rest.split('/').collect();
        if fields.contains(&"snapshots") {
            continue;
        }
        let (kind, name) = match fields.as_slice() {
            ["storage-pools", _, "volumes", "custom", name] => ("volumes", name.to_string()),
            ["storage-pools", _, "volumes", kind, name] => ("volumes", format!("{kind}/{name}")),
            [kind, name] => (*kind, name.to_string()),
            _ => ("unrecognized", path.to_string()),
        };
        groups.entry(kind.to_string()).or_default().push(name);
    }
    groups
}

/// The `info:` part of `ctl storage info`, in Incus's words.
#[derive(Debug, Serialize)]
struct PoolInfo {
    name: String,
    driver: String,
    description: String,
    #[serde(rename = "total space")]
    total_space: Size,
    #[serde(rename = "space used")]
    space_used: Size,
    #[serde(rename = "total inodes")]
    total_inodes: u64,
    #[serde(rename = "inodes used")]
    inodes_used: u64,
}

/// A size in bytes (`--bytes`) or in human units.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Human(String),
}

#[derive(Debug, Serialize)]
struct PoolInfoDocument {
    info: PoolInfo,
    #[serde(rename = "used by")]
    used_by: BTreeMap<String, Vec<String>>,
}

/// The text of `ctl storage info`: the pool, its space (human sizes unless `bytes`) and
/// inodes, and what uses it.
pub fn info_text(
    pool: &StoragePool,
    resources: &StoragePoolResources,
    bytes: bool,
) -> Result<String, Error> {
    let size = |n: u64| {
        if bytes {
            Size::Bytes(n)
        } else {
            Size::Human(output::human_size(n))
        }
    };
    to_yaml(&PoolInfoDocument {
        info: PoolInfo {
            name: pool.name.clone(),
            driver: pool.driver.clone(),
            description: pool.description.clone(),
            total_space: size(resources.space.total),
            space_used: size(resources.space.used),
            total_inodes: resources.inodes.total,
            inodes_used: resources.inodes.used,
        },
        used_by: used_by_groups(&pool.used_by),
    })
}

/// Run a storage subcommand. `stdin_is_terminal` decides whether `edit` opens an editor or
/// reads the document from stdin.
pub async fn run(
    client: &Client,
    command: &StorageCommand,
    stdin_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        StorageCommand::List(args) => {
            let raw = client.get_value("/1.0/storage-pools?recursion=1").await?;
            let pools: Vec<StoragePool> = match args.format {
                Format::Table | Format::Csv => decode("storage pool list", raw.clone())?,
                _ => Vec::new(),
            };
            out.write_all(output::render(args.format, &HEADER, &rows(&pools), &raw)?.as_bytes())?;
        }
        StorageCommand::Show(args) => {
            let pool: StoragePool = client.get(&pool_path(&args.pool)).await?;
            out.write_all(to_yaml(&pool)?.as_bytes())?;
        }
        StorageCommand::Create(args) => {
            let body = StoragePoolsPost {
                name: args.pool.clone(),
                driver: args.driver.clone(),
                description: args.description.clone(),
                config: key_values(&args.config)?,
            };
            send(client, Method::POST, "/1.0/storage-pools", Some(&body)).await?;
            writeln!(out, "Storage pool {} created", args.pool)?;
        }
        StorageCommand::Get(args) => {
            let pool: StoragePool = client.get(&pool_path(&args.pool)).await?;
            writeln!(
                out,
                "{}",
                pool.config.get(&args.key).map_or("", String::as_str)
            )?;
        }
        StorageCommand::Set(args) => {
            let body = StoragePoolPut {
                config: Some(set_values(&args.values)?),
                ..Default::default()
            };
            send(client, Method::PATCH, &pool_path(&args.pool), Some(&body)).await?;
        }
        StorageCommand::Unset(args) => {
            let body = StoragePoolPut {
                config: Some(unset_values(&args.keys)?),
                ..Default::default()
            };
            send(client, Method::PATCH, &pool_path(&args.pool), Some(&body)).await?;
        }
        StorageCommand::Edit(args) => {
            if stdin_is_terminal {
                let pool: StoragePool = client.get(&pool_path(&args.pool)).await?;
                edit::in_editor(to_yaml(&pool)?, async |text: &str| {
                    put_edited_pool(client, &args.pool, text).await
                })
                .await?;
            } else {
                put_edited_pool(client, &args.pool, &read_stdin().await?).await?;
            }
        }
        StorageCommand::Delete(args) => {
            let mut failures = Vec::new();
            for pool in &args.pools {
                match send(client, Method::DELETE, &pool_path(pool), None::<&()>).await {
                    Ok(()) => writeln!(out, "Storage pool {pool} deleted")?,
                    Err(e) => failures.push((pool.clone(), e)),
                }
            }
            collect(args.pools.len(), failures)?;
        }
        StorageCommand::Info(args) => {
            let pool: StoragePool = client.get(&pool_path(&args.pool)).await?;
            let resources: StoragePoolResources = client
                .get(&format!("{}/resources", pool_path(&args.pool)))
                .await?;
            out.write_all(info_text(&pool, &resources, args.bytes)?.as_bytes())?;
        }
        StorageCommand::Volume { command } => {
            volume::run(client, command, stdin_is_terminal, out).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::test_support::async_envelope;
    use crate::test_support::{FakeServer, Seen, error_envelope, operation, sync_envelope};
    use clap::Parser;
    use serde_json::json;

    /// A pool list in the shape Incus answers `GET /1.0/storage-pools?recursion=1`.
    fn pools_json() -> Value {
        json!([
            {"name": "fast", "driver": "btrfs", "description": "", "status": "Created",
             "config": {"source": "/var/lib/ctld/storage-pools/fast", "size": "10GiB"},
             "used_by": [], "locations": ["none"]},
            {"name": "default", "driver": "dir", "description": "the first pool",
             "status": "Created", "config": {"source": "/var/lib/ctld/storage-pools/default"},
             "used_by": ["/1.0/instances/c1", "/1.0/profiles/default",
                         "/1.0/storage-pools/default/volumes/custom/data"],
             "locations": ["none"]}
        ])
    }

    /// Parse `ctl storage ARGS...` into its subcommand.
    pub(crate) fn parse(args: &[&str]) -> StorageCommand {
        let argv = ["ctl", "storage"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Storage { command },
                ..
            }) => command,
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// Run `ctl storage ARGS...` against a fake server answering `answers`; returns the
    /// result, the output and the requests the server saw.
    pub(crate) async fn run_against(
        args: &[&str],
        answers: Vec<Value>,
    ) -> (Result<(), Error>, String, Vec<Seen>) {
        let command = parse(args);
        let server = FakeServer::serve(answers);
        let mut out = Vec::new();
        let result = run(&server.client(), &command, false, &mut out).await;
        (
            result,
            String::from_utf8_lossy(&out).into_owned(),
            server.seen(),
        )
    }

    /// The async answer of an operation, then its successful wait.
    pub(crate) fn settled_operation(id: &str) -> [Value; 2] {
        [
            async_envelope(operation(id, 103, "")),
            sync_envelope(operation(id, 200, "")),
        ]
    }

    /// The wait request of operation `id`.
    pub(crate) fn wait(id: &str) -> Seen {
        Seen::new(
            "GET",
            &format!("/1.0/operations/{id}/wait?timeout=-1"),
            Value::Null,
        )
    }

    #[test]
    fn list_rows_are_sorted_and_show_source_and_use_count() {
        let pools: Vec<StoragePool> = serde_json::from_value(pools_json()).unwrap_or_default();
        assert_eq!(
            rows(&pools),
            [
                vec![
                    "default",
                    "dir",
                    "/var/lib/ctld/storage-pools/default",
                    "the first pool",
                    "3",
                    "CREATED"
                ],
                vec![
                    "fast",
                    "btrfs",
                    "/var/lib/ctld/storage-pools/fast",
                    "",
                    "0",
                    "CREATED"
                ]
            ]
        );
    }

    #[tokio::test]
    async fn list_formats() {
        let (result, out, seen) =
            run_against(&["list", "-f", "csv"], vec![sync_envelope(pools_json())]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [Seen::new(
                "GET",
                "/1.0/storage-pools?recursion=1",
                Value::Null
            )]
        );
        assert_eq!(
            out,
            "NAME,DRIVER,SOURCE,DESCRIPTION,USED BY,STATE\n\
             default,dir,/var/lib/ctld/storage-pools/default,the first pool,3,CREATED\n\
             fast,btrfs,/var/lib/ctld/storage-pools/fast,,0,CREATED\n"
        );
        let (_, out, _) = run_against(&["ls"], vec![sync_envelope(pools_json())]).await;
        assert!(out.starts_with("+---"), "{out}");
        assert!(out.contains("| NAME "), "{out}");
        assert!(out.contains("the first pool"), "{out}");
        let (_, out, _) = run_against(
            &["list", "--format", "json"],
            vec![sync_envelope(pools_json())],
        )
        .await;
        assert_eq!(serde_json::from_str::<Value>(&out).ok(), Some(pools_json()));
    }

    #[tokio::test]
    async fn create_set_unset_delete_send_the_api_bodies() {
        let (result, out, seen) = run_against(
            &[
                "create",
                "fast",
                "btrfs",
                "size=10GiB",
                "source=/srv/fast",
                "--description",
                "quick",
            ],
            vec![sync_envelope(json!({}))],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Storage pool fast created\n");
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                "/1.0/storage-pools",
                json!({"name": "fast", "driver": "btrfs", "description": "quick",
                       "config": {"size": "10GiB", "source": "/srv/fast"}})
            )]
        );

        // An operation is waited for.
        let (result, _, seen) = run_against(
            &["set", "fast", "size=20GiB", "user.a=b=c"],
            settled_operation("op1").to_vec(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [
                Seen::new(
                    "PATCH",
                    "/1.0/storage-pools/fast",
                    json!({"config": {"size": "20GiB", "user.a": "b=c"}})
                ),
                wait("op1")
            ]
        );
        let (_, _, seen) = run_against(
            &["set", "fast", "size", "20GiB"],
            vec![sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(seen[0].body, json!({"config": {"size": "20GiB"}}));

        let (_, _, seen) = run_against(
            &["unset", "fast", "size", "user.a"],
            vec![sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new(
                "PATCH",
                "/1.0/storage-pools/fast",
                json!({"config": {"size": "", "user.a": ""}})
            )]
        );

        let (result, out, seen) =
            run_against(&["delete", "fast"], vec![sync_envelope(json!({}))]).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Storage pool fast deleted\n");
        assert_eq!(
            seen,
            [Seen::new("DELETE", "/1.0/storage-pools/fast", Value::Null)]
        );
    }

    #[tokio::test]
    async fn failures_are_reported_as_the_server_words_them() {
        let (result, _, _) = run_against(
            &["delete", "default"],
            vec![error_envelope(
                400,
                "storage pool \"default\" is in use by 3 entities",
            )],
        )
        .await;
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            Some("storage pool \"default\" is in use by 3 entities")
        );
        let (result, _, seen) = run_against(
            &["create", "p", "zfs"],
            vec![
                async_envelope(operation("op2", 103, "")),
                sync_envelope(operation("op2", 400, "unknown driver \"zfs\"")),
            ],
        )
        .await;
        assert_eq!(seen.len(), 2);
        assert_eq!(
            result.err().map(|e| e.to_string()).as_deref(),
            Some("unknown driver \"zfs\"")
        );
    }

    #[tokio::test]
    async fn show_get_and_info() {
        let pool = pools_json()[1].clone();
        let (_, out, seen) =
            run_against(&["show", "default"], vec![sync_envelope(pool.clone())]).await;
        assert_eq!(
            seen,
            [Seen::new("GET", "/1.0/storage-pools/default", Value::Null)]
        );
        assert!(out.starts_with("name: default\ndriver: dir\n"), "{out}");
        // What show prints, edit takes back.
        let put = parse_edited_pool(&out).ok();
        assert_eq!(
            put.map(|p| serde_json::to_value(p).unwrap_or_default()),
            Some(json!({"description": "the first pool",
                        "config": {"source": "/var/lib/ctld/storage-pools/default"}}))
        );

        let (_, out, _) = run_against(
            &["get", "default", "source"],
            vec![sync_envelope(pool.clone())],
        )
        .await;
        assert_eq!(out, "/var/lib/ctld/storage-pools/default\n");

        let resources = json!({"space": {"used": 1_610_612_736u64, "total": 10_737_418_240u64},
                               "inodes": {"used": 1200, "total": 655_360}});
        let (result, out, seen) = run_against(
            &["info", "default"],
            vec![
                sync_envelope(pool.clone()),
                sync_envelope(resources.clone()),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [
                Seen::new("GET", "/1.0/storage-pools/default", Value::Null),
                Seen::new("GET", "/1.0/storage-pools/default/resources", Value::Null)
            ]
        );
        assert_eq!(
            out,
            "info:\n  name: default\n  driver: dir\n  description: the first pool\n  \
             total space: 10.00GiB\n  space used: 1.50GiB\n  total inodes: 655360\n  \
             inodes used: 1200\n\
             used by:\n  instances:\n  - c1\n  profiles:\n  - default\n  volumes:\n  - data\n"
        );
        let (_, out, _) = run_against(
            &["info", "default", "--bytes"],
            vec![sync_envelope(pool), sync_envelope(resources)],
        )
        .await;
        assert!(out.contains("total space: 10737418240\n"), "{out}");
    }

    #[tokio::test]
    async fn edit_puts_the_document() -> Result<(), Error> {
        let server = FakeServer::serve(vec![sync_envelope(json!({}))]);
        put_edited_pool(
            &server.client(),
            "fast",
            "name: fast\ndriver: btrfs\ndescription: new\nconfig:\n  size: 20GiB\n",
        )
        .await?;
        assert_eq!(
            server.seen(),
            [Seen::new(
                "PUT",
                "/1.0/storage-pools/fast",
                json!({"description": "new", "config": {"size": "20GiB"}})
            )]
        );
        assert!(parse_edited_pool("").is_err());
        assert!(parse_edited_pool("drivr: dir\n").is_err());
        Ok(())
    }

    #[test]
    fn used_by_is_grouped_by_kind() {
        let used = [
            "/1.0/instances/c2?project=default",
            "/1.0/instances/c1",
            "/1.0/storage-pools/p/volumes/container/c1",
            "/1.0/storage-pools/p/volumes/custom/data/snapshots/s0",
            "/1.0/images/abc",
        ]
        .map(String::from);
        let groups = used_by_groups(&used);
        assert_eq!(groups["instances"], ["c2", "c1"]);
        assert_eq!(groups["volumes"], ["container/c1"]);
        assert_eq!(groups["images"], ["abc"]);
        assert_eq!(groups.len(), 3);
    }
}
