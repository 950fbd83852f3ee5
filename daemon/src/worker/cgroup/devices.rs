//! A container's device policy: which device nodes it may create (`mknod`) and open. One
//! allow list, [`V1_DEVICE_ALLOW`], in the v1 `devices.allow` syntax, enforced twice where
//! the host has both:
//!
//! - v1 (`devices` controller): `a` denied, then each rule allowed, on the container's
//!   outer cgroup (a child cgroup can never allow more than its parent);
//! - cgroup2 (pure v2, and the unified tree of a hybrid host, which the kernel checks as
//!   well): a `BPF_PROG_TYPE_CGROUP_DEVICE` program compiled from the same rules by
//!   [`device_program`] and attached to the outer cgroup, as LXC/Incus, runc and youki do.
//!
//! The program is attached with `BPF_F_ALLOW_MULTI`. The kernel runs the programs of every
//! `ALLOW_MULTI` ancestor for each device access in a cgroup and allows it only if all of
//! them do, whatever a descendant attaches (with any flags), so a nested runtime or systemd
//! inside may add programs of its own that can only deny more. With flags 0 nothing could be
//! attached below at all, which breaks those nested runtimes for no gain. Loading a device
//! program needs `CAP_BPF`/`CAP_SYS_ADMIN` in the initial user namespace, which a
//! user-namespaced container never has; a privileged container is host root and could
//! detach the program through a handle to the outer cgroup, so for it the policy guards
//! against accidents, not attacks.
//!
//! The program stays attached as long as the cgroup exists; its descriptor is closed right
//! after the attach. It calls no helper, so its license string does not matter to the kernel
//! (GPL is only required by GPL-only helpers); we state the project's.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::worker::sys;

/// Devices a container may use: `mknod` of any node (creating one is harmless while opening
/// it is denied), the standard character devices (`null`, `zero`, `full`, `random`,
/// `urandom`, `tty`, `console`, `ptmx`), ptys, and as Incus allows by default `fuse` and
/// `net/tun`.
pub const V1_DEVICE_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
    "c 10:200 rwm",
];

/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`: the device type in the low 16 bits of
/// `bpf_cgroup_dev_ctx.access_type`.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE`: the access in its high 16 bits.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One allow rule: `None` matches any type, major or minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// [`DEV_BLOCK`] or [`DEV_CHAR`].
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits the rule allows.
    pub access: u32,
}

impl DeviceRule {
    /// Parse a v1 rule: `a`, or `<b|c|a> <major|*>:<minor|*> <r|w|m...>`.
    pub fn parse(s: &str) -> Option<DeviceRule> {
        let mut f = s.split_whitespace();
        let kind = match f.next()? {
            "a" => None,
            "b" => Some(DEV_BLOCK),
            "c" => Some(DEV_CHAR),
            _ => return None,
        };
        let Some(numbers) = f.next() else {
            return kind.is_none().then_some(DeviceRule {
                kind,
                major: None,
                minor: None,
                access: ACC_ALL,
            });
        };
        let num = |n: &str| -> Option<Option<u32>> {
            if n == "*" {
                return Some(None);
            }
            // Compared as a signed 32-bit immediate in the program.
            n.parse::<u32>()
                .ok()
                .filter(|v| i32::try_from(*v).is_ok())
                .map(Some)
        };
        let (major, minor) = numbers.split_once(':')?;
        let (major, minor) = (num(major)?, num(minor)?);
        let mut access = 0;
        for c in f.next().unwrap_or("rwm").chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => return None,
            };
        }
        if f.next().is_some() || access == 0 {
            return None;
        }
        Some(DeviceRule {
            kind,
            major,
            minor,
            access,
        })
    }
}

/// The rules of [`V1_DEVICE_ALLOW`]; `None` if one does not parse (a unit test keeps them
/// valid).
pub fn default_rules() -> Option<Vec<DeviceRule>> {
    V1_DEVICE_ALLOW
        .iter()
        .map(|r| DeviceRule::parse(r))
        .collect()
}

/// One eBPF instruction, as the kernel's `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    /// The instruction as the 8 bytes of `struct bpf_insn` in native order (the register
    /// nibbles are bitfields, whose order follows the byte order).
    pub fn encode(self) -> u64 {
        let regs = if cfg!(target_endian = "little") {
            (self.dst & 0xf) | (self.src << 4)
        } else {
            (self.dst << 4) | (self.src & 0xf)
        };
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        u64::from_ne_bytes(b)
    }
}

/// Opcodes (class | size/op | mode/source) of the instructions the program uses.
mod op {
    /// `BPF_LDX | BPF_MEM | BPF_W`: `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU | BPF_MOV | BPF_X`: `dst = (u32)src`.
    pub const MOV32_REG: u8 = 0xbc;
    /// `BPF_ALU | BPF_AND | BPF_K`: `dst &= imm` (32-bit).
    pub const AND32_IMM: u8 = 0x54;
    /// `BPF_ALU | BPF_RSH | BPF_K`: `dst >>= imm` (32-bit).
    pub const RSH32_IMM: u8 = 0x74;
    /// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
    pub const MOV64_IMM: u8 = 0xb7;
    /// `BPF_JMP | BPF_JNE | BPF_K`: `if dst != imm goto pc + 1 + off`.
    pub const JNE_IMM: u8 = 0x55;
    /// `BPF_JMP | BPF_JNE | BPF_X`: `if dst != src goto pc + 1 + off`.
    pub const JNE_REG: u8 = 0x5d;
    /// `BPF_JMP | BPF_EXIT`: return `r0`.
    pub const EXIT: u8 = 0x95;
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// Compile `rules` into a `BPF_PROG_TYPE_CGROUP_DEVICE` program: returns 1 (allow) if some
/// rule matches the access, else 0 (`EPERM`). Pure; unit-tested with a small interpreter.
///
/// The context `r1` points at `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
/// minor; }` with `access_type = access << 16 | type`. The prologue loads type into `r2`,
/// access into `r3`, major into `r4`, minor into `r5`; each rule is a block of "not this
/// one" jumps to the next block, ending in `return 1`.
pub fn device_program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(op::LDX_W, 2, 1, 0, 0),
        insn(op::MOV32_REG, 3, 2, 0, 0),
        insn(op::AND32_IMM, 2, 0, 0, 0xffff),
        insn(op::RSH32_IMM, 3, 0, 0, 16),
        insn(op::LDX_W, 4, 1, 4, 0),
        insn(op::LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        // Each check is (instructions before its jump, the jump with off to fill in).
        let mut block: Vec<BpfInsn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        let imm = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        for (reg, want) in [(2, rule.kind), (4, rule.major), (5, rule.minor)] {
            if let Some(v) = want {
                jumps.push(block.len());
                block.push(insn(op::JNE_IMM, reg, 0, 0, imm(v)));
            }
        }
        if rule.access & ACC_ALL != ACC_ALL {
            // Allowed only if the requested bits are a subset: (r3 & allowed) == r3.
            block.push(insn(op::MOV32_REG, 1, 3, 0, 0));
            block.push(insn(op::AND32_IMM, 1, 0, 0, imm(rule.access)));
            jumps.push(block.len());
            block.push(insn(op::JNE_REG, 1, 3, 0, 0));
        }
        block.push(insn(op::MOV64_IMM, 0, 0, 0, 1));
        block.push(insn(op::EXIT, 0, 0, 0, 0));
        let len = block.len();
        let matches_all = jumps.is_empty();
        for j in jumps {
            // To the first instruction after this block.
            block[j].off = i16::try_from(len - j - 1).unwrap_or(i16::MAX);
        }
        p.extend(block);
        if matches_all {
            // Nothing after a rule that allows everything is reachable, and the verifier
            // refuses unreachable instructions.
            return p;
        }
    }
    p.push(insn(op::MOV64_IMM, 0, 0, 0, 0));
    p.push(insn(op::EXIT, 0, 0, 0, 0));
    p
}

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE` (attach type).
const ATTACH_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`.
const F_ALLOW_MULTI: u32 = 1 << 1;
/// The license the program declares.
const LICENSE: &CStr = c"Apache-2.0";

/// Load the program of `rules` and attach it to the cgroup2 directory `dir` (see the module
/// docs for the flags). Needs `CAP_BPF` and `CAP_SYS_ADMIN` (or root).
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> io::Result<()> {
    attach_program(dir, &device_program(rules))
}

/// Device programs loaded so far, by their instructions, at most [`LOADED_MAX`]. Every
/// container gets the same policy: verifying and loading it once and attaching that one
/// program to each new cgroup saves a `BPF_PROG_LOAD` (0.2–0.4 ms) per start. The kernel
/// runs a program attached to several cgroups the same way as one copy per cgroup; the
/// descriptors are close-on-exec (as every BPF descriptor), so no child inherits them.
static LOADED: Mutex<Vec<(Vec<u64>, OwnedFd)>> = Mutex::new(Vec::new());
const LOADED_MAX: usize = 4;

/// Load `program` as a device program (or reuse the one loaded before) and attach it to
/// `dir` with `BPF_F_ALLOW_MULTI`.
pub(super) fn attach_program(dir: &Path, program: &[BpfInsn]) -> io::Result<()> {
    let words: Vec<u64> = program.iter().map(|i| i.encode()).collect();
    let cgroup = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    let i = match loaded.iter().position(|(w, _)| *w == words) {
        Some(i) => i,
        None => {
            let prog = sys::bpf_prog_load(PROG_TYPE_CGROUP_DEVICE, &words, LICENSE, "ctl_devices")?;
            if loaded.len() >= LOADED_MAX {
                loaded.remove(0);
            }
            loaded.push((words, prog));
            loaded.len() - 1
        }
    };
    sys::bpf_prog_attach(
        cgroup.as_fd(),
        loaded[i].1.as_fd(),
        ATTACH_CGROUP_DEVICE,
        F_ALLOW_MULTI,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `p` on one device access the way the kernel would: `Some(true)` allow,
    /// `Some(false)` deny, `None` for an instruction the interpreter does not know or a jump
    /// out of the program.
    fn run(p: &[BpfInsn], kind: u32, major: u32, minor: u32, access: u32) -> Option<bool> {
        let ctx = [access << 16 | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 10_000 {
                return None;
            }
            let i = p.get(pc)?;
            let (d, s) = (usize::from(i.dst), usize::from(i.src));
            let imm64 = i64::from(i.imm) as u64;
            let jump = |pc: usize| pc.checked_add_signed(1 + isize::from(i.off));
            pc = match i.code {
                op::LDX_W => {
                    // r1 is the context; offsets 0, 4, 8.
                    let idx = usize::try_from(i.off / 4).ok()?;
                    if s != 1 || i.off % 4 != 0 {
                        return None;
                    }
                    r[d] = u64::from(*ctx.get(idx)?);
                    pc + 1
                }
                op::MOV32_REG => {
                    r[d] = r[s] & 0xffff_ffff;
                    pc + 1
                }
                op::AND32_IMM => {
                    r[d] = (r[d] & imm64) & 0xffff_ffff;
                    pc + 1
                }
                op::RSH32_IMM => {
                    r[d] = ((r[d] & 0xffff_ffff) >> i.imm) & 0xffff_ffff;
                    pc + 1
                }
                op::MOV64_IMM => {
                    r[d] = imm64;
                    pc + 1
                }
                op::JNE_IMM if r[d] != imm64 => jump(pc)?,
                op::JNE_REG if r[d] != r[s] => jump(pc)?,
                op::JNE_IMM | op::JNE_REG => pc + 1,
                op::EXIT => return Some(r[0] == 1),
                _ => return None,
            };
        }
    }

    fn rules() -> Vec<DeviceRule> {
        default_rules().unwrap_or_default()
    }

    #[test]
    fn the_allow_list_parses_and_has_the_standard_nodes() {
        let r = rules();
        assert_eq!(r.len(), V1_DEVICE_ALLOW.len());
        let has = |kind, major, minor, access| {
            r.contains(&DeviceRule {
                kind: Some(kind),
                major,
                minor,
                access,
            })
        };
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert!(
                has(DEV_CHAR, Some(major), Some(minor), ACC_ALL),
                "{major}:{minor}"
            );
        }
        assert!(has(DEV_CHAR, Some(136), None, ACC_ALL));
        assert!(has(DEV_CHAR, Some(10), Some(229), ACC_ALL));
        assert!(has(DEV_CHAR, Some(10), Some(200), ACC_ALL));
        assert!(has(DEV_CHAR, None, None, ACC_MKNOD));
        assert!(has(DEV_BLOCK, None, None, ACC_MKNOD));
        for bad in [
            "x 1:3 rwm",
            "c 1 rwm",
            "c 1:3 rwz",
            "c 1:3 rw extra",
            "c 9999999999:1 r",
        ] {
            assert_eq!(DeviceRule::parse(bad), None, "{bad}");
        }
        assert_eq!(
            DeviceRule::parse("a"),
            Some(DeviceRule {
                kind: None,
                major: None,
                minor: None,
                access: ACC_ALL
            })
        );
    }

    #[test]
    fn the_program_allows_exactly_the_list() {
        let p = device_program(&rules());
        let (c, b) = (DEV_CHAR, DEV_BLOCK);
        let rw = ACC_READ | ACC_WRITE;
        let cases = [
            // (type, major, minor, access, allowed)
            (c, 1, 3, ACC_READ, true),   // null
            (c, 1, 3, rw, true),         // null, opened rw
            (c, 1, 5, ACC_READ, true),   // zero
            (c, 1, 9, ACC_READ, true),   // urandom
            (c, 5, 2, rw, true),         // ptmx
            (c, 136, 7, rw, true),       // /dev/pts/7
            (c, 10, 229, rw, true),      // fuse
            (c, 10, 200, rw, true),      // net/tun
            (c, 1, 11, ACC_READ, false), // kmsg
            (c, 1, 1, ACC_READ, false),  // mem
            (c, 1, 11, ACC_MKNOD, true), // mknod of anything
            (b, 8, 0, ACC_MKNOD, true),
            (b, 8, 0, ACC_READ, false), // sda
            (b, 8, 0, ACC_MKNOD | ACC_READ, false),
            (b, 1, 3, ACC_READ, false), // block 1:3 is not char 1:3
            (c, 10, 1, ACC_READ, false),
            (c, 137, 0, ACC_READ, false),
        ];
        for (kind, major, minor, access, want) in cases {
            assert_eq!(
                run(&p, kind, major, minor, access),
                Some(want),
                "type {kind} {major}:{minor} access {access}"
            );
        }
        // No rules: everything denied; `a`: everything allowed.
        assert_eq!(run(&device_program(&[]), c, 1, 3, ACC_READ), Some(false));
        let all = DeviceRule::parse("a").map(|r| vec![r]).unwrap_or_default();
        assert_eq!(run(&device_program(&all), b, 8, 0, rw), Some(true));
    }

    /// Indexes of the instructions reachable from the first one.
    fn reachable(p: &[BpfInsn]) -> Vec<bool> {
        let mut seen = vec![false; p.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            let Some(i) = p.get(pc) else { continue };
            if std::mem::replace(&mut seen[pc], true) {
                continue;
            }
            match i.code {
                op::EXIT => {}
                op::JNE_IMM | op::JNE_REG => {
                    todo.push(pc + 1);
                    todo.extend(pc.checked_add_signed(1 + isize::from(i.off)));
                }
                _ => todo.push(pc + 1),
            }
        }
        seen
    }

    #[test]
    fn every_instruction_is_reachable() {
        let all = DeviceRule::parse("a").map(|r| vec![r]).unwrap_or_default();
        let mut after_all = all.clone();
        after_all.extend(rules());
        for p in [
            device_program(&rules()),
            device_program(&[]),
            device_program(&all),
            device_program(&after_all),
        ] {
            assert!(reachable(&p).iter().all(|r| *r), "{p:?}");
        }
    }

    #[test]
    fn jumps_land_on_the_next_rule() {
        let p = device_program(&rules());
        // Every jump stays inside the program and lands on a rule start or the final deny.
        for (pc, i) in p.iter().enumerate() {
            if matches!(i.code, op::JNE_IMM | op::JNE_REG) {
                let to = pc + 1 + usize::try_from(i.off).unwrap_or(usize::MAX);
                assert!(to < p.len(), "jump at {pc} leaves the program");
                assert_eq!(p[to - 1].code, op::EXIT, "jump at {pc} lands mid-block");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(op::EXIT));
        assert_eq!(p[p.len() - 2], insn(op::MOV64_IMM, 0, 0, 0, 0));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn instructions_encode_as_struct_bpf_insn() {
        // r0 = 1: b7 00 0000 01000000; exit: 95; r2 = *(u32 *)(r1 + 4): 61 12 0400 00000000.
        assert_eq!(
            insn(op::MOV64_IMM, 0, 0, 0, 1).encode(),
            0x0000_0001_0000_00b7
        );
        assert_eq!(insn(op::EXIT, 0, 0, 0, 0).encode(), 0x95);
        assert_eq!(insn(op::LDX_W, 2, 1, 4, 0).encode(), 0x0000_0000_0004_1261);
        assert_eq!(
            insn(op::JNE_IMM, 4, 0, -1, 136).encode(),
            0x0000_0088_ffff_0455
        );
    }

    /// Removes the test's directories, deepest first, on every exit path.
    struct DirsGuard(Vec<std::path::PathBuf>);

    impl Drop for DirsGuard {
        fn drop(&mut self) {
            for d in self.0.iter().rev() {
                if let Err(e) = super::super::remove_tree(d) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }

    /// Run `script` in `/bin/sh` after it wrote itself into `procs`; (stdout, stderr).
    fn sh_in(procs: &Path, script: &str) -> io::Result<(String, String)> {
        let full = format!("echo $$ > \"$1\" || exit 90\n{script}");
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &full, "sh"])
            .arg(procs)
            .output()?;
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.code() != Some(0) {
            return Err(io::Error::other(format!(
                "sh: {:?}: {}{}",
                out.status,
                s(&out.stdout),
                s(&out.stderr)
            )));
        }
        Ok((s(&out.stdout), s(&out.stderr)))
    }

    /// The BPF program alone (the v1 devices controller, if any, is left at the host's
    /// allow-all): on a real cgroup2 tree, a process in a child of the cgroup it is attached
    /// to opens the allowed nodes but not `/dev/kmsg`, and a program that allows everything
    /// attached below does not change that.
    #[test]
    fn bpf_program_denies_what_the_list_does_not_allow() -> Result<(), Box<dyn std::error::Error>> {
        if !super::super::root_or_skip("cgroup2 device program") {
            return Ok(());
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let root = Path::new("/sys/fs/cgroup");
        let layout = super::super::CgroupLayout::detect(root, &mountinfo)?;
        let Some(unified) = layout.unified().filter(|_| layout.bpf_devices) else {
            assert!(
                std::env::var_os("CTL_REQUIRE_ALL").is_none(),
                "no cgroup2 tree, and CTL_REQUIRE_ALL forbids skipping"
            );
            eprintln!(
                "cgroup2 device program: skipped, no cgroup2 under {}",
                root.display()
            );
            return Ok(());
        };
        let outer = unified
            .path
            .join(format!("ctl-bpf-test-{}", std::process::id()));
        let inner = outer.join("ns");
        let _guard = DirsGuard(vec![outer.clone(), inner.clone()]);
        fs::create_dir(&outer)?;
        fs::create_dir(&inner)?;
        let procs = inner.join("cgroup.procs");
        let tmp = tempfile::tempdir()?;
        let node = tmp.path().join("kmsg");
        let script = format!(
            "head -c1 /dev/null && echo null-ok
head -c1 /dev/zero > /dev/null && echo zero-ok
mknod {node} c 1 11 && echo mknod-ok
head -c0 /dev/kmsg && echo kmsg-ok
exit 0",
            node = node.display()
        );
        // Control: without the program the host lets root open /dev/kmsg.
        let (before, _) = sh_in(&procs, "head -c0 /dev/kmsg && echo kmsg-ok")?;
        assert!(before.contains("kmsg-ok"), "{before}");
        attach(&outer, &default_rules().unwrap_or_default())?;
        let (stdout, stderr) = sh_in(&procs, &script)?;
        for ok in ["null-ok", "zero-ok", "mknod-ok"] {
            assert!(stdout.contains(ok), "{ok}: {stdout}{stderr}");
        }
        assert!(!stdout.contains("kmsg-ok"), "{stdout}{stderr}");
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
        // What a nested runtime (or a privileged container) attaches below cannot loosen it.
        let all = DeviceRule::parse("a").map(|r| vec![r]).unwrap_or_default();
        attach(&inner, &all)?;
        let (stdout, stderr) = sh_in(&procs, "head -c0 /dev/kmsg && echo kmsg-ok\nexit 0")?;
        assert!(!stdout.contains("kmsg-ok"), "{stdout}{stderr}");
        assert!(stderr.contains("Operation not permitted"), "{stderr}");
        Ok(())
    }
}
