//! Mounts a host tool left behind in ctld's own scratch space: debootstrap mounts `proc`,
//! `sysfs` (and sometimes `/dev` binds) inside its target and leaves them when it dies.
//! Before a build directory is removed, everything mounted below it is detached, deepest
//! first, so removing the directory can never reach into `/proc`, `/sys` or `/dev`.
//!
//! The mount table is read from `/proc/self/mountinfo` ([`mounts_under`] is the pure part).

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// Decode mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points in `mountinfo` (the text of `/proc/self/mountinfo`) that lie strictly
/// below `dir` or are `dir` itself, deepest (longest) first, so they can be detached in
/// that order.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// Detach every mount at or below `dir`; returns the mount points that could not be
/// detached, with why. A `dir` with nothing mounted below costs one read of mountinfo.
pub fn unmount_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut failed = Vec::new();
    // A mount stacked on another shows up once per layer: repeat until none is left.
    for _ in 0..8 {
        let table = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => return vec![(dir.to_path_buf(), format!("read mountinfo: {e}"))],
        };
        let mounts = mounts_under(&table, dir);
        if mounts.is_empty() {
            return Vec::new();
        }
        failed.clear();
        for m in mounts {
            match umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) => tracing::info!(mount = %m.display(), "detached a leftover mount"),
                Err(e) => failed.push((m, e.to_string())),
            }
        }
        if !failed.is_empty() {
            break;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
60 22 0:5 / /var/lib/ctld/tmp/debian-1/rootfs/proc rw - proc proc rw
61 22 0:6 / /var/lib/ctld/tmp/debian-1/rootfs/sys rw - sysfs sysfs rw
62 61 0:7 / /var/lib/ctld/tmp/debian-1/rootfs/sys/fs/x rw - tmpfs x rw
63 22 0:8 / /var/lib/ctld/tmp/debian-10/rootfs/proc rw - proc proc rw
64 22 0:9 / /var/lib/ctld/tmp/with\\040space/proc rw - proc proc rw
";

    #[test]
    fn finds_mounts_below_a_dir_deepest_first() {
        let got = mounts_under(TABLE, Path::new("/var/lib/ctld/tmp/debian-1"));
        assert_eq!(
            got,
            [
                PathBuf::from("/var/lib/ctld/tmp/debian-1/rootfs/sys/fs/x"),
                PathBuf::from("/var/lib/ctld/tmp/debian-1/rootfs/proc"),
                PathBuf::from("/var/lib/ctld/tmp/debian-1/rootfs/sys"),
            ]
        );
        // Path components, not string prefixes: debian-10 is not under debian-1.
        assert!(
            !got.iter()
                .any(|p| p.starts_with("/var/lib/ctld/tmp/debian-10"))
        );
        assert_eq!(
            mounts_under(TABLE, Path::new("/var/lib/ctld/tmp/with space")),
            [PathBuf::from("/var/lib/ctld/tmp/with space/proc")]
        );
        assert!(mounts_under(TABLE, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
