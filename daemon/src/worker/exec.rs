//! Running a command inside a running container: the hidden `forkexec` entry and the
//! command line ctld builds for it.
//!
//! `ctld forkexec` (single threaded, no runtime) joins the container's cgroup, enters all
//! its namespaces at once through a pidfd (no PID-reuse race), forks the command (it must be
//! a child to be in the container's PID namespace), supervises it and exits with its status.
//! The command dies with it (`PR_SET_PDEATHSIG`), so ctld ends an exec by killing one
//! process.
//!
//! Interactive execs get a PTY from the container's own devpts (so `tty` names a device
//! that exists inside); the supervisor copies stdin → PTY → stdout. Control messages arrive
//! as lines on fd 3 ([`CONTROL_FD`]): `resize COLS ROWS` and `signal N`.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use serde::{Deserialize, Serialize};

use super::proc::starttime;
use super::spec::Namespace;
use super::sys::{self, CloneResult};

/// What to run where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub pid: i32,
    pub starttime: u64,
    pub namespaces: Vec<Namespace>,
    pub cgroup_procs: Vec<PathBuf>,
    /// Capabilities dropped, as for the container's init.
    pub caps_drop: Vec<u32>,
    /// The seccomp filter, as for the container's init.
    pub syscalls: super::seccomp::SyscallPolicy,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Run on a PTY (stdin, stdout and stderr are its slave).
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub width: u16,
    #[serde(default)]
    pub height: u16,
}

/// The descriptor on which `forkexec` reads control lines.
pub const CONTROL_FD: i32 = 3;

/// A control message for a running exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// New terminal size (columns, rows).
    Resize(u16, u16),
    /// Send this signal to the command.
    Signal(i32),
}

impl Control {
    /// The wire line (`resize 80 24\n`, `signal 2\n`).
    pub fn line(self) -> String {
        match self {
            Control::Resize(c, r) => format!("resize {c} {r}\n"),
            Control::Signal(n) => format!("signal {n}\n"),
        }
    }

    /// Parse one line; `None` for anything malformed.
    pub fn parse(line: &str) -> Option<Control> {
        let mut it = line.split_whitespace();
        match (it.next()?, it.next(), it.next()) {
            ("resize", Some(c), Some(r)) => Some(Control::Resize(c.parse().ok()?, r.parse().ok()?)),
            ("signal", Some(n), None) => {
                let n: i32 = n.parse().ok()?;
                (1..=64).contains(&n).then_some(Control::Signal(n))
            }
            _ => None,
        }
    }
}

/// A running `ctld forkexec`, seen from ctld: the process (stdio piped) and the write end
/// of its control pipe.
pub struct ExecChild {
    pub child: tokio::process::Child,
    pub control: tokio::net::unix::pipe::Sender,
}

/// Start `program args` (normally `ctld forkexec`) with piped stdio and the control pipe on
/// fd [`CONTROL_FD`]. The process is killed if the handle is dropped.
pub fn spawn_exec(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> io::Result<ExecChild> {
    let (control, control_rx) = tokio::net::unix::pipe::pipe()?;
    let control_rx = control_rx.into_blocking_fd()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    sys::pass_fd_as(&mut cmd, control_rx, CONTROL_FD);
    let child = cmd.spawn()?;
    // Dropping the command closes our copy of the pipe's read end.
    drop(cmd);
    Ok(ExecChild { child, control })
}

/// Exit code when the command does not exist (as a shell says it).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the command cannot be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;

/// The environment variable that carries the [`ExecSpec`] to `ctld forkexec` (the
/// environment of a process is readable by root only, its command line by everyone).
pub const SPEC_ENV: &str = "CTL_EXEC_SPEC";

/// Entry point of `ctld forkexec` (spec in [`SPEC_ENV`]). Returns the exit code.
pub fn forkexec_main(spec_json: &str) -> i32 {
    let spec: ExecSpec = match serde_json::from_str(spec_json) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ctl exec: bad spec: {e}");
            return EXIT_CANNOT_EXEC;
        }
    };
    // Checked before `enter` moves this process into the container's mount namespace (the
    // proof keeps the host's /proc/self/task open for the fork below).
    let single = match sys::SingleThreaded::check_now() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ctl exec: {e}");
            return EXIT_CANNOT_EXEC;
        }
    };
    // By the protocol with `spawn_exec`, descriptor 3 is the control pipe's read end.
    let control = sys::take_inherited_fd(&single, CONTROL_FD);
    // Nothing in the container may ptrace this process or its child before the command is
    // exec'd, nor open their `/proc/<pid>/exe` (the host's ctld binary) or `fd/` (as runc
    // does against CVE-2019-5736). `execve` of the command resets it.
    if let Err(e) = sys::set_non_dumpable() {
        eprintln!("ctl exec: set non-dumpable: {e}");
        return EXIT_CANNOT_EXEC;
    }
    let in_userns = match enter(&spec) {
        Ok(u) => u,
        Err(msg) => {
            eprintln!("ctl exec: {msg}");
            return EXIT_CANNOT_EXEC;
        }
    };
    // The PTY comes from the container's devpts: we are in its mount namespace now.
    let pty = if spec.interactive {
        match open_pty(spec.width, spec.height) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("ctl exec: allocate a terminal: {e}");
                return EXIT_CANNOT_EXEC;
            }
        }
    } else {
        None
    };
    let parent = std::process::id() as i32;
    let forked = sys::fork_process(&single);
    match forked {
        Err(e) => {
            eprintln!("ctl exec: fork: {e}");
            EXIT_CANNOT_EXEC
        }
        Ok(CloneResult::Child) => {
            // The control pipe is the supervisor's, not the command's.
            drop(control);
            let slave = pty.as_ref().map(|(_, path)| path.as_path());
            sys::exit_now(run_command(&spec, parent, slave, in_userns))
        }
        Ok(CloneResult::Parent(pid)) => supervise(pid, pty.map(|(master, _)| master), control),
    }
}

/// A PTY master and the path of its slave (inside the container).
fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, PathBuf)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let path = nix::pty::ptsname_r(&master)?;
    let master: OwnedFd = master.into();
    if cols > 0 && rows > 0 {
        sys::set_winsize(&master, cols, rows)?;
    }
    Ok((master, PathBuf::from(path)))
}

/// Wait for the command while serving control lines and, with a PTY, copying stdin to it
/// and its output to stdout. Returns the exit code to leave with.
fn supervise(child: i32, master: Option<OwnedFd>, control: Option<OwnedFd>) -> i32 {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    if master.is_none() {
        // Our copies of the pipes must not keep the streams open after the command ends.
        if let Ok(null) = &null {
            for fd in 0..3 {
                let _ = sys::dup2(null, fd);
            }
        }
    } else if let Ok(null) = &null {
        let _ = sys::dup2(null, 2);
    }
    let Ok(pidfd) = sys::pidfd_open(child) else {
        return wait_status(child);
    };
    // The master never blocks us: input waits in a bounded queue (and stdin is not read
    // while it is full), so a command that does not read cannot stall signals or resizes.
    if let Some(m) = &master {
        let _ = nix::fcntl::fcntl(
            m.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    const INPUT_QUEUE: usize = 256 * 1024;
    let mut master = master.map(fs::File::from);
    let mut control = control.map(fs::File::from);
    let mut stdin_open = master.is_some();
    let mut to_master: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut pending = String::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let stdin = io::stdin();
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ctl_at = control.as_ref().map(|c| {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let master_at = master.as_ref().map(|m| {
            let mut f = PollFlags::POLLIN;
            if !to_master.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(m.as_fd(), f));
            fds.len() - 1
        });
        let stdin_at = (stdin_open && to_master.len() < INPUT_QUEUE).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .is_some_and(|r| !(r - PollFlags::POLLOUT).is_empty())
        };
        let writable = master_at
            .and_then(|i| fds[i].revents())
            .is_some_and(|r| r.contains(PollFlags::POLLOUT));
        let (child_done, ctl_ready, master_ready, stdin_ready) = (
            ready(Some(0)),
            ready(ctl_at),
            ready(master_at),
            ready(stdin_at),
        );
        drop(fds);
        if ctl_ready && let Some(c) = control.as_mut() {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => control = None,
                Ok(n) => {
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(i) = pending.find('\n') {
                        let line: String = pending.drain(..=i).collect();
                        apply_control(child, master.as_ref(), &line);
                    }
                }
            }
        }
        if stdin_ready && master.is_some() {
            match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => to_master.extend(&buf[..n]),
            }
        }
        if writable && let Some(m) = master.as_mut() {
            let (a, _) = to_master.as_slices();
            match m.write(a) {
                Ok(n) => {
                    to_master.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => to_master.clear(),
            }
        }
        if master_ready && let Some(m) = master.as_mut() {
            match m.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EIO: every slave descriptor is closed; input has nowhere to go.
                Ok(0) | Err(_) => {
                    master = None;
                    stdin_open = false;
                    to_master.clear();
                }
                Ok(n) => {
                    // Stdout is line-buffered: flush, a prompt has no newline.
                    let mut out = io::stdout().lock();
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        // ctld went away: the command goes with us (death signal).
                        return EXIT_CANNOT_EXEC;
                    }
                }
            }
        }
        if child_done {
            if let Some(m) = master.as_mut() {
                drain(m);
            }
            break;
        }
    }
    wait_status(child)
}

/// Copy what the PTY still holds to stdout without blocking (the master is non-blocking).
fn drain(master: &mut fs::File) {
    let mut buf = [0u8; 16 * 1024];
    let mut out = io::stdout().lock();
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = out.flush();
}

fn apply_control(child: i32, master: Option<&fs::File>, line: &str) {
    match Control::parse(line) {
        Some(Control::Resize(c, r)) => {
            if let Some(m) = master {
                let _ = sys::set_winsize(m, c, r);
            }
        }
        Some(Control::Signal(n)) => {
            if let Ok(sig) = nix::sys::signal::Signal::try_from(n) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), sig);
            }
        }
        None => {}
    }
}

fn wait_status(pid: i32) -> i32 {
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => return EXIT_CANNOT_EXEC,
        }
    }
}

/// Whether process `pid` lives in another user namespace than this process.
fn other_user_namespace(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: String| fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    ino(format!("/proc/{pid}/ns/user")) != ino("/proc/self/ns/user".into())
}

/// Join the cgroup, then every namespace of the init at once (its user namespace too when
/// it has its own: the exec follows the running container, whatever its config says now).
/// Returns whether a user namespace was entered.
fn enter(spec: &ExecSpec) -> Result<bool, String> {
    let pidfd = sys::pidfd_open(spec.pid).map_err(|e| format!("container init gone: {e}"))?;
    if starttime(spec.pid) != Some(spec.starttime) {
        return Err("container is not running".into());
    }
    let me = std::process::id().to_string();
    for f in &spec.cgroup_procs {
        fs::write(f, &me).map_err(|e| format!("join cgroup {}: {e}", f.display()))?;
    }
    let mut flags = spec.namespaces.iter().fold(CloneFlags::empty(), |acc, n| {
        acc | CloneFlags::from_bits_truncate(n.clone_flag())
    });
    let userns = other_user_namespace(spec.pid);
    if userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    nix::sched::setns(pidfd.as_fd(), flags).map_err(|e| format!("setns: {e}"))?;
    Ok(userns)
}

/// In the forked child, inside the container: own session (with the PTY slave as its
/// controlling terminal and stdio when interactive), capabilities dropped, uid/gid, death
/// signal, chdir, exec.
fn run_command(spec: &ExecSpec, parent: i32, slave: Option<&Path>, in_userns: bool) -> i32 {
    // A session of our own: no terminal of ctld's session is reachable from inside.
    let _ = nix::unistd::setsid();
    if let Some(path) = slave {
        let tty = match fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ctl exec: open {}: {e}", path.display());
                return EXIT_CANNOT_EXEC;
            }
        };
        if let Err(e) = sys::set_controlling_tty(&tty) {
            eprintln!("ctl exec: controlling terminal: {e}");
            return EXIT_CANNOT_EXEC;
        }
        for fd in 0..3 {
            let _ = sys::dup2(&tty, fd);
        }
    }
    sys::reset_signals_for_exec();
    // The filter first (loading it without no_new_privs needs CAP_SYS_ADMIN), then the
    // capabilities, then the ids (dropping them needs CAP_SETPCAP).
    if let Err(e) = super::seccomp::load(&spec.syscalls) {
        eprintln!("ctl exec: seccomp: {e}");
        return EXIT_CANNOT_EXEC;
    }
    if let Err(e) = super::caps::apply(&spec.caps_drop) {
        eprintln!("ctl exec: capabilities: {e}");
        return EXIT_CANNOT_EXEC;
    }
    // In a user namespace this process is still host root, which the container does not
    // map: it takes the requested ids (root's too) before anything runs.
    if in_userns || spec.gid != 0 || spec.uid != 0 {
        let gid = nix::unistd::Gid::from_raw(spec.gid);
        if let Err(e) = nix::unistd::setgroups(&[gid])
            .and_then(|()| nix::unistd::setgid(gid))
            .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(spec.uid)))
        {
            eprintln!("ctl exec: set uid/gid: {e}");
            return EXIT_CANNOT_EXEC;
        }
    }
    // After the credential change (which clears it), and only if the parent still lives.
    // A parent outside our PID namespace shows as 0; after its death we would see the
    // container's init (or a subreaper) instead.
    let _ = sys::set_parent_death_signal(libc::SIGKILL);
    let ppid = nix::unistd::getppid().as_raw();
    if ppid != 0 && ppid != parent {
        return EXIT_CANNOT_EXEC;
    }
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    if let Err(e) = nix::unistd::chdir(cwd) {
        eprintln!("ctl exec: cwd {cwd}: {e}");
        return EXIT_CANNOT_EXEC;
    }
    let Some(arg0) = spec.argv.first() else {
        eprintln!("ctl exec: empty command");
        return EXIT_CANNOT_EXEC;
    };
    let path_var = spec.env.iter().find(|(k, _)| k == "PATH").map_or(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        |(_, v)| v.as_str(),
    );
    let Some(program) = resolve(arg0, path_var) else {
        eprintln!("ctl exec: {arg0}: command not found");
        return EXIT_NOT_FOUND;
    };
    let (Ok(program), Ok(argv), Ok(env)) = (
        CString::new(program),
        spec.argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>(),
        spec.env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        eprintln!("ctl exec: argument contains a NUL byte");
        return EXIT_CANNOT_EXEC;
    };
    // Whatever descriptor ctld or this process still holds closes at exec: the command
    // starts with its stdio only (CVE-2024-21626).
    if let Err(e) = sys::cloexec_from(3) {
        eprintln!("ctl exec: close descriptors: {e}");
        return EXIT_CANNOT_EXEC;
    }
    let err = nix::unistd::execve(&program, &argv, &env).err();
    eprintln!(
        "ctl exec: {arg0}: {}",
        err.map_or_else(|| "exec failed".to_string(), |e| e.desc().to_string())
    );
    if err == Some(nix::errno::Errno::ENOENT) {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXEC
    }
}

/// Find `cmd` on `path` like a shell does (a name with `/` is taken as is).
fn resolve(cmd: &str, path: &str) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = format!("{d}/{cmd}");
        nix::unistd::access(p.as_str(), nix::unistd::AccessFlags::X_OK)
            .ok()
            .map(|()| p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        for c in [Control::Resize(120, 40), Control::Signal(2)] {
            assert_eq!(Control::parse(&c.line()), Some(c));
        }
        for bad in [
            "resize 80",
            "signal 0",
            "signal 99",
            "signal x",
            "dance",
            "",
            "resize a b",
        ] {
            assert_eq!(Control::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolve_searches_path() {
        assert_eq!(resolve("/bin/x", "/nope").as_deref(), Some("/bin/x"));
        assert_eq!(
            resolve("sh", "/nonexistent:/bin").as_deref(),
            Some("/bin/sh")
        );
        assert_eq!(resolve("no-such-cmd-ctl", "/bin:/usr/bin"), None);
    }
}
