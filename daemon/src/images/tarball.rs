//! Image tarballs in the Incus format: a *unified* tarball holds `metadata.yaml` at the top
//! and the root filesystem under `rootfs/`; a *split* image is a metadata tarball plus a
//! rootfs tarball whose tree starts at the top. Either may be compressed with gzip, xz or
//! zstd, or not at all.
//!
//! This module owns the format: compression detection from magic bytes and the matching
//! decoders and encoders, `metadata.yaml` ([`ImageMetadata`]), and the *deterministic* writer
//! that turns a tree into a unified tarball ([`write_unified`]). The tree is a list of layers
//! ([`Tree`]): one directory for an image's rootfs, or a container's overlay upper directory
//! over its image's rootfs, merged the way overlayfs shows them (whiteouts delete, opaque
//! directories hide what is below).
//!
//! Determinism: the same tree and metadata always give the same bytes. Entries are written
//! depth first in byte order of their names, as GNU headers with numeric owners only (no user
//! or group names), the mode, owner and group from the filesystem, and every mtime clamped to
//! `creation_date` (a file newer than the image gets the image's date, as with
//! `SOURCE_DATE_EPOCH`). Hard links within the tree stay hard links. The encoders add no
//! timestamp or file name (gzip's mtime is 0), and run single-threaded. Device nodes,
//! sockets and extended attributes are not written.
//!
//! ## Fingerprints
//!
//! An image's fingerprint is the sha256 of its image file(s), as in Incus: of the uploaded
//! file for an imported unified tarball, of the metadata file followed by the rootfs file for
//! a split one. An image the daemon makes itself (the built-in `busybox`, `publish`) is
//! written as a deterministic gzip unified tarball, and its fingerprint is that file's sha256.
//! Either way the file is stored next to the unpacked rootfs (`images/<fp>/image.tar.gz`, or
//! `metadata.*` and `rootfs.*`), and export sends it back byte for byte, so export → import
//! keeps the fingerprint.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use super::busybox::hex;

/// The compression of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A bare tar.
    Plain,
    Gzip,
    Xz,
    Zstd,
}

/// Compression levels: the tools' defaults.
const GZIP_LEVEL: u32 = 6;
const XZ_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// What images are written with unless asked otherwise (as Incus does).
    pub const DEFAULT: Compression = Compression::Gzip;

    /// A compression by its name in `?compression=` (`gzip`, `xz`, `zstd`, `none`).
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "gzip" | "gz" => Some(Compression::Gzip),
            "xz" => Some(Compression::Xz),
            "zstd" | "zst" => Some(Compression::Zstd),
            "none" | "tar" => Some(Compression::Plain),
            _ => None,
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Plain => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// The file extension of a tarball with this compression.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Plain => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Xz => "tar.xz",
            Compression::Zstd => "tar.zst",
        }
    }

    /// The compression of a file starting with `head` (its first 512 bytes or more): from the
    /// magic bytes of gzip, xz and zstd, or a tar header's `ustar` magic. Formats we cannot
    /// read are refused with a message naming them.
    pub fn detect(head: &[u8]) -> Result<Compression, ImageError> {
        let refuse = |what: &str| Err(ImageError::Invalid(what.to_string()));
        if head.is_empty() {
            return refuse("the image file is empty");
        }
        if head.starts_with(&[0x1f, 0x8b]) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            return Ok(Compression::Xz);
        }
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Ok(Compression::Zstd);
        }
        if head.starts_with(b"BZh") {
            return refuse("bzip2 images are not supported (use gzip, xz or zstd)");
        }
        if head.starts_with(b"hsqs") {
            return refuse("squashfs images are not supported (use a tarball)");
        }
        if head.get(257..262) == Some(b"ustar".as_slice()) {
            return Ok(Compression::Plain);
        }
        refuse("the image file is not a tarball (tar, gzip, xz or zstd)")
    }

    /// [`Compression::detect`] on the start of the file at `path`.
    pub fn detect_file(path: &Path) -> Result<Compression, ImageError> {
        let mut head = Vec::with_capacity(512);
        File::open(path)
            .and_then(|f| f.take(512).read_to_end(&mut head))
            .map_err(|source| ImageError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Compression::detect(&head)
    }

    /// A reader of the decompressed bytes of `r`. Concatenated gzip members, xz streams and
    /// zstd frames are read as one, as the tools do.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::Plain => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }

    /// A writer compressing into `w`; call [`Encoder::finish`] at the end.
    pub fn encoder<W: Write>(self, w: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::Plain => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::new(GZIP_LEVEL)),
            ),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(w, XZ_LEVEL)),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                // A content checksum, so tampering is caught on import as with gzip and xz.
                e.include_checksum(true)?;
                Encoder::Zstd(e)
            }
        })
    }
}

/// A compressing writer (see [`Compression::encoder`]).
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(liblzma::write::XzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Write the end of the compressed stream and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Hash what is written to `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the lowercase hex sha256 and the byte count of what was written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `metadata.yaml`: what an image is, and its templates (see [`super::templates`]). Other
/// keys (`expiry_date`...) are read and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetadata {
    #[serde(default)]
    pub architecture: String,
    /// Unix seconds.
    #[serde(default)]
    pub creation_date: i64,
    #[serde(default, deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
    /// Files rendered into a new instance (`/etc/hostname` → `hostname.tpl`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, super::templates::TemplateEntry>,
}

/// Property values as text, whatever YAML scalar they were written as.
fn string_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde_yaml_ng::Value;
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => serde_yaml_ng::to_string(&other)
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
            };
            (k, text)
        })
        .collect())
}

/// The largest `metadata.yaml` read (it is held in memory).
pub const MAX_METADATA: u64 = 1 << 20;

impl ImageMetadata {
    /// Parse `metadata.yaml`; the architecture is normalized to the kernel's name.
    pub fn parse(text: &[u8]) -> Result<ImageMetadata, ImageError> {
        let mut meta: ImageMetadata = serde_yaml_ng::from_slice(text)
            .map_err(|e| ImageError::Invalid(format!("metadata.yaml: {e}")))?;
        if meta.architecture.is_empty() {
            return Err(ImageError::Invalid("metadata.yaml: no architecture".into()));
        }
        meta.architecture = normalize_architecture(&meta.architecture).to_string();
        Ok(meta)
    }

    /// The YAML text (keys in a fixed order, properties sorted).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }
}

/// An architecture in the kernel's naming (Incus metadata may use Debian's).
pub fn normalize_architecture(arch: &str) -> &str {
    match arch {
        "amd64" | "x86_64" => "x86_64",
        "arm64" | "aarch64" => "aarch64",
        "i386" | "i686" => "i686",
        "armhf" | "armv7l" => "armv7l",
        "ppc64el" | "ppc64le" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

/// One layer of a [`Tree`]: a directory on the host.
#[derive(Debug, Clone)]
pub struct Layer {
    pub dir: PathBuf,
    /// An overlay upper directory: its whiteouts (character devices 0/0) delete what is
    /// below, and its directories marked `trusted.overlay.opaque=y` hide what is below.
    pub overlay_upper: bool,
}

/// A tree to write, as layers top first: one directory, or an overlay's upper over its lower.
#[derive(Debug, Clone)]
pub struct Tree {
    layers: Vec<Layer>,
    /// A directory whose files are written as `templates/<name>` after the rootfs.
    templates: Option<PathBuf>,
    /// The id map the upper layer's owners are in (an unprivileged container's files):
    /// written back as the container's own ids, so an image never carries host ids.
    upper_ids: Option<crate::worker::spec::IdMap>,
}

impl Tree {
    /// The tree of one directory.
    pub fn dir(dir: impl Into<PathBuf>) -> Tree {
        Tree {
            layers: vec![Layer {
                dir: dir.into(),
                overlay_upper: false,
            }],
            templates: None,
            upper_ids: None,
        }
    }

    /// What an overlay mount of `upper` over `lower` shows.
    pub fn overlay(upper: impl Into<PathBuf>, lower: impl Into<PathBuf>) -> Tree {
        Tree {
            layers: vec![
                Layer {
                    dir: upper.into(),
                    overlay_upper: true,
                },
                Layer {
                    dir: lower.into(),
                    overlay_upper: false,
                },
            ],
            templates: None,
            upper_ids: None,
        }
    }

    /// The upper layer's owners are host ids under `map` (`None`: written as they are).
    pub fn with_upper_ids(mut self, map: Option<crate::worker::spec::IdMap>) -> Tree {
        self.upper_ids = map;
        self
    }

    /// Also write the regular files of `dir` as the image's `templates/`.
    pub fn with_templates(mut self, dir: impl Into<PathBuf>) -> Tree {
        self.templates = Some(dir.into());
        self
    }
}

/// An entry of the merged view.
enum Node {
    /// A directory and its counterparts in the layers below that show through, top first;
    /// the first gives the directory's metadata.
    Dir {
        parts: Vec<(usize, PathBuf)>,
        /// No lower layer shows through any more (an opaque directory, or a non-directory
        /// of that name below).
        sealed: bool,
    },
    /// Anything else, from the topmost layer that has it.
    Other(PathBuf),
    /// Deleted by a whiteout.
    Deleted,
}

const XATTR_OPAQUE: &str = "trusted.overlay.opaque";
const XATTR_REDIRECT: &str = "trusted.overlay.redirect";
const XATTR_METACOPY: &str = "trusted.overlay.metacopy";

/// The value of extended attribute `name` of `path` itself (not a symlink's target), if set.
fn xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let mut buf = [0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n.min(buf.len())].to_vec())),
        Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::NOTSUP => Ok(None),
        Err(e) => Err(ImageError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Tree {
    /// Refuse overlay features whose upper entries do not stand on their own.
    fn check_upper(path: &Path, md: &Metadata) -> Result<(), ImageError> {
        let attr = if md.is_dir() {
            XATTR_REDIRECT
        } else if md.is_file() {
            XATTR_METACOPY
        } else {
            return Ok(());
        };
        if xattr(path, attr)?.is_some() {
            return Err(ImageError::Build(format!(
                "{}: overlay {attr} is not supported",
                path.display()
            )));
        }
        Ok(())
    }

    fn opaque(&self, layer: usize, path: &Path) -> Result<bool, ImageError> {
        Ok(self.layers[layer].overlay_upper
            && xattr(path, XATTR_OPAQUE)?.is_some_and(|v| v.as_slice() == b"y"))
    }

    /// The root of the merged view.
    fn root(&self) -> Result<Node, ImageError> {
        let mut parts = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let md = fs::symlink_metadata(&layer.dir).map_err(io_at(&layer.dir))?;
            if !md.is_dir() {
                return Err(ImageError::Build(format!(
                    "{} is not a directory",
                    layer.dir.display()
                )));
            }
            parts.push((i, layer.dir.clone()));
            if self.opaque(i, &layer.dir)? {
                break;
            }
        }
        Ok(Node::Dir {
            parts,
            sealed: true,
        })
    }

    /// The entries of a merged directory, by name (byte order).
    fn children(&self, parts: &[(usize, PathBuf)]) -> Result<BTreeMap<OsString, Node>, ImageError> {
        let mut seen: BTreeMap<OsString, Node> = BTreeMap::new();
        for (layer, dir) in parts {
            let upper = self.layers[*layer].overlay_upper;
            for entry in fs::read_dir(dir).map_err(io_at(dir))? {
                let entry = entry.map_err(io_at(dir))?;
                let name = entry.file_name();
                let path = entry.path();
                let md = fs::symlink_metadata(&path).map_err(io_at(&path))?;
                match seen.get_mut(&name) {
                    None => {
                        let node = if upper && is_whiteout(&md) {
                            Node::Deleted
                        } else {
                            if upper {
                                Self::check_upper(&path, &md)?;
                            }
                            if md.is_dir() {
                                let sealed = self.opaque(*layer, &path)?;
                                Node::Dir {
                                    parts: vec![(*layer, path)],
                                    sealed,
                                }
                            } else {
                                Node::Other(path)
                            }
                        };
                        seen.insert(name, node);
                    }
                    Some(Node::Dir {
                        parts: below,
                        sealed,
                    }) if !*sealed => {
                        if md.is_dir() && !(upper && is_whiteout(&md)) {
                            *sealed = self.opaque(*layer, &path)?;
                            below.push((*layer, path));
                        } else {
                            *sealed = true;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(seen)
    }
}

/// A reader of exactly `len` bytes of a file: a file that shrank while being read is an error
/// rather than a corrupt archive.
struct Exact<R> {
    inner: io::Take<R>,
    path: PathBuf,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.inner.limit() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being read", self.path.display()),
            ));
        }
        Ok(n)
    }
}

/// Clamp an mtime to the image's creation date (negative times become 0).
fn clamp_mtime(mtime: i64, clamp: u64) -> u64 {
    u64::try_from(mtime).unwrap_or(0).min(clamp)
}

struct TreeWriter<'t, 'b, W: Write> {
    tree: &'t Tree,
    builder: &'b mut tar::Builder<W>,
    clamp: u64,
    /// First archive path of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    size: i64,
}

impl<W: Write> TreeWriter<'_, '_, W> {
    fn header(&self, kind: tar::EntryType, md: &Metadata, path: &Path) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(md.mode() & 0o7777);
        let (uid, gid) = self.owner(md, path);
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(clamp_mtime(md.mtime(), self.clamp));
        h.set_size(0);
        h
    }

    /// The owner written for `path`: an upper-layer entry's host ids shifted back into the
    /// container's (the overflow id 65534 for one the map does not hold).
    fn owner(&self, md: &Metadata, path: &Path) -> (u32, u32) {
        use crate::worker::spec::to_inside;
        match (&self.tree.upper_ids, self.tree.layers.first()) {
            (Some(m), Some(top)) if top.overlay_upper && path.starts_with(&top.dir) => (
                to_inside(&m.uids, md.uid()).unwrap_or(65534),
                to_inside(&m.gids, md.gid()).unwrap_or(65534),
            ),
            _ => (md.uid(), md.gid()),
        }
    }

    fn tar_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
        move |e| ImageError::Build(format!("writing {} to the tarball: {e}", path.display()))
    }

    /// Write directory `node` as `archive` and everything below it.
    fn dir(&mut self, archive: &Path, parts: &[(usize, PathBuf)]) -> Result<(), ImageError> {
        let Some((_, top)) = parts.first() else {
            return Ok(());
        };
        let md = fs::symlink_metadata(top).map_err(io_at(top))?;
        let mut h = self.header(tar::EntryType::Directory, &md, top);
        self.builder
            .append_data(&mut h, archive, io::empty())
            .map_err(Self::tar_err(top))?;
        for (name, node) in self.tree.children(parts)? {
            let archive = archive.join(&name);
            match node {
                Node::Deleted => {}
                Node::Dir { parts, .. } => self.dir(&archive, &parts)?,
                Node::Other(path) => self.other(&archive, &path)?,
            }
        }
        Ok(())
    }

    /// Write a non-directory.
    fn other(&mut self, archive: &Path, path: &Path) -> Result<(), ImageError> {
        let md = fs::symlink_metadata(path).map_err(io_at(path))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_at(path))?;
            let mut h = self.header(tar::EntryType::Symlink, &md, path);
            return self
                .builder
                .append_link(&mut h, archive, &target)
                .map_err(Self::tar_err(path));
        }
        if ft.is_fifo() {
            let mut h = self.header(tar::EntryType::Fifo, &md, path);
            return self
                .builder
                .append_data(&mut h, archive, io::empty())
                .map_err(Self::tar_err(path));
        }
        if !ft.is_file() {
            tracing::debug!(path = %path.display(), "not in the image: device node or socket");
            return Ok(());
        }
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                let mut h = self.header(tar::EntryType::Link, &md, path);
                return self
                    .builder
                    .append_link(&mut h, archive, &first)
                    .map_err(Self::tar_err(path));
            }
            self.links.insert(key, archive.to_path_buf());
        }
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_at(path))?;
        let mut h = self.header(tar::EntryType::Regular, &md, path);
        h.set_size(md.len());
        let data = Exact {
            inner: file.take(md.len()),
            path: path.to_path_buf(),
        };
        self.builder
            .append_data(&mut h, archive, data)
            .map_err(Self::tar_err(path))?;
        self.size += i64::try_from(md.len()).unwrap_or(i64::MAX);
        Ok(())
    }
}

/// Write `meta` and `tree` as a unified tarball (uncompressed) into `out`. Returns `out` and
/// the total size of the regular files.
pub fn write_unified<W: Write>(
    out: W,
    meta: &ImageMetadata,
    tree: &Tree,
) -> Result<(W, i64), ImageError> {
    let clamp = u64::try_from(meta.creation_date).unwrap_or(0);
    let mut builder = tar::Builder::new(out);
    let yaml = meta.to_yaml();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(clamp);
    h.set_size(yaml.len() as u64);
    builder
        .append_data(&mut h, "metadata.yaml", yaml.as_bytes())
        .map_err(|e| ImageError::Build(format!("writing metadata.yaml: {e}")))?;
    let size = append_tree(&mut builder, tree, Path::new("rootfs"), clamp)?;
    if let Some(dir) = &tree.templates {
        write_templates(&mut builder, dir, clamp)?;
    }
    let out = builder
        .into_inner()
        .map_err(|e| ImageError::Build(format!("finishing the tarball: {e}")))?;
    Ok((out, size))
}

/// Append the merged view of `tree` to `builder` under the archive directory `prefix`
/// (`rootfs`, `backup/container/rootfs`...), mtimes clamped to `clamp` (`u64::MAX`: kept).
/// Returns the total size of the regular files. Device nodes and sockets are left out.
pub fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    tree: &Tree,
    prefix: &Path,
    clamp: u64,
) -> Result<i64, ImageError> {
    let Node::Dir { parts, .. } = tree.root()? else {
        return Err(ImageError::Build("the tree has no root".into()));
    };
    let mut w = TreeWriter {
        tree,
        builder,
        clamp,
        links: HashMap::new(),
        size: 0,
    };
    w.dir(prefix, &parts)?;
    Ok(w.size)
}

/// Write the regular files of `dir` as `templates/<name>`, in byte order of their names,
/// root-owned, mode 0644, mtime `clamp`.
fn write_templates<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    clamp: u64,
) -> Result<(), ImageError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let e = e.map_err(io_at(dir))?;
        if e.file_type().map_err(io_at(dir))?.is_file() {
            names.push(e.file_name());
        }
    }
    names.sort();
    let header = |kind, mode, size| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(clamp);
        h.set_size(size);
        h
    };
    let tar_err = |e: io::Error| ImageError::Build(format!("writing templates: {e}"));
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    builder
        .append_data(&mut h, "templates/", io::empty())
        .map_err(tar_err)?;
    for name in names {
        let path = dir.join(&name);
        let data = std::fs::read(&path).map_err(io_at(&path))?;
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        builder
            .append_data(&mut h, Path::new("templates").join(&name), data.as_slice())
            .map_err(tar_err)?;
    }
    Ok(())
}

/// A tarball written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// sha256 of the file: the image's fingerprint.
    pub fingerprint: String,
    pub file: PathBuf,
    /// Bytes of regular files in the rootfs.
    pub size: i64,
}

/// The file name of a stored unified tarball.
pub fn image_file_name(compression: Compression) -> String {
    format!("image.{}", compression.extension())
}

/// Write `meta` and `tree` as a unified tarball compressed with `compression` into
/// `dir/image.<ext>`, hashing it on the way.
pub fn write_image_file(
    dir: &Path,
    meta: &ImageMetadata,
    tree: &Tree,
    compression: Compression,
) -> Result<WrittenImage, ImageError> {
    let path = dir.join(image_file_name(compression));
    let file = File::create(&path).map_err(io_at(&path))?;
    let hashing = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let encoder = compression.encoder(hashing).map_err(io_at(&path))?;
    let (encoder, size) = write_unified(encoder, meta, tree)?;
    let hashing = encoder.finish().map_err(io_at(&path))?;
    let (buffered, fingerprint, _) = hashing.finish();
    let file = buffered.into_inner().map_err(|e| ImageError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_at(&path))?;
    Ok(WrittenImage {
        fingerprint,
        file: path,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn meta() -> ImageMetadata {
        let mut properties = BTreeMap::new();
        properties.insert("os".to_string(), "Test".to_string());
        properties.insert("release".to_string(), "1".to_string());
        ImageMetadata {
            architecture: "x86_64".into(),
            creation_date: 1_700_000_000,
            properties,
            ..ImageMetadata::default()
        }
    }

    fn sample_tree(root: &Path) -> io::Result<()> {
        fs::create_dir_all(root.join("etc/sub"))?;
        fs::write(root.join("etc/os-release"), "ID=test\n")?;
        fs::write(root.join("etc/sub/b"), "b")?;
        fs::write(root.join("etc/sub/a"), "a")?;
        fs::set_permissions(root.join("etc/sub/a"), fs::Permissions::from_mode(0o4755))?;
        symlink("/etc/os-release", root.join("os-release"))?;
        fs::hard_link(root.join("etc/sub/b"), root.join("b-link"))?;
        Ok(())
    }

    fn entries(tar_bytes: &[u8]) -> Result<Vec<(String, tar::EntryType, u32, u64)>, io::Error> {
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(tar_bytes);
        for e in archive.entries()? {
            let e = e?;
            let h = e.header();
            out.push((
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                h.entry_type(),
                h.mode()?,
                h.mtime()?,
            ));
        }
        Ok(out)
    }

    #[test]
    fn detects_compression_from_magic_bytes() -> TestResult {
        let mut tar_head = vec![0u8; 512];
        tar_head[257..262].copy_from_slice(b"ustar");
        assert_eq!(Compression::detect(&tar_head)?, Compression::Plain);
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0])?, Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0])?,
            Compression::Xz
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0])?,
            Compression::Zstd
        );
        for (bad, says) in [
            (b"BZh91AY".as_slice(), "bzip2"),
            (b"hsqs....".as_slice(), "squashfs"),
            (b"hello world".as_slice(), "not a tarball"),
            (b"".as_slice(), "empty"),
        ] {
            let err = Compression::detect(bad).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains(says)), "{err:?}");
        }
        // Every encoder's output is detected as itself and decodes back.
        for c in [
            Compression::Plain,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let dir = tempfile::tempdir()?;
            sample_tree(dir.path())?;
            let mut enc = c.encoder(Vec::new())?;
            write_unified(&mut enc, &meta(), &Tree::dir(dir.path()))?;
            let bytes = enc.finish()?;
            assert_eq!(Compression::detect(&bytes)?, c, "{c:?}");
            let mut plain = Vec::new();
            c.decoder(bytes.as_slice())?.read_to_end(&mut plain)?;
            assert!(
                entries(&plain)?
                    .iter()
                    .any(|e| e.0 == "rootfs/etc/os-release")
            );
            assert_eq!(Compression::parse(c.name()), Some(c));
        }
        Ok(())
    }

    #[test]
    fn same_tree_gives_the_same_bytes() -> TestResult {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        sample_tree(a.path())?;
        // The same tree made in another order, at another time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::create_dir_all(b.path().join("etc/sub"))?;
        fs::write(b.path().join("etc/sub/a"), "a")?;
        fs::set_permissions(
            b.path().join("etc/sub/a"),
            fs::Permissions::from_mode(0o4755),
        )?;
        fs::write(b.path().join("etc/sub/b"), "b")?;
        fs::hard_link(b.path().join("etc/sub/b"), b.path().join("b-link"))?;
        symlink("/etc/os-release", b.path().join("os-release"))?;
        fs::write(b.path().join("etc/os-release"), "ID=test\n")?;
        for c in [Compression::Gzip, Compression::Xz, Compression::Zstd] {
            let out = tempfile::tempdir()?;
            let one = write_image_file(out.path(), &meta(), &Tree::dir(a.path()), c)?;
            let first = fs::read(&one.file)?;
            let two = write_image_file(out.path(), &meta(), &Tree::dir(a.path()), c)?;
            assert_eq!(fs::read(&two.file)?, first, "{c:?}: twice the same tree");
            assert_eq!(one.fingerprint, two.fingerprint);
            let three = write_image_file(out.path(), &meta(), &Tree::dir(b.path()), c)?;
            assert_eq!(
                three.fingerprint, one.fingerprint,
                "{c:?}: built differently"
            );
            assert_eq!(one.fingerprint, hex(&Sha256::digest(&first)));
            assert_eq!(one.size, 1 + 1 + 8);
        }
        // Content matters.
        fs::write(b.path().join("etc/sub/a"), "A")?;
        let out = tempfile::tempdir()?;
        let x = write_image_file(out.path(), &meta(), &Tree::dir(a.path()), Compression::Gzip)?;
        let y = write_image_file(out.path(), &meta(), &Tree::dir(b.path()), Compression::Gzip)?;
        assert_ne!(x.fingerprint, y.fingerprint);
        Ok(())
    }

    #[test]
    fn entries_are_sorted_clamped_and_linked() -> TestResult {
        let dir = tempfile::tempdir()?;
        sample_tree(dir.path())?;
        let (bytes, _) = write_unified(Vec::new(), &meta(), &Tree::dir(dir.path()))?;
        let list = entries(&bytes)?;
        let names: Vec<&str> = list.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "metadata.yaml",
                "rootfs",
                "rootfs/b-link",
                "rootfs/etc",
                "rootfs/etc/os-release",
                "rootfs/etc/sub",
                "rootfs/etc/sub/a",
                "rootfs/etc/sub/b",
                "rootfs/os-release",
            ]
        );
        assert!(list.iter().all(|e| e.3 <= 1_700_000_000));
        let kind = |n: &str| list.iter().find(|e| e.0 == n).map(|e| (e.1, e.2));
        assert_eq!(
            kind("rootfs/etc/sub/a"),
            Some((tar::EntryType::Regular, 0o4755))
        );
        assert_eq!(
            kind("rootfs/os-release").map(|k| k.0),
            Some(tar::EntryType::Symlink)
        );
        // The first sighting of the inode carries the data, the second links to it.
        assert_eq!(
            kind("rootfs/b-link").map(|k| k.0),
            Some(tar::EntryType::Regular)
        );
        assert_eq!(
            kind("rootfs/etc/sub/b").map(|k| k.0),
            Some(tar::EntryType::Link)
        );
        let meta_text = {
            let mut archive = tar::Archive::new(bytes.as_slice());
            let mut first = archive.entries()?.next().ok_or("no entries")??;
            let mut s = String::new();
            first.read_to_string(&mut s)?;
            s
        };
        assert_eq!(ImageMetadata::parse(meta_text.as_bytes())?, meta());
        Ok(())
    }

    #[test]
    fn overlay_layers_merge_as_the_kernel_shows_them() -> TestResult {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: whiteouts and trusted xattrs need root");
            assert!(std::env::var("CTL_REQUIRE_ALL").is_err(), "needs root");
            return Ok(());
        }
        let (upper, lower) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (u, l) = (upper.path(), lower.path());
        for d in ["a", "b", "c", "keep"] {
            fs::create_dir(l.join(d))?;
        }
        for f in ["a/x", "a/gone", "b/hidden", "c/w", "keep/k", "file"] {
            fs::write(l.join(f), "lower")?;
        }
        fs::create_dir(u.join("a"))?;
        fs::write(u.join("a/new"), "upper")?;
        fs::write(u.join("a/x"), "changed")?;
        // Whiteouts: a character device 0/0 deletes the lower entry (a file, a tree).
        for w in ["a/gone", "keep/k"] {
            if w.starts_with("keep") {
                fs::create_dir_all(u.join("keep"))?;
            }
            nix::sys::stat::mknod(
                &u.join(w),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0),
                0,
            )?;
        }
        // An opaque directory hides the lower one's contents.
        fs::create_dir(u.join("b"))?;
        fs::write(u.join("b/mine"), "upper")?;
        rustix::fs::lsetxattr(
            u.join("b"),
            XATTR_OPAQUE,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )?;
        // A file replacing a directory, and a new file.
        fs::write(u.join("c"), "now a file")?;
        fs::write(u.join("g"), "new")?;
        let (bytes, size) = write_unified(Vec::new(), &meta(), &Tree::overlay(u, l))?;
        let names: Vec<String> = entries(&bytes)?.into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "metadata.yaml",
                "rootfs",
                "rootfs/a",
                "rootfs/a/new",
                "rootfs/a/x",
                "rootfs/b",
                "rootfs/b/mine",
                "rootfs/c",
                "rootfs/file",
                "rootfs/g",
                "rootfs/keep",
            ]
        );
        let mut archive = tar::Archive::new(bytes.as_slice());
        for e in archive.entries()? {
            let mut e = e?;
            if e.path_bytes().as_ref() == b"rootfs/a/x" {
                let mut s = String::new();
                e.read_to_string(&mut s)?;
                assert_eq!(s, "changed");
            }
        }
        assert_eq!(size, 5 + 7 + 5 + 10 + 5 + 3);
        Ok(())
    }

    #[test]
    fn metadata_yaml_is_read_leniently() -> TestResult {
        let text = b"architecture: amd64\ncreation_date: 1600000000\nexpiry_date: 0\n\
properties:\n  os: Debian\n  release: 12\n  variant: default\n  serial: \"20240101\"\n\
templates:\n  /etc/hostname:\n    when: [create]\n    template: hostname.tpl\n";
        let m = ImageMetadata::parse(text)?;
        assert_eq!(m.architecture, "x86_64");
        assert_eq!(m.creation_date, 1_600_000_000);
        assert_eq!(m.properties.get("release").map(String::as_str), Some("12"));
        assert_eq!(
            m.properties.get("serial").map(String::as_str),
            Some("20240101")
        );
        let err = ImageMetadata::parse(b"properties: {}\n").err();
        assert!(err.is_some_and(|e| e.to_string().contains("architecture")));
        assert!(ImageMetadata::parse(b"[not, a, map]").is_err());
        Ok(())
    }
}
