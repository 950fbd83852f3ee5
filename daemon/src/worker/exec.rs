//! Running a command inside a running container: the hidden `forkexec` entry and the
//! command line ctld builds for it.
//!
//! `ctld forkexec SPEC` (single threaded, no runtime) joins the container's cgroup, enters
//! all its namespaces at once through a pidfd (no PID-reuse race), forks the command (it
//! must be a child to be in the container's PID namespace), and exits with its status. The
//! command dies with it (`PR_SET_PDEATHSIG`), so ctld ends an exec by killing one process.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;

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
    /// Capabilities dropped from the bounding set, as for the container's init.
    pub caps_drop: Vec<u32>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
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
    match enter(&spec) {
        Ok(()) => {}
        Err(msg) => {
            eprintln!("ctl exec: {msg}");
            return EXIT_CANNOT_EXEC;
        }
    }
    let parent = std::process::id() as i32;
    match sys::fork_process() {
        Err(e) => {
            eprintln!("ctl exec: fork: {e}");
            EXIT_CANNOT_EXEC
        }
        Ok(CloneResult::Child) => sys::exit_now(run_command(&spec, parent)),
        Ok(CloneResult::Parent(pid)) => {
            // Our copies of the pipes must not keep the streams open after the command ends.
            if let Ok(null) = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                for fd in 0..3 {
                    let _ = sys::dup2(&null, fd);
                }
            }
            wait_status(pid)
        }
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

/// Join the cgroup, then every namespace of the init at once.
fn enter(spec: &ExecSpec) -> Result<(), String> {
    let pidfd = sys::pidfd_open(spec.pid).map_err(|e| format!("container init gone: {e}"))?;
    if starttime(spec.pid) != Some(spec.starttime) {
        return Err("container is not running".into());
    }
    let me = std::process::id().to_string();
    for f in &spec.cgroup_procs {
        fs::write(f, &me).map_err(|e| format!("join cgroup {}: {e}", f.display()))?;
    }
    let flags = spec.namespaces.iter().fold(CloneFlags::empty(), |acc, n| {
        acc | CloneFlags::from_bits_truncate(n.clone_flag())
    });
    nix::sched::setns(pidfd.as_fd(), flags).map_err(|e| format!("setns: {e}"))?;
    Ok(())
}

/// In the forked child, inside the container: own session, capabilities dropped, uid/gid,
/// death signal, chdir, exec.
fn run_command(spec: &ExecSpec, parent: i32) -> i32 {
    // A session of our own: no terminal of ctld's session is reachable from inside.
    let _ = nix::unistd::setsid();
    sys::reset_signals_for_exec();
    for cap in &spec.caps_drop {
        if let Err(e) = sys::capbset_drop(*cap) {
            eprintln!("ctl exec: drop capability {cap}: {e}");
            return EXIT_CANNOT_EXEC;
        }
    }
    if spec.gid != 0 || spec.uid != 0 {
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
    fn resolve_searches_path() {
        assert_eq!(resolve("/bin/x", "/nope").as_deref(), Some("/bin/x"));
        assert_eq!(
            resolve("sh", "/nonexistent:/bin").as_deref(),
            Some("/bin/sh")
        );
        assert_eq!(resolve("no-such-cmd-ctl", "/bin:/usr/bin"), None);
    }
}
