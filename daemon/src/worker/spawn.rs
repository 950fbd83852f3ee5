//! Starting a container's init: the daemon side ([`Starters::spawn_init`]) and the hidden
//! `forkstart` entry ([`forkstart_main`]) that ctld re-executes itself into.
//!
//! Process model: ctld (multi-threaded, tokio) never forks itself. It runs `ctld forkstart`
//! and writes the [`SpawnSpec`] on its stdin. That process is single threaded; it starts a
//! new session and forks the **monitor**, which reads the spec; once the spec parses,
//! `forkstart` exits, so the monitor is nobody's child but init's and outlives ctld. The
//! monitor clones the container's init into new namespaces, puts it in its cgroup, lets it
//! run, reports `{pid, starttime, monitor}` on the pipe ctld reads, and then waits for the
//! init to exit and removes the cgroup. A ctld that restarts finds containers by PID and
//! start time, so killing ctld never touches them.
//!
//! The exec of the ctld binary and the fork of the monitor cost about 3 ms on a 2-core VM
//! (loading a 20 MiB binary, its relocations, a fork) and need nothing from the spec, so
//! ctld keeps one `forkstart` ready ([`Starters`]): a start hands its spec to the ready one
//! and a new one is made after the report, off the start's path.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::proc::starttime;
use super::spec::{MountEntry, MountFlag, Namespace, SpawnSpec};
use super::sys::{self, CloneResult};

/// Errors starting a container.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("running {exe}: {source}")]
    Exec {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the container monitor: {0}")]
    Pipe(#[source] io::Error),
    #[error("the container monitor gave no answer")]
    NoReport,
    #[error("the container did not start within {} s (a mount that hangs?): stopped", .0.as_secs())]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Container(String),
}

/// A running container's init, as the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProcess {
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22): with the PID it
    /// identifies the process even after PID reuse.
    pub starttime: u64,
    pub monitor_pid: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Report {
    Ok(InitProcess),
    Err { error: String },
}

/// A `ctld forkstart` waiting for its spec: already executed, in its own session, with the
/// monitor forked and reading stdin.
#[derive(Debug)]
pub struct Starter {
    child: Child,
}

impl Starter {
    /// Run `exe forkstart` with piped stdin and stdout.
    pub fn new(exe: &Path) -> Result<Starter, SpawnError> {
        let child = Command::new(exe)
            .arg("forkstart")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SpawnError::Exec {
                exe: exe.to_path_buf(),
                source,
            })?;
        Ok(Starter { child })
    }

    /// Whether it still waits for a spec (it exits if its monitor died).
    fn waiting(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Hand over the serialized spec. The monitor reads it to EOF before it acts, so a
    /// failure here means nothing was started.
    fn send(&mut self, spec: &[u8]) -> Result<(), SpawnError> {
        let mut stdin = self.child.stdin.take().ok_or(SpawnError::NoReport)?;
        stdin.write_all(spec).map_err(SpawnError::Pipe)
    }

    /// The monitor's report, waited for up to `deadline`. A monitor that says nothing by
    /// then (stuck in a mount, say) is killed with its process group (`forkstart` made
    /// itself a session and group leader; the monitor is in its group), so a start can
    /// never hold its instance's lock forever.
    fn report(&mut self, deadline: std::time::Duration) -> Result<InitProcess, SpawnError> {
        let stdout = self.child.stdout.take().ok_or(SpawnError::NoReport)?;
        if !readable_within(&stdout, deadline).map_err(SpawnError::Pipe)? {
            let group = Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
            return Err(SpawnError::Timeout(deadline));
        }
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(SpawnError::Pipe)?;
        match serde_json::from_str::<Report>(line.trim()) {
            Ok(Report::Ok(p)) => Ok(p),
            Ok(Report::Err { error }) => Err(SpawnError::Container(error)),
            Err(_) => Err(SpawnError::NoReport),
        }
    }
}

/// How long a start may take from the spec handed over to the init reported running.
pub const START_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `fd` has something to read (or its end) within `deadline`.
fn readable_within(fd: &impl std::os::fd::AsFd, deadline: std::time::Duration) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let end = std::time::Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Keeps one [`Starter`] ready for the next start (see the module docs). Shared by clones
/// of the worker; a start that finds none (the first one, or parallel ones) runs
/// `forkstart` itself.
#[derive(Debug, Clone, Default)]
pub struct Starters {
    ready: Arc<Mutex<Option<Starter>>>,
}

impl Starters {
    /// Start the container described by `spec` with the ready `forkstart` of `exe` (or a
    /// new one) and wait until its init runs (or failed), then make the next one ready on a
    /// thread of its own. Blocking: call from a blocking thread.
    pub fn spawn_init(&self, exe: &Path, spec: &SpawnSpec) -> Result<InitProcess, SpawnError> {
        let json = serde_json::to_vec(spec).map_err(|e| SpawnError::Container(e.to_string()))?;
        let mut starter = match self.take() {
            Some(s) => s,
            None => Starter::new(exe)?,
        };
        if starter.send(&json).is_err() {
            // It died after `take` looked: it started nothing, so run a new one.
            let _ = starter.child.kill();
            let _ = starter.child.wait();
            starter = Starter::new(exe)?;
            starter.send(&json)?;
        }
        let result = starter.report(START_DEADLINE);
        // forkstart exits once its monitor has the spec: reap it.
        let _ = starter.child.wait();
        self.refill(exe);
        result
    }

    /// The ready starter, if it still waits.
    fn take(&self) -> Option<Starter> {
        let mut s = self.ready.lock().ok()?.take()?;
        if s.waiting() {
            return Some(s);
        }
        let _ = s.child.wait();
        None
    }

    fn refill(&self, exe: &Path) {
        let (ready, exe) = (self.ready.clone(), exe.to_path_buf());
        let made = std::thread::Builder::new()
            .name("ctl-starter".into())
            .spawn(move || match Starter::new(&exe) {
                Ok(s) => {
                    if let Ok(mut slot) = ready.lock()
                        && slot.is_none()
                    {
                        *slot = Some(s);
                        return;
                    }
                    // Another thread was quicker: this one gets EOF and exits.
                    let mut s = s;
                    drop(s.child.stdin.take());
                    let _ = s.child.wait();
                }
                Err(e) => tracing::debug!(error = %e, "no forkstart made ready"),
            });
        if let Err(e) = made {
            tracing::debug!(error = %e, "no thread to make a forkstart ready");
        }
    }
}

/// Entry point of `ctld forkstart`. Never starts an async runtime. Returns the exit code:
/// 0 once the monitor has a valid spec, 1 otherwise (the monitor reports why on stdout).
pub fn forkstart_main() -> i32 {
    // A session of our own: no terminal signals from ctld's session reach the container.
    // (forkstart is not a group leader, so this cannot fail with EPERM.)
    if let Err(e) = nix::unistd::setsid() {
        report(&Report::Err {
            error: format!("setsid: {e}"),
        });
        return 1;
    }
    // Pin no filesystem of the caller's working directory.
    let _ = nix::unistd::chdir("/");
    // The monitor says on this pipe that its spec parsed; EOF without it: it failed.
    let (parsed_r, parsed_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            report(&Report::Err {
                error: format!("pipe: {e}"),
            });
            return 1;
        }
    };
    let forked = sys::SingleThreaded::check_now().and_then(|p| sys::fork_process(&p));
    match forked {
        Err(e) => {
            let _ = report(&Report::Err {
                error: format!("fork monitor: {e}"),
            });
            1
        }
        Ok(CloneResult::Parent(_)) => {
            drop(parsed_w);
            let mut b = [0u8; 1];
            match File::from(parsed_r).read(&mut b) {
                Ok(1) => 0,
                _ => 1,
            }
        }
        Ok(CloneResult::Child) => {
            drop(parsed_r);
            sys::exit_now(read_spec_and_monitor(parsed_w))
        }
    }
}

/// The monitor's start: read the spec from stdin (waiting as long as ctld keeps it
/// ready), tell `forkstart` it parsed, then run the container.
fn read_spec_and_monitor(parsed: OwnedFd) -> i32 {
    let mut input = Vec::new();
    if io::stdin().read_to_end(&mut input).is_err() {
        return 1;
    }
    let spec: SpawnSpec = match serde_json::from_slice(&input) {
        Ok(s) => s,
        Err(e) => {
            let _ = report(&Report::Err {
                error: format!("bad spawn spec: {e}"),
            });
            return 1;
        }
    };
    if let Some(path) = &spec.monitor_log {
        log_to(path);
    }
    let _ = File::from(parsed).write_all(b"1");
    monitor(&spec)
}

/// Make `path` (appended, created 0600) this process's stderr. Best effort: without it,
/// stderr stays where it was (nowhere).
fn log_to(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let opened = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path);
    if let Ok(f) = opened {
        let _ = sys::dup2(&f, 2);
    }
}

/// One line in the monitor's log (its stderr), with the time and its PID.
fn monitor_says(what: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    eprintln!("{now} monitor[{}]: {what}", std::process::id());
}

/// Write the report line for ctld; false if nobody reads it any more.
fn report(r: &Report) -> bool {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, r).is_ok()
        && out.write_all(b"\n").is_ok()
        && out.flush().is_ok()
}

/// The monitor: clone the init, place it, report, then wait for it to exit.
fn monitor(spec: &SpawnSpec) -> i32 {
    let fail = |error: String| {
        monitor_says(format_args!("start failed: {error}"));
        let _ = report(&Report::Err { error });
        1
    };
    let (go_r, go_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {e}")),
    };
    let (err_r, err_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {e}")),
    };
    let log = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&spec.log)
    {
        Ok(f) => f,
        Err(e) => return fail(format!("open {}: {e}", spec.log.display())),
    };
    let console = match &spec.console {
        None => None,
        Some(sock) => match super::console::open_console()
            .and_then(|(m, slave)| super::console::listen(sock).map(|l| (m, slave, l)))
        {
            Ok(c) => Some(c),
            Err(e) => return fail(format!("console {}: {e}", sock.display())),
        },
    };
    // The root filesystem reaches the init as a descriptor over this socket: the init may
    // run as an unprivileged host user that cannot even walk the path to its own rootfs.
    let (rootfs_tx, rootfs_rx) = match nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => return fail(format!("socketpair: {e}")),
    };
    // The init starts in the mount point: a new mount namespace keeps the working
    // directory, so the init attaches its root on "." without looking the path up.
    if let Err(e) = nix::unistd::chdir(&spec.rootfs) {
        return fail(format!("chdir {}: {e}", spec.rootfs.display()));
    }
    let flags = spec
        .namespaces
        .iter()
        .filter(|n| **n != Namespace::Cgroup)
        .fold(0, |acc, n| acc | n.clone_flag());
    let cloned = sys::SingleThreaded::check_now().and_then(|p| sys::clone_process(&p, flags));
    let pid = match cloned {
        Err(e) => return fail(format!("clone: {e}")),
        Ok(CloneResult::Child) => {
            drop(go_w);
            drop(err_r);
            drop(rootfs_tx);
            let slave = console.as_ref().map(|(_, path, _)| path.as_path());
            let mut err_w = Some(err_w);
            let msg = match container_child(spec, go_r, rootfs_rx, &mut err_w, &log, slave) {
                Err(m) => m,
                Ok(never) => match never {},
            };
            if let Some(err_w) = err_w {
                let _ = File::from(err_w).write_all(msg.as_bytes());
            }
            sys::exit_now(1);
        }
        Ok(CloneResult::Parent(pid)) => pid,
    };
    let _ = nix::unistd::chdir("/");
    drop(go_r);
    drop(err_w);
    drop(rootfs_rx);
    drop(log);
    let child = Pid::from_raw(pid);
    let abort = |error: String| {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        fail(error)
    };
    for f in &spec.cgroup_procs {
        if let Err(e) = fs::write(f, pid.to_string()) {
            return abort(format!("join cgroup {}: {e}", f.display()));
        }
    }
    if let Some(map) = &spec.id_map {
        if let Err(e) = write_id_map(pid, map) {
            return abort(format!("id map: {e}"));
        }
        // The console is opened by the container's root, a host user of its own.
        if let Some((_, slave, _)) = &console {
            let (uid, gid) = (map.host_uid(0), map.host_gid(0));
            if let Err(e) = nix::unistd::chown(
                slave.as_path(),
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
            ) {
                return abort(format!("console owner: {e}"));
            }
        }
    }
    let root = match overlay_root(spec, pid) {
        Ok(fd) => fd,
        Err(e) => return abort(e),
    };
    let disks = match disk_trees(spec, pid) {
        Ok(d) => d,
        Err(e) => return abort(e),
    };
    if let Err(e) = send_fd(&rootfs_tx, &root) {
        return abort(format!("hand over the root filesystem: {e}"));
    }
    drop(root);
    for d in disks {
        if let Err(e) = send_fd(&rootfs_tx, &d) {
            return abort(format!("hand over a disk device: {e}"));
        }
    }
    drop(rootfs_tx);
    if let Err(e) = File::from(go_w).write_all(b"1") {
        return abort(format!("start init: {e}"));
    }
    let mut msg = String::new();
    let _ = File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(child, None);
        return fail(msg);
    }
    let Some(st) = starttime(pid).filter(|st| super::proc::is_alive(pid, *st)) else {
        let _ = waitpid(child, None);
        return fail("init exited at once".into());
    };
    let init = InitProcess {
        pid,
        starttime: st,
        monitor_pid: std::process::id() as i32,
    };
    // Recorded on the host before ctld hears of it: a ctld that dies before it records the
    // start finds this init again from the file.
    if let Some(path) = &spec.state_file
        && let Err(e) = write_state(path, &init)
    {
        return abort(format!("record the init in {}: {e}", path.display()));
    }
    let reported = report(&Report::Ok(init));
    if !reported {
        // ctld went away before it learned about this init: it would never manage it.
        monitor_says(format_args!(
            "ctld went away before it heard of init {pid}: killing it"
        ));
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    } else {
        monitor_says(format_args!("init {pid} started"));
    }
    detach_stdio(spec.monitor_log.is_some());
    if let (Some((master, slave, listener)), Some(sock)) = (console, &spec.console)
        && let Ok(exit) = sys::pidfd_open(pid)
    {
        super::console::serve(&exit, master, Some(slave), listener, sock, &spec.log);
    }
    loop {
        match waitpid(child, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => {
                monitor_says(format_args!("init {pid} exited with status {code}"));
                break;
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                monitor_says(format_args!("init {pid} was killed by {sig}"));
                break;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                monitor_says(format_args!("waiting for init {pid}: {e}"));
                break;
            }
            Ok(_) => continue,
        }
    }
    if let Some(path) = &spec.state_file {
        let _ = fs::remove_file(path);
    }
    // The init is gone (and with it every process of its PID namespace): remove the now
    // empty cgroup, so a container that powered itself off leaves nothing behind. ctld
    // waits for this process to exit before it starts the container again.
    // The init ran in the inner cgroup (with whatever sub-cgroups the container made), the
    // limits sit on its parent: both go.
    for procs in &spec.cgroup_procs {
        if let Some(inner) = procs.parent() {
            remove_cgroup_dir(inner);
            if let Some(outer) = inner.parent() {
                remove_cgroup_dir(outer);
            }
        }
    }
    0
}

/// Write `init` to `path` whole or not at all (a temporary file renamed over it).
fn write_state(path: &Path, init: &InitProcess) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec(init).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

/// The init a monitor recorded in `path`, if the file is there and reads whole.
pub fn read_state(path: &Path) -> Option<InitProcess> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Remove an empty cgroup directory and its sub-cgroups, deepest first; cgroupfs answers
/// EBUSY for a few ms while the last tasks exit.
fn remove_cgroup_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    for _ in 0..20 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => break,
        }
    }
    if dir.exists() {
        monitor_says(format_args!(
            "could not remove the cgroup {}",
            dir.display()
        ));
    }
}

pub(super) fn write_id_map(pid: i32, map: &super::spec::IdMap) -> io::Result<()> {
    let fmt = |r: &[super::spec::IdRange]| {
        r.iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
            .collect::<String>()
    };
    // setgroups(2) stays allowed: the maps are written by host root, and `su`, `login` and
    // daemons that drop privileges inside need it.
    fs::write(format!("/proc/{pid}/uid_map"), fmt(&map.uids))?;
    fs::write(format!("/proc/{pid}/gid_map"), fmt(&map.gids))
}

/// The container's root filesystem as a detached overlay mount, made here by host root
/// ([`super::rootfs::overlay`]); the init attaches it in its mount namespace.
fn overlay_root(spec: &SpawnSpec, pid: i32) -> Result<OwnedFd, String> {
    let userns = match (&spec.id_map, spec.idmap_lower) {
        (Some(_), true) => Some(
            File::open(format!("/proc/{pid}/ns/user"))
                .map_err(|e| format!("user namespace of the init: {e}"))?,
        ),
        _ => None,
    };
    let layers = super::rootfs::Layers {
        lower: &spec.lower,
        idmap_lower: userns.is_some(),
        upper: &spec.upper,
        work: &spec.work,
    };
    super::rootfs::overlay(&layers, userns.as_ref(), super::sys::MountAttrs::NONE)
        .map_err(|e| format!("{e} (root of {})", spec.rootfs.display()))
}

/// The `disk` devices of the spec as detached mounts, in order, each made by a child of
/// the monitor ([`super::disk::prepare_tree`] may change the namespaces of its process).
fn disk_trees(spec: &SpawnSpec, pid: i32) -> Result<Vec<OwnedFd>, String> {
    let disks: Vec<&super::spec::DiskMount> = spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountEntry::Disk(d) => Some(d),
            _ => None,
        })
        .collect();
    if disks.is_empty() {
        return Ok(Vec::new());
    }
    let userns = match &spec.id_map {
        Some(_) => Some(
            File::open(format!("/proc/{pid}/ns/user"))
                .map_err(|e| format!("user namespace of the init: {e}"))?,
        ),
        None => None,
    };
    let mut out = Vec::with_capacity(disks.len());
    for d in disks {
        let (tx, rx) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        let (err_r, err_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let forked = sys::SingleThreaded::check_now().and_then(|p| sys::fork_process(&p));
        match forked {
            Err(e) => return Err(format!("fork: {e}")),
            Ok(CloneResult::Child) => {
                drop(rx);
                drop(err_r);
                let code = match super::disk::prepare_tree(d, userns.as_ref()) {
                    Ok(fd) => match send_fd(&tx, &fd) {
                        Ok(()) => 0,
                        Err(e) => {
                            let _ = File::from(err_w).write_all(format!("send: {e}").as_bytes());
                            1
                        }
                    },
                    Err(e) => {
                        let _ = File::from(err_w).write_all(e.as_bytes());
                        1
                    }
                };
                sys::exit_now(code);
            }
            Ok(CloneResult::Parent(child)) => {
                drop(tx);
                drop(err_w);
                let mut msg = String::new();
                // EOF once the child exits (it holds the only write end).
                let _ = File::from(err_r).read_to_string(&mut msg);
                let _ = waitpid(Pid::from_raw(child), None);
                if !msg.is_empty() {
                    return Err(format!("disk device /{}: {msg}", d.target));
                }
                let fd = sys::recv_fd(&rx)
                    .map_err(|e| format!("disk device /{}: no mount received: {e}", d.target))?;
                out.push(fd);
            }
        }
    }
    Ok(out)
}

/// Send descriptor `fd` over the Unix socket `sock` (one byte of data, the descriptor as
/// `SCM_RIGHTS`).
fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(b"r")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Point stdin and stdout (and stderr unless it is the monitor's log) at /dev/null: ctld's
/// pipes must not be held open by the monitor.
fn detach_stdio(keep_stderr: bool) {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..if keep_stderr { 2 } else { 3 } {
            let _ = sys::dup2(&null, fd);
        }
    }
}

/// Runs in the cloned child (PID 1 of the new PID namespace). Returns only on failure.
fn container_child(
    spec: &SpawnSpec,
    go: OwnedFd,
    rootfs: OwnedFd,
    err: &mut Option<OwnedFd>,
    log: &File,
    console: Option<&Path>,
) -> Result<std::convert::Infallible, String> {
    let mut b = [0u8; 1];
    match File::from(go).read(&mut b) {
        Ok(1) => {}
        _ => return Err("monitor went away".into()),
    }
    if spec.id_map.is_some() {
        // Until now this process was host root seen from a namespace where root is not
        // mapped: become the container's root (full capabilities in its user namespace).
        let root_gid = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_gid, root_gid, root_gid)
            .and_then(|()| {
                let root = nix::unistd::Uid::from_raw(0);
                nix::unistd::setresuid(root, root, root)
            })
            .and_then(|()| nix::unistd::setgroups(&[]))
            .map_err(|e| format!("become the container's root: {e}"))?;
    }
    let root = sys::recv_fd(&rootfs).map_err(|e| format!("receive the root filesystem: {e}"))?;
    let disk_count = spec
        .mounts
        .iter()
        .filter(|m| matches!(m, MountEntry::Disk(_)))
        .count();
    let mut disks = Vec::with_capacity(disk_count);
    for _ in 0..disk_count {
        disks.push(sys::recv_fd(&rootfs).map_err(|e| format!("receive a disk device: {e}"))?);
    }
    drop(rootfs);
    if spec.namespaces.contains(&Namespace::Cgroup) {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    }
    if spec.namespaces.contains(&Namespace::Uts) {
        nix::unistd::sethostname(&spec.name).map_err(|e| format!("sethostname: {e}"))?;
    }
    // The console's slave lives on the host's devpts: open it before pivot_root, bind it
    // as /dev/console and make it the init's stdio (not its controlling terminal: the init
    // hands the console to a getty or shell of its own session, as on a real machine).
    let mut spec_mounts = spec.clone();
    let tty = match console {
        None => None,
        Some(path) => {
            for m in &mut spec_mounts.mounts {
                if let MountEntry::Bind { source, target, .. } = m
                    && target == "dev/console"
                {
                    *source = path.to_path_buf();
                }
            }
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            // O_NOCTTY: the console is the init's stdio, not its controlling terminal, so
            // Ctrl-C on the console never signals the init.
            let t = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(path)
                .map_err(|e| format!("open console {}: {e}", path.display()))?;
            Some(t)
        }
    };
    let spec = &spec_mounts;
    setup_rootfs(spec, root, disks)?;
    if spec.namespaces.contains(&Namespace::Net) {
        sys::interface_up("lo").map_err(|e| format!("bring up lo: {e}"))?;
    }
    // The filter first (loading it without no_new_privs needs CAP_SYS_ADMIN, and setuid
    // programs inside must keep working), then the capabilities.
    super::seccomp::load(&spec.syscalls).map_err(|e| format!("seccomp: {e}"))?;
    super::caps::apply(&spec.caps_drop).map_err(|e| format!("capabilities: {e}"))?;
    // stdio: the console; without one, nothing to read and output to the log file.
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    match &tty {
        Some(t) => {
            for fd in 0..3 {
                sys::dup2(t, fd).map_err(|e| format!("dup2: {e}"))?;
            }
        }
        None => {
            sys::dup2(&null, 0).map_err(|e| format!("dup2: {e}"))?;
            sys::dup2(log, 1).map_err(|e| format!("dup2: {e}"))?;
            sys::dup2(log, 2).map_err(|e| format!("dup2: {e}"))?;
        }
    }
    drop(tty);
    drop(null);
    // Keep only stdio and the error pipe (close-on-exec since pipe2). Nothing opened
    // before this point may be dropped after it: its descriptor is gone.
    match err.as_ref().map(|e| e.as_raw_fd() as u32) {
        Some(err_fd) => {
            if err_fd > 3 {
                sys::close_range(3, err_fd - 1).map_err(|e| format!("close_range: {e}"))?;
            }
            sys::close_range(err_fd + 1, u32::MAX).map_err(|e| format!("close_range: {e}"))?;
        }
        None => sys::close_range(3, u32::MAX).map_err(|e| format!("close_range: {e}"))?,
    }

    if spec.init.is_empty() {
        return minimal_init(err);
    }
    let argv: Vec<CString> = spec
        .init
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "init argument contains a NUL byte".to_string())?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| "init environment contains a NUL byte".to_string())?;
    sys::reset_signals_for_exec();
    let e = nix::unistd::execve(&argv[0], &argv, &env).err();
    Err(format!(
        "exec init {}: {}",
        spec.init[0],
        e.map_or_else(|| "unknown error".into(), |e| e.to_string())
    ))
}

/// The command name (`comm`) of the built-in init, by which a stop recognises it.
pub const MINIMAL_INIT_NAME: &str = "ctl-init";
const MINIMAL_INIT_COMM: &std::ffi::CStr = c"ctl-init";

/// The built-in init for images without one: stays PID 1, reaps zombies, exits on a stop
/// signal.
fn minimal_init(err: &mut Option<OwnedFd>) -> Result<std::convert::Infallible, String> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    // Block before telling the monitor we run: a stop signal sent after the report is
    // queued, never dropped (PID 1 drops default-action signals it does not block).
    set.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let _ = nix::sys::prctl::set_name(MINIMAL_INIT_COMM);
    // Closing the error pipe without a message tells the monitor we run.
    drop(err.take());
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            },
            Ok(_) => sys::exit_now(0),
            Err(_) => continue,
        }
    }
}

fn flags_of(flags: &[MountFlag]) -> MsFlags {
    flags.iter().fold(MsFlags::empty(), |acc, f| {
        acc | match f {
            MountFlag::Rdonly => MsFlags::MS_RDONLY,
            MountFlag::Nosuid => MsFlags::MS_NOSUID,
            MountFlag::Nodev => MsFlags::MS_NODEV,
            MountFlag::Noexec => MsFlags::MS_NOEXEC,
            MountFlag::Strictatime => MsFlags::MS_STRICTATIME,
        }
    })
}

/// Resolve `rel` under `root`, refusing `..`, absolute paths and symlinks on the way, so an
/// image can never redirect a mount onto the host.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => {
                p.push(n);
                if let Ok(m) = fs::symlink_metadata(&p)
                    && m.file_type().is_symlink()
                {
                    return Err(format!("{rel}: {} is a symlink", p.display()));
                }
            }
            _ => return Err(format!("{rel}: not a plain relative path")),
        }
    }
    Ok(p)
}

/// Attach the overlay root (a detached mount made by the monitor) on the working directory,
/// which is the container's `rootfs` dir, make the standard mounts inside it, then
/// `pivot_root` into it. Paths are relative to the root: the init may not be allowed to
/// walk the host path to it.
fn setup_rootfs(spec: &SpawnSpec, root: OwnedFd, disks: Vec<OwnedFd>) -> Result<(), String> {
    let none: Option<&str> = None;
    nix::mount::mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("make mounts private: {e}"))?;
    sys::move_mount_to(root.as_fd(), c".").map_err(|e| {
        format!(
            "attach the root filesystem on {}: {e}",
            spec.rootfs.display()
        )
    })?;
    nix::unistd::fchdir(&root).map_err(|e| format!("enter the root filesystem: {e}"))?;
    drop(root);
    let here = Path::new(".");
    let mut disks = disks.into_iter();
    for entry in &spec.mounts {
        apply_mount(here, entry, &mut disks)?;
    }
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

fn apply_mount(
    root: &Path,
    entry: &MountEntry,
    disks: &mut impl Iterator<Item = OwnedFd>,
) -> Result<(), String> {
    let none: Option<&str> = None;
    match entry {
        MountEntry::Disk(d) => {
            let tree = disks
                .next()
                .ok_or_else(|| format!("disk device /{}: no mount", d.target))?;
            let dir = nix::fcntl::open(
                root,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("open the root: {e}"))?;
            // The init is the container's root already: what it makes is the container's.
            let target = super::disk::make_target(dir.as_fd(), &d.target, d.file, None)
                .map_err(|e| format!("mount point /{}: {e}", d.target))?;
            super::disk::attach(tree, target, dir.as_fd(), d)?;
        }
        MountEntry::Dir { path, mode } => {
            let p = inside(root, path)?;
            if !p.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(*mode)
                    .create(&p)
                    .map_err(|e| format!("mkdir {path}: {e}"))?;
            }
        }
        MountEntry::Fs {
            fstype,
            source,
            target,
            flags,
            data,
        } => {
            let p = inside(root, target)?;
            let data = (!data.is_empty()).then_some(data.as_str());
            nix::mount::mount(
                Some(source.as_str()),
                &p,
                Some(fstype.as_str()),
                flags_of(flags),
                data,
            )
            .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
        }
        MountEntry::Bind {
            source,
            target,
            file,
            flags,
        } => {
            let p = inside(root, target)?;
            if *file && p.symlink_metadata().is_err() {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(&p)
                    .map_err(|e| format!("create {target}: {e}"))?;
            } else if !*file {
                fs::create_dir_all(&p).map_err(|e| format!("mkdir {target}: {e}"))?;
            }
            nix::mount::mount(Some(source), &p, none, MsFlags::MS_BIND, none)
                .map_err(|e| format!("bind {} on {target}: {e}", source.display()))?;
            let extra = flags_of(flags);
            if !extra.is_empty() {
                nix::mount::mount(
                    none,
                    &p,
                    none,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                    none,
                )
                .map_err(|e| format!("remount {target}: {e}"))?;
            }
        }
        MountEntry::ReadOnly { path } => rebind(root, path, true)?,
        MountEntry::Writable { path } => rebind(root, path, false)?,
        MountEntry::Mask { path } => {
            let p = inside(root, path)?;
            let Ok(md) = p.symlink_metadata() else {
                return Ok(());
            };
            if md.is_dir() {
                nix::mount::mount(
                    Some("none"),
                    &p,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=4k,mode=555"),
                )
                .map_err(|e| format!("mask {path}: {e}"))?;
            } else {
                nix::mount::mount(Some("/dev/null"), &p, none, MsFlags::MS_BIND, none)
                    .map_err(|e| format!("mask {path}: {e}"))?;
            }
        }
        MountEntry::Symlink { target, link } => {
            let p = inside(root, link)?;
            if fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| format!("symlink {link}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Bind a path of the rootfs onto itself, read-only or writable (nosuid, nodev, noexec
/// either way); nothing to do when the path does not exist (not every kernel has every
/// knob: sysrq-trigger needs MAGIC_SYSRQ).
fn rebind(root: &Path, path: &str, read_only: bool) -> Result<(), String> {
    let none: Option<&str> = None;
    let p = inside(root, path)?;
    if p.symlink_metadata().is_err() {
        return Ok(());
    }
    nix::mount::mount(Some(&p), &p, none, MsFlags::MS_BIND, none)
        .map_err(|e| format!("bind {path}: {e}"))?;
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(none, &p, none, flags, none).map_err(|e| format!("remount {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_that_never_answers_is_killed_at_the_deadline() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        // Stands in for a forkstart whose monitor hangs: a group leader that never writes.
        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let mut starter = Starter { child };
        let started = std::time::Instant::now();
        let r = starter.report(std::time::Duration::from_millis(300));
        assert!(matches!(r, Err(SpawnError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let status = starter.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "killed with its group"
        );
    }

    #[test]
    fn inside_refuses_escapes_and_symlinks() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        fs::create_dir(root.join("dev"))?;
        std::os::unix::fs::symlink("/etc", root.join("evil"))?;
        assert_eq!(inside(root, "dev/null").ok(), Some(root.join("dev/null")));
        assert!(inside(root, "../x").is_err());
        assert!(inside(root, "/etc").is_err());
        assert!(inside(root, "evil/passwd").is_err());
        Ok(())
    }

    #[test]
    fn report_wire_format() {
        let ok: Option<Report> =
            serde_json::from_str(r#"{"pid":5,"starttime":9,"monitor_pid":4}"#).ok();
        assert!(matches!(ok, Some(Report::Ok(InitProcess { pid: 5, .. }))));
        let err: Option<Report> = serde_json::from_str(r#"{"error":"boom"}"#).ok();
        assert!(matches!(err, Some(Report::Err { error }) if error == "boom"));
    }
}
