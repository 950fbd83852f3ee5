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
//! What is refused (the whole image fails, and the caller removes what was unpacked):
//! absolute paths, `..` components, an entry whose parent is a symlink or not a directory,
//! a hard link whose target is absolute, has `..`, lies outside the rootfs, goes through a
//! symlink or does not exist yet, a non-directory replacing a directory, a truncated or
//! corrupt archive (also one that ends without its end-of-archive blocks, or whose
//! compressed stream fails its checksum), and a `metadata.yaml` over 1 MiB.
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

/// What unpacking found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub metadata: Option<ImageMetadata>,
    /// Bytes of regular files written.
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

/// The components of an archive path, without empty and `.` ones. Absolute paths and `..`
/// are refused.
pub fn components(path: &[u8]) -> Result<Vec<&OsStr>, ImageError> {
    if path.starts_with(b"/") {
        return Err(refused(path, "absolute path"));
    }
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
/// without, they are only read.
pub fn unpack_file(
    file: &Path,
    layout: Layout,
    rootfs: Option<&Path>,
) -> Result<(Compression, Unpacked), ImageError> {
    let compression = Compression::detect_file(file)?;
    let f = File::open(file).map_err(|source| ImageError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let reader = compression
        .decoder(io::BufReader::with_capacity(256 * 1024, f))
        .map_err(corrupt)?;
    Ok((compression, unpack(reader, layout, rootfs)?))
}

/// Unpack the (decompressed) tarball `reader`; see [`unpack_file`].
pub fn unpack<R: Read>(
    reader: R,
    layout: Layout,
    rootfs: Option<&Path>,
) -> Result<Unpacked, ImageError> {
    let mut root = match rootfs {
        Some(dir) => Some(Root::create(dir)?),
        None => None,
    };
    let mut out = Unpacked::default();
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
            match root.entry(&raw, &target, &mut entry, layout)? {
                Done::Written(bytes) => out.size += bytes,
                Done::Dir(mtime) => dir_times.push((target, mtime)),
                Done::Skipped => {
                    tracing::debug!(entry = %String::from_utf8_lossy(&raw), ?kind, "skipped");
                    out.skipped.push(String::from_utf8_lossy(&raw).into_owned());
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

/// What one entry became.
enum Done {
    /// A file of that many bytes, a link, a FIFO.
    Written(i64),
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
        layout: Layout,
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
                let mut file = File::from(fd);
                let written = io::copy(entry, &mut file).map_err(corrupt)?;
                if kind != tar::EntryType::GNUSparse && written != entry.size() {
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
                Ok(Done::Written(i64::try_from(written).unwrap_or(i64::MAX)))
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
                let tcomps: &[&OsStr] = match (layout, tcomps.as_slice()) {
                    (Layout::Unified, [first, rest @ ..]) if *first == "rootfs" => rest,
                    (Layout::Rootfs, all) => all,
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
        let r = unpack(bytes, Layout::Unified, Some(&rootfs));
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
    fn absolute_paths_are_refused() {
        assert_refused(&[META, ("/etc/evil", File_, "x")], "absolute path");
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
            let r = unpack(c.decoder(cut)?, Layout::Unified, None);
            assert!(r.is_err(), "{c:?} cut");
            let mut flipped = packed.clone();
            let at = packed.len() / 2;
            flipped[at] ^= 0x55;
            let r = c
                .decoder(flipped.as_slice())
                .map_err(|e| ImageError::Invalid(e.to_string()))
                .and_then(|d| unpack(d, Layout::Unified, None));
            assert!(r.is_err(), "{c:?} flipped");
            let r = unpack(c.decoder(packed.as_slice())?, Layout::Unified, None)?;
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
}
