//! The only place in ctld with `unsafe`: thin, documented wrappers over syscalls that nix
//! does not wrap (or wraps as `unsafe`). Each function does one syscall and nothing else.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Result of [`clone_process`] as seen by the caller.
pub enum CloneResult {
    /// In the parent: the child's PID (in the caller's PID namespace).
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// Proof that the process is single threaded, checked again at every fork: the only way to
/// call [`clone_process`] and [`fork_process`], whose children could otherwise inherit locks
/// (the allocator's among them) held by threads that do not exist in them.
///
/// Made at a hidden entry (`forkstart`'s monitor, `forkexec`, `forkprobe`), before any
/// `setns`: it holds `/proc/self/task` of the host's procfs open, so the count stays right
/// after the process moves into a container's mount namespace. Not `Send`: it cannot be
/// handed to another thread.
pub struct SingleThreaded {
    tasks: OwnedFd,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl SingleThreaded {
    /// Open this process' task directory and check that it has one thread.
    pub fn check_now() -> io::Result<SingleThreaded> {
        let tasks = rustix::fs::open(
            "/proc/self/task",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let proof = SingleThreaded {
            tasks,
            _not_send: std::marker::PhantomData,
        };
        proof.recheck()?;
        Ok(proof)
    }

    /// Count the threads again (a thread started since would make a fork unsound).
    fn recheck(&self) -> io::Result<()> {
        let mut threads = 0;
        for entry in rustix::fs::Dir::read_from(&self.tasks)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                threads += 1;
            }
        }
        match threads {
            1 => Ok(()),
            n => Err(io::Error::other(format!(
                "{n} threads: refusing to fork a multi-threaded process"
            ))),
        }
    }
}

/// `clone(2)` with `flags | SIGCHLD` and no new stack: fork semantics plus new namespaces.
/// Fails without forking if the process is no longer single threaded.
pub fn clone_process(proof: &SingleThreaded, flags: libc::c_int) -> io::Result<CloneResult> {
    proof.recheck()?;
    // SAFETY: raw clone without CLONE_VM and with a NULL stack behaves like fork(2): the
    // child gets a copy-on-write copy of the address space and continues on its own copy of
    // the stack. The process was just seen to have one thread, so no lock can be held by
    // another thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(CloneResult::Child),
        pid => Ok(CloneResult::Parent(pid as libc::pid_t)),
    }
}

/// `fork(2)`, for the single-threaded hidden entries (see [`clone_process`]).
pub fn fork_process(proof: &SingleThreaded) -> io::Result<CloneResult> {
    clone_process(proof, 0)
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new descriptor
    // that we own exclusively.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(2)`: signal the process a pidfd refers to (no PID-reuse race).
pub fn pidfd_send_signal(fd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments and a NULL siginfo, as the man page allows.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `close_range(first, last, 0)`: close every descriptor in the range.
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: closing descriptors we do not use after this point; callers pass ranges that
    // exclude the descriptors they still need.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drop capability `cap` from the bounding set (`prctl(PR_CAPBSET_DROP)`).
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ask for `sig` when the parent dies (`prctl(PR_SET_PDEATHSIG)`).
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring a network interface up with `SIOCSIFFLAGS` (used for `lo` in a fresh netns; one
/// ioctl is far cheaper than a netlink round trip or an `ip` process).
pub fn interface_up(name: &str) -> io::Result<()> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sock` is a descriptor we just opened and own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS reads into `req`, which is a valid, properly sized ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq naming the interface.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `_exit(2)`: leave a forked child without running atexit handlers or destructors that
/// belong to the parent's copy of the process.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Restore default dispositions a Rust `main` changes (SIGPIPE is ignored by the Rust
/// runtime, and ignored dispositions survive `execve`) and unblock every signal, so a
/// container's processes start with a clean signal state.
pub fn reset_signals_for_exec() {
    // SAFETY: setting a signal to SIG_DFL installs no handler code; the process is single
    // threaded and about to exec.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
}

/// `dup2(2)`: make `target` refer to `src` (used to set up stdio before exec).
pub fn dup2(src: &impl std::os::fd::AsFd, target: RawFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 onto a fixed descriptor number this process reserves for stdio or the
    // error pipe; whatever was open there is replaced on purpose and nothing else owns it.
    let ret = unsafe { libc::dup2(src.as_fd().as_raw_fd(), target) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set a terminal's window size (`TIOCSWINSZ`); the foreground process group gets SIGWINCH.
pub fn set_winsize(fd: &impl std::os::fd::AsFd, cols: u16, rows: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which points at a valid value
    // that outlives the call.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the terminal `fd` the calling session leader's controlling terminal (`TIOCSCTTY`).
pub fn set_controlling_tty(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal) and no pointer.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take ownership of the descriptor a parent passed at the fixed number `fd` (the exec
/// control pipe on fd 3), if it is open. Only at a hidden entry (the proof), and only once
/// per process: nothing else can own that number yet, and nothing will own it twice.
pub fn take_inherited_fd(_at_entry: &SingleThreaded, fd: RawFd) -> Option<OwnedFd> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    // SAFETY: F_GETFD only queries flags; it fails with EBADF when `fd` is not open.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: the descriptor is open and, by the protocol with our parent and the one-time
    // flag above, owned by nothing else in this process.
    open.then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receive one descriptor sent with `SCM_RIGHTS` on the Unix socket `sock` (and one byte of
/// data); it arrives close-on-exec.
pub fn recv_fd(sock: &impl std::os::fd::AsFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our table for this
                // message; nothing else knows its number.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                // Extra descriptors (a confused sender) are closed, never leaked.
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

/// Arrange for `fd` to appear as descriptor `target` in the child `cmd` starts.
pub fn pass_fd_as(cmd: &mut tokio::process::Command, fd: OwnedFd, target: RawFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: the closure runs in the forked child before exec and only calls dup2 and
    // fcntl, both async-signal-safe. `fd` is moved into the closure, so it stays open in the
    // parent until the command (and the closure) is dropped after spawning.
    unsafe {
        cmd.pre_exec(move || {
            let raw = fd.as_raw_fd();
            if raw == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(raw, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `open_tree(2)` with `OPEN_TREE_CLONE`: a detached copy of the mount at
/// `path`, held by the returned descriptor (nothing is attached anywhere yet).
pub fn open_tree_clone(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // Not AT_RECURSIVE: only the mount `path` is on; whatever is mounted below it never
    // reaches a container.
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `path` is a valid NUL-terminated string alive for the call; the other
    // arguments are integers. On success the result is a new descriptor we own.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`: make the detached mount `mnt` (from
/// [`open_tree_clone`]) show its files through the id map of the user namespace `userns`
/// (recursively). Only valid on a mount that was never attached.
pub fn mount_set_idmap(
    mnt: std::os::fd::BorrowedFd<'_>,
    userns: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    // The kernel's `struct mount_attr` (four u64, `MOUNT_ATTR_SIZE_VER0`).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the path is an empty NUL-terminated string (with AT_EMPTY_PATH the descriptor
    // itself is meant); `attr` is a valid `mount_attr` of the size passed, alive for the
    // call, and only read by the kernel.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `open_tree(2)` flags for [`open_tree`].
pub mod tree {
    /// A detached copy of the mount (else an `O_PATH`-like handle on it).
    pub const CLONE: libc::c_uint = 1;
    /// With the mounts below it.
    pub const RECURSIVE: libc::c_uint = 0x8000;
    /// `path` is empty: the descriptor (or the working directory, for `AT_FDCWD`) is meant.
    pub const EMPTY_PATH: libc::c_uint = 0x1000;
}

/// `open_tree(2)` of `path` relative to `dir` (`None`: the working directory), `flags` from
/// [`tree`]; always close-on-exec. With [`tree::CLONE`] the result holds a detached copy.
pub fn open_tree(
    dir: Option<std::os::fd::BorrowedFd<'_>>,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let flags = flags | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `path` is a valid NUL-terminated string alive for the call; the other
    // arguments are integers. On success the result is a new descriptor we own.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// What [`mount_setattr`] changes on a mount.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountChange {
    /// Make it read-only.
    pub rdonly: bool,
    /// An `MS_*` propagation type (0: unchanged).
    pub propagation: u64,
    /// Apply to the mounts below it too.
    pub recursive: bool,
}

/// `mount_setattr(2)` on the mount `mnt` is the root of (`AT_EMPTY_PATH`): read-only,
/// propagation, and an id map from the user namespace `userns` (only on a mount never
/// attached).
pub fn mount_setattr(
    mnt: std::os::fd::BorrowedFd<'_>,
    change: MountChange,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let mut attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: change.propagation,
        userns_fd: 0,
    };
    if change.rdonly {
        attr.attr_set |= MOUNT_ATTR_RDONLY;
    }
    if let Some(ns) = userns {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if change.recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: the path is an empty NUL-terminated string (the descriptor is meant); `attr`
    // is a valid `mount_attr` of the size passed, alive for the call, only read.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `move_mount(2)` from descriptor to descriptor: attach the detached mount `mnt` on the
/// file or directory `target` is an (`O_PATH`) descriptor of.
pub fn move_mount_onto(
    mnt: std::os::fd::BorrowedFd<'_>,
    target: std::os::fd::BorrowedFd<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are empty NUL-terminated strings (the descriptors are meant).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fsopen(2)`: a filesystem context for `fstype`, to be configured with [`fsconfig_string`].
pub fn fsopen(fstype: &std::ffi::CStr) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    // SAFETY: `fstype` is a valid NUL-terminated string alive for the call.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `fsconfig(2)` with `FSCONFIG_SET_STRING`: set option `key` to `value`.
pub fn fsconfig_string(
    fs: std::os::fd::BorrowedFd<'_>,
    key: &std::ffi::CStr,
    value: &std::ffi::CStr,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    // SAFETY: both strings are valid and NUL-terminated for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `MOUNT_ATTR_*` flags of a new mount ([`fs_create_and_mount`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountAttrs(u32);

impl MountAttrs {
    /// No restriction (a container's own root).
    pub const NONE: MountAttrs = MountAttrs(0);
    /// `nosuid`, `nodev`, `noexec`: a tree only ctld reads and writes, never runs from.
    pub const INERT: MountAttrs = MountAttrs(0x2 | 0x4 | 0x8);

    fn bits(self) -> libc::c_uint {
        self.0
    }
}

/// `fsconfig(FSCONFIG_CMD_CREATE)` then `fsmount(2)`: create the superblock configured in
/// `fs` and return a detached mount of it.
pub fn fs_create_and_mount(
    fs: std::os::fd::BorrowedFd<'_>,
    attrs: MountAttrs,
) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value (NULL, 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: integer arguments only; on success a new descriptor we own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs.bits(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `move_mount(2)`: attach the detached mount `mnt` on `target` (relative to the working
/// directory) in the caller's mount namespace.
pub fn move_mount_to(mnt: std::os::fd::BorrowedFd<'_>, target: &std::ffi::CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    // SAFETY: the source path is empty (the descriptor is meant) and `target` is a valid
    // NUL-terminated string; both are alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the calling process non-dumpable (`PR_SET_DUMPABLE 0`): no process without
/// `CAP_SYS_PTRACE` over the initial user namespace can ptrace it or open its `/proc` files
/// (`exe`, `fd/`, `mem`). `execve` of a normal binary resets it.
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `openat2(2)`: open `path` relative to `dir` with `flags` (`O_*`, `O_CLOEXEC` included by the
/// caller), `mode` (only with `O_CREAT`, else 0) and `resolve` (`RESOLVE_*`), which restricts
/// how the kernel walks the path. With `RESOLVE_IN_ROOT` every `..` and absolute symlink is
/// resolved as if `dir` were `/`, so the result can never lie outside `dir`.
pub fn openat2(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: open_how is plain old data (three u64) and all-zero is a valid value; the kernel
    // requires unused fields to be zero.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how, both alive for
    // the whole call, and the size passed is the size of that struct; the kernel only reads
    // them. `dir` is a descriptor borrowed for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Mark every descriptor from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`): whatever the daemon inherited from whoever started it must never
/// reach a container or an exec'd command.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: only sets a flag on descriptors; nothing is closed or reused.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `open_by_handle_at(mount_fd, NULL, O_RDONLY)`, for the seccomp tests: after its
/// permission check the kernel fails the NULL handle with `EFAULT`, so any other error
/// (`ENOSYS`) means a filter answered first. Never returns a descriptor.
#[cfg(test)]
pub fn open_by_handle_at_null(mount_fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a NULL handle pointer is never dereferenced in user space; the kernel checks
    // user pointers and fails with EFAULT. The descriptor is borrowed for the call. Should
    // the call succeed anyway, the descriptor it returns is closed at once.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_fd().as_raw_fd(),
            std::ptr::null_mut::<libc::c_void>(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    drop(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
    Ok(())
}

/// `bpf(BPF_PROG_LOAD)`: load `insns` (each the 8 bytes of a `struct bpf_insn`, in native
/// order) as a program of `prog_type` declaring `license`, named `name` (at most 15 bytes of
/// `[A-Za-z0-9_.]`, shown by `bpftool`). No verifier log is asked for. Returns the program's
/// descriptor.
pub fn bpf_prog_load(
    prog_type: u32,
    insns: &[u64],
    license: &std::ffi::CStr,
    name: &str,
) -> io::Result<OwnedFd> {
    /// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`; the
    /// kernel zero-fills what a shorter attr leaves out.
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    let mut prog_name = [0u8; 16];
    if name.len() >= prog_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let insn_cnt =
        u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `attr` is a fully initialised `bpf_attr` prefix of the size passed, alive for the
    // call; its two pointers refer to `insns` (`insn_cnt` × 8 readable bytes) and the
    // NUL-terminated `license`, both borrowed for the call. With no log buffer the kernel only
    // reads our memory. On success it returns a new descriptor that nothing else owns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened descriptor not owned by anything else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `bpf(BPF_PROG_ATTACH)`: attach program `prog` to `target` (a cgroup directory for the
/// cgroup attach types) as `attach_type` with `flags` (`BPF_F_*`).
pub fn bpf_prog_attach(
    target: std::os::fd::BorrowedFd<'_>,
    prog: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// The `BPF_PROG_ATTACH` part of `union bpf_attr`, up to `attach_flags`.
    #[repr(C)]
    struct ProgAttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }
    const BPF_PROG_ATTACH: libc::c_long = 8;
    let fd = |f: std::os::fd::BorrowedFd<'_>| {
        u32::try_from(f.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let attr = ProgAttachAttr {
        target_fd: fd(target)?,
        attach_bpf_fd: fd(prog)?,
        attach_type,
        attach_flags: flags,
    };
    // SAFETY: `attr` is a fully initialised `bpf_attr` prefix of the size passed, holding only
    // integers (two descriptors borrowed for the call); the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct fsxattr` (`include/uapi/linux/fs.h`), read and written by
/// [`fs_get_xattr`] and [`fs_set_xattr`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsXattr {
    /// `FS_XFLAG_*`.
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    /// The project id (project quotas).
    pub projid: u32,
    pub cowextsize: u32,
    pad: [u8; 8],
}

/// `_IOC(dir, 'X', nr, sizeof(struct fsxattr))`, as the kernel's `_IOR`/`_IOW` build it.
const fn fsxattr_ioctl(dir: libc::c_ulong, nr: libc::c_ulong) -> libc::c_ulong {
    const SIZE: libc::c_ulong = std::mem::size_of::<FsXattr>() as libc::c_ulong;
    (dir << 30) | (SIZE << 16) | ((b'X' as libc::c_ulong) << 8) | nr
}
const _: () = assert!(std::mem::size_of::<FsXattr>() == 28);
/// `FS_IOC_FSGETXATTR`: `_IOR('X', 31, struct fsxattr)` (`_IOC_READ` is 2).
const FS_IOC_FSGETXATTR: libc::c_ulong = fsxattr_ioctl(2, 31);
/// `FS_IOC_FSSETXATTR`: `_IOW('X', 32, struct fsxattr)` (`_IOC_WRITE` is 1).
const FS_IOC_FSSETXATTR: libc::c_ulong = fsxattr_ioctl(1, 32);
const _: () = assert!(FS_IOC_FSGETXATTR == 0x801c_581f && FS_IOC_FSSETXATTR == 0x401c_5820);

/// `ioctl(FS_IOC_FSGETXATTR)`: the extended attributes (flags, project id) of the file or
/// directory `fd` is open on (not an `O_PATH` descriptor: those take no ioctls).
pub fn fs_get_xattr(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<FsXattr> {
    use std::os::fd::AsRawFd;
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr` through the pointer; `attr` is a
    // valid, writable value of that layout (checked size 28) alive for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr as *mut FsXattr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// `ioctl(FS_IOC_FSSETXATTR)`: set the flags and project id of the file or directory `fd`
/// is open on (changing a project id needs the initial user namespace).
pub fn fs_set_xattr(fd: std::os::fd::BorrowedFd<'_>, attr: &FsXattr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: FS_IOC_FSSETXATTR only reads one `struct fsxattr` from the pointer, which
    // points at a valid value of that layout alive for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, attr as *const FsXattr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct fs_quota_statv` (`include/uapi/linux/dqblk_xfs.h`), filled in by
/// [`quota_state`]; only the fields ctld reads are public.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaStateV {
    version: i8,
    pad1: u8,
    /// `FS_QUOTA_{U,G,P}DQ_{ACCT,ENFD}`.
    pub flags: u16,
    incoredqs: u32,
    files: [[u64; 3]; 3],
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}
const _: () = assert!(std::mem::size_of::<QuotaStateV>() == 160);

/// `quotactl_fd(2)` (Linux 5.14) with a command whose argument is `addr`.
///
/// # Safety
/// `addr` must point at a value of the type and size `cmd` reads or writes, alive for the
/// call.
unsafe fn quotactl_fd(
    fd: std::os::fd::BorrowedFd<'_>,
    cmd: libc::c_int,
    qtype: libc::c_int,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integer arguments and `addr`, valid for `cmd` by this function's contract.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            libc::QCMD(cmd, qtype) as libc::c_uint,
            id as libc::c_int,
            addr,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `quotactl_fd(Q_XGETQSTATV)`: the state of the quota types of the filesystem `fd` is on
/// (`qtype` only selects the command; the answer covers all three). ext4 and xfs answer it.
pub fn quota_state(fd: std::os::fd::BorrowedFd<'_>, qtype: libc::c_int) -> io::Result<QuotaStateV> {
    /// `XQM_CMD(8)`.
    const Q_XGETQSTATV: libc::c_int = ((b'X' as libc::c_int) << 8) + 8;
    let mut state = QuotaStateV {
        version: 1, // FS_QSTATV_VERSION1
        ..QuotaStateV::default()
    };
    // SAFETY: Q_XGETQSTATV reads the version and writes one `struct fs_quota_statv`
    // (size 160, checked above) through `addr`, which points at `state`.
    unsafe {
        quotactl_fd(
            fd,
            Q_XGETQSTATV,
            qtype,
            0,
            (&mut state as *mut QuotaStateV).cast(),
        )
    }?;
    Ok(state)
}

/// `quotactl_fd(Q_GETQUOTA)`: limits and usage of quota `id` of type `qtype` on the
/// filesystem `fd` is on (`struct if_dqblk`, libc's `dqblk`).
pub fn quota_get(
    fd: std::os::fd::BorrowedFd<'_>,
    qtype: libc::c_int,
    id: u32,
) -> io::Result<libc::dqblk> {
    // SAFETY: dqblk is plain old data (integers); all-zero is a valid value.
    let mut dq: libc::dqblk = unsafe { std::mem::zeroed() };
    // SAFETY: Q_GETQUOTA writes one `struct if_dqblk` (libc's `dqblk`, the same layout)
    // through `addr`, which points at `dq`.
    unsafe {
        quotactl_fd(
            fd,
            libc::Q_GETQUOTA,
            qtype,
            id,
            (&mut dq as *mut libc::dqblk).cast(),
        )
    }?;
    Ok(dq)
}

/// `quotactl_fd(Q_SETQUOTA)`: set the fields of quota `id` that `dq.dqb_valid` (`QIF_*`)
/// names.
pub fn quota_set(
    fd: std::os::fd::BorrowedFd<'_>,
    qtype: libc::c_int,
    id: u32,
    dq: &libc::dqblk,
) -> io::Result<()> {
    // SAFETY: Q_SETQUOTA only reads one `struct if_dqblk` (libc's `dqblk`) through `addr`;
    // the cast to a mutable pointer is what the syscall's signature asks for, nothing is
    // written.
    unsafe {
        quotactl_fd(
            fd,
            libc::Q_SETQUOTA,
            qtype,
            id,
            (dq as *const libc::dqblk).cast_mut().cast(),
        )
    }
}

/// Raise this process's soft limit on open files to its hard limit (at most 2^20); returns
/// the new soft limit. Containers inherit it, as under LXD and Incus (whose service units
/// raise theirs the same way).
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let want = hard.min(1 << 20).max(soft);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(io::Error::from)?;
    Ok(want)
}

/// Hand the C allocator's free memory back to the kernel. glibc keeps what a burst of
/// allocations freed (thousands of connections' buffers, spread over the runtime threads'
/// arenas) for reuse, so the daemon's RSS would stay at its peak; this trims every arena.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists (under its
    // locks); it takes no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod single_thread_tests {
    use super::*;

    #[test]
    fn a_process_with_a_second_thread_cannot_fork() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let refused = SingleThreaded::check_now().err().map(|e| e.to_string());
        let _ = tx.send(());
        let _ = other.join();
        let why = refused.unwrap_or_default();
        assert!(why.contains("threads: refusing to fork"), "{why:?}");
    }
}
