//! `ctl export`, `ctl import` and `ctl backup list|create|delete`: instance backups (Incus'
//! tarball format) out of and into the daemon.
//!
//! `export` does what `incus export` does: create a backup on the server (expiring in a
//! day), download it to `FILE.partial` (renamed into place when whole), and delete the
//! server's copy whatever happened. `import` streams the file up as the body of
//! `POST /1.0/instances` (`application/octet-stream`, the new name in `X-Incus-name`) and
//! waits for the operation. Both show bytes moved on a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Subcommand};
use futures_util::{Stream, StreamExt};
use http_body_util::{Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request};
use serde_json::json;

use super::Error;
use super::image_transfer::{body_chunks, file_frames, local, write_file};
use crate::Client;
use crate::client::{encode_segment, envelope_of};
use crate::output::{self, Format};

/// Arguments of `ctl export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The instance to back up
    pub name: String,
    /// Where to write the tarball (default `NAME.tar.gz`, `NAME.tar` without compression)
    pub target: Option<PathBuf>,
    /// Leave the instance's snapshots out
    #[arg(long)]
    pub instance_only: bool,
    /// gzip (default), xz, zstd or none
    #[arg(long)]
    pub compression: Option<String>,
}

/// Arguments of `ctl import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// A backup tarball (from `ctl export`, `incus export` or `lxc export`)
    pub file: PathBuf,
    /// The new instance's name (default: the name in the backup)
    pub name: Option<String>,
    /// Cluster member to import the instance on (`POST /1.0/instances?target=MEMBER`)
    #[arg(long, value_name = "MEMBER")]
    pub target: Option<String>,
}

/// `ctl backup` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// List an instance's backups kept on the server
    #[command(visible_alias = "ls")]
    List {
        name: String,
        #[arg(short, long, value_enum, default_value_t)]
        format: Format,
    },
    /// Make a backup kept on the server: NAME [BACKUP]
    Create {
        name: String,
        backup: Option<String>,
        #[arg(long)]
        instance_only: bool,
        #[arg(long)]
        compression: Option<String>,
    },
    /// Delete a backup kept on the server: NAME BACKUP
    #[command(visible_alias = "rm")]
    Delete { name: String, backup: String },
}

/// Counts bytes and, on a terminal, redraws one `what: N MiB (P%)` line on stderr.
#[derive(Clone)]
struct Meter {
    what: &'static str,
    total: Option<u64>,
    done: Arc<AtomicU64>,
    show: bool,
}

impl Meter {
    fn new(what: &'static str, total: Option<u64>) -> Meter {
        Meter {
            what,
            total,
            done: Arc::new(AtomicU64::new(0)),
            show: std::io::stderr().is_terminal(),
        }
    }

    fn add(&self, n: usize) {
        let done = self.done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if !self.show {
            return;
        }
        let percent = self
            .total
            .filter(|t| *t > 0)
            .map(|t| format!(" ({}%)", done.saturating_mul(100) / t))
            .unwrap_or_default();
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{}: {:.1} MiB{percent}   ",
            self.what,
            done as f64 / 1048576.0
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.show {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn metered<S, T, E>(
    stream: S,
    meter: Meter,
    len: fn(&T) -> usize,
) -> impl Stream<Item = Result<T, E>>
where
    S: Stream<Item = Result<T, E>>,
{
    stream.map(move |item| {
        if let Ok(chunk) = &item {
            meter.add(len(chunk));
        }
        item
    })
}

fn frame_len(f: &Frame<Bytes>) -> usize {
    f.data_ref().map_or(0, |d| d.len())
}

fn bytes_len(b: &Bytes) -> usize {
    b.len()
}

fn protocol(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Protocol(format!("invalid request: {e}"))
}

/// Create backup `backup` (empty: the server picks) of `name`; returns its name.
async fn create(
    client: &Client,
    name: &str,
    backup: &str,
    instance_only: bool,
    compression: Option<&str>,
    expires_at: &str,
) -> Result<String, Error> {
    let body = json!({
        "name": backup,
        "expires_at": expires_at,
        "instance_only": instance_only,
        "optimized_storage": false,
        "compression_algorithm": compression.unwrap_or(""),
    });
    let done = client
        .run_operation(
            Method::POST,
            &format!("/1.0/instances/{}/backups", encode_segment(name)),
            Some(&body),
        )
        .await?;
    done.resources
        .get("backups")
        .and_then(|b| b.first())
        .and_then(|url| url.rsplit('/').next())
        .map(str::to_string)
        .ok_or_else(|| Error::Usage("the backup operation named no backup".into()))
}

async fn delete(client: &Client, name: &str, backup: &str) -> Result<(), Error> {
    client
        .run_operation(
            Method::DELETE,
            &format!(
                "/1.0/instances/{}/backups/{}",
                encode_segment(name),
                encode_segment(backup)
            ),
            None,
        )
        .await?;
    Ok(())
}

/// `ctl export NAME [FILE]`: returns the file written.
pub async fn export(client: &Client, args: &ExportArgs) -> Result<PathBuf, Error> {
    let ext = match args.compression.as_deref() {
        None | Some("gzip") => "tar.gz",
        Some("none") => "tar",
        Some("xz") => "tar.xz",
        Some("zstd") => "tar.zst",
        Some(other) => other,
    };
    let dest = args
        .target
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.{ext}", args.name)));
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let backup = create(
        client,
        &args.name,
        "",
        args.instance_only,
        args.compression.as_deref(),
        &expires,
    )
    .await?;
    let downloaded = download(client, &args.name, &backup, &dest).await;
    let deleted = delete(client, &args.name, &backup).await;
    downloaded?;
    deleted?;
    Ok(dest)
}

async fn download(client: &Client, name: &str, backup: &str, dest: &Path) -> Result<(), Error> {
    let uri = format!(
        "/1.0/instances/{}/backups/{}/export",
        encode_segment(name),
        encode_segment(backup)
    );
    let request = Request::builder()
        .method(Method::GET)
        .uri(&uri)
        .body(Full::new(Bytes::new()))
        .map_err(protocol)?;
    let answer = client.send(request).await?;
    if !answer.status().is_success() {
        return Err(envelope_of(answer)
            .await
            .err()
            .unwrap_or_else(|| crate::Error::Protocol(format!("GET {uri} answered no file"))))?;
    }
    let total = answer
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let meter = Meter::new("Exporting the backup", total);
    let written = write_file(
        dest,
        metered(body_chunks(answer.into_body()), meter.clone(), bytes_len),
    )
    .await;
    meter.finish();
    written?;
    Ok(())
}

/// `ctl import FILE [NAME]`: returns the new instance's name.
pub async fn import(client: &Client, args: &ImportArgs) -> Result<String, Error> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .map_err(local(&args.file))?;
    let len = file.metadata().await.map_err(local(&args.file))?.len();
    let meter = Meter::new("Uploading the backup", Some(len));
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(crate::client::instances_url(args.target.as_deref()))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, len);
    if let Some(name) = &args.name {
        builder = builder.header("X-Incus-name", name);
    }
    let body = metered(file_frames(file), meter.clone(), frame_len).boxed();
    let request = builder.body(StreamBody::new(body)).map_err(protocol)?;
    let answer = client.send(request).await;
    meter.finish();
    let answer = envelope_of(answer?).await?;
    let op: ctl_api::Operation =
        serde_json::from_value(answer.metadata).map_err(|source| crate::Error::Decode {
            what: "instance import operation".into(),
            source,
        })?;
    let done = client.wait_operation(&op.id).await?;
    done.resources
        .get("instances")
        .and_then(|i| i.first())
        .and_then(|url| url.rsplit('/').next())
        .map(str::to_string)
        .ok_or_else(|| Error::Usage("the import operation named no instance".into()))
}

/// `ctl backup ...`.
pub async fn run(
    client: &Client,
    command: &BackupCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        BackupCommand::List { name, format } => {
            let raw = client
                .get_value(&format!(
                    "/1.0/instances/{}/backups?recursion=1",
                    encode_segment(name)
                ))
                .await?;
            let backups: Vec<ctl_api::InstanceBackup> = serde_json::from_value(raw.clone())
                .map_err(|source| crate::Error::Decode {
                    what: "backups".into(),
                    source,
                })?;
            let rows: Vec<Vec<String>> = backups
                .iter()
                .map(|b| {
                    vec![
                        b.name.clone(),
                        b.created_at.clone(),
                        b.expires_at.clone(),
                        if b.instance_only { "YES" } else { "NO" }.to_string(),
                    ]
                })
                .collect();
            let header = ["NAME", "TAKEN AT", "EXPIRES AT", "INSTANCE ONLY"];
            let text = output::render(*format, &header, &rows, &raw)?;
            out.write_all(text.as_bytes())?;
        }
        BackupCommand::Create {
            name,
            backup,
            instance_only,
            compression,
        } => {
            let made = create(
                client,
                name,
                backup.as_deref().unwrap_or(""),
                *instance_only,
                compression.as_deref(),
                "",
            )
            .await?;
            writeln!(out, "Backup {made} of {name} created")?;
        }
        BackupCommand::Delete { name, backup } => delete(client, name, backup).await?,
    }
    Ok(())
}
