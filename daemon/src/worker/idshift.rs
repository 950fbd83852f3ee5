//! Shifting the owners of a container's own files (its overlay upper layer) from one id map
//! to another, when a container becomes unprivileged, privileged, or gets another range. The
//! shared image layers are never shifted: containers see them through id-mapped mounts.
//!
//! Only the upper layer of a stopped container is walked; symlinks are never followed and the
//! walk stays on one filesystem. `chown` clears setuid and setgid bits, so they are put back.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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
}
