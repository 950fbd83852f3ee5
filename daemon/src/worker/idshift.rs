//! Shifting the owners of a container's own files (its overlay upper layer) from one id map
//! to another, when a container becomes unprivileged, privileged, or gets another range. The
//! shared image layers are never shifted: containers see them through id-mapped mounts.
//!
//! Only the upper layer of a stopped container is walked; symlinks are never followed and the
//! walk stays on one filesystem. `chown` clears setuid and setgid bits, so they are put back.
//!
//! Where the kernel or the state directory's filesystem cannot id-map a mount, an image layer
//! is seen through [`shifted_copy`] instead: one copy per image and id map, its owners (and
//! file capabilities) moved into the map, shared by every container with that map.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::spec::{IdMap, IdRange, to_host, to_inside};

/// How one side of a shift reads: `None` is host ids as they are (no user namespace).
fn inside_of(map: Option<&[IdRange]>, host: u32) -> Option<u32> {
    match map {
        None => Some(host),
        Some(r) => to_inside(r, host),
    }
}

fn host_of(map: Option<&[IdRange]>, inside: u32) -> Option<u32> {
    match map {
        None => Some(inside),
        Some(r) => to_host(r, inside),
    }
}

/// The new host owner of a file owned by `(uid, gid)` under `from`, re-expressed under `to`.
/// An id the old map does not know, or the new one cannot hold, is kept.
pub fn shifted(from: Option<&IdMap>, to: Option<&IdMap>, uid: u32, gid: u32) -> (u32, u32) {
    let one = |id: u32, f: Option<&[IdRange]>, t: Option<&[IdRange]>| {
        inside_of(f, id).and_then(|i| host_of(t, i)).unwrap_or(id)
    };
    (
        one(
            uid,
            from.map(|m| m.uids.as_slice()),
            to.map(|m| m.uids.as_slice()),
        ),
        one(
            gid,
            from.map(|m| m.gids.as_slice()),
            to.map(|m| m.gids.as_slice()),
        ),
    )
}

/// Shift every entry under `dir` (itself included) from `from` to `to`. Returns how many
/// entries changed owner.
pub fn shift_tree(dir: &Path, from: Option<&IdMap>, to: Option<&IdMap>) -> io::Result<u64> {
    let dev = fs::symlink_metadata(dir)?.dev();
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = fs::symlink_metadata(&path)?;
        if md.dev() != dev {
            continue;
        }
        let (uid, gid) = shifted(from, to, md.uid(), md.gid());
        if (uid, gid) != (md.uid(), md.gid()) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
            changed += 1;
            let special = md.mode() & 0o6000;
            if special != 0 && !md.file_type().is_symlink() {
                fs::set_permissions(&path, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
        }
        if md.is_dir() {
            for e in fs::read_dir(&path)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(changed)
}

/// The name of `map`'s shifted copies: a digest of its ranges, so equal maps share a copy.
pub fn map_key(map: &IdMap) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (kind, ranges) in [("u", &map.uids), ("g", &map.gids)] {
        for r in ranges {
            h.update(format!("{kind} {} {} {}\n", r.inside, r.outside, r.count));
        }
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The host id files owned by an id the map does not hold get (the kernel's overflow id:
/// such files show as `nobody` inside, as through an id-mapped mount).
const OVERFLOW_ID: u32 = 65534;

/// What [`shifted_copy`] made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries written (directories, files, links, nodes).
    pub entries: u64,
    /// Hard links kept as links.
    pub hardlinks: u64,
    /// Device nodes that could not be made (no `CAP_MKNOD` where ctld runs, e.g. nested).
    pub skipped_nodes: u64,
}

/// Remove the half-made copies (`.tmp-*`) in one image's `shifted` directory; returns them.
pub fn remove_tmp_copies(copies: &Path) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    if let Ok(rd) = std::fs::read_dir(copies) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-")
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// [`remove_tmp_copies`] for every image in the store `images` (ctld's start-up, before
/// any copy can be in progress).
pub fn remove_unfinished(images: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(images) else {
        return Vec::new();
    };
    rd.flatten()
        .flat_map(|e| remove_tmp_copies(&e.path().join("shifted")))
        .collect()
}

/// Copy the tree `src` (an image layer: owners in container ids, as stored) to `dst`, which
/// must not exist, with every owner moved into `map`: container id `i` becomes
/// `map`'s host id for `i`, and ids the map does not hold become [`OVERFLOW_ID`].
///
/// Kept: file types, contents, modes (setuid and setgid included: set after the owner),
/// timestamps, hard links, `user.*` extended attributes, and file capabilities, rewritten
/// as namespaced (v3) capabilities whose root is the container's root. Not kept: other
/// extended attributes (ACLs, SELinux labels) and sockets. Symlinks are never followed and
/// the walk stays on `src`'s filesystem. Iterative, so a deep tree cannot exhaust a stack.
pub fn shifted_copy(src: &Path, dst: &Path, map: &IdMap) -> io::Result<CopyStats> {
    let dev = fs::symlink_metadata(src)?.dev();
    let mut stats = CopyStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directories get their owner, mode and times once their entries exist: deepest last
    // in this list, so applying it in reverse never touches a parent before its child.
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        let md = fs::symlink_metadata(&from)?;
        if md.dev() != dev {
            continue;
        }
        let ft = md.file_type();
        if md.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &to)?;
                stats.hardlinks += 1;
                continue;
            }
            links.insert((md.dev(), md.ino()), to.clone());
        }
        if ft.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&to)?;
            for e in fs::read_dir(&from)? {
                let e = e?;
                stack.push((e.path(), to.join(e.file_name())));
            }
            dirs.push((to, md));
            stats.entries += 1;
            continue;
        }
        if ft.is_file() {
            let mut input = fs::File::open(&from)?;
            let mut output = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to)?;
            io::copy(&mut input, &mut output)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else {
                rustix::fs::FileType::CharacterDevice
            };
            let made = rustix::fs::mknodat(
                rustix::fs::CWD,
                &to,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                md.rdev(),
            );
            match made {
                Ok(()) => {}
                Err(rustix::io::Errno::PERM) if !ft.is_fifo() => {
                    stats.skipped_nodes += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            // A socket in an image means nothing without its listener.
            continue;
        }
        finish(&from, &to, &md, map)?;
        stats.entries += 1;
    }
    for (to, md) in dirs.iter().rev() {
        let from = src.join(to.strip_prefix(dst).unwrap_or(Path::new("")));
        finish(&from, to, md, map)?;
    }
    Ok(stats)
}

/// Give `path` (the copy of `from`, whose metadata is `md`) its owner moved into `map`, then
/// its extended attributes, mode and times: in that order, as `chown` clears setuid and
/// setgid bits and file capabilities.
fn finish(from: &Path, path: &Path, md: &fs::Metadata, map: &IdMap) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
    let host = |ranges: &[IdRange], id: u32| to_host(ranges, id).unwrap_or(OVERFLOW_ID);
    let (uid, gid) = (host(&map.uids, md.uid()), host(&map.gids, md.gid()));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    copy_xattrs(from, path, map)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

const CAPS_XATTR: &str = "security.capability";

/// Copy `from`'s `user.*` attributes and its file capabilities (moved into `map`) to `to`.
fn copy_xattrs(from: &Path, to: &Path, map: &IdMap) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(from, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(rustix::io::Errno::RANGE) => {
            names = vec![0u8; 65536];
            rustix::fs::llistxattr(from, &mut names[..])?
        }
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !name.starts_with("user.") && name != CAPS_XATTR {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = match rustix::fs::lgetxattr(from, name, &mut value[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        value.truncate(len);
        if name == CAPS_XATTR {
            match namespaced_caps(&value, map) {
                Some(v) => value = v,
                None => continue,
            }
        }
        rustix::fs::lsetxattr(to, name, &value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// `vfs_cap_data` revisions (linux/capability.h).
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// A file capability (revision 2 or 3) as a revision 3 value whose root is `map`'s host id
/// of its root (container root for revision 2). `None` for a value that is not one, or
/// whose root the map does not hold: such a file gets no capability.
pub fn namespaced_caps(value: &[u8], map: &IdMap) -> Option<Vec<u8>> {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(value.get(i..i + 4)?.try_into().ok()?))
    };
    let magic = word(0)?;
    let root = match (magic & VFS_CAP_REVISION_MASK, value.len()) {
        (VFS_CAP_REVISION_2, 20) => 0,
        (VFS_CAP_REVISION_3, 24) => word(20)?,
        _ => return None,
    };
    let host_root = to_host(&map.uids, root)?;
    let mut v3 = Vec::with_capacity(24);
    v3.extend_from_slice(&((magic & !VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_3).to_le_bytes());
    v3.extend_from_slice(&value[4..20]);
    v3.extend_from_slice(&host_root.to_le_bytes());
    Some(v3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(base: u32) -> IdMap {
        let r = vec![IdRange {
            inside: 0,
            outside: base,
            count: 65536,
        }];
        IdMap {
            uids: r.clone(),
            gids: r,
        }
    }

    #[test]
    fn ids_move_between_maps_and_unknown_ones_stay() {
        let a = map(1_000_000);
        let b = map(2_000_000);
        assert_eq!(shifted(None, Some(&a), 0, 5), (1_000_000, 1_000_005));
        assert_eq!(
            shifted(Some(&a), Some(&b), 1_000_033, 1_000_000),
            (2_000_033, 2_000_000)
        );
        assert_eq!(shifted(Some(&b), None, 2_000_033, 2_000_001), (33, 1));
        // Not in the old map, or beyond the new one: kept.
        assert_eq!(shifted(Some(&a), Some(&b), 42, 42), (42, 42));
        assert_eq!(shifted(None, Some(&a), 70_000, 0), (70_000, 1_000_000));
    }

    #[test]
    fn a_tree_is_shifted_without_following_links_and_keeps_setuid()
    -> Result<(), Box<dyn std::error::Error>> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP a_tree_is_shifted…: needs root to chown");
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        let up = tmp.path().join("upper");
        fs::create_dir_all(up.join("etc"))?;
        fs::write(up.join("etc/su"), b"x")?;
        fs::set_permissions(up.join("etc/su"), fs::Permissions::from_mode(0o4755))?;
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"host")?;
        std::os::unix::fs::symlink(&outside, up.join("link"))?;
        let a = map(1_000_000);
        let n = shift_tree(&up, None, Some(&a))?;
        assert_eq!(n, 4);
        let su = fs::metadata(up.join("etc/su"))?;
        assert_eq!(
            (su.uid(), su.gid(), su.mode() & 0o7777),
            (1_000_000, 1_000_000, 0o4755)
        );
        assert_eq!(fs::symlink_metadata(up.join("link"))?.uid(), 1_000_000);
        assert_eq!(
            fs::metadata(&outside)?.uid(),
            0,
            "the link's target is not touched"
        );
        // And back.
        shift_tree(&up, Some(&a), None)?;
        assert_eq!(fs::metadata(up.join("etc"))?.uid(), 0);
        Ok(())
    }

    #[test]
    fn file_capabilities_become_namespaced_with_the_containers_root() {
        let m = map(1_000_000);
        // cap_net_raw+ep, revision 2 (what setcap writes as host root).
        let mut v2 = Vec::new();
        v2.extend_from_slice(&(VFS_CAP_REVISION_2 | 1).to_le_bytes());
        v2.extend_from_slice(&(1u32 << 13).to_le_bytes());
        v2.extend_from_slice(&0u32.to_le_bytes());
        v2.extend_from_slice(&0u32.to_le_bytes());
        v2.extend_from_slice(&0u32.to_le_bytes());
        let v3 = namespaced_caps(&v2, &m).expect("a v2 value converts");
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[0..4], &(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(&v3[20..24], &1_000_000u32.to_le_bytes());
        // A v3 value whose root is container uid 5 moves too; one the map lacks is dropped.
        let mut other = v3.clone();
        other[20..24].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            namespaced_caps(&other, &m).map(|v| v[20..24].to_vec()),
            Some(1_000_005u32.to_le_bytes().to_vec())
        );
        other[20..24].copy_from_slice(&70_000u32.to_le_bytes());
        assert_eq!(namespaced_caps(&other, &m), None);
        assert_eq!(namespaced_caps(&v2[..19], &m), None, "truncated");
        assert_eq!(namespaced_caps(&[0u8; 20], &m), None, "no revision");
    }

    #[test]
    fn a_shifted_copy_keeps_the_tree_and_moves_every_owner_into_the_map()
    -> Result<(), Box<dyn std::error::Error>> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP a_shifted_copy…: needs root to chown and mknod");
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        let src = tmp.path().join("layer");
        fs::create_dir_all(src.join("usr/bin"))?;
        fs::create_dir(src.join("home"))?;
        fs::set_permissions(src.join("home"), fs::Permissions::from_mode(0o1777))?;
        std::os::unix::fs::lchown(src.join("home"), Some(1000), Some(100))?;
        fs::write(src.join("usr/bin/su"), b"setuid")?;
        fs::set_permissions(src.join("usr/bin/su"), fs::Permissions::from_mode(0o4755))?;
        fs::write(src.join("usr/bin/ping"), b"caps")?;
        let mut caps = Vec::new();
        caps.extend_from_slice(&(VFS_CAP_REVISION_2 | 1).to_le_bytes());
        caps.extend_from_slice(&(1u32 << 13).to_le_bytes());
        caps.extend_from_slice(&[0u8; 12]);
        rustix::fs::lsetxattr(
            src.join("usr/bin/ping"),
            CAPS_XATTR,
            &caps,
            rustix::fs::XattrFlags::empty(),
        )?;
        rustix::fs::lsetxattr(
            src.join("usr/bin/su"),
            "user.note",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )?;
        fs::hard_link(src.join("usr/bin/su"), src.join("usr/bin/su2"))?;
        std::os::unix::fs::symlink("/etc/shadow", src.join("usr/bin/link"))?;
        let null = fs::metadata("/dev/null")?.rdev();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            null,
        )?;
        fs::write(src.join("odd"), b"")?;
        std::os::unix::fs::lchown(src.join("odd"), Some(70_000), Some(70_000))?;
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 5,
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            src.join("usr"),
            &old,
            rustix::fs::AtFlags::empty(),
        )?;

        let dst = tmp.path().join("shifted");
        let m = map(1_000_000);
        let stats = shifted_copy(&src, &dst, &m)?;
        assert_eq!(stats.hardlinks, 1);
        assert_eq!(stats.skipped_nodes, 0);
        assert_eq!(
            stats.entries, 9,
            "4 directories, 5 others (the hard link counted apart)"
        );

        let md = |p: &str| fs::symlink_metadata(dst.join(p));
        let su = md("usr/bin/su")?;
        assert_eq!(
            (su.uid(), su.gid(), su.mode() & 0o7777),
            (1_000_000, 1_000_000, 0o4755),
            "owner moved, setuid kept"
        );
        assert_eq!(fs::read(dst.join("usr/bin/su"))?, b"setuid");
        assert_eq!(md("usr/bin/su2")?.ino(), su.ino(), "a hard link stays one");
        let home = md("home")?;
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o7777),
            (1_001_000, 1_000_100, 0o1777)
        );
        assert_eq!(md("usr")?.mtime(), 1_000_000, "directory times kept");
        assert_eq!(md("usr")?.mtime_nsec(), 5);
        let link = md("usr/bin/link")?;
        assert!(link.file_type().is_symlink());
        assert_eq!(link.uid(), 1_000_000);
        assert_eq!(
            fs::read_link(dst.join("usr/bin/link"))?,
            Path::new("/etc/shadow")
        );
        assert_eq!(md("null")?.rdev(), null);
        assert_eq!(md("odd")?.uid(), OVERFLOW_ID, "an id the map lacks");
        let mut buf = [0u8; 64];
        let n = rustix::fs::lgetxattr(dst.join("usr/bin/ping"), CAPS_XATTR, &mut buf[..])?;
        assert_eq!(n, 24, "file capabilities are namespaced (v3)");
        assert_eq!(&buf[20..24], &1_000_000u32.to_le_bytes());
        let n = rustix::fs::lgetxattr(dst.join("usr/bin/su"), "user.note", &mut buf[..])?;
        assert_eq!(&buf[..n], b"kept");
        // The source is untouched.
        assert_eq!(fs::metadata(src.join("usr/bin/su"))?.uid(), 0);
        assert!(
            shifted_copy(&src, &dst, &m).is_err(),
            "an existing destination is refused"
        );
        Ok(())
    }
}
