//! DHCP and DNS for a managed bridge: one dnsmasq per network, as LXD, Incus and libvirt
//! run it, supervised by ctld.
//!
//! Everything dnsmasq reads or writes lives in the network's own directory
//! ([`DnsmasqConfig::dir`], normally `$CTL_DIR/networks/<name>/`):
//!
//! | file | what |
//! |---|---|
//! | `dhcp-hosts` | static leases, `hwaddr,ipv4,name` per container (`--dhcp-hostsfile`) |
//! | `dns-hosts` | `ip name.domain name` per container (`--addn-hosts`), so DNS answers for every container, with or without a DHCP client |
//! | `dnsmasq.leases` | the lease database (`--dhcp-leasefile`), read by [`read_leases`] |
//! | `dnsmasq.pid` | the PID file: readiness at start, and finding a dnsmasq a previous daemon left |
//!
//! dnsmasq never reads the host's `/etc/resolv.conf` or `/etc/hosts` (`--no-resolv`,
//! `--no-hosts`, `--conf-file=/dev/null`): it answers `<name>.<domain>` and `<name>` from
//! `dns-hosts`, refuses to forward the domain (`--local=/<domain>/`), and forwards other
//! names only to [`DnsmasqConfig::upstream`] servers, none by default.
//!
//! Supervision: [`Dnsmasq::start`] starts dnsmasq in the foreground (its own process group,
//! stdin and stdout null, stderr read line by line into `tracing`) and returns once its PID
//! file names it, that is once its sockets are bound. A supervisor task restarts it with
//! exponential backoff if it dies. [`DnsmasqHandle::update_hosts`] rewrites the host files
//! atomically and sends SIGHUP (dnsmasq rereads `--dhcp-hostsfile` and `--addn-hosts` on
//! SIGHUP). [`DnsmasqHandle::stop`] terminates it and removes its files. Dropping the handle
//! detaches: dnsmasq keeps serving while ctld is down, and the next daemon's
//! [`Dnsmasq::start`] (or [`stop_stale`]) stops it through its PID file, after checking
//! `/proc/<pid>/cmdline` names this very PID file.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::worker;

/// Static leases, one `hwaddr,ipv4,name` per line.
pub const DHCP_HOSTS_FILE: &str = "dhcp-hosts";
/// DNS records, one `ip name.domain name` per line.
pub const DNS_HOSTS_FILE: &str = "dns-hosts";
/// dnsmasq's lease database.
pub const LEASES_FILE: &str = "dnsmasq.leases";
/// dnsmasq's PID file.
pub const PID_FILE: &str = "dnsmasq.pid";

/// How long dnsmasq may take to bind its sockets and write its PID file.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dnsmasq may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait before restarting a dnsmasq that died.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A dnsmasq that ran this long before dying restarts after the shortest backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// stderr lines kept to explain a dnsmasq that failed at start.
const STDERR_TAIL: usize = 20;

/// Errors from running dnsmasq.
#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("network {network}: dnsmasq has nothing to serve (no IPv4 or IPv6 address)")]
    NothingToServe { network: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network {network}: start {program}: {source}")]
    Spawn {
        network: String,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("network {network}: dnsmasq exited at start ({status}): {stderr}")]
    Exited {
        network: String,
        status: String,
        stderr: String,
    },
    #[error("network {network}: dnsmasq not ready after {seconds} s")]
    NotReady { network: String, seconds: u64 },
    #[error("network {network}: the dnsmasq supervisor is gone")]
    SupervisorGone { network: String },
    #[error("signal dnsmasq {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DnsmasqError + '_ {
    move |source| DnsmasqError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One container as dnsmasq knows it: a static lease (when `ipv4` is set) and DNS records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    /// The NIC's MAC address, `xx:xx:xx:xx:xx:xx`.
    pub hwaddr: String,
    /// The reserved IPv4 address (the lease a DHCP client gets, and the DNS A record).
    pub ipv4: Option<Ipv4Addr>,
    /// The container's IPv6 address, for the DNS AAAA record.
    pub ipv6: Option<Ipv6Addr>,
    /// The container's name: its DHCP hostname and DNS name (`<name>` and
    /// `<name>.<domain>`).
    pub name: String,
}

/// How dnsmasq serves one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqConfig {
    /// The network's name (logs, errors).
    pub network: String,
    /// The bridge interface dnsmasq binds to.
    pub bridge: String,
    /// The bridge's IPv4 address (the gateway; dnsmasq listens there) and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Serve DHCPv4 (`ipv4.dhcp`).
    pub dhcp: bool,
    /// First and last address of the dynamic DHCPv4 pool; `None`: the whole subnet except
    /// the network, broadcast and gateway addresses (see [`default_dhcp_range`]). Static
    /// leases are served whatever the pool.
    pub dhcp_range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// DHCP lease time (at least 2 minutes, dnsmasq's minimum).
    pub lease_time: Duration,
    /// The bridge's IPv6 address and prefix length: router advertisements (SLAAC) and
    /// stateless DHCPv6 with `ra-names`.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// The DNS domain (`dns.domain`), answered locally and never forwarded.
    pub domain: String,
    /// Upstream DNS servers for other names; empty: answer only the local names.
    pub upstream: Vec<IpAddr>,
    /// The user dnsmasq drops to after binding (`--user`). With a user other than root,
    /// the directory and its ancestors must be searchable by it (the host files are written
    /// world-readable).
    pub user: String,
    /// The network's directory, where every file dnsmasq uses lives.
    pub dir: PathBuf,
    /// The dnsmasq binary.
    pub program: PathBuf,
}

impl DnsmasqConfig {
    /// A configuration with the defaults: DHCP on, one-hour leases, domain `ctl`, no
    /// upstream servers, run as root, the host's dnsmasq binary.
    pub fn new(network: &str, bridge: &str, dir: impl Into<PathBuf>) -> Self {
        DnsmasqConfig {
            network: network.to_string(),
            bridge: bridge.to_string(),
            ipv4: None,
            dhcp: true,
            dhcp_range: None,
            lease_time: Duration::from_secs(3600),
            ipv6: None,
            domain: "ctl".to_string(),
            upstream: Vec::new(),
            user: "root".to_string(),
            dir: dir.into(),
            program: default_program(),
        }
    }

    /// Path of one of dnsmasq's files in [`DnsmasqConfig::dir`].
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Check every value that ends up on dnsmasq's command line or in its files.
    pub fn validate(&self) -> Result<(), DnsmasqError> {
        let invalid = |what, value: &str| DnsmasqError::Invalid {
            what,
            value: value.to_string(),
        };
        if !is_interface_name(&self.bridge) {
            return Err(invalid("bridge name", &self.bridge));
        }
        if !is_domain(&self.domain) {
            return Err(invalid("DNS domain", &self.domain));
        }
        if self.user.is_empty()
            || !self
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            return Err(invalid("user", &self.user));
        }
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err(DnsmasqError::NothingToServe {
                network: self.network.clone(),
            });
        }
        if let Some((gw, prefix)) = self.ipv4 {
            if prefix == 0 || prefix > 30 {
                return Err(invalid("IPv4 prefix length", &prefix.to_string()));
            }
            if let Some((first, last)) = self.dhcp_range {
                let net = ipv4_network(gw, prefix);
                let inside = |a: Ipv4Addr| ipv4_network(a, prefix) == net;
                if !inside(first) || !inside(last) || first > last {
                    return Err(invalid("DHCP range", &format!("{first}-{last}")));
                }
            }
        }
        if let Some((_, prefix)) = self.ipv6
            && (prefix == 0 || prefix > 128)
        {
            return Err(invalid("IPv6 prefix length", &prefix.to_string()));
        }
        if self.lease_time < Duration::from_secs(120) {
            return Err(invalid(
                "lease time",
                &format!("{} s", self.lease_time.as_secs()),
            ));
        }
        Ok(())
    }

    /// The dynamic DHCPv4 pool: [`DnsmasqConfig::dhcp_range`] or the default one.
    pub fn effective_dhcp_range(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let (gw, prefix) = self.ipv4?;
        self.dhcp_range.or_else(|| default_dhcp_range(gw, prefix))
    }

    /// dnsmasq's command line (without the program).
    pub fn args(&self) -> Vec<String> {
        let file = |name| self.file(name).display().to_string();
        let mut args: Vec<String> = [
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--strict-order",
            "--bind-interfaces",
            "--except-interface=lo",
            "--no-ping",
            "--no-hosts",
            "--no-resolv",
            "--log-facility=-",
            "--quiet-dhcp",
            "--quiet-dhcp6",
            "--quiet-ra",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.push(format!("--interface={}", self.bridge));
        args.push(format!("--pid-file={}", file(PID_FILE)));
        args.push(format!("--user={}", self.user));
        if self.user == "root" {
            args.push("--group=root".to_string());
        }
        args.push(format!("--domain={}", self.domain));
        args.push(format!("--local=/{}/", self.domain));
        args.push(format!("--addn-hosts={}", file(DNS_HOSTS_FILE)));
        for server in &self.upstream {
            args.push(format!("--server={server}"));
        }
        args.push(format!("--dhcp-leasefile={}", file(LEASES_FILE)));
        if let Some((gw, _)) = self.ipv4 {
            args.push(format!("--listen-address={gw}"));
            if self.dhcp
                && let Some((first, last)) = self.effective_dhcp_range()
            {
                args.push(format!(
                    "--dhcp-range={first},{last},{}",
                    self.lease_time.as_secs()
                ));
                args.extend(
                    [
                        "--dhcp-rapid-commit",
                        "--dhcp-authoritative",
                        "--dhcp-no-override",
                    ]
                    .map(String::from),
                );
                args.push(format!("--dhcp-hostsfile={}", file(DHCP_HOSTS_FILE)));
            }
        }
        if let Some((gw, _)) = self.ipv6 {
            args.push(format!("--listen-address={gw}"));
            args.push("--enable-ra".to_string());
            args.push(format!(
                "--dhcp-range=::,constructor:{},ra-stateless,ra-names",
                self.bridge
            ));
        }
        args
    }
}

/// The host's dnsmasq binary: the usual Debian path, else whatever `PATH` finds.
fn default_program() -> PathBuf {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("dnsmasq"))
}

/// The network address of `addr/prefix`.
fn ipv4_network(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

/// The default dynamic pool of `gateway/prefix`: the larger of the two runs of host
/// addresses on either side of the gateway (`.2`–`.254` for a gateway `.1` in a /24), so it
/// never holds the gateway. `None` when the subnet has no room.
pub fn default_dhcp_range(gateway: Ipv4Addr, prefix: u8) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if prefix == 0 || prefix > 30 {
        return None;
    }
    let net = u64::from(u32::from(ipv4_network(gateway, prefix)));
    let broadcast = net + (1u64 << (32 - u32::from(prefix))) - 1;
    let gw = u64::from(u32::from(gateway));
    if gw <= net || gw >= broadcast {
        return None;
    }
    let below = (net + 1, gw - 1);
    let above = (gw + 1, broadcast - 1);
    let len = |(a, b): (u64, u64)| if b >= a { b - a + 1 } else { 0 };
    let (first, last) = if len(above) >= len(below) {
        above
    } else {
        below
    };
    (len((first, last)) > 0).then(|| (Ipv4Addr::from(first as u32), Ipv4Addr::from(last as u32)))
}

/// A Linux interface name: 1 to 15 bytes, none of `/`, whitespace, `:`, `,` or `=`
/// (the last two would break dnsmasq's option syntax).
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !"/:,=".contains(c))
}

/// A DNS label: 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A DNS domain: labels separated by dots, at most 253 bytes.
fn is_domain(domain: &str) -> bool {
    domain.len() <= 253 && domain.split('.').all(is_label)
}

/// A MAC address, six hex pairs separated by colons.
fn is_hwaddr(hwaddr: &str) -> bool {
    let parts: Vec<&str> = hwaddr.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn validate_hosts(hosts: &[StaticHost]) -> Result<(), DnsmasqError> {
    for h in hosts {
        if !is_label(&h.name) {
            return Err(DnsmasqError::Invalid {
                what: "host name",
                value: h.name.clone(),
            });
        }
        if !is_hwaddr(&h.hwaddr) {
            return Err(DnsmasqError::Invalid {
                what: "MAC address",
                value: h.hwaddr.clone(),
            });
        }
    }
    Ok(())
}

/// The `--dhcp-hostsfile` contents: `hwaddr,ipv4,name` for a reserved address,
/// `hwaddr,name` (a name for a dynamic lease) otherwise.
pub fn dhcp_hosts_file(hosts: &[StaticHost]) -> String {
    let mut out = String::new();
    for h in hosts {
        let mac = h.hwaddr.to_ascii_lowercase();
        let _ = match h.ipv4 {
            Some(ip) => writeln!(out, "{mac},{ip},{}", h.name),
            None => writeln!(out, "{mac},{}", h.name),
        };
    }
    out
}

/// The `--addn-hosts` contents: `ip name.domain name` for every address of every host.
pub fn dns_hosts_file(hosts: &[StaticHost], domain: &str) -> String {
    let mut out = String::new();
    for h in hosts {
        let ips = [h.ipv4.map(IpAddr::V4), h.ipv6.map(IpAddr::V6)];
        for ip in ips.into_iter().flatten() {
            let _ = writeln!(out, "{ip} {}.{domain} {}", h.name, h.name);
        }
    }
    out
}

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Expiry, seconds since the epoch (0: never).
    pub expiry: u64,
    /// The client's MAC address (for DHCPv6 leases: the IAID).
    pub hwaddr: String,
    /// The leased address.
    pub address: IpAddr,
    /// The hostname the client sent or was given, if any.
    pub hostname: Option<String>,
}

/// Parse dnsmasq's lease file (`expiry mac ip hostname client-id` lines; the `duid` line
/// of DHCPv6 and malformed lines are skipped).
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[0] == "duid" {
                return None;
            }
            Some(Lease {
                expiry: f[0].parse().ok()?,
                hwaddr: f[1].to_string(),
                address: f[2].parse().ok()?,
                hostname: (f[3] != "*").then(|| f[3].to_string()),
            })
        })
        .collect()
}

/// The leases in `dir`'s lease file (none if there is no file yet).
pub fn read_leases(dir: &Path) -> Result<Vec<Lease>, DnsmasqError> {
    let path = dir.join(LEASES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_leases(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Write `contents` to `path` atomically (a temporary file renamed over it), world-readable
/// so a dnsmasq that dropped privileges can reread it.
fn write_atomic(path: &Path, contents: &str) -> Result<(), DnsmasqError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn write_hosts(cfg: &DnsmasqConfig, hosts: &[StaticHost]) -> Result<(), DnsmasqError> {
    validate_hosts(hosts)?;
    write_atomic(&cfg.file(DHCP_HOSTS_FILE), &dhcp_hosts_file(hosts))?;
    write_atomic(
        &cfg.file(DNS_HOSTS_FILE),
        &dns_hosts_file(hosts, &cfg.domain),
    )
}

/// Remove dnsmasq's files from `dir`, reporting every failure but NotFound.
fn remove_files(dir: &Path) -> Result<(), DnsmasqError> {
    let mut first_error = None;
    for name in [PID_FILE, LEASES_FILE, DHCP_HOSTS_FILE, DNS_HOSTS_FILE] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove dnsmasq file");
                first_error.get_or_insert(io_err(&path)(e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Whether `args` (a `/proc/<pid>/cmdline`) is a dnsmasq using `pid_file`.
fn is_dnsmasq_with(args: &[String], pid_file: &Path) -> bool {
    let is_dnsmasq = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "dnsmasq");
    let flag = format!("--pid-file={}", pid_file.display());
    is_dnsmasq && args.contains(&flag)
}

/// Stop a dnsmasq that a previous daemon left serving `dir` (found through its PID file,
/// checked against `/proc/<pid>/cmdline`), wait for it to exit, and remove its PID file.
/// Returns the PID it stopped. A stale PID file naming any other process is only removed.
pub async fn stop_stale(dir: &Path) -> Result<Option<i32>, DnsmasqError> {
    let pid_file = dir.join(PID_FILE);
    let text = match std::fs::read_to_string(&pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&pid_file)(e)),
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        let _ = std::fs::remove_file(&pid_file);
        return Ok(None);
    };
    let ours = |args: &[String]| is_dnsmasq_with(args, &pid_file);
    let signalled = worker::signal_if(pid, libc::SIGTERM, ours)
        .map_err(|source| DnsmasqError::Signal { pid, source })?;
    if signalled {
        tracing::info!(pid, dir = %dir.display(), "stopping a dnsmasq left by a previous run");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while worker::proc::exists(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if worker::proc::exists(pid) {
            worker::signal_if(pid, libc::SIGKILL, ours)
                .map_err(|source| DnsmasqError::Signal { pid, source })?;
            while worker::proc::exists(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    match std::fs::remove_file(&pid_file) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&pid_file)(e)),
    }
    Ok(signalled.then_some(pid))
}

/// A running dnsmasq child, with the task that forwards its stderr.
struct Running {
    child: Child,
    stderr: Option<JoinHandle<()>>,
}

/// Start dnsmasq and wait until its PID file names it (its sockets are bound by then).
async fn spawn_ready(
    cfg: &DnsmasqConfig,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<Running, DnsmasqError> {
    let pid_file = cfg.file(PID_FILE);
    match std::fs::remove_file(&pid_file) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&pid_file)(e)),
    }
    if let Ok(mut t) = tail.lock() {
        t.clear();
    }
    let mut cmd = Command::new(&cfg.program);
    cmd.args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's SIGINT to ctld does not reach it.
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|source| DnsmasqError::Spawn {
        network: cfg.network.clone(),
        program: cfg.program.clone(),
        source,
    })?;
    let pid = child.id().map_or(0, |p| p as i32);
    let stderr = child.stderr.take().map(|err| {
        let network = cfg.network.clone();
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(network = %network, pid, "dnsmasq: {line}");
                if let Ok(mut t) = tail.lock() {
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        })
    });
    let mut running = Running { child, stderr };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match running.child.try_wait() {
            Ok(Some(status)) => {
                if let Some(task) = running.stderr.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                }
                let stderr = tail
                    .lock()
                    .map(|t| t.iter().cloned().collect::<Vec<_>>().join("; "))
                    .unwrap_or_default();
                return Err(DnsmasqError::Exited {
                    network: cfg.network.clone(),
                    status: status.to_string(),
                    stderr,
                });
            }
            Ok(None) => {}
            Err(source) => {
                terminate(&mut running).await;
                return Err(DnsmasqError::Signal { pid, source });
            }
        }
        let written = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if written == Some(pid) {
            return Ok(running);
        }
        if Instant::now() >= deadline {
            terminate(&mut running).await;
            return Err(DnsmasqError::NotReady {
                network: cfg.network.clone(),
                seconds: READY_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// SIGTERM, up to [`STOP_TIMEOUT`] for it to exit, then SIGKILL. The child is ours and not
/// yet reaped, so its PID cannot have been reused.
async fn terminate(running: &mut Running) {
    if let Some(pid) = running.child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, running.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(pid, "dnsmasq ignored SIGTERM, killing it");
            let _ = running.child.kill().await;
        }
    }
    if let Some(task) = running.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
}

enum Request {
    /// Reread the host files (SIGHUP). Answers whether a running dnsmasq was signalled.
    Reload(oneshot::Sender<Result<(), DnsmasqError>>),
    /// Stop dnsmasq and remove its files.
    Stop(oneshot::Sender<Result<(), DnsmasqError>>),
}

/// Starts dnsmasq for a network. See the module docs.
pub struct Dnsmasq;

impl Dnsmasq {
    /// Validate `cfg`, stop a dnsmasq a previous daemon left for the same directory, write
    /// the host files for `hosts`, start dnsmasq and wait until it serves, then supervise it.
    /// Call when a managed network comes up (creation, or daemon start-up).
    pub async fn start(
        cfg: DnsmasqConfig,
        hosts: &[StaticHost],
    ) -> Result<DnsmasqHandle, DnsmasqError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        stop_stale(&cfg.dir).await?;
        write_hosts(&cfg, hosts)?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let running = match spawn_ready(&cfg, &tail).await {
            Ok(r) => r,
            Err(e) => {
                let _ = remove_files(&cfg.dir);
                return Err(e);
            }
        };
        let pid = Arc::new(AtomicI32::new(running.child.id().map_or(0, |p| p as i32)));
        let restarts = Arc::new(AtomicU32::new(0));
        tracing::info!(network = %cfg.network, pid = pid.load(Ordering::Relaxed), "dnsmasq started");
        let (tx, rx) = mpsc::channel(8);
        let cfg = Arc::new(cfg);
        let supervisor = Supervisor {
            cfg: cfg.clone(),
            pid: pid.clone(),
            restarts: restarts.clone(),
            tail,
            rx,
        };
        tokio::spawn(supervisor.run(running));
        Ok(DnsmasqHandle {
            cfg,
            tx,
            pid,
            restarts,
        })
    }
}

/// A supervised dnsmasq. Dropping it detaches (dnsmasq keeps running; see the module docs).
pub struct DnsmasqHandle {
    cfg: Arc<DnsmasqConfig>,
    tx: mpsc::Sender<Request>,
    pid: Arc<AtomicI32>,
    restarts: Arc<AtomicU32>,
}

impl std::fmt::Debug for DnsmasqHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsmasqHandle")
            .field("network", &self.cfg.network)
            .field("pid", &self.pid())
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl DnsmasqHandle {
    /// The configuration it runs with.
    pub fn config(&self) -> &DnsmasqConfig {
        &self.cfg
    }

    /// The running dnsmasq's PID; `None` while it is being restarted.
    pub fn pid(&self) -> Option<i32> {
        let pid = self.pid.load(Ordering::Relaxed);
        (pid > 0).then_some(pid)
    }

    /// How often the supervisor restarted dnsmasq.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Replace the static leases and DNS records with `hosts` (the full list). Call after
    /// a NIC on the network gets or loses an address (instance start, stop, delete, rename).
    /// The files are rewritten atomically, then dnsmasq gets SIGHUP; a dnsmasq being
    /// restarted reads the new files when it starts.
    pub async fn update_hosts(&self, hosts: &[StaticHost]) -> Result<(), DnsmasqError> {
        let gone = || DnsmasqError::SupervisorGone {
            network: self.cfg.network.clone(),
        };
        // A stopped network keeps no files.
        if self.tx.is_closed() {
            return Err(gone());
        }
        write_hosts(&self.cfg, hosts)?;
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Request::Reload(ack))
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }

    /// The current leases.
    pub fn leases(&self) -> Result<Vec<Lease>, DnsmasqError> {
        read_leases(&self.cfg.dir)
    }

    /// Stop dnsmasq (SIGTERM, SIGKILL after 5 s), wait for it, and remove its PID, lease
    /// and host files. Call when the network is deleted or brought down. Takes `&self` so a
    /// shared handle can be stopped; afterwards every request fails with
    /// [`DnsmasqError::SupervisorGone`].
    pub async fn stop(&self) -> Result<(), DnsmasqError> {
        let (ack, done) = oneshot::channel();
        let gone = || DnsmasqError::SupervisorGone {
            network: self.cfg.network.clone(),
        };
        self.tx.send(Request::Stop(ack)).await.map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

struct Supervisor {
    cfg: Arc<DnsmasqConfig>,
    pid: Arc<AtomicI32>,
    restarts: Arc<AtomicU32>,
    tail: Arc<Mutex<VecDeque<String>>>,
    rx: mpsc::Receiver<Request>,
}

/// What ended a wait of the supervisor.
enum Wake {
    Exited(io::Result<std::process::ExitStatus>),
    Request(Option<Request>),
}

impl Supervisor {
    async fn run(mut self, mut running: Running) {
        let network = self.cfg.network.clone();
        let mut backoff = BACKOFF_MIN;
        let mut started = Instant::now();
        loop {
            let wake = tokio::select! {
                status = running.child.wait() => Wake::Exited(status),
                request = self.rx.recv() => Wake::Request(request),
            };
            match wake {
                Wake::Request(Some(Request::Reload(ack))) => {
                    let _ = ack.send(reload(&running));
                }
                Wake::Request(Some(Request::Stop(ack))) => {
                    terminate(&mut running).await;
                    self.pid.store(0, Ordering::Relaxed);
                    tracing::info!(network = %network, "dnsmasq stopped");
                    // Closed before the answer, so no request is taken after a stop.
                    self.rx.close();
                    let _ = ack.send(remove_files(&self.cfg.dir));
                    return;
                }
                Wake::Request(None) => {
                    // The handle was dropped without stop: the daemon is going away and
                    // leaves dnsmasq serving; the next daemon stops it through its PID file.
                    return;
                }
                Wake::Exited(status) => {
                    self.pid.store(0, Ordering::Relaxed);
                    if let Some(task) = running.stderr.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                    }
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    if started.elapsed() >= STABLE_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::warn!(network = %network, %status, backoff_ms = backoff.as_millis() as u64, "dnsmasq exited, restarting");
                    loop {
                        match self.pause(backoff).await {
                            Pause::Stop(ack) => {
                                self.rx.close();
                                let _ = ack.send(remove_files(&self.cfg.dir));
                                return;
                            }
                            Pause::Closed => return,
                            Pause::Elapsed => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        match spawn_ready(&self.cfg, &self.tail).await {
                            Ok(r) => {
                                running = r;
                                let pid = running.child.id().map_or(0, |p| p as i32);
                                self.pid.store(pid, Ordering::Relaxed);
                                self.restarts.fetch_add(1, Ordering::Relaxed);
                                started = Instant::now();
                                tracing::info!(network = %network, pid, "dnsmasq restarted");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(network = %network, error = %e, "dnsmasq restart failed");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sleep `delay` while answering requests. Reloads are acknowledged at once (the files
    /// are written; the next start reads them).
    async fn pause(&mut self, delay: Duration) -> Pause {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Pause::Elapsed,
                request = self.rx.recv() => match request {
                    Some(Request::Reload(ack)) => {
                        let _ = ack.send(Ok(()));
                    }
                    Some(Request::Stop(ack)) => return Pause::Stop(ack),
                    None => return Pause::Closed,
                },
            }
        }
    }
}

/// How a pause between restarts ended.
enum Pause {
    Elapsed,
    Stop(oneshot::Sender<Result<(), DnsmasqError>>),
    Closed,
}

/// SIGHUP the running dnsmasq (our unreaped child, so the PID is its own).
fn reload(running: &Running) -> Result<(), DnsmasqError> {
    let Some(pid) = running.child.id() else {
        return Ok(());
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).map_err(|e| DnsmasqError::Signal {
        pid: pid as i32,
        source: e.into(),
    })
}

#[cfg(test)]
mod tests;
