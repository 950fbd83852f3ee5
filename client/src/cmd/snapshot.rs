//! `ctl snapshot create|list|show|rename|delete|restore`: instance snapshots, shaped like
//! `incus snapshot`.

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::InstanceSnapshot;
use hyper::Method;
use serde_json::{Value, json};

use super::Error;
use crate::Client;
use crate::client::encode_segment;
use crate::output::{self, Format};

/// `ctl snapshot` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of an instance: NAME [SNAPSHOT] (default: the next free snapN)
    Create(CreateArgs),
    /// List an instance's snapshots
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a snapshot as YAML: NAME SNAPSHOT
    Show(OneArgs),
    /// Delete snapshots: NAME SNAPSHOT...
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Restore an instance to a snapshot (a running instance is stopped and started again)
    Restore(OneArgs),
    /// Rename a snapshot: NAME SNAPSHOT NEW
    Rename(RenameArgs),
}

/// Arguments of `ctl snapshot rename`.
#[derive(Debug, Clone, Args)]
pub struct RenameArgs {
    /// Instance name
    pub name: String,
    /// Snapshot name
    pub snapshot: String,
    /// New snapshot name
    pub new_name: String,
}

/// Arguments of `ctl snapshot create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Instance name
    pub name: String,
    /// Snapshot name (default: from `snapshots.pattern`, else the next snapN)
    pub snapshot: Option<String>,
    /// When the snapshot expires: a span like `1d 3H` (S, M(inutes), H, d, w, m(onths),
    /// y) or an RFC 3339 time (default: from `snapshots.expiry.manual`/`snapshots.expiry`)
    #[arg(long, conflicts_with = "no_expiry")]
    pub expiry: Option<String>,
    /// Never expire, whatever the instance's `snapshots.expiry` says
    #[arg(long)]
    pub no_expiry: bool,
}

/// The `expires_at` a `ctl snapshot create` sends: `None` leaves it to the instance's keys.
pub fn expires_at(args: &CreateArgs, now: time::OffsetDateTime) -> Result<Option<String>, Error> {
    expiry_time(args.expiry.as_deref(), args.no_expiry, now)
}

/// The `expires_at` of `--expiry TEXT` / `--no-expiry` (shared by instance and volume
/// snapshots): the zero time for never, `None` when neither is given.
pub fn expiry_time(
    expiry: Option<&str>,
    no_expiry: bool,
    now: time::OffsetDateTime,
) -> Result<Option<String>, Error> {
    use time::format_description::well_known::Rfc3339;
    if no_expiry {
        return Ok(Some("0001-01-01T00:00:00Z".into()));
    }
    let Some(text) = expiry else {
        return Ok(None);
    };
    if let Ok(t) = time::OffsetDateTime::parse(text.trim(), &Rfc3339) {
        return Ok(Some(
            t.format(&Rfc3339)
                .map_err(|e| Error::Usage(e.to_string()))?,
        ));
    }
    let span = ctl_api::expiry::Span::parse(text)
        .map_err(|e| Error::Usage(e.to_string()))?
        .ok_or_else(|| Error::Usage("--expiry needs a span like 2d or a time".into()))?;
    let at = span
        .after(now)
        .ok_or_else(|| Error::Usage(format!("expiry \"{text}\" is too far away")))?;
    at.format(&Rfc3339)
        .map(Some)
        .map_err(|e| Error::Usage(e.to_string()))
}

/// Arguments of `ctl snapshot list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Instance name
    pub name: String,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// One snapshot of one instance.
#[derive(Debug, Clone, Args)]
pub struct OneArgs {
    /// Instance name
    pub name: String,
    /// Snapshot name
    pub snapshot: String,
}

/// Arguments of `ctl snapshot delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Instance name
    pub name: String,
    /// Snapshot names
    #[arg(required = true)]
    pub snapshots: Vec<String>,
}

/// Columns of `ctl snapshot list`.
pub const HEADER: [&str; 4] = ["NAME", "TAKEN AT", "EXPIRES AT", "SIZE"];

/// Table rows of snapshots, in the order the daemon gives (oldest first).
pub fn rows(snapshots: &[InstanceSnapshot]) -> Vec<Vec<String>> {
    snapshots
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.created_at.clone(),
                // The zero time (and nothing): never.
                if s.expires_at.is_empty() || s.expires_at.starts_with("0001-01-01") {
                    String::new()
                } else {
                    s.expires_at.clone()
                },
                output::human_size(s.size.max(0) as u64),
            ]
        })
        .collect()
}

fn snapshots_path(name: &str) -> String {
    format!("/1.0/instances/{}/snapshots", encode_segment(name))
}

fn snapshot_path(name: &str, snapshot: &str) -> String {
    format!("{}/{}", snapshots_path(name), encode_segment(snapshot))
}

/// Run a snapshot subcommand.
pub async fn run(
    client: &Client,
    command: &SnapshotCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        SnapshotCommand::Create(args) => {
            let mut body = json!({"name": args.snapshot.clone().unwrap_or_default()});
            if let Some(t) = expires_at(args, time::OffsetDateTime::now_utc())? {
                body["expires_at"] = json!(t);
            }
            client
                .run_operation(Method::POST, &snapshots_path(&args.name), Some(&body))
                .await?;
        }
        SnapshotCommand::List(args) => {
            let raw = client
                .get_value(&format!("{}?recursion=1", snapshots_path(&args.name)))
                .await?;
            let snapshots: Vec<InstanceSnapshot> =
                serde_json::from_value(raw.clone()).map_err(|source| {
                    Error::Client(crate::Error::Decode {
                        what: "snapshot list".into(),
                        source,
                    })
                })?;
            let text = output::render(args.format, &HEADER, &rows(&snapshots), &raw)?;
            out.write_all(text.as_bytes())?;
        }
        SnapshotCommand::Show(args) => {
            let raw = client
                .get_value(&snapshot_path(&args.name, &args.snapshot))
                .await?;
            out.write_all(output::render_structured(&raw, Format::Yaml)?.as_bytes())?;
        }
        SnapshotCommand::Delete(args) => {
            let mut failures = Vec::new();
            for s in &args.snapshots {
                let path = snapshot_path(&args.name, s);
                if let Err(e) = client.run_operation(Method::DELETE, &path, None).await {
                    failures.push((s.clone(), e));
                }
            }
            if !failures.is_empty() {
                return Err(Error::Several(failures));
            }
        }
        SnapshotCommand::Rename(args) => {
            let body = json!({"name": args.new_name});
            client
                .run_operation(
                    Method::POST,
                    &snapshot_path(&args.name, &args.snapshot),
                    Some(&body),
                )
                .await?;
        }
        SnapshotCommand::Restore(args) => {
            let body: Value = json!({"restore": args.snapshot});
            let path = format!("/1.0/instances/{}", encode_segment(&args.name));
            client
                .run_operation(Method::PUT, &path, Some(&body))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_rows_show_name_time_and_size() {
        let s: Vec<InstanceSnapshot> = serde_json::from_value(json!([
            {"name": "snap0", "created_at": "2026-12-05T08:00:00Z", "architecture": "x86_64", "size": 2048,
             "expires_at": "0001-01-01T00:00:00Z"},
            {"name": "snap1", "created_at": "2026-12-05T09:00:00Z", "architecture": "x86_64", "size": 0,
             "expires_at": "2026-12-07T09:00:00Z"}
        ]))
        .unwrap_or_default();
        assert_eq!(
            rows(&s),
            vec![
                vec![
                    "snap0".to_string(),
                    "2026-12-05T08:00:00Z".into(),
                    "".into(),
                    "2.00KiB".into()
                ],
                vec![
                    "snap1".to_string(),
                    "2026-12-05T09:00:00Z".into(),
                    "2026-12-07T09:00:00Z".into(),
                    "0B".into()
                ]
            ]
        );
    }

    #[test]
    fn create_sends_a_span_as_a_time_or_the_zero_time() {
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let args = |expiry: Option<&str>, no_expiry| CreateArgs {
            name: "c1".into(),
            snapshot: None,
            expiry: expiry.map(String::from),
            no_expiry,
        };
        assert_eq!(expires_at(&args(None, false), now).ok(), Some(None));
        assert_eq!(
            expires_at(&args(None, true), now).ok().flatten().as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert_eq!(
            expires_at(&args(Some("2d 3H"), false), now)
                .ok()
                .flatten()
                .as_deref(),
            Some("1970-01-03T03:00:00Z")
        );
        assert_eq!(
            expires_at(&args(Some("2030-01-01T00:00:00Z"), false), now)
                .ok()
                .flatten()
                .as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert!(expires_at(&args(Some("soon"), false), now).is_err());
    }
}
