//! Moving images in and out of the store: receiving an upload (streamed to a file under
//! `$CTL_DIR/tmp` while hashing, never held in memory), importing it (safe unpack, then one
//! rename into `images/<fingerprint>`), exporting (the stored image file as it is, or a
//! tarball made on a blocking thread while the response streams it), publishing a stopped
//! instance's overlay view, and alias management.
//!
//! The fingerprint rule is in [`super::tarball`]. Whatever fails before the final rename
//! leaves nothing: the work directory is removed (also when the task is dropped), and no row
//! is written. Registration (row, rename, aliases) runs under the store's build lock, so two
//! imports of one image cannot both store it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::squashfs;
use super::tarball::{
    Compression, ImageMetadata, Tree, WrittenImage, normalize_architecture, write_image_file,
    write_unified,
};
use super::unpack::{Layout, Limits, unpack_file};
use super::{ImageError, ImageStore, host_architecture};
use crate::db::{self, DbError};

/// A work directory under `$CTL_DIR/tmp`, removed when dropped unless it was moved into the
/// store.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    armed: bool,
}

impl WorkDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl WorkDir {
    /// It was moved away: nothing to remove when dropped.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.armed {
            // A rootfs can be large: remove it off the async threads.
            let path = std::mem::take(&mut self.path);
            std::thread::spawn(move || {
                let _ = std::fs::remove_dir_all(&path);
            });
        }
    }
}

/// An upload received into a work directory.
#[derive(Debug)]
pub struct Upload {
    pub work: WorkDir,
    /// The unified tarball, or the metadata and the rootfs tarball of a split image.
    pub files: Vec<PathBuf>,
    /// sha256 of the file(s), in order: the image's fingerprint.
    pub fingerprint: String,
    hasher: Sha256,
}

/// What an import request asks besides the file(s).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Properties over those of `metadata.yaml`.
    pub properties: BTreeMap<String, String>,
    /// Aliases to point at the image (an existing alias is moved).
    pub aliases: Vec<String>,
    pub filename: String,
    pub public: bool,
    /// Stored on the way to an instance (pulled or built), not imported explicitly.
    pub cached: bool,
}

/// What an export sends.
pub enum Export {
    /// A stored file, as it is.
    File {
        path: PathBuf,
        len: u64,
        /// The file name to offer the client.
        name: String,
    },
    /// A tarball made while it is sent (transcoded, or generated from the rootfs).
    Stream {
        chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
        name: String,
    },
    /// A split image: its metadata and rootfs files, as they are.
    Split {
        metadata: (PathBuf, u64, String),
        rootfs: (PathBuf, u64, String),
    },
}

/// What publishing reads: a stopped instance's layers.
#[derive(Debug, Clone)]
pub struct PublishSource {
    /// The container's overlay upper directory.
    pub upper: PathBuf,
    /// Its image's rootfs (the overlay lower layer).
    pub lower: PathBuf,
    /// The id map the upper layer's owners are in (`None`: host ids as they are).
    pub upper_ids: Option<crate::worker::spec::IdMap>,
    pub architecture: String,
    /// The instance's image properties (its `image.*` keys).
    pub properties: BTreeMap<String, String>,
}

/// A made or imported image, ready to be moved into the store.
struct Ready {
    fingerprint: String,
    metadata: ImageMetadata,
    size: i64,
    filename: String,
    public: bool,
    cached: bool,
    aliases: Vec<String>,
}

/// Why a streamed export stopped when its receiver was dropped.
const CLIENT_GONE: &str = "the client went away";

/// The bytes a streamed export sends per chunk.
const CHUNK: usize = 256 * 1024;

/// A `Write` that hands chunks to an async receiver; a receiver gone (the client went away)
/// is a broken pipe, which stops the writer.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, CLIENT_GONE))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Run `make` on a blocking thread, streaming what it writes. A failure ends the stream with
/// an error (the connection is cut, so the client never takes a partial file for a whole).
fn stream_from<F>(what: String, make: F) -> mpsc::Receiver<io::Result<Vec<u8>>>
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), ImageError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let made =
            make(&mut w).and_then(|()| w.flush().map_err(|e| ImageError::Build(e.to_string())));
        if let Err(e) = made {
            if e.to_string().contains(CLIENT_GONE) {
                tracing::debug!(export = %what, "export stopped: the client went away");
                return;
            }
            tracing::warn!(export = %what, error = %e, "export stopped");
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    rx
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn join_err(e: tokio::task::JoinError) -> ImageError {
    ImageError::Build(e.to_string())
}

/// RFC 3339 of unix seconds (now for 0 or an impossible date).
fn rfc3339(secs: i64) -> String {
    let t = (secs > 0)
        .then(|| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .flatten()
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time (0 when unreadable).
fn unix_seconds(t: &str) -> i64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// The stored image file(s) in an image directory: `image.*`, or `metadata.*` and
/// `rootfs.*` (the unpacked `rootfs/` directory has no dot).
enum Stored {
    None,
    Unified(PathBuf),
    Split(PathBuf, PathBuf),
}

fn stored_files(dir: &Path) -> Result<Stored, ImageError> {
    let (mut image, mut meta, mut rootfs) = (None, None, None);
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        if !entry.file_type().map_err(io_at(dir))?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let slot = if name.starts_with("image.") {
            &mut image
        } else if name.starts_with("metadata.") {
            &mut meta
        } else if name.starts_with("rootfs.") {
            &mut rootfs
        } else {
            continue;
        };
        *slot = Some(entry.path());
    }
    Ok(match (image, meta, rootfs) {
        (Some(image), _, _) => Stored::Unified(image),
        (None, Some(meta), Some(rootfs)) => Stored::Split(meta, rootfs),
        _ => Stored::None,
    })
}

/// Decode a form-encoded header value (`a=1&b=x%20y`) into pairs, in order.
pub fn form_pairs(value: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    value
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl ImageStore {
    /// A fresh work directory under `$CTL_DIR/tmp`.
    pub async fn work_dir(&self, what: &str) -> Result<WorkDir, ImageError> {
        let path = self
            .paths
            .tmp()
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(io_at(&path))?;
        Ok(WorkDir { path, armed: true })
    }

    /// Start receiving an upload into a new work directory.
    pub async fn upload(&self) -> Result<Upload, ImageError> {
        Ok(Upload {
            work: self.work_dir("upload").await?,
            files: Vec::new(),
            fingerprint: String::new(),
            hasher: Sha256::new(),
        })
    }

    /// Fail with `Exists` if an image with `fingerprint` is stored.
    pub async fn check_new(&self, fingerprint: &str) -> Result<(), ImageError> {
        let rows = db::images::find_prefix(&self.db, fingerprint).await?;
        if rows.iter().any(|r| r.fingerprint == fingerprint) {
            return Err(ImageError::Exists(format!("image {fingerprint}")));
        }
        Ok(())
    }

    /// Import an upload: unpack it safely into a new image and store it; returns the
    /// fingerprint. The work directory is gone afterwards, whatever happened.
    pub async fn import(
        &self,
        upload: Upload,
        options: ImportOptions,
    ) -> Result<String, ImageError> {
        let Upload {
            work,
            files,
            fingerprint,
            ..
        } = upload;
        let dir = work.path().to_path_buf();
        let limits = self.limits;
        let (mut metadata, size) =
            tokio::task::spawn_blocking(move || unpack_upload(&dir, &files, &limits))
                .await
                .map_err(join_err)??;
        metadata.properties.extend(options.properties);
        self.register(
            work,
            Ready {
                fingerprint,
                metadata,
                size,
                filename: options.filename,
                public: options.public,
                cached: options.cached,
                aliases: options.aliases,
            },
        )
        .await
    }

    /// Make an image of a stopped instance's overlay view (upper over lower, whiteouts
    /// applied) and store it; returns the fingerprint (the sha256 of its deterministic
    /// tarball).
    pub async fn publish(
        &self,
        source: PublishSource,
        properties: BTreeMap<String, String>,
        aliases: Vec<String>,
        compression: Compression,
        public: bool,
    ) -> Result<String, ImageError> {
        let work = self.work_dir("publish").await?;
        let dir = work.path().to_path_buf();
        let mut metadata = ImageMetadata {
            architecture: normalize_architecture(&source.architecture).to_string(),
            creation_date: time::OffsetDateTime::now_utc().unix_timestamp(),
            properties: source.properties.clone(),
            ..ImageMetadata::default()
        };
        metadata.properties.extend(properties);
        let meta = metadata.clone();
        let limits = self.limits;
        let (fingerprint, size) = tokio::task::spawn_blocking(move || {
            let tree = Tree::overlay(&source.upper, &source.lower).with_upper_ids(source.upper_ids);
            let written = write_image_file(&dir, &meta, &tree, compression)?;
            // The stored rootfs is the tarball unpacked, so export and rootfs agree.
            let (_, unpacked) = unpack_file(
                &written.file,
                Layout::Unified,
                Some(&dir.join("rootfs")),
                &limits,
            )?;
            Ok::<_, ImageError>((written.fingerprint, unpacked.size))
        })
        .await
        .map_err(join_err)??;
        self.register(
            work,
            Ready {
                fingerprint,
                metadata,
                size,
                filename: String::new(),
                public,
                cached: false,
                aliases,
            },
        )
        .await
    }

    /// Move a ready image from `work` into the store and record it.
    async fn register(&self, mut work: WorkDir, image: Ready) -> Result<String, ImageError> {
        let fp = image.fingerprint.clone();
        let _guard = self.build_lock.lock().await;
        self.check_new(&fp).await?;
        let final_dir = self.move_in(work.path(), &fp).await?;
        work.armed = false;
        let properties = {
            let mut p = image.metadata.properties.clone();
            p.entry("architecture".into())
                .or_insert_with(|| image.metadata.architecture.clone());
            p
        };
        let created = rfc3339(image.metadata.creation_date);
        let recorded = self
            .record(
                &db::NewImage {
                    fingerprint: &fp,
                    filename: &image.filename,
                    size: image.size,
                    architecture: &image.metadata.architecture,
                    created_at: &created,
                    properties: &properties,
                    public: image.public,
                    cached: image.cached,
                },
                &image.aliases,
                false,
            )
            .await;
        if let Err(e) = recorded {
            drop(WorkDir {
                path: final_dir,
                armed: true,
            });
            return Err(e.into());
        }
        tracing::info!(fingerprint = %fp, size = image.size, "image stored");
        self.events.image("image-created", &fp);
        Ok(fp)
    }

    /// What `GET /1.0/images/{fingerprint}/export` sends: the stored file(s) as they are;
    /// with another `compression`, the stored tarball recompressed as it is sent; for an
    /// image without a stored file, a tarball generated from its rootfs.
    pub async fn export(
        &self,
        fingerprint: &str,
        compression: Option<Compression>,
    ) -> Result<Export, ImageError> {
        let row = self.by_fingerprint(fingerprint).await?;
        let fp = row.fingerprint.clone();
        let dir = self.paths.image(&fp);
        let stored = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || stored_files(&dir))
                .await
                .map_err(join_err)??
        };
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io_at(p));
        match stored {
            Stored::Split(meta, rootfs) => {
                if compression.is_some() {
                    return Err(ImageError::Invalid(
                        "a split image is exported as it was imported (no compression choice)"
                            .into(),
                    ));
                }
                let ext = |p: &Path, fallback: &str| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    name.split_once('.')
                        .map_or_else(|| fallback.to_string(), |(_, e)| e.to_string())
                };
                Ok(Export::Split {
                    metadata: (
                        meta.clone(),
                        len(&meta)?,
                        format!("meta-{fp}.{}", ext(&meta, "tar")),
                    ),
                    rootfs: (
                        rootfs.clone(),
                        len(&rootfs)?,
                        format!("{fp}.{}", ext(&rootfs, "tar")),
                    ),
                })
            }
            Stored::Unified(file) => {
                let stored_as = Compression::detect_file(&file)?;
                let wanted = compression.unwrap_or(stored_as);
                let name = format!("{fp}.{}", wanted.extension());
                if wanted == stored_as {
                    return Ok(Export::File {
                        len: len(&file)?,
                        path: file,
                        name,
                    });
                }
                let chunks = stream_from(fp, move |w| {
                    let f = std::fs::File::open(&file).map_err(io_at(&file))?;
                    let mut src = stored_as
                        .decoder(io::BufReader::new(f))
                        .map_err(io_at(&file))?;
                    let mut enc = wanted.encoder(w).map_err(io_at(&file))?;
                    io::copy(&mut src, &mut enc).map_err(io_at(&file))?;
                    enc.finish().map_err(io_at(&file))?;
                    Ok(())
                });
                Ok(Export::Stream { chunks, name })
            }
            Stored::None => {
                let wanted = compression.unwrap_or(Compression::DEFAULT);
                let mut properties = row.properties.clone();
                properties.remove("architecture");
                let metadata = ImageMetadata {
                    architecture: row.architecture.clone(),
                    creation_date: unix_seconds(&row.created_at),
                    properties,
                    ..ImageMetadata::default()
                };
                let rootfs = dir.join("rootfs");
                let chunks = stream_from(fp.clone(), move |w| {
                    let mut enc = wanted.encoder(w).map_err(io_at(&rootfs))?;
                    write_unified(&mut enc, &metadata, &Tree::dir(&rootfs))?;
                    enc.finish().map_err(io_at(&rootfs))?;
                    Ok(())
                });
                Ok(Export::Stream {
                    chunks,
                    name: format!("{fp}.{}", wanted.extension()),
                })
            }
        }
    }

    /// Make alias `name` for the image `target` (a fingerprint or a unique prefix).
    pub async fn create_alias(
        &self,
        name: &str,
        target: &str,
        description: &str,
    ) -> Result<(), ImageError> {
        if name.is_empty() || name.starts_with('/') || name.chars().any(char::is_control) {
            return Err(ImageError::Invalid(format!("bad alias name \"{name}\"")));
        }
        let row = self.by_fingerprint(target).await?;
        match db::images::create_alias(&self.db, name, &row.fingerprint, description).await {
            Err(DbError::Conflict(what)) => Err(ImageError::Exists(what)),
            other => Ok(other?),
        }
    }

    /// Fail with `Exists` if alias `name` points at an image.
    pub async fn check_alias_free(&self, name: &str) -> Result<(), ImageError> {
        match db::images::resolve_alias(&self.db, name).await? {
            Some(_) => Err(ImageError::Exists(format!("alias \"{name}\""))),
            None => Ok(()),
        }
    }

    /// Remove alias `name` (the image stays).
    pub async fn delete_alias(&self, name: &str) -> Result<(), ImageError> {
        if db::images::delete_alias(&self.db, name).await? {
            Ok(())
        } else {
            Err(ImageError::NotFound {
                name: name.to_string(),
                known: Vec::new(),
            })
        }
    }
}

impl Upload {
    /// An upload of files already in `work` (downloaded), whose combined sha256 the
    /// caller has verified to be `fingerprint`.
    pub fn from_files(work: WorkDir, files: Vec<PathBuf>, fingerprint: String) -> Upload {
        Upload {
            work,
            files,
            fingerprint,
            hasher: Sha256::new(),
        }
    }

    /// Receive the next file of the upload from `body`, hashing it on the way.
    pub async fn receive<S, B, E>(&mut self, body: S) -> Result<u64, ImageError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: Display,
    {
        let path = self
            .work
            .path()
            .join(format!("upload.{}", self.files.len()));
        let mut file = tokio::fs::File::create(&path).await.map_err(io_at(&path))?;
        let mut body = std::pin::pin!(body);
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| ImageError::Invalid(format!("upload interrupted: {e}")))?;
            let chunk = chunk.as_ref();
            self.hasher.update(chunk);
            file.write_all(chunk).await.map_err(io_at(&path))?;
            bytes += chunk.len() as u64;
        }
        file.flush().await.map_err(io_at(&path))?;
        if bytes == 0 {
            return Err(ImageError::Invalid("the image file is empty".into()));
        }
        self.files.push(path);
        Ok(bytes)
    }

    /// Done receiving: the fingerprint of everything received, checked against the one the
    /// client expects (when it gave one).
    pub fn finish(&mut self, expected: Option<&str>) -> Result<&str, ImageError> {
        self.fingerprint = super::busybox::hex(&std::mem::take(&mut self.hasher).finalize());
        if let Some(expected) = expected.filter(|e| !e.is_empty())
            && !expected.eq_ignore_ascii_case(&self.fingerprint)
        {
            return Err(ImageError::Invalid(format!(
                "fingerprint mismatch: the upload's sha256 is {}, not {expected}",
                self.fingerprint
            )));
        }
        Ok(&self.fingerprint)
    }
}

/// Unpack the uploaded file(s) in `dir` into `dir/rootfs` (held to `limits`) and give them
/// their stored names; returns the metadata and the rootfs size.
fn unpack_upload(
    dir: &Path,
    files: &[PathBuf],
    limits: &Limits,
) -> Result<(ImageMetadata, i64), ImageError> {
    let rootfs = dir.join("rootfs");
    let keep = |from: &Path, stem: &str, c: Compression| {
        let to = dir.join(format!("{stem}.{}", c.extension()));
        std::fs::rename(from, &to).map_err(io_at(&to))
    };
    match files {
        [file] => {
            let (c, unpacked) = unpack_file(file, Layout::Unified, Some(&rootfs), limits)?;
            let metadata = unpacked
                .metadata
                .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the image".into()))?;
            super::templates::store(dir, &metadata.templates, &unpacked.templates)?;
            keep(file, "image", c)?;
            Ok((metadata, unpacked.size))
        }
        [meta, root] => {
            let (cm, m) = unpack_file(meta, Layout::Metadata, None, limits)?;
            let metadata = m
                .metadata
                .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the image".into()))?;
            super::templates::store(dir, &metadata.templates, &m.templates)?;
            let size = if squashfs::is_squashfs(root) {
                let size = squashfs::unpack(root, &rootfs, limits)?;
                let to = dir.join("rootfs.squashfs");
                std::fs::rename(root, &to).map_err(io_at(&to))?;
                size
            } else {
                let (cr, r) = unpack_file(root, Layout::Rootfs, Some(&rootfs), limits)?;
                keep(root, "rootfs", cr)?;
                r.size
            };
            keep(meta, "metadata", cm)?;
            Ok((metadata, size))
        }
        _ => Err(ImageError::Invalid(
            "an image is one unified tarball, or a metadata and a rootfs tarball".into(),
        )),
    }
}

/// The properties of the built-in busybox image of busybox `version`.
pub fn busybox_properties(version: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    props.insert("os".to_string(), "BusyBox".to_string());
    props.insert("release".to_string(), version.to_string());
    props.insert("architecture".to_string(), host_architecture().to_string());
    props.insert(
        "description".to_string(),
        format!("BusyBox {version} (static, from the host)"),
    );
    props
}

/// Build the built-in busybox image in `work`: its rootfs (`work/rootfs`) and its
/// deterministic tarball (`work/image.tar.gz`), whose sha256 is the returned fingerprint.
/// The creation date is the busybox binary's mtime, so the same busybox always gives the
/// same image.
pub fn build_busybox(
    busybox: &Path,
    work: &Path,
) -> Result<super::busybox::BuiltRootfs, ImageError> {
    let mut built = super::busybox::build(busybox, &work.join("rootfs"))?;
    let creation_date = std::fs::metadata(busybox)
        .map(|m| std::os::unix::fs::MetadataExt::mtime(&m))
        .map_err(io_at(busybox))?;
    let mut properties = busybox_properties(&built.version);
    properties.remove("architecture");
    let metadata = ImageMetadata {
        architecture: host_architecture().to_string(),
        creation_date,
        properties,
        ..ImageMetadata::default()
    };
    let tree = Tree::dir(work.join("rootfs"));
    built.fingerprint = write_image_file(work, &metadata, &tree, Compression::DEFAULT)?.fingerprint;
    Ok(built)
}

/// The properties of the empty image.
pub fn empty_properties() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("os".to_string(), "none".to_string()),
        (
            "description".to_string(),
            "empty layer under instances imported from backups".to_string(),
        ),
    ])
}

/// Build the empty image in `work`: an empty `rootfs/` (root's, 0755) and its deterministic
/// tarball, whose sha256 is the fingerprint.
pub fn build_empty(work: &Path) -> Result<WrittenImage, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let rootfs = work.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io_at(&rootfs))?;
    std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
        .map_err(io_at(&rootfs))?;
    let metadata = ImageMetadata {
        architecture: host_architecture().to_string(),
        creation_date: 0,
        properties: empty_properties(),
        ..ImageMetadata::default()
    };
    write_image_file(work, &metadata, &Tree::dir(&rootfs), Compression::DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_image_is_the_same_everywhere() -> Result<(), Box<dyn std::error::Error>> {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (fa, fb) = (build_empty(a.path())?, build_empty(b.path())?);
        assert_eq!(fa.fingerprint, fb.fingerprint);
        assert_eq!(std::fs::read_dir(a.path().join("rootfs"))?.count(), 0);
        Ok(())
    }

    #[test]
    fn form_headers_decode() {
        assert_eq!(
            form_pairs("os=Debian&description=a+b%2Fc&&flag"),
            [
                ("os".to_string(), "Debian".to_string()),
                ("description".to_string(), "a b/c".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert!(form_pairs("").is_empty());
    }

    #[test]
    fn times_convert() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(unix_seconds("2023-11-14T22:13:20Z"), 1_700_000_000);
        assert_eq!(unix_seconds(""), 0);
    }

    #[test]
    fn stored_files_are_found_by_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("rootfs"))?;
        assert!(matches!(stored_files(dir.path())?, Stored::None));
        std::fs::write(dir.path().join("metadata.tar.xz"), "m")?;
        std::fs::write(dir.path().join("rootfs.tar.gz"), "r")?;
        assert!(matches!(stored_files(dir.path())?, Stored::Split(..)));
        std::fs::write(dir.path().join("image.tar.zst"), "i")?;
        assert!(
            matches!(stored_files(dir.path())?, Stored::Unified(p) if p.ends_with("image.tar.zst"))
        );
        Ok(())
    }
}
