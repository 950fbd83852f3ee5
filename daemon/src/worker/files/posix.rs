//! POSIX-style operations on entries inside a container's root, for the SFTP session
//! (`instance::sftp`): stat and lstat, directory listings with attributes, open with
//! read/write/create/truncate/append/exclusive flags, mkdir, rmdir, unlink, rename, readlink,
//! set attributes (size, owner, mode, times) and a lexical `realpath`.
//!
//! Same rules as the rest of [`super`]: every path is walked by `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` from the root descriptor, entries are named by one component
//! relative to their resolved parent, existing entries are looked at through `O_PATH` before
//! anything opens them for I/O (only regular files and directories are ever opened), and
//! owners travel in container ids, mapped to host ids here. Entries are created as the
//! container's root ([`RootDir::as_container_root`]).

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use super::{DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, FileError, InnerPath, Perms, RootDir, fd_path};

/// What `stat` tells about an entry, owners in container ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Seconds since the epoch.
    pub atime: i64,
    pub mtime: i64,
}

impl Stat {
    fn of(root: &RootDir, st: &FileStat) -> Stat {
        let (uid, gid) = root.inside_ids(st.st_uid, st.st_gid);
        Stat {
            mode: st.st_mode,
            uid,
            gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            atime: st.st_atime,
            mtime: st.st_mtime,
        }
    }

    /// The file type bits (`S_IFMT`).
    pub fn kind(&self) -> SFlag {
        SFlag::from_bits_truncate(self.mode & SFlag::S_IFMT.bits())
    }
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Attributes of `path`; a final symlink is followed (inside the root) when `follow`.
pub fn stat(root: &RootDir, path: &InnerPath, follow: bool) -> Result<Stat, FileError> {
    let st = match (&path.name, follow) {
        (Some(name), false) => {
            let parent = root.parent(path)?;
            nix::sys::stat::fstatat(&parent, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| path.errno(e))?
        }
        _ => {
            let fd = root
                .walk(&path.full, OFlag::O_PATH, 0)
                .map_err(|e| path.err(e))?;
            nix::sys::stat::fstat(&fd).map_err(|e| path.errno(e))?
        }
    };
    Ok(Stat::of(root, &st))
}

/// Attributes of an open file.
pub fn file_stat(root: &RootDir, path: &InnerPath, file: &File) -> Result<Stat, FileError> {
    let st = nix::sys::stat::fstat(file).map_err(|e| path.errno(e))?;
    Ok(Stat::of(root, &st))
}

/// The entries of directory `path` (followed if a symlink), without `.` and `..`, sorted by
/// name, each with its own attributes (not followed). An entry removed meanwhile is left out.
pub fn read_dir(root: &RootDir, path: &InnerPath) -> Result<Vec<(String, Stat)>, FileError> {
    let dir = root
        .walk(&path.full, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
        .map_err(|e| path.err(e))?;
    let entries = std::fs::read_dir(fd_path(&dir)).map_err(|e| path.err(e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| path.err(e))?;
        let name = entry.file_name();
        match nix::sys::stat::fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => out.push((name.to_string_lossy().into_owned(), Stat::of(root, &st))),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(path.errno(e)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// How to open a file (SFTP's `pflags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub create: bool,
    pub truncate: bool,
    /// With `create`: fail if the entry exists (a final symlink counts, and is not followed).
    pub exclusive: bool,
}

/// Open regular file `path` (a final symlink is followed, inside the root) for positional
/// reads and writes (a directory for reading only, as `open(2)` allows). A file created gets `create` (owner in container ids, the container's
/// root by default; mode 0644 by default). Anything else (devices, FIFOs, sockets) is refused, and is
/// never opened for I/O: a device node or FIFO the container planted cannot act on the host.
pub fn open(
    root: &RootDir,
    path: &InnerPath,
    opts: &OpenOptions,
    create: Perms,
) -> Result<File, FileError> {
    let access = match (opts.read, opts.write || opts.append) {
        (true, false) => OFlag::O_RDONLY,
        (false, true) => OFlag::O_WRONLY,
        (true, true) => OFlag::O_RDWR,
        (false, false) => return Err(path.refused("opened for neither reading nor writing")),
    };
    let writes = access != OFlag::O_RDONLY;
    // A directory may be opened for reading only (its reads then fail), as with open(2).
    let allowed = |kind: SFlag| kind == SFlag::S_IFREG || (kind == SFlag::S_IFDIR && !writes);
    if path.name.is_none() && (writes || opts.create) {
        return Err(path.refused("is a directory"));
    }
    let mut base = access | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    if opts.append {
        base |= OFlag::O_APPEND;
    }
    let trunc = if opts.truncate && writes {
        OFlag::O_TRUNC
    } else {
        OFlag::empty()
    };
    let _ids = if opts.create {
        root.as_container_root(path)?
    } else {
        None
    };
    let mut opened = None;
    // Create it, or open what exists; a concurrent delete sends us round again.
    for _ in 0..4 {
        if opts.create {
            match root.walk(&path.full, base | OFlag::O_CREAT | OFlag::O_EXCL, 0o600) {
                Ok(fd) => {
                    opened = Some((fd, true));
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !opts.exclusive => {}
                Err(e) => return Err(path.err(e)),
            }
        }
        match root.walk(&path.full, OFlag::O_PATH, 0) {
            Ok(pfd) => {
                let st = nix::sys::stat::fstat(&pfd).map_err(|e| path.errno(e))?;
                if !allowed(kind_of(&st)) {
                    return Err(path.refused("not a regular file"));
                }
                // Reopen exactly the inode looked at.
                let fd = nix::fcntl::open(&fd_path(&pfd), base | trunc, Mode::empty())
                    .map_err(|e| path.errno(e))?;
                opened = Some((fd, false));
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && opts.create => {}
            Err(e) => return Err(path.err(e)),
        }
    }
    let (fd, created) = match opened {
        Some(o) => o,
        // A dangling symlink: create its target (resolved inside the root).
        None => (
            root.walk(&path.full, base | trunc | OFlag::O_CREAT, 0o600)
                .map_err(|e| path.err(e))?,
            true,
        ),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| path.errno(e))?;
    if !allowed(kind_of(&st)) {
        return Err(path.refused("not a regular file"));
    }
    if created {
        root.host_perms(path, create.with_default_mode(DEFAULT_FILE_MODE), true)?
            .apply(path, &fd)?;
    }
    Ok(File::from(fd))
}

/// Make directory `path`, which must not exist yet (unlike [`super::make_dir`]); it gets
/// `perms` (container ids, the container's root by default; mode 0755 by default).
pub fn create_dir(root: &RootDir, path: &InnerPath, perms: Perms) -> Result<(), FileError> {
    let Some(name) = &path.name else {
        return Err(FileError::Exists {
            path: path.shown.clone(),
        });
    };
    let _ids = root.as_container_root(path)?;
    let parent = root.parent(path)?;
    nix::sys::stat::mkdirat(&parent, name.as_c_str(), Mode::from_bits_truncate(0o700))
        .map_err(|e| path.errno(e))?;
    let dir = nix::fcntl::openat(
        &parent,
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| path.errno(e))?;
    root.host_perms(path, perms.with_default_mode(DEFAULT_DIR_MODE), true)?
        .apply(path, &dir)
}

/// The last component of `path` with its resolved parent, for operations on the entry
/// itself (never on what a final symlink points at).
fn entry<'a>(root: &RootDir, path: &'a InnerPath) -> Result<(OwnedFd, &'a CStr), FileError> {
    let Some(name) = &path.name else {
        return Err(path.refused("not allowed on the root directory or a path ending in \"..\""));
    };
    Ok((root.parent(path)?, name.as_c_str()))
}

/// Remove the empty directory `path`.
pub fn remove_dir(root: &RootDir, path: &InnerPath) -> Result<(), FileError> {
    let (parent, name) = entry(root, path)?;
    nix::unistd::unlinkat(&parent, name, UnlinkatFlags::RemoveDir).map_err(|e| path.errno(e))
}

/// Remove the file or symlink (not its target) `path`; a directory is refused.
pub fn remove_file(root: &RootDir, path: &InnerPath) -> Result<(), FileError> {
    let (parent, name) = entry(root, path)?;
    nix::unistd::unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| path.errno(e))
}

/// Rename `from` to `to`, both inside the root (`renameat2` between their resolved parents).
/// Unless `replace`, an existing `to` is [`FileError::Exists`] (SFTP's `RENAME`); with it,
/// it is replaced atomically (`posix-rename@openssh.com`).
pub fn rename(
    root: &RootDir,
    from: &InnerPath,
    to: &InnerPath,
    replace: bool,
) -> Result<(), FileError> {
    let (from_parent, from_name) = entry(root, from)?;
    let (to_parent, to_name) = entry(root, to)?;
    let _ids = root.as_container_root(to)?;
    let flags = if replace {
        RenameFlags::empty()
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    match nix::fcntl::renameat2(&from_parent, from_name, &to_parent, to_name, flags) {
        Ok(()) => Ok(()),
        // The source is what is missing unless it is still there.
        Err(Errno::ENOENT)
            if nix::sys::stat::fstatat(&from_parent, from_name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_err() =>
        {
            Err(from.errno(Errno::ENOENT))
        }
        Err(e) => Err(to.errno(e)),
    }
}

/// The target of symlink `path`, as stored.
pub fn read_link(root: &RootDir, path: &InnerPath) -> Result<Vec<u8>, FileError> {
    let (parent, name) = entry(root, path)?;
    let target = nix::fcntl::readlinkat(&parent, name).map_err(|e| path.errno(e))?;
    Ok(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec())
}

/// Attributes to change; `None` leaves one alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttrs {
    /// Truncate or extend (regular files only).
    pub size: Option<u64>,
    /// Owner and group in container ids, permission bits.
    pub perms: Perms,
    /// Access and modification times, seconds since the epoch.
    pub times: Option<(i64, i64)>,
}

/// Change the attributes of `path` (a final symlink is followed, inside the root). Only
/// regular files and directories are changed; they are reopened through the descriptor
/// looked at, never by path again.
pub fn set_attrs(root: &RootDir, path: &InnerPath, attrs: &SetAttrs) -> Result<(), FileError> {
    let pfd = root
        .walk(&path.full, OFlag::O_PATH, 0)
        .map_err(|e| path.err(e))?;
    let st = nix::sys::stat::fstat(&pfd).map_err(|e| path.errno(e))?;
    let access = match kind_of(&st) {
        SFlag::S_IFREG if attrs.size.is_some() => OFlag::O_WRONLY,
        SFlag::S_IFREG => OFlag::O_RDONLY,
        SFlag::S_IFDIR if attrs.size.is_none() => OFlag::O_RDONLY,
        SFlag::S_IFDIR => return Err(path.refused("is a directory")),
        _ => return Err(path.refused("not a regular file or directory")),
    };
    let fd = nix::fcntl::open(
        &fd_path(&pfd),
        access | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| path.errno(e))?;
    apply_attrs(root, path, &fd, attrs)
}

/// Change the attributes of an open file (the size only if it is open for writing).
pub fn set_file_attrs(
    root: &RootDir,
    path: &InnerPath,
    file: &File,
    attrs: &SetAttrs,
) -> Result<(), FileError> {
    apply_attrs(root, path, file, attrs)
}

fn apply_attrs<F: AsFd>(
    root: &RootDir,
    path: &InnerPath,
    fd: &F,
    attrs: &SetAttrs,
) -> Result<(), FileError> {
    if let Some(size) = attrs.size {
        let size = i64::try_from(size).map_err(|_| path.refused("size too large"))?;
        nix::unistd::ftruncate(fd, size).map_err(|e| path.errno(e))?;
    }
    // Owner before mode (a chown clears setuid bits), times last (the others touch them).
    root.host_perms(path, attrs.perms, false)?.apply(path, fd)?;
    if let Some((atime, mtime)) = attrs.times {
        nix::sys::stat::futimens(fd, &TimeSpec::new(atime, 0), &TimeSpec::new(mtime, 0))
            .map_err(|e| path.errno(e))?;
    }
    Ok(())
}

/// `path` made absolute (relative to `/`) and normalised lexically: empty and `.` components
/// dropped, `..` removes the previous component and stops at `/`. Symlinks are not resolved:
/// the answer is a path inside the container, never a host path.
pub fn real_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
    use std::path::{Path, PathBuf};

    fn root() -> (tempfile::TempDir, RootDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let root = RootDir::open(dir.path()).unwrap_or_else(|e| panic!("open root: {e}"));
        (dir, root)
    }

    fn p(path: &str) -> InnerPath {
        InnerPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ok<T>(r: Result<T, FileError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A host directory outside every test root, and a name inside it never created.
    fn host_probe() -> PathBuf {
        std::env::temp_dir().join(format!("ctl-posix-escape-{}", std::process::id()))
    }

    const WRITE_CREATE: OpenOptions = OpenOptions {
        read: false,
        write: true,
        append: false,
        create: true,
        truncate: true,
        exclusive: false,
    };

    #[test]
    fn open_flags_create_truncate_append_and_exclusive() {
        let (dir, root) = root();
        let r = dir.path();
        let f = ok(open(&root, &p("/f"), &WRITE_CREATE, Perms::default()));
        ok(f.write_all_at(b"hello world", 0)
            .map_err(|e| FileError::from_io("/f", e)));
        drop(f);
        let md = ok(std::fs::metadata(r.join("f")).map_err(|e| FileError::from_io("/f", e)));
        assert_eq!(md.permissions().mode() & 0o7777, 0o644);
        // Positional reads of an existing file.
        let read = OpenOptions {
            read: true,
            ..Default::default()
        };
        let f = ok(open(&root, &p("/f"), &read, Perms::default()));
        let mut buf = [0u8; 5];
        let n = f.read_at(&mut buf, 6).unwrap_or(0);
        assert_eq!(&buf[..n], b"world");
        // Append adds at the end whatever the offset.
        let append = OpenOptions {
            write: true,
            append: true,
            ..Default::default()
        };
        let f = ok(open(&root, &p("/f"), &append, Perms::default()));
        ok(f.write_all_at(b"!", 0)
            .map_err(|e| FileError::from_io("/f", e)));
        assert_eq!(
            std::fs::read(r.join("f")).unwrap_or_default(),
            b"hello world!"
        );
        // Truncate empties it; a mode asked for applies to new files only.
        let perms = Perms {
            mode: Some(0o600),
            ..Default::default()
        };
        drop(ok(open(&root, &p("/f"), &WRITE_CREATE, perms)));
        assert_eq!(std::fs::read(r.join("f")).unwrap_or_default(), b"");
        let mode = |n: &str| {
            std::fs::metadata(r.join(n))
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0)
        };
        assert_eq!(mode("f"), 0o644);
        drop(ok(open(&root, &p("/g"), &WRITE_CREATE, perms)));
        assert_eq!(mode("g"), 0o600);
        // Exclusive: an existing file, or a symlink (even dangling), is Exists.
        let excl = OpenOptions {
            exclusive: true,
            ..WRITE_CREATE
        };
        assert!(matches!(
            open(&root, &p("/f"), &excl, Perms::default()),
            Err(FileError::Exists { .. })
        ));
        ok(symlink("/nowhere", r.join("dangling")).map_err(|e| FileError::from_io("/", e)));
        assert!(matches!(
            open(&root, &p("/dangling"), &excl, Perms::default()),
            Err(FileError::Exists { .. })
        ));
        // Without create, missing is NotFound; neither read nor write is refused.
        assert!(matches!(
            open(&root, &p("/missing"), &read, Perms::default()),
            Err(FileError::NotFound { .. })
        ));
        assert!(matches!(
            open(&root, &p("/f"), &OpenOptions::default(), Perms::default()),
            Err(FileError::Refused { .. })
        ));
        // A directory opens for reading only; a FIFO never opens (it would block).
        ok(std::fs::create_dir(r.join("d")).map_err(|e| FileError::from_io("/d", e)));
        assert!(open(&root, &p("/d"), &read, Perms::default()).is_ok());
        assert!(open(&root, &p("/"), &read, Perms::default()).is_ok());
        assert!(matches!(
            open(&root, &p("/d"), &WRITE_CREATE, Perms::default()),
            Err(FileError::Refused { .. })
        ));
        ok(
            nix::unistd::mkfifo(&r.join("fifo"), Mode::from_bits_truncate(0o644))
                .map_err(|e| FileError::from_io("/fifo", e.into())),
        );
        assert!(matches!(
            open(&root, &p("/fifo"), &read, Perms::default()),
            Err(FileError::Refused { .. })
        ));
    }

    #[test]
    fn open_through_escaping_symlinks_stays_inside() {
        let (dir, root) = root();
        let r = dir.path();
        let probe = host_probe();
        let probe_dir = probe.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        let name = probe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ok(symlink(&probe, r.join("abs")).map_err(|e| FileError::from_io("/", e)));
        ok(symlink("../../../../../../../..", r.join("up"))
            .map_err(|e| FileError::from_io("/", e)));
        ok(
            std::fs::create_dir_all(r.join(probe_dir.strip_prefix("/").unwrap_or(&probe_dir)))
                .map_err(|e| FileError::from_io("/", e)),
        );
        // Created through the links: inside the root at the probe's path, never on the host.
        let mut f = ok(open(&root, &p("/abs"), &WRITE_CREATE, Perms::default()));
        ok(f.write_all(b"a").map_err(|e| FileError::from_io("/abs", e)));
        let inside = r.join(probe.strip_prefix("/").unwrap_or(&probe));
        assert!(inside.exists());
        let climbing = format!("/up/up/..{}", probe.display());
        let keep = OpenOptions {
            truncate: false,
            ..WRITE_CREATE
        };
        let f = ok(open(&root, &p(&climbing), &keep, Perms::default()));
        ok(f.write_all_at(b"b", 1)
            .map_err(|e| FileError::from_io("/", e)));
        assert!(!probe.exists(), "a create escaped to the host");
        // Reads and stats through them give the root's file.
        let read = OpenOptions {
            read: true,
            ..Default::default()
        };
        let through = p(&format!("/up{}", probe.display()));
        let mut s = String::new();
        let mut f = ok(open(&root, &through, &read, Perms::default()));
        ok(f.read_to_string(&mut s)
            .map_err(|e| FileError::from_io("/", e)));
        assert_eq!(s, "ab");
        assert_eq!(ok(stat(&root, &through, true)).size, 2);
        assert_eq!(ok(stat(&root, &p("/abs"), true)).size, 2);
        assert!(matches!(
            stat(&root, &p(&format!("/up/{name}")), true),
            Err(FileError::NotFound { .. })
        ));
        // realpath is lexical and never shows the host's root.
        assert_eq!(real_path("/../../etc/../etc/./shadow"), "/etc/shadow");
        assert_eq!(real_path("."), "/");
        assert_eq!(real_path("a/b/../c//"), "/a/c");
        assert_eq!(real_path(""), "/");
    }

    #[test]
    fn stat_lstat_and_listing_with_attributes() {
        let (dir, root) = root();
        let r = dir.path();
        ok(std::fs::write(r.join("f"), b"12345").map_err(|e| FileError::from_io("/f", e)));
        ok(symlink("f", r.join("l")).map_err(|e| FileError::from_io("/l", e)));
        ok(std::fs::create_dir(r.join("d")).map_err(|e| FileError::from_io("/d", e)));
        let followed = ok(stat(&root, &p("/l"), true));
        assert_eq!((followed.kind(), followed.size), (SFlag::S_IFREG, 5));
        let link = ok(stat(&root, &p("/l"), false));
        assert_eq!(link.kind(), SFlag::S_IFLNK);
        let md = ok(std::fs::metadata(r.join("f")).map_err(|e| FileError::from_io("/f", e)));
        assert_eq!((followed.uid, followed.gid), (md.uid(), md.gid()));
        assert_eq!(followed.mtime, md.mtime());
        assert_eq!(ok(stat(&root, &p("/"), false)).kind(), SFlag::S_IFDIR);
        assert!(matches!(
            stat(&root, &p("/missing"), false),
            Err(FileError::NotFound { .. })
        ));
        let names: Vec<(String, SFlag)> = ok(read_dir(&root, &p("/")))
            .into_iter()
            .map(|(n, s)| (n, s.kind()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("d".to_string(), SFlag::S_IFDIR),
                ("f".to_string(), SFlag::S_IFREG),
                ("l".to_string(), SFlag::S_IFLNK)
            ]
        );
        assert!(matches!(
            read_dir(&root, &p("/f")),
            Err(FileError::Refused { .. })
        ));
        assert_eq!(ok(read_link(&root, &p("/l"))), b"f");
        assert!(read_link(&root, &p("/f")).is_err());
    }

    #[test]
    fn mkdir_rmdir_remove_and_rename() {
        let (dir, root) = root();
        let r = dir.path();
        ok(create_dir(&root, &p("/d"), Perms::default()));
        let md = ok(std::fs::metadata(r.join("d")).map_err(|e| FileError::from_io("/d", e)));
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o7777, 0o755);
        assert!(matches!(
            create_dir(&root, &p("/d"), Perms::default()),
            Err(FileError::Exists { .. })
        ));
        ok(std::fs::write(r.join("d/f"), b"x").map_err(|e| FileError::from_io("/d/f", e)));
        // A file is not removed by rmdir, a directory not by remove, a full one not at all.
        assert!(remove_dir(&root, &p("/d/f")).is_err());
        assert!(remove_file(&root, &p("/d")).is_err());
        assert!(remove_dir(&root, &p("/d")).is_err());
        assert!(remove_dir(&root, &p("/")).is_err());
        // Rename refuses to replace unless asked; both paths resolve in the root.
        ok(std::fs::write(r.join("g"), b"g").map_err(|e| FileError::from_io("/g", e)));
        assert!(matches!(
            rename(&root, &p("/g"), &p("/d/f"), false),
            Err(FileError::Exists { .. })
        ));
        ok(rename(&root, &p("/g"), &p("/d/f"), true));
        assert_eq!(std::fs::read(r.join("d/f")).unwrap_or_default(), b"g");
        ok(rename(&root, &p("/d/f"), &p("/../../h"), false));
        assert!(r.join("h").exists());
        assert!(matches!(
            rename(&root, &p("/missing"), &p("/x"), false),
            Err(FileError::NotFound { path }) if path == "/missing"
        ));
        // A rename whose target parent is a symlink to a host directory stays inside.
        let probe = host_probe();
        let probe_dir = probe.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
        ok(symlink(&probe_dir, r.join("hostdir")).map_err(|e| FileError::from_io("/", e)));
        let name = probe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let res = rename(&root, &p("/h"), &p(&format!("/hostdir/{name}")), false);
        assert!(res.is_err() || !probe.exists(), "a rename escaped: {res:?}");
        assert!(!probe.exists(), "a rename escaped to the host");
        ok(remove_file(&root, &p("/d/../hostdir")));
        ok(remove_dir(&root, &p("/d")));
        assert!(!r.join("d").exists());
    }

    #[test]
    fn set_attributes_by_path_and_on_open_files() {
        let (dir, root) = root();
        let r = dir.path();
        ok(std::fs::write(r.join("f"), b"0123456789").map_err(|e| FileError::from_io("/f", e)));
        ok(symlink("f", r.join("l")).map_err(|e| FileError::from_io("/l", e)));
        let uid = nix::unistd::Uid::current().as_raw();
        let gid = nix::unistd::Gid::current().as_raw();
        let attrs = SetAttrs {
            size: Some(4),
            perms: Perms {
                uid: Some(uid),
                gid: Some(gid),
                mode: Some(0o4750),
            },
            times: Some((1_000_000, 2_000_000)),
        };
        // Through the symlink: the file changes.
        ok(set_attrs(&root, &p("/l"), &attrs));
        let md = ok(std::fs::metadata(r.join("f")).map_err(|e| FileError::from_io("/f", e)));
        assert_eq!(md.len(), 4);
        assert_eq!(md.permissions().mode() & 0o7777, 0o4750);
        assert_eq!((md.atime(), md.mtime()), (1_000_000, 2_000_000));
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        // A directory's size cannot be set; a FIFO is not touched.
        ok(std::fs::create_dir(r.join("d")).map_err(|e| FileError::from_io("/d", e)));
        let mode_only = SetAttrs {
            perms: Perms {
                mode: Some(0o700),
                ..Default::default()
            },
            ..Default::default()
        };
        ok(set_attrs(&root, &p("/d"), &mode_only));
        assert!(set_attrs(&root, &p("/d"), &attrs).is_err());
        ok(
            nix::unistd::mkfifo(&r.join("fifo"), Mode::from_bits_truncate(0o644))
                .map_err(|e| FileError::from_io("/fifo", e.into())),
        );
        assert!(set_attrs(&root, &p("/fifo"), &mode_only).is_err());
        // On an open file: size and mode, attributes read back through it.
        let f = ok(open(
            &root,
            &p("/f"),
            &OpenOptions {
                write: true,
                ..Default::default()
            },
            Perms::default(),
        ));
        let grow = SetAttrs {
            size: Some(100),
            perms: Perms {
                mode: Some(0o600),
                ..Default::default()
            },
            times: None,
        };
        ok(set_file_attrs(&root, &p("/f"), &f, &grow));
        let st = ok(file_stat(&root, &p("/f"), &f));
        assert_eq!((st.size, st.mode & 0o7777), (100, 0o600));
    }
}
