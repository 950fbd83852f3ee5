//! Image servers, both ways: pulling an image from a simplestreams server (resolve the
//! alias against its catalog, download the files with progress and resume, verify each
//! file's sha256 and the combined fingerprint, then import as a cached image), and serving
//! ctld's own public images as a simplestreams tree.
//!
//! Downloads live in `$CTL_DIR/downloads/<fingerprint>/` so an interrupted pull resumes,
//! even after a daemon restart; they move into a work directory only when complete and
//! verified, and from there into the store through the usual import (safe unpack, one
//! rename). A wrong checksum or a truncated file leaves no image, no row and no download.

use std::path::PathBuf;
use std::sync::Arc;

use super::fetch::{self, Expected, FetchError};
use super::progress::Progress;
use super::simplestreams::{self, Catalog, Index, Published, PublishedFile, Selection};
use super::tarball::HashingWriter;
use super::transfer::{ImportOptions, Upload};
use super::{ImageError, ImageStore, host_architecture, squashfs};
use crate::db;

/// Largest index or catalog accepted.
const MAX_CATALOG: usize = 64 << 20;

/// A remote image chosen for an instance or a copy, before anything is downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// Base URL of the server.
    pub server: String,
    /// The alias (or fingerprint) asked for.
    pub alias: String,
    pub selection: Selection,
}

impl From<FetchError> for ImageError {
    fn from(e: FetchError) -> Self {
        if e.is_bad_data() {
            ImageError::Invalid(e.to_string())
        } else {
            ImageError::Remote(e.to_string())
        }
    }
}

/// What `ctl image copy` asks besides the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub aliases: Vec<String>,
    pub public: bool,
}

/// Check a `source.protocol` value: simplestreams is the one this daemon speaks.
pub fn check_protocol(protocol: &str) -> Result<(), ImageError> {
    match protocol {
        "" | "simplestreams" => Ok(()),
        other => Err(ImageError::Invalid(format!(
            "image server protocol \"{other}\" is not supported (only \"simplestreams\")"
        ))),
    }
}

/// Read a server's index and image catalog.
pub async fn catalog(server: &str) -> Result<Catalog, ImageError> {
    let index: Index =
        fetch::json(&fetch::join(server, "streams/v1/index.json"), MAX_CATALOG).await?;
    let path =
        simplestreams::catalog_path(&index).map_err(|e| ImageError::Remote(e.to_string()))?;
    Ok(fetch::json(&fetch::join(server, &path), MAX_CATALOG).await?)
}

impl ImageStore {
    /// Resolve `alias` on the simplestreams server `server` for this host: which files,
    /// which fingerprint. Nothing is downloaded yet.
    pub async fn resolve_remote(
        &self,
        server: &str,
        protocol: &str,
        alias: &str,
    ) -> Result<RemoteImage, ImageError> {
        check_protocol(protocol)?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ImageError::Invalid(format!(
                "image server \"{server}\" is not an http(s) URL"
            )));
        }
        let catalog = catalog(server).await?;
        let arch = simplestreams::stream_arch(host_architecture());
        let selection = simplestreams::select(
            &catalog,
            server,
            alias,
            arch,
            squashfs::unsquashfs().is_some(),
        )
        .map_err(|e| match e {
            simplestreams::SelectError::NotFound {
                name,
                server,
                known,
            } => ImageError::NotFound {
                name: format!("{name}\" on \"{server}"),
                known,
            },
            other => ImageError::Invalid(other.to_string()),
        })?;
        Ok(RemoteImage {
            server: server.to_string(),
            alias: alias.to_string(),
            selection,
        })
    }

    /// Make sure the remote image is stored (downloading, verifying and importing it if
    /// needed) and record where it came from; returns its fingerprint. With `copy`, the
    /// image becomes an explicit one with those aliases (`ctl image copy`); without, a
    /// new image is a cached one (pulled for an instance).
    pub async fn pull(
        &self,
        image: &RemoteImage,
        progress: &Progress,
        copy: Option<&CopyOptions>,
    ) -> Result<String, ImageError> {
        let sel = &image.selection;
        // One pull per image at a time: a second waits and then finds it stored.
        let lock = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls.entry(sel.fingerprint.clone()).or_default().clone()
        };
        let result = {
            let _held = lock.lock().await;
            self.pull_locked(image, progress, copy).await
        };
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) <= 2 {
            pulls.remove(&sel.fingerprint);
        }
        result
    }

    async fn pull_locked(
        &self,
        image: &RemoteImage,
        progress: &Progress,
        copy: Option<&CopyOptions>,
    ) -> Result<String, ImageError> {
        let sel = &image.selection;
        let existing = db::images::find_prefix(&self.db, &sel.fingerprint)
            .await?
            .into_iter()
            .find(|r| r.fingerprint == sel.fingerprint);
        let cached = match (&existing, copy) {
            (_, Some(_)) => false,
            (Some(row), None) => row.cached,
            (None, None) => true,
        };
        if existing.is_none() {
            let dir = self.paths.downloads().join(&sel.fingerprint);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| ImageError::Io {
                    path: dir.clone(),
                    source,
                })?;
            let result = self.download_and_import(image, &dir, progress).await;
            match &result {
                // Keep what a network failure left, to resume next time; drop bad data.
                Err(ImageError::Remote(_)) => {}
                _ => {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
            }
            result?;
        }
        let source = serde_json::json!({
            "alias": image.alias,
            "server": image.server,
            "protocol": "simplestreams",
            "image_type": "container",
        });
        db::images::set_origin(&self.db, &sel.fingerprint, cached, &source.to_string()).await?;
        if let Some(copy) = copy {
            for alias in &copy.aliases {
                db::images::set_alias(&self.db, alias, &sel.fingerprint, "").await?;
            }
            if copy.public {
                let row = self.by_fingerprint(&sel.fingerprint).await?;
                db::images::update(&self.db, &row.fingerprint, true, &row.properties).await?;
            }
        }
        Ok(sel.fingerprint.clone())
    }

    async fn download_and_import(
        &self,
        image: &RemoteImage,
        dir: &std::path::Path,
        progress: &Progress,
    ) -> Result<String, ImageError> {
        let sel = &image.selection;
        let total: u64 = sel.files.iter().map(|f| f.size).sum();
        let mut before = 0u64;
        let mut paths = Vec::new();
        for f in &sel.files {
            let dest = dir.join(f.role);
            let url = fetch::join(&image.server, &f.path);
            let fetched = fetch::download(
                &url,
                &dest,
                Expected {
                    sha256: &f.sha256,
                    size: f.size,
                },
                |done, _| {
                    progress.bytes(
                        &format!("downloading {}", f.role),
                        before + done,
                        Some(total),
                    )
                },
            )
            .await?;
            tracing::info!(url, bytes = fetched, "downloaded");
            before += f.size;
            paths.push(dest);
        }
        // The combined fingerprint: the sha256 of the files in order.
        progress.report("verifying", None);
        let combined = combined_sha256(paths.clone()).await?;
        if combined != sel.fingerprint {
            return Err(ImageError::Invalid(format!(
                "fingerprint mismatch: the files' combined sha256 is {combined}, the server says {}",
                sel.fingerprint
            )));
        }
        let work = self.work_dir("pull").await?;
        let mut files = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let to = work.path().join(format!("upload.{i}"));
            tokio::fs::rename(p, &to)
                .await
                .map_err(|source| ImageError::Io {
                    path: to.clone(),
                    source,
                })?;
            files.push(to);
        }
        progress.report("unpacking", None);
        let upload = Upload::from_files(work, files, combined);
        let options = ImportOptions {
            properties: sel.properties.clone(),
            aliases: Vec::new(),
            filename: String::new(),
            public: false,
            cached: true,
        };
        match self.import(upload, options).await {
            Ok(fp) => Ok(fp),
            // Pulled meanwhile by another request.
            Err(ImageError::Exists(_)) => Ok(sel.fingerprint.clone()),
            Err(e) => Err(e),
        }
    }

    /// ctld's public images as simplestreams publishes them (images stored only as a
    /// rootfs, without an image file, are left out).
    pub async fn published(&self) -> Result<Vec<Published>, ImageError> {
        let rows = db::images::list(&self.db).await?;
        let mut out = Vec::new();
        for r in rows.into_iter().filter(|r| r.public) {
            let dir = self.paths.image(&r.fingerprint);
            let fp = r.fingerprint.clone();
            let files = tokio::task::spawn_blocking(move || published_files(&dir, &fp))
                .await
                .map_err(|e| ImageError::Build(e.to_string()))??;
            if files.is_empty() {
                continue;
            }
            out.push(Published {
                fingerprint: r.fingerprint,
                properties: r.properties,
                aliases: r.aliases.into_iter().map(|(n, _)| n).collect(),
                created_at: r.created_at,
                architecture: r.architecture,
                files,
            });
        }
        Ok(out)
    }

    /// The stored file `name` of the public image `fingerprint` (for the simplestreams
    /// server); `NotFound` for anything else.
    pub async fn published_file(
        &self,
        fingerprint: &str,
        name: &str,
    ) -> Result<PathBuf, ImageError> {
        let not_found = || ImageError::NotFound {
            name: format!("{fingerprint}/{name}"),
            known: Vec::new(),
        };
        let is_file_name = !name.is_empty()
            && !name.contains('/')
            && (name.starts_with("image.")
                || name.starts_with("metadata.")
                || name.starts_with("rootfs."));
        if !is_file_name || fingerprint.len() != 64 {
            return Err(not_found());
        }
        let rows = db::images::find_prefix(&self.db, fingerprint).await?;
        if !rows
            .iter()
            .any(|r| r.fingerprint == fingerprint && r.public)
        {
            return Err(not_found());
        }
        let path = self.paths.image(fingerprint).join(name);
        match tokio::fs::symlink_metadata(&path).await {
            Ok(md) if md.is_file() => Ok(path),
            _ => Err(not_found()),
        }
    }
}

/// The stored image file(s) of the image in `dir` with their sha256 (a unified file's is
/// the fingerprint; a split image's are computed once and kept in `<file>.sha256`).
fn published_files(
    dir: &std::path::Path,
    fingerprint: &str,
) -> Result<Vec<PublishedFile>, ImageError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let mut unified = None;
    let (mut meta, mut rootfs) = (None, None);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if name.starts_with("image.") {
            unified = Some(name);
        } else if name.starts_with("metadata.") {
            meta = Some(name);
        } else if name.starts_with("rootfs.") {
            rootfs = Some(name);
        }
    }
    let describe = |name: String, sha: Option<&str>| -> Result<PublishedFile, ImageError> {
        let path = dir.join(&name);
        let size = std::fs::metadata(&path).map_err(io(&path))?.len();
        let sha256 = match sha {
            Some(s) => s.to_string(),
            None => file_sha256(&path)?,
        };
        Ok(PublishedFile {
            squashfs: squashfs::is_squashfs(&path),
            name,
            sha256,
            size,
        })
    };
    Ok(match (unified, meta, rootfs) {
        (Some(u), _, _) => vec![describe(u, Some(fingerprint))?],
        (None, Some(m), Some(r)) => vec![describe(m, None)?, describe(r, None)?],
        _ => Vec::new(),
    })
}

/// The sha256 of a stored file, cached in `checksums/<name>` beside it.
fn file_sha256(path: &std::path::Path) -> Result<String, ImageError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ImageError::Build(format!(
            "{} has no file name",
            path.display()
        )));
    };
    let side = dir.join("checksums").join(name);
    if let Ok(s) = std::fs::read_to_string(&side)
        && s.trim().len() == 64
    {
        return Ok(s.trim().to_string());
    }
    let mut f = std::fs::File::open(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut h = HashingWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut h).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, sha, _) = h.finish();
    let _ =
        std::fs::create_dir_all(dir.join("checksums")).and_then(|()| std::fs::write(&side, &sha));
    Ok(sha)
}

/// The sha256 of the files' concatenation, off the async threads.
async fn combined_sha256(files: Vec<PathBuf>) -> Result<String, ImageError> {
    tokio::task::spawn_blocking(move || {
        let mut h = HashingWriter::new(std::io::sink());
        for p in &files {
            let mut f = std::fs::File::open(p).map_err(|source| ImageError::Io {
                path: p.clone(),
                source,
            })?;
            std::io::copy(&mut f, &mut h).map_err(|source| ImageError::Io {
                path: p.clone(),
                source,
            })?;
        }
        Ok(h.finish().1)
    })
    .await
    .map_err(|e| ImageError::Build(e.to_string()))?
}
