//! SFTP sessions on an instance's files (`GET /1.0/instances/{name}/sftp`, as Incus' `incus
//! file` uses): the SFTP v3 protocol (russh-sftp's server) over an upgraded HTTP connection,
//! every request answered through the contained file layer ([`crate::worker::files::posix`])
//! on the instance's root, on a blocking thread. Paths are the container's (relative ones are
//! taken from `/`), owners in attributes are the container's ids.
//!
//! A session holds the root directory opened when it began; on a running instance without its
//! lifecycle lock (like a file request), on a stopped one with it, for the whole session (a
//! start waits until the client closes it). It ends when the client closes the connection,
//! its open handles with it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use russh_sftp::protocol::{
    Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{InstanceError, Instances};
use crate::worker::files::posix::{self, OpenOptions, SetAttrs, Stat};
use crate::worker::files::{FileError, InnerPath, Perms, RootDir};
use crate::worker::{InitProcess, Worker};

/// The most bytes one `READ` answers (clients ask for 32 to 128 KiB).
const MAX_READ: u32 = 256 * 1024;
/// Directory entries per `READDIR` answer.
const DIR_BATCH: usize = 128;
/// Open handles per session.
const MAX_HANDLES: usize = 256;
/// Cleared from the mode a client asks for when it creates an entry.
const CREATE_UMASK: u32 = 0o022;
/// The extension a session announces: rename replacing the target.
const POSIX_RENAME: &str = "posix-rename@openssh.com";

/// Why an SFTP request failed; becomes the `SSH_FXP_STATUS` answer.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("end of file")]
    Eof,
    #[error("unknown handle")]
    BadHandle,
    #[error("too many open handles (at most {MAX_HANDLES})")]
    TooManyHandles,
    #[error("{0}")]
    BadMessage(String),
    #[error("operation not supported")]
    Unsupported,
    #[error("the instance stopped: its files are no longer reachable through this session")]
    Stopped,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SftpError> for StatusReply {
    fn from(e: SftpError) -> StatusReply {
        let code = match &e {
            SftpError::Eof => return StatusReply::new(StatusCode::Eof),
            SftpError::File(FileError::NotFound { .. }) => StatusCode::NoSuchFile,
            SftpError::BadMessage(_) | SftpError::File(FileError::InvalidPath { .. }) => {
                StatusCode::BadMessage
            }
            SftpError::Unsupported => StatusCode::OpUnsupported,
            _ => StatusCode::Failure,
        };
        StatusReply::new(code).with_message(e.to_string())
    }
}

/// An open handle of a session.
enum Opened {
    File {
        file: Arc<File>,
        path: InnerPath,
    },
    /// A directory's entries, read when it was opened, handed out in batches.
    Dir(std::vec::IntoIter<russh_sftp::protocol::File>),
}

/// One client's SFTP session on an instance's root.
pub struct SftpSession {
    instance: String,
    root: Arc<RootDir>,
    /// A stopped instance's lifecycle lock, held for the session (see [`super::files`]).
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// A running instance's init: once it is gone every request fails, so the old root is
    /// never used beside the overlay of a later start.
    init: Option<(InitProcess, Arc<dyn Worker>)>,
    handles: HashMap<String, Opened>,
    next_handle: u64,
}

impl Instances {
    /// Begin an SFTP session on instance `name`'s files (its root opened now: errors come
    /// before the connection is upgraded).
    pub async fn sftp_session(&self, name: &str) -> Result<SftpSession, InstanceError> {
        let super::files::FileRoot { root, held, init } = self.file_root(name).await?;
        Ok(SftpSession {
            instance: name.to_string(),
            root: Arc::new(root),
            _held: held,
            init: init.map(|i| (i, self.worker.clone())),
            handles: HashMap::new(),
            next_handle: 0,
        })
    }
}

impl SftpSession {
    /// Serve the session on `io` (the upgraded connection) until the client closes it.
    pub async fn serve<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tracing::debug!(instance = %self.instance, "sftp session started");
        let instance = self.instance.clone();
        // A session on a stopped instance holds its lifecycle lock: an idle one is closed
        // (the lock goes with it), so a forgotten client cannot hold up its start for ever.
        let idle_limit = self._held.is_some().then_some(STOPPED_IDLE_LIMIT);
        let last_read = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        let io = Fused {
            inner: io,
            failed: false,
            last_read: last_read.clone(),
        };
        let run = russh_sftp::server::run(io, self);
        match idle_limit {
            None => run.await,
            Some(limit) => {
                tokio::select! {
                    () = run => {}
                    () = idle(last_read, limit) => {
                        tracing::info!(instance = %instance,
                            "sftp session on a stopped instance idle: closed");
                    }
                }
            }
        }
    }

    /// `Stopped` once the running instance the session began on is gone.
    fn check_live(&self) -> Result<(), SftpError> {
        match &self.init {
            Some((init, worker)) if !worker.is_alive(init) => Err(SftpError::Stopped),
            _ => Ok(()),
        }
    }

    /// Run `f` on the root for `path` on a blocking thread.
    async fn on_root<T: Send + 'static>(
        &self,
        path: &str,
        f: impl FnOnce(&RootDir, &InnerPath) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, SftpError> {
        self.check_live()?;
        let path = inner(path)?;
        let root = self.root.clone();
        blocking(move || f(&root, &path).map_err(SftpError::from)).await
    }

    fn add_handle(&mut self, opened: Opened) -> Result<String, SftpError> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), opened);
        Ok(handle)
    }

    fn file(&self, handle: &str) -> Result<(Arc<File>, InnerPath), SftpError> {
        self.check_live()?;
        match self.handles.get(handle) {
            Some(Opened::File { file, path }) => Ok((file.clone(), path.clone())),
            _ => Err(SftpError::BadHandle),
        }
    }
}

/// A client's path as an absolute container path.
fn inner(path: &str) -> Result<InnerPath, SftpError> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(InnerPath::parse(&path)?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SftpError> + Send + 'static,
) -> Result<T, SftpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SftpError::Internal(e.to_string()))?
}

fn attrs_of(st: &Stat) -> FileAttributes {
    let time = |t: i64| Some(u32::try_from(t).unwrap_or(0));
    FileAttributes {
        size: Some(st.size),
        uid: Some(st.uid),
        gid: Some(st.gid),
        permissions: Some(st.mode),
        atime: time(st.atime),
        mtime: time(st.mtime),
        ..FileAttributes::default()
    }
}

/// What a `SETSTAT`/`FSETSTAT`/`OPEN`/`MKDIR` asks for; times are set only as a pair.
fn set_attrs_of(a: &FileAttributes) -> SetAttrs {
    SetAttrs {
        size: a.size,
        perms: Perms {
            uid: a.uid,
            gid: a.gid,
            mode: a.permissions.map(|m| m & 0o7777),
        },
        times: a.atime.zip(a.mtime).map(|(a, m)| (a.into(), m.into())),
    }
}

/// What an `OPEN` that creates or a `MKDIR` asks for: a mode given is subject to a umask of
/// 022, as OpenSSH's server applies its own (clients send 0777 for "the default"); `SETSTAT`
/// sets modes exactly.
fn creation_perms(a: &FileAttributes) -> Perms {
    let perms = set_attrs_of(a).perms;
    Perms {
        mode: perms.mode.map(|m| m & !CREATE_UMASK),
        ..perms
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

/// The strings of an extended request's data (`string` = u32 length + bytes).
fn strings(mut data: &[u8]) -> Result<Vec<String>, SftpError> {
    let bad = || SftpError::BadMessage("malformed extended request".into());
    let mut out = Vec::new();
    while !data.is_empty() {
        let (len, rest) = data.split_at_checked(4).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let (s, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        out.push(String::from_utf8(s.to_vec()).map_err(|_| bad())?);
        data = rest;
    }
    Ok(out)
}

impl russh_sftp::server::Handler for SftpSession {
    type Error = SftpError;

    fn unimplemented(&self) -> SftpError {
        SftpError::Unsupported
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, SftpError> {
        if version < 3 {
            return Err(SftpError::BadMessage(format!(
                "SFTP version {version} is not supported (3 is)"
            )));
        }
        let mut v = Version::new();
        v.extensions
            .insert(POSIX_RENAME.to_string(), "1".to_string());
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, SftpError> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        let opts = OpenOptions {
            read: pflags.contains(OpenFlags::READ),
            write: pflags.contains(OpenFlags::WRITE),
            append: pflags.contains(OpenFlags::APPEND),
            create: pflags.contains(OpenFlags::CREATE),
            truncate: pflags.contains(OpenFlags::TRUNCATE),
            exclusive: pflags.contains(OpenFlags::EXCLUDE),
        };
        let perms = creation_perms(&attrs);
        let path = inner(&filename)?;
        let (file, path) = self
            .on_root(&filename, move |root, p| {
                posix::open(root, p, &opts, perms).map(|f| (f, path))
            })
            .await?;
        let handle = self.add_handle(Opened::File {
            file: Arc::new(file),
            path,
        })?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, SftpError> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(SftpError::BadHandle),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, SftpError> {
        let (file, path) = self.file(&handle)?;
        let data = blocking(move || {
            let mut buf = vec![0u8; len.min(MAX_READ) as usize];
            let n = file.read_at(&mut buf, offset).map_err(|e| FileError::Io {
                path: path.as_str().to_string(),
                source: e,
            })?;
            buf.truncate(n);
            Ok(buf)
        })
        .await?;
        if data.is_empty() && len > 0 {
            return Err(SftpError::Eof);
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, SftpError> {
        let (file, path) = self.file(&handle)?;
        blocking(move || {
            file.write_all_at(&data, offset).map_err(|e| {
                SftpError::File(FileError::Io {
                    path: path.as_str().to_string(),
                    source: e,
                })
            })
        })
        .await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, SftpError> {
        let st = self
            .on_root(&path, |root, p| posix::stat(root, p, false))
            .await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&st),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, SftpError> {
        let st = self
            .on_root(&path, |root, p| posix::stat(root, p, true))
            .await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&st),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, SftpError> {
        let (file, path) = self.file(&handle)?;
        let root = self.root.clone();
        let st = blocking(move || Ok(posix::file_stat(&root, &path, &file)?)).await?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&st),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, SftpError> {
        let set = set_attrs_of(&attrs);
        self.on_root(&path, move |root, p| posix::set_attrs(root, p, &set))
            .await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, SftpError> {
        let (file, path) = self.file(&handle)?;
        let root = self.root.clone();
        let set = set_attrs_of(&attrs);
        blocking(move || Ok(posix::set_file_attrs(&root, &path, &file, &set)?)).await?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, SftpError> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        let entries = self.on_root(&path, posix::read_dir).await?;
        let files: Vec<_> = entries
            .into_iter()
            .map(|(name, st)| russh_sftp::protocol::File::new(name, attrs_of(&st)))
            .collect();
        let handle = self.add_handle(Opened::Dir(files.into_iter()))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, SftpError> {
        let Some(Opened::Dir(entries)) = self.handles.get_mut(&handle) else {
            return Err(SftpError::BadHandle);
        };
        let files: Vec<_> = entries.by_ref().take(DIR_BATCH).collect();
        if files.is_empty() {
            return Err(SftpError::Eof);
        }
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, SftpError> {
        self.on_root(&filename, posix::remove_file).await?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, SftpError> {
        let perms = creation_perms(&attrs);
        self.on_root(&path, move |root, p| posix::create_dir(root, p, perms))
            .await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, SftpError> {
        self.on_root(&path, posix::remove_dir).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, SftpError> {
        Ok(Name {
            id,
            files: vec![russh_sftp::protocol::File::dummy(posix::real_path(&path))],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, SftpError> {
        self.rename_paths(&oldpath, &newpath, false).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, SftpError> {
        let target = self.on_root(&path, posix::read_link).await?;
        Ok(Name {
            id,
            files: vec![russh_sftp::protocol::File::dummy(
                String::from_utf8_lossy(&target).into_owned(),
            )],
        })
    }

    /// OpenSSH (and every client written against it) sends the target first, the link's
    /// path second: the reverse of the draft, which names them `linkpath`, `targetpath`.
    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, SftpError> {
        let (target, link) = (linkpath, targetpath);
        self.on_root(&link, move |root, p| {
            crate::worker::files::make_symlink(root, p, target.as_bytes(), &Perms::default())
        })
        .await?;
        Ok(ok(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, SftpError> {
        if request != POSIX_RENAME {
            return Err(SftpError::Unsupported);
        }
        let [from, to]: [String; 2] = strings(&data)?
            .try_into()
            .map_err(|_| SftpError::BadMessage(format!("{POSIX_RENAME} takes two paths")))?;
        self.rename_paths(&from, &to, true).await?;
        Ok(Packet::Status(ok(id)))
    }
}

impl SftpSession {
    async fn rename_paths(&self, from: &str, to: &str, replace: bool) -> Result<(), SftpError> {
        let to = inner(to)?;
        self.on_root(from, move |root, from| {
            posix::rename(root, from, &to, replace)
        })
        .await
    }
}

/// The connection as the SFTP server reads it: after any I/O error it reads as closed, so
/// the server's loop (which only stops at end of file) ends with the connection.
struct Fused<S> {
    inner: S,
    failed: bool,
    /// When the client last sent something.
    last_read: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

/// How long a session on a stopped instance may stay silent.
const STOPPED_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Resolves once nothing was read for `limit`.
async fn idle(last_read: Arc<std::sync::Mutex<tokio::time::Instant>>, limit: std::time::Duration) {
    loop {
        let last = *last_read.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = last + limit;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Fused<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.failed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        }
        if let Poll::Ready(Err(e)) = &polled {
            tracing::debug!(error = %e, "sftp connection failed");
            self.failed = true;
            return Poll::Ready(Ok(()));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Fused<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &polled {
            self.failed = true;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &polled {
            self.failed = true;
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idleness_is_counted_from_the_last_read() {
        use std::time::Duration;
        let last = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        let limit = Duration::from_millis(300);
        let bumper = {
            let last = last.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
                }
            })
        };
        let started = tokio::time::Instant::now();
        let done = tokio::time::timeout(Duration::from_secs(10), idle(last.clone(), limit)).await;
        assert!(done.is_ok(), "never idle");
        let _ = bumper.await;
        // Five reads 100 ms apart kept it alive; it ended a whole limit after the last one.
        assert!(started.elapsed() >= Duration::from_millis(500) + limit);
        let last = *last.lock().unwrap_or_else(|p| p.into_inner());
        assert!(last.elapsed() >= limit);
    }

    #[test]
    fn extended_strings_are_parsed_or_refused() {
        let mut data = Vec::new();
        for s in ["/a", "/b/c"] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        assert_eq!(strings(&data).ok(), Some(vec!["/a".into(), "/b/c".into()]));
        assert!(strings(&data[..data.len() - 1]).is_err());
        assert!(strings(&[0, 0, 1]).is_err());
    }

    #[test]
    fn errors_become_sftp_status_codes() {
        let code = |e: SftpError| StatusReply::from(e).status_code;
        assert_eq!(code(SftpError::Eof), StatusCode::Eof);
        assert_eq!(
            code(SftpError::File(FileError::NotFound { path: "/x".into() })),
            StatusCode::NoSuchFile
        );
        assert_eq!(code(SftpError::Unsupported), StatusCode::OpUnsupported);
        assert_eq!(code(SftpError::BadHandle), StatusCode::Failure);
    }

    #[test]
    fn created_modes_lose_group_and_other_write() {
        let attrs = FileAttributes {
            permissions: Some(0o40777),
            uid: Some(5),
            ..FileAttributes::default()
        };
        let perms = creation_perms(&attrs);
        assert_eq!(
            (perms.mode, perms.uid, perms.gid),
            (Some(0o755), Some(5), None)
        );
        assert_eq!(set_attrs_of(&attrs).perms.mode, Some(0o777));
        assert_eq!(creation_perms(&FileAttributes::default()).mode, None);
    }

    #[test]
    fn relative_client_paths_start_at_the_root() {
        let p = |s: &str| inner(s).map(|p| p.as_str().to_string()).ok();
        assert_eq!(p("etc/hosts").as_deref(), Some("/etc/hosts"));
        assert_eq!(p("/etc").as_deref(), Some("/etc"));
        assert_eq!(p(".").as_deref(), Some("/."));
    }
}
