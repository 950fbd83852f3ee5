//! `ctl image import|export|alias` and `ctl publish`: images in and out of the store.
//!
//! Files stream both ways: an import hashes the file(s) first (the sha256 goes in
//! `X-Incus-fingerprint`, so the daemon refuses a file damaged on the way), then sends them
//! chunk by chunk (a split image as `multipart/form-data` with `metadata` and `rootfs`
//! parts); an export writes each chunk as it arrives to `FILE.partial`, renamed into place
//! only when the whole file is there. Aliases are made by the client after the import, with
//! `POST /1.0/images/aliases`, as `lxc image import --alias` does.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ctl_api::{ImageAlias, ImageAliasesEntry, ImageAliasesPost, ImagesPost, ImagesPostSource};
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Error, parse_key_value};
use crate::Client;
use crate::client::{encode_segment, envelope_of};
use crate::output::{self, Format};

/// Bytes read per chunk of a file sent or hashed.
const CHUNK: usize = 256 * 1024;

/// Arguments of `ctl image import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The image tarball (metadata.yaml + rootfs/), or the metadata tarball of a split image
    pub file: PathBuf,
    /// The rootfs tarball of a split image
    pub rootfs: Option<PathBuf>,
    /// An alias for the imported image (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// An image property over those of metadata.yaml (repeatable)
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// Make the image public (served to other daemons as simplestreams)
    #[arg(long)]
    pub public: bool,
}

/// Arguments of `ctl image export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Image alias or fingerprint (a prefix of 12+ hex digits)
    pub image: String,
    /// Where to write: a directory (the file is named after the fingerprint) or a file name;
    /// default the current directory
    pub target: Option<PathBuf>,
    /// Recompress as gzip, xz, zstd or none (the fingerprint is that of the stored file)
    #[arg(long)]
    pub compression: Option<String>,
}

/// Arguments of `ctl publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The (stopped) instance to make an image of, or a snapshot: INSTANCE/SNAPSHOT
    pub name: String,
    /// An alias for the new image (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// An image property over those of the instance's image (repeatable)
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub properties: Vec<(String, String)>,
    /// gzip (default), xz, zstd or none
    #[arg(long)]
    pub compression: Option<String>,
    /// Make the image public (served to other daemons as simplestreams)
    #[arg(long)]
    pub public: bool,
}

/// `ctl image alias` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AliasCommand {
    /// Make an alias for an image: NAME IMAGE
    Create {
        name: String,
        /// Image alias or fingerprint
        image: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete an alias (the image stays)
    #[command(visible_alias = "rm")]
    Delete { name: String },
    /// List aliases
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t)]
        format: Format,
    },
}

pub(super) fn local(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::LocalFile {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of the files, one after the other (the fingerprint of the image they make).
pub async fn fingerprint(files: &[&Path]) -> Result<String, Error> {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; CHUNK];
    for path in files {
        let mut f = tokio::fs::File::open(path).await.map_err(local(path))?;
        loop {
            let n = f.read(&mut chunk).await.map_err(local(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&chunk[..n]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A file's bytes as body frames, chunk by chunk.
pub(super) fn file_frames(
    file: tokio::fs::File,
) -> impl Stream<Item = std::io::Result<Frame<Bytes>>> + Send + 'static {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut chunk = vec![0u8; CHUNK];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok(Some((Frame::data(Bytes::from(chunk)), file)))
    })
}

fn frame(bytes: Vec<u8>) -> impl Stream<Item = std::io::Result<Frame<Bytes>>> + Send + 'static {
    futures_util::stream::iter([Ok(Frame::data(Bytes::from(bytes)))])
}

/// `a=1&b=2` with both sides percent-encoded (`X-Incus-properties`).
fn form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_segment(k), encode_segment(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The fingerprint in a finished image operation's metadata.
pub(super) fn operation_fingerprint(op: &ctl_api::Operation) -> Result<String, crate::Error> {
    op.metadata
        .get("fingerprint")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| crate::Error::Protocol("the operation gave no fingerprint".into()))
}

/// `ctl image import FILE [ROOTFS]`: returns the fingerprint.
pub async fn import(client: &Client, args: &ImportArgs) -> Result<String, Error> {
    let mut files = vec![args.file.as_path()];
    files.extend(args.rootfs.as_deref());
    let fp = fingerprint(&files).await?;
    // Do not send gigabytes the daemon already has.
    match client.get_value(&format!("/1.0/images/{fp}")).await {
        Ok(_) => return Err(Error::Usage(format!("image {fp} already exists"))),
        Err(e) if e.api_code() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/1.0/images")
        .header("X-Incus-fingerprint", &fp)
        .header("X-Incus-filename", file_name(&args.file));
    if !args.properties.is_empty() {
        builder = builder.header("X-Incus-properties", form(&args.properties));
    }
    if args.public {
        builder = builder.header("X-Incus-public", "true");
    }
    let open = |p: &Path| {
        let p = p.to_path_buf();
        async move {
            let f = tokio::fs::File::open(&p).await.map_err(local(&p))?;
            let len = f.metadata().await.map_err(local(&p))?.len();
            Ok::<_, Error>((f, len))
        }
    };
    let (file, len) = open(&args.file).await?;
    let request = match args.rootfs.as_deref() {
        None => builder
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(StreamBody::new(file_frames(file).boxed())),
        Some(rootfs) => {
            let (rootfs_file, rootfs_len) = open(rootfs).await?;
            let boundary = format!("ctl-{fp}");
            let part = |name: &str, path: &Path, first: bool| {
                format!(
                    "{}--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                    if first { "" } else { "\r\n" },
                    file_name(path).replace('"', "")
                )
                .into_bytes()
            };
            let (h1, h2) = (
                part("metadata", &args.file, true),
                part("rootfs", rootfs, false),
            );
            let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
            let total = (h1.len() + h2.len() + tail.len()) as u64 + len + rootfs_len;
            let body = frame(h1)
                .chain(file_frames(file))
                .chain(frame(h2))
                .chain(file_frames(rootfs_file))
                .chain(frame(tail))
                .boxed();
            builder
                .header(
                    CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .header(CONTENT_LENGTH, total)
                .body(StreamBody::new(body))
        }
    }
    .map_err(|e| crate::Error::Protocol(format!("invalid request: {e}")))?;
    let answer = envelope_of(client.send(request).await?).await?;
    let op: ctl_api::Operation =
        serde_json::from_value(answer.metadata).map_err(|source| crate::Error::Decode {
            what: "image import operation".into(),
            source,
        })?;
    let done = client.wait_operation(&op.id).await?;
    let fp = operation_fingerprint(&done)?;
    for alias in &args.aliases {
        create_alias(client, alias, &fp, "").await?;
    }
    Ok(fp)
}

async fn create_alias(
    client: &Client,
    name: &str,
    target: &str,
    description: &str,
) -> Result<(), crate::Error> {
    let body = serde_json::to_value(ImageAliasesPost {
        name: name.to_string(),
        description: description.to_string(),
        target: target.to_string(),
        kind: String::new(),
    })
    .map_err(|source| crate::Error::Decode {
        what: "alias request".into(),
        source,
    })?;
    client
        .request(Method::POST, "/1.0/images/aliases", Some(&body))
        .await
        .map(drop)
}

/// A file name offered by the daemon, reduced to a plain name (never a path).
fn offered_name(answer: &hyper::Response<Incoming>) -> Option<String> {
    let value = answer.headers().get(CONTENT_DISPOSITION)?.to_str().ok()?;
    let name = value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("filename="))?
        .trim_matches('"');
    let name = Path::new(name).file_name()?.to_string_lossy().into_owned();
    (!name.is_empty() && name != "..").then_some(name)
}

/// Where an export goes: into `target` if it is a directory (or absent: the current
/// directory), else `target` itself.
fn destination(target: Option<&Path>, name: &str) -> PathBuf {
    match target {
        None => PathBuf::from(name),
        Some(t) if t.is_dir() => t.join(name),
        Some(t) => t.to_path_buf(),
    }
}

/// Write a stream of chunks to `dest` through `dest.partial`.
pub(super) async fn write_file<S, E>(dest: &Path, chunks: S) -> Result<u64, Error>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(local(&partial))?;
        let mut chunks = std::pin::pin!(chunks);
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| Error::Usage(format!("the export was cut short: {}", e.into())))?;
            file.write_all(&chunk).await.map_err(local(&partial))?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(local(&partial))?;
        file.sync_all().await.map_err(local(&partial))?;
        Ok::<_, Error>(written)
    }
    .await;
    match result {
        Ok(n) => {
            tokio::fs::rename(&partial, dest)
                .await
                .map_err(local(dest))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

/// The data frames of an answer body.
pub(super) fn body_chunks(body: Incoming) -> impl Stream<Item = Result<Bytes, hyper::Error>> {
    futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match body.frame().await? {
                Err(e) => return Some((Err(e), body)),
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        return Some((Ok(data), body));
                    }
                }
            }
        }
    })
}

/// `ctl image export IMAGE [TARGET]`: returns the files written.
pub async fn export(client: &Client, args: &ExportArgs) -> Result<Vec<PathBuf>, Error> {
    let fp = super::image::resolve(client, &args.image).await?;
    let mut uri = format!("/1.0/images/{}/export", encode_segment(&fp));
    if let Some(c) = &args.compression {
        uri.push_str(&format!("?compression={}", encode_segment(c)));
    }
    let request = Request::builder()
        .method(Method::GET)
        .uri(&uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| crate::Error::Protocol(format!("invalid request: {e}")))?;
    let answer = client.send(request).await?;
    if !answer.status().is_success() {
        return Err(envelope_of(answer)
            .await
            .err()
            .unwrap_or_else(|| crate::Error::Protocol(format!("GET {uri} answered no image"))))?;
    }
    let content_type = answer
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if content_type.starts_with("multipart/") {
        // A split image: its two files, into a directory.
        let dir = args.target.clone().unwrap_or_else(|| PathBuf::from("."));
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} is a split image (two files): give a directory",
                args.image
            )));
        }
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|e| crate::Error::Protocol(format!("export: {e}")))?;
        let mut parts = multer::Multipart::new(body_chunks(answer.into_body()), boundary);
        let mut written = Vec::new();
        while let Some(field) = parts
            .next_field()
            .await
            .map_err(|e| crate::Error::Protocol(format!("export: {e}")))?
        {
            let name = field
                .file_name()
                .and_then(|n| Path::new(n).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{}-{fp}", field.name().unwrap_or("part")));
            let dest = dir.join(name);
            write_file(&dest, field).await?;
            written.push(dest);
        }
        return Ok(written);
    }
    let name = offered_name(&answer).unwrap_or_else(|| format!("{fp}.tar.gz"));
    let dest = destination(args.target.as_deref(), &name);
    write_file(&dest, body_chunks(answer.into_body())).await?;
    Ok(vec![dest])
}

/// `--alias` arguments as the aliases of an `ImagesPost`.
pub(super) fn alias_list(names: &[String]) -> Vec<ImageAlias> {
    names
        .iter()
        .map(|a| ImageAlias {
            name: a.clone(),
            description: String::new(),
        })
        .collect()
}

/// The source type `ctl publish NAME` asks for: `snapshot` for `INSTANCE/SNAPSHOT`.
pub fn publish_source_kind(name: &str) -> &'static str {
    if name.contains('/') {
        "snapshot"
    } else {
        "instance"
    }
}

/// `ctl publish NAME`: returns the new image's fingerprint.
pub async fn publish(client: &Client, args: &PublishArgs) -> Result<String, Error> {
    let request = ImagesPost {
        source: Some(ImagesPostSource {
            kind: publish_source_kind(&args.name).into(),
            name: args.name.clone(),
            ..Default::default()
        }),
        aliases: alias_list(&args.aliases),
        properties: args.properties.iter().cloned().collect(),
        compression_algorithm: args.compression.clone().unwrap_or_default(),
        public: args.public,
        ..Default::default()
    };
    let body = serde_json::to_value(&request).map_err(|source| crate::Error::Decode {
        what: "publish request".into(),
        source,
    })?;
    let done = client
        .run_operation(Method::POST, "/1.0/images", Some(&body))
        .await?;
    Ok(operation_fingerprint(&done)?)
}

/// Columns of `ctl image alias list`.
pub const ALIAS_HEADER: [&str; 3] = ["ALIAS", "FINGERPRINT", "DESCRIPTION"];

/// Run `ctl image alias`.
pub async fn alias(
    client: &Client,
    command: &AliasCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        AliasCommand::Create {
            name,
            image,
            description,
        } => {
            let fp = super::image::resolve(client, image).await?;
            create_alias(client, name, &fp, description).await?;
        }
        AliasCommand::Delete { name } => {
            let path = format!("/1.0/images/aliases/{}", encode_segment(name));
            client.request(Method::DELETE, &path, None).await?;
        }
        AliasCommand::List { format } => {
            let raw = client.get_value("/1.0/images/aliases?recursion=1").await?;
            let aliases: Vec<ImageAliasesEntry> =
                serde_json::from_value(raw.clone()).map_err(|source| crate::Error::Decode {
                    what: "alias list".into(),
                    source,
                })?;
            let rows: Vec<Vec<String>> = aliases
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.target.chars().take(12).collect(),
                        a.description.clone(),
                    ]
                })
                .collect();
            out.write_all(output::render(*format, &ALIAS_HEADER, &rows, &raw)?.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fingerprint_hashes_files_in_order() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "hello ")?;
        std::fs::write(&b, "world")?;
        // sha256("hello world")
        let want = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        assert_eq!(fingerprint(&[&a, &b]).await?, want);
        assert_ne!(fingerprint(&[&b, &a]).await?, want);
        Ok(())
    }

    #[test]
    fn properties_are_form_encoded() {
        let pairs = vec![
            ("os".to_string(), "Debian".to_string()),
            ("description".to_string(), "a b/c&d".to_string()),
        ];
        assert_eq!(form(&pairs), "os=Debian&description=a%20b%2Fc%26d");
    }

    #[test]
    fn export_destinations() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(destination(None, "x.tar.gz"), PathBuf::from("x.tar.gz"));
        assert_eq!(
            destination(Some(dir.path()), "x.tar.gz"),
            dir.path().join("x.tar.gz")
        );
        let file = dir.path().join("mine.tar.gz");
        assert_eq!(destination(Some(&file), "x.tar.gz"), file);
        Ok(())
    }
}
