//! The file API's service: files of an instance, reached through its root directory
//! ([`crate::worker::files`]) off the async threads.
//!
//! A running instance's root is its init's. A stopped one's is its overlay, made for the
//! request as a detached mount nothing else sees ([`crate::worker::rootfs`]); its lifecycle
//! lock is held while the request works in it, so a start cannot mount the same layers
//! under it. A running instance's file requests do not take the lock: a long upload never
//! holds up a stop, and a file open when the container stops stays usable until the
//! request ends.

use std::fmt::Display;

use futures_util::Stream;
use tokio::sync::OwnedMutexGuard;

use super::{InstanceError, Instances, idmap};
use crate::paths::overlay_dirs;
use crate::worker::StoppedRoot;
use crate::worker::files::{self, FileContent, FileInfo, InnerPath, Perms, RootDir, WriteOptions};

/// The root a file request works in, and (for a stopped instance) its lifecycle lock.
pub(crate) struct FileRoot {
    pub(crate) root: RootDir,
    pub(crate) held: Option<OwnedMutexGuard<()>>,
    /// The init whose root it is (a running instance): a long user of the root (an SFTP
    /// session) stops using it once that init is gone.
    pub(crate) init: Option<crate::worker::InitProcess>,
}

impl Instances {
    /// The root directory of instance `name`, running or stopped.
    pub(crate) async fn file_root(&self, name: &str) -> Result<FileRoot, InstanceError> {
        let row = self.row(name).await?;
        if let Some(init) = self.running_init(&row) {
            let worker = self.worker.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let opened = worker.open_root(&init);
                // Gone between the check and the open: it stopped.
                let gone = opened.is_err() && !worker.is_alive(&init);
                (opened, gone)
            })
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))?;
            match opened {
                (Ok(root), _) => {
                    return Ok(FileRoot {
                        root,
                        held: None,
                        init: Some(init),
                    });
                }
                (Err(e), false) => return Err(e.into()),
                // Stopped meanwhile: reach it as a stopped one.
                (Err(_), true) => {}
            }
        }
        let held = self.lock_for(name).lock_owned().await;
        let row = self.row(name).await?;
        if self.running_init(&row).is_some() {
            // Started while this request waited for the lock: its init's root it is.
            drop(held);
            return Box::pin(self.file_root(name)).await;
        }
        let dir = self.paths.container(name);
        let (upper, work, _) = overlay_dirs(&dir);
        // The map the instance's own files were last shifted to (none before its first
        // start): the image layer is seen through the same one, so copy-ups match.
        let id_map = idmap::from_json(row.config.get(idmap::VOLATILE_ON_DISK));
        let layer = self.lower_of(&row).await?;
        let root = self
            .blocking_worker(move |w| {
                let lower = w.lower_layer(&layer, id_map.as_ref())?;
                w.open_stopped_root(&StoppedRoot {
                    lower,
                    upper,
                    work,
                    id_map,
                })
            })
            .await?;
        Ok(FileRoot {
            root,
            held: Some(held),
            init: None,
        })
    }

    /// Run blocking file work `f` on the root of `name`, for `path`.
    async fn with_root<T: Send + 'static>(
        &self,
        name: &str,
        path: &str,
        f: impl FnOnce(&RootDir, &InnerPath) -> Result<T, files::FileError> + Send + 'static,
    ) -> Result<T, InstanceError> {
        let path = InnerPath::parse(path)?;
        let FileRoot {
            root, held: _held, ..
        } = self.file_root(name).await?;
        tokio::task::spawn_blocking(move || f(&root, &path))
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))?
            .map_err(InstanceError::from)
    }

    /// What `path` holds in instance `name` (a final symlink is not followed): a file open
    /// for reading, a directory listing or a symlink target, with owner and mode.
    pub async fn file_read(
        &self,
        name: &str,
        path: &str,
    ) -> Result<(FileInfo, FileContent), InstanceError> {
        self.with_root(name, path, files::read).await
    }

    /// Write `body` to file `path` in instance `name` as it arrives, replacing or appending to
    /// the content (see [`files::open_for_write`]); returns the bytes written.
    pub async fn file_write<S, B, E>(
        &self,
        name: &str,
        path: &str,
        opts: WriteOptions,
        body: S,
    ) -> Result<u64, InstanceError>
    where
        S: Stream<Item = Result<B, E>> + Send,
        B: AsRef<[u8]> + Send,
        E: Display,
    {
        let inner = InnerPath::parse(path)?;
        let (opened, _held) = match self.file_root(name).await {
            Ok(FileRoot { root, held, .. }) => {
                let p = inner.clone();
                let opened =
                    tokio::task::spawn_blocking(move || files::open_for_upload(&root, &p, &opts))
                        .await
                        .map_err(|e| InstanceError::Internal(e.to_string()))
                        .and_then(|r| r.map_err(InstanceError::from));
                (opened, held)
            }
            Err(e) => (Err(e), None),
        };
        let mut upload = match opened {
            Ok(u) => u,
            Err(e) => {
                // Refused before the body was read: read (and drop) a small body first, so
                // a client still sending it gets this answer, not a broken pipe.
                drain_small(body).await;
                return Err(e);
            }
        };
        let Some(file) = upload.take_file() else {
            return Err(InstanceError::Internal("upload without a file".into()));
        };
        // A failure here drops the upload: its temporary file goes, the old one stays.
        let written = files::write_stream(&inner, file, body).await?;
        tokio::task::spawn_blocking(move || upload.commit())
            .await
            .map_err(|e| InstanceError::Internal(e.to_string()))??;
        Ok(written)
    }

    /// Make directory `path` in instance `name` (one that exists is fine).
    pub async fn file_mkdir(
        &self,
        name: &str,
        path: &str,
        opts: WriteOptions,
    ) -> Result<(), InstanceError> {
        self.with_root(name, path, move |root, path| {
            files::make_dir(root, path, &opts)
        })
        .await
    }

    /// Make symlink `path` to `target` in instance `name`.
    pub async fn file_symlink(
        &self,
        name: &str,
        path: &str,
        target: Vec<u8>,
        perms: Perms,
    ) -> Result<(), InstanceError> {
        self.with_root(name, path, move |root, path| {
            files::make_symlink(root, path, &target, &perms)
        })
        .await
    }

    /// Delete the file, symlink or empty directory `path` in instance `name`.
    pub async fn file_delete(&self, name: &str, path: &str) -> Result<(), InstanceError> {
        self.with_root(name, path, files::remove).await
    }
}

/// Read and drop up to [`DRAIN_LIMIT`] bytes of a request body (for at most a second): what
/// a refused upload does before it answers, so the client's write of a small body completes.
async fn drain_small<S, B, E>(body: S)
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
{
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut seen = 0usize;
    let drained = async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.as_ref().len();
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
}

/// The most of a refused upload's body read before answering.
const DRAIN_LIMIT: usize = 1 << 20;
