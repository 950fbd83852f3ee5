//! A cluster member's namespaces ([`MemberNs`]): a network namespace on the test bridge and
//! a mount namespace pinned by a bind-mounted nsfs file, with its own `/sys`; and a TCP
//! listener and probes run inside the network namespace ([`NsListener`]).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{
    MountEntry, TestBridge, host_interfaces, is_host_mount, parse_mountinfo, report, run,
    short_name, try_run,
};
use crate::{Daemon, command_in};

/// One member's namespaces: a network namespace (`ip netns`, with `lo` and `eth0` up, `eth0`
/// the inner end of a veth pair whose host end is a port of the [`TestBridge`]) and a mount
/// namespace pinned by a bind-mounted nsfs file, with its own `/sys`.
///
/// Dropping it unmounts the pin (and its private directory), deletes the host end of the veth
/// and the network namespace, and removes its directory. It ends no process: whatever still
/// runs in the namespaces keeps them alive (drop the member's [`Daemon`] first).
pub struct MemberNs {
    index: u8,
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    bridge_name: String,
    /// Holds `ns/` (bind-mounted onto itself, private; `ns/mnt` is the pin) and the scratch
    /// directory used while `/sys` is replaced.
    dir: tempfile::TempDir,
    made_netns: bool,
    made_veth: bool,
}

impl MemberNs {
    /// Make member `index`'s namespaces (1 ≤ `index` ≤ 200), attached to `bridge`.
    pub fn new(bridge: &TestBridge, index: u8) -> MemberNs {
        assert!((1..=200).contains(&index), "member index {index}");
        let dir = tempfile::Builder::new()
            .prefix("ctl-member-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        // From here on a failure drops `ns`, which undoes what was made.
        let mut ns = MemberNs {
            index,
            netns: short_name("ccm"),
            veth: short_name("ccv"),
            ip: bridge.member_ip(index),
            bridge_name: bridge.name().to_string(),
            dir,
            made_netns: false,
            made_veth: false,
        };
        // The pin's directory is bound onto itself and private (as `ip netns` does with
        // /run/netns): the nsfs mount on the pin must not propagate anywhere.
        let pin_dir = ns.pin_dir();
        std::fs::create_dir(&pin_dir).unwrap_or_else(|e| panic!("{}: {e}", pin_dir.display()));
        run(Command::new("mount")
            .arg("--bind")
            .arg(&pin_dir)
            .arg(&pin_dir));
        run(Command::new("mount").arg("--make-private").arg(&pin_dir));
        std::fs::File::create(ns.mount_ns_file())
            .unwrap_or_else(|e| panic!("{}: {e}", ns.mount_ns_file().display()));
        run(Command::new("unshare")
            .arg(format!("--mount={}", ns.mount_ns_file().display()))
            .args(["--propagation", "private", "true"]));

        run(Command::new("ip").args(["netns", "add", &ns.netns]));
        ns.made_netns = true;
        run(Command::new("ip").args(["-n", &ns.netns, "link", "set", "lo", "up"]));
        run(Command::new("ip").args([
            "link", "add", &ns.veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.netns,
        ]));
        ns.made_veth = true;
        run(Command::new("ip").args(["link", "set", &ns.veth, "master", bridge.name(), "up"]));
        let cidr = format!("{}/24", ns.ip);
        run(Command::new("ip").args(["-n", &ns.netns, "addr", "add", &cidr, "dev", "eth0"]));
        run(Command::new("ip").args(["-n", &ns.netns, "link", "set", "eth0", "up"]));

        ns.detach_foreign_mounts();
        ns.mount_own_sys();
        ns
    }

    /// The member's index (its address is `10.X.Y.(10+index)`).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The network namespace's name (`ip netns`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `/run/netns/<name>`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    /// The member's address on the bridge (on its `eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The host end of the member's veth pair (a port of the bridge).
    pub fn host_veth(&self) -> &str {
        &self.veth
    }

    /// The member's own directory (the pin's directory `ns/` is in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn pin_dir(&self) -> PathBuf {
        self.dir.path().join("ns")
    }

    /// The nsfs file pinning the member's mount namespace (`nsenter --mount=` takes it).
    pub fn mount_ns_file(&self) -> PathBuf {
        self.pin_dir().join("mnt")
    }

    /// The mount namespace's inode (as in `/proc/<pid>/ns/mnt` → `mnt:[inode]`).
    pub fn mount_ns_inode(&self) -> u64 {
        std::fs::metadata(self.mount_ns_file())
            .map(|m| m.ino())
            .unwrap_or_else(|e| panic!("{}: {e}", self.mount_ns_file().display()))
    }

    /// The network namespace's inode (as in `/proc/<pid>/ns/net` → `net:[inode]`).
    pub fn netns_inode(&self) -> u64 {
        std::fs::metadata(self.netns_path())
            .map(|m| m.ino())
            .unwrap_or_else(|e| panic!("{}: {e}", self.netns_path().display()))
    }

    /// The command prefix that enters both namespaces and execs its arguments.
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net={}", self.netns_path().display()),
            format!("--mount={}", self.mount_ns_file().display()),
            "--".into(),
        ]
    }

    /// `program` run inside the member's network and mount namespaces.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.wrapper(), program)
    }

    /// The mount table of the member's mount namespace.
    pub fn mountinfo(&self) -> String {
        run(self.command("cat").arg("/proc/self/mountinfo"))
    }

    /// What `/sys/class/net` lists inside the member's mount namespace.
    pub fn sys_class_net(&self) -> BTreeSet<String> {
        run(self.command("ls").arg("/sys/class/net"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Take the member off the bridge: its veth's host end goes down.
    pub fn link_down(&self) {
        run(Command::new("ip").args(["link", "set", &self.veth, "down"]));
    }

    /// Put the member back on the bridge.
    pub fn link_up(&self) {
        run(Command::new("ip").args(["link", "set", &self.veth, "up"]));
    }

    /// Start a ctld inside the member's namespaces (see [`Daemon::start_wrapped`]).
    pub fn start_daemon(&self, args: &[&str]) -> Daemon {
        Daemon::start_wrapped(self.wrapper(), args)
    }

    /// The mount namespace began as a copy of the host's, mounts of other tests included:
    /// their state directories' mounts (`$TMPDIR/ctl-*`, loop-backed pools among them) and
    /// `/run/netns/*`. Copies here would keep those filesystems and network namespaces
    /// alive after their owners let go, so they are detached (lazily, deepest first). All
    /// mounts here are private (checked first): nothing propagates to the host.
    fn detach_foreign_mounts(&self) {
        let table = parse_mountinfo(&self.mountinfo());
        self.assert_all_private(&table);
        let tmp = std::env::temp_dir();
        let mut foreign: Vec<String> = table
            .iter()
            .map(|m| m.point.clone())
            .filter(|p| {
                let p = Path::new(p);
                p.starts_with("/run/netns/")
                    || p.strip_prefix(&tmp).ok().is_some_and(|rel| {
                        rel.components()
                            .next()
                            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with("ctl-"))
                    })
            })
            .collect();
        if foreign.is_empty() {
            return;
        }
        foreign.sort_by_key(|p| std::cmp::Reverse(p.len()));
        foreign.dedup();
        // A mount may already be gone with its parent: failures are fine.
        run(Command::new("nsenter")
            .arg(format!("--mount={}", self.mount_ns_file().display()))
            .args([
                "--",
                "sh",
                "-c",
                r#"for m; do umount -l "$m" 2>/dev/null; done; true"#,
            ])
            .arg("sh")
            .args(&foreign));
    }

    fn assert_all_private(&self, table: &[MountEntry]) {
        let shared: Vec<&str> = table
            .iter()
            .filter(|m| m.shared)
            .map(|m| m.point.as_str())
            .collect();
        assert!(
            shared.is_empty(),
            "member {}: shared mounts in its mount namespace ({shared:?}): unmounting there \
             could reach the host",
            self.index
        );
    }

    /// Replace `/sys` in the member's mount namespace with a sysfs mounted from inside its
    /// network namespace, and bind the old `/sys`'s submounts (the cgroup hierarchies…)
    /// back at the same places; checks that the result has exactly the submounts it had.
    fn mount_own_sys(&self) {
        let table = parse_mountinfo(&self.mountinfo());
        self.assert_all_private(&table);
        let sys = table
            .iter()
            .rfind(|m| m.point == "/sys")
            .unwrap_or_else(|| panic!("member {}: no /sys mount", self.index));
        let submounts = |table: &[MountEntry]| -> BTreeSet<String> {
            table
                .iter()
                .filter(|m| m.point.starts_with("/sys/"))
                .map(|m| format!("{} {}", m.point, m.fstype))
                .collect()
        };
        let before = submounts(&table);
        let top: Vec<String> = table
            .iter()
            .filter(|m| m.parent == sys.id && m.point.starts_with("/sys/"))
            .map(|m| m.point["/sys/".len()..].to_string())
            .collect();
        let aside = self.dir.path().join("sys-aside");
        std::fs::create_dir(&aside).unwrap_or_else(|e| panic!("{}: {e}", aside.display()));
        // The old /sys (with its submounts) is bound aside, detached, replaced by a fresh
        // sysfs (which shows the mounting process's network namespace), and its submounts
        // bound back; then the aside copy goes.
        run(self
            .command("sh")
            .args([
                "-ec",
                r#"aside=$1; shift
                   mount --rbind /sys "$aside"
                   umount -R -l /sys
                   mount -t sysfs sysfs /sys
                   for rel; do mount --rbind "$aside/$rel" "/sys/$rel"; done
                   umount -R -l "$aside""#,
                "sh",
            ])
            .arg(&aside)
            .args(&top));
        let _ = std::fs::remove_dir(&aside);
        let after_table = parse_mountinfo(&self.mountinfo());
        let after = submounts(&after_table);
        assert_eq!(
            before, after,
            "member {}: /sys submounts differ after /sys was replaced",
            self.index
        );
        assert!(
            after_table
                .iter()
                .rfind(|m| m.point == "/sys")
                .is_some_and(|m| m.fstype == "sysfs"),
            "member {}: /sys is no sysfs",
            self.index
        );
        let net = self.sys_class_net();
        assert!(
            net.contains("eth0") && !net.contains(&self.bridge_name),
            "member {}: /sys/class/net lists {net:?}, not the member's interfaces",
            self.index
        );
    }

    /// A TCP listener on `port` of the member's address, inside its network namespace, that
    /// answers each connection with `greeting` and a newline. Ends (by PID) when dropped.
    pub fn listen(&self, port: u16, greeting: &str) -> NsListener {
        const SCRIPT: &str = "import socket, sys\n\
            s = socket.socket()\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind((sys.argv[1], int(sys.argv[2])))\n\
            s.listen(16)\n\
            print('ready', flush=True)\n\
            while True:\n\
            \x20   c, _ = s.accept()\n\
            \x20   c.sendall(sys.argv[3].encode() + b'\\n')\n\
            \x20   c.close()\n";
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .args(["--", "python3", "-c", SCRIPT])
            .arg(self.ip.to_string())
            .arg(port.to_string())
            .arg(greeting)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start a listener in {}: {e}", self.netns));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let listener = NsListener {
            child,
            addr: SocketAddr::from((self.ip, port)),
        };
        if line.trim() != "ready" {
            let mut listener = listener;
            let mut err = String::new();
            if let Some(mut e) = listener.child.stderr.take() {
                let _ = listener.child.kill();
                let _ = e.read_to_string(&mut err);
            }
            panic!("listener in {} did not start: {err}", self.netns);
        }
        listener
    }

    /// Whether a TCP connection from inside the member's network namespace to `addr`
    /// succeeds within two seconds.
    pub fn can_connect(&self, addr: SocketAddr) -> bool {
        self.tcp_probe(addr, false).is_ok()
    }

    /// The first line `addr` sends to a connection from inside the member's network
    /// namespace (within two seconds), if any.
    pub fn read_greeting(&self, addr: SocketAddr) -> Option<String> {
        self.tcp_probe(addr, true).ok()
    }

    fn tcp_probe(&self, addr: SocketAddr, read: bool) -> Result<String, String> {
        const SCRIPT: &str = "import socket, sys\n\
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n\
            if sys.argv[3] == 'read':\n\
            \x20   print(c.makefile().readline().strip())\n";
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .args(["--", "python3", "-c", SCRIPT])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(if read { "read" } else { "connect" })
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for MemberNs {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        // The pin first (the mount namespace ends with its last process), then its
        // directory's self-bind.
        for path in [self.mount_ns_file(), self.pin_dir()] {
            if is_host_mount(&path) {
                try_run(Command::new("umount").arg(&path), &mut errors);
            }
        }
        if self.made_veth && host_interfaces().contains(&self.veth) {
            try_run(
                Command::new("ip").args(["link", "del", &self.veth]),
                &mut errors,
            );
        }
        if self.made_netns {
            try_run(
                Command::new("ip").args(["netns", "del", &self.netns]),
                &mut errors,
            );
        }
        report(&format!("member namespaces {}", self.netns), &errors);
        // The temp dir goes with `dir`.
    }
}

/// A TCP listener process inside a member's network namespace ([`MemberNs::listen`]).
pub struct NsListener {
    child: Child,
    addr: SocketAddr,
}

impl NsListener {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its PID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for NsListener {
    fn drop(&mut self) {
        // SIGKILL to this child's PID, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
