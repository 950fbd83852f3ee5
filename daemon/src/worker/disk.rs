//! `disk` devices on the host: host paths bound into containers, at start and while they run.
//!
//! A bind is made in three steps that never walk a container-controlled path as host root
//! outside the container's root:
//! 1. [`prepare_tree`], as host root in the host's namespaces: `open_tree(OPEN_TREE_CLONE)`
//!    of the source, read-only and id-mapped onto the container's user namespace
//!    (`shift`) with `mount_setattr`. A read-only bind for a user-namespaced container is
//!    then **locked** ([`lock_tree`]): the kernel locks the flags of mounts copied into a
//!    mount namespace owned by a less privileged user namespace, so the tree is attached
//!    in a private mount namespace, that namespace copied from inside the container's user
//!    namespace, and the copy cloned again; the container's root cannot remount it
//!    read-write. This changes the process's namespaces: it runs in a throw-away process
//!    (a child of the monitor at start, `ctld forkmount` for a hot-plug).
//! 2. [`make_target`]: the mount point is created under the container's root with
//!    `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, one component at a time, relative
//!    to the resolved parent: symlinks in the image resolve inside the root, never out.
//! 3. [`attach`]: `move_mount` onto that descriptor, then the propagation.
//!
//! At start the monitor does step 1 (one child per disk) and hands the trees to the init,
//! which does 2 and 3 inside its new root before `pivot_root` (`spawn.rs`). A hot-plug runs
//! `ctld forkmount` ([`forkmount_main`]): step 2 through `/proc/<init>/root` (checked against
//! PID reuse with a pidfd), step 1, then `setns` into the container's mount namespace
//! through the pidfd and step 3. Removal detaches the mount (`MNT_DETACH`) there.
//! ctld's own threads never `setns`.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::spec::{DiskMount, IdMap};
use super::sys::{self, MountChange};

/// How paths under a container's root are walked.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// The environment variable that carries the [`MountRequest`] to `ctld forkmount`.
pub const SPEC_ENV: &str = "CTL_MOUNT_SPEC";

/// What `ctld forkmount` does in the running container whose init is `pid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    pub pid: i32,
    pub starttime: u64,
    pub action: MountAction,
}

/// Add a bind, or detach the mount at a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum MountAction {
    Add(DiskMount),
    Remove { target: String },
}

fn cstring(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn errno_io(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// `openat2` under `root`, retried on `EAGAIN` (a `..` racing with a rename).
fn resolve(root: BorrowedFd<'_>, rel: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c = cstring(rel.as_bytes())?;
    let flags = (flags | OFlag::O_CLOEXEC).bits();
    let mut last = io::Error::from_raw_os_error(libc::EAGAIN);
    for _ in 0..16 {
        match sys::openat2(root, &c, flags, 0, RESOLVE) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => last = e,
            other => return other,
        }
    }
    Err(last)
}

/// The mount point `target` (relative, no `..`) under `root`: found, or created (missing
/// directories on the way with mode 0755; the last one an empty 0644 file when `file`),
/// each new entry owned by `owner` (host ids; `None`: the caller's). Returns an `O_PATH`
/// descriptor of it, whose type must match `file`.
pub fn make_target(
    root: BorrowedFd<'_>,
    target: &str,
    file: bool,
    owner: Option<(u32, u32)>,
) -> io::Result<OwnedFd> {
    let parts: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut done = String::new();
    for (i, name) in parts.iter().enumerate() {
        let here = if done.is_empty() {
            (*name).to_string()
        } else {
            format!("{done}/{name}")
        };
        match resolve(root, &here, OFlag::O_PATH) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = resolve(root, &done, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                let cname = cstring(name.as_bytes())?;
                let last = i + 1 == parts.len();
                let made = if last && file {
                    nix::fcntl::openat(
                        &parent,
                        cname.as_c_str(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(drop)
                } else {
                    nix::sys::stat::mkdirat(
                        &parent,
                        cname.as_c_str(),
                        Mode::from_bits_truncate(0o755),
                    )
                };
                match made {
                    Ok(()) => {
                        if let Some((uid, gid)) = owner {
                            nix::unistd::fchownat(
                                &parent,
                                cname.as_c_str(),
                                Some(nix::unistd::Uid::from_raw(uid)),
                                Some(nix::unistd::Gid::from_raw(gid)),
                                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                            )
                            .map_err(errno_io)?;
                        }
                    }
                    // Made meanwhile (or a dangling symlink: the final resolve says so).
                    Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(errno_io(e)),
                }
            }
            Err(e) => return Err(e),
        }
        done = here;
    }
    let fd = resolve(root, &done, OFlag::O_PATH)?;
    let st = nix::sys::stat::fstat(&fd).map_err(errno_io)?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    match (file, is_dir) {
        (true, true) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        (false, false) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        _ => Ok(fd),
    }
}

/// The source as a detached mount ready for a container: cloned (with the mounts below it
/// when `recursive`), read-only, id-mapped through `userns` when `shift` (`userns` is the
/// container's user namespace; `None`: a privileged container), and for a read-only bind
/// in a user namespace locked ([`lock_tree`]). **May move this process into other
/// namespaces**: call it in a process that does nothing in the host's afterwards.
pub fn prepare_tree(disk: &DiskMount, userns: Option<&File>) -> Result<OwnedFd, String> {
    let src = cstring(disk.source.as_os_str().as_bytes())
        .map_err(|_| format!("{}: NUL in the path", disk.source.display()))?;
    let mut flags = sys::tree::CLONE;
    if disk.recursive {
        flags |= sys::tree::RECURSIVE;
    }
    let tree = sys::open_tree(None, &src, flags)
        .map_err(|e| format!("clone the mount of {}: {e}", disk.source.display()))?;
    let idmap = userns.filter(|_| disk.shift);
    if disk.readonly || idmap.is_some() {
        let change = MountChange {
            rdonly: disk.readonly,
            propagation: 0,
            recursive: disk.recursive,
        };
        sys::mount_setattr(tree.as_fd(), change, idmap.map(|f| f.as_fd())).map_err(|e| {
            let what = if idmap.is_some() {
                "id-map (shift)"
            } else {
                "make read-only"
            };
            format!("{what} the mount of {}: {e}", disk.source.display())
        })?;
    }
    match userns {
        Some(ns) if disk.readonly => lock_tree(tree, disk, ns),
        _ => Ok(tree),
    }
}

/// Lock the flags of `tree` (read-only, nosuid...) against the container's root: attach it
/// over its own source in a private mount namespace, join the container's user namespace,
/// copy the mount namespace from there (the kernel locks every flag of a copy made for a
/// less privileged user namespace) and clone the locked copy.
fn lock_tree(tree: OwnedFd, disk: &DiskMount, userns: &File) -> Result<OwnedFd, String> {
    use nix::sched::{CloneFlags, setns, unshare};
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare a mount namespace: {e}"))?;
    nix::mount::mount(
        none,
        "/",
        none,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        none,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    let src = cstring(disk.source.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    sys::move_mount_to(tree.as_fd(), &src)
        .map_err(|e| format!("attach the bind of {}: {e}", disk.source.display()))?;
    drop(tree);
    // The working directory follows the mount namespace copy below: stand on the bind (a
    // directory) or in its parent (a file).
    let (dir, name) = if disk.file {
        let parent = disk.source.parent().unwrap_or(Path::new("/"));
        let name = disk.source.file_name().map(|n| n.as_bytes().to_vec());
        (parent.to_path_buf(), name.unwrap_or_default())
    } else {
        (disk.source.clone(), Vec::new())
    };
    nix::unistd::chdir(&dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
    setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("join the container's user namespace: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("copy the mount namespace for the container: {e}"))?;
    let mut flags = sys::tree::CLONE;
    if disk.recursive {
        flags |= sys::tree::RECURSIVE;
    }
    if name.is_empty() {
        flags |= sys::tree::EMPTY_PATH;
    }
    let name = cstring(&name).map_err(|e| e.to_string())?;
    sys::open_tree(None, &name, flags)
        .map_err(|e| format!("clone the locked bind of {}: {e}", disk.source.display()))
}

/// Attach `tree` on `target` (from [`make_target`], in the caller's mount namespace), then
/// set its propagation; `root` and `rel` find the new mount again for that.
pub fn attach(
    tree: OwnedFd,
    target: OwnedFd,
    root: BorrowedFd<'_>,
    disk: &DiskMount,
) -> Result<(), String> {
    sys::move_mount_onto(tree.as_fd(), target.as_fd())
        .map_err(|e| format!("mount {} on /{}: {e}", disk.source.display(), disk.target))?;
    let (propagation, recursive) = disk.propagation.flag();
    let set = resolve(root, &disk.target, OFlag::O_PATH).and_then(|fd| {
        let change = MountChange {
            rdonly: false,
            propagation,
            recursive: recursive && disk.recursive,
        };
        sys::mount_setattr(fd.as_fd(), change, None)
    });
    set.map_err(|e| format!("propagation of /{}: {e}", disk.target))
}

/// The host ids of the container root of `pid` (`None`: it shares the host's ids).
fn container_root_ids(pid: i32) -> io::Result<Option<(u32, u32)>> {
    let uids = IdMap::parse_proc(&fs::read_to_string(format!("/proc/{pid}/uid_map"))?);
    let gids = IdMap::parse_proc(&fs::read_to_string(format!("/proc/{pid}/gid_map"))?);
    if IdMap::is_identity(&uids) {
        return Ok(None);
    }
    let map = IdMap { uids, gids };
    Ok(map.host_uid(0).zip(map.host_gid(0)))
}

/// Whether process `pid` lives in another user namespace than this process.
fn other_user_namespace(pid: i32) -> bool {
    let ino = |p: String| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    ino(format!("/proc/{pid}/ns/user")) != ino("/proc/self/ns/user".into())
}

/// Entry point of `ctld forkmount` (request in [`SPEC_ENV`]). Single threaded, no runtime.
/// Exit code 0, or 1 with the reason on stderr.
pub fn forkmount_main(spec_json: &str) -> i32 {
    let req: MountRequest = match serde_json::from_str(spec_json) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bad mount request: {e}");
            return 1;
        }
    };
    // Nothing in the container may ptrace this process or open its /proc files.
    if let Err(e) = sys::set_non_dumpable() {
        eprintln!("set non-dumpable: {e}");
        return 1;
    }
    let result = sys::pidfd_open(req.pid)
        .map_err(|e| format!("container init gone: {e}"))
        .and_then(|pidfd| match &req.action {
            MountAction::Add(disk) => hotplug_add(&req, &pidfd, disk),
            MountAction::Remove { target } => hotplug_remove(&req, &pidfd, target),
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn check_alive(req: &MountRequest) -> Result<(), String> {
    if super::proc::is_alive(req.pid, req.starttime) {
        Ok(())
    } else {
        Err("the container is not running".into())
    }
}

fn hotplug_add(req: &MountRequest, pidfd: &OwnedFd, disk: &DiskMount) -> Result<(), String> {
    check_alive(req)?;
    let pid = req.pid;
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("root of the container: {e}"))?;
    let userns = match other_user_namespace(pid) {
        true => Some(
            File::open(format!("/proc/{pid}/ns/user"))
                .map_err(|e| format!("user namespace of the container: {e}"))?,
        ),
        false => None,
    };
    let owner = container_root_ids(pid).map_err(|e| format!("id map of the container: {e}"))?;
    // Alive with the same start time after the opens: they are that init's.
    check_alive(req)?;
    let target = make_target(root.as_fd(), &disk.target, disk.file, owner)
        .map_err(|e| format!("mount point /{}: {e}", disk.target))?;
    let tree = prepare_tree(disk, userns.as_ref())?;
    nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("enter the container's mount namespace: {e}"))?;
    attach(tree, target, root.as_fd(), disk).inspect_err(|_| {
        let _ = detach(&disk.target);
    })
}

fn hotplug_remove(req: &MountRequest, pidfd: &OwnedFd, target: &str) -> Result<(), String> {
    check_alive(req)?;
    nix::sched::setns(pidfd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("enter the container's mount namespace: {e}"))?;
    match detach(target) {
        // Not mounted (skipped at start, or unmounted from inside): nothing to do.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        r => r.map_err(|e| format!("unmount /{target}: {e}")),
    }
}

/// Detach the mount on `/target`, looked up from this process's root (the container's,
/// after `setns`), the last component not followed.
fn detach(target: &str) -> nix::Result<()> {
    let path = format!("/{}", target.trim_start_matches('/'));
    nix::mount::umount2(
        path.as_str(),
        nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
    )
}

/// Run `exe forkmount` for `req` and wait for it; its stderr is the error.
pub fn run_forkmount(exe: &Path, req: &MountRequest) -> Result<(), String> {
    let json = serde_json::to_string(req).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg("forkmount")
        .env(SPEC_ENV, json)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if msg.is_empty() {
            format!("forkmount failed: {}", out.status)
        } else {
            msg
        })
    }
}

/// A disk device's source as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// Symlinks resolved.
    pub canonical: PathBuf,
    /// A file (anything but a directory).
    pub file: bool,
    /// `st_dev` of the filesystem it is on.
    pub dev: u64,
}

/// Look up a source: `Ok(None)` if it does not exist.
pub fn inspect_source(path: &Path) -> io::Result<Option<SourceInfo>> {
    let canonical = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = fs::metadata(&canonical)?;
    Ok(Some(SourceInfo {
        file: !md.is_dir(),
        dev: md.dev(),
        canonical,
    }))
}

/// `MAJ:MIN` as the kernel writes it (`/sys/.../dev`).
pub fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (maj, min) = text.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// The block device (whole disk) behind filesystem `dev` (an `st_dev`), found under
/// `sys_dev_block` (`/sys/dev/block`): a partition's disk is its parent directory there.
/// An error says why there is none (tmpfs, overlay, btrfs and other filesystems on no
/// block device of their own).
pub fn block_device(sys_dev_block: &Path, dev: u64) -> Result<(u32, u32), String> {
    let (maj, min) = (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let link = sys_dev_block.join(format!("{maj}:{min}"));
    let Ok(real) = fs::canonicalize(&link) else {
        return Err(format!(
            "its filesystem ({maj}:{min}) has no block device behind it (tmpfs, overlay, \
             btrfs and network filesystems have none): I/O limits cannot apply"
        ));
    };
    if real.join("partition").exists() {
        let disk = real.parent().map(|p| p.join("dev")).unwrap_or_default();
        return fs::read_to_string(&disk)
            .ok()
            .and_then(|t| parse_dev(&t))
            .ok_or_else(|| format!("no disk found for partition {maj}:{min}"));
    }
    Ok((maj, min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::spec::Propagation;

    #[test]
    fn partitions_resolve_to_their_disk() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let sys = tmp.path();
        let disk = sys.join("devices/block/sda");
        fs::create_dir_all(disk.join("sda1"))?;
        fs::write(disk.join("dev"), "8:0\n")?;
        fs::write(disk.join("sda1/dev"), "8:1\n")?;
        fs::write(disk.join("sda1/partition"), "1\n")?;
        let loop0 = sys.join("devices/block/loop0");
        fs::create_dir_all(&loop0)?;
        fs::write(loop0.join("dev"), "7:0\n")?;
        let by_dev = sys.join("dev/block");
        fs::create_dir_all(&by_dev)?;
        std::os::unix::fs::symlink(disk.join("sda1"), by_dev.join("8:1"))?;
        std::os::unix::fs::symlink(&disk, by_dev.join("8:0"))?;
        std::os::unix::fs::symlink(&loop0, by_dev.join("7:0"))?;
        let dev = |maj, min| nix::sys::stat::makedev(maj, min);
        assert_eq!(block_device(&by_dev, dev(8, 1)), Ok((8, 0)));
        assert_eq!(block_device(&by_dev, dev(8, 0)), Ok((8, 0)));
        assert_eq!(block_device(&by_dev, dev(7, 0)), Ok((7, 0)));
        let e = block_device(&by_dev, dev(0, 42)).expect_err("tmpfs has none");
        assert!(e.contains("no block device"), "{e}");
        assert_eq!(parse_dev("259:3\n"), Some((259, 3)));
        assert_eq!(parse_dev("x"), None);
        Ok(())
    }

    #[test]
    fn mount_points_are_made_inside_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root_dir = tmp.path().join("root");
        fs::create_dir_all(root_dir.join("etc"))?;
        // An image may point anywhere: it resolves inside the root.
        std::os::unix::fs::symlink("/etc", root_dir.join("link"))?;
        std::os::unix::fs::symlink("../../../../..", root_dir.join("up"))?;
        let root = nix::fcntl::open(
            &root_dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        make_target(root.as_fd(), "srv/data", false, None)?;
        assert!(root_dir.join("srv/data").is_dir());
        make_target(root.as_fd(), "srv/one.conf", true, None)?;
        assert!(root_dir.join("srv/one.conf").is_file());
        make_target(root.as_fd(), "link/x", false, None)?;
        assert!(
            root_dir.join("etc/x").is_dir(),
            "the symlink stayed in the root"
        );
        make_target(root.as_fd(), "up/escaped", false, None)?;
        assert!(root_dir.join("escaped").is_dir(), "`..` stops at the root");
        assert!(!tmp.path().join("escaped").exists());
        assert!(make_target(root.as_fd(), "srv/data", true, None).is_err());
        assert!(make_target(root.as_fd(), "srv/one.conf", false, None).is_err());
        assert!(make_target(root.as_fd(), "a/../b", false, None).is_err());
        Ok(())
    }

    #[test]
    fn mount_requests_round_trip() {
        let req = MountRequest {
            pid: 7,
            starttime: 9,
            action: MountAction::Add(DiskMount {
                source: "/srv/data".into(),
                target: "data".into(),
                file: false,
                readonly: true,
                shift: true,
                recursive: false,
                propagation: Propagation::Rslave,
            }),
        };
        let json = serde_json::to_string(&req).unwrap_or_default();
        assert_eq!(serde_json::from_str::<MountRequest>(&json).ok(), Some(req));
    }
}
