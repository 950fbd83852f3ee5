//! Safe unpacking of image tarballs into a new rootfs, entry by entry.
//!
//! An uploaded tarball is hostile until proven otherwise, so nothing here follows a path
//! the tarball controls. The rootfs is opened once as a directory descriptor; every entry's
//! parent is reached from it one component at a time with `openat(O_DIRECTORY|O_NOFOLLOW)`,
//! and the entry is created relative to that parent descriptor (`mkdirat`, `openat(O_CREAT|
//! O_EXCL|O_NOFOLLOW)`, `symlinkat`, `linkat` without following, `mkfifoat`). Owners, modes
//! and times are set on descriptors, or with `AT_SYMLINK_NOFOLLOW`. A symlink the tarball
//! made can therefore never redirect a later write, and nothing is written outside the
//! rootfs.
//!
//! Member names are relative to the image: a leading `/` is dropped, as GNU tar and LXD do.
//! What is refused (the whole image fails, and the caller removes what was unpacked):
//! `..` components, an entry whose parent is a symlink or not a directory,
//! a hard link whose target is absolute, has `..`, lies outside the rootfs, goes through a
//! symlink or does not exist yet, a non-directory replacing a directory, a truncated or
//! corrupt archive (also one that ends without its end-of-archive blocks, or whose
//! compressed stream fails its checksum), a `metadata.yaml` over 1 MiB, a PAX sparse file
//! (`GNU.sparse.*` keys, which the `tar` crate does not decode), and sizes over the
//! [`Limits`]: a regular file whose declared (apparent) size is over [`Limits::max_entry`],
//! or one that takes the sum of the image's file sizes over [`Limits::max_total`] (64 GiB
//! by default, `ctld --image-max-size-gib`). Sizes are checked from the header, before any
//! byte of the entry is written.
//!
//! Files are written sparsely: every all-zero block of [`HOLE_BLOCK`] bytes (aligned in the
//! file) is skipped and the file's length set at the end, so the holes of a GNU sparse entry
//! (and runs of zeros in a dense one) take no disk space. A 10 KiB tarball claiming a 64 GiB
//! sparse file allocates what its data blocks hold, not 64 GiB.
//!
//! What is skipped (logged, listed in [`Unpacked::skipped`]): device nodes and anything that
//! is not a directory, regular file, symlink, hard link or FIFO. Kept: numeric owners, modes
//! (setuid and setgid only on files owned by root), mtimes. Extended attributes are not
//! applied. Directories missing from the tarball are made root-owned with mode 0755.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, mkdirat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, mkfifoat, symlinkat};

use super::ImageError;
use super::tarball::{Compression, ImageMetadata, MAX_METADATA};
use super::templates::{MAX_TEMPLATE, MAX_TEMPLATES};

/// What a tarball holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `metadata.yaml` and `rootfs/` (other top-level entries, like `templates/`, are
    /// checked and ignored).
    Unified,
    /// The metadata half of a split image: only `metadata.yaml` is used.
    Metadata,
    /// The rootfs half of a split image: the whole tree is the rootfs.
    Rootfs,
}

/// The default cap on one regular file's apparent size (holes included): a rootfs has no
/// business holding a bigger one.
pub const MAX_ENTRY_SIZE: u64 = 16 << 30;

/// The default cap on one image's unpacked size: the sum of its regular files' apparent
/// sizes (`ctld --image-max-size-gib` changes it).
pub const MAX_IMAGE_SIZE: u64 = 64 << 30;

/// Zero blocks of this size (aligned in the file) are left as holes when a file is written.
pub const HOLE_BLOCK: usize = 4096;

/// The copy buffer of a regular file (a multiple of [`HOLE_BLOCK`]).
const COPY_BUF: usize = 256 * 1024;

/// At most this many skipped entries are named in [`Unpacked::skipped`] (a hostile tarball
/// may hold millions of device nodes).
pub const MAX_SKIPPED_LISTED: usize = 100;

/// Size caps of one unpack, checked against each regular file's declared size before any of
/// it is written. Hard links, symlinks and directories count as nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest apparent size of one regular file.
    pub max_entry: u64,
    /// The largest sum of the regular files' apparent sizes.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: MAX_ENTRY_SIZE,
            max_total: MAX_IMAGE_SIZE,
        }
    }
}

impl Limits {
    /// The default caps with the image's total set to `max_total` (one file is never
    /// allowed more than the whole image).
    pub fn with_max_total(max_total: u64) -> Limits {
        Limits {
            max_entry: MAX_ENTRY_SIZE.min(max_total),
            max_total,
        }
    }

    /// Refuse a regular file of `declared` bytes at `path` when `so_far` bytes of files are
    /// unpacked already.
    pub fn check(&self, path: &[u8], declared: u64, so_far: u64) -> Result<(), ImageError> {
        if declared > self.max_entry {
            return Err(invalid(format!(
                "\"{}\" is {} bytes, over the {} one file may have",
                String::from_utf8_lossy(path),
                declared,
                bytes(self.max_entry)
            )));
        }
        if so_far.saturating_add(declared) > self.max_total {
            return Err(invalid(format!(
                "the image unpacks to more than {} (at \"{}\", {} bytes after {} bytes); \
                 ctld --image-max-size-gib raises the limit",
                bytes(self.max_total),
                String::from_utf8_lossy(path),
                declared,
                so_far
            )));
        }
        Ok(())
    }

    /// Refuse an image whose files add up to `total` bytes.
    pub fn check_total(&self, total: u64) -> Result<(), ImageError> {
        if total > self.max_total {
            return Err(invalid(format!(
                "the image unpacks to {total} bytes, more than {}; \
                 ctld --image-max-size-gib raises the limit",
                bytes(self.max_total)
            )));
        }
        Ok(())
    }
}

/// `n` bytes, in GiB or MiB when it is a whole number of them.
fn bytes(n: u64) -> String {
    match n {
        0 => "0 bytes".into(),
        n if n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// What unpacking found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub metadata: Option<ImageMetadata>,
    /// Bytes of regular files written: the sum of their apparent sizes (holes included).
    pub size: i64,
    /// Entries not unpacked (device nodes...), as archive paths.
    pub skipped: Vec<String>,
    /// The files under `templates/` (name, content), read into memory (small, bounded).
    pub templates: Vec<(String, Vec<u8>)>,
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::Invalid(msg.into())
}

fn refused(path: &[u8], why: &str) -> ImageError {
    invalid(format!(
        "unsafe entry \"{}\": {why}",
        String::from_utf8_lossy(path)
    ))
}

/// The components of an archive path, without empty and `.` ones: a leading `/` is dropped
/// (as GNU tar and LXD do: `/rootfs/etc/hosts` is `rootfs/etc/hosts`, never the host's
/// path), and `..` is refused.
pub fn components(path: &[u8]) -> Result<Vec<&OsStr>, ImageError> {
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused(path, "\"..\" in the path")),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Records whether the reader below reached its end: a tar reader that hits the end of its
/// input before the end-of-archive blocks was given a truncated archive.
struct EofGuard<R> {
    inner: R,
    hit_eof: bool,
}

impl<R: Read> Read for EofGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        Ok(n)
    }
}

fn corrupt(e: io::Error) -> ImageError {
    invalid(format!("corrupt or truncated tarball: {e}"))
}

/// Unpack the image file at `file` (compression detected from its first bytes). With
/// `rootfs`, the rootfs entries are unpacked into that directory, which must not exist;
/// without, they are only read. Files over `limits` are refused.
pub fn unpack_file(
    file: &Path,
    layout: Layout,
    rootfs: Option<&Path>,
    limits: &Limits,
) -> Result<(Compression, Unpacked), ImageError> {
    let compression = Compression::detect_file(file)?;
    let f = File::open(file).map_err(|source| ImageError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let reader = compression
        .decoder(io::BufReader::with_capacity(256 * 1024, f))
        .map_err(corrupt)?;
    Ok((compression, unpack(reader, layout, rootfs, limits)?))
}

/// Unpack the (decompressed) tarball `reader`; see [`unpack_file`].
pub fn unpack<R: Read>(
    reader: R,
    layout: Layout,
    rootfs: Option<&Path>,
    limits: &Limits,
) -> Result<Unpacked, ImageError> {
    let mut root = match rootfs {
        Some(dir) => Some(Root::create(dir)?),
        None => None,
    };
    let mut out = Unpacked::default();
    // The sum of the apparent sizes of the files written so far.
    let mut apparent: u64 = 0;
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    let mut guard = EofGuard {
        inner: reader,
        hit_eof: false,
    };
    {
        let mut archive = tar::Archive::new(&mut guard);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let comps = components(&raw)?;
            let target = match (layout, comps.as_slice()) {
                (Layout::Unified | Layout::Metadata, [name]) if *name == "metadata.yaml" => {
                    out.metadata = Some(read_metadata(&mut entry)?);
                    continue;
                }
                (Layout::Unified | Layout::Metadata, [first, name]) if *first == "templates" => {
                    if entry.header().entry_type() == tar::EntryType::Regular {
                        out.templates
                            .push(read_template(&raw, name, &mut entry, &out)?);
                    }
                    continue;
                }
                (Layout::Unified, [first, rest @ ..]) if *first == "rootfs" => rest,
                (Layout::Rootfs, all) => all,
                _ => continue,
            };
            let Some(root) = root.as_mut() else {
                continue;
            };
            let target: Vec<OsString> = target.iter().map(|c| c.to_os_string()).collect();
            let kind = entry.header().entry_type();
            if is_file(kind) {
                // For a GNU sparse entry this is the real size, holes included.
                limits.check(&raw, entry.size(), apparent)?;
            }
            let prefix: &[&str] = match layout {
                Layout::Unified => &["rootfs"],
                _ => &[],
            };
            match root.entry(&raw, &target, &mut entry, prefix)? {
                Done::Written(bytes) => {
                    apparent = apparent.saturating_add(bytes);
                    out.size = out
                        .size
                        .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
                Done::Dir(mtime) => dir_times.push((target, mtime)),
                Done::Skipped => {
                    tracing::debug!(entry = %String::from_utf8_lossy(&raw), ?kind, "skipped");
                    if out.skipped.len() < MAX_SKIPPED_LISTED {
                        out.skipped.push(String::from_utf8_lossy(&raw).into_owned());
                    }
                }
            }
        }
    }
    if guard.hit_eof {
        return Err(invalid(
            "truncated tarball: it ends without its end-of-archive blocks",
        ));
    }
    // Read the rest, so a compressed stream's checksum and trailer are checked too.
    io::copy(&mut guard.inner, &mut io::sink()).map_err(corrupt)?;
    if let Some(root) = root.as_mut() {
        // Directory times last, deepest first: creating entries changed them.
        for (comps, mtime) in dir_times.iter().rev() {
            root.set_dir_time(comps, *mtime)?;
        }
    }
    if layout != Layout::Rootfs && out.metadata.is_none() {
        return Err(invalid("no metadata.yaml in the image"));
    }
    Ok(out)
}

fn read_template<R: Read>(
    raw: &[u8],
    name: &OsStr,
    entry: &mut tar::Entry<'_, R>,
    so_far: &Unpacked,
) -> Result<(String, Vec<u8>), ImageError> {
    if so_far.templates.len() >= MAX_TEMPLATES {
        return Err(invalid(format!("more than {MAX_TEMPLATES} templates")));
    }
    let name = name
        .to_str()
        .filter(|n| super::templates::plain_file_name(n))
        .ok_or_else(|| refused(raw, "a template name must be a plain file name"))?;
    let mut data = Vec::new();
    entry
        .take(MAX_TEMPLATE + 1)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() as u64 > MAX_TEMPLATE {
        return Err(refused(raw, "a template is larger than 1 MiB"));
    }
    Ok((name.to_string(), data))
}

fn read_metadata<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<ImageMetadata, ImageError> {
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(invalid("metadata.yaml is not a regular file"));
    }
    let mut text = Vec::new();
    entry
        .take(MAX_METADATA + 1)
        .read_to_end(&mut text)
        .map_err(corrupt)?;
    if text.len() as u64 > MAX_METADATA {
        return Err(invalid("metadata.yaml is larger than 1 MiB"));
    }
    ImageMetadata::parse(&text)
}

/// Whether entries of `kind` are unpacked as regular files.
fn is_file(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
    )
}

/// What one entry became.
enum Done {
    /// A file of that many bytes (its apparent size), a link, a FIFO.
    Written(u64),
    /// A directory, whose mtime is set at the end.
    Dir(i64),
    Skipped,
}

/// The rootfs being unpacked: a directory descriptor everything is made relative to.
struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// The parent directory of the last entry, reused while entries stay in it.
    cache: Option<(Vec<OsString>, OwnedFd)>,
    /// Whether owners can be set (the daemon runs as root; unit tests may not).
    chown: bool,
    /// The copy buffer of regular files, [`COPY_BUF`] bytes.
    buf: Vec<u8>,
}

const DIR_OPEN: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn ids(header: &tar::Header) -> Result<(Uid, Gid), ImageError> {
    let uid = header.uid().map_err(corrupt)?;
    let gid = header.gid().map_err(corrupt)?;
    let uid = u32::try_from(uid).map_err(|_| invalid(format!("uid {uid} out of range")))?;
    let gid = u32::try_from(gid).map_err(|_| invalid(format!("gid {gid} out of range")))?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

impl Root {
    fn create(dir: &Path) -> Result<Root, ImageError> {
        let io_err = |source| ImageError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir(dir).map_err(io_err)?;
        let fd = nix::fcntl::open(dir, DIR_OPEN, Mode::empty())
            .map_err(|e| io_err(io::Error::from(e)))?;
        Ok(Root {
            fd,
            path: dir.to_path_buf(),
            cache: None,
            chown: nix::unistd::geteuid().is_root(),
            buf: vec![0; COPY_BUF],
        })
    }

    fn io(&self, comps: &[OsString], e: impl Into<io::Error>) -> ImageError {
        let mut path = self.path.clone();
        path.extend(comps);
        ImageError::Io {
            path,
            source: e.into(),
        }
    }

    /// The directory `comps` (relative to the root), reached without following any symlink;
    /// missing directories are made when `create` is set.
    fn dir(
        &mut self,
        raw: &[u8],
        comps: &[OsString],
        create: bool,
    ) -> Result<&OwnedFd, ImageError> {
        if comps.is_empty() {
            return Ok(&self.fd);
        }
        let cached = self.cache.as_ref().is_some_and(|(key, _)| key == comps);
        if !cached {
            let mut cur: Option<OwnedFd> = None;
            for (i, c) in comps.iter().enumerate() {
                let at = cur.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
                let next = match openat(at, c.as_os_str(), DIR_OPEN, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) if create => {
                        match mkdirat(at, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(self.io(&comps[..=i], e)),
                        }
                        openat(at, c.as_os_str(), DIR_OPEN, Mode::empty())
                            .map_err(|e| self.io(&comps[..=i], e))?
                    }
                    Err(Errno::ENOENT) => {
                        return Err(refused(raw, "its target does not exist"));
                    }
                    Err(Errno::ELOOP | Errno::ENOTDIR) => {
                        return Err(refused(raw, "goes through a symlink or a non-directory"));
                    }
                    Err(e) => return Err(self.io(&comps[..=i], e)),
                };
                cur = Some(next);
            }
            let Some(fd) = cur else {
                return Ok(&self.fd);
            };
            self.cache = Some((comps.to_vec(), fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd),
            None => Ok(&self.fd),
        }
    }

    /// Make room for a non-directory at `name` in `parent`: remove a non-directory there, and
    /// refuse to replace a directory.
    fn clear(parent: &OwnedFd, raw: &[u8], name: &OsStr) -> Result<(), ImageError> {
        match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(ImageError::Io {
                path: PathBuf::from(name),
                source: e.into(),
            }),
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                Err(refused(raw, "replaces a directory"))
            }
            Ok(_) => unlinkat_file(parent, name),
        }
    }

    /// Unpack one entry at `comps` (relative to the rootfs).
    fn entry<R: Read>(
        &mut self,
        raw: &[u8],
        comps: &[OsString],
        entry: &mut tar::Entry<'_, R>,
        prefix: &[&str],
    ) -> Result<Done, ImageError> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(corrupt)? & 0o7777;
        let mtime = i64::try_from(header.mtime().map_err(corrupt)?).unwrap_or(i64::MAX);
        let (uid, gid) = ids(&header)?;
        let chown = self.chown;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The rootfs directory itself.
            if kind != tar::EntryType::Directory {
                return Err(refused(raw, "the rootfs is not a directory"));
            }
            if chown {
                fchown(self.fd.as_fd(), Some(uid), Some(gid)).map_err(|e| self.io(comps, e))?;
            }
            fchmod(self.fd.as_fd(), Mode::from_bits_truncate(mode & 0o3777))
                .map_err(|e| self.io(comps, e))?;
            return Ok(Done::Dir(mtime));
        };
        let name = name.as_os_str();
        let times = [TimeSpec::new(mtime, 0), TimeSpec::new(mtime, 0)];
        match kind {
            tar::EntryType::Directory => {
                let parent = self.dir(raw, parent_comps, true)?;
                let made = mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700));
                match made {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(|e| io_name(name, e))?;
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            unlinkat_file(parent, name)?;
                            mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700))
                                .map_err(|e| io_name(name, e))?;
                        }
                    }
                    Err(e) => return Err(io_name(name, e)),
                }
                let dir = openat(parent.as_fd(), name, DIR_OPEN, Mode::empty())
                    .map_err(|_| refused(raw, "goes through a symlink or a non-directory"))?;
                if chown {
                    fchown(dir.as_fd(), Some(uid), Some(gid)).map_err(|e| io_name(name, e))?;
                }
                fchmod(dir.as_fd(), Mode::from_bits_truncate(mode & 0o3777))
                    .map_err(|e| io_name(name, e))?;
                Ok(Done::Dir(mtime))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if is_pax_sparse(entry)? {
                    return Err(refused(
                        raw,
                        "a PAX sparse file (GNU.sparse.* keys), which is not supported",
                    ));
                }
                let parent = self.dir(raw, parent_comps, true)?;
                Self::clear(parent, raw, name)?;
                let fd = openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| io_name(name, e))?;
                let file = File::from(fd);
                let written = copy_sparse(entry, &file, &mut self.buf, name)?;
                if written != entry.size() {
                    return Err(invalid(format!(
                        "truncated tarball: \"{}\" has {written} of its {} bytes",
                        String::from_utf8_lossy(raw),
                        entry.size()
                    )));
                }
                // setuid and setgid only on files owned by root.
                let mode = if uid.is_root() { mode } else { mode & 0o1777 };
                if chown {
                    fchown(file.as_fd(), Some(uid), Some(gid)).map_err(|e| io_name(name, e))?;
                }
                fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| io_name(name, e))?;
                futimens(file.as_fd(), &times[0], &times[1]).map_err(|e| io_name(name, e))?;
                Ok(Done::Written(written))
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(raw, "symlink without a target"))?
                    .into_owned();
                let parent = self.dir(raw, parent_comps, true)?;
                Self::clear(parent, raw, name)?;
                symlinkat(OsStr::from_bytes(&target), parent.as_fd(), name)
                    .map_err(|e| io_name(name, e))?;
                chown_entry(chown, parent.as_fd(), name, uid, gid)?;
                utimensat(
                    parent.as_fd(),
                    name,
                    &times[0],
                    &times[1],
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| io_name(name, e))?;
                Ok(Done::Written(0))
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(raw, "hard link without a target"))?
                    .into_owned();
                let tcomps = components(&target)
                    .map_err(|_| refused(raw, "hard link target outside the rootfs"))?;
                // The target must lie in the same rootfs as the link.
                let tcomps: &[&OsStr] = match tcomps.get(..prefix.len()) {
                    Some(head) if head.iter().zip(prefix).all(|(a, b)| *a == *b) => {
                        &tcomps[prefix.len()..]
                    }
                    _ => return Err(refused(raw, "hard link target outside the rootfs")),
                };
                let tcomps: Vec<OsString> = tcomps.iter().map(|c| c.to_os_string()).collect();
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(refused(raw, "hard link to the rootfs directory"));
                };
                // Each parent opened without following symlinks, one after the other.
                let tparent_fd = {
                    let fd = self.dir(raw, tparent, false)?;
                    fd.try_clone().map_err(|e| io_name(tname, e))?
                };
                let parent = self.dir(raw, parent_comps, true)?;
                Self::clear(parent, raw, name)?;
                linkat(
                    tparent_fd.as_fd(),
                    tname.as_os_str(),
                    parent.as_fd(),
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::ENOENT => refused(raw, "hard link target does not exist"),
                    Errno::EPERM => refused(raw, "hard link to a directory"),
                    e => io_name(name, e),
                })?;
                Ok(Done::Written(0))
            }
            tar::EntryType::Fifo => {
                let parent = self.dir(raw, parent_comps, true)?;
                Self::clear(parent, raw, name)?;
                mkfifoat(parent.as_fd(), name, Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_name(name, e))?;
                chown_entry(chown, parent.as_fd(), name, uid, gid)?;
                fchmodat(
                    parent.as_fd(),
                    name,
                    Mode::from_bits_truncate(mode & 0o777),
                    FchmodatFlags::NoFollowSymlink,
                )
                .or_else(|e| match e {
                    // Linux cannot chmod without following; the FIFO was just made.
                    Errno::EOPNOTSUPP => fchmodat(
                        parent.as_fd(),
                        name,
                        Mode::from_bits_truncate(mode & 0o777),
                        FchmodatFlags::FollowSymlink,
                    ),
                    e => Err(e),
                })
                .map_err(|e| io_name(name, e))?;
                Ok(Done::Written(0))
            }
            _ => Ok(Done::Skipped),
        }
    }

    fn set_dir_time(&mut self, comps: &[OsString], mtime: i64) -> Result<(), ImageError> {
        let t = TimeSpec::new(mtime, 0);
        let fd = match comps.split_last() {
            None => self.fd.try_clone().map_err(|e| self.io(comps, e))?,
            Some((name, parent)) => {
                let parent = self.dir(b"", parent, false)?;
                openat(parent.as_fd(), name.as_os_str(), DIR_OPEN, Mode::empty())
                    .map_err(|e| io_name(name, e))?
            }
        };
        futimens(fd.as_fd(), &t, &t).map_err(|e| self.io(comps, e))
    }
}

/// Whether `entry` is a PAX sparse file: its extended header has `GNU.sparse.*` keys (the
/// data then starts with a map, or the map is in the keys, and the name may be a stand-in).
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<bool, ImageError> {
    let Some(exts) = entry.pax_extensions().map_err(corrupt)? else {
        return Ok(false);
    };
    for ext in exts {
        if ext
            .map_err(corrupt)?
            .key_bytes()
            .starts_with(b"GNU.sparse.")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Fill `buf` from `src` as far as it goes; returns the bytes read (fewer only at the end).
fn fill(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copy `src` into the empty `file`, leaving every all-zero [`HOLE_BLOCK`] (aligned in the
/// file) unwritten, then set the file's length: holes stay holes, whether the tarball
/// described them (GNU sparse) or spelled them out. Returns the bytes copied, the file's
/// apparent size.
fn copy_sparse(
    src: &mut impl Read,
    file: &File,
    buf: &mut [u8],
    name: &OsStr,
) -> Result<u64, ImageError> {
    const ZERO: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];
    let mut pos: u64 = 0;
    loop {
        let n = fill(src, buf).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        // A run of non-zero blocks not written yet, from this offset in `data`.
        let mut run: Option<usize> = None;
        for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
            let at = i * HOLE_BLOCK;
            if block == &ZERO[..block.len()] {
                if let Some(start) = run.take() {
                    file.write_all_at(&data[start..at], pos + start as u64)
                        .map_err(|e| io_name(name, e))?;
                }
            } else if run.is_none() {
                run = Some(at);
            }
        }
        if let Some(start) = run {
            file.write_all_at(&data[start..], pos + start as u64)
                .map_err(|e| io_name(name, e))?;
        }
        pos += n as u64;
    }
    file.set_len(pos).map_err(|e| io_name(name, e))?;
    Ok(pos)
}

/// Give `name` in `parent` (never following a symlink) the entry's owner, when unpacking
/// keeps owners.
fn chown_entry(
    chown: bool,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    uid: Uid,
    gid: Gid,
) -> Result<(), ImageError> {
    if chown {
        fchownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_name(name, e))?;
    }
    Ok(())
}

fn io_name(name: &OsStr, e: impl Into<io::Error>) -> ImageError {
    ImageError::Io {
        path: PathBuf::from(name),
        source: e.into(),
    }
}

fn unlinkat_file(parent: &OwnedFd, name: &OsStr) -> Result<(), ImageError> {
    nix::unistd::unlinkat(parent.as_fd(), name, UnlinkatFlags::NoRemoveDir)
        .map_err(|e| io_name(name, e))
}

/// Hand-made tarballs for tests: GNU sparse entries as GNU tar writes them (`tar -S`), and
/// a PAX sparse one.
/// The largest `index.yaml` or `backup.yaml` of an instance backup.
pub const MAX_BACKUP_YAML: u64 = 1 << 20;

/// The most snapshots one backup may carry.
pub const MAX_BACKUP_SNAPSHOTS: usize = 1024;

/// What an instance backup tarball held (see [`unpack_backup`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackedBackup {
    /// `backup/index.yaml`, as it was.
    pub index: Option<Vec<u8>>,
    /// `backup/container/backup.yaml` (older backups describe the instance only there).
    pub container_yaml: Option<Vec<u8>>,
    /// Whether `backup/container/rootfs` held anything.
    pub has_container: bool,
    /// The snapshots whose `rootfs` the tarball held, in the order met.
    pub snapshots: Vec<String>,
    /// Bytes of regular files written, all roots together.
    pub size: i64,
    /// Entries not unpacked (device nodes...), as archive paths.
    pub skipped: Vec<String>,
}

/// A snapshot directory name a backup may use: what a snapshot name may be.
fn plain_snapshot_name(name: &OsStr) -> Option<&str> {
    let n = name.to_str()?;
    let ok = !n.is_empty()
        && n.len() <= 63
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(n)
}

fn read_small<R: Read>(
    raw: &[u8],
    entry: &mut tar::Entry<'_, R>,
    max: u64,
) -> Result<Vec<u8>, ImageError> {
    if entry.header().entry_type() != tar::EntryType::Regular {
        return Err(refused(raw, "not a regular file"));
    }
    let mut text = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut text)
        .map_err(corrupt)?;
    if text.len() as u64 > max {
        return Err(refused(raw, "larger than 1 MiB"));
    }
    Ok(text)
}

/// Unpack an Incus instance backup file (compression detected from its first bytes); see
/// [`unpack_backup`].
pub fn unpack_backup_file(
    file: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<UnpackedBackup, ImageError> {
    let compression = Compression::detect_file(file)?;
    let f = File::open(file).map_err(|source| ImageError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let reader = compression
        .decoder(io::BufReader::with_capacity(256 * 1024, f))
        .map_err(corrupt)?;
    unpack_backup(reader, dest, limits)
}

/// Unpack the (decompressed) Incus instance backup `reader` into `dest`, which must not
/// exist: `backup/container/rootfs/` into `dest/container`, `backup/snapshots/<snap>/rootfs/`
/// into `dest/snapshots/<snap>`, each a rootfs held to the same rules as an image's (one
/// descriptor per rootfs, nothing followed, hard links only inside their own rootfs), the
/// sizes of all of them together held to `limits`. `backup/index.yaml` and
/// `backup/container/backup.yaml` are read (1 MiB each at most); other entries are ignored.
/// An optimized (storage driver) backup is refused. The caller removes `dest` on failure.
pub fn unpack_backup<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
) -> Result<UnpackedBackup, ImageError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    fs::create_dir(dest).map_err(io_err(dest))?;
    let snapshots_dir = dest.join("snapshots");
    fs::create_dir(&snapshots_dir).map_err(io_err(&snapshots_dir))?;
    // The rootfs of each root (`None`: the instance's), with its directories' mtimes.
    type DirTimes = Vec<(Vec<OsString>, i64)>;
    let mut roots: std::collections::BTreeMap<Option<String>, (Root, DirTimes)> =
        std::collections::BTreeMap::new();
    let mut out = UnpackedBackup::default();
    let mut apparent: u64 = 0;
    let mut guard = EofGuard {
        inner: reader,
        hit_eof: false,
    };
    {
        let mut archive = tar::Archive::new(&mut guard);
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let comps = components(&raw)?;
            let strs: Vec<Option<&str>> = comps.iter().map(|c| c.to_str()).collect();
            let (key, prefix_len) = match strs.as_slice() {
                [Some("backup"), Some("index.yaml")] => {
                    out.index = Some(read_small(&raw, &mut entry, MAX_BACKUP_YAML)?);
                    continue;
                }
                [Some("backup"), Some("container"), Some("backup.yaml")] => {
                    out.container_yaml = Some(read_small(&raw, &mut entry, MAX_BACKUP_YAML)?);
                    continue;
                }
                [
                    Some("backup"),
                    Some("container.bin") | Some("virtual-machine.img"),
                    ..,
                ] => {
                    return Err(invalid(
                        "optimized or virtual-machine backups are not supported \
                         (only containers, made with optimized_storage false)",
                    ));
                }
                [Some("backup"), Some("container"), Some("rootfs"), ..] => (None, 3),
                [Some("backup"), Some("snapshots"), _, Some("rootfs"), ..] => {
                    let snap = plain_snapshot_name(comps[2])
                        .ok_or_else(|| refused(&raw, "not a valid snapshot name"))?;
                    (Some(snap.to_string()), 4)
                }
                _ => continue,
            };
            if !roots.contains_key(&key) {
                let dir = match &key {
                    None => dest.join("container"),
                    Some(snap) => {
                        if roots.len() > MAX_BACKUP_SNAPSHOTS {
                            return Err(invalid(format!(
                                "more than {MAX_BACKUP_SNAPSHOTS} snapshots in the backup"
                            )));
                        }
                        out.snapshots.push(snap.clone());
                        snapshots_dir.join(snap)
                    }
                };
                out.has_container |= key.is_none();
                roots.insert(key.clone(), (Root::create(&dir)?, Vec::new()));
            }
            let Some((root, dir_times)) = roots.get_mut(&key) else {
                continue;
            };
            let prefix: Vec<&str> = strs[..prefix_len].iter().flatten().copied().collect();
            let target: Vec<OsString> = comps[prefix_len..]
                .iter()
                .map(|c| c.to_os_string())
                .collect();
            let kind = entry.header().entry_type();
            if is_file(kind) {
                limits.check(&raw, entry.size(), apparent)?;
            }
            match root.entry(&raw, &target, &mut entry, &prefix)? {
                Done::Written(bytes) => {
                    apparent = apparent.saturating_add(bytes);
                    out.size = out
                        .size
                        .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
                Done::Dir(mtime) => dir_times.push((target, mtime)),
                Done::Skipped => {
                    tracing::debug!(entry = %String::from_utf8_lossy(&raw), ?kind, "skipped");
                    if out.skipped.len() < MAX_SKIPPED_LISTED {
                        out.skipped.push(String::from_utf8_lossy(&raw).into_owned());
                    }
                }
            }
        }
    }
    if guard.hit_eof {
        return Err(invalid(
            "truncated tarball: it ends without its end-of-archive blocks",
        ));
    }
    io::copy(&mut guard.inner, &mut io::sink()).map_err(corrupt)?;
    for (root, dir_times) in roots.values_mut() {
        for (comps, mtime) in dir_times.iter().rev() {
            root.set_dir_time(comps, *mtime)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod fixtures {
    /// `metadata.yaml` of a test image.
    pub(crate) const METADATA: &str =
        "architecture: x86_64\ncreation_date: 1600000000\nproperties:\n  os: Test\n";

    fn pad(out: &mut Vec<u8>) {
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn header(path: &str, kind: tar::EntryType, size: u64, gnu: bool) -> tar::Header {
        let mut h = if gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        h.set_path(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h.set_cksum();
        h
    }

    /// A regular file entry (header and padded data).
    pub(crate) fn file(path: &str, data: &[u8]) -> Vec<u8> {
        let mut out = header(path, tar::EntryType::Regular, data.len() as u64, false)
            .as_bytes()
            .to_vec();
        out.extend_from_slice(data);
        pad(&mut out);
        out
    }

    /// A GNU sparse file at `path`, `real` bytes long, holding the data `blocks` (offset,
    /// bytes; every length a multiple of 512 but the last) with holes everywhere else. Four
    /// map entries fit in the header; the rest go into extension headers of 21 each. The map
    /// ends with an empty entry at the real size, as GNU tar writes it.
    pub(crate) fn gnu_sparse(path: &str, real: u64, blocks: &[(u64, &[u8])]) -> Vec<u8> {
        let mut map: Vec<(u64, u64)> = blocks.iter().map(|(o, d)| (*o, d.len() as u64)).collect();
        map.push((real, 0));
        let stored: u64 = map.iter().map(|(_, l)| l).sum();
        let mut h = header(path, tar::EntryType::GNUSparse, stored, true);
        let (head, rest) = map.split_at(map.len().min(4));
        {
            let gnu = h
                .as_gnu_mut()
                .unwrap_or_else(|| panic!("a GNU header is GNU"));
            gnu.set_real_size(real);
            for (slot, (off, len)) in gnu.sparse.iter_mut().zip(head) {
                slot.set_offset(*off);
                slot.set_length(*len);
            }
            gnu.set_is_extended(!rest.is_empty());
        }
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        let exts: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
        for (i, chunk) in exts.iter().enumerate() {
            let mut ext = tar::GnuExtSparseHeader::new();
            for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                slot.set_offset(*off);
                slot.set_length(*len);
            }
            ext.set_is_extended(i + 1 < exts.len());
            out.extend_from_slice(ext.as_bytes());
        }
        for (_, data) in blocks {
            out.extend_from_slice(data);
        }
        pad(&mut out);
        out
    }

    /// A PAX sparse file (format 1.0: the map at the start of the data, the real name in
    /// `GNU.sparse.name`), as `tar --format=posix -S` writes it.
    pub(crate) fn pax_sparse(path: &str, real: u64) -> Vec<u8> {
        let records = [
            ("GNU.sparse.major", "1".to_string()),
            ("GNU.sparse.minor", "0".to_string()),
            ("GNU.sparse.name", path.to_string()),
            ("GNU.sparse.realsize", real.to_string()),
        ];
        let mut pax = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where len counts itself.
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            pax.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        let mut out = header(
            "PaxHeaders/big",
            tar::EntryType::XHeader,
            pax.len() as u64,
            false,
        )
        .as_bytes()
        .to_vec();
        out.extend_from_slice(&pax);
        pad(&mut out);
        let mut data = format!("1\n{}\n4096\n", real - 4096).into_bytes();
        pad(&mut data);
        data.extend_from_slice(&[b'x'; 4096]);
        out.extend_from_slice(&file("rootfs/GNUSparseFile.0/big", &data));
        out
    }

    /// A unified image tarball: `metadata.yaml`, `rootfs/`, then `entries`, then the end.
    pub(crate) fn unified(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = file("metadata.yaml", METADATA.as_bytes());
        out.extend_from_slice(header("rootfs/", tar::EntryType::Directory, 0, false).as_bytes());
        for e in entries {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::tarball::{Tree, write_unified};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A tar header for `path` written byte for byte (the tar crate refuses to *write* the
    /// hostile names these tests need).
    fn raw_header(path: &str, kind: tar::EntryType, size: u64, link: &str) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        if kind == tar::EntryType::Char {
            let _ = h.set_device_major(1);
            let _ = h.set_device_minor(3);
        }
        h.set_cksum();
        h
    }

    /// A tarball of `entries`: (path, type, content or link target).
    fn tarball(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data) in entries {
            let is_data = *kind == tar::EntryType::Regular;
            let (size, link) = if is_data {
                (data.len() as u64, "")
            } else {
                (0, *data)
            };
            out.extend_from_slice(raw_header(path, *kind, size, link).as_bytes());
            if is_data {
                out.extend_from_slice(data.as_bytes());
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    const META: (&str, tar::EntryType, &str) = (
        "metadata.yaml",
        tar::EntryType::Regular,
        "architecture: x86_64\ncreation_date: 1600000000\nproperties:\n  os: Test\n",
    );
    use tar::EntryType::{Char, Directory as Dir, Link, Regular as File_, Symlink};

    /// Every path under `dir`, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(root, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// Unpack `bytes` into `<tmp>/image/rootfs`; `<tmp>/outside` is where escapes would land.
    fn try_unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<Unpacked, ImageError>) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let _ = fs::create_dir_all(tmp.path().join("image"));
        let _ = fs::create_dir_all(tmp.path().join("outside"));
        let rootfs = tmp.path().join("image/rootfs");
        let r = unpack(bytes, Layout::Unified, Some(&rootfs), &Limits::default());
        (tmp, r)
    }

    fn assert_refused(entries: &[(&str, tar::EntryType, &str)], says: &str) {
        let (tmp, r) = try_unpack(&tarball(entries));
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(says), "{entries:?}: {err:?}");
        // Nothing outside the image directory.
        assert!(listing(&tmp.path().join("outside")).is_empty());
        let top: Vec<String> = listing(tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with("image"))
            .collect();
        assert_eq!(top, ["outside"], "{entries:?}");
    }

    #[test]
    fn unpacks_a_unified_tarball() -> TestResult {
        let bytes = tarball(&[
            META,
            ("rootfs/", Dir, ""),
            ("rootfs/etc/", Dir, ""),
            ("rootfs/etc/hostname", File_, "box\n"),
            ("./rootfs/bin/sh", Symlink, "/bin/busybox"),
            ("rootfs/etc/hostname2", Link, "rootfs/etc/hostname"),
            ("templates/hostname.tpl", File_, "{{ name }}"),
        ]);
        let (tmp, r) = try_unpack(&bytes);
        let r = r?;
        let rootfs = tmp.path().join("image/rootfs");
        assert_eq!(r.metadata.map(|m| m.properties), {
            let mut p = std::collections::BTreeMap::new();
            p.insert("os".to_string(), "Test".to_string());
            Some(p)
        });
        assert_eq!(r.size, 4);
        assert_eq!(fs::read_to_string(rootfs.join("etc/hostname"))?, "box\n");
        assert_eq!(
            fs::read_link(rootfs.join("bin/sh"))?,
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::metadata(rootfs.join("etc/hostname"))?.ino(),
            fs::metadata(rootfs.join("etc/hostname2"))?.ino()
        );
        let md = fs::metadata(rootfs.join("etc"))?;
        assert_eq!(md.mtime(), 1_600_000_000, "directory times are set last");
        assert_eq!(md.permissions().mode() & 0o7777, 0o755);
        assert!(!rootfs.join("templates").exists());
        assert_eq!(
            r.templates,
            [("hostname.tpl".to_string(), b"{{ name }}".to_vec())],
            "templates are read, not unpacked into the rootfs"
        );
        Ok(())
    }

    #[test]
    fn a_leading_slash_is_dropped_never_followed() -> TestResult {
        let dir = tempfile::tempdir()?;
        let rootfs = dir.path().join("rootfs");
        let data = tarball(&[
            META,
            ("/rootfs/", Dir, ""),
            ("/rootfs/etc/", Dir, ""),
            ("//rootfs/etc/hosts", File_, "127.0.0.1 here"),
            ("/etc/evil", File_, "x"),
        ]);
        unpack(
            &data[..],
            Layout::Unified,
            Some(&rootfs),
            &Limits::default(),
        )?;
        assert_eq!(fs::read(rootfs.join("etc/hosts"))?, b"127.0.0.1 here");
        assert!(!rootfs.join("evil").exists() && !dir.path().join("etc").exists());
        assert_refused(&[META, ("/rootfs/../../x", File_, "x")], "\"..\"");
        Ok(())
    }

    #[test]
    fn dot_dot_is_refused() {
        assert_refused(&[META, ("rootfs/../../outside/x", File_, "x")], "\"..\"");
        assert_refused(&[META, ("rootfs/a/../../x", File_, "x")], "\"..\"");
    }

    #[test]
    fn writes_through_a_symlink_are_refused() {
        let outside = "../../outside";
        // `evil -> /` (or a relative escape), then `evil/x`.
        for target in ["/", outside] {
            assert_refused(
                &[
                    META,
                    ("rootfs/evil", Symlink, target),
                    ("rootfs/evil/x", File_, "x"),
                ],
                "goes through a symlink",
            );
            assert_refused(
                &[
                    META,
                    ("rootfs/evil", Symlink, target),
                    ("rootfs/evil/d/", Dir, ""),
                ],
                "goes through a symlink",
            );
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones_in_place() -> TestResult {
        // A directory entry over a symlink replaces the symlink; it never follows it.
        let (tmp, r) = try_unpack(&tarball(&[
            META,
            ("rootfs/d", Symlink, "../../outside"),
            ("rootfs/d/", Dir, ""),
            ("rootfs/d/x", File_, "x"),
            ("rootfs/f", File_, "old"),
            ("rootfs/f", File_, "new"),
        ]));
        r?;
        let rootfs = tmp.path().join("image/rootfs");
        assert!(fs::symlink_metadata(rootfs.join("d"))?.is_dir());
        assert_eq!(fs::read_to_string(rootfs.join("d/x"))?, "x");
        assert_eq!(fs::read_to_string(rootfs.join("f"))?, "new");
        assert!(listing(&tmp.path().join("outside")).is_empty());
        // A file over a directory is refused.
        assert_refused(
            &[META, ("rootfs/d/", Dir, ""), ("rootfs/d", File_, "x")],
            "replaces a directory",
        );
        Ok(())
    }

    #[test]
    fn hard_links_out_of_the_rootfs_are_refused() {
        assert_refused(
            &[META, ("rootfs/passwd", Link, "/etc/passwd")],
            "outside the rootfs",
        );
        assert_refused(
            &[META, ("rootfs/passwd", Link, "etc/passwd")],
            "outside the rootfs",
        );
        assert_refused(
            &[META, ("rootfs/passwd", Link, "rootfs/../../../etc/passwd")],
            "outside the rootfs",
        );
        assert_refused(
            &[
                META,
                ("rootfs/evil", Symlink, "/etc"),
                ("rootfs/passwd", Link, "rootfs/evil/passwd"),
            ],
            "goes through a symlink",
        );
        assert_refused(&[META, ("rootfs/x", Link, "rootfs/nope")], "does not exist");
    }

    #[test]
    fn device_nodes_are_skipped() -> TestResult {
        let (tmp, r) = try_unpack(&tarball(&[
            META,
            ("rootfs/dev/", Dir, ""),
            ("rootfs/dev/null", Char, ""),
            ("rootfs/ok", File_, "fine"),
        ]));
        let r = r?;
        assert_eq!(r.skipped, ["rootfs/dev/null"]);
        let rootfs = tmp.path().join("image/rootfs");
        assert!(fs::symlink_metadata(rootfs.join("dev/null")).is_err());
        assert_eq!(fs::read_to_string(rootfs.join("ok"))?, "fine");
        Ok(())
    }

    #[test]
    fn only_the_first_skipped_entries_are_listed() -> TestResult {
        let names: Vec<String> = (0..MAX_SKIPPED_LISTED + 50)
            .map(|i| format!("rootfs/dev/n{i}"))
            .collect();
        let mut entries = vec![META, ("rootfs/dev/", Dir, "")];
        entries.extend(names.iter().map(|n| (n.as_str(), Char, "")));
        let (_tmp, r) = try_unpack(&tarball(&entries));
        let r = r?;
        assert_eq!(r.skipped.len(), MAX_SKIPPED_LISTED);
        assert_eq!(r.skipped[0], "rootfs/dev/n0");
        Ok(())
    }

    #[test]
    fn setuid_is_kept_only_for_root_files() -> TestResult {
        let mut bytes = Vec::new();
        for (path, uid) in [("rootfs/su", 0u64), ("rootfs/mine", 1000)] {
            let mut h = raw_header(path, File_, 1, "");
            h.set_mode(0o4755);
            h.set_uid(uid);
            h.set_cksum();
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(&[b'x'; 512][..]);
        }
        let mut all = tarball(&[META]);
        all.truncate(all.len() - 1024);
        all.extend_from_slice(&bytes);
        all.extend_from_slice(&[0u8; 1024]);
        let (tmp, r) = try_unpack(&all);
        r?;
        let mode = |n: &str| {
            fs::metadata(tmp.path().join("image/rootfs").join(n))
                .map(|m| m.permissions().mode() & 0o7777)
        };
        assert_eq!(mode("su")?, 0o4755);
        assert_eq!(mode("mine")?, 0o755);
        Ok(())
    }

    #[test]
    fn truncated_and_corrupt_tarballs_are_refused() -> TestResult {
        let good = tarball(&[META, ("rootfs/a", File_, &"a".repeat(2000))]);
        // Cut inside the file data, at a block boundary, and just before the end blocks.
        for cut in [1200, 1536, good.len() - 1024] {
            let (_, r) = try_unpack(&good[..cut]);
            let err = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("truncated"), "cut at {cut}: {err:?}");
        }
        // A flipped byte in a header breaks its checksum.
        let mut bad = good.clone();
        bad[520] ^= 0xff;
        let (_, r) = try_unpack(&bad);
        assert!(r.is_err());
        // Compressed: cut or flipped inside the stream.
        for c in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
            let mut enc = c.encoder(Vec::new())?;
            std::io::Write::write_all(&mut enc, &good)?;
            let packed = enc.finish()?;
            let cut = &packed[..packed.len() - 6];
            let r = unpack(c.decoder(cut)?, Layout::Unified, None, &Limits::default());
            assert!(r.is_err(), "{c:?} cut");
            let mut flipped = packed.clone();
            let at = packed.len() / 2;
            flipped[at] ^= 0x55;
            let r = c
                .decoder(flipped.as_slice())
                .map_err(|e| ImageError::Invalid(e.to_string()))
                .and_then(|d| unpack(d, Layout::Unified, None, &Limits::default()));
            assert!(r.is_err(), "{c:?} flipped");
            let r = unpack(
                c.decoder(packed.as_slice())?,
                Layout::Unified,
                None,
                &Limits::default(),
            )?;
            assert!(r.metadata.is_some());
        }
        Ok(())
    }

    #[test]
    fn metadata_is_required_and_bounded() {
        let (_, r) = try_unpack(&tarball(&[("rootfs/a", File_, "a")]));
        assert!(
            r.err()
                .is_some_and(|e| e.to_string().contains("no metadata.yaml"))
        );
        let big = format!("architecture: x86_64\nx: \"{}\"\n", "y".repeat(1 << 20));
        let (_, r) = try_unpack(&tarball(&[("metadata.yaml", File_, &big)]));
        assert!(r.err().is_some_and(|e| e.to_string().contains("1 MiB")));
    }

    #[test]
    fn templates_round_trip_through_a_written_tarball() -> TestResult {
        let src = tempfile::tempdir()?;
        fs::create_dir_all(src.path().join("rootfs/etc"))?;
        fs::create_dir_all(src.path().join("templates"))?;
        fs::write(
            src.path().join("templates/hostname.tpl"),
            "{{ container.name }}\n",
        )?;
        let mut meta = ImageMetadata {
            architecture: "x86_64".into(),
            creation_date: 1_700_000_000,
            ..ImageMetadata::default()
        };
        meta.templates.insert(
            "/etc/hostname".into(),
            super::super::templates::TemplateEntry {
                when: vec!["create".into(), "copy".into()],
                template: "hostname.tpl".into(),
                ..Default::default()
            },
        );
        let tree =
            Tree::dir(src.path().join("rootfs")).with_templates(src.path().join("templates"));
        let (bytes, _) = write_unified(Vec::new(), &meta, &tree)?;
        let (again, _) = write_unified(Vec::new(), &meta, &tree)?;
        assert_eq!(bytes, again, "deterministic");
        let (tmp, r) = try_unpack(&bytes);
        let r = r?;
        assert_eq!(r.metadata.map(|m| m.templates), Some(meta.templates));
        assert_eq!(
            r.templates,
            [(
                "hostname.tpl".to_string(),
                b"{{ container.name }}\n".to_vec()
            )]
        );
        assert!(!tmp.path().join("image/rootfs/templates").exists());
        // Only direct children of templates/ are templates.
        let (_, r) = try_unpack(&tarball(&[META, ("templates/a/b.tpl", File_, "x")]));
        assert!(
            r.is_ok(),
            "nested entries are not templates and are ignored"
        );
        Ok(())
    }

    #[test]
    fn round_trips_a_written_tree() -> TestResult {
        let src = tempfile::tempdir()?;
        fs::create_dir_all(src.path().join("etc/empty"))?;
        fs::write(src.path().join("etc/a"), "a")?;
        std::os::unix::fs::symlink("a", src.path().join("etc/link"))?;
        fs::hard_link(src.path().join("etc/a"), src.path().join("hard"))?;
        // Names past the 100 bytes of a ustar header (GNU long name and long link entries).
        let deep = src.path().join("d".repeat(90)).join("e".repeat(90));
        fs::create_dir_all(&deep)?;
        fs::write(deep.join("f".repeat(120)), "long")?;
        std::os::unix::fs::symlink("t".repeat(150), deep.join("long-link"))?;
        fs::hard_link(deep.join("f".repeat(120)), deep.join("g".repeat(120)))?;
        let meta = ImageMetadata {
            architecture: "x86_64".into(),
            creation_date: 1_700_000_000,
            properties: Default::default(),
            ..ImageMetadata::default()
        };
        let (bytes, _) = write_unified(Vec::new(), &meta, &Tree::dir(src.path()))?;
        let (tmp, r) = try_unpack(&bytes);
        assert_eq!(r?.metadata, Some(meta.clone()));
        let rootfs = tmp.path().join("image/rootfs");
        assert_eq!(listing(&rootfs), listing(src.path()));
        // And writing the unpacked tree again gives the same bytes.
        let (again, _) = write_unified(Vec::new(), &meta, &Tree::dir(&rootfs))?;
        assert!(again == bytes, "unpack → write is not the identity");
        Ok(())
    }

    /// Apparent and allocated bytes of the file at `path`.
    fn sizes(path: &Path) -> Result<(u64, u64), std::io::Error> {
        let md = fs::metadata(path)?;
        Ok((md.len(), md.blocks() * 512))
    }

    fn read_at(path: &Path, at: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        let mut buf = vec![0; len];
        File::open(path)?.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }

    use super::fixtures::{gnu_sparse, pax_sparse, unified};

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn a_gnu_sparse_file_stays_sparse() -> TestResult {
        let data = [b'x'; 4096];
        let bytes = unified(&[gnu_sparse("rootfs/big", GIB, &[(512 * MIB, &data)])]);
        assert!(bytes.len() < 10_000, "the tarball is {} bytes", bytes.len());
        let (tmp, r) = try_unpack(&bytes);
        let r = r?;
        let big = tmp.path().join("image/rootfs/big");
        let (apparent, allocated) = sizes(&big)?;
        eprintln!(
            "tarball {} bytes; unpacked: apparent {apparent} bytes, allocated {allocated} bytes",
            bytes.len()
        );
        assert_eq!(apparent, GIB);
        assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
        assert_eq!(r.size, GIB as i64, "the image size counts apparent bytes");
        assert_eq!(read_at(&big, 512 * MIB, 4096)?, data);
        assert_eq!(read_at(&big, 512 * MIB - 4096, 4096)?, [0; 4096]);
        assert_eq!(read_at(&big, GIB - 4096, 4096)?, [0; 4096]);
        Ok(())
    }

    #[test]
    fn long_sparse_maps_and_zero_data_blocks_stay_holes() -> TestResult {
        // 30 blocks: the map spills into two extension headers. Every third block is
        // zeros stored in the tarball: written as a hole too.
        let mut blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        for i in 0..30u64 {
            let fill = if i % 3 == 0 { 0 } else { b'a' + (i % 26) as u8 };
            blocks.push((i * 64 * MIB, vec![fill; 8192]));
        }
        let refs: Vec<(u64, &[u8])> = blocks.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        let (tmp, r) = try_unpack(&unified(&[gnu_sparse("rootfs/d/map", 2 * GIB, &refs)]));
        r?;
        let path = tmp.path().join("image/rootfs/d/map");
        let (apparent, allocated) = sizes(&path)?;
        assert_eq!(apparent, 2 * GIB);
        // 20 data blocks of 8 KiB; the zero ones are holes.
        assert!(
            allocated <= 20 * 8192 + 64 * 1024,
            "{allocated} bytes allocated"
        );
        for (off, data) in &blocks {
            assert_eq!(&read_at(&path, *off, data.len())?, data, "at {off}");
        }
        Ok(())
    }

    #[test]
    fn runs_of_zeros_in_a_dense_file_become_holes() -> TestResult {
        let mut content = vec![0u8; 4 * MIB as usize];
        content[..3].copy_from_slice(b"top");
        content.extend_from_slice(b"end");
        let (tmp, r) = try_unpack(&unified(&[super::fixtures::file("rootfs/dense", &content)]));
        r?;
        let path = tmp.path().join("image/rootfs/dense");
        let (apparent, allocated) = sizes(&path)?;
        assert_eq!(apparent, content.len() as u64);
        assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
        assert!(fs::read(&path)? == content);
        Ok(())
    }

    /// Unpack `bytes` into a fresh `<tmp>/image/rootfs` with `limits`.
    fn unpack_limited(
        bytes: &[u8],
        limits: Limits,
    ) -> (tempfile::TempDir, Result<Unpacked, ImageError>) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let _ = fs::create_dir_all(tmp.path().join("image"));
        let rootfs = tmp.path().join("image/rootfs");
        let r = unpack(bytes, Layout::Unified, Some(&rootfs), &limits);
        (tmp, r)
    }

    #[test]
    fn files_over_the_limits_are_refused_before_they_are_written() -> TestResult {
        let small = Limits {
            max_entry: MIB,
            max_total: 2 * MIB,
        };
        let x = [b'x'; 512];
        // One file over the per-file cap (its declared size, the data is 512 bytes).
        let (tmp, r) = unpack_limited(
            &unified(&[gnu_sparse("rootfs/big", GIB, &[(0, &x)])]),
            small,
        );
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("\"rootfs/big\" is 1073741824 bytes, over the 1 MiB one file may have"),
            "{err}"
        );
        assert!(!tmp.path().join("image/rootfs/big").exists());
        // Files within the per-file cap whose sum is over the image's.
        let (tmp, r) = unpack_limited(
            &unified(&[
                gnu_sparse("rootfs/a", MIB, &[(0, &x)]),
                gnu_sparse("rootfs/b", MIB, &[(0, &x)]),
                gnu_sparse("rootfs/c", 1, &[(0, b"c")]),
            ]),
            small,
        );
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("the image unpacks to more than 2 MiB (at \"rootfs/c\""),
            "{err}"
        );
        let rootfs = tmp.path().join("image/rootfs");
        assert!(rootfs.join("b").exists() && !rootfs.join("c").exists());
        // Exactly at the caps is fine.
        let (_, r) = unpack_limited(
            &unified(&[
                gnu_sparse("rootfs/a", MIB, &[(0, &x)]),
                gnu_sparse("rootfs/b", MIB, &[(0, &x)]),
            ]),
            small,
        );
        assert_eq!(r?.size, 2 * MIB as i64);
        // Dense files count the same way.
        let (_, r) = unpack_limited(
            &unified(&[super::fixtures::file("rootfs/a", &[b'a'; 4096])]),
            Limits {
                max_entry: 4095,
                max_total: GIB,
            },
        );
        assert!(
            r.err()
                .is_some_and(|e| e.to_string().contains("4095 bytes"))
        );
        Ok(())
    }

    #[test]
    fn the_default_limits() {
        assert_eq!(
            Limits::default(),
            Limits {
                max_entry: 16 * GIB,
                max_total: 64 * GIB
            }
        );
        assert_eq!(Limits::with_max_total(4 * GIB).max_entry, 4 * GIB);
        assert_eq!(Limits::with_max_total(100 * GIB).max_entry, 16 * GIB);
    }

    /// GNU tar's own sparse archives, when `tar` is installed: the GNU format unpacks
    /// sparsely, the PAX one (`--format=posix`) is refused.
    #[test]
    fn sparse_files_from_gnu_tar() -> TestResult {
        let tar_ok = std::process::Command::new("tar")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"tar (GNU tar)"));
        if !tar_ok {
            assert!(
                std::env::var_os("CTL_REQUIRE_ALL").is_none(),
                "GNU tar missing and CTL_REQUIRE_ALL forbids skipping"
            );
            eprintln!("SKIP: GNU tar not installed");
            return Ok(());
        }
        let src = tempfile::tempdir()?;
        fs::create_dir(src.path().join("rootfs"))?;
        fs::write(src.path().join("metadata.yaml"), super::fixtures::METADATA)?;
        let big = File::create(src.path().join("rootfs/big"))?;
        big.set_len(GIB)?;
        big.write_all_at(b"data", 100 * MIB)?;
        drop(big);
        for (format, sparse) in [("gnu", true), ("posix", false)] {
            let out = src.path().join(format!("{format}.tar"));
            let st = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .args(["--sparse", "-cf"])
                .arg(&out)
                .arg("-C")
                .arg(src.path())
                .args(["metadata.yaml", "rootfs"])
                .status()?;
            assert!(st.success(), "tar --format={format}");
            let bytes = fs::read(&out)?;
            let (tmp, r) = try_unpack(&bytes);
            if sparse {
                r?;
                let (apparent, allocated) = sizes(&tmp.path().join("image/rootfs/big"))?;
                eprintln!(
                    "GNU tar -S: tarball {} bytes; apparent {apparent}, allocated {allocated}",
                    bytes.len()
                );
                assert_eq!(apparent, GIB);
                assert!(allocated <= 64 * 1024, "{allocated} bytes allocated");
                assert_eq!(
                    read_at(&tmp.path().join("image/rootfs/big"), 100 * MIB, 4)?,
                    b"data"
                );
            } else {
                let err = r.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(err.contains("a PAX sparse file"), "{err}");
            }
        }
        Ok(())
    }

    #[test]
    fn pax_sparse_files_are_refused() {
        let (tmp, r) = try_unpack(&unified(&[pax_sparse("rootfs/big", GIB)]));
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("a PAX sparse file"), "{err}");
        assert!(listing(&tmp.path().join("image/rootfs")).is_empty());
    }
}

/// Properties of the unpacker over hostile archives: whatever the entries (climbing paths,
/// symlinks out of the tree, links through them, absolute names), nothing is ever written
/// outside the directory unpacked into, and nothing panics.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Kind {
        File,
        Dir,
        Symlink(String),
        Hardlink(String),
    }

    /// A raw header: the tar crate refuses to write the hostile names these need.
    fn header(path: &str, kind: &Kind, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        let (ty, link) = match kind {
            Kind::File => (tar::EntryType::Regular, ""),
            Kind::Dir => (tar::EntryType::Directory, ""),
            Kind::Symlink(t) => (tar::EntryType::Symlink, t.as_str()),
            Kind::Hardlink(t) => (tar::EntryType::Link, t.as_str()),
        };
        {
            let old = h.as_old_mut();
            let n = path.len().min(old.name.len());
            old.name[..n].copy_from_slice(&path.as_bytes()[..n]);
            let l = link.len().min(old.linkname.len());
            old.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
        }
        h.set_entry_type(ty);
        h.set_mode(0o755);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "..", ".", "", "rootfs", "out"])
    }

    /// Paths and link targets; `@` stands for the absolute path of the bait directory.
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 1..5).prop_map(|p| p.join("/"))
    }

    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            path(),
            Just("@".to_string()),
            prop::collection::vec(piece(), 0..3).prop_map(|p| format!("@/{}", p.join("/"))),
            Just("/".to_string()),
        ]
    }

    fn entry() -> impl Strategy<Value = (String, Kind)> {
        let kind = prop_oneof![
            Just(Kind::File),
            Just(Kind::Dir),
            target().prop_map(Kind::Symlink),
            target().prop_map(Kind::Hardlink),
        ];
        (
            prop_oneof![path(), path().prop_map(|p| format!("rootfs/{p}"))],
            kind,
        )
    }

    fn everything_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
                out.push(e.path());
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn hostile_archives_never_write_outside_the_tree(
            entries in prop::collection::vec(entry(), 1..10),
            layout in prop::sample::select(vec![Layout::Unified, Layout::Rootfs]),
        ) {
            let sandbox = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bait = sandbox.path().join("bait");
            fs::create_dir(&bait).map_err(|e| TestCaseError::fail(e.to_string()))?;
            fs::write(bait.join("keep"), b"bait").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bait_abs = bait.display().to_string();
            let mut tar = Vec::new();
            for (path, kind) in &entries {
                let kind = match kind {
                    Kind::Symlink(t) => Kind::Symlink(t.replace('@', &bait_abs)),
                    Kind::Hardlink(t) => Kind::Hardlink(t.replace('@', &bait_abs)),
                    k => k.clone(),
                };
                let data: &[u8] = if matches!(kind, Kind::File) { b"payload" } else { b"" };
                tar.extend_from_slice(&header(path, &kind, data.len() as u64));
                tar.extend_from_slice(data);
                tar.resize(tar.len().div_ceil(512) * 512, 0);
            }
            tar.extend_from_slice(&[0u8; 1024]);
            let rootfs = sandbox.path().join("rootfs");
            let _ = unpack(&tar[..], layout, Some(&rootfs), &Limits::default());
            // The bait is as it was; the sandbox holds only the bait and the tree.
            let bait_now = everything_under(&bait);
            prop_assert_eq!(bait_now, vec![bait.join("keep")]);
            prop_assert_eq!(fs::read(bait.join("keep")).ok(), Some(b"bait".to_vec()));
            let top: Vec<_> = fs::read_dir(sandbox.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            prop_assert!(top.iter().all(|n| n == "bait" || n == "rootfs"), "{top:?}");
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_read_without_panicking(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            let _ = unpack(&bytes[..], Layout::Unified, None, &Limits::default());
        }
    }
}
