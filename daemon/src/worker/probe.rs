//! Start-up probe: can this kernel id-map a mount of the state directory's filesystem?
//!
//! Runs in the hidden `forkprobe DIR` entry (single threaded, before any runtime): a child
//! enters a user namespace of its own, and the probe tries exactly what starting an
//! unprivileged container does with an image layer: `open_tree(OPEN_TREE_CLONE)` of `DIR`
//! and `mount_setattr(MOUNT_ATTR_IDMAP)` onto that namespace. Nothing is attached anywhere;
//! the detached mount and the namespace go away with the probe.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::sys::{self, CloneResult};

/// The `forkprobe` entry: exit status 0 when id-mapped mounts of `dir` work, 1 (with the
/// reason on stderr) when they do not.
pub fn forkprobe_main(dir: &str) -> i32 {
    match idmapped_mount(Path::new(dir)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn idmapped_mount(dir: &Path) -> Result<(), String> {
    use nix::fcntl::OFlag;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| "path contains a NUL byte".to_string())?;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let (hold_r, hold_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let forked = sys::SingleThreaded::check_now().and_then(|p| sys::fork_process(&p));
    let pid = match forked.map_err(|e| format!("fork: {e}"))? {
        CloneResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = File::from(ready_w).write_all(&[u8::from(ok)]);
            // Stay (and keep the namespace alive) until the probe closes its end.
            let _ = File::from(hold_r).read(&mut [0u8; 1]);
            sys::exit_now(0)
        }
        CloneResult::Parent(pid) => pid,
    };
    drop(ready_w);
    drop(hold_r);
    let result = (|| {
        let mut ok = [0u8; 1];
        match File::from(ready_r).read(&mut ok) {
            Ok(1) if ok[0] == 1 => {}
            _ => return Err("cannot make a user namespace".to_string()),
        }
        for (file, line) in [("uid_map", "0 0 1"), ("gid_map", "0 0 1")] {
            fs::write(format!("/proc/{pid}/{file}"), line)
                .map_err(|e| format!("write {file}: {e}"))?;
        }
        let userns = File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|e| format!("user namespace: {e}"))?;
        let mnt = sys::open_tree_clone(&path).map_err(|e| format!("open_tree: {e}"))?;
        sys::mount_set_idmap(mnt.as_fd(), userns.as_fd())
            .map_err(|e| format!("id-mapped mount: {e}"))
    })();
    drop(hold_w);
    let _ = waitpid(Pid::from_raw(pid), None);
    result
}
