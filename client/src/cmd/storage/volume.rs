//! `ctl storage volume …`: the volumes of a pool, shaped like `incus storage volume`: list,
//! create, show, get, set, unset, edit, delete, rename, copy, move, info; snapshots and
//! restore are in [`super::snapshot`], attach and detach in [`super::attach`].
//!
//! A volume argument is `[TYPE/]NAME[/SNAPSHOT]` as in Incus: `TYPE` is `custom` (the
//! default), `container`, `virtual-machine` or `image`.

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::instance::ConfigMap;
use ctl_api::{
    StorageVolume, StorageVolumePost, StorageVolumePut, StorageVolumeSnapshot, StorageVolumeSource,
    StorageVolumeState, StorageVolumesPost,
};
use hyper::Method;
use serde::Deserialize;
use serde_json::Value;

use super::super::config::{Scalar, edit, present, set_values, strings, unset_values};
use super::super::{Error, collect};
use super::{
    attach, decode, key_values, not_empty, pool_path, read_stdin, send, snapshot, to_yaml,
};
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl storage volume` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum VolumeCommand {
    /// List a pool's volumes (custom ones, and those of instances and images)
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create a custom volume: POOL VOLUME [KEY=VALUE...] (e.g. size=1GiB)
    Create(CreateArgs),
    /// Show a volume (or a snapshot, VOLUME/SNAPSHOT) as YAML: POOL [TYPE/]VOLUME
    Show(VolumeArgs),
    /// Print the value of a volume config key: POOL [TYPE/]VOLUME KEY
    Get(GetArgs),
    /// Set volume config keys: POOL [TYPE/]VOLUME KEY=VALUE... or KEY VALUE
    Set(SetArgs),
    /// Unset volume config keys: POOL [TYPE/]VOLUME KEY...
    Unset(UnsetArgs),
    /// Edit a volume as YAML: read from stdin, or in $VISUAL/$EDITOR on a terminal
    Edit(VolumeArgs),
    /// Delete custom volumes (or snapshots, VOLUME/SNAPSHOT): POOL VOLUME...
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Rename a custom volume (or a snapshot, VOLUME/SNAPSHOT): POOL OLD NEW
    Rename(RenameArgs),
    /// Copy a custom volume (or a snapshot): POOL/VOLUME[/SNAPSHOT] [POOL/]NEW
    #[command(visible_alias = "cp")]
    Copy(CopyArgs),
    /// Move a custom volume to a new name or another pool: POOL/VOLUME [POOL/]NEW
    #[command(visible_alias = "mv")]
    Move(MoveArgs),
    /// Take, list, show, rename, delete and restore snapshots of a custom volume
    /// (`snapshot POOL VOLUME [SNAPSHOT]` takes one)
    Snapshot(snapshot::SnapshotArgs),
    /// Restore a custom volume to a snapshot: POOL VOLUME SNAPSHOT
    Restore(snapshot::OneArgs),
    /// Show a volume's usage and snapshots: POOL [TYPE/]VOLUME
    Info(VolumeArgs),
    /// Attach a custom volume to an instance as a disk: POOL VOLUME INSTANCE [DEVICE] PATH
    Attach(attach::AttachArgs),
    /// Detach a custom volume from an instance: POOL VOLUME INSTANCE [DEVICE]
    Detach(attach::DetachArgs),
    /// Attach a custom volume to a profile as a disk: POOL VOLUME PROFILE [DEVICE] PATH
    AttachProfile(attach::AttachArgs),
    /// Detach a custom volume from a profile: POOL VOLUME PROFILE [DEVICE]
    DetachProfile(attach::DetachArgs),
}

/// Arguments of `ctl storage volume list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Storage pool name
    pub pool: String,
    /// Only volumes of this type (`custom`, `container`, `image`)
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `ctl storage volume create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume name
    pub volume: String,
    /// KEY=VALUE config pairs
    #[arg(value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Description
    #[arg(long, default_value = "")]
    pub description: String,
}

/// One volume of one pool.
#[derive(Debug, Clone, Args)]
pub struct VolumeArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume: [TYPE/]NAME
    pub volume: String,
}

/// Arguments of `ctl storage volume get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume: [TYPE/]NAME
    pub volume: String,
    /// Config key
    pub key: String,
}

/// Arguments of `ctl storage volume set`.
#[derive(Debug, Clone, Args)]
pub struct SetArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume: [TYPE/]NAME
    pub volume: String,
    /// KEY=VALUE pairs, or one KEY and its VALUE
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub values: Vec<String>,
}

/// Arguments of `ctl storage volume unset`.
#[derive(Debug, Clone, Args)]
pub struct UnsetArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume: [TYPE/]NAME
    pub volume: String,
    /// Config keys
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
}

/// Arguments of `ctl storage volume delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Storage pool name
    pub pool: String,
    /// Volumes (NAME, or NAME/SNAPSHOT)
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

/// Arguments of `ctl storage volume rename`.
#[derive(Debug, Clone, Args)]
pub struct RenameArgs {
    /// Storage pool name
    pub pool: String,
    /// Volume (or VOLUME/SNAPSHOT)
    pub old: String,
    /// New name (for a snapshot: SNAPSHOT or VOLUME/SNAPSHOT)
    pub new: String,
}

/// Arguments of `ctl storage volume copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// Source: POOL/VOLUME or POOL/VOLUME/SNAPSHOT
    pub source: String,
    /// Target: POOL/VOLUME, or VOLUME in the source's pool
    pub target: String,
    /// Copy the volume without its snapshots
    #[arg(long)]
    pub volume_only: bool,
}

/// Arguments of `ctl storage volume move`.
#[derive(Debug, Clone, Args)]
pub struct MoveArgs {
    /// Source: POOL/VOLUME
    pub source: String,
    /// Target: POOL/VOLUME, or VOLUME in the source's pool
    pub target: String,
}

/// Columns of `ctl storage volume list` (as `incus storage volume list`).
pub const HEADER: [&str; 5] = ["TYPE", "NAME", "DESCRIPTION", "CONTENT-TYPE", "USED BY"];

/// Volume types a `[TYPE/]NAME` argument may start with.
pub const VOLUME_TYPES: [&str; 4] = ["custom", "container", "virtual-machine", "image"];

/// A volume argument, `[TYPE/]NAME[/SNAPSHOT]`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRef {
    pub kind: String,
    pub name: String,
    pub snapshot: Option<String>,
}

impl VolumeRef {
    /// Read `[TYPE/]NAME[/SNAPSHOT]`; the type defaults to `custom`.
    pub fn parse(arg: &str) -> Result<VolumeRef, Error> {
        let (kind, rest) = match arg.split_once('/') {
            Some((kind, rest)) if VOLUME_TYPES.contains(&kind) => (kind, rest),
            _ => ("custom", arg),
        };
        let (name, snapshot) = match rest.split_once('/') {
            Some((name, snapshot)) => (name, Some(snapshot)),
            None => (rest, None),
        };
        if name.is_empty() || snapshot.is_some_and(|s| s.is_empty() || s.contains('/')) {
            return Err(Error::Usage(format!(
                "invalid volume {arg:?}: expected [TYPE/]NAME or NAME/SNAPSHOT"
            )));
        }
        Ok(VolumeRef {
            kind: kind.to_string(),
            name: name.to_string(),
            snapshot: snapshot.map(str::to_string),
        })
    }

    /// A volume that must not name a snapshot (`what` says for which command).
    pub fn parse_volume(arg: &str, what: &str) -> Result<VolumeRef, Error> {
        let r = VolumeRef::parse(arg)?;
        if r.snapshot.is_some() {
            return Err(Error::Usage(format!(
                "{what} takes a volume, not a snapshot"
            )));
        }
        Ok(r)
    }

    /// `/1.0/storage-pools/{pool}/volumes/{type}/{name}` (the volume, even for a snapshot).
    pub fn volume_path(&self, pool: &str) -> String {
        volume_path(pool, &self.kind, &self.name)
    }

    /// The path of what the argument names: the volume, or its snapshot.
    pub fn path(&self, pool: &str) -> String {
        match &self.snapshot {
            Some(s) => format!("{}/snapshots/{}", self.volume_path(pool), encode_segment(s)),
            None => self.volume_path(pool),
        }
    }
}

/// `/1.0/storage-pools/{pool}/volumes/{kind}/{name}`.
pub fn volume_path(pool: &str, kind: &str, name: &str) -> String {
    format!(
        "{}/volumes/{}/{}",
        pool_path(pool),
        encode_segment(kind),
        encode_segment(name)
    )
}

/// A `POOL/VOLUME[/SNAPSHOT]` argument of copy and move: the pool and the volume (always
/// custom). Without a `/`, with `default_pool` the argument is a volume in that pool.
pub fn pool_volume(arg: &str, default_pool: Option<&str>) -> Result<(String, VolumeRef), Error> {
    let (pool, volume) = match (arg.split_once('/'), default_pool) {
        (Some((pool, volume)), _) if !pool.is_empty() => (pool.to_string(), volume),
        (None, Some(pool)) => (pool.to_string(), arg),
        _ => return Err(Error::Usage(format!("expected POOL/VOLUME, got {arg:?}"))),
    };
    let volume = VolumeRef::parse(volume)?;
    if volume.kind != "custom" {
        return Err(Error::Usage(format!(
            "only custom volumes are copied and moved, not {arg:?}"
        )));
    }
    Ok((pool, volume))
}

/// The name a volume or snapshot is listed under (`vol/snap` shows as `snap`).
pub(crate) fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Table rows of volumes, sorted by type then name.
pub fn rows(volumes: &[StorageVolume]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&StorageVolume> = volumes.iter().collect();
    sorted.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    sorted
        .into_iter()
        .map(|v| {
            vec![
                v.kind.clone(),
                v.name.clone(),
                v.description.clone(),
                v.content_type.clone(),
                v.used_by.len().to_string(),
            ]
        })
        .collect()
}

/// Keep the entries of a raw volume list whose `type` is `kind` (all without one).
pub fn filter_type(raw: Value, kind: Option<&str>) -> Value {
    match (raw, kind) {
        (Value::Array(items), Some(kind)) => Value::Array(
            items
                .into_iter()
                .filter(|v| v["type"].as_str() == Some(kind))
                .collect(),
        ),
        (raw, _) => raw,
    }
}

/// An edited volume document (`ctl storage volume show` output). Only `description` and
/// `config` are sent; the other fields are shown for reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditedVolume {
    #[serde(default, rename = "name")]
    _name: Option<String>,
    #[serde(default, rename = "type")]
    _kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    config: Option<BTreeMap<String, Scalar>>,
    #[serde(default, rename = "used_by")]
    _used_by: Option<Vec<String>>,
    #[serde(default, rename = "location")]
    _location: Option<String>,
    #[serde(default, rename = "content_type")]
    _content_type: Option<String>,
    #[serde(default, rename = "project")]
    _project: Option<String>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<String>,
}

/// The `PUT …/volumes/{type}/{name}` body of an edited document.
pub fn parse_edited_volume(text: &str) -> Result<StorageVolumePut, Error> {
    not_empty(text)?;
    let edited: EditedVolume = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
    Ok(StorageVolumePut {
        description: edited.description,
        config: edited.config.map(strings),
        restore: String::new(),
    })
}

async fn put_edited_volume(client: &Client, path: &str, text: &str) -> Result<(), Error> {
    let body = parse_edited_volume(text)?;
    send(client, Method::PUT, path, Some(&body)).await?;
    Ok(())
}

/// What a copy takes over from its source (a volume or a snapshot).
#[derive(Debug, Default, Deserialize)]
struct CopiedFields {
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: ConfigMap,
    #[serde(default)]
    content_type: String,
}

/// The `POST …/volumes/custom` body of a copy of `source` (in `source_pool`) named
/// `target`, with the source's description, config and content type, as `incus storage
/// volume copy` sends them.
fn copy_request(
    source_pool: &str,
    source: &VolumeRef,
    target: &str,
    copied: CopiedFields,
    volume_only: bool,
) -> StorageVolumesPost {
    let name = match &source.snapshot {
        Some(s) => format!("{}/{s}", source.name),
        None => source.name.clone(),
    };
    StorageVolumesPost {
        name: target.to_string(),
        kind: "custom".into(),
        description: copied.description,
        config: copied.config,
        content_type: copied.content_type,
        source: StorageVolumeSource {
            name,
            kind: "copy".into(),
            pool: source_pool.to_string(),
            volume_only,
        },
    }
}

/// The text of `ctl storage volume info`.
pub fn info_text(
    volume: &StorageVolume,
    state: &StorageVolumeState,
    snapshots: &[StorageVolumeSnapshot],
) -> String {
    let mut text = String::new();
    let mut line = |label: &str, value: &str| {
        text.push_str(label);
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    };
    line("Name", &volume.name);
    line("Type", &volume.kind);
    if !volume.description.is_empty() {
        line("Description", &volume.description);
    }
    if !volume.content_type.is_empty() {
        line("Content type", &volume.content_type);
    }
    if let Some(usage) = &state.usage {
        line("Usage", &output::human_size(usage.used));
        if usage.total > 0 {
            line("Total", &output::human_size(usage.total.unsigned_abs()));
        }
    }
    if !volume.created_at.is_empty() {
        line("Created", &volume.created_at);
    }
    if !volume.used_by.is_empty() {
        text.push_str("Used by:\n");
        for url in &volume.used_by {
            text.push_str("  - ");
            text.push_str(url.strip_prefix("/1.0/").unwrap_or(url));
            text.push('\n');
        }
    }
    if !snapshots.is_empty() {
        text.push_str("\nSnapshots:\n");
        let rows = snapshot::rows(snapshots);
        text.push_str(&output::render_table(&snapshot::HEADER, &rows, None));
    }
    text
}

/// Run a volume subcommand.
pub async fn run(
    client: &Client,
    command: &VolumeCommand,
    stdin_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        VolumeCommand::List(args) => {
            let path = format!("{}/volumes?recursion=1", pool_path(&args.pool));
            let raw = filter_type(client.get_value(&path).await?, args.kind.as_deref());
            let volumes: Vec<StorageVolume> = match args.format {
                Format::Table | Format::Csv => decode("storage volume list", raw.clone())?,
                _ => Vec::new(),
            };
            out.write_all(output::render(args.format, &HEADER, &rows(&volumes), &raw)?.as_bytes())?;
        }
        VolumeCommand::Create(args) => {
            let body = StorageVolumesPost {
                name: args.volume.clone(),
                kind: "custom".into(),
                description: args.description.clone(),
                config: key_values(&args.config)?,
                content_type: "filesystem".into(),
                ..Default::default()
            };
            let path = format!("{}/volumes/custom", pool_path(&args.pool));
            send(client, Method::POST, &path, Some(&body)).await?;
            writeln!(out, "Storage volume {} created", args.volume)?;
        }
        VolumeCommand::Show(args) => {
            let volume = VolumeRef::parse(&args.volume)?;
            let path = volume.path(&args.pool);
            let text = if volume.snapshot.is_some() {
                to_yaml(&client.get::<StorageVolumeSnapshot>(&path).await?)?
            } else {
                to_yaml(&client.get::<StorageVolume>(&path).await?)?
            };
            out.write_all(text.as_bytes())?;
        }
        VolumeCommand::Get(args) => {
            let volume = VolumeRef::parse(&args.volume)?;
            let raw = client.get_value(&volume.path(&args.pool)).await?;
            let value = raw["config"][&args.key].as_str().unwrap_or_default();
            writeln!(out, "{value}")?;
        }
        VolumeCommand::Set(args) => {
            let volume = VolumeRef::parse_volume(&args.volume, "set")?;
            let body = StorageVolumePut {
                config: Some(set_values(&args.values)?),
                ..Default::default()
            };
            send(client, Method::PATCH, &volume.path(&args.pool), Some(&body)).await?;
        }
        VolumeCommand::Unset(args) => {
            let volume = VolumeRef::parse_volume(&args.volume, "unset")?;
            let body = StorageVolumePut {
                config: Some(unset_values(&args.keys)?),
                ..Default::default()
            };
            send(client, Method::PATCH, &volume.path(&args.pool), Some(&body)).await?;
        }
        VolumeCommand::Edit(args) => {
            let path = VolumeRef::parse_volume(&args.volume, "edit")?.path(&args.pool);
            if stdin_is_terminal {
                let text = to_yaml(&client.get::<StorageVolume>(&path).await?)?;
                edit::in_editor(text, async |text: &str| {
                    put_edited_volume(client, &path, text).await
                })
                .await?;
            } else {
                put_edited_volume(client, &path, &read_stdin().await?).await?;
            }
        }
        VolumeCommand::Delete(args) => {
            let mut failures = Vec::new();
            for arg in &args.volumes {
                let path = VolumeRef::parse(arg)?.path(&args.pool);
                match send(client, Method::DELETE, &path, None::<&()>).await {
                    Ok(()) => writeln!(out, "Storage volume {arg} deleted")?,
                    Err(e) => failures.push((arg.clone(), e)),
                }
            }
            collect(args.volumes.len(), failures)?;
        }
        VolumeCommand::Rename(args) => {
            let old = VolumeRef::parse(&args.old)?;
            let new_name = match &old.snapshot {
                // `vol/snap0 vol/snap1` or `vol/snap0 snap1`.
                Some(_) => short_name(&args.new).to_string(),
                None => args.new.clone(),
            };
            let body = StorageVolumePost {
                name: new_name,
                pool: String::new(),
            };
            send(client, Method::POST, &old.path(&args.pool), Some(&body)).await?;
            writeln!(
                out,
                "Renamed storage volume from \"{}\" to \"{}\"",
                args.old, args.new
            )?;
        }
        VolumeCommand::Copy(args) => {
            let (source_pool, source) = pool_volume(&args.source, None)?;
            let (target_pool, target) = pool_volume(&args.target, Some(&source_pool))?;
            if target.snapshot.is_some() {
                return Err(Error::Usage("a copy's target is a volume".into()));
            }
            let copied: CopiedFields = decode(
                "storage volume",
                client.get_value(&source.path(&source_pool)).await?,
            )?;
            let body = copy_request(
                &source_pool,
                &source,
                &target.name,
                copied,
                args.volume_only,
            );
            let path = format!("{}/volumes/custom", pool_path(&target_pool));
            send(client, Method::POST, &path, Some(&body)).await?;
            writeln!(
                out,
                "Storage volume copied to {target_pool}/{}",
                target.name
            )?;
        }
        VolumeCommand::Move(args) => {
            let (source_pool, source) = pool_volume(&args.source, None)?;
            let (target_pool, target) = pool_volume(&args.target, Some(&source_pool))?;
            if source.snapshot.is_some() || target.snapshot.is_some() {
                return Err(Error::Usage(
                    "move takes volumes; rename a snapshot with `rename`".into(),
                ));
            }
            let body = StorageVolumePost {
                name: target.name.clone(),
                pool: if target_pool == source_pool {
                    String::new()
                } else {
                    target_pool.clone()
                },
            };
            send(
                client,
                Method::POST,
                &source.path(&source_pool),
                Some(&body),
            )
            .await?;
            writeln!(out, "Storage volume moved to {target_pool}/{}", target.name)?;
        }
        VolumeCommand::Snapshot(args) => snapshot::run(client, args, out).await?,
        VolumeCommand::Restore(args) => snapshot::restore(client, args).await?,
        VolumeCommand::Info(args) => {
            let volume = VolumeRef::parse_volume(&args.volume, "info")?;
            let path = volume.path(&args.pool);
            let record: StorageVolume = client.get(&path).await?;
            let state: StorageVolumeState = client.get(&format!("{path}/state")).await?;
            let snapshots: Vec<StorageVolumeSnapshot> = if volume.kind == "custom" {
                client.get(&format!("{path}/snapshots?recursion=1")).await?
            } else {
                Vec::new()
            };
            out.write_all(info_text(&record, &state, &snapshots).as_bytes())?;
        }
        VolumeCommand::Attach(args) => attach::attach(client, args, false, out).await?,
        VolumeCommand::Detach(args) => attach::detach(client, args, false, out).await?,
        VolumeCommand::AttachProfile(args) => attach::attach(client, args, true, out).await?,
        VolumeCommand::DetachProfile(args) => attach::detach(client, args, true, out).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_against, settled_operation, wait};
    use super::*;
    use crate::test_support::{Seen, sync_envelope};
    use serde_json::json;

    /// A volume list in the shape Incus answers `GET …/volumes?recursion=1`.
    fn volumes_json() -> Value {
        json!([
            {"name": "data", "type": "custom", "description": "shared data",
             "config": {"size": "1GiB"}, "used_by": ["/1.0/instances/c1"], "location": "none",
             "content_type": "filesystem", "project": "default",
             "created_at": "2026-01-02T03:04:05Z"},
            {"name": "c1", "type": "container", "description": "", "config": {},
             "used_by": ["/1.0/instances/c1"], "location": "none",
             "content_type": "filesystem", "project": "default", "created_at": ""},
            {"name": "backup", "type": "custom", "description": "", "config": {},
             "used_by": [], "location": "none", "content_type": "filesystem",
             "project": "default", "created_at": ""}
        ])
    }

    #[test]
    fn volume_arguments() {
        let r = |kind: &str, name: &str, snap: Option<&str>| VolumeRef {
            kind: kind.into(),
            name: name.into(),
            snapshot: snap.map(String::from),
        };
        let cases = [
            ("data", Some(r("custom", "data", None))),
            ("custom/data", Some(r("custom", "data", None))),
            ("container/c1", Some(r("container", "c1", None))),
            ("data/snap0", Some(r("custom", "data", Some("snap0")))),
            (
                "custom/data/snap0",
                Some(r("custom", "data", Some("snap0"))),
            ),
            ("", None),
            ("custom/", None),
            ("data/", None),
            ("data/a/b", None),
        ];
        for (arg, expected) in cases {
            assert_eq!(VolumeRef::parse(arg).ok(), expected, "{arg}");
        }
        let snap = VolumeRef::parse("my data/s 1").ok();
        assert_eq!(
            snap.map(|s| s.path("p")).as_deref(),
            Some("/1.0/storage-pools/p/volumes/custom/my%20data/snapshots/s%201")
        );
        assert!(VolumeRef::parse_volume("data/snap0", "set").is_err());
        assert_eq!(
            pool_volume("p2/v2", Some("p1"))
                .ok()
                .map(|(p, v)| (p, v.name)),
            Some(("p2".into(), "v2".into()))
        );
        assert_eq!(
            pool_volume("v2", Some("p1")).ok().map(|(p, v)| (p, v.name)),
            Some(("p1".into(), "v2".into()))
        );
        assert!(pool_volume("v2", None).is_err());
        assert!(pool_volume("/v2", None).is_err());
        assert!(pool_volume("p/container/c1", None).is_err());
    }

    #[tokio::test]
    async fn list_filters_by_type_and_formats() {
        let (result, out, seen) = run_against(
            &["volume", "list", "default", "-f", "csv"],
            vec![sync_envelope(volumes_json())],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [Seen::new(
                "GET",
                "/1.0/storage-pools/default/volumes?recursion=1",
                Value::Null
            )]
        );
        assert_eq!(
            out,
            "TYPE,NAME,DESCRIPTION,CONTENT-TYPE,USED BY\n\
             container,c1,,filesystem,1\n\
             custom,backup,,filesystem,0\n\
             custom,data,shared data,filesystem,1\n"
        );
        let (_, out, _) = run_against(
            &["volume", "ls", "default", "--type", "custom", "-f", "json"],
            vec![sync_envelope(volumes_json())],
        )
        .await;
        let listed: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(listed, json!([volumes_json()[0], volumes_json()[2]]));
        let (_, out, _) = run_against(
            &["volume", "list", "default", "--type", "custom"],
            vec![sync_envelope(volumes_json())],
        )
        .await;
        assert!(out.contains("| TYPE "), "{out}");
        assert!(out.contains("shared data"), "{out}");
        assert!(!out.contains("container"), "{out}");
    }

    #[tokio::test]
    async fn create_set_unset_delete_rename() {
        let (result, out, seen) = run_against(
            &[
                "volume",
                "create",
                "default",
                "data",
                "size=1GiB",
                "--description",
                "shared",
            ],
            settled_operation("op1").to_vec(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Storage volume data created\n");
        assert_eq!(
            seen,
            [
                Seen::new(
                    "POST",
                    "/1.0/storage-pools/default/volumes/custom",
                    json!({"name": "data", "type": "custom", "description": "shared",
                           "config": {"size": "1GiB"},
                           "source": {"name": "", "type": "", "pool": "", "volume_only": false},
                           "content_type": "filesystem"})
                ),
                wait("op1")
            ]
        );

        let ok = || vec![sync_envelope(json!({}))];
        let (_, _, seen) =
            run_against(&["volume", "set", "default", "data", "size=2GiB"], ok()).await;
        assert_eq!(
            seen,
            [Seen::new(
                "PATCH",
                "/1.0/storage-pools/default/volumes/custom/data",
                json!({"config": {"size": "2GiB"}})
            )]
        );
        let (_, _, seen) = run_against(
            &["volume", "set", "default", "container/c1", "size", "2GiB"],
            ok(),
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new(
                "PATCH",
                "/1.0/storage-pools/default/volumes/container/c1",
                json!({"config": {"size": "2GiB"}})
            )]
        );
        let (_, _, seen) = run_against(&["volume", "unset", "default", "data", "size"], ok()).await;
        assert_eq!(seen[0].method, "PATCH");
        assert_eq!(seen[0].body, json!({"config": {"size": ""}}));

        let (result, out, seen) = run_against(
            &["volume", "delete", "default", "data", "data/snap0"],
            settled_operation("op2")
                .into_iter()
                .chain(settled_operation("op3"))
                .collect(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            out,
            "Storage volume data deleted\nStorage volume data/snap0 deleted\n"
        );
        assert_eq!(
            seen,
            [
                Seen::new(
                    "DELETE",
                    "/1.0/storage-pools/default/volumes/custom/data",
                    Value::Null
                ),
                wait("op2"),
                Seen::new(
                    "DELETE",
                    "/1.0/storage-pools/default/volumes/custom/data/snapshots/snap0",
                    Value::Null
                ),
                wait("op3"),
            ]
        );

        let (_, out, seen) =
            run_against(&["volume", "rename", "default", "data", "db"], ok()).await;
        assert_eq!(out, "Renamed storage volume from \"data\" to \"db\"\n");
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                "/1.0/storage-pools/default/volumes/custom/data",
                json!({"name": "db"})
            )]
        );
        let (_, _, seen) = run_against(
            &["volume", "rename", "default", "data/snap0", "data/before"],
            ok(),
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                "/1.0/storage-pools/default/volumes/custom/data/snapshots/snap0",
                json!({"name": "before"})
            )]
        );
    }

    #[tokio::test]
    async fn show_get_and_edit() -> Result<(), Error> {
        let volume = volumes_json()[0].clone();
        let (_, out, seen) = run_against(
            &["volume", "show", "default", "data"],
            vec![sync_envelope(volume.clone())],
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new(
                "GET",
                "/1.0/storage-pools/default/volumes/custom/data",
                Value::Null
            )]
        );
        assert!(out.contains("name: data\n"), "{out}");
        // What show prints, edit takes back: description and config only.
        let put = parse_edited_volume(&out)?;
        assert_eq!(
            serde_json::to_value(put).unwrap_or_default(),
            json!({"description": "shared data", "config": {"size": "1GiB"}})
        );
        assert!(parse_edited_volume("size: 1GiB\n").is_err());
        assert!(parse_edited_volume("# nothing\n").is_err());

        let (_, out, seen) = run_against(
            &["volume", "show", "default", "data/snap0"],
            vec![sync_envelope(json!({"name": "snap0"}))],
        )
        .await;
        assert_eq!(
            seen[0].path,
            "/1.0/storage-pools/default/volumes/custom/data/snapshots/snap0"
        );
        assert!(out.starts_with("name: snap0\ndescription: ''\n"), "{out}");

        let (_, out, _) = run_against(
            &["volume", "get", "default", "data", "size"],
            vec![sync_envelope(volume)],
        )
        .await;
        assert_eq!(out, "1GiB\n");

        let server = crate::test_support::FakeServer::serve(vec![sync_envelope(json!({}))]);
        let path = volume_path("default", "custom", "data");
        put_edited_volume(
            &server.client(),
            &path,
            "description: d\nconfig:\n  size: 3GiB\n",
        )
        .await?;
        assert_eq!(
            server.seen(),
            [Seen::new(
                "PUT",
                "/1.0/storage-pools/default/volumes/custom/data",
                json!({"description": "d", "config": {"size": "3GiB"}})
            )]
        );
        Ok(())
    }

    #[tokio::test]
    async fn copy_takes_the_source_config_and_move_renames_or_changes_pool() {
        let source = json!({"name": "data", "type": "custom", "description": "shared",
                            "config": {"size": "1GiB"}, "content_type": "filesystem"});
        let (result, out, seen) = run_against(
            &[
                "volume",
                "copy",
                "default/data",
                "fast/data2",
                "--volume-only",
            ],
            [sync_envelope(source.clone())]
                .into_iter()
                .chain(settled_operation("op1"))
                .collect(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Storage volume copied to fast/data2\n");
        assert_eq!(
            seen,
            [
                Seen::new(
                    "GET",
                    "/1.0/storage-pools/default/volumes/custom/data",
                    Value::Null
                ),
                Seen::new(
                    "POST",
                    "/1.0/storage-pools/fast/volumes/custom",
                    json!({"name": "data2", "type": "custom", "description": "shared",
                           "config": {"size": "1GiB"}, "content_type": "filesystem",
                           "source": {"type": "copy", "name": "data", "pool": "default",
                                      "volume_only": true}})
                ),
                wait("op1"),
            ]
        );
        // A snapshot, into the same pool.
        let (_, _, seen) = run_against(
            &["volume", "cp", "default/data/snap0", "restored"],
            vec![sync_envelope(source), sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(
            seen[0].path,
            "/1.0/storage-pools/default/volumes/custom/data/snapshots/snap0"
        );
        assert_eq!(seen[1].path, "/1.0/storage-pools/default/volumes/custom");
        assert_eq!(seen[1].body["name"], json!("restored"));
        assert_eq!(
            seen[1].body["source"],
            json!({"type": "copy", "name": "data/snap0", "pool": "default",
                   "volume_only": false})
        );

        let ok = || vec![sync_envelope(json!({}))];
        let (_, out, seen) =
            run_against(&["volume", "move", "default/data", "default/db"], ok()).await;
        assert_eq!(out, "Storage volume moved to default/db\n");
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                "/1.0/storage-pools/default/volumes/custom/data",
                json!({"name": "db"})
            )]
        );
        let (_, _, seen) = run_against(&["volume", "mv", "default/data", "fast/data"], ok()).await;
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                "/1.0/storage-pools/default/volumes/custom/data",
                json!({"name": "data", "pool": "fast"})
            )]
        );
        let (result, _, seen) = run_against(&["volume", "move", "data", "fast/data"], ok()).await;
        assert!(matches!(result, Err(Error::Usage(_))));
        assert!(seen.is_empty());
    }

    #[tokio::test]
    async fn info_shows_usage_and_snapshots() {
        let volume = volumes_json()[0].clone();
        let state = json!({"usage": {"used": 12288, "total": 1_073_741_824}});
        let snapshots = json!([
            {"name": "snap0", "description": "before upgrade", "config": {},
             "content_type": "filesystem", "created_at": "2026-01-03T00:00:00Z",
             "expires_at": null}
        ]);
        let (result, out, seen) = run_against(
            &["volume", "info", "default", "data"],
            vec![
                sync_envelope(volume),
                sync_envelope(state),
                sync_envelope(snapshots),
            ],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        let base = "/1.0/storage-pools/default/volumes/custom/data";
        assert_eq!(
            seen,
            [
                Seen::new("GET", base, Value::Null),
                Seen::new("GET", &format!("{base}/state"), Value::Null),
                Seen::new("GET", &format!("{base}/snapshots?recursion=1"), Value::Null),
            ]
        );
        assert!(
            out.starts_with(
                "Name: data\nType: custom\nDescription: shared data\n\
                 Content type: filesystem\nUsage: 12.00KiB\nTotal: 1.00GiB\n\
                 Created: 2026-01-02T03:04:05Z\nUsed by:\n  - instances/c1\n\n\
                 Snapshots:\n+"
            ),
            "{out}"
        );
        assert!(out.contains("before upgrade"), "{out}");
    }
}
