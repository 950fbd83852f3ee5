//! Containment: escape attempts from inside containers, against the real `ctld`.
//!
//! One C program in `tests/escape/` (`attacks.c` with `kernel.c` and `isolation.c`, compiled
//! here with `gcc -static`) holds every technique. It is pushed into a busybox container and
//! run as the container's root, one technique per `ctl exec`, each printing one
//! `RESULT <name> BLOCKED|ESCAPED <why>` line; a missing line is a failure, never a pass. The whole list runs in a default container, then
//! in a `security.privileged=true` one (on the same daemon); the suite prints a table and
//! `escape suite (MODE): N attempted, N blocked`, and asserts [`TECHNIQUES`]: every
//! technique blocked in the default container, a listed subset (seccomp, cgroups, namespace
//! isolation) blocked in the privileged one too.
//!
//! The host plants bait first (a marker file in its temp dir, a `sleep` with a unique
//! argv[0], a key in root's user keyring, an abstract unix socket) and afterwards checks
//! from outside what the attacks could have changed: the container's real limits and device
//! list, the host's hostname, the sleeper, the image layer. Whatever the host sees changed
//! counts as escaped, whatever the container printed. It also checks that the suite left the
//! host as it found it (sysctls, release agents, binfmt_misc, swap, mounts): attacks.c
//! observes and never acts (see its header), and this check keeps it honest.
//!
//! Pure syscall probes also run on the host as a control: when the host's kernel refuses
//! one too (kexec or modules not built in), a "blocked" in the container proves nothing,
//! and the table says so.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, Run, cgroup_root, pid_alive, require_root, unique};

/// One technique of `attacks.c` and what the suite requires of it.
struct Technique {
    name: &'static str,
    /// Must be blocked in a default container.
    default: bool,
    /// Must stay blocked in a `security.privileged=true` container.
    privileged: bool,
}

const fn technique(name: &'static str, default: bool, privileged: bool) -> Technique {
    Technique {
        name,
        default,
        privileged,
    }
}

/// Every technique, in the order they run, with whether it must be blocked in a default
/// and in a privileged container. The cgroup ones run last: they widen the container's own
/// cgroup. Must list exactly the techniques of `attacks.c --list` (checked).
const TECHNIQUES: &[Technique] = &[
    // /proc and /sys knobs of the host. A privileged container holds CAP_SYS_ADMIN and
    // CAP_SYSLOG in the host's user namespace: read-only binds only slow it down.
    technique("sysrq_trigger", true, false),
    technique("core_pattern", true, false),
    technique("modprobe_path", true, false),
    technique("proc_sys_remount", true, false),
    technique("sys_remount", true, false),
    technique("fresh_proc", true, false),
    technique("proc_kcore", true, false),
    technique("proc_kallsyms", true, false),
    technique("proc_kmsg", true, false),
    technique("proc_kpageflags", true, false),
    technique("syslog_read", true, false),
    // Syscalls a seccomp filter denies in every container, privileged or not.
    technique("kexec_load", true, true),
    technique("kexec_file_load", true, true),
    technique("init_module", true, true),
    technique("finit_module", true, true),
    technique("delete_module", true, true),
    technique("shocker", true, true),
    technique("umount_force", true, true),
    technique("keyctl_host_key", true, true),
    technique("keyctl_session", true, true),
    technique("bpf_prog_load", true, true),
    technique("perf_event_open", true, true),
    // An exploit primitive rather than an escape; Docker's profile denies it. Required in
    // privileged containers only if the seccomp filter takes it on.
    technique("userfaultfd", true, false),
    // Held back by namespaces, which privileged containers have too.
    technique("reboot", true, true),
    // Capabilities: a privileged container keeps CAP_SYS_ADMIN (swapon); the bounding set
    // drops CAP_SYS_TIME, CAP_SYS_RAWIO and CAP_SYS_MODULE in every container.
    technique("swapon", true, false),
    technique("set_clock", true, false),
    technique("iopl_ioperm", true, false),
    // Devices: the devices cgroup (v1) or its BPF program (v2).
    technique("dev_mem", true, false),
    technique("mknod_host_disk", true, false),
    technique("mknod_kmsg", true, false),
    // Host-wide pseudo filesystems.
    technique("mount_debugfs", true, false),
    technique("mount_tracefs", true, false),
    technique("mount_securityfs", true, false),
    technique("mount_pstore", true, false),
    technique("mount_binfmt_misc", true, false),
    technique("mount_bpffs", true, false),
    technique("mount_devtmpfs", true, false),
    technique("mount_fusectl", true, false),
    // Namespace isolation and the daemon's own hygiene.
    technique("unshare_userns", true, true),
    technique("chroot_escape", true, true),
    technique("host_process", true, true),
    technique("proc_pid_root", true, true),
    technique("leaked_fd_cwd", true, true),
    technique("setns_foreign", true, true),
    // A privileged container's root has CAP_SYS_PTRACE over the host's user namespace, so
    // the exec child being non-dumpable does not hide its /proc/PID/exe (the ctld binary,
    // which stays unwritable while ctld runs: ETXTBSY). Not root-safe, as docs/SECURITY.md
    // says; a default container cannot reach it.
    technique("exec_host_exe", true, false),
    technique("abstract_socket", true, true),
    technique("sethostname", true, true),
    technique("image_layer", true, true),
    // The container's cgroups, through fresh mounts and handles.
    technique("cgroup_release_agent", true, true),
    technique("cgroup_memory_raise", true, true),
    technique("cgroup_pids_raise", true, true),
    technique("cgroup_devices_allow", true, true),
];

/// Limits both containers get; the host checks them afterwards.
const MEMORY_LIMIT: &str = "67108864";
const PROCESS_LIMIT: &str = "50";

/// Per technique; `attacks.c` kills itself a little earlier.
const TECHNIQUE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long `exec_host_exe` watches, and how many `ctl exec` children it gets to watch.
const RACE_MS: u64 = 6000;
const RACE_EXECS: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    Privileged,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Privileged => "privileged",
        }
    }

    fn required(self, t: &Technique) -> bool {
        match self {
            Mode::Default => t.default,
            Mode::Privileged => t.privileged,
        }
    }
}

#[derive(Clone, Debug)]
enum Outcome {
    Blocked(String),
    Escaped(String),
    /// No (or no valid) RESULT line: the attempt was not made, which is a failure.
    Broken(String),
}

impl Outcome {
    fn blocked(&self) -> bool {
        matches!(self, Outcome::Blocked(_))
    }

    fn word(&self) -> &'static str {
        match self {
            Outcome::Blocked(_) => "blocked",
            Outcome::Escaped(_) => "ESCAPED",
            Outcome::Broken(_) => "BROKEN",
        }
    }

    fn why(&self) -> &str {
        match self {
            Outcome::Blocked(w) | Outcome::Escaped(w) | Outcome::Broken(w) => w,
        }
    }
}

/// Read a child's pipe to the end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Wait for `child` at most `timeout`, reading its output meanwhile; killed (by its own
/// handle) when late. Returns the run and whether it timed out.
fn finish(mut child: Child, timeout: Duration) -> (Run, bool) {
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Err(_) => break None,
        }
    };
    let run = Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    (run, timed_out)
}

fn run_timeout(mut cmd: Command, timeout: Duration) -> (Run, bool) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    finish(child, timeout)
}

/// The one `RESULT <technique> ...` line of a run.
fn parse(technique: &str, run: &Run, timed_out: bool) -> Outcome {
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    let context = || {
        format!(
            "exit {}{}, stdout {:?}, stderr {:?}",
            run.code,
            if timed_out { " (timed out)" } else { "" },
            run.stdout.trim(),
            run.stderr.trim()
        )
    };
    let [line] = lines[..] else {
        return Outcome::Broken(format!("{} RESULT lines: {}", lines.len(), context()));
    };
    let mut parts = line.splitn(4, ' ').skip(1);
    let (name, verdict, why) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default().trim().to_string(),
    );
    match (name == technique, verdict) {
        (true, "BLOCKED") => Outcome::Blocked(why),
        (true, "ESCAPED") => Outcome::Escaped(why),
        _ => Outcome::Broken(format!("{line:?}: {}", context())),
    }
}

/// The sources of the attacks program, in `tests/escape/`.
const ATTACK_SOURCES: &[&str] = &["attacks.c", "kernel.c", "isolation.c"];

/// Compile the attacks into one static program in `dir`.
fn compile(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("escape");
    let exe = dir.join("attacks");
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-Wall", "-o"])
        .arg(&exe)
        .args(ATTACK_SOURCES.iter().map(|f| src.join(f)))
        .output()
        .unwrap_or_else(|e| panic!("run gcc (.ci/run installs gcc and libc6-dev): {e}"));
    assert!(
        out.status.success(),
        "gcc -static {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// `attacks --list`: every technique and whether it is a pure probe the host may run.
fn listed(attacks: &Path) -> Vec<(String, bool)> {
    let mut cmd = Command::new(attacks);
    cmd.arg("--list");
    let (run, _) = run_timeout(cmd, Duration::from_secs(10));
    run.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, kind)| (n.to_string(), kind == "host-control"))
        .collect()
}

/// Whether a "blocked" says only that this kernel lacks the object (a /proc file not built
/// in, a filesystem type not compiled): nothing was tested.
fn absent_here(why: &str) -> bool {
    why.ends_with("(absent)") || why.contains("(not in this kernel)")
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// What the host plants for the attacks to find; removed on drop, also on failure.
struct Bait {
    attacks: PathBuf,
    token: String,
    marker: PathBuf,
    sleeper: Child,
    key: Option<String>,
    abstract_name: String,
    _socket: UnixListener,
}

impl Bait {
    fn plant(attacks: &Path) -> Bait {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let token = format!("{}-{nanos}", unique("ctl-escape"));
        let marker = std::env::temp_dir().join(format!("{token}.marker"));
        std::fs::write(&marker, &token)
            .unwrap_or_else(|e| panic!("write {}: {e}", marker.display()));
        let sleeper = Command::new("sleep")
            .arg0(&token)
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the host's sleep: {e}"));
        let abstract_name = token.clone();
        let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .unwrap_or_else(|e| panic!("abstract address: {e}"));
        let socket =
            UnixListener::bind_addr(&addr).unwrap_or_else(|e| panic!("bind @{abstract_name}: {e}"));
        let mut bait = Bait {
            attacks: attacks.to_path_buf(),
            token,
            marker,
            sleeper,
            key: None,
            abstract_name,
            _socket: socket,
        };
        // A key in the host root's user keyring, added the way the container will look for
        // it (attacks.c checks the host itself finds it).
        let out = Command::new(attacks)
            .args(["--host-key-add", &bait.key_desc(), &bait.token])
            .output()
            .unwrap_or_else(|e| panic!("add the host key: {e}"));
        assert!(
            out.status.success(),
            "add the host key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bait.key = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        bait
    }

    fn key_desc(&self) -> String {
        format!("{}-key", self.token)
    }

    /// The environment of every attempt: the bait and facts about the host.
    fn env(&self) -> Vec<String> {
        let session = Command::new(&self.attacks)
            .arg("--host-session-keyring")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let sys_dev = std::fs::metadata("/sys").map_or(0, |m| m.dev());
        let host_ns: Vec<String> = ["pid", "uts", "net", "mnt", "ipc", "cgroup", "user"]
            .iter()
            .filter_map(|t| {
                let ino = std::fs::metadata(format!("/proc/self/ns/{t}")).ok()?.ino();
                Some(format!("{t}:{ino}"))
            })
            .collect();
        vec![
            "ESC_IN_CONTAINER=1".into(),
            format!("ESC_TOKEN={}", self.token),
            format!("ESC_MARKER={}", self.marker.display()),
            format!("ESC_HOST_PID={}", self.sleeper.id()),
            format!("ESC_KEY_DESC={}", self.key_desc()),
            format!("ESC_DISK={}", host_disk()),
            format!("ESC_HOST_SYS_DEV={sys_dev}"),
            format!("ESC_ABSTRACT={}", self.abstract_name),
            format!(
                "ESC_HOST_HOSTNAME={}",
                read_trim("/proc/sys/kernel/hostname").unwrap_or_default()
            ),
            format!("ESC_HOST_SESSION={session}"),
            format!("ESC_HOST_NS={}", host_ns.join(",")),
            format!("ESC_RACE_MS={RACE_MS}"),
        ]
    }

    /// Whether the sleeper is alive, running (not stopped) and untraced.
    fn sleeper_untouched(&self) -> Result<(), String> {
        let pid = self.sleeper.id() as i32;
        if !pid_alive(pid) {
            return Err(format!("the host's process {pid} is gone"));
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let (state, tracer) = (field("State:"), field("TracerPid:"));
        if state.starts_with('T') || state.starts_with('t') || tracer != "0" {
            return Err(format!(
                "the host's process {pid} is {state}, tracer {tracer}"
            ));
        }
        Ok(())
    }
}

impl Drop for Bait {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        if let Some(key) = &self.key {
            let _ = Command::new(&self.attacks)
                .args(["--host-key-remove", key])
                .status();
        }
        let _ = std::fs::remove_file(&self.marker);
    }
}

/// The host's root disk as `major:minor` (its root filesystem's device, or the first disk).
fn host_disk() -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(2).map(|s| s.to_string()));
    if let Some(dev) = root.filter(|d| !d.starts_with("0:")) {
        return dev;
    }
    let partitions = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    partitions
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 4)
        .map(|f| format!("{}:{}", f[0], f[1]))
        .unwrap_or_default()
}

/// What the suite must leave as it found it on the host.
fn host_state() -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    for k in [
        "kernel/core_pattern",
        "kernel/modprobe",
        "kernel/hostname",
        "kernel/domainname",
        "kernel/sysrq",
        "kernel/panic",
        "kernel/kptr_restrict",
        "kernel/dmesg_restrict",
        "kernel/perf_event_paranoid",
        "kernel/unprivileged_bpf_disabled",
        "vm/unprivileged_userfaultfd",
        "vm/swappiness",
    ] {
        if let Some(v) = read_trim(Path::new("/proc/sys").join(k)) {
            s.insert(format!("sysctl {k}"), v);
        }
    }
    for f in [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/ksm/run",
        "/sys/kernel/rcu_expedited",
        "/proc/swaps",
    ] {
        if let Some(v) = read_trim(f) {
            s.insert(f.to_string(), v);
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            for f in ["release_agent", "notify_on_release"] {
                if let Some(v) = read_trim(e.path().join(f)) {
                    s.insert(e.path().join(f).display().to_string(), v);
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc/sys/fs/binfmt_misc") {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        s.insert("binfmt_misc entries".into(), names.join(" "));
    }
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ctl-esc-"))
        .map(str::to_owned)
        .collect();
    s.insert("host mounts of ctl-esc-*".into(), mounts.join("\n"));
    s
}

/// A digest of a directory tree: names, modes, symlink targets and file contents.
fn tree_digest(root: &Path) -> u64 {
    fn walk(dir: &Path, h: &mut DefaultHasher) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(m) = p.symlink_metadata() else {
                continue;
            };
            p.hash(h);
            m.mode().hash(h);
            if m.file_type().is_symlink() {
                std::fs::read_link(&p).ok().hash(h);
            } else if m.is_dir() {
                walk(&p, h);
            } else if m.is_file() {
                std::fs::read(&p).ok().hash(h);
            }
        }
    }
    let mut h = DefaultHasher::new();
    walk(root, &mut h);
    h.finish()
}

fn image_rootfs(d: &Daemon) -> PathBuf {
    let (_, v) = d.http("GET", "/1.0/images/aliases/busybox", None);
    let fp = v["metadata"]["target"].as_str().unwrap_or_default();
    assert_eq!(fp.len(), 64, "busybox alias: {v}");
    d.path().join("images").join(fp).join("rootfs")
}

/// Launch the container for `mode` and push the attacks into it. Returns a note when the
/// daemon does not know `security.privileged` (then every container is privileged, and
/// the privileged run uses one launched without the key).
fn launch(d: &Daemon, name: &str, mode: Mode, attacks: &Path) -> Option<String> {
    let memory = format!("limits.memory={MEMORY_LIMIT}");
    let processes = format!("limits.processes={PROCESS_LIMIT}");
    let mut args = vec!["launch", "busybox", name, "-c", &memory, "-c", &processes];
    if mode == Mode::Privileged {
        args.extend(["-c", "security.privileged=true"]);
    }
    let r = d.ctl(&args);
    let mut note = None;
    if r.code != 0 && mode == Mode::Privileged && r.stderr.contains("security.privileged") {
        note = Some(format!(
            "this daemon refuses security.privileged ({}): every container is privileged, so \
             the privileged run uses a container launched without the key",
            r.stderr.trim()
        ));
        if d.instances().iter().any(|i| i == name) {
            d.ok(&["delete", "--force", name]);
        }
        d.ok(&args[..args.len() - 2]);
    } else {
        assert_eq!(r.code, 0, "launch {name}: {r:?}\n{}", d.log());
    }
    let target = format!("{name}/attacks");
    let local = attacks.display().to_string();
    d.ok(&["file", "push", &local, &target, "--mode", "0755"]);
    note
}

/// Run one technique in the container `name`.
fn attempt(d: &Daemon, name: &str, env: &[String], technique: &str) -> Outcome {
    let mut args = vec!["exec", name];
    for e in env {
        args.extend(["--env", e.as_str()]);
    }
    args.extend(["--", "/attacks", technique]);
    if technique != "exec_host_exe" {
        let child = d
            .ctl_command(&args)
            .spawn()
            .unwrap_or_else(|e| panic!("ctl exec {technique}: {e}"));
        let (run, timed_out) = finish(child, TECHNIQUE_TIMEOUT);
        return parse(technique, &run, timed_out);
    }
    // The race: the attack watches the container's next PIDs while `ctl exec` children
    // start; each is visible in the container before it execs.
    let watcher = d
        .ctl_command(&args)
        .spawn()
        .unwrap_or_else(|e| panic!("ctl exec {technique}: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    for _ in 0..RACE_EXECS {
        if started.elapsed() > Duration::from_millis(RACE_MS - 1000) {
            break;
        }
        let _ = d.ctl(&["exec", name, "--", "true"]);
    }
    let (run, timed_out) = finish(watcher, TECHNIQUE_TIMEOUT);
    parse(technique, &run, timed_out)
}

/// What the host sees of one technique's target after a run.
enum HostView {
    Unchanged,
    /// The attack got through, whatever the container printed.
    Changed(String),
    /// The host cannot tell (its file is elsewhere on this daemon): the container's word
    /// stands, with a note.
    Unverified(String),
}

/// The host's view after a mode's run, for the techniques whose effect it can see.
fn host_checks(
    d: &Daemon,
    name: &str,
    bait: &Bait,
    hostname: &str,
    image: (&Path, u64),
) -> Vec<(&'static str, HostView)> {
    let v2 = cgroup_root("memory") == Path::new("/sys/fs/cgroup");
    let limit = |ctl: &str, file: &str, want: &str| {
        let path = d.cgroup_dir(ctl, name).join(file);
        match read_trim(&path) {
            Some(v) if v == want => HostView::Unchanged,
            Some(v) => HostView::Changed(format!(
                "the host sees {} = {v}, not {want}",
                path.display()
            )),
            None => HostView::Unverified(format!("the host cannot read {}", path.display())),
        }
    };
    let memory_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let mut out = vec![
        (
            "cgroup_memory_raise",
            limit("memory", memory_file, MEMORY_LIMIT),
        ),
        (
            "cgroup_pids_raise",
            limit("pids", "pids.max", PROCESS_LIMIT),
        ),
        (
            "sethostname",
            match read_trim("/proc/sys/kernel/hostname") {
                Some(h) if h == hostname => HostView::Unchanged,
                h => HostView::Changed(format!("the host's hostname is now {h:?}")),
            },
        ),
        (
            "host_process",
            match bait.sleeper_untouched() {
                Ok(()) => HostView::Unchanged,
                Err(e) => HostView::Changed(e),
            },
        ),
        (
            "image_layer",
            if tree_digest(image.0) == image.1 {
                HostView::Unchanged
            } else {
                HostView::Changed(format!("the image layer {} changed", image.0.display()))
            },
        ),
    ];
    if !v2 {
        let list = d.cgroup_dir("devices", name).join("devices.list");
        out.push((
            "cgroup_devices_allow",
            match read_trim(&list) {
                Some(l) if l.lines().any(|l| l.trim() == "a *:* rwm") => {
                    HostView::Changed(format!("the host sees 'a *:* rwm' in {}", list.display()))
                }
                Some(_) => HostView::Unchanged,
                None => HostView::Unverified(format!("the host cannot read {}", list.display())),
            },
        ));
    }
    out
}

/// Run every technique in one container; what the host sees changed overrides the
/// container's word. Returns the outcomes and notes on what the host could not verify.
fn run_mode(
    d: &Daemon,
    name: &str,
    bait: &Bait,
    image: (&Path, u64),
) -> (BTreeMap<&'static str, Outcome>, Vec<String>) {
    let env = bait.env();
    let hostname = read_trim("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut results: BTreeMap<&'static str, Outcome> = TECHNIQUES
        .iter()
        .map(|t| (t.name, attempt(d, name, &env, t.name)))
        .collect();
    let mut notes = Vec::new();
    for (technique, view) in host_checks(d, name, bait, &hostname, image) {
        match (view, results.get_mut(technique)) {
            (HostView::Changed(seen), Some(r)) => {
                *r = Outcome::Escaped(format!("{seen} (container said: {})", r.why()));
            }
            (HostView::Unverified(why), _) => notes.push(format!("{name} {technique}: {why}")),
            _ => {}
        }
    }
    // Leave the host as it was even if an attack got through.
    if read_trim("/proc/sys/kernel/hostname").as_deref() != Some(hostname.as_str()) {
        let _ = std::fs::write("/proc/sys/kernel/hostname", &hostname);
    }
    (results, notes)
}

#[test]
fn escape_suite() {
    if !require_root("escape_suite") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ctl-escape-")
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let attacks = compile(tmp.path());
    let mut problems = Vec::new();

    let list = listed(&attacks);
    let in_c: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    let in_table: Vec<&str> = TECHNIQUES.iter().map(|t| t.name).collect();
    assert_eq!(in_c, in_table, "attacks.c --list and TECHNIQUES differ");

    let before = host_state();
    let bait = Bait::plant(&attacks);
    let d = Daemon::start();

    // The control: the pure probes on the host, as root. What the host's kernel refuses
    // too, a container's "blocked" cannot prove.
    let control: BTreeMap<String, Outcome> = list
        .iter()
        .filter(|(_, host)| *host)
        .map(|(t, _)| {
            let mut cmd = Command::new(&attacks);
            cmd.arg(t).env("ESC_HOST_CONTROL", "1");
            let (run, timed_out) = run_timeout(cmd, TECHNIQUE_TIMEOUT);
            (t.clone(), parse(t, &run, timed_out))
        })
        .collect();

    let modes = [
        (Mode::Default, "esc-default"),
        (Mode::Privileged, "esc-privileged"),
    ];
    let mut notes = Vec::new();
    for (mode, name) in modes {
        notes.extend(launch(&d, name, mode, &attacks));
    }
    let rootfs = image_rootfs(&d);
    let digest = tree_digest(&rootfs);
    let mut results: Vec<(Mode, BTreeMap<&'static str, Outcome>)> = Vec::new();
    for (mode, name) in modes {
        let (r, unverified) = run_mode(&d, name, &bait, (&rootfs, digest));
        results.push((mode, r));
        notes.extend(unverified);
    }

    // The table.
    println!("\nescape suite: {} techniques", TECHNIQUES.len());
    println!(
        "{:<22} {:<16} {:<16} HOST KERNEL (control)",
        "TECHNIQUE", "DEFAULT", "PRIVILEGED"
    );
    for t in TECHNIQUES {
        let cell = |mode: Mode| {
            let r = results
                .iter()
                .find(|(m, _)| *m == mode)
                .map(|(_, r)| r)
                .and_then(|r| r.get(t.name));
            let word = r.map_or("-", |o| o.word());
            let flag = if mode.required(t) && !r.is_some_and(|o| o.blocked()) {
                "!"
            } else if mode.required(t) {
                ""
            } else {
                " (free)"
            };
            format!("{word}{flag}")
        };
        let host = match control.get(t.name) {
            None => String::new(),
            Some(Outcome::Escaped(_)) => "reachable".into(),
            Some(o) => format!("refuses too: {}", o.why()),
        };
        println!(
            "{:<22} {:<16} {:<16} {host}",
            t.name,
            cell(Mode::Default),
            cell(Mode::Privileged)
        );
    }
    println!("(! = required to be blocked but not; (free) = not required in this mode)\n");
    for t in TECHNIQUES {
        println!("{}:", t.name);
        for (mode, r) in &results {
            if let Some(o) = r.get(t.name) {
                println!("    {:<10} {} {}", mode.label(), o.word(), o.why());
            }
        }
    }
    println!();
    for (mode, r) in &results {
        let blocked = r.values().filter(|o| o.blocked()).count();
        println!(
            "escape suite ({}): {} attempted, {blocked} blocked",
            mode.label(),
            r.len()
        );
        let vacuous: Vec<&str> = r
            .iter()
            .filter(|(t, o)| {
                o.blocked()
                    && (control.get(**t).is_some_and(|c| c.blocked()) || absent_here(o.why()))
            })
            .map(|(t, _)| *t)
            .collect();
        if !vacuous.is_empty() {
            println!(
                "    of which blocked only because this kernel lacks them (refused on the host \
                 too, or absent): {}",
                vacuous.join(", ")
            );
        }
    }
    for n in &notes {
        println!("note: {n}");
    }

    // The host as the suite found it, once the daemon and its containers are gone.
    drop(d);
    let after = host_state();
    for (k, v) in &before {
        if after.get(k) != Some(v) {
            problems.push(format!(
                "the host changed: {k} was {v:?}, is {:?}",
                after.get(k)
            ));
        }
    }
    if let Err(e) = bait.sleeper_untouched() {
        problems.push(format!("the host changed: {e}"));
    }
    for (name, o) in &control {
        if let Outcome::Broken(why) = o {
            problems.push(format!("host control {name}: {why}"));
        }
    }
    for (mode, r) in &results {
        for t in TECHNIQUES {
            match r.get(t.name) {
                Some(Outcome::Blocked(_)) => {}
                Some(Outcome::Broken(why)) => {
                    problems.push(format!("{} {}: not attempted: {why}", mode.label(), t.name))
                }
                Some(Outcome::Escaped(why)) if mode.required(t) => {
                    problems.push(format!("{} {}: ESCAPED: {why}", mode.label(), t.name))
                }
                Some(Outcome::Escaped(_)) => {}
                None => problems.push(format!("{} {}: no result", mode.label(), t.name)),
            }
        }
    }
    drop(bait);
    assert!(
        problems.is_empty(),
        "escape suite: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
