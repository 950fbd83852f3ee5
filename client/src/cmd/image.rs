//! `ctl image list` and `ctl image delete`: the local image store (and the dispatch of
//! every `ctl image` subcommand).

use std::io::Write;

use clap::{Args, Subcommand};
use ctl_api::Image;
use serde_json::Value;

use super::create::{is_fingerprint, strip_remote};
use super::{Error, collect};
use crate::Client;
use crate::output::{self, Format, human_size};

/// Columns of the table and CSV output.
pub const HEADER: [&str; 6] = [
    "ALIAS",
    "FINGERPRINT",
    "DESCRIPTION",
    "ARCHITECTURE",
    "SIZE",
    "UPLOAD DATE",
];

/// `ctl image` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "ls")]
    List(ImageListArgs),
    /// Delete images by alias or fingerprint
    #[command(visible_alias = "rm")]
    Delete(ImageDeleteArgs),
    /// Import an image tarball (unified, or split: metadata and rootfs)
    Import(super::image_transfer::ImportArgs),
    /// Export an image to a file (the stored tarball, streamed)
    Export(super::image_transfer::ExportArgs),
    /// Show an image's details
    Info {
        /// Image alias or fingerprint
        image: String,
    },
    /// Show an image as YAML
    Show {
        /// Image alias or fingerprint
        image: String,
    },
    /// Copy an image from a remote image server into the local store
    Copy(super::image_info::CopyArgs),
    /// Make, delete and list image aliases
    Alias {
        #[command(subcommand)]
        command: super::image_transfer::AliasCommand,
    },
}

/// Arguments of `ctl image list`.
#[derive(Debug, Clone, Args)]
pub struct ImageListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `ctl image delete`.
#[derive(Debug, Clone, Args)]
pub struct ImageDeleteArgs {
    /// Image aliases or fingerprints (prefixes of 12+ hex digits)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// One table row per image, sorted by alias then fingerprint.
pub fn rows(images: &[Image]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = images
        .iter()
        .map(|image| {
            let aliases: Vec<&str> = image.aliases.iter().map(|a| a.name.as_str()).collect();
            vec![
                aliases.join(","),
                image.fingerprint.chars().take(12).collect(),
                image
                    .properties
                    .get("description")
                    .cloned()
                    .unwrap_or_default(),
                image.architecture.clone(),
                human_size(u64::try_from(image.size).unwrap_or(0)),
                image.uploaded_at.clone(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    rows
}

/// Render the API answer of `GET /1.0/images?recursion=1` in `format`.
pub fn render(raw: &Value, format: Format) -> Result<String, Error> {
    let rows = match format {
        Format::Table | Format::Csv => {
            let images: Vec<Image> =
                serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                    what: "image list".into(),
                    source,
                })?;
            rows(&images)
        }
        Format::Json | Format::Yaml => Vec::new(),
    };
    Ok(output::render(format, &HEADER, &rows, raw)?)
}

/// Run an image subcommand.
pub async fn run(
    client: &Client,
    command: &ImageCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        ImageCommand::List(args) => {
            let raw = client.images_value().await?;
            out.write_all(render(&raw, args.format)?.as_bytes())?;
            Ok(())
        }
        ImageCommand::Delete(args) => {
            let mut failures = Vec::new();
            for image in &args.images {
                if let Err(e) = delete_one(client, image).await {
                    failures.push((image.clone(), e));
                }
            }
            collect(args.images.len(), failures)
        }
        ImageCommand::Import(args) => {
            let fp = super::image_transfer::import(client, args).await?;
            writeln!(out, "Image imported with fingerprint: {fp}")?;
            Ok(())
        }
        ImageCommand::Export(args) => {
            for path in super::image_transfer::export(client, args).await? {
                writeln!(out, "Image exported to {}", path.display())?;
            }
            Ok(())
        }
        ImageCommand::Alias { command } => super::image_transfer::alias(client, command, out).await,
        ImageCommand::Info { image } => {
            let image = super::image_info::get(client, image).await?;
            out.write_all(super::image_info::render_info(&image).as_bytes())?;
            Ok(())
        }
        ImageCommand::Show { image } => {
            let image = super::image_info::get(client, image).await?;
            let text = serde_yaml_ng::to_string(&image).map_err(Error::Yaml)?;
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        ImageCommand::Copy(args) => {
            let fp = super::image_info::copy(client, args).await?;
            writeln!(out, "Image copied with fingerprint: {fp}")?;
            Ok(())
        }
    }
}

/// The one fingerprint among `fingerprints` that starts with `prefix`.
pub fn match_prefix<'a>(
    prefix: &str,
    fingerprints: &'a [String],
) -> Result<Option<&'a str>, crate::Error> {
    let mut matches = fingerprints.iter().filter(|fp| fp.starts_with(prefix));
    match (matches.next(), matches.next()) {
        (None, _) => Ok(None),
        (Some(fp), None) => Ok(Some(fp)),
        (Some(_), Some(_)) => Err(crate::Error::Api {
            code: 400,
            message: format!("image fingerprint prefix {prefix:?} is ambiguous"),
        }),
    }
}

/// The fingerprint an image argument names: a full fingerprint as is, a prefix matched
/// against the store, anything else (or an unmatched prefix) looked up as an alias.
pub async fn resolve(client: &Client, image: &str) -> Result<String, crate::Error> {
    let image = strip_remote(image);
    if is_fingerprint(image) {
        let prefix = image.to_ascii_lowercase();
        if prefix.len() == 64 {
            return Ok(prefix);
        }
        let fingerprints = client.image_fingerprints().await?;
        if let Some(fp) = match_prefix(&prefix, &fingerprints)? {
            return Ok(fp.to_string());
        }
    }
    Ok(client.image_alias(image).await?.target)
}

async fn delete_one(client: &Client, image: &str) -> Result<(), crate::Error> {
    let fingerprint = resolve(client, image).await?;
    let operation = client.delete_image(&fingerprint).await?;
    client.wait_operation(&operation.id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn golden() -> Value {
        json!([
            {"fingerprint": "b".repeat(64), "size": 2_465_792, "architecture": "x86_64",
             "created_at": "2026-01-01T00:00:00Z", "uploaded_at": "2026-01-02T00:00:00Z",
             "properties": {"description": "Debian bookworm"},
             "aliases": [{"name": "debian/bookworm"}, {"name": "debian"}], "type": "container"},
            {"fingerprint": "a".repeat(64), "size": 900, "architecture": "x86_64",
             "created_at": "2026-01-01T00:00:00Z", "uploaded_at": "2026-01-03T00:00:00Z",
             "aliases": [{"name": "busybox", "description": ""}], "type": "container"}
        ])
    }

    #[test]
    fn csv_from_golden_images() {
        assert_eq!(
            render(&golden(), Format::Csv).ok().as_deref(),
            Some(
                "ALIAS,FINGERPRINT,DESCRIPTION,ARCHITECTURE,SIZE,UPLOAD DATE\n\
                 busybox,aaaaaaaaaaaa,,x86_64,900B,2026-01-03T00:00:00Z\n\
                 \"debian/bookworm,debian\",bbbbbbbbbbbb,Debian bookworm,x86_64,2.35MiB,2026-01-02T00:00:00Z\n"
            )
        );
    }

    #[test]
    fn prefixes_match_one_fingerprint() {
        let fps = vec!["abc123".repeat(10), "abd123".repeat(10)];
        assert_eq!(
            match_prefix("abc1", &fps).ok().flatten(),
            Some(fps[0].as_str())
        );
        assert_eq!(match_prefix("fff", &fps).ok(), Some(None));
        let err = match_prefix("ab", &fps).err();
        assert!(err.is_some_and(|e| e.to_string().contains("ambiguous")));
    }
}
