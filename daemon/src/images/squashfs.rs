//! Squashfs root filesystems (`rootfs.squashfs` of split images from image servers),
//! unpacked with `unsquashfs` (Debian `squashfs-tools`) into a new directory.
//!
//! `unsquashfs` (≥ 4.5.1, checked: older ones had path-traversal bugs) refuses entry names
//! with `/` or `..`, so nothing lands outside the destination, and it never follows symlinks
//! it made; the destination must not exist. Then the same rules as for tarballs
//! ([`super::unpack`]) are applied to what it made: no extended attributes (`-no-xattrs`),
//! no device nodes or sockets, and setuid/setgid only on files owned by root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ImageError;

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

/// Unpack `image` into `dest` (which must not exist); returns the bytes of regular files.
pub fn unpack(image: &Path, dest: &Path) -> Result<i64, ImageError> {
    let bin = unsquashfs().ok_or_else(|| {
        ImageError::Invalid("a squashfs rootfs needs unsquashfs (squashfs-tools)".into())
    })?;
    if dest.exists() {
        return Err(ImageError::Build(format!("{} exists", dest.display())));
    }
    check_version(&bin)?;
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
    Ok(regular_bytes(dest))
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

    #[test]
    fn round_trip_when_squashfs_tools_are_installed() {
        let Some(_) = unsquashfs() else {
            assert!(
                std::env::var_os("CTL_REQUIRE_ALL").is_none(),
                "unsquashfs missing and CTL_REQUIRE_ALL forbids skipping"
            );
            eprintln!("SKIP: unsquashfs not installed");
            return;
        };
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
        let size = unpack(&img, &dest).expect("unpacks");
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
        assert!(matches!(unpack(&bad, &dest2), Err(ImageError::Invalid(_))));
        assert!(!dest2.exists());
    }
}
