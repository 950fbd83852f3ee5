//! btrfs and loop-file operations of storage pools: subvolumes, snapshots, qgroups, and
//! filesystems on loop files or block devices, mounted where ctld keeps a pool.
//!
//! The `btrfs`, `mkfs.btrfs` and `mount` tools from btrfs-progs and util-linux do the work
//! (as Incus does): they know every kernel version's ioctls, and none of this is on a
//! container's start path. Every path here is absolute (so never taken for an option; the
//! btrfs tool of bookworm refuses `--`) and one ctld made under a pool's root, or the
//! pool's source the administrator named.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `statfs` magic of btrfs.
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// The inode number of every subvolume's root directory.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// `path` as a command-line argument: absolute, so no tool takes it for an option.
fn abs(path: &Path) -> io::Result<&std::ffi::OsStr> {
    if path.is_absolute() {
        Ok(path.as_os_str())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not an absolute path", path.display()),
        ))
    }
}

fn run(program: &str, args: &[&std::ffi::OsStr]) -> io::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(io::Error::other(format!(
        "{program} {}: {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Whether `path` is on a btrfs filesystem.
pub fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Whether `path` is the root of a btrfs subvolume (never following a symlink).
pub fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == SUBVOLUME_ROOT_INO)
        .unwrap_or(false)
        && is_btrfs(path)
}

/// Whether `a` and `b` are on the same mounted btrfs filesystem (a snapshot of one into the
/// other is possible).
pub fn same_btrfs(a: &Path, b: &Path) -> bool {
    match (nix::sys::statfs::statfs(a), nix::sys::statfs::statfs(b)) {
        (Ok(x), Ok(y)) => {
            x.filesystem_type().0 == BTRFS_SUPER_MAGIC
                && y.filesystem_type().0 == BTRFS_SUPER_MAGIC
                && format!("{:?}", x.filesystem_id()) == format!("{:?}", y.filesystem_id())
        }
        _ => false,
    }
}

/// Create the subvolume `path` (its parent must exist).
pub fn create_subvolume(path: &Path) -> io::Result<()> {
    run(
        "btrfs",
        &["subvolume".as_ref(), "create".as_ref(), abs(path)?],
    )
    .map(|_| ())
}

/// Snapshot the subvolume `from` as `to` (writable, O(1)).
pub fn snapshot(from: &Path, to: &Path) -> io::Result<()> {
    run(
        "btrfs",
        &[
            "subvolume".as_ref(),
            "snapshot".as_ref(),
            abs(from)?,
            abs(to)?,
        ],
    )
    .map(|_| ())
}

/// Make the subvolume `path` read-only (image copies).
pub fn set_readonly(path: &Path, readonly: bool) -> io::Result<()> {
    run(
        "btrfs",
        &[
            "property".as_ref(),
            "set".as_ref(),
            "-ts".as_ref(),
            abs(path)?,
            "ro".as_ref(),
            if readonly { "true" } else { "false" }.as_ref(),
        ],
    )
    .map(|_| ())
}

/// Remove the tree `path`: subvolumes in it (at any depth) are deleted as subvolumes (O(1)
/// each: the cleaner frees their extents later), everything else file by file. Never
/// follows a symlink. A missing `path` is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    if meta.ino() == SUBVOLUME_ROOT_INO && is_btrfs(path) {
        // Subvolumes nested in it go first: deleting a subvolume that holds another fails.
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() && entry.metadata()?.ino() == SUBVOLUME_ROOT_INO {
                remove_tree(&entry.path())?;
            } else if entry.file_type()?.is_dir() {
                remove_nested_subvolumes(&entry.path())?;
            }
        }
        return run(
            "btrfs",
            &["subvolume".as_ref(), "delete".as_ref(), abs(path)?],
        )
        .map(|_| ());
    }
    remove_nested_subvolumes(path)?;
    std::fs::remove_dir_all(path)
}

/// Delete the subvolumes below the plain directory `dir` (depth first).
fn remove_nested_subvolumes(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if entry.metadata()?.ino() == SUBVOLUME_ROOT_INO {
            remove_tree(&entry.path())?;
        } else {
            remove_nested_subvolumes(&entry.path())?;
        }
    }
    Ok(())
}

/// Turn on qgroups on the filesystem mounted at `mount`.
pub fn enable_quota(mount: &Path) -> io::Result<()> {
    run("btrfs", &["quota".as_ref(), "enable".as_ref(), abs(mount)?]).map(|_| ())
}

/// Limit what the subvolume `path` refers to (`None`: no limit); refused for a plain
/// directory (its subvolume's qgroup is not its own). The change is made
/// through the subvolume's parent directory: a change made through the subvolume itself
/// starts a transaction charged to its own qgroup, which fails (EDQUOT) once it is over
/// the limit, so a full instance could never be given more room.
pub fn limit(path: &Path, bytes: Option<u64>) -> io::Result<()> {
    if !is_subvolume(path) {
        return Err(io::Error::other(format!(
            "{}: not a btrfs subvolume, no quota of its own",
            path.display()
        )));
    }
    let size = bytes.map_or_else(|| "none".to_string(), |b| b.to_string());
    let id = run(
        "btrfs",
        &["inspect-internal".as_ref(), "rootid".as_ref(), abs(path)?],
    )?;
    let qgroup = format!("0/{}", id.trim());
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::other("a subvolume has a parent"))?;
    run(
        "btrfs",
        &[
            "qgroup".as_ref(),
            "limit".as_ref(),
            size.as_ref(),
            qgroup.as_ref(),
            abs(parent)?,
        ],
    )
    .map(|_| ())
}

/// Bytes the subvolume `path` refers to (its qgroup's `referenced`), if qgroups are on.
pub fn usage(path: &Path) -> Option<u64> {
    let out = run(
        "btrfs",
        &[
            "qgroup".as_ref(),
            "show".as_ref(),
            "--raw".as_ref(),
            "-f".as_ref(),
            abs(path).ok()?,
        ],
    )
    .ok()?;
    parse_qgroup_referenced(&out)
}

/// The `referenced` column of the first qgroup row of `btrfs qgroup show --raw -f`.
fn parse_qgroup_referenced(out: &str) -> Option<u64> {
    out.lines()
        .filter(|l| l.starts_with("0/"))
        .find_map(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Make a btrfs filesystem on `source` (a file or a block device).
pub fn mkfs(source: &Path, label: &str) -> io::Result<()> {
    run(
        "mkfs.btrfs",
        &["-q".as_ref(), "-L".as_ref(), label.as_ref(), abs(source)?],
    )
    .map(|_| ())
}

/// Mount the btrfs filesystem on `source` at `target`: a regular file through a loop device
/// that is freed when it is unmounted (`autoclear`), a block device directly.
pub fn mount(source: &Path, target: &Path) -> io::Result<()> {
    let is_file = std::fs::metadata(source)?.is_file();
    // `nosuid`, `nodev`: a pool holds what containers' roots wrote (id-mapped volumes
    // among them); none of it may raise privileges on the host.
    let opts = if is_file {
        "loop,nosuid,nodev"
    } else {
        "nosuid,nodev"
    };
    run(
        "mount",
        &[
            "-t".as_ref(),
            "btrfs".as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            abs(source)?,
            abs(target)?,
        ],
    )
    .map(|_| ())
}

/// Whether something is mounted exactly at `target`.
pub fn is_mountpoint(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = target.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| super::mounts::unescape(m) == want)
}

/// Unmount `target` now, or fail (EBUSY while something uses it).
pub fn unmount_now(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, nix::mount::MntFlags::empty()).map_err(io::Error::from)
}

/// Unmount `target` (detached if busy: containers still running on the pool keep it alive
/// until they stop; the loop device goes with the last user).
pub fn unmount(target: &Path) -> io::Result<()> {
    use nix::mount::{MntFlags, umount2};
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qgroup_output_gives_referenced_bytes() {
        let out = "Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path \n\
                   --------    ----------    ---------  --------------  -------------   ---- \n\
                   0/256         10469376     10469376        10485760           none   L\n";
        assert_eq!(parse_qgroup_referenced(out), Some(10_469_376));
        assert_eq!(parse_qgroup_referenced("nothing"), None);
    }
}
