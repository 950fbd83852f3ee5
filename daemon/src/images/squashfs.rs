//! Squashfs root filesystems (`rootfs.squashfs` of split images from image servers),
//! unpacked with `unsquashfs` (Debian `squashfs-tools`) into a new directory.
//!
//! `unsquashfs` (≥ 4.5.1) refuses entry names with `/` or `..`, so nothing lands outside
//! the destination, and it never follows symlinks it made; the destination must not exist.

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
    let out = Command::new(bin)
        .arg("-no-progress")
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
    Ok(regular_bytes(dest))
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
        assert_eq!(size, 6);
        assert_eq!(
            std::fs::read(dest.join("etc/hostname")).expect("read"),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).expect("link"),
            PathBuf::from("/etc/hostname")
        );
        // Truncated: refused, nothing left.
        let bad = tmp.path().join("bad.squashfs");
        let bytes = std::fs::read(&img).expect("read");
        std::fs::write(&bad, &bytes[..100]).expect("write");
        let dest2 = tmp.path().join("rootfs2");
        assert!(matches!(unpack(&bad, &dest2), Err(ImageError::Invalid(_))));
        assert!(!dest2.exists());
    }
}
