//! Files inside a running container, for the file API: read, write, append, make directories
//! and symlinks, delete. A path is always resolved inside the container's root and can never
//! leave it.
//!
//! How: the root is an `O_PATH` descriptor of `/proc/<init>/root` ([`RootDir`]). Paths are
//! walked by the kernel with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to that
//! descriptor, so `..`, absolute symlinks and symlinks climbing upwards all resolve as if the
//! root were `/`, and `/proc/<pid>/root`-style magic links are refused. Directories, symlinks
//! and deletions are named by one path component relative to their resolved parent directory
//! (`mkdirat`, `symlinkat`, `unlinkat`, `O_NOFOLLOW` opens); a file write opens the whole path
//! with `openat2` (a final symlink is followed, inside the root like the rest). Owner and mode
//! are set on descriptors, never through a path string. A container that swaps a directory
//! for a symlink in the middle of a request can only redirect the request inside itself.
//!
//! Owners are in the container's ids: read from `/proc/<init>/{uid,gid}_map` when the root is
//! opened, host ids are shown as the container sees them and requested ids are mapped to host
//! ids (a new entry belongs to the container's root unless the request names an owner).

use std::ffi::{CStr, CString, OsStr};
use std::fmt::Display;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{proc, sys};

pub mod posix;

/// How every path is walked: inside the root, no magic links.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
/// The id a user namespace shows for an unmapped one (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;
/// `openat2` answers `EAGAIN` when a `..` raced with a rename; it is safe to retry.
const RETRIES: usize = 16;
/// The longest symlink target accepted (`PATH_MAX` with its NUL).
pub const MAX_LINK_TARGET: usize = 4095;
/// Mode of a created file when the request gives none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of a created directory when the request gives none.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// File operation errors; `api::error` maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    Exists { path: String },
    /// The request cannot be done to what is there (a directory where a file is expected, a
    /// non-empty directory, a symlink that may not be followed...).
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// Classify an error of an operation on `path` by its errno.
    fn from_io(path: &str, source: io::Error) -> FileError {
        let path = path.to_string();
        let refused = |reason: &str| FileError::Refused {
            path: path.clone(),
            reason: reason.to_string(),
        };
        match source.raw_os_error() {
            Some(libc::ENOENT) => FileError::NotFound { path },
            Some(libc::EEXIST) => FileError::Exists { path },
            Some(libc::ELOOP) => {
                refused("a symlink that may not be followed here, or too many levels of symlinks")
            }
            Some(libc::EXDEV) => refused("the path leaves the instance's root"),
            Some(KERNEL_FS) => refused(
                "on a kernel filesystem (proc, sys, cgroup, devpts...): not reachable through \
                 the file API (use exec)",
            ),
            Some(
                n @ (libc::ENOTDIR
                | libc::EISDIR
                | libc::ENOTEMPTY
                | libc::ENAMETOOLONG
                | libc::ENXIO
                | libc::ETXTBSY
                | libc::EROFS
                | libc::EPERM
                | libc::EACCES
                | libc::EBUSY
                | libc::EINVAL),
            ) => refused(&lowercase_first(Errno::from_raw(n).desc())),
            _ => FileError::Io { path, source },
        }
    }
}

/// The filesystems the file API works on (`statfs` magic numbers): ones that hold files,
/// on disk, in memory or over the network.
const FILES_FILESYSTEMS: &[u32] = &[
    0x794c_7630, // overlay
    0x0000_ef53, // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683e, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0x2fc1_2fc1, // zfs
    0xf2f5_2010, // f2fs
    0xca45_1a4e, // bcachefs
    0x7371_7368, // squashfs
    0x0000_6969, // nfs
    0x0000_4d44, // vfat
    0x2011_bab0, // exfat
];

/// `EMEDIUMTYPE` marks a path on a kernel filesystem (never an answer of `openat2`).
const KERNEL_FS: i32 = libc::EMEDIUMTYPE;

/// Refuse `fd` unless it is on one of [`FILES_FILESYSTEMS`]. ctld works in a container's
/// root as host root: `/proc`, `/sys`, cgroup, debugfs, tracefs, securityfs, bpf, configfs,
/// devpts, mqueue and FUSE mounts inside it are kernel interfaces (or the container's own
/// server), where a write as host root would reach the host kernel (a container can unmount
/// what masks them and point a symlink there). They stay reachable from inside, by exec.
fn on_files_filesystem(fd: &OwnedFd) -> io::Result<()> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(errno_io)?;
    // The magic is 32 bits; the field is a signed word on some architectures.
    let magic = fs.filesystem_type().0 as u64 as u32;
    if FILES_FILESYSTEMS.contains(&magic) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(KERNEL_FS))
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_lowercase().chain(chars).collect::<String>()
    })
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A path inside the container, checked and split for resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerPath {
    /// As the client gave it (for messages).
    shown: String,
    /// Relative to the root; `.` for the root itself.
    full: CString,
    /// The parent directory, relative to the root.
    parent: CString,
    /// The last component; `None` when the path names the root or ends in `..` (then it
    /// can only be a directory that exists).
    name: Option<CString>,
}

impl InnerPath {
    /// Check an absolute path and split it. Empty and `.` components are dropped; `..` is
    /// left to the kernel, which never lets it climb above the root.
    pub fn parse(path: &str) -> Result<InnerPath, FileError> {
        let invalid = |reason| FileError::InvalidPath {
            path: path.to_string(),
            reason,
        };
        if !path.starts_with('/') {
            return Err(invalid("the path must be absolute"));
        }
        if path.contains('\0') {
            return Err(invalid("the path must not contain NUL bytes"));
        }
        let parts: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let join = |parts: &[&str]| {
            let s = if parts.is_empty() {
                ".".to_string()
            } else {
                parts.join("/")
            };
            CString::new(s).map_err(|_| invalid("the path must not contain NUL bytes"))
        };
        let full = join(&parts)?;
        let (parent, name) = match parts.split_last() {
            Some((last, rest)) if *last != ".." => (join(rest)?, Some(join(&[last])?)),
            _ => (full.clone(), None),
        };
        Ok(InnerPath {
            shown: path.to_string(),
            full,
            parent,
            name,
        })
    }

    /// The path as the client gave it.
    pub fn as_str(&self) -> &str {
        &self.shown
    }

    fn err(&self, e: io::Error) -> FileError {
        FileError::from_io(&self.shown, e)
    }

    fn errno(&self, e: Errno) -> FileError {
        self.err(errno_io(e))
    }

    fn refused(&self, reason: &str) -> FileError {
        FileError::Refused {
            path: self.shown.clone(),
            reason: reason.to_string(),
        }
    }
}

/// An open root directory every path is resolved in.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    /// The container's id map (`None`: host ids as they are, a privileged container).
    ids: Option<super::spec::IdMap>,
}

impl RootDir {
    /// Open `dir` (following it, as `/proc/<pid>/root` must be) as the root.
    pub fn open(dir: &Path) -> io::Result<RootDir> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(RootDir { fd, ids: None })
    }

    /// The root of a detached mount `fd` (a stopped container's overlay) whose own files are
    /// shifted to `ids`.
    pub fn of_mount(fd: OwnedFd, ids: Option<super::spec::IdMap>) -> RootDir {
        let ids = ids.filter(|m| !super::spec::IdMap::is_identity(&m.uids));
        RootDir { fd, ids }
    }

    /// The root directory of process `pid`, checked against `starttime`: a root opened after
    /// the PID was reused by another process (whose root may be the host's) is refused.
    pub fn of_process(pid: i32, starttime: u64) -> io::Result<RootDir> {
        let mut root = RootDir::open(&PathBuf::from(format!("/proc/{pid}/root")))?;
        let uids = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
        let gids = std::fs::read_to_string(format!("/proc/{pid}/gid_map"))?;
        // Alive with the recorded start time now means it was that process all along, so
        // the descriptor is its root and the maps are its own.
        if !proc::is_alive(pid, starttime) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let (uids, gids) = (
            super::spec::IdMap::parse_proc(&uids),
            super::spec::IdMap::parse_proc(&gids),
        );
        if !super::spec::IdMap::is_identity(&uids) {
            root.ids = Some(super::spec::IdMap { uids, gids });
        }
        Ok(root)
    }

    /// For the duration of one request that creates entries: this thread's filesystem ids
    /// become the container root's (see [`super::caps::FsIds`]), so filesystems the
    /// container mounted itself (its own `/tmp`) accept the new entries. `None` for a
    /// privileged container.
    fn as_container_root(&self, path: &InnerPath) -> Result<Option<super::caps::FsIds>, FileError> {
        let Some((uid, gid)) = self.container_root() else {
            return Ok(None);
        };
        super::caps::act_as(uid, gid)
            .map(Some)
            .map_err(|e| path.err(e))
    }

    /// The host ids of the container's root (`None` for a privileged container).
    fn container_root(&self) -> Option<(u32, u32)> {
        let m = self.ids.as_ref()?;
        Some((m.host_uid(0)?, m.host_gid(0)?))
    }

    /// An owner as the container sees it (the overflow id 65534 for a host id it does not
    /// map).
    fn inside_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        match &self.ids {
            None => (uid, gid),
            Some(m) => (
                super::spec::to_inside(&m.uids, uid).unwrap_or(OVERFLOW_ID),
                super::spec::to_inside(&m.gids, gid).unwrap_or(OVERFLOW_ID),
            ),
        }
    }

    /// `perms` with the owner given in container ids turned into host ids; a new entry
    /// belongs to the container's root unless the request says otherwise.
    fn host_perms(
        &self,
        path: &InnerPath,
        perms: Perms,
        created: bool,
    ) -> Result<Perms, FileError> {
        let Some(m) = &self.ids else {
            return Ok(perms);
        };
        let default = created.then_some(0);
        let map = |id: Option<u32>, ranges: &[super::spec::IdRange], what: &str| {
            id.or(default)
                .map(|id| {
                    super::spec::to_host(ranges, id).ok_or_else(|| {
                        path.refused(&format!("{what} {id} is not mapped in the instance"))
                    })
                })
                .transpose()
        };
        Ok(Perms {
            uid: map(perms.uid, &m.uids, "uid")?,
            gid: map(perms.gid, &m.gids, "gid")?,
            mode: perms.mode,
        })
    }

    /// `openat2` of `rel` (relative to the root) with `flags`, retried on `EAGAIN`; what it
    /// reaches must be on a filesystem of files ([`on_files_filesystem`]).
    fn walk(&self, rel: &CStr, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        let flags = (flags | OFlag::O_CLOEXEC).bits();
        let mut last = io::Error::from_raw_os_error(libc::EAGAIN);
        for _ in 0..RETRIES {
            match sys::openat2(self.fd.as_fd(), rel, flags, mode, RESOLVE) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => last = e,
                Ok(fd) => return on_files_filesystem(&fd).map(|()| fd),
                other => return other,
            }
        }
        Err(last)
    }

    /// The parent directory of `path`, as an `O_PATH` descriptor.
    fn parent(&self, path: &InnerPath) -> Result<OwnedFd, FileError> {
        self.walk(&path.parent, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map_err(|e| path.err(e))
    }
}

/// The kinds of entries the file API handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
}

impl FileKind {
    /// The name on the wire (`X-Incus-type`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
        }
    }
}

/// Owner, group, permission bits and kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
}

/// What a path holds.
#[derive(Debug)]
pub enum FileContent {
    /// A regular file, open for reading.
    File(std::fs::File),
    /// Entry names of a directory, sorted, without `.` and `..`.
    Directory(Vec<String>),
    /// A symlink's target, as stored.
    Symlink(Vec<u8>),
}

fn info_of(path: &InnerPath, st: &FileStat) -> Result<FileInfo, FileError> {
    let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => FileKind::File,
        SFlag::S_IFDIR => FileKind::Directory,
        SFlag::S_IFLNK => FileKind::Symlink,
        _ => return Err(path.refused("not a regular file, directory or symlink")),
    };
    Ok(FileInfo {
        kind,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
    })
}

/// Look at `path` without following a final symlink and open what is there: a regular file
/// for reading, a directory's entry names, or a symlink's target.
pub fn read(root: &RootDir, path: &InnerPath) -> Result<(FileInfo, FileContent), FileError> {
    let parent = root.parent(path)?;
    let entry = match &path.name {
        Some(name) => nix::fcntl::openat(
            &parent,
            name.as_c_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| path.errno(e))?,
        None => parent,
    };
    let st = nix::sys::stat::fstat(&entry).map_err(|e| path.errno(e))?;
    let mut info = info_of(path, &st)?;
    (info.uid, info.gid) = root.inside_ids(info.uid, info.gid);
    let content = match info.kind {
        FileKind::Symlink => {
            let target = nix::fcntl::readlinkat(&entry, "").map_err(|e| path.errno(e))?;
            FileContent::Symlink(target.as_bytes().to_vec())
        }
        FileKind::Directory => FileContent::Directory(list(path, &entry)?),
        // Reopen exactly the inode looked at, for reading: nothing is resolved again.
        FileKind::File => {
            FileContent::File(std::fs::File::open(fd_path(&entry)).map_err(|e| path.err(e))?)
        }
    };
    Ok((info, content))
}

fn list(path: &InnerPath, dir: &OwnedFd) -> Result<Vec<String>, FileError> {
    // Through our own descriptor, as for a file: nothing is resolved again.
    let entries = std::fs::read_dir(fd_path(dir)).map_err(|e| path.err(e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| path.err(e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// `/proc/self/fd/N`: reopening it opens exactly the inode `fd` refers to.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Owner, group and mode to set; `None` leaves that one alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
}

impl Perms {
    /// Apply to an open file or directory (owner first: chown clears setuid bits).
    fn apply<F: AsFd>(&self, path: &InnerPath, fd: &F) -> Result<(), FileError> {
        if self.uid.is_some() || self.gid.is_some() {
            nix::unistd::fchown(fd, self.uid.map(Uid::from_raw), self.gid.map(Gid::from_raw))
                .map_err(|e| path.errno(e))?;
        }
        if let Some(mode) = self.mode {
            nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))
                .map_err(|e| path.errno(e))?;
        }
        Ok(())
    }

    /// These perms with `mode` defaulted.
    fn with_default_mode(self, mode: u32) -> Perms {
        Perms {
            mode: Some(self.mode.unwrap_or(mode)),
            ..self
        }
    }
}

/// How to write a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Applied when the write creates the entry (mode defaults per kind).
    pub create: Perms,
    /// Applied when the entry already exists.
    pub existing: Perms,
    /// Append instead of replacing the content.
    pub append: bool,
}

/// Open `path` for writing, creating it if needed (a final symlink is followed, inside the
/// root), truncated unless `append`. Owner and mode are applied on the descriptor.
pub fn open_for_write(
    root: &RootDir,
    path: &InnerPath,
    opts: &WriteOptions,
) -> Result<std::fs::File, FileError> {
    if path.name.is_none() {
        return Err(path.refused("is a directory"));
    }
    let _ids = root.as_container_root(path)?;
    // Non-blocking and no controlling tty: a FIFO or a terminal put in our way by the
    // container cannot hang the open.
    let base = OFlag::O_WRONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | if opts.append {
            OFlag::O_APPEND
        } else {
            OFlag::empty()
        };
    let trunc = if opts.append {
        OFlag::empty()
    } else {
        OFlag::O_TRUNC
    };
    let mut opened = None;
    // Create it, or open what exists; a concurrent delete sends us round again.
    for _ in 0..4 {
        match root.walk(&path.full, base | OFlag::O_CREAT | OFlag::O_EXCL, 0o600) {
            Ok(fd) => {
                opened = Some((fd, true));
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(path.err(e)),
        }
        // An existing entry is looked at (O_PATH) before it is opened for writing: opening
        // a device node the container planted would already act on the host's device.
        match root.walk(&path.full, OFlag::O_PATH, 0) {
            Ok(pfd) => {
                let st = nix::sys::stat::fstat(&pfd).map_err(|e| path.errno(e))?;
                if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
                    return Err(path.refused("not a regular file"));
                }
                use std::os::fd::AsRawFd;
                let reopened = nix::fcntl::open(
                    format!("/proc/self/fd/{}", pfd.as_raw_fd()).as_str(),
                    base | trunc,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| path.errno(e))?;
                opened = Some((reopened, false));
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(path.err(e)),
        }
    }
    let (fd, created) = match opened {
        Some(o) => o,
        // Still there but not openable without creating: a dangling symlink. Create its
        // target (resolved inside the root like everything else).
        None => (
            root.walk(&path.full, base | trunc | OFlag::O_CREAT, 0o600)
                .map_err(|e| path.err(e))?,
            true,
        ),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| path.errno(e))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(path.refused("not a regular file"));
    }
    let perms = if created {
        opts.create.with_default_mode(DEFAULT_FILE_MODE)
    } else {
        opts.existing
    };
    root.host_perms(path, perms, created)?.apply(path, &fd)?;
    Ok(std::fs::File::from(fd))
}

/// A file being written to replace `path`'s content. Unless appending (or writing
/// through a final symlink, which is written in place), the content goes to a temporary
/// file beside it, renamed over it only once complete ([`Upload::commit`]): a failed
/// upload (a dropped connection, a full disk) leaves the old file as it was, or no file,
/// never a part. An `Upload` dropped uncommitted removes its temporary file.
#[derive(Debug)]
pub struct Upload {
    file: Option<std::fs::File>,
    /// `(parent directory, temporary name, final name)`; `None` when written in place.
    rename: Option<(OwnedFd, CString, CString)>,
    path: InnerPath,
    /// The container root's host ids: the rename and the cleanup run as it, like the
    /// create (a filesystem the container mounted refuses names from unmapped ids).
    act_as: Option<(u32, u32)>,
}

impl Upload {
    /// The file to write the content to (once).
    pub fn take_file(&mut self) -> Option<std::fs::File> {
        self.file.take()
    }

    /// The content is complete: put it in place.
    pub fn commit(mut self) -> Result<(), FileError> {
        let Some((parent, tmp, name)) = self.rename.take() else {
            return Ok(());
        };
        let _ids = match self.act_as {
            Some((uid, gid)) => Some(super::caps::act_as(uid, gid).map_err(|e| self.path.err(e))?),
            None => None,
        };
        let renamed = nix::fcntl::renameat(&parent, tmp.as_c_str(), &parent, name.as_c_str());
        if let Err(e) = renamed {
            let _ = nix::unistd::unlinkat(&parent, tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
            return Err(self.path.errno(e));
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some((parent, tmp, _)) = &self.rename {
            let _ids = self
                .act_as
                .and_then(|(uid, gid)| super::caps::act_as(uid, gid).ok());
            let _ = nix::unistd::unlinkat(parent, tmp.as_c_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The temporary name an upload to `name` is written under: hidden, beside it, unique.
fn upload_name(name: &CStr) -> CString {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let bytes = name.to_bytes();
    let mut tmp = Vec::with_capacity(bytes.len() + 48);
    tmp.push(b'.');
    // Names near NAME_MAX (255) keep only the suffix.
    if bytes.len() <= 200 {
        tmp.extend_from_slice(bytes);
    }
    tmp.extend_from_slice(format!(".ctl-upload-{unique}").as_bytes());
    // No NUL inside: `name` is a C string and the rest is ASCII.
    CString::new(tmp).unwrap_or_default()
}

/// Open `path` for an upload (see [`Upload`]): appending and a final symlink go through
/// [`open_for_write`]; otherwise a temporary file is made beside the entry, with the
/// existing file's owner and mode (then `opts.existing`) or a new file's (`opts.create`).
pub fn open_for_upload(
    root: &RootDir,
    path: &InnerPath,
    opts: &WriteOptions,
) -> Result<Upload, FileError> {
    let in_place = |root: &RootDir| {
        Ok(Upload {
            file: Some(open_for_write(root, path, opts)?),
            rename: None,
            path: path.clone(),
            act_as: None,
        })
    };
    let Some(name) = &path.name else {
        return Err(path.refused("is a directory"));
    };
    if opts.append {
        return in_place(root);
    }
    let parent = root.parent(path)?;
    let existing =
        match nix::sys::stat::fstatat(&parent, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
                SFlag::S_IFREG => Some(st),
                SFlag::S_IFLNK => return in_place(root),
                _ => return Err(path.refused("not a regular file")),
            },
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(path.errno(e)),
        };
    let _ids = root.as_container_root(path)?;
    let tmp = upload_name(name);
    let fd = nix::fcntl::openat(
        &parent,
        tmp.as_c_str(),
        OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| path.errno(e))?;
    // From here on, a failure removes the temporary file (the Upload's drop).
    let mut upload = Upload {
        file: None,
        rename: Some((parent, tmp, name.clone())),
        path: path.clone(),
        act_as: root.container_root(),
    };
    let perms = match existing {
        // The replaced file's owner and mode (host ids already), then what the request sets.
        Some(st) => {
            let asked = root.host_perms(path, opts.existing, false)?;
            Perms {
                uid: asked.uid.or(Some(st.st_uid)),
                gid: asked.gid.or(Some(st.st_gid)),
                mode: asked.mode.or(Some(st.st_mode & 0o7777)),
            }
        }
        None => root.host_perms(path, opts.create.with_default_mode(DEFAULT_FILE_MODE), true)?,
    };
    perms.apply(path, &fd)?;
    upload.file = Some(std::fs::File::from(fd));
    Ok(upload)
}

/// Bytes read from a file per chunk of a download.
const READ_CHUNK: usize = 256 * 1024;

/// The content of `file` as a stream of chunks, read as they are asked for (never the whole
/// file in memory).
pub fn read_stream(file: std::fs::File) -> impl Stream<Item = io::Result<Vec<u8>>> + Send {
    futures_util::stream::try_unfold(tokio::fs::File::from_std(file), |mut file| async move {
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        chunk.truncate(n);
        Ok(Some((chunk, file)))
    })
}

/// Write every chunk of `body` to `file` as it arrives (never more than one chunk in
/// memory); returns the bytes written. A body that fails mid-way leaves what was written.
pub async fn write_stream<S, B, E>(
    path: &InnerPath,
    file: std::fs::File,
    body: S,
) -> Result<u64, FileError>
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: Display,
{
    let mut file = tokio::fs::File::from_std(file);
    let mut body = std::pin::pin!(body);
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // Let the write in flight land before answering.
                let _ = file.flush().await;
                return Err(path.refused(&format!("upload interrupted: {e}")));
            }
        };
        let bytes = chunk.as_ref();
        file.write_all(bytes).await.map_err(|e| path.err(e))?;
        written += bytes.len() as u64;
    }
    // The last write runs in the background until flushed; its error shows here.
    file.flush().await.map_err(|e| path.err(e))?;
    Ok(written)
}

/// Make directory `path`. One that exists already (also through a symlink) is fine and gets
/// `opts.existing`; a new one gets `opts.create` (mode 0755 by default).
pub fn make_dir(root: &RootDir, path: &InnerPath, opts: &WriteOptions) -> Result<(), FileError> {
    let _ids = root.as_container_root(path)?;
    let existing = |root: &RootDir| -> Result<(), FileError> {
        let dir = root
            .walk(&path.full, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) => path.refused("exists and is not a directory"),
                _ => path.err(e),
            })?;
        root.host_perms(path, opts.existing, false)?
            .apply(path, &dir)
    };
    let Some(name) = &path.name else {
        return existing(root);
    };
    let parent = root.parent(path)?;
    match nix::sys::stat::mkdirat(&parent, name.as_c_str(), Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return existing(root),
        Err(e) => return Err(path.errno(e)),
    }
    let dir = nix::fcntl::openat(
        &parent,
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| path.errno(e))?;
    root.host_perms(path, opts.create.with_default_mode(DEFAULT_DIR_MODE), true)?
        .apply(path, &dir)
}

/// Make symlink `path` pointing at `target` (stored as given: it is resolved inside the
/// root whenever it is followed). An identical symlink is fine; anything else there is
/// [`FileError::Exists`]. `perms` may set the link's owner.
pub fn make_symlink(
    root: &RootDir,
    path: &InnerPath,
    target: &[u8],
    perms: &Perms,
) -> Result<(), FileError> {
    if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains(&0) {
        return Err(path.refused(&format!(
            "a symlink target must be 1 to {MAX_LINK_TARGET} bytes without NUL"
        )));
    }
    let _ids = root.as_container_root(path)?;
    let Some(name) = &path.name else {
        return Err(FileError::Exists {
            path: path.shown.clone(),
        });
    };
    let parent = root.parent(path)?;
    let target_os = OsStr::from_bytes(target);
    match nix::unistd::symlinkat(target_os, &parent, name.as_c_str()) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            return match nix::fcntl::readlinkat(&parent, name.as_c_str()) {
                Ok(current) if current.as_bytes() == target => Ok(()),
                _ => Err(FileError::Exists {
                    path: path.shown.clone(),
                }),
            };
        }
        Err(e) => return Err(path.errno(e)),
    }
    let perms = root.host_perms(path, *perms, true)?;
    if perms.uid.is_some() || perms.gid.is_some() {
        nix::unistd::fchownat(
            &parent,
            name.as_c_str(),
            perms.uid.map(Uid::from_raw),
            perms.gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| path.errno(e))?;
    }
    Ok(())
}

/// Remove the file, symlink (not its target) or empty directory at `path`.
pub fn remove(root: &RootDir, path: &InnerPath) -> Result<(), FileError> {
    let Some(name) = &path.name else {
        return Err(path.refused("cannot delete the root directory or a path ending in \"..\""));
    };
    let parent = root.parent(path)?;
    match nix::unistd::unlinkat(&parent, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(()),
        Err(Errno::EISDIR) => {
            nix::unistd::unlinkat(&parent, name.as_c_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| path.errno(e))
        }
        Err(e) => Err(path.errno(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn root() -> (tempfile::TempDir, RootDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let root = RootDir::open(dir.path()).unwrap_or_else(|e| panic!("open root: {e}"));
        (dir, root)
    }

    fn p(path: &str) -> InnerPath {
        InnerPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn read_text(root: &RootDir, path: &str) -> Result<String, FileError> {
        match read(root, &p(path))? {
            (_, FileContent::File(mut f)) => {
                let mut s = String::new();
                io::Read::read_to_string(&mut f, &mut s)
                    .unwrap_or_else(|e| panic!("read {path}: {e}"));
                Ok(s)
            }
            (info, _) => panic!("{path} is a {info:?}"),
        }
    }

    fn write(root: &RootDir, path: &str, text: &str, opts: WriteOptions) -> Result<(), FileError> {
        let mut f = open_for_write(root, &p(path), &opts)?;
        io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| FileError::from_io(path, e))
    }

    fn my_ids() -> (u32, u32) {
        (Uid::current().as_raw(), Gid::current().as_raw())
    }

    /// A host path that no test ever creates on purpose.
    fn host_probe() -> PathBuf {
        std::env::temp_dir().join(format!("ctl-files-escape-{}", std::process::id()))
    }

    #[test]
    fn paths_are_checked_and_split() {
        let c = |s: &str| CString::new(s).unwrap_or_default();
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("/", ".", ".", None),
            ("//./", ".", ".", None),
            ("/etc/hosts", "etc/hosts", "etc", Some("hosts")),
            ("/etc//./hosts/", "etc/hosts", "etc", Some("hosts")),
            ("/a", "a", ".", Some("a")),
            (
                "/../../etc/passwd",
                "../../etc/passwd",
                "../../etc",
                Some("passwd"),
            ),
            ("/tmp/..", "tmp/..", "tmp/..", None),
            ("/..", "..", "..", None),
        ];
        for (input, full, parent, name) in cases {
            let got = p(input);
            assert_eq!(got.full, c(full), "{input}");
            assert_eq!(got.parent, c(parent), "{input}");
            assert_eq!(got.name, name.map(c), "{input}");
            assert_eq!(got.as_str(), *input);
        }
        for bad in ["", "etc/hosts", "relative", "/a\0b"] {
            assert!(
                matches!(InnerPath::parse(bad), Err(FileError::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn dot_dot_stays_in_the_root() {
        let (dir, root) = root();
        std::fs::create_dir(dir.path().join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("etc/passwd"), "inside\n").unwrap_or_else(|e| panic!("{e}"));
        for path in [
            "/../../etc/passwd",
            "/etc/../../../../etc/passwd",
            "/../etc/passwd",
        ] {
            assert_eq!(
                read_text(&root, path).ok().as_deref(),
                Some("inside\n"),
                "{path}"
            );
        }
        // Without the file in the root, it is simply not found: the host's is never read.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read_text(&root, "/../../etc/passwd"),
            Err(FileError::NotFound { .. })
        ));
        // A write through `..` lands in the root.
        write(&root, "/../../etc/new", "x", WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join("etc/new").exists());
    }

    #[test]
    fn absolute_symlinks_resolve_in_the_root() {
        let (dir, root) = root();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(r.join("etc/passwd"), "inside\n").unwrap_or_else(|e| panic!("{e}"));
        symlink("/etc", r.join("link")).unwrap_or_else(|e| panic!("{e}"));
        symlink("/", r.join("top")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_text(&root, "/link/passwd").ok().as_deref(),
            Some("inside\n")
        );
        assert_eq!(
            read_text(&root, "/top/etc/passwd").ok().as_deref(),
            Some("inside\n")
        );
        // Writes through them land in the root's /etc, never the host's.
        let probe = host_probe();
        let name = probe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write(
            &root,
            &format!("/link/{name}"),
            "x",
            WriteOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.join("etc").join(&name).exists());
        assert!(!Path::new("/etc").join(&name).exists());
        // /top/<host tmp dir>/... would be the host's tmp dir if it escaped.
        let tmp_rel = probe
            .parent()
            .and_then(|d| d.strip_prefix("/").ok())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        std::fs::create_dir_all(r.join(&tmp_rel)).unwrap_or_else(|e| panic!("{e}"));
        write(
            &root,
            &format!("/top{}", probe.display()),
            "x",
            WriteOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.join(&tmp_rel).join(&name).exists());
        assert!(!probe.exists(), "a write escaped to the host");
    }

    #[test]
    fn climbing_relative_symlinks_stay_inside() {
        let (dir, root) = root();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap_or_else(|e| panic!("{e}"));
        symlink("../../../../../../..", r.join("a/b/up")).unwrap_or_else(|e| panic!("{e}"));
        let probe = host_probe();
        let name = probe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // a/b/up resolves to the root itself.
        write(
            &root,
            &format!("/a/b/up/{name}"),
            "x",
            WriteOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.join(&name).exists());
        let (_, listing) = read(&root, &p("/a/b/up")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(listing, FileContent::Symlink(t) if t == b"../../../../../../.."));
        // Through it, a listing is of the root.
        let (_, listing) = read(&root, &p("/a/b/up/a/..")).unwrap_or_else(|e| panic!("{e}"));
        let FileContent::Directory(names) = listing else {
            panic!("not a directory");
        };
        assert!(
            names.contains(&"a".to_string()) && names.contains(&name),
            "{names:?}"
        );
        // A final symlink pointing outside is followed inside: the host file never appears.
        symlink(&probe, r.join("out")).unwrap_or_else(|e| panic!("{e}"));
        let res = write(&root, "/out", "x", WriteOptions::default());
        assert!(matches!(res, Err(FileError::NotFound { .. })), "{res:?}");
        assert!(!probe.exists(), "a write escaped to the host");
    }

    #[test]
    fn magic_links_and_kernel_filesystems_are_refused() {
        // /proc/self/root is a magic link to the host's root; /proc is a kernel filesystem:
        // neither is followed nor even looked at.
        let Ok(root) = RootDir::open(Path::new("/proc/self")) else {
            return;
        };
        for path in ["/root/etc/hostname", "/root", "/status"] {
            let res = read(&root, &p(path));
            assert!(
                matches!(res, Err(FileError::Refused { .. })),
                "{path}: {res:?}"
            );
        }
        let res = read(&root, &p("/status"));
        assert!(
            matches!(&res, Err(FileError::Refused { reason, .. }) if reason.contains("kernel filesystem")),
            "{res:?}"
        );
        // Only read here: were the check broken, a write would reach the host kernel.
        if let Ok(sys) = RootDir::open(Path::new("/sys/kernel")) {
            let res = read(&sys, &p("/uevent_helper"));
            assert!(matches!(res, Err(FileError::Refused { .. })), "{res:?}");
        }
    }

    #[test]
    fn write_modes_owners_and_append() {
        let (dir, root) = root();
        let r = dir.path();
        let (uid, gid) = my_ids();
        let opts = WriteOptions {
            create: Perms {
                uid: Some(uid),
                gid: Some(gid),
                mode: Some(0o640),
            },
            ..Default::default()
        };
        write(&root, "/f", "one\n", opts).unwrap_or_else(|e| panic!("{e}"));
        let md = std::fs::metadata(r.join("f")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        // Existing: content replaced, mode kept unless asked for.
        write(&root, "/f", "two\n", opts).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&root, "/f").ok().as_deref(), Some("two\n"));
        let mode = |name: &str| {
            std::fs::metadata(r.join(name))
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0)
        };
        assert_eq!(mode("f"), 0o640);
        let existing = WriteOptions {
            existing: Perms {
                mode: Some(0o600),
                ..Default::default()
            },
            append: true,
            ..Default::default()
        };
        write(&root, "/f", "three\n", existing).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&root, "/f").ok().as_deref(), Some("two\nthree\n"));
        assert_eq!(mode("f"), 0o600);
        // Defaults: 0644 for a file, whatever the umask.
        write(&root, "/g", "", WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode("g"), 0o644);
        // Append creates a missing file.
        write(
            &root,
            "/h",
            "x",
            WriteOptions {
                append: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_text(&root, "/h").ok().as_deref(), Some("x"));
        // Info reports what is there.
        let (info, _) = read(&root, &p("/f")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            info,
            FileInfo {
                kind: FileKind::File,
                uid,
                gid,
                mode: 0o600
            }
        );
        // A directory is not a file; a missing parent is not found.
        std::fs::create_dir(r.join("d")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            write(&root, "/d", "x", WriteOptions::default()),
            Err(FileError::Refused { .. })
        ));
        assert!(matches!(
            write(&root, "/", "x", WriteOptions::default()),
            Err(FileError::Refused { .. })
        ));
        assert!(matches!(
            write(&root, "/nope/f", "x", WriteOptions::default()),
            Err(FileError::NotFound { .. })
        ));
    }

    #[test]
    fn fifos_do_not_hang_writes_or_reads() {
        let (dir, root) = root();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let res = write(&root, "/fifo", "x", WriteOptions::default());
        assert!(matches!(res, Err(FileError::Refused { .. })), "{res:?}");
        let res = read(&root, &p("/fifo"));
        assert!(matches!(res, Err(FileError::Refused { .. })), "{res:?}");
    }

    #[test]
    fn directories_symlinks_and_delete() {
        let (dir, root) = root();
        let r = dir.path();
        make_dir(&root, &p("/d"), &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let md = std::fs::metadata(r.join("d")).unwrap_or_else(|e| panic!("{e}"));
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o7777, 0o755);
        // Again: fine. Through a symlink to a directory: fine too.
        make_dir(&root, &p("/d"), &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        symlink("/d", r.join("ld")).unwrap_or_else(|e| panic!("{e}"));
        make_dir(&root, &p("/ld"), &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        make_dir(&root, &p("/"), &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(r.join("file"), "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            make_dir(&root, &p("/file"), &WriteOptions::default()),
            Err(FileError::Refused { .. })
        ));

        make_symlink(&root, &p("/d/s"), b"/etc", &Perms::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_link(r.join("d/s")).ok(),
            Some(PathBuf::from("/etc"))
        );
        // The same link again is fine, another target is a conflict.
        make_symlink(&root, &p("/d/s"), b"/etc", &Perms::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            make_symlink(&root, &p("/d/s"), b"/usr", &Perms::default()),
            Err(FileError::Exists { .. })
        ));
        assert!(matches!(
            make_symlink(&root, &p("/d/t"), b"", &Perms::default()),
            Err(FileError::Refused { .. })
        ));
        let (info, content) = read(&root, &p("/d/s")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.kind, FileKind::Symlink);
        assert!(matches!(content, FileContent::Symlink(t) if t == b"/etc"));

        let (info, content) = read(&root, &p("/")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.kind, FileKind::Directory);
        let FileContent::Directory(names) = content else {
            panic!("not a listing");
        };
        assert_eq!(names, vec!["d", "file", "ld"]);

        // Delete: a non-empty directory is refused, a symlink goes (not its target), then
        // the empty directory, then a file; missing is not found; the root is refused.
        assert!(matches!(
            remove(&root, &p("/d")),
            Err(FileError::Refused { .. })
        ));
        remove(&root, &p("/ld")).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.join("d").exists());
        remove(&root, &p("/d/s")).unwrap_or_else(|e| panic!("{e}"));
        remove(&root, &p("/d")).unwrap_or_else(|e| panic!("{e}"));
        remove(&root, &p("/file")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            remove(&root, &p("/file")),
            Err(FileError::NotFound { .. })
        ));
        assert!(matches!(
            remove(&root, &p("/")),
            Err(FileError::Refused { .. })
        ));
        assert!(matches!(
            remove(&root, &p("/..")),
            Err(FileError::Refused { .. })
        ));
        let (_, content) = read(&root, &p("/")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(content, FileContent::Directory(n) if n.is_empty()));
    }

    #[test]
    fn delete_through_an_escaping_parent_stays_inside() {
        let (dir, root) = root();
        let r = dir.path();
        // The host file exists; a symlinked parent pointing at its directory must not reach it.
        let host = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        let host_dir = host
            .path()
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .to_path_buf();
        let name = host
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        symlink(&host_dir, r.join("hostdir")).unwrap_or_else(|e| panic!("{e}"));
        let res = remove(&root, &p(&format!("/hostdir/{name}")));
        assert!(res.is_err(), "{res:?}");
        assert!(host.path().exists(), "delete escaped to the host");
    }

    #[tokio::test]
    async fn an_upload_replaces_the_file_only_when_complete() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, root) = root();
        let path = p("/etc/conf");
        std::fs::create_dir(dir.path().join("etc")).unwrap_or_else(|e| panic!("{e}"));
        let on_disk = dir.path().join("etc/conf");
        std::fs::write(&on_disk, b"old").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(0o640))
            .unwrap_or_else(|e| panic!("{e}"));
        let leftovers = || {
            std::fs::read_dir(dir.path().join("etc"))
                .map(|rd| rd.flatten().count())
                .unwrap_or(0)
        };
        // A body that fails half-way: the old content stays, no temporary file is left.
        let mut up = open_for_upload(&root, &path, &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = up.take_file().unwrap_or_else(|| panic!("no file"));
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(vec![b'x'; 10]), Err("reset".into())];
        assert!(
            write_stream(&path, file, futures_util::stream::iter(chunks))
                .await
                .is_err()
        );
        drop(up);
        assert_eq!(std::fs::read(&on_disk).unwrap_or_default(), b"old");
        assert_eq!(leftovers(), 1);
        // A complete one replaces it, keeping its mode.
        let mut up = open_for_upload(&root, &path, &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = up.take_file().unwrap_or_else(|| panic!("no file"));
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(b"new".to_vec())];
        write_stream(&path, file, futures_util::stream::iter(chunks))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(&on_disk).unwrap_or_default(),
            b"old",
            "not before commit"
        );
        up.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&on_disk).unwrap_or_default(), b"new");
        let mode = std::fs::metadata(&on_disk).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o640));
        assert_eq!(leftovers(), 1);
        // A new file that fails leaves nothing.
        let mut up = open_for_upload(&root, &p("/etc/fresh"), &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        drop(up.take_file());
        drop(up);
        assert_eq!(leftovers(), 1);
        // Through a final symlink (inside the root): written in place, the link kept.
        std::os::unix::fs::symlink("conf", dir.path().join("etc/link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut up = open_for_upload(&root, &p("/etc/link"), &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = up.take_file().unwrap_or_else(|| panic!("no file"));
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(b"linked".to_vec())];
        write_stream(&p("/etc/link"), file, futures_util::stream::iter(chunks))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        up.commit().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&on_disk).unwrap_or_default(), b"linked");
        assert!(
            std::fs::symlink_metadata(dir.path().join("etc/link"))
                .is_ok_and(|m| m.file_type().is_symlink())
        );
        // A directory or a device is refused, as by a plain write.
        assert!(open_for_upload(&root, &p("/etc"), &WriteOptions::default()).is_err());
    }

    #[tokio::test]
    async fn streams_chunks_into_the_file() {
        let (dir, root) = root();
        let path = p("/big");
        let file = open_for_write(&root, &path, &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let chunks: Vec<Result<Vec<u8>, String>> = (0u8..8).map(|i| Ok(vec![i; 100_000])).collect();
        let n = write_stream(&path, file, futures_util::stream::iter(chunks))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 800_000);
        let data = std::fs::read(dir.path().join("big")).unwrap_or_default();
        assert_eq!(data.len(), 800_000);
        assert!(data[..100_000].iter().all(|b| *b == 0) && data[700_000..].iter().all(|b| *b == 7));
        // A failing body is an error, what came before it stays.
        let file = open_for_write(&root, &path, &WriteOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let chunks: Vec<Result<Vec<u8>, String>> = vec![Ok(vec![1; 10]), Err("reset".into())];
        let res = write_stream(&path, file, futures_util::stream::iter(chunks)).await;
        assert!(matches!(res, Err(FileError::Refused { .. })), "{res:?}");
        assert_eq!(
            std::fs::read(dir.path().join("big")).unwrap_or_default(),
            vec![1; 10]
        );
    }
}

/// Properties of the path parser over arbitrary client input.
#[cfg(test)]
mod properties {
    use super::InnerPath;
    use proptest::prelude::*;

    /// Paths made of the pieces that matter (separators, dots, names, a NUL).
    fn hostile_path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["/", "//", ".", "..", "a", "b.c", "...", "\0", " "]),
            0..12,
        )
        .prop_map(|parts| parts.concat().replace("\\0", "\0"))
    }

    proptest! {
        #[test]
        fn parsed_paths_are_relative_clean_and_split_consistently(path in hostile_path()) {
            let Ok(p) = InnerPath::parse(&path) else {
                // Refused: not absolute, or a NUL inside.
                prop_assert!(!path.starts_with('/') || path.contains('\0'));
                return Ok(());
            };
            let full = p.full.to_str().unwrap_or_default().to_string();
            prop_assert!(!full.starts_with('/'), "{full:?}");
            prop_assert!(full == "." || full.split('/').all(|c| !c.is_empty() && c != "."), "{full:?}");
            match &p.name {
                Some(name) => {
                    let name = name.to_str().unwrap_or_default();
                    prop_assert!(name != ".." && !name.contains('/') && !name.is_empty());
                    let parent = p.parent.to_str().unwrap_or_default();
                    let joined = if parent == "." { name.to_string() } else { format!("{parent}/{name}") };
                    prop_assert_eq!(joined, full);
                }
                // The root itself, or a path ending in "..": only a directory.
                None => prop_assert!(full == "." || full.ends_with("..")),
            }
        }

        #[test]
        fn any_string_is_parsed_or_refused_without_panicking(path in ".{0,64}") {
            let _ = InnerPath::parse(&path);
        }
    }
}
