//! Squashfs root filesystems (`rootfs.squashfs` of split images from image servers),
//! unpacked with `unsquashfs` (Debian `squashfs-tools`) into a new directory.
//!
//! `unsquashfs` (≥ 4.5.1, checked: older ones had path-traversal bugs) refuses entry names
//! with `/` or `..`, so nothing lands outside the destination, and it never follows symlinks
//! it made; the destination must not exist. Then the same rules as for tarballs
//! ([`super::unpack`]) are applied to what it made: no extended attributes (`-no-xattrs`),
//! no device nodes or sockets, and setuid/setgid only on files owned by root.
//!
//! Sizes are held to the same [`Limits`] as tarballs, before anything is written: the
//! listing `unsquashfs -lln` prints (one line per entry, size in the third column) is summed
//! first, and the unpacked tree is summed again after. `unsquashfs` writes sparse files
//! sparsely itself. A name with a newline can only add lines to the listing, so the sum read
//! from it is never below the real one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ImageError;
use super::unpack::Limits;

/// The first bytes of a squashfs image (little-endian `hsqs`).
pub const MAGIC: &[u8; 4] = b"hsqs";

/// Whether the file at `path` is a squashfs image.
pub fn is_squashfs(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == MAGIC
}

/// The `unsquashfs` binary on `PATH`, if installed.
pub fn unsquashfs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("unsquashfs"))
        .find(|p| p.is_file())
}

/// Unpack `image` into `dest` (which must not exist), refusing one over `limits`; returns
/// the bytes of regular files (their apparent sizes).
pub fn unpack(image: &Path, dest: &Path, limits: &Limits) -> Result<i64, ImageError> {
    let bin = unsquashfs().ok_or_else(|| {
        ImageError::Invalid("a squashfs rootfs needs unsquashfs (squashfs-tools)".into())
    })?;
    if dest.exists() {
        return Err(ImageError::Build(format!("{} exists", dest.display())));
    }
    check_version(&bin)?;
    check_listing(&bin, image, limits)?;
    let out = Command::new(bin)
        .arg("-no-progress")
        .arg("-no-xattrs")
        .arg("-d")
        .arg(dest)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ImageError::Io {
            path: image.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(dest);
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(ImageError::Invalid(format!(
            "corrupt squashfs rootfs: {}",
            msg.lines().last().unwrap_or("unsquashfs failed").trim()
        )));
    }
    if let Err(e) = sanitize(dest) {
        let _ = std::fs::remove_dir_all(dest);
        return Err(e);
    }
    let size = regular_bytes(dest);
    if let Err(e) = limits.check_total(u64::try_from(size).unwrap_or(u64::MAX)) {
        let _ = std::fs::remove_dir_all(dest);
        return Err(e);
    }
    Ok(size)
}

/// Hold the regular files `unsquashfs -lln` lists for `image` to `limits`.
fn check_listing(bin: &Path, image: &Path, limits: &Limits) -> Result<(), ImageError> {
    let out = Command::new(bin)
        .arg("-lln")
        .arg(image)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| ImageError::Io {
            path: image.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(ImageError::Invalid(format!(
            "corrupt squashfs rootfs: {}",
            msg.lines()
                .last()
                .unwrap_or("unsquashfs -lln failed")
                .trim()
        )));
    }
    let mut total = 0u64;
    for (name, size) in listed_files(&String::from_utf8_lossy(&out.stdout)) {
        limits.check(name.as_bytes(), size, total)?;
        total = total.saturating_add(size);
    }
    Ok(())
}

/// The regular files of an `unsquashfs -lln` listing, as (name, size): lines such as
/// `-rw-r--r-- 0/0      5368709120 2024-01-01 00:00 squashfs-root/var/big`.
fn listed_files(listing: &str) -> Vec<(String, u64)> {
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_ascii_whitespace().collect();
            let size = fields.get(2)?.parse::<u64>().ok()?;
            Some((fields.get(5..).unwrap_or_default().join(" "), size))
        })
        .collect()
}

/// The `unsquashfs` version as (major, minor, patch), from `unsquashfs -version`.
fn version_of(text: &str) -> Option<(u32, u32, u32)> {
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("unsquashfs version "))?
        .split_whitespace()
        .next()?;
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

fn check_version(bin: &Path) -> Result<(), ImageError> {
    let out = Command::new(bin)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ImageError::Io {
            path: bin.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match version_of(&text) {
        Some(v) if v >= (4, 5, 1) => Ok(()),
        other => Err(ImageError::Invalid(format!(
            "unsquashfs {other:?} is too old to unpack untrusted images safely (4.5.1 or newer needed)"
        ))),
    }
}

/// Apply the tarball rules to an unpacked tree, without following symlinks: device nodes
/// and sockets removed, setuid/setgid dropped from files not owned by root.
fn sanitize(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = e.map_err(io(&d))?.path();
            let md = path.symlink_metadata().map_err(io(&path))?;
            let ft = md.file_type();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_block_device() || ft.is_char_device() || ft.is_socket() {
                tracing::debug!(path = %path.display(), "device node or socket in a squashfs image: removed");
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else if ft.is_file() && md.mode() & 0o6000 != 0 && md.uid() != 0 {
                let mode = md.mode() & 0o1777;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

/// Bytes in regular files under `dir`, without following symlinks.
fn regular_bytes(dir: &Path) -> i64 {
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += i64::try_from(md.len()).unwrap_or(i64::MAX);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether squashfs-tools are installed; a skip is printed, and refused under
    /// `CTL_REQUIRE_ALL`.
    fn have_squashfs_tools() -> bool {
        if unsquashfs().is_some() {
            return true;
        }
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "unsquashfs missing and CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("SKIP: unsquashfs not installed");
        false
    }

    #[test]
    fn round_trip_when_squashfs_tools_are_installed() {
        if !have_squashfs_tools() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("etc")).expect("mkdir");
        std::fs::write(src.join("etc/hostname"), b"hello\n").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", src.join("link")).expect("symlink");
        // What the tarball rules forbid: a device node, setuid on a file not owned by root.
        let root = nix::unistd::geteuid().is_root();
        if root {
            let st = Command::new("mknod")
                .arg(src.join("disk"))
                .args(["b", "8", "0"])
                .status()
                .expect("mknod runs");
            assert!(st.success());
            let suid = src.join("suid");
            std::fs::write(&suid, b"x").expect("write");
            std::os::unix::fs::chown(&suid, Some(1000), Some(1000)).expect("chown");
            std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755))
                .expect("chmod");
        }
        let img = tmp.path().join("rootfs.squashfs");
        let st = Command::new("mksquashfs")
            .arg(&src)
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .stdout(Stdio::null())
            .status()
            .expect("mksquashfs runs");
        assert!(st.success());
        assert!(is_squashfs(&img));
        assert!(!is_squashfs(&src.join("etc/hostname")));
        let dest = tmp.path().join("rootfs");
        let size = unpack(&img, &dest, &Limits::default()).expect("unpacks");
        assert_eq!(size, if root { 7 } else { 6 });
        assert_eq!(
            std::fs::read(dest.join("etc/hostname")).expect("read"),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).expect("link"),
            PathBuf::from("/etc/hostname")
        );
        if root {
            use std::os::unix::fs::MetadataExt;
            assert!(!dest.join("disk").exists(), "a device node was unpacked");
            let md = std::fs::metadata(dest.join("suid")).expect("suid file");
            assert_eq!(md.mode() & 0o7777, 0o755, "setuid kept on a non-root file");
        }
        // Truncated: refused, nothing left.
        assert_eq!(
            version_of("unsquashfs version 4.5.1 (2022/03/17)\ncopyright"),
            Some((4, 5, 1))
        );
        assert_eq!(version_of("unsquashfs version 4.4-git.1"), Some((4, 4, 0)));
        assert_eq!(version_of("nothing"), None);
        let bad = tmp.path().join("bad.squashfs");
        let bytes = std::fs::read(&img).expect("read");
        std::fs::write(&bad, &bytes[..100]).expect("write");
        let dest2 = tmp.path().join("rootfs2");
        assert!(matches!(
            unpack(&bad, &dest2, &Limits::default()),
            Err(ImageError::Invalid(_))
        ));
        assert!(!dest2.exists());
    }

    #[test]
    fn listed_files_are_read_from_the_long_listing() {
        let listing = "drwxr-xr-x 0/0                      97 2026-12-05 03:05 squashfs-root\n\
-rw-r--r-- 0/0                       3 2026-12-05 03:05 squashfs-root/etc/a\n\
prw-r--r-- 0/0                       0 2026-12-05 03:05 squashfs-root/fifo\n\
-rw-r--r-- 0/0              5368709120 2026-12-05 03:05 squashfs-root/big file\n\
lrwxrwxrwx 0/0                       5 2026-12-05 03:05 squashfs-root/l -> etc/a\n";
        assert_eq!(
            listed_files(listing),
            [
                ("squashfs-root/etc/a".to_string(), 3),
                ("squashfs-root/big file".to_string(), 5 << 30)
            ]
        );
    }

    #[test]
    fn a_squashfs_over_the_limits_is_refused_before_unpacking() {
        if !have_squashfs_tools() {
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        // A 1 GiB sparse file: a squashfs of a few KiB.
        let f = std::fs::File::create(src.join("big")).expect("create");
        f.set_len(1 << 30).expect("set_len");
        drop(f);
        let img = tmp.path().join("rootfs.squashfs");
        let st = Command::new("mksquashfs")
            .arg(&src)
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .stdout(Stdio::null())
            .status()
            .expect("mksquashfs runs");
        assert!(st.success());
        let dest = tmp.path().join("rootfs");
        let small = Limits {
            max_entry: 1 << 20,
            max_total: 1 << 30,
        };
        let err = unpack(&img, &dest, &small).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("over the 1 MiB")),
            "{err:?}"
        );
        assert!(!dest.exists(), "a refused squashfs was unpacked");
        let total = Limits {
            max_entry: 1 << 30,
            max_total: 1 << 20,
        };
        let err = unpack(&img, &dest, &total).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("more than 1 MiB")),
            "{err:?}"
        );
        assert!(!dest.exists());
        // Within the limits, the file stays sparse.
        let size = unpack(&img, &dest, &Limits::default()).expect("unpacks");
        assert_eq!(size, 1 << 30);
        let md = std::fs::metadata(dest.join("big")).expect("big");
        use std::os::unix::fs::MetadataExt;
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            md.blocks() * 512
        );
    }
}
