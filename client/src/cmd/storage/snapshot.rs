//! `ctl storage volume snapshot …` and `ctl storage volume restore`: snapshots of custom
//! volumes. Both spellings work: LXD's `snapshot POOL VOLUME [SNAPSHOT]` and Incus 6's
//! `snapshot create|list|show|rename|delete|restore`.

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::{
    StorageVolume, StorageVolumePut, StorageVolumeSnapshot, StorageVolumeSnapshotPost,
    StorageVolumeSnapshotsPost,
};
use hyper::Method;

use super::super::snapshot::expiry_time;
use super::super::{Error, collect};
use super::volume::{VolumeRef, short_name};
use super::{decode, send, to_yaml};
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl storage volume snapshot`: with POOL VOLUME [SNAPSHOT] it takes a snapshot, else one
/// of its subcommands runs.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: Option<SnapshotCommand>,
    #[command(flatten)]
    pub create: Option<CreateArgs>,
}

/// `ctl storage volume snapshot` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot: POOL VOLUME [SNAPSHOT] (default: the next free snapN)
    Create(CreateArgs),
    /// List a volume's snapshots: POOL VOLUME
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a snapshot as YAML: POOL VOLUME SNAPSHOT
    Show(OneArgs),
    /// Delete snapshots: POOL VOLUME SNAPSHOT...
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Rename a snapshot: POOL VOLUME SNAPSHOT NEW
    Rename(RenameArgs),
    /// Restore the volume to a snapshot: POOL VOLUME SNAPSHOT
    Restore(OneArgs),
}

/// Arguments of `ctl storage volume snapshot create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Snapshot name (default: from `snapshots.pattern`, else the next snapN)
    pub snapshot: Option<String>,
    /// When the snapshot expires: a span like `1d 3H` or an RFC 3339 time (default: from
    /// the volume's `snapshots.expiry`)
    #[arg(long, conflicts_with = "no_expiry")]
    pub expiry: Option<String>,
    /// Never expire, whatever the volume's `snapshots.expiry` says
    #[arg(long)]
    pub no_expiry: bool,
}

/// Arguments of `ctl storage volume snapshot list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// One snapshot of one volume.
#[derive(Debug, Clone, Args)]
pub struct OneArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Snapshot name
    pub snapshot: String,
}

/// Arguments of `ctl storage volume snapshot delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Snapshot names
    #[arg(required = true)]
    pub snapshots: Vec<String>,
}

/// Arguments of `ctl storage volume snapshot rename`.
#[derive(Debug, Clone, Args)]
pub struct RenameArgs {
    /// Storage pool name
    pub pool: String,
    /// Custom volume name
    pub volume: String,
    /// Snapshot name
    pub snapshot: String,
    /// New snapshot name
    pub new_name: String,
}

/// Columns of `ctl storage volume snapshot list` (and of the `Snapshots:` of `info`).
pub const HEADER: [&str; 4] = ["NAME", "DESCRIPTION", "TAKEN AT", "EXPIRES AT"];

/// Table rows of snapshots, in the order the daemon gives (oldest first).
pub fn rows(snapshots: &[StorageVolumeSnapshot]) -> Vec<Vec<String>> {
    snapshots
        .iter()
        .map(|s| {
            let expires = match s.expires_at.as_deref() {
                // Nothing, or the zero time: never.
                None | Some("") => String::new(),
                Some(t) if t.starts_with("0001-01-01") => String::new(),
                Some(t) => t.to_string(),
            };
            vec![
                short_name(&s.name).to_string(),
                s.description.clone(),
                s.created_at.clone(),
                expires,
            ]
        })
        .collect()
}

/// `…/volumes/{type}/{volume}/snapshots`.
fn snapshots_path(pool: &str, volume: &str) -> Result<String, Error> {
    let volume = VolumeRef::parse_volume(volume, "a snapshot command")?;
    Ok(format!("{}/snapshots", volume.volume_path(pool)))
}

fn snapshot_path(pool: &str, volume: &str, snapshot: &str) -> Result<String, Error> {
    Ok(format!(
        "{}/{}",
        snapshots_path(pool, volume)?,
        encode_segment(snapshot)
    ))
}

/// Take a snapshot.
async fn create(client: &Client, args: &CreateArgs) -> Result<(), Error> {
    let body = StorageVolumeSnapshotsPost {
        name: args.snapshot.clone().unwrap_or_default(),
        expires_at: expiry_time(
            args.expiry.as_deref(),
            args.no_expiry,
            time::OffsetDateTime::now_utc(),
        )?,
    };
    let path = snapshots_path(&args.pool, &args.volume)?;
    send(client, Method::POST, &path, Some(&body)).await?;
    Ok(())
}

/// Restore a volume to a snapshot: a `PUT` of the volume with `restore`, keeping its
/// description and config.
pub async fn restore(client: &Client, args: &OneArgs) -> Result<(), Error> {
    let volume = VolumeRef::parse_volume(&args.volume, "restore")?;
    let path = volume.volume_path(&args.pool);
    let current: StorageVolume = client.get(&path).await?;
    let body = StorageVolumePut {
        description: Some(current.description),
        config: Some(current.config),
        restore: args.snapshot.clone(),
    };
    send(client, Method::PUT, &path, Some(&body)).await?;
    Ok(())
}

/// Run `ctl storage volume snapshot …`.
pub async fn run(client: &Client, args: &SnapshotArgs, out: &mut dyn Write) -> Result<(), Error> {
    let command = match (&args.command, &args.create) {
        (Some(command), _) => command,
        (None, Some(create_args)) => return create(client, create_args).await,
        (None, None) => {
            return Err(Error::Usage(
                "expected POOL VOLUME [SNAPSHOT], or a subcommand (see --help)".into(),
            ));
        }
    };
    match command {
        SnapshotCommand::Create(args) => create(client, args).await?,
        SnapshotCommand::List(args) => {
            let path = format!("{}?recursion=1", snapshots_path(&args.pool, &args.volume)?);
            let raw = client.get_value(&path).await?;
            let snapshots: Vec<StorageVolumeSnapshot> = match args.format {
                Format::Table | Format::Csv => decode("snapshot list", raw.clone())?,
                _ => Vec::new(),
            };
            let text = output::render(args.format, &HEADER, &rows(&snapshots), &raw)?;
            out.write_all(text.as_bytes())?;
        }
        SnapshotCommand::Show(args) => {
            let path = snapshot_path(&args.pool, &args.volume, &args.snapshot)?;
            let snapshot: StorageVolumeSnapshot = client.get(&path).await?;
            out.write_all(to_yaml(&snapshot)?.as_bytes())?;
        }
        SnapshotCommand::Delete(args) => {
            let mut failures = Vec::new();
            for s in &args.snapshots {
                let path = snapshot_path(&args.pool, &args.volume, s)?;
                if let Err(e) = send(client, Method::DELETE, &path, None::<&()>).await {
                    failures.push((s.clone(), e));
                }
            }
            collect(args.snapshots.len(), failures)?;
        }
        SnapshotCommand::Rename(args) => {
            let path = snapshot_path(&args.pool, &args.volume, &args.snapshot)?;
            let body = StorageVolumeSnapshotPost {
                name: args.new_name.clone(),
            };
            send(client, Method::POST, &path, Some(&body)).await?;
        }
        SnapshotCommand::Restore(args) => restore(client, args).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, run_against, settled_operation, wait};
    use super::super::{StorageCommand, volume::VolumeCommand};
    use super::*;
    use crate::test_support::{Seen, sync_envelope};
    use serde_json::{Value, json};

    const SNAPSHOTS: &str = "/1.0/storage-pools/default/volumes/custom/data/snapshots";

    #[test]
    fn both_spellings_parse() {
        let snapshot_args = |args: &[&str]| match parse(args) {
            StorageCommand::Volume {
                command: VolumeCommand::Snapshot(args),
            } => args,
            other => panic!("{other:?}"),
        };
        let old = snapshot_args(&["volume", "snapshot", "default", "data", "s0"]);
        assert!(old.command.is_none());
        assert_eq!(
            old.create.map(|c| (c.pool, c.volume, c.snapshot)),
            Some(("default".into(), "data".into(), Some("s0".into())))
        );
        let new = snapshot_args(&["volume", "snapshot", "create", "default", "data"]);
        assert!(matches!(
            new.command,
            Some(SnapshotCommand::Create(CreateArgs { snapshot: None, .. }))
        ));
        let list = snapshot_args(&["volume", "snapshot", "ls", "default", "data"]);
        assert!(matches!(list.command, Some(SnapshotCommand::List(_))));
    }

    #[tokio::test]
    async fn create_in_both_spellings() {
        for args in [
            &["volume", "snapshot", "default", "data", "s0", "--no-expiry"][..],
            &[
                "volume",
                "snapshot",
                "create",
                "default",
                "data",
                "s0",
                "--no-expiry",
            ],
        ] {
            let (result, _, seen) = run_against(args, settled_operation("op1").to_vec()).await;
            assert!(result.is_ok(), "{args:?}: {result:?}");
            assert_eq!(
                seen,
                [
                    Seen::new(
                        "POST",
                        SNAPSHOTS,
                        json!({"name": "s0", "expires_at": "0001-01-01T00:00:00Z"})
                    ),
                    wait("op1")
                ],
                "{args:?}"
            );
        }
        let (_, _, seen) = run_against(
            &["volume", "snapshot", "default", "data"],
            vec![sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(seen, [Seen::new("POST", SNAPSHOTS, json!({"name": ""}))]);
        let (result, _, _) = run_against(
            &[
                "volume", "snapshot", "create", "default", "data", "--expiry", "soon",
            ],
            vec![],
        )
        .await;
        assert!(matches!(result, Err(Error::Usage(_))), "{result:?}");
    }

    #[tokio::test]
    async fn list_show_delete_rename() {
        let listed = json!([
            {"name": "data/s0", "description": "", "config": {}, "content_type": "filesystem",
             "created_at": "2026-01-03T00:00:00Z", "expires_at": "0001-01-01T00:00:00Z"},
            {"name": "s1", "description": "nightly", "config": {},
             "content_type": "filesystem", "created_at": "2026-01-04T00:00:00Z",
             "expires_at": "2026-02-04T00:00:00Z"}
        ]);
        let (result, out, seen) = run_against(
            &["volume", "snapshot", "list", "default", "data", "-f", "csv"],
            vec![sync_envelope(listed)],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [Seen::new(
                "GET",
                &format!("{SNAPSHOTS}?recursion=1"),
                Value::Null
            )]
        );
        assert_eq!(
            out,
            "NAME,DESCRIPTION,TAKEN AT,EXPIRES AT\n\
             s0,,2026-01-03T00:00:00Z,\n\
             s1,nightly,2026-01-04T00:00:00Z,2026-02-04T00:00:00Z\n"
        );

        let (_, out, seen) = run_against(
            &["volume", "snapshot", "show", "default", "data", "s1"],
            vec![sync_envelope(
                json!({"name": "s1", "description": "nightly"}),
            )],
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new("GET", &format!("{SNAPSHOTS}/s1"), Value::Null)]
        );
        assert!(out.starts_with("name: s1\ndescription: nightly\n"), "{out}");

        let (result, _, seen) = run_against(
            &["volume", "snapshot", "rm", "default", "data", "s0", "s1"],
            settled_operation("op1")
                .into_iter()
                .chain(settled_operation("op2"))
                .collect(),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            seen,
            [
                Seen::new("DELETE", &format!("{SNAPSHOTS}/s0"), Value::Null),
                wait("op1"),
                Seen::new("DELETE", &format!("{SNAPSHOTS}/s1"), Value::Null),
                wait("op2"),
            ]
        );

        let (_, _, seen) = run_against(
            &[
                "volume", "snapshot", "rename", "default", "data", "s0", "first",
            ],
            vec![sync_envelope(json!({}))],
        )
        .await;
        assert_eq!(
            seen,
            [Seen::new(
                "POST",
                &format!("{SNAPSHOTS}/s0"),
                json!({"name": "first"})
            )]
        );
    }

    #[tokio::test]
    async fn restore_keeps_description_and_config() {
        let volume = json!({"name": "data", "type": "custom", "description": "shared",
                            "config": {"size": "1GiB"}});
        let base = "/1.0/storage-pools/default/volumes/custom/data";
        for args in [
            &["volume", "restore", "default", "data", "s0"][..],
            &["volume", "snapshot", "restore", "default", "data", "s0"],
        ] {
            let (result, _, seen) = run_against(
                args,
                [sync_envelope(volume.clone())]
                    .into_iter()
                    .chain(settled_operation("op1"))
                    .collect(),
            )
            .await;
            assert!(result.is_ok(), "{args:?}: {result:?}");
            assert_eq!(
                seen,
                [
                    Seen::new("GET", base, Value::Null),
                    Seen::new(
                        "PUT",
                        base,
                        json!({"description": "shared", "config": {"size": "1GiB"},
                               "restore": "s0"})
                    ),
                    wait("op1"),
                ],
                "{args:?}"
            );
        }
    }
}
