//! The seccomp filter of a container's processes, built with libseccomp from a
//! [`SyscallPolicy`] (Incus' `security.syscalls.*` keys, translated by `instance::config`).
//!
//! Two modes, as in Incus:
//! - **denylist** (the default): everything is allowed except the default denylist
//!   (`deny_default`, see [`DEFAULT_DENY`] and [`PRIVILEGED_DENY`]), forced unmounts, and the
//!   names in `deny`; `deny_compat` makes every call through a 32-bit (or x32) ABI fail;
//! - **allowlist** (`allow` non-empty): only the listed calls are allowed.
//!
//! The filter covers every ABI a process can enter the kernel through: on x86_64 the native
//! one, i386 (`int 0x80`) and x32; on aarch64 also 32-bit arm. A name is resolved per ABI by
//! libseccomp, so `umount2` is caught under its i386 number too.
//!
//! Which error a denied call returns, and why:
//! - `ENOSYS` for the built-in denylists (Incus' `errno 38`): programs read it as "this
//!   kernel lacks the call" and fall back (libmount goes back from `fsopen`/`fsmount` to
//!   `mount(2)`, systemd runs without BPF or keyrings), where `EPERM` would be a hard failure;
//! - `ENOSYS` for calls an allowlist leaves out, for the same reason: glibc falls back from
//!   `clone3` to `clone` (and similar) only on `ENOSYS`;
//! - `EPERM` for a forced unmount (`umount2` with `MNT_FORCE`, as LXC's
//!   `reject_force_umount`) and for the names in `deny`: a plain refusal.
//!
//! [`load`] never sets `no_new_privs`: setuid programs inside system containers (`su`,
//! `sudo`, `ping`) must keep working. The kernel accepts a filter without it from a caller
//! with `CAP_SYS_ADMIN` in its user namespace, so [`load`] must run before capabilities are
//! dropped and before the switch to a non-root user.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

/// What a container's processes may call. Travels inside the spawn and exec specs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallPolicy {
    /// A privileged container (no user namespace): `deny_default` also covers
    /// [`PRIVILEGED_DENY`].
    pub privileged: bool,
    /// Deny [`DEFAULT_DENY`] and forced unmounts (`security.syscalls.deny_default`).
    pub deny_default: bool,
    /// Make every call through a 32-bit or x32 ABI fail with `ENOSYS`
    /// (`security.syscalls.deny_compat`).
    pub deny_compat: bool,
    /// More calls to deny, with `EPERM` (`security.syscalls.deny`).
    pub deny: Vec<String>,
    /// Allowlist mode when non-empty: only these calls are allowed
    /// (`security.syscalls.allow`). Excludes every `deny*` field.
    pub allow: Vec<String>,
}

impl Default for SyscallPolicy {
    /// The default of an unprivileged container: the default denylist, nothing else.
    fn default() -> Self {
        SyscallPolicy {
            privileged: false,
            deny_default: true,
            deny_compat: false,
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }
}

/// A policy that cannot be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown system call \"{0}\"")]
    UnknownSyscall(String),
    #[error("a syscall allowlist cannot be combined with {0}")]
    AllowlistWithDeny(&'static str),
    #[error(
        "a syscall allowlist must include execve: the filter is in place before the \
         container's first program is executed"
    )]
    AllowlistWithoutExecve,
    #[error("seccomp: {step}: {source}")]
    Libseccomp {
        step: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },
}

/// The default denylist of every container, Incus' and LXC's (`errno 38`, see the module
/// docs): rebooting into another kernel (`kexec_load`, `kexec_file_load`), loading and
/// unloading kernel modules (`init_module`, `finit_module`, `delete_module`), and opening
/// files by handle (`open_by_handle_at`, which reaches any file of a filesystem, outside the
/// container's root too: the "shocker" escape).
pub const DEFAULT_DENY: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "init_module",
    "finit_module",
    "delete_module",
];

/// Also denied (with `ENOSYS`) in a privileged container, whose root is the host's root:
///
/// - `keyctl`, `add_key`, `request_key`: kernel keyrings are not namespaced; the container's
///   uid 0 *is* the host's, so it would share (read, replace, revoke) root's user keyring and
///   reach keys of the host's services;
/// - `bpf`: loading programs that trace the whole host (kprobes, tracepoints) and read kernel
///   memory;
/// - `perf_event_open`: profiling every CPU and process of the host, kernel addresses;
/// - `userfaultfd`: no system container needs it, and it is the usual tool to widen race
///   windows in kernel exploits;
/// - `syslog`: reading and clearing the host's kernel log (one ring buffer for all);
/// - the new mount API (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `open_tree`, `move_mount`,
///   `mount_setattr`), as Incus does when it intercepts mounts: system containers mount with
///   the classic `mount(2)`, which stays allowed, and libmount and systemd fall back to it
///   on `ENOSYS`.
///
/// Deliberately *not* denied: `mount`, `umount2`, `unshare`, `setns`, `clone` (an init
/// system needs them), `kcmp` (limited to processes the caller may ptrace, all inside the
/// container's PID namespace; CRIU and systemd use it), `quotactl` (needs a block device
/// the device cgroup controls; quota tools in containers use it).
pub const PRIVILEGED_DENY: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "syslog",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
];

/// The errno of the built-in denylists and of an allowlist's other calls.
const NOT_IMPLEMENTED: i32 = libc::ENOSYS;
/// The errno of forced unmounts and of the names in `deny`.
const REFUSED: i32 = libc::EPERM;
/// `umount2`'s flag argument.
const UMOUNT2_FLAGS_ARG: u32 = 1;

impl SyscallPolicy {
    /// Whether the filter would allow everything (no filter is loaded then).
    pub fn allows_everything(&self) -> bool {
        !self.deny_default && !self.deny_compat && self.deny.is_empty() && self.allow.is_empty()
    }

    /// Check the policy: an allowlist excludes every `deny*` field and must contain
    /// `execve`; every name must be a system call of this architecture.
    pub fn validate(&self) -> Result<(), SeccompError> {
        if !self.allow.is_empty() {
            if self.deny_default {
                return Err(SeccompError::AllowlistWithDeny("the default denylist"));
            }
            if self.deny_compat {
                return Err(SeccompError::AllowlistWithDeny(
                    "denying 32-bit system calls",
                ));
            }
            if !self.deny.is_empty() {
                return Err(SeccompError::AllowlistWithDeny("a denylist"));
            }
            if !self.allow.iter().any(|n| n == "execve") {
                return Err(SeccompError::AllowlistWithoutExecve);
            }
        }
        validate_names(&self.deny)?;
        validate_names(&self.allow)
    }
}

/// Check that every name is a system call libseccomp knows on this architecture (names of
/// calls that exist only in a compat ABI, like i386's `socketcall`, count).
pub fn validate_names(names: &[String]) -> Result<(), SeccompError> {
    for name in names {
        resolve(name)?;
    }
    Ok(())
}

fn resolve(name: &str) -> Result<ScmpSyscall, SeccompError> {
    let well_formed = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(SeccompError::UnknownSyscall(name.to_string()));
    }
    ScmpSyscall::from_name(name).map_err(|_| SeccompError::UnknownSyscall(name.to_string()))
}

/// The ABIs the filter covers: the native one and, unless `deny_compat`, the compat ABIs
/// of this architecture (x86_64: i386 and x32; aarch64: arm). A call through an ABI left
/// out fails with `ENOSYS`.
pub fn filter_arches(deny_compat: bool) -> Vec<ScmpArch> {
    let mut arches = vec![ScmpArch::native()];
    if !deny_compat {
        arches.extend_from_slice(compat_arches());
    }
    arches
}

fn compat_arches() -> &'static [ScmpArch] {
    if cfg!(target_arch = "x86_64") {
        &[ScmpArch::X86, ScmpArch::X32]
    } else if cfg!(target_arch = "aarch64") {
        &[ScmpArch::Arm]
    } else {
        &[]
    }
}

/// What a rule does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Errno(i32),
}

/// One rule of the filter, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    syscall: String,
    verdict: Verdict,
    /// Only when argument `.0` has every bit of `.1` set.
    flags_set: Option<(u32, u64)>,
}

impl Rule {
    fn new(syscall: &str, verdict: Verdict) -> Self {
        Rule {
            syscall: syscall.to_string(),
            verdict,
            flags_set: None,
        }
    }
}

/// The default action (for calls no rule matches) and the rules of `policy`, each call
/// once: a name in `deny` that a built-in list already denies keeps the built-in errno.
fn rules(policy: &SyscallPolicy) -> (Verdict, Vec<Rule>) {
    if !policy.allow.is_empty() {
        let mut rules: Vec<Rule> = Vec::new();
        for name in &policy.allow {
            if !rules.iter().any(|r| &r.syscall == name) {
                rules.push(Rule::new(name, Verdict::Allow));
            }
        }
        return (Verdict::Errno(NOT_IMPLEMENTED), rules);
    }
    let mut rules: Vec<Rule> = Vec::new();
    if policy.deny_default {
        let privileged = if policy.privileged {
            PRIVILEGED_DENY
        } else {
            &[]
        };
        for name in DEFAULT_DENY.iter().chain(privileged) {
            rules.push(Rule::new(name, Verdict::Errno(NOT_IMPLEMENTED)));
        }
    }
    for name in &policy.deny {
        if !rules.iter().any(|r| &r.syscall == name) {
            rules.push(Rule::new(name, Verdict::Errno(REFUSED)));
        }
    }
    // umount -f: plain unmounts stay allowed. Left out when `deny` refuses umount2 outright.
    if policy.deny_default && !rules.iter().any(|r| r.syscall == "umount2") {
        rules.push(Rule {
            syscall: "umount2".into(),
            verdict: Verdict::Errno(REFUSED),
            flags_set: Some((UMOUNT2_FLAGS_ARG, libc::MNT_FORCE as u64)),
        });
    }
    (Verdict::Allow, rules)
}

fn action(v: Verdict) -> ScmpAction {
    match v {
        Verdict::Allow => ScmpAction::Allow,
        Verdict::Errno(e) => ScmpAction::Errno(e),
    }
}

/// Build the filter for `policy` (validated first), without loading it.
fn build(policy: &SyscallPolicy) -> Result<ScmpFilterContext, SeccompError> {
    policy.validate()?;
    let lib = |step: &'static str| move |source| SeccompError::Libseccomp { step, source };
    let (default, rules) = rules(policy);
    let mut ctx = ScmpFilterContext::new(action(default)).map_err(lib("create filter"))?;
    ctx.set_ctl_nnp(false)
        .map_err(lib("leave no_new_privs off"))?;
    ctx.set_act_badarch(ScmpAction::Errno(NOT_IMPLEMENTED))
        .map_err(lib("set the action for other ABIs"))?;
    for arch in filter_arches(policy.deny_compat) {
        if !ctx.is_arch_present(arch).map_err(lib("check ABI"))? {
            ctx.add_arch(arch).map_err(lib("add ABI"))?;
        }
    }
    for rule in rules {
        let syscall = resolve(&rule.syscall)?;
        let conditions: Vec<ScmpArgCompare> = rule
            .flags_set
            .map(|(arg, mask)| ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(mask), mask))
            .into_iter()
            .collect();
        ctx.add_rule_conditional(action(rule.verdict), syscall, &conditions)
            .map_err(lib("add rule"))?;
    }
    Ok(ctx)
}

/// Build the filter for `policy` and load it into the calling thread (and the processes it
/// then executes and forks), leaving `no_new_privs` off. Does nothing when the policy
/// [allows everything](SyscallPolicy::allows_everything).
///
/// Call it in the forked, single-threaded child, after the container's mounts and before
/// execve, while the child still has `CAP_SYS_ADMIN` (the kernel refuses a filter without
/// `no_new_privs` otherwise, `EACCES`): before `caps::apply` and before setgid/setuid.
/// Whatever the child calls between this and execve goes through the filter: with an
/// allowlist, those calls must be listed too.
pub fn load(policy: &SyscallPolicy) -> Result<(), SeccompError> {
    if policy.allows_everything() {
        return Ok(());
    }
    build(policy)?
        .load()
        .map_err(|source| SeccompError::Libseccomp {
            step: "load filter",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SyscallPolicy {
        SyscallPolicy {
            privileged: false,
            deny_default: true,
            deny_compat: false,
            deny: Vec::new(),
            allow: Vec::new(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What `export` writes into a file (a filter as BPF or as text).
    fn exported(
        export: impl FnOnce(&std::fs::File) -> Result<(), libseccomp::error::SeccompError>,
    ) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut f = tempfile::tempfile().unwrap_or_else(|e| panic!("tempfile: {e}"));
        export(&f).unwrap_or_else(|e| panic!("export: {e}"));
        let mut out = Vec::new();
        f.rewind()
            .and_then(|()| f.read_to_end(&mut out))
            .unwrap_or_else(|e| panic!("read back: {e}"));
        out
    }

    #[test]
    fn every_builtin_name_resolves() {
        let all: Vec<String> = DEFAULT_DENY
            .iter()
            .chain(PRIVILEGED_DENY)
            .chain(&["umount2", "execve"])
            .map(|s| s.to_string())
            .collect();
        validate_names(&all).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn unknown_and_malformed_names_are_refused() {
        for bad in [
            "no_such_call",
            "",
            "Open",
            "open ",
            "execve\0",
            "12",
            "mount errno 1",
        ] {
            assert!(
                matches!(validate_names(&names(&[bad])), Err(SeccompError::UnknownSyscall(n)) if n == bad),
                "{bad:?}"
            );
        }
        assert!(validate_names(&names(&["open_by_handle_at", "mount", "socketcall"])).is_ok());
        let p = SyscallPolicy {
            deny: names(&["getpid", "bogus"]),
            ..policy()
        };
        assert!(matches!(p.validate(), Err(SeccompError::UnknownSyscall(n)) if n == "bogus"));
        assert!(matches!(build(&p), Err(SeccompError::UnknownSyscall(_))));
        let p = SyscallPolicy {
            deny_default: false,
            allow: names(&["execve", "bogus"]),
            ..policy()
        };
        assert!(matches!(p.validate(), Err(SeccompError::UnknownSyscall(n)) if n == "bogus"));
    }

    #[test]
    fn an_allowlist_excludes_deny_and_needs_execve() {
        let allow = names(&["execve", "read", "write", "exit_group"]);
        let ok = SyscallPolicy {
            deny_default: false,
            allow: allow.clone(),
            ..policy()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            SyscallPolicy {
                deny_default: true,
                ..ok.clone()
            },
            SyscallPolicy {
                deny_compat: true,
                ..ok.clone()
            },
            SyscallPolicy {
                deny: names(&["mount"]),
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(SeccompError::AllowlistWithDeny(_))),
                "{bad:?}"
            );
        }
        let no_exec = SyscallPolicy {
            allow: names(&["read"]),
            ..ok
        };
        assert!(matches!(
            no_exec.validate(),
            Err(SeccompError::AllowlistWithoutExecve)
        ));
    }

    #[test]
    fn rules_of_each_mode() {
        let errno_of = |rules: &[Rule], name: &str| {
            rules
                .iter()
                .find(|r| r.syscall == name && r.flags_set.is_none())
                .map(|r| r.verdict)
        };
        // Default, unprivileged: Incus' list with ENOSYS, forced umount with EPERM.
        let (default, r) = rules(&policy());
        assert_eq!(default, Verdict::Allow);
        for name in DEFAULT_DENY {
            assert_eq!(
                errno_of(&r, name),
                Some(Verdict::Errno(libc::ENOSYS)),
                "{name}"
            );
        }
        assert_eq!(errno_of(&r, "keyctl"), None);
        assert_eq!(errno_of(&r, "umount2"), None);
        assert!(r.contains(&Rule {
            syscall: "umount2".into(),
            verdict: Verdict::Errno(libc::EPERM),
            flags_set: Some((1, libc::MNT_FORCE as u64)),
        }));
        // Privileged: the extra list; mount and friends stay allowed.
        let (_, r) = rules(&SyscallPolicy {
            privileged: true,
            ..policy()
        });
        for name in PRIVILEGED_DENY {
            assert_eq!(
                errno_of(&r, name),
                Some(Verdict::Errno(libc::ENOSYS)),
                "{name}"
            );
        }
        for name in ["mount", "umount2", "unshare", "setns", "clone", "clone3"] {
            assert_eq!(errno_of(&r, name), None, "{name}");
        }
        // deny_default off: only the user's names, EPERM, each once; built-ins keep ENOSYS.
        let (_, r) = rules(&SyscallPolicy {
            deny_default: false,
            privileged: true,
            deny: names(&["mknod", "mknod"]),
            ..policy()
        });
        assert_eq!(r, vec![Rule::new("mknod", Verdict::Errno(libc::EPERM))]);
        let (_, r) = rules(&SyscallPolicy {
            deny: names(&["kexec_load", "umount2"]),
            ..policy()
        });
        assert_eq!(
            errno_of(&r, "kexec_load"),
            Some(Verdict::Errno(libc::ENOSYS))
        );
        assert_eq!(errno_of(&r, "umount2"), Some(Verdict::Errno(libc::EPERM)));
        assert_eq!(r.iter().filter(|r| r.syscall == "umount2").count(), 1);
        // Allowlist: ENOSYS for the rest, no built-in denials.
        let (default, r) = rules(&SyscallPolicy {
            deny_default: false,
            privileged: true,
            allow: names(&["execve", "read", "read"]),
            ..policy()
        });
        assert_eq!(default, Verdict::Errno(libc::ENOSYS));
        assert_eq!(
            r,
            vec![
                Rule::new("execve", Verdict::Allow),
                Rule::new("read", Verdict::Allow)
            ]
        );
    }

    #[test]
    fn filters_build_in_every_mode() {
        let modes = [
            policy(),
            SyscallPolicy {
                privileged: true,
                ..policy()
            },
            SyscallPolicy {
                privileged: true,
                deny_compat: true,
                deny: names(&["mknod", "open_by_handle_at", "umount2", "socketcall"]),
                ..policy()
            },
            SyscallPolicy {
                deny_default: false,
                deny_compat: true,
                ..policy()
            },
            SyscallPolicy {
                deny_default: false,
                allow: names(&["execve", "read", "write", "exit_group", "socketcall"]),
                ..policy()
            },
        ];
        for p in &modes {
            let ctx = build(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert!(
                !ctx.get_ctl_nnp().unwrap_or(true),
                "{p:?}: NNP must stay off"
            );
            let bpf = exported(|f| ctx.export_bpf(f));
            assert!(
                !bpf.is_empty() && bpf.len() % 8 == 0,
                "{p:?}: {} bytes",
                bpf.len()
            );
        }
        let off = SyscallPolicy {
            deny_default: false,
            ..policy()
        };
        assert!(off.allows_everything() && !policy().allows_everything());
    }

    #[test]
    fn the_filter_covers_the_compat_abis() {
        let with = filter_arches(false);
        let without = filter_arches(true);
        assert_eq!(without, vec![ScmpArch::native()]);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(with, vec![ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]);
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(with, vec![ScmpArch::Aarch64, ScmpArch::Arm]);
        }
        let present = |p: &SyscallPolicy, arch| {
            build(p)
                .and_then(|ctx| {
                    ctx.is_arch_present(arch)
                        .map_err(|source| SeccompError::Libseccomp {
                            step: "test",
                            source,
                        })
                })
                .unwrap_or_else(|e| panic!("{e}"))
        };
        for arch in &with {
            assert!(present(&policy(), *arch), "{arch:?}");
        }
        let deny_compat = SyscallPolicy {
            deny_compat: true,
            ..policy()
        };
        for arch in &with[1..] {
            assert!(!present(&deny_compat, *arch), "{arch:?}");
        }
    }

    // ------------------------------------------------------------------ the BPF itself

    /// Run the classic BPF program `bpf` (as the kernel gets it) on a call: system call
    /// `nr` through ABI `arch` (an `AUDIT_ARCH_*` value) with `args`. Returns the filter's
    /// verdict, the kernel's `SECCOMP_RET_*` value. Knows what libseccomp emits and panics
    /// on anything else, so a new instruction fails the test instead of passing it.
    fn run_bpf(bpf: &[u8], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let insns: Vec<(u16, u8, u8, u32)> = bpf
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        loop {
            let Some(&(code, jt, jf, k)) = insns.get(pc) else {
                panic!("fell off the program at {pc}");
            };
            pc += 1;
            let jump = |cond: bool| usize::from(if cond { jt } else { jf });
            match code {
                0x20 => {
                    let at = k as usize;
                    let word = data.get(at..at + 4).unwrap_or_else(|| panic!("load {at}"));
                    a = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
                }
                0x00 => a = k,
                0x60 => a = mem[k as usize],
                0x01 => x = k,
                0x61 => x = mem[k as usize],
                0x02 => mem[k as usize] = a,
                0x03 => mem[k as usize] = x,
                0x54 => a &= k,
                0x44 => a |= k,
                0x05 => pc += k as usize,
                0x15 => pc += jump(a == k),
                0x25 => pc += jump(a > k),
                0x35 => pc += jump(a >= k),
                0x45 => pc += jump(a & k != 0),
                0x1d => pc += jump(a == x),
                0x2d => pc += jump(a > x),
                0x3d => pc += jump(a >= x),
                0x06 => return k,
                0x16 => return a,
                other => panic!("instruction {other:#x} at {} not understood", pc - 1),
            }
        }
    }

    const RET_ALLOW: u32 = 0x7fff_0000;
    const fn ret_errno(e: i32) -> u32 {
        0x0005_0000 | e as u32
    }

    /// The `AUDIT_ARCH_*` value the kernel reports for a call through `arch`, and its
    /// number of `name` there (x32 numbers carry their `0x40000000` bit).
    fn abi(arch: ScmpArch, name: &str) -> (u32, u32) {
        let audit = match arch {
            ScmpArch::X8664 | ScmpArch::X32 => 0xc000_003e,
            ScmpArch::X86 => 0x4000_0003,
            ScmpArch::Aarch64 => 0xc000_00b7,
            ScmpArch::Arm => 0x4000_0028,
            other => panic!("no AUDIT_ARCH for {other:?} in this test"),
        };
        let nr = ScmpSyscall::from_name_by_arch(name, arch)
            .unwrap_or_else(|e| panic!("{name} on {arch:?}: {e}"))
            .as_raw_syscall();
        let nr = u32::try_from(nr).unwrap_or_else(|_| panic!("{name} on {arch:?}: {nr}"));
        (audit, nr)
    }

    fn bpf_of(p: &SyscallPolicy) -> Vec<u8> {
        let ctx = build(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        exported(|f| ctx.export_bpf(f))
    }

    #[test]
    fn the_bpf_denies_through_every_abi() {
        let force = libc::MNT_FORCE as u64;
        let bpf = bpf_of(&SyscallPolicy {
            privileged: true,
            deny: names(&["mknod"]),
            ..policy()
        });
        let arches = filter_arches(false);
        assert!(arches.len() > 1 || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")));
        for &arch in &arches {
            let call = |name: &str, args: [u64; 6]| {
                let (audit, nr) = abi(arch, name);
                run_bpf(&bpf, audit, nr, args)
            };
            let no_args = [0; 6];
            assert_eq!(
                call("open_by_handle_at", no_args),
                ret_errno(libc::ENOSYS),
                "{arch:?}"
            );
            assert_eq!(call("keyctl", no_args), ret_errno(libc::ENOSYS), "{arch:?}");
            assert_eq!(call("fsopen", no_args), ret_errno(libc::ENOSYS), "{arch:?}");
            assert_eq!(
                call("umount2", [0, force, 0, 0, 0, 0]),
                ret_errno(libc::EPERM),
                "{arch:?}"
            );
            assert_eq!(
                call("umount2", [0, force | 2, 0, 0, 0, 0]),
                ret_errno(libc::EPERM)
            );
            assert_eq!(call("umount2", [0, 2, 0, 0, 0, 0]), RET_ALLOW, "{arch:?}");
            assert_eq!(call("mknodat", no_args), RET_ALLOW, "{arch:?}");
            assert_eq!(call("getpid", no_args), RET_ALLOW, "{arch:?}");
            assert_eq!(call("mount", no_args), RET_ALLOW, "{arch:?}");
            assert_eq!(call("unshare", no_args), RET_ALLOW, "{arch:?}");
            if arch != ScmpArch::Aarch64 {
                // aarch64 has mknodat only.
                assert_eq!(call("mknod", no_args), ret_errno(libc::EPERM), "{arch:?}");
            }
        }
        // An ABI the filter does not know fails like a missing call.
        assert_eq!(run_bpf(&bpf, 0x1234, 1, [0; 6]), ret_errno(libc::ENOSYS));

        // deny_compat: the native ABI as before, every compat call ENOSYS (x32 too, though
        // it shares x86_64's AUDIT_ARCH).
        let bpf = bpf_of(&SyscallPolicy {
            deny_compat: true,
            ..policy()
        });
        let (audit, nr) = abi(arches[0], "getpid");
        assert_eq!(run_bpf(&bpf, audit, nr, [0; 6]), RET_ALLOW);
        let (audit, nr) = abi(arches[0], "open_by_handle_at");
        assert_eq!(run_bpf(&bpf, audit, nr, [0; 6]), ret_errno(libc::ENOSYS));
        for &arch in &arches[1..] {
            for name in ["getpid", "read", "execve"] {
                let (audit, nr) = abi(arch, name);
                assert_eq!(
                    run_bpf(&bpf, audit, nr, [0; 6]),
                    ret_errno(libc::ENOSYS),
                    "{name} on {arch:?}"
                );
            }
        }

        // Allowlist: only the listed calls, on every ABI.
        let bpf = bpf_of(&SyscallPolicy {
            deny_default: false,
            allow: names(&["execve", "getpid"]),
            ..policy()
        });
        for &arch in &arches {
            let call = |name: &str| {
                let (audit, nr) = abi(arch, name);
                run_bpf(&bpf, audit, nr, [0; 6])
            };
            assert_eq!(call("execve"), RET_ALLOW, "{arch:?}");
            assert_eq!(call("getpid"), RET_ALLOW, "{arch:?}");
            assert_eq!(call("getppid"), ret_errno(libc::ENOSYS), "{arch:?}");
            assert_eq!(call("clone3"), ret_errno(libc::ENOSYS), "{arch:?}");
        }
    }

    #[test]
    fn policy_travels_as_json() {
        let p = SyscallPolicy {
            privileged: true,
            deny: names(&["mknod"]),
            ..policy()
        };
        let json = serde_json::to_string(&p).unwrap_or_default();
        assert_eq!(serde_json::from_str::<SyscallPolicy>(&json).ok(), Some(p));
    }

    // ------------------------------------------------------------------ privileged

    /// Set in the child process [`loaded_filter_denies_in_a_child_process`] re-executes.
    const CHILD_ENV: &str = "CTLD_TEST_SECCOMP_CHILD";
    const CHILD_TEST: &str = "worker::seccomp::tests::loaded_filter_denies_in_a_child_process";

    fn root_or_skip(test: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "{test}: needs root, and CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!(
            "{test}: skipped, needs root (CAP_SYS_ADMIN loads a filter without no_new_privs)"
        );
        false
    }

    /// Loads the default privileged filter plus a user denial into a process of its own (the
    /// filter stays with a process for life), then checks what it denies and allows.
    #[test]
    fn loaded_filter_denies_in_a_child_process() {
        use nix::errno::Errno;
        use nix::mount::{MntFlags, umount2};
        if std::env::var_os(CHILD_ENV).is_some() {
            let root = std::fs::File::open("/").unwrap_or_else(|e| panic!("open /: {e}"));
            let before = crate::worker::sys::open_by_handle_at_null(&root)
                .err()
                .and_then(|e| e.raw_os_error());
            assert_eq!(before, Some(libc::EFAULT), "no filter yet: the NULL handle");
            load(&SyscallPolicy {
                privileged: true,
                deny: names(&["chdir"]),
                ..policy()
            })
            .unwrap_or_else(|e| panic!("load: {e}"));
            let after = crate::worker::sys::open_by_handle_at_null(&root)
                .err()
                .and_then(|e| e.raw_os_error());
            assert_eq!(after, Some(libc::ENOSYS), "open_by_handle_at");
            assert_eq!(
                umount2("/nonexistent", MntFlags::MNT_FORCE),
                Err(Errno::EPERM)
            );
            assert_eq!(
                umount2("/nonexistent", MntFlags::empty()),
                Err(Errno::ENOENT),
                "a plain umount2 reaches the kernel"
            );
            assert_eq!(nix::unistd::chdir("/"), Err(Errno::EPERM), "user denial");
            assert_eq!(nix::unistd::getpid().as_raw() as u32, std::process::id());
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
            assert!(status.contains("NoNewPrivs:\t0"), "{status}");
            assert!(status.contains("Seccomp:\t2"), "{status}");
            return;
        }
        if !root_or_skip("loaded_filter_denies_in_a_child_process") {
            return;
        }
        crate::worker::rerun_test_in_child(CHILD_TEST, CHILD_ENV);
    }
}
