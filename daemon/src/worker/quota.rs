//! Project quotas, for `dir` storage pools: a container's writable directory gets a project
//! id of its own, carried by every file and directory below it (and inherited by what is
//! created there later), and the filesystem holding it a block limit for that project.
//! ext4 (made with the `quota` and `project` features, mounted with `prjquota`) and xfs
//! (mounted with `pquota`) enforce them; [`project_quota_supported`] says whether the
//! filesystem of a directory does. Blocking functions: call them off the async threads.
//!
//! The kernel interfaces are `quotactl_fd(2)` and the `FS_IOC_FS{GET,SET}XATTR` ioctls
//! (wrapped in [`super::sys`]). The tree [`set_project`] marks is a container's: it is walked
//! by descriptors, each entry opened relative to its parent without following symlinks,
//! looked at through `O_PATH` before it is opened for the ioctl, and the walk never leaves
//! the mount it started on.
//!
//! A limit does not bind a process with `CAP_SYS_RESOURCE` in the initial user namespace (the
//! kernel lets it exceed hard limits): it holds for unprivileged containers, and for
//! privileged ones only if they lose that capability.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxFlags};

use super::sys;

/// `PRJQUOTA` of `include/uapi/linux/quota.h` (`XQM_PRJQUOTA` for xfs, the same value).
const PRJQUOTA: libc::c_int = 2;
/// `FS_XFLAG_PROJINHERIT`: what is created in the directory takes its project id.
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// `FS_QUOTA_PDQ_ACCT` and `FS_QUOTA_PDQ_ENFD` of `fs_quota_statv.qs_flags`: project usage
/// is accounted, project limits are enforced.
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
/// `QIF_DQBLKSIZE`: the unit of `dqb_bhardlimit`.
const QUOTA_BLOCK: u64 = 1024;
/// `f_type` of the filesystems with project quotas.
const EXT4_SUPER_MAGIC: u64 = 0xef53;
const XFS_SUPER_MAGIC: u64 = 0x5846_5342;

/// An error with the path it happened on (kept as the source of the `io::Error`, whose kind
/// is the original's).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
struct AtPath {
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |source| {
        io::Error::new(
            source.kind(),
            AtPath {
                path: path.to_path_buf(),
                source,
            },
        )
    }
}

/// Open the directory `dir` (a host path) for `quotactl_fd` and the ioctls.
fn open_dir(dir: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )
    .map_err(|e| at(dir)(e.into()))
}

/// Whether the filesystem holding `dir` enforces project quotas (ext4 mounted with prjquota
/// and the `project`+`quota` features, or xfs with pquota): its `statfs` type is ext4 or xfs,
/// and `quotactl_fd(Q_XGETQSTATV)` says project quotas are both accounted and enforced
/// there. (`Q_GETINFO` would only tell that they are accounted: ext4 with the `quota`
/// feature accounts them even when mounted without `prjquota`.)
pub fn project_quota_supported(dir: &Path) -> bool {
    match project_quota_state(dir) {
        Ok(enforced) => enforced,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "no project quotas");
            false
        }
    }
}

fn project_quota_state(dir: &Path) -> io::Result<bool> {
    let fd = open_dir(dir, OFlags::empty())?;
    let fs = rustix::fs::fstatfs(&fd).map_err(|e| at(dir)(e.into()))?;
    // `f_type` is signed on some targets; the magic numbers are small and positive.
    #[allow(clippy::unnecessary_cast)]
    let magic = fs.f_type as u64;
    if magic != EXT4_SUPER_MAGIC && magic != XFS_SUPER_MAGIC {
        return Ok(false);
    }
    let state = sys::quota_state(fd.as_fd(), PRJQUOTA).map_err(at(dir))?;
    let want = FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD;
    Ok(state.flags & want == want)
}

/// The project id of the directory `dir` itself (not following a final symlink).
pub fn project_of(dir: &Path) -> io::Result<u32> {
    let fd = open_dir(dir, OFlags::NOFOLLOW)?;
    Ok(sys::fs_get_xattr(fd.as_fd()).map_err(at(dir))?.projid)
}

/// Give `dir` and every file and directory below it (same filesystem, never following
/// symlinks, no crossing mount points) project id `id`, and set `FS_XFLAG_PROJINHERIT` on
/// directories so what is created later inherits it (FS_IOC_FSGETXATTR/FS_IOC_FSSETXATTR).
/// Symlinks, device nodes, FIFOs and sockets take no ioctls and are left as they are (their
/// blocks are negligible); mount points below `dir` are neither marked nor entered. Fails on
/// a filesystem without the project feature (ext4: `EOPNOTSUPP` for an id other than 0).
pub fn set_project(dir: &Path, id: u32) -> io::Result<()> {
    // The final component is not followed either: `dir` must be the directory itself.
    let root = open_dir(dir, OFlags::NOFOLLOW)?;
    let st = statx_fd(root.as_fd()).map_err(at(dir))?;
    let mut walk = Walk {
        id,
        place: Place::of(&st),
        dirs: 0,
        files: 0,
        skipped: 0,
        mounts: 0,
    };
    walk.mark(root.as_fd(), true).map_err(at(dir))?;
    // Depth first, one open directory (and its stream) per level.
    let entries = Dir::read_from(&root).map_err(|e| at(dir)(e.into()))?;
    let mut stack = vec![(root, entries, dir.to_path_buf())];
    while let Some((parent, entries, path)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let entry = entry.map_err(|e| at(path)(e.into()))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let child_path = path.join(OsStr::from_bytes(name.to_bytes()));
        if let Some(child) = walk.visit(parent.as_fd(), name).map_err(at(&child_path))? {
            let entries = Dir::read_from(&child).map_err(|e| at(&child_path)(e.into()))?;
            stack.push((child, entries, child_path));
        }
    }
    tracing::debug!(
        dir = %dir.display(),
        project = id,
        dirs = walk.dirs,
        files = walk.files,
        skipped = walk.skipped,
        mount_points = walk.mounts,
        "project id set; symlinks, devices, FIFOs and sockets skipped"
    );
    Ok(())
}

/// The filesystem and mount a walk stays on.
struct Place {
    dev: (u32, u32),
    /// `None` where the kernel gives no mount id (before 5.8): the device alone decides.
    mnt_id: Option<u64>,
}

impl Place {
    fn of(st: &rustix::fs::Statx) -> Place {
        Place {
            dev: (st.stx_dev_major, st.stx_dev_minor),
            mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
        }
    }

    fn holds(&self, st: &rustix::fs::Statx) -> bool {
        let here = Place::of(st);
        here.dev == self.dev && (self.mnt_id.is_none() || here.mnt_id == self.mnt_id)
    }
}

fn statx_fd(fd: BorrowedFd<'_>) -> io::Result<rustix::fs::Statx> {
    Ok(rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH,
        StatxFlags::TYPE | StatxFlags::MNT_ID,
    )?)
}

struct Walk {
    id: u32,
    place: Place,
    dirs: u64,
    files: u64,
    skipped: u64,
    mounts: u64,
}

impl Walk {
    /// Mark the entry `name` of `parent`; returns it, opened, when it is a directory to
    /// enter. An entry removed meanwhile is passed over.
    fn visit(&mut self, parent: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<OwnedFd>> {
        // O_PATH opens nothing (no device is touched, no FIFO blocks), O_NOFOLLOW makes a
        // symlink the link itself: what is looked at is the entry and only the entry.
        let entry = match rustix::fs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = statx_fd(entry.as_fd())?;
        if !self.place.holds(&st) {
            self.mounts += 1;
            return Ok(None);
        }
        match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::Directory => {
                // `.` of the descriptor: exactly the directory looked at.
                let dir = rustix::fs::openat(
                    &entry,
                    c".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.mark(dir.as_fd(), true)?;
                self.dirs += 1;
                Ok(Some(dir))
            }
            FileType::RegularFile => {
                // Reopened through the descriptor's /proc link: the same inode, nothing
                // resolved again. O_NONBLOCK: a lease breaks with an error, not a wait.
                let file = rustix::fs::open(
                    format!("/proc/self/fd/{}", entry.as_raw_fd()),
                    OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.mark(file.as_fd(), false)?;
                self.files += 1;
                Ok(None)
            }
            _ => {
                self.skipped += 1;
                Ok(None)
            }
        }
    }

    /// Give the open file or directory `fd` the project id (and directories the inherit flag),
    /// unless it has them already.
    fn mark(&self, fd: BorrowedFd<'_>, dir: bool) -> io::Result<()> {
        let now = sys::fs_get_xattr(fd)?;
        let mut want = now;
        want.projid = self.id;
        if dir {
            want.xflags |= FS_XFLAG_PROJINHERIT;
        }
        if want != now {
            sys::fs_set_xattr(fd, &want)?;
        }
        Ok(())
    }
}

/// Set (`Some(bytes)`, rounded up to whole KiB) or clear (`None`) the hard block limit of
/// project `id` on the filesystem holding `dir` (`quotactl_fd(Q_SETQUOTA)`, `QIF_BLIMITS`:
/// the soft limit is cleared with it). `Some(0)` is refused: to the kernel a zero limit is
/// no limit.
pub fn set_project_limit(dir: &Path, id: u32, bytes: Option<u64>) -> io::Result<()> {
    let blocks = match bytes {
        None => 0,
        Some(0) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a quota of 0 bytes: clear the limit with None instead",
            ));
        }
        Some(b) => b.div_ceil(QUOTA_BLOCK),
    };
    let fd = open_dir(dir, OFlags::empty())?;
    let dq = libc::dqblk {
        dqb_bhardlimit: blocks,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: libc::QIF_BLIMITS,
    };
    sys::quota_set(fd.as_fd(), PRJQUOTA, id, &dq).map_err(at(dir))
}

/// Bytes charged to project `id` on the filesystem holding `dir` (`Q_GETQUOTA`,
/// `dqb_curspace`). Fails (`ESRCH`) where project quotas are not on.
pub fn project_usage(dir: &Path, id: u32) -> io::Result<u64> {
    let fd = open_dir(dir, OFlags::empty())?;
    let dq = sys::quota_get(fd.as_fd(), PRJQUOTA, id).map_err(at(dir))?;
    Ok(dq.dqb_curspace)
}

/// Whether project `id` has usage (blocks or inodes) or a limit on the filesystem holding
/// `dir`, to pick unused ids. Fails (`ESRCH`) where project quotas are not on.
pub fn project_in_use(dir: &Path, id: u32) -> io::Result<bool> {
    let fd = open_dir(dir, OFlags::empty())?;
    match sys::quota_get(fd.as_fd(), PRJQUOTA, id) {
        Ok(dq) => Ok(dq.dqb_curspace != 0
            || dq.dqb_curinodes != 0
            || dq.dqb_bhardlimit != 0
            || dq.dqb_bsoftlimit != 0
            || dq.dqb_ihardlimit != 0
            || dq.dqb_isoftlimit != 0),
        // xfs: no quota record for an id nothing ever used.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(at(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    //! On real filesystems: ext4 images on loop devices (`mkfs.ext4`, `losetup` and `mount`
    //! run as commands here, never in product code), each a guard that unmounts, detaches
    //! and removes what it made when dropped, also when the test fails.

    use super::*;
    use std::fs;
    use std::io::Write;
    use std::process::Command;

    fn root_or_skip(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "{test}: needs root, and CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("{test}: skipped, needs root");
        false
    }

    /// Run a command; its trimmed stdout, or why it failed.
    fn run(program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A mount on a temp dir, over a loop device when there is one; dropped: unmounted
    /// (lazily if busy), detached, removed.
    struct TestFs {
        dir: tempfile::TempDir,
        loop_dev: Option<String>,
        mounted: bool,
    }

    impl TestFs {
        fn new() -> Result<TestFs, String> {
            let dir = tempfile::Builder::new()
                .prefix("ctl-quota-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            fs::create_dir(dir.path().join("mnt")).map_err(|e| e.to_string())?;
            Ok(TestFs {
                dir,
                loop_dev: None,
                mounted: false,
            })
        }

        /// A 200 MiB ext4 (`mkfs.ext4 -O features`) mounted with `options`.
        fn ext4(features: Option<&str>, options: Option<&str>) -> Result<TestFs, String> {
            let mkfs = match features {
                Some(f) => vec!["-q", "-O", f],
                None => vec!["-q"],
            };
            TestFs::image(200, "mkfs.ext4", &mkfs, options)
        }

        /// A 300 MiB xfs (its smallest size) mounted without quotas: project ids, nothing
        /// that counts them (what this test kernel can do without quota support).
        fn xfs() -> Result<TestFs, String> {
            TestFs::image(300, "mkfs.xfs", &["-q"], None)
        }

        /// An image of `mib` MiB made by `mkfs args... image`, on a loop device, mounted
        /// with `options`.
        fn image(
            mib: u64,
            mkfs: &str,
            args: &[&str],
            options: Option<&str>,
        ) -> Result<TestFs, String> {
            let mut t = TestFs::new()?;
            let image = t.dir.path().join("image");
            let image_s = image.to_string_lossy().into_owned();
            fs::File::create(&image)
                .and_then(|f| f.set_len(mib << 20))
                .map_err(|e| e.to_string())?;
            let mut mkfs_args = args.to_vec();
            mkfs_args.push(&image_s);
            run(mkfs, &mkfs_args)?;
            let dev = run("losetup", &["--find", "--show", &image_s])?;
            t.loop_dev = Some(dev.clone());
            let mnt = t.mnt().to_string_lossy().into_owned();
            let mut mount = vec![];
            if let Some(o) = options {
                mount.extend(["-o", o]);
            }
            mount.extend([dev.as_str(), mnt.as_str()]);
            run("mount", &mount)?;
            t.mounted = true;
            Ok(t)
        }

        fn tmpfs() -> Result<TestFs, String> {
            let mut t = TestFs::new()?;
            let mnt = t.mnt().to_string_lossy().into_owned();
            run("mount", &["-t", "tmpfs", "-o", "size=16m", "tmpfs", &mnt])?;
            t.mounted = true;
            Ok(t)
        }

        fn mnt(&self) -> PathBuf {
            self.dir.path().join("mnt")
        }
    }

    impl Drop for TestFs {
        fn drop(&mut self) {
            let mnt = self.mnt().to_string_lossy().into_owned();
            if self.mounted
                && run("umount", &[&mnt]).is_err()
                && let Err(e) = run("umount", &["-l", &mnt])
            {
                eprintln!("cleanup: {e}");
            }
            if let Some(dev) = &self.loop_dev
                && let Err(e) = run("losetup", &["-d", dev])
            {
                eprintln!("cleanup: {e}");
            }
            // The temp dir (image, mount point) goes when `dir` drops, after this.
        }
    }

    /// Another mount (`mount ARGS... target`) inside a test filesystem, unmounted on drop.
    struct Mounted(PathBuf);

    impl Mounted {
        fn new(args: &[&str], target: &Path) -> Mounted {
            let t = target.to_string_lossy().into_owned();
            let mut all = args.to_vec();
            all.push(&t);
            run("mount", &all).unwrap_or_else(|e| panic!("{e}"));
            Mounted(target.to_path_buf())
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            let t = self.0.to_string_lossy().into_owned();
            if run("umount", &[&t]).is_err() {
                let _ = run("umount", &["-l", &t]);
            }
        }
    }

    fn xattr_of(path: &Path) -> sys::FsXattr {
        // Never follows a final symlink (the tests only ask about files and directories).
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sys::fs_get_xattr(fd.as_fd()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn projid(path: &Path) -> u32 {
        xattr_of(path).projid
    }

    /// Why this kernel cannot enforce ext4 project quotas, from its build configuration
    /// (`/proc/config.gz`, or `/boot/config-<release>`), when it says so.
    fn kernel_lacks_ext4_quota() -> Option<String> {
        use std::io::Read;
        let mut config = String::new();
        let from_proc = fs::File::open("/proc/config.gz")
            .and_then(|f| flate2::read::GzDecoder::new(f).read_to_string(&mut config));
        if from_proc.is_err() {
            let release = run("uname", &["-r"]).ok()?;
            config = fs::read_to_string(format!("/boot/config-{release}")).ok()?;
        }
        ["CONFIG_QUOTA", "CONFIG_QFMT_V2"]
            .iter()
            .find(|k| {
                !config
                    .lines()
                    .any(|l| l == format!("{k}=y") || l == format!("{k}=m"))
            })
            .map(|k| format!("the kernel is built without {k} (ext4 cannot mount with quotas)"))
    }

    /// An ext4 with project quotas enforced, or `None` (a printed skip) when the kernel is
    /// built without them; any other failure to make one fails the test.
    fn quota_ext4(test: &str) -> Option<TestFs> {
        match TestFs::ext4(Some("quota,project"), Some("prjquota")) {
            Ok(t) => Some(t),
            Err(e) => match kernel_lacks_ext4_quota() {
                // Not a missing package: this kernel cannot do it, CTL_REQUIRE_ALL or not.
                Some(why) => {
                    eprintln!("{test}: skipped (what needs enforced quotas), {why} ({e})");
                    None
                }
                None => panic!("{test}: an ext4 with project quotas: {e}"),
            },
        }
    }

    #[test]
    fn project_quota_support_is_told_per_filesystem() {
        if !root_or_skip("project_quota_support_is_told_per_filesystem") {
            return;
        }
        let tmpfs = TestFs::tmpfs().unwrap_or_else(|e| panic!("{e}"));
        assert!(!project_quota_supported(&tmpfs.mnt()), "tmpfs");
        let plain = TestFs::ext4(None, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !project_quota_supported(&plain.mnt()),
            "ext4 without features"
        );
        // Project ids, but nothing counts or enforces them.
        let project = TestFs::xfs().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !project_quota_supported(&project.mnt()),
            "xfs without pquota"
        );
        for e in [
            set_project_limit(&project.mnt(), 7, Some(1 << 20)).err(),
            project_usage(&project.mnt(), 7).err(),
            project_in_use(&project.mnt(), 7).err(),
        ] {
            let e = e.unwrap_or_else(|| panic!("a quota call succeeded without quotas"));
            assert!(
                e.to_string().contains(&*project.mnt().to_string_lossy()),
                "{e}"
            );
        }
        assert!(!project_quota_supported(Path::new(
            "/nonexistent/ctl-quota"
        )));

        let test = "project_quota_support_is_told_per_filesystem";
        let Some(quota) = quota_ext4(test) else {
            return;
        };
        assert!(project_quota_supported(&quota.mnt()), "ext4 with prjquota");
        drop(quota);
        // Accounted but not enforced: mounted without prjquota.
        let counted = TestFs::ext4(Some("quota,project"), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(!project_quota_supported(&counted.mnt()), "without prjquota");
    }

    #[test]
    fn set_project_marks_the_tree_and_never_leaves_it() {
        if !root_or_skip("set_project_marks_the_tree_and_never_leaves_it") {
            return;
        }
        // Project ids need no quotas: xfs has them always (ext4 only with the `project`
        // feature, which kernels without quota support refuse to mount).
        let t = TestFs::xfs().unwrap_or_else(|e| panic!("{e}"));
        let mnt = t.mnt();
        let outside = mnt.join("outside");
        let upper = mnt.join("upper");
        fs::create_dir_all(outside.join("dir")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(outside.join("secret"), "x").unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(upper.join("a/b/c")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(upper.join("a/b/c/file"), "deep").unwrap_or_else(|e| panic!("{e}"));
        fs::write(upper.join("top"), "top").unwrap_or_else(|e| panic!("{e}"));
        let link = |target: &Path, at: &str| {
            std::os::unix::fs::symlink(target, upper.join(at)).unwrap_or_else(|e| panic!("{e}"))
        };
        link(&outside.join("secret"), "to-secret");
        link(&outside, "to-outside");
        link(Path::new("../outside/dir"), "a/relative");
        nix::unistd::mkfifo(
            &upper.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // An overlay whiteout: a 0/0 character device.
        nix::sys::stat::mknod(
            &upper.join("whiteout"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Mount points below the tree: another filesystem, and the same one bound in.
        fs::create_dir(upper.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir(upper.join("bound")).unwrap_or_else(|e| panic!("{e}"));
        let outside_s = outside.to_string_lossy().into_owned();
        let _bound = Mounted::new(&["--bind", &outside_s], &upper.join("bound"));
        let _tmp = Mounted::new(&["-t", "tmpfs", "tmpfs"], &upper.join("tmp"));
        fs::write(upper.join("tmp/on-tmpfs"), "t").unwrap_or_else(|e| panic!("{e}"));

        set_project(&upper, 4242).unwrap_or_else(|e| panic!("{e}"));

        for inside in ["", "a", "a/b", "a/b/c"] {
            let x = xattr_of(&upper.join(inside));
            assert_eq!(x.projid, 4242, "{inside:?}");
            assert_ne!(x.xflags & FS_XFLAG_PROJINHERIT, 0, "{inside:?} inherits");
        }
        for inside in ["a/b/c/file", "top"] {
            let x = xattr_of(&upper.join(inside));
            assert_eq!(x.projid, 4242, "{inside:?}");
            assert_eq!(x.xflags & FS_XFLAG_PROJINHERIT, 0, "{inside:?} is a file");
        }
        // Nothing outside, reached by a link or through the bind mount, changed.
        for out in ["secret", "dir", ""] {
            let x = xattr_of(&outside.join(out));
            assert_eq!(x.projid, 0, "outside/{out}");
            assert_eq!(x.xflags & FS_XFLAG_PROJINHERIT, 0, "outside/{out}");
        }
        // The bind-mount point itself is the outside directory: untouched above.
        assert_eq!(projid(&mnt), 0, "the filesystem's root");

        // What is created later inherits the id.
        fs::create_dir(upper.join("new")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(upper.join("new/file"), "n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(projid(&upper.join("new")), 4242);
        assert_eq!(projid(&upper.join("new/file")), 4242);

        // Again, to another id: everything moves, still nothing outside.
        set_project(&upper, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(projid(&upper.join("new/file")), 7);
        assert_eq!(projid(&upper.join("a/b/c/file")), 7);
        assert_eq!(projid(&outside.join("secret")), 0);
        // A symlink as the root is refused, not followed.
        let e = set_project(&upper.join("to-outside"), 9).err();
        assert!(e.is_some_and(|e| e.to_string().contains("to-outside")));
        assert_eq!(projid(&outside), 0);
    }

    /// Write up to `limit` bytes to `path` (appending) in 1 MiB chunks, each fsync'ed;
    /// returns what was written and the error that stopped it.
    fn write_until_error(path: &Path, limit: u64) -> (u64, Option<io::Error>) {
        let mut f = match fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) => return (0, Some(e)),
        };
        let chunk = vec![0x5au8; 1 << 20];
        let mut written = 0;
        while written < limit {
            match f.write(&chunk).and_then(|n| f.sync_data().map(|()| n)) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) => return (written, Some(e)),
            }
        }
        (written, None)
    }

    /// Run `f` on a thread without `CAP_SYS_RESOURCE` in its effective set: with it (root
    /// here), the kernel lets writes go past hard quota limits. Capabilities are per thread.
    fn without_sys_resource<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut caps =
                    rustix::thread::capabilities(None).unwrap_or_else(|e| panic!("capget: {e}"));
                caps.effective
                    .remove(rustix::thread::CapabilitySet::SYS_RESOURCE);
                rustix::thread::set_capabilities(None, caps)
                    .unwrap_or_else(|e| panic!("capset: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|_| panic!("the writer thread panicked"))
        })
    }

    #[test]
    fn a_project_limit_stops_writes_at_the_quota() {
        const MIB: u64 = 1 << 20;
        let test = "a_project_limit_stops_writes_at_the_quota";
        if !root_or_skip(test) {
            return;
        }
        let Some(t) = quota_ext4(test) else {
            return;
        };
        let mnt = t.mnt();
        let upper = mnt.join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(upper.join("etc/hostname"), "c1").unwrap_or_else(|e| panic!("{e}"));
        let id = (1000..2000)
            .find(|&id| !project_in_use(&mnt, id).unwrap_or(true))
            .unwrap_or_else(|| panic!("no unused project id"));
        set_project(&upper, id).unwrap_or_else(|e| panic!("{e}"));
        set_project_limit(&upper, id, Some(64 * MIB)).unwrap_or_else(|e| panic!("{e}"));
        assert!(project_in_use(&mnt, id).unwrap_or_else(|e| panic!("{e}")));

        let big = upper.join("big");
        let (written, err) = without_sys_resource(|| write_until_error(&big, 100 * MIB));
        let err = err.unwrap_or_else(|| panic!("100 MiB went into a 64 MiB quota"));
        // ext4 answers a full project quota with EDQUOT at write() (delayed allocation
        // reserves quota then): on Debian's 6.1 kernel, EDQUOT after 65532 KiB (the
        // directories' blocks are charged too). xfs gives ENOSPC for project quotas.
        eprintln!("{test}: stopped after {} KiB: {err}", written / 1024);
        assert!(
            [Some(libc::EDQUOT), Some(libc::ENOSPC)].contains(&err.raw_os_error()),
            "{err}"
        );
        assert!((60 * MIB..=64 * MIB).contains(&written), "{written}");
        let used = project_usage(&mnt, id).unwrap_or_else(|e| panic!("{e}"));
        assert!((60 * MIB..=64 * MIB).contains(&used), "usage {used}");

        // The same filesystem outside the project still takes writes.
        let (outside, err) = without_sys_resource(|| write_until_error(&mnt.join("host"), 8 * MIB));
        assert!(err.is_none() && outside == 8 * MIB, "{outside} {err:?}");

        // No limit: the write goes on.
        set_project_limit(&upper, id, None).unwrap_or_else(|e| panic!("{e}"));
        let (more, err) = without_sys_resource(|| write_until_error(&big, 16 * MIB));
        assert!(err.is_none() && more == 16 * MIB, "{more} {err:?}");
        let used = project_usage(&mnt, id).unwrap_or_else(|e| panic!("{e}"));
        assert!(used >= written + 16 * MIB, "usage {used}");
        assert!(project_in_use(&mnt, id).unwrap_or_else(|e| panic!("{e}")));

        // A new file in a new directory is the project's, and counted.
        fs::create_dir(upper.join("new")).unwrap_or_else(|e| panic!("{e}"));
        fs::write(upper.join("new/file"), vec![1u8; 1 << 20]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(projid(&upper.join("new/file")), id);
        assert_eq!(projid(&upper.join("new")), id);
        let grown = project_usage(&mnt, id).unwrap_or_else(|e| panic!("{e}"));
        assert!(grown >= used + MIB, "usage {grown} after {used}");
        assert!(!project_in_use(&mnt, id + 1000).unwrap_or_else(|e| panic!("{e}")));
    }
}
