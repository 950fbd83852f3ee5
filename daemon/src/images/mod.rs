//! The image store: images by sha256 fingerprint, unpacked once under
//! `images/<fingerprint>/rootfs` and shared read-only by every container as its overlay
//! lower layer; aliases; and the sources built on first use: `busybox` from the host's
//! binary, `debian/<suite>` with debootstrap ([`debian`]). Image templates ([`templates`])
//! are rendered into a new instance's upper layer.
//!
//! Images travel as Incus-format tarballs ([`tarball`]: the format and the fingerprint rule),
//! are unpacked safely ([`unpack`]), and are imported, exported and published through
//! [`transfer`].

pub mod busybox;
pub mod debian;
pub mod fetch;
pub mod progress;
pub mod remote;
pub mod simplestreams;
pub mod squashfs;
pub mod tarball;
pub mod templates;
pub mod transfer;
pub mod unpack;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ctl_api::{Image, ImageAlias, ImageAliasesEntry, InstanceSource};
use tokio::sync::Mutex;

use crate::db::intents::Kind;
use crate::db::{self, DbError, ImageRow, Pool};
use crate::paths::Paths;
use progress::Progress;

/// Names the daemon can build itself when no image has that alias yet.
pub const BUILTIN: &[&str] = &["busybox"];

/// Image errors.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image \"{name}\" not found (known: {})", known.join(", "))]
    NotFound { name: String, known: Vec<String> },
    #[error("image fingerprint prefix \"{0}\" is ambiguous")]
    Ambiguous(String),
    #[error("image {fingerprint} is in use by instances: {}", instances.join(", "))]
    InUse {
        fingerprint: String,
        instances: Vec<String>,
    },
    #[error("building image: {0}")]
    Build(String),
    /// The image server failed or cannot be reached.
    #[error("image server: {0}")]
    Remote(String),
    /// An image file or request that cannot be used (bad tarball, unsafe entry, wrong
    /// fingerprint, unsupported format).
    #[error("invalid image: {0}")]
    Invalid(String),
    /// The image or alias exists already.
    #[error("{0} already exists")]
    Exists(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where a new instance's image comes from, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An image in the store.
    Stored(String),
    /// A built-in source that will be built on first use.
    Builtin(&'static str),
    /// An image on a simplestreams server, downloaded on first use.
    Remote(Box<remote::RemoteImage>),
    /// A Debian suite built with debootstrap on first use (`debian/bookworm`).
    Debian(debian::Suite),
}

/// The image store.
#[derive(Clone)]
pub struct ImageStore {
    db: Pool,
    paths: Arc<Paths>,
    build_lock: Arc<Mutex<()>>,
    /// Held while a Debian image is built (minutes), so imports need not wait for it.
    debian_lock: Arc<Mutex<()>>,
    /// One lock per fingerprint being pulled: concurrent pulls of one image share a download.
    pulls: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>>,
    /// Where `image-deleted` is announced.
    events: crate::events::Events,
    /// Size caps of every unpack (imports, pulls, publish, builds).
    limits: unpack::Limits,
}

fn now() -> String {
    crate::clock::now_rfc3339()
}

/// The host architecture in Incus' naming.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => other,
    }
}

impl ImageStore {
    /// A store over `db` with images under `paths.images()`.
    pub fn new(db: Pool, paths: Arc<Paths>) -> Self {
        ImageStore {
            db,
            paths,
            build_lock: Arc::new(Mutex::new(())),
            debian_lock: Arc::new(Mutex::new(())),
            pulls: Arc::default(),
            events: crate::events::Events::default(),
            limits: unpack::Limits::default(),
        }
    }

    /// Hold every unpacked image to `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: unpack::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Announce lifecycle events (`image-deleted`) on `events`.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        self.events = events;
        self
    }

    /// Check an instance source before anything is created.
    pub async fn resolve(&self, source: &InstanceSource) -> Result<ImageRef, ImageError> {
        if !source.server.is_empty() {
            let name = if source.alias.is_empty() {
                &source.fingerprint
            } else {
                &source.alias
            };
            return self
                .resolve_remote(&source.server, &source.protocol, name)
                .await
                .map(|r| ImageRef::Remote(Box::new(r)));
        }
        if !source.fingerprint.is_empty() {
            return self
                .by_fingerprint(&source.fingerprint)
                .await
                .map(|r| ImageRef::Stored(r.fingerprint));
        }
        let alias = source.alias.strip_prefix("local:").unwrap_or(&source.alias);
        if let Some((fp, _)) = db::images::resolve_alias(&self.db, alias).await? {
            return Ok(ImageRef::Stored(fp));
        }
        if let Some(b) = BUILTIN.iter().find(|b| **b == alias) {
            return Ok(ImageRef::Builtin(b));
        }
        if let Some(suite) = debian::suite_for_alias(alias) {
            return Ok(ImageRef::Debian(suite));
        }
        // A bare fingerprint given as alias (as `lxc launch <fp>` does).
        if alias.len() >= 12
            && alias.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(row) = self.by_fingerprint(alias).await
        {
            return Ok(ImageRef::Stored(row.fingerprint));
        }
        Err(self.not_found(alias).await)
    }

    async fn not_found(&self, name: &str) -> ImageError {
        let mut known: Vec<String> = db::images::aliases(&self.db)
            .await
            .map(|a| a.into_iter().map(|(n, _, _)| n).collect())
            .unwrap_or_default();
        for b in BUILTIN
            .iter()
            .map(|b| (*b).to_string())
            .chain(debian::known_aliases())
        {
            if !known.contains(&b) {
                known.push(b);
            }
        }
        known.sort();
        ImageError::NotFound {
            name: name.to_string(),
            known,
        }
    }

    /// Make sure the image exists (building a built-in one); returns its fingerprint.
    pub async fn ensure(
        &self,
        image: &ImageRef,
        progress: &Progress,
    ) -> Result<String, ImageError> {
        match image {
            ImageRef::Stored(fp) => Ok(fp.clone()),
            ImageRef::Remote(r) => self.pull(r, progress, None).await,
            ImageRef::Builtin(name) => {
                let _guard = self.build_lock.lock().await;
                if let Some((fp, _)) = db::images::resolve_alias(&self.db, name).await? {
                    return Ok(fp);
                }
                progress.report("building busybox image", None);
                self.build_busybox(name).await
            }
            ImageRef::Debian(suite) => self.ensure_debian(*suite, progress).await,
        }
    }

    /// The size caps of every unpack.
    pub fn limits(&self) -> unpack::Limits {
        self.limits
    }

    /// The empty image (an empty rootfs, no alias), built on first use: the lower layer of
    /// instances imported from a backup, whose upper layer holds their whole filesystem.
    /// Deterministic, so every host has the same fingerprint. Cached: it goes when no
    /// instance uses it.
    pub async fn ensure_empty(&self) -> Result<String, ImageError> {
        let _guard = self.build_lock.lock().await;
        let work = self.work_dir("build-empty").await?;
        let built = {
            let dir = work.path().to_path_buf();
            tokio::task::spawn_blocking(move || transfer::build_empty(&dir))
                .await
                .map_err(|e| ImageError::Build(e.to_string()))??
        };
        let recorded = db::images::find_prefix(&self.db, &built.fingerprint)
            .await?
            .iter()
            .any(|r| r.fingerprint == built.fingerprint);
        if recorded {
            return Ok(built.fingerprint);
        }
        self.move_in(work.path(), &built.fingerprint).await?;
        work.disarm();
        let props = transfer::empty_properties();
        let t = now();
        self.record(
            &db::NewImage {
                fingerprint: &built.fingerprint,
                filename: "",
                size: 0,
                architecture: host_architecture(),
                created_at: &t,
                properties: &props,
                public: false,
                cached: true,
            },
            &[],
            true,
        )
        .await?;
        tracing::info!(fingerprint = %built.fingerprint, "built the empty image");
        Ok(built.fingerprint)
    }

    async fn build_busybox(&self, alias: &str) -> Result<String, ImageError> {
        let tmp_root = self.paths.tmp();
        let work = tmp_root.join(format!("build-{}", uuid::Uuid::new_v4().simple()));
        let busybox = self.paths.busybox.clone();
        tokio::fs::create_dir_all(&work)
            .await
            .map_err(|source| ImageError::Io {
                path: work.clone(),
                source,
            })?;
        let built = {
            // The rootfs and its tarball, whose sha256 is the fingerprint (see `tarball`).
            let work = work.clone();
            tokio::task::spawn_blocking(move || transfer::build_busybox(&busybox, &work))
                .await
                .map_err(|e| ImageError::Build(e.to_string()))
        };
        let result = async {
            let built = built??;
            let recorded = db::images::find_prefix(&self.db, &built.fingerprint)
                .await?
                .iter()
                .any(|r| r.fingerprint == built.fingerprint);
            if !recorded {
                self.move_in(&work, &built.fingerprint).await?;
            }
            let props = transfer::busybox_properties(&built.version);
            let t = now();
            self.record(
                &db::NewImage {
                    fingerprint: &built.fingerprint,
                    filename: "",
                    size: built.size,
                    architecture: host_architecture(),
                    created_at: &t,
                    properties: &props,
                    public: false,
                    cached: true,
                },
                &[alias.to_string()],
                true,
            )
            .await?;
            tracing::info!(fingerprint = %built.fingerprint, alias, "built image");
            Ok(built.fingerprint)
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&work).await;
        result
    }

    /// Move the finished image directory `work` to `images/<fp>` under an intent (the row
    /// is written next; [`ImageStore::recorded`] ends the intent). A directory already there
    /// without a row (a store that failed half-way) is moved to the trash first.
    async fn move_in(&self, work: &std::path::Path, fp: &str) -> Result<PathBuf, ImageError> {
        let final_dir = self.paths.image(fp);
        let io_at = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ImageError::Io { path, source }
        };
        db::intents::begin(&self.db, Kind::ImageRegister, fp).await?;
        if tokio::fs::symlink_metadata(&final_dir).await.is_ok() {
            self.trash_dir(&final_dir)
                .await
                .map_err(io_at(&final_dir))?;
        }
        tokio::fs::create_dir_all(self.paths.images())
            .await
            .map_err(io_at(&self.paths.images()))?;
        tokio::fs::rename(work, &final_dir)
            .await
            .map_err(io_at(&final_dir))?;
        Ok(final_dir)
    }

    /// Record the image [`ImageStore::move_in`] stored, in one transaction: its row (with
    /// `existing_ok`, a row already there for the same image is kept), its upload time,
    /// `aliases`, and the end of the store's intent. A crash leaves all of it or none.
    async fn record(
        &self,
        new: &db::NewImage<'_>,
        aliases: &[String],
        existing_ok: bool,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        match db::images::insert(&mut *tx, new).await {
            Ok(()) => db::images::set_uploaded_at(&mut *tx, new.fingerprint, &now()).await?,
            Err(DbError::Conflict(_)) if existing_ok => {}
            Err(e) => return Err(e),
        }
        for alias in aliases {
            db::images::set_alias(&mut *tx, alias, new.fingerprint, "").await?;
        }
        db::intents::finish(&mut *tx, Kind::ImageRegister, new.fingerprint).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The row of the image [`ImageStore::move_in`] stored is written: the intent ends.
    async fn recorded(&self, fp: &str) -> Result<(), ImageError> {
        Ok(db::intents::finish(&self.db, Kind::ImageRegister, fp).await?)
    }

    /// Move `dir` into the trash and remove it there (a crash in between leaves it in the
    /// trash, which the next start empties).
    async fn trash_dir(&self, dir: &std::path::Path) -> io::Result<()> {
        let trash = self.paths.trash();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&trash)?;
            let aside = trash.join(uuid::Uuid::new_v4().simple().to_string());
            std::fs::rename(&dir, &aside)?;
            std::fs::remove_dir_all(&aside)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Start-up: finish or undo every image store a crash interrupted (a directory moved in
    /// without its row goes to the trash; one with its row only loses the intent), and
    /// remove the half-written shifted copies a crash left inside the stored images.
    pub async fn reconcile(&self) -> Result<(), ImageError> {
        for fp in db::intents::pending(&self.db, Kind::ImageRegister).await? {
            let recorded = db::images::find_prefix(&self.db, &fp)
                .await?
                .iter()
                .any(|r| r.fingerprint == fp);
            let dir = self.paths.image(&fp);
            if !recorded && tokio::fs::symlink_metadata(&dir).await.is_ok() {
                tracing::warn!(fingerprint = %fp, dir = %dir.display(),
                    "removing an image whose store a crash interrupted before its record");
                if let Err(source) = self.trash_dir(&dir).await {
                    return Err(ImageError::Io { path: dir, source });
                }
            }
            self.recorded(&fp).await?;
        }
        let shifted_leftovers = {
            let images = self.paths.images();
            tokio::task::spawn_blocking(move || crate::worker::idshift::remove_unfinished(&images))
                .await
                .unwrap_or_default()
        };
        for dir in shifted_leftovers {
            tracing::info!(dir = %dir.display(), "removed an unfinished shifted copy");
        }
        self.remove_stale_downloads().await?;
        Ok(())
    }

    /// Partial downloads are kept so an interrupted pull resumes; one whose image is stored
    /// meanwhile, or that nobody resumed for [`DOWNLOAD_KEEP`], goes.
    async fn remove_stale_downloads(&self) -> Result<(), ImageError> {
        let Ok(mut rd) = tokio::fs::read_dir(self.paths.downloads()).await else {
            return Ok(());
        };
        let stored: std::collections::HashSet<String> = db::images::list(&self.db)
            .await?
            .into_iter()
            .map(|r| r.fingerprint)
            .collect();
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let age = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            let why = if stored.contains(&name) {
                "its image is stored"
            } else if age > DOWNLOAD_KEEP {
                "not resumed for a week"
            } else {
                continue;
            };
            tracing::info!(download = %e.path().display(), why, "removing a partial download");
            if let Err(source) = self.trash_dir(&e.path()).await {
                tracing::warn!(download = %e.path().display(), error = %source, "could not remove a partial download");
            }
        }
        Ok(())
    }

    async fn by_fingerprint(&self, prefix: &str) -> Result<ImageRow, ImageError> {
        let mut rows = db::images::find_prefix(&self.db, prefix).await?;
        match rows.len() {
            0 => Err(self.not_found(prefix).await),
            1 => Ok(rows.remove(0)),
            _ => Err(ImageError::Ambiguous(prefix.to_string())),
        }
    }

    /// The rootfs of a stored image.
    pub fn rootfs(&self, fingerprint: &str) -> PathBuf {
        self.paths.image(fingerprint).join("rootfs")
    }

    /// Every image.
    pub async fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(db::images::list(&self.db)
            .await?
            .into_iter()
            .map(to_api)
            .collect())
    }

    /// One image by fingerprint (a unique prefix works).
    pub async fn get(&self, fingerprint: &str) -> Result<Image, ImageError> {
        self.by_fingerprint(fingerprint).await.map(to_api)
    }

    /// The stored properties of an image.
    pub async fn properties(
        &self,
        fingerprint: &str,
    ) -> Result<BTreeMap<String, String>, ImageError> {
        Ok(self.by_fingerprint(fingerprint).await?.properties)
    }

    /// One alias. A built-in source (`busybox`, `debian/<suite>`) is built on first lookup,
    /// so clients that resolve an alias before creating (LXD's `lxc launch`) find it.
    pub async fn alias(&self, name: &str) -> Result<ImageAliasesEntry, ImageError> {
        if let Some(b) = BUILTIN.iter().find(|b| **b == name)
            && db::images::resolve_alias(&self.db, name).await?.is_none()
        {
            self.ensure(&ImageRef::Builtin(b), &Progress::none())
                .await?;
        }
        if let Some(suite) = debian::suite_for_alias(name)
            && db::images::resolve_alias(&self.db, name).await?.is_none()
        {
            self.ensure_debian(suite, &Progress::none()).await?;
        }
        match db::images::resolve_alias(&self.db, name).await? {
            Some((target, description)) => Ok(ImageAliasesEntry {
                name: name.to_string(),
                description,
                target,
                kind: "container".into(),
            }),
            None => Err(self.not_found(name).await),
        }
    }

    /// Every alias.
    pub async fn aliases(&self) -> Result<Vec<ImageAliasesEntry>, ImageError> {
        Ok(db::images::aliases(&self.db)
            .await?
            .into_iter()
            .map(|(name, target, description)| ImageAliasesEntry {
                name,
                description,
                target,
                kind: "container".into(),
            })
            .collect())
    }

    /// Change an image's public flag and properties (`PUT` replaces, `PATCH` merges).
    pub async fn update(
        &self,
        fingerprint: &str,
        put: ctl_api::ImagePut,
        replace: bool,
    ) -> Result<(), ImageError> {
        let row = self.by_fingerprint(fingerprint).await?;
        let public = put.public.unwrap_or(!replace && row.public);
        let properties = match put.properties {
            Some(p) if replace => p,
            Some(p) => {
                let mut merged = row.properties.clone();
                merged.extend(p);
                merged
            }
            None if replace => BTreeMap::new(),
            None => row.properties.clone(),
        };
        db::images::update(&self.db, &row.fingerprint, public, &properties).await?;
        self.events.image("image-updated", &row.fingerprint);
        Ok(())
    }

    /// Record that an image was used.
    pub async fn touch(&self, fingerprint: &str) -> Result<(), ImageError> {
        Ok(db::images::touch(&self.db, fingerprint, &now()).await?)
    }

    /// Fail with `InUse` if an instance uses the image.
    pub async fn check_unused(&self, fingerprint: &str) -> Result<(), ImageError> {
        let users = db::instances::using_image(&self.db, fingerprint).await?;
        if !users.is_empty() {
            return Err(ImageError::InUse {
                fingerprint: fingerprint.to_string(),
                instances: users,
            });
        }
        Ok(())
    }

    /// Delete cached images (pulled or built on the way to an instance, never imported or
    /// copied explicitly) that no instance uses and nobody used for `max_age`, as Incus'
    /// `images.remote_cache_expiry` does; returns the fingerprints deleted.
    pub async fn prune_cached(
        &self,
        max_age: std::time::Duration,
    ) -> Result<Vec<String>, ImageError> {
        let cutoff = time::OffsetDateTime::now_utc() - max_age;
        let mut deleted = Vec::new();
        for row in db::images::list(&self.db).await? {
            let last = if row.last_used_at.is_empty() {
                &row.uploaded_at
            } else {
                &row.last_used_at
            };
            let old =
                time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
                    .is_ok_and(|t| t < cutoff);
            if !row.cached || !old {
                continue;
            }
            match self.delete(&row.fingerprint).await {
                Ok(()) => {
                    tracing::info!(fingerprint = %row.fingerprint, "expired cached image removed");
                    deleted.push(row.fingerprint);
                }
                Err(ImageError::InUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Delete an image that no instance uses: its row, aliases and files.
    pub async fn delete(&self, fingerprint: &str) -> Result<(), ImageError> {
        let row = self.by_fingerprint(fingerprint).await?;
        self.check_unused(&row.fingerprint).await?;
        db::images::delete(&self.db, &row.fingerprint).await?;
        self.events.image("image-deleted", &row.fingerprint);
        let dir = self.paths.image(&row.fingerprint);
        self.trash_dir(&dir)
            .await
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| ImageError::Io {
                path: self.paths.image(&row.fingerprint),
                source,
            })
    }
}

/// How long a partial download waits to be resumed before the next start removes it.
const DOWNLOAD_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// An unset time as Incus (and Go clients) expect it: the zero time, never "".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn or_zero_time(t: String) -> String {
    if t.is_empty() { ZERO_TIME.into() } else { t }
}

fn to_api(r: ImageRow) -> Image {
    Image {
        fingerprint: r.fingerprint,
        filename: r.filename,
        size: r.size,
        architecture: r.architecture,
        created_at: r.created_at,
        uploaded_at: r.uploaded_at,
        last_used_at: or_zero_time(r.last_used_at),
        expires_at: ZERO_TIME.into(),
        properties: r.properties,
        public: r.public,
        cached: r.cached,
        auto_update: false,
        aliases: r
            .aliases
            .into_iter()
            .map(|(name, description)| ImageAlias { name, description })
            .collect(),
        kind: "container".into(),
        profiles: vec!["default".into()],
        update_source: serde_json::from_str(&r.source).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (ImageStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = db::open_memory().await.expect("db");
        let paths = Arc::new(Paths::new(dir.path()));
        (ImageStore::new(pool, paths), dir)
    }

    async fn add(s: &ImageStore, fp: &str, cached: bool, last_used: &str) {
        db::images::insert(
            &s.db,
            &db::NewImage {
                fingerprint: fp,
                filename: "",
                size: 1,
                architecture: "x86_64",
                created_at: "2026-01-01T00:00:00Z",
                properties: &BTreeMap::new(),
                public: false,
                cached,
            },
        )
        .await
        .expect("insert");
        if !last_used.is_empty() {
            db::images::touch(&s.db, fp, last_used)
                .await
                .expect("touch");
        }
        std::fs::create_dir_all(s.paths.image(fp).join("rootfs")).expect("dir");
    }

    #[tokio::test]
    async fn only_old_unused_cached_images_expire() {
        let (s, _dir) = store().await;
        let recent = now();
        add(&s, &"a".repeat(64), true, "2026-01-02T00:00:00Z").await; // old, cached
        add(&s, &"b".repeat(64), false, "2026-01-02T00:00:00Z").await; // old, explicit
        add(&s, &"c".repeat(64), true, &recent).await; // cached, used now
        add(&s, &"d".repeat(64), true, "").await; // cached, never used since 2026-01-01
        let gone = s
            .prune_cached(std::time::Duration::from_secs(24 * 3600))
            .await
            .expect("prune");
        assert_eq!(gone, vec!["a".repeat(64), "d".repeat(64)]);
        let left: Vec<String> = s
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.fingerprint)
            .collect();
        assert_eq!(left, vec!["b".repeat(64), "c".repeat(64)]);
        assert!(!s.paths.image(&"a".repeat(64)).exists());
    }
}
