//! The built-in `busybox` image: a tiny rootfs made from the host's static busybox, with the
//! applet links, users, groups and an inittab that keeps init idle until it is stopped.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::ImageError;

/// What a built rootfs is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltRootfs {
    pub fingerprint: String,
    pub size: i64,
    pub version: String,
}

const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("run", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("mnt", 0o755),
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n";
// A shell on the console (what `ctl console` attaches to); init powers off on SIGUSR2.
const INITTAB: &str = "::sysinit:/bin/mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp\n\
::respawn:-/bin/sh\n\
::shutdown:/bin/sync\n";
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";

/// Build the rootfs into `dest` (which must not exist) from the `busybox` binary.
pub fn build(busybox: &Path, dest: &Path) -> Result<BuiltRootfs, ImageError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| ImageError::Io { path: p, source }
    };
    let version = busybox_version(busybox)?;
    let applets = applet_paths(busybox)?;
    fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .map_err(io(dest))?;
    for (d, mode) in DIRS {
        let p = dest.join(d);
        fs::create_dir(&p).map_err(io(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(io(&p))?;
    }
    let bin = dest.join("bin/busybox");
    fs::copy(busybox, &bin).map_err(io(&bin))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).map_err(io(&bin))?;
    for applet in &applets {
        let link = dest.join(applet);
        if applet == "bin/busybox" || fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io(&link))?;
    }
    let os_release = format!(
        "NAME=\"BusyBox\"\nID=busybox\nVERSION_ID=\"{version}\"\nPRETTY_NAME=\"BusyBox {version}\"\n"
    );
    for (file, content) in [
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/inittab", INITTAB),
        ("etc/hosts", HOSTS),
        ("etc/os-release", os_release.as_str()),
    ] {
        let p = dest.join(file);
        fs::write(&p, content).map_err(io(&p))?;
    }
    let (fingerprint, size) = fingerprint(dest)?;
    Ok(BuiltRootfs {
        fingerprint,
        size,
        version,
    })
}

fn busybox_version(busybox: &Path) -> Result<String, ImageError> {
    let out = Command::new(busybox)
        .output()
        .map_err(|e| ImageError::Build(format!("run {}: {e}", busybox.display())))?;
    // First line: "BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary."
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(|v| v.trim_start_matches('v').to_string())
        .ok_or_else(|| ImageError::Build(format!("{} is not busybox", busybox.display())))
}

fn applet_paths(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| ImageError::Build(format!("run {}: {e}", busybox.display())))?;
    if !out.status.success() {
        return Err(ImageError::Build(format!(
            "{} --list-full failed: is it busybox-static?",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

/// sha256 over a sorted manifest of every entry (path, type, mode, content or link target):
/// the same tree always has the same fingerprint. Also returns the total size in bytes.
pub fn fingerprint(root: &Path) -> Result<(String, i64), ImageError> {
    let mut entries = Vec::new();
    walk(root, root, &mut entries)?;
    entries.sort();
    let mut h = Sha256::new();
    let mut size = 0i64;
    for (line, bytes) in entries {
        h.update(line.as_bytes());
        size += bytes;
    }
    Ok((hex(&h.finalize()), size))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, i64)>) -> Result<(), ImageError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| ImageError::Io { path: p, source }
    };
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let md = fs::symlink_metadata(&path).map_err(io(&path))?;
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(&path).map_err(io(&path))?;
            out.push((format!("l {rel} {mode:o} {}\n", t.display()), 0));
        } else if ft.is_dir() {
            out.push((format!("d {rel} {mode:o}\n",), 0));
            walk(root, &path, out)?;
        } else {
            let data = fs::read(&path).map_err(io(&path))?;
            let sum = hex(&Sha256::digest(&data));
            out.push((format!("f {rel} {mode:o} {sum}\n"), data.len() as i64));
        }
    }
    Ok(())
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_content_sensitive() -> Result<(), Box<dyn std::error::Error>> {
        let a = tempfile::tempdir()?;
        fs::create_dir(a.path().join("etc"))?;
        fs::write(a.path().join("etc/x"), "1")?;
        std::os::unix::fs::symlink("/bin/busybox", a.path().join("sh"))?;
        let (f1, s1) = fingerprint(a.path())?;
        let (f2, _) = fingerprint(a.path())?;
        assert_eq!(f1, f2);
        assert_eq!(f1.len(), 64);
        assert_eq!(s1, 1);
        fs::write(a.path().join("etc/x"), "2")?;
        assert_ne!(fingerprint(a.path())?.0, f1);
        Ok(())
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn builds_from_host_busybox_when_present() -> Result<(), Box<dyn std::error::Error>> {
        let bb = Path::new("/bin/busybox");
        if !bb.exists() {
            eprintln!("skipping: /bin/busybox not installed");
            assert!(
                std::env::var("CTL_REQUIRE_ALL").is_err(),
                "busybox-static required"
            );
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        let dest = tmp.path().join("rootfs");
        let built = build(bb, &dest)?;
        assert!(
            dest.join("sbin/init")
                .symlink_metadata()?
                .file_type()
                .is_symlink()
        );
        assert!(dest.join("bin/sh").symlink_metadata().is_ok());
        assert!(fs::read_to_string(dest.join("etc/passwd"))?.starts_with("root:x:0:0"));
        assert!(!built.version.is_empty());
        assert_eq!(built.fingerprint, fingerprint(&dest)?.0);
        Ok(())
    }
}
