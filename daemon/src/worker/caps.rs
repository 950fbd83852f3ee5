//! Capabilities of a container's processes: names (`sys_admin`, `CAP_SYS_ADMIN`) to numbers,
//! LXC's default drop list, and [`apply`], which takes capabilities away from the calling
//! process for good (bounding set) before it executes the container's program.

use std::io;

use rustix::thread::{CapabilitySet, CapabilitySets};

/// Capability names by number, without the `CAP_` prefix, up to `CAP_CHECKPOINT_RESTORE`
/// (40, Linux 5.9).
const NAMES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The capabilities of [`DEFAULT_DROP`], by number.
pub const CAP_SYS_MODULE: u32 = 16;
pub const CAP_SYS_RAWIO: u32 = 17;
pub const CAP_SYS_TIME: u32 = 25;
pub const CAP_MAC_OVERRIDE: u32 = 32;
pub const CAP_MAC_ADMIN: u32 = 33;

/// What LXC and Incus drop for every container: MAC policy administration and overrides
/// (AppArmor, SELinux, Smack), setting the host's clock, loading kernel modules, raw I/O
/// (`iopl`, `/dev/mem`).
pub const DEFAULT_DROP: &[u32] = &[
    CAP_MAC_ADMIN,
    CAP_MAC_OVERRIDE,
    CAP_SYS_TIME,
    CAP_SYS_MODULE,
    CAP_SYS_RAWIO,
];

/// The highest capability this code knows; the kernel may know fewer (or more).
const LAST_KNOWN: u32 = 40;

/// The number of a capability named `sys_admin`, `cap_sys_admin` or `CAP_SYS_ADMIN` (any
/// case).
pub fn cap_number(name: &str) -> Option<u32> {
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .and_then(|i| u32::try_from(i).ok())
}

/// The name of capability `cap` (`sys_admin`), if it is one this code knows.
pub fn cap_name(cap: u32) -> Option<&'static str> {
    NAMES.get(usize::try_from(cap).ok()?).copied()
}

/// The kernel's highest capability, from the text of `/proc/sys/kernel/cap_last_cap`.
fn parse_last_cap(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| parse_last_cap(&t))
        .unwrap_or(LAST_KNOWN)
}

fn mask(caps: &[u32]) -> CapabilitySet {
    let bits = caps
        .iter()
        .filter(|c| **c < 64)
        .fold(0u64, |acc, c| acc | (1u64 << c));
    CapabilitySet::from_bits_retain(bits)
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Take the capabilities `drop` away from the calling process for good: drop each from the
/// bounding set (so no later execve, of a setuid program or a file with capabilities, gets
/// it back; capabilities the running kernel does not have are skipped), clear the ambient
/// and inheritable sets, and remove them from the permitted and effective sets.
///
/// Needs `CAP_SETPCAP` (bounding set), so call it before switching to a non-root user; and
/// after [`super::seccomp::load`], which needs `CAP_SYS_ADMIN`. Capabilities are per
/// thread: this changes the calling thread's (a forked child has only that one).
pub fn apply(drop: &[u32]) -> io::Result<()> {
    let last = last_cap();
    for &cap in drop.iter().filter(|c| **c <= last) {
        let name = cap_name(cap).map_or_else(|| cap.to_string(), str::to_string);
        match super::sys::capbset_drop(cap) {
            Ok(()) => {}
            // Above the kernel's last capability: there is nothing to drop.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(context(format!("drop {name} from the bounding set"))(e)),
        }
    }
    match rustix::thread::clear_ambient_capability_set() {
        // EINVAL: a kernel without ambient capabilities (before 4.3).
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(context("clear the ambient set".into())(e.into())),
    }
    let current = rustix::thread::capabilities(None)
        .map_err(|e| context("read capabilities".into())(e.into()))?;
    let gone = mask(drop);
    let new = CapabilitySets {
        effective: current.effective.difference(gone),
        permitted: current.permitted.difference(gone),
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, new)
        .map_err(|e| context("set capabilities".into())(e.into()))
}

/// This thread's filesystem ids switched to `(uid, gid)` with its capabilities kept, until
/// dropped (then back to root's). For creating files on the host's side of a container's
/// filesystems: a filesystem mounted inside a user namespace (a container's own `/tmp`)
/// refuses entries owned by an id it does not map, host root's included (`EOVERFLOW`).
/// Only on threads that do nothing else meanwhile (a blocking-pool thread, for one request).
pub struct FsIds {
    _private: (),
}

/// Switch this thread's filesystem ids; see [`FsIds`].
pub fn act_as(uid: u32, gid: u32) -> io::Result<FsIds> {
    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let guard = FsIds { _private: () };
    // A non-zero fsuid clears the filesystem capabilities from the effective set: take
    // them back from the permitted set (DAC override, chown, fowner…).
    raise_effective()?;
    Ok(guard)
}

fn raise_effective() -> io::Result<()> {
    let c = rustix::thread::capabilities(None).map_err(io::Error::from)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: c.permitted,
            ..c
        },
    )
    .map_err(io::Error::from)
}

impl Drop for FsIds {
    fn drop(&mut self) {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        nix::unistd::setfsgid(nix::unistd::Gid::from_raw(0));
        let _ = raise_effective();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_every_spelling() {
        for (name, want) in [
            ("sys_admin", Some(21)),
            ("CAP_SYS_ADMIN", Some(21)),
            ("cap_sys_admin", Some(21)),
            ("Sys_Admin", Some(21)),
            (" net_raw ", Some(13)),
            ("chown", Some(0)),
            ("checkpoint_restore", Some(40)),
            ("CAP_BPF", Some(39)),
            ("sys_admn", None),
            ("cap_", None),
            ("", None),
            ("21", None),
        ] {
            assert_eq!(cap_number(name), want, "{name:?}");
        }
        for cap in 0..=LAST_KNOWN {
            assert_eq!(cap_name(cap).and_then(cap_number), Some(cap));
        }
        assert_eq!(cap_name(LAST_KNOWN + 1), None);
    }

    #[test]
    fn default_drop_is_lxcs() {
        let mut names: Vec<&str> = DEFAULT_DROP.iter().filter_map(|c| cap_name(*c)).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "mac_admin",
                "mac_override",
                "sys_module",
                "sys_rawio",
                "sys_time"
            ]
        );
    }

    #[test]
    fn last_cap_and_masks() {
        assert_eq!(parse_last_cap("40\n"), Some(40));
        assert_eq!(parse_last_cap("x"), None);
        assert_eq!(mask(&[0, 21, 63, 64, 99]).bits(), 1 | 1 << 21 | 1 << 63);
    }

    // ------------------------------------------------------------------ privileged

    const CHILD_ENV: &str = "CTLD_TEST_CAPS_CHILD";
    const CHILD_TEST: &str = "worker::caps::tests::apply_in_a_child_process";

    /// A capability set from a `Cap*:` line of `/proc/<pid>/status`.
    fn status_set(status: &str, field: &str) -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Applies a drop list in a process of its own (the bounding set never grows back),
    /// then reads the thread's sets from `/proc/thread-self/status`.
    #[test]
    fn apply_in_a_child_process() {
        if std::env::var_os(CHILD_ENV).is_some() {
            // 63 is above any kernel's last capability: skipped, not an error.
            apply(&[CAP_SYS_TIME, 27, 63]).unwrap_or_else(|e| panic!("apply: {e}"));
            let status = std::fs::read_to_string("/proc/thread-self/status")
                .unwrap_or_else(|e| panic!("read status: {e}"));
            let dropped = 1u64 << CAP_SYS_TIME | 1 << 27;
            for field in ["CapBnd:", "CapPrm:", "CapEff:"] {
                assert_eq!(status_set(&status, field) & dropped, 0, "{field} {status}");
            }
            assert_ne!(
                status_set(&status, "CapEff:") & 1 << 21,
                0,
                "sys_admin kept"
            );
            assert_eq!(status_set(&status, "CapInh:"), 0, "{status}");
            assert_eq!(status_set(&status, "CapAmb:"), 0, "{status}");
            // Not even root gets a dropped capability back through execve.
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", "grep ^CapBnd: /proc/self/status"])
                .output()
                .unwrap_or_else(|e| panic!("run sh: {e}"));
            let child = String::from_utf8_lossy(&out.stdout);
            assert_eq!(status_set(&child, "CapBnd:") & dropped, 0, "{child}");
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CTL_REQUIRE_ALL").is_none(),
                "apply_in_a_child_process: needs root, and CTL_REQUIRE_ALL forbids skipping"
            );
            eprintln!("apply_in_a_child_process: skipped, needs root (CAP_SETPCAP)");
            return;
        }
        crate::worker::rerun_test_in_child(CHILD_TEST, CHILD_ENV);
    }
}
