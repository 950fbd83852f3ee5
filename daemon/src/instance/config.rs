//! Instance configuration keys: which exist, what values they take, and their translation
//! into what the worker needs (cgroup limits, the init command). Pure functions.

use std::collections::BTreeMap;

use crate::worker::seccomp::{self, SeccompError, SyscallPolicy};
use crate::worker::usage::{format_cpu_list, parse_cpu_list};
use crate::worker::{CgroupLimits, CpuAllowance, caps};

/// What the host offers, for validating and translating limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Total memory in bytes.
    pub memory: u64,
    /// Online CPU numbers.
    pub cpus: Vec<u32>,
}

/// A bad key or value, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key \"{0}\"")]
    UnknownKey(String),
    #[error("invalid value \"{value}\" for \"{key}\": {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("\"{0}\" cannot be set by users")]
    ReadOnly(String),
}

/// Keys with a fixed name that ctl understands.
const KEYS: &[&str] = &[
    "limits.cpu",
    "limits.cpu.allowance",
    "limits.cpu.priority",
    "limits.memory",
    "limits.memory.enforce",
    "limits.memory.swap",
    "limits.processes",
    "limits.disk.priority",
    "raw.init",
    "raw.idmap",
    "boot.stop.signal",
    "boot.autostart",
    "boot.autostart.priority",
    "boot.autostart.delay",
    "boot.stop.priority",
    "security.privileged",
    "security.nesting",
    "security.idmap.isolated",
    "security.idmap.base",
    "security.idmap.size",
    "security.capabilities.drop",
    "security.syscalls.allow",
    "security.syscalls.deny",
    "security.syscalls.deny_compat",
    "security.syscalls.deny_default",
    "snapshots.schedule",
    "snapshots.schedule.stopped",
    "snapshots.pattern",
    "snapshots.expiry",
    "snapshots.expiry.manual",
];

/// The keys with a fixed name that ctl understands (for `/1.0/metadata/configuration`).
pub fn known_keys() -> &'static [&'static str] {
    KEYS
}

/// Keys that cannot change while the instance runs. (The `security.*` and `raw.idmap` keys
/// may: like Incus, they take effect at the next start.)
pub const START_ONLY_KEYS: &[&str] = &["raw.init"];

/// Key prefixes that take any suffix: free-form user data and the exec environment, plus
/// the ones the daemon writes itself.
const USER_PREFIXES: &[&str] = &["user.", "environment."];
const DAEMON_PREFIXES: &[&str] = &["image.", "volatile."];

/// Validate every key and value of a config a user submits. `previous` is the stored
/// config: daemon-owned keys (`image.*`, `volatile.*`) may be kept as they are, not changed.
pub fn validate(
    config: &BTreeMap<String, String>,
    previous: &BTreeMap<String, String>,
    host: &Host,
) -> Result<(), ConfigError> {
    for (key, value) in config {
        if DAEMON_PREFIXES.iter().any(|p| key.starts_with(p)) {
            if previous.get(key) != Some(value) {
                return Err(ConfigError::ReadOnly(key.clone()));
            }
            continue;
        }
        if USER_PREFIXES
            .iter()
            .any(|p| key.starts_with(p) && key.len() > p.len())
        {
            continue;
        }
        if !KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey(key.clone()));
        }
    }
    limits(config, host, "")?;
    init_command(config)?;
    super::idmap::from_config(config)?;
    boolean("security.nesting", config)?;
    capabilities_drop(config)?;
    syscall_policy(config, false)?;
    stop_signal(config)?;
    boot(config)?;
    snapshot_keys(config)?;
    Ok(())
}

/// The `snapshots.*` keys: a readable schedule, a boolean, expiry spans, and a pattern that
/// renders to a valid snapshot name.
fn snapshot_keys(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    if let Some(v) = config.get("snapshots.schedule") {
        super::cron::Schedule::parse(v)
            .map_err(|e| invalid("snapshots.schedule", v, e.to_string()))?;
    }
    boolean("snapshots.schedule.stopped", config)?;
    for key in ["snapshots.expiry", "snapshots.expiry.manual"] {
        if let Some(v) = config.get(key) {
            ctl_api::expiry::Span::parse(v).map_err(|e| invalid(key, v, e.to_string()))?;
        }
    }
    if let Some(v) = config.get("snapshots.pattern") {
        let now = chrono::Local::now().fixed_offset();
        let name = super::snapshot_name::next_name(v, &now, &[])
            .map_err(|e| invalid("snapshots.pattern", v, e.to_string()))?;
        if !super::snapshot_name::valid(&name) {
            return Err(invalid(
                "snapshots.pattern",
                v,
                format!("it gives \"{name}\", not a valid snapshot name"),
            ));
        }
    }
    Ok(())
}

/// `volatile.last_state.power`: `RUNNING` while the instance should run (set at each
/// start, kept when the daemon stops it at shutdown), `STOPPED` after a user's stop.
pub const LAST_POWER: &str = "volatile.last_state.power";

/// What a daemon start and a daemon shutdown do with an instance (the `boot.*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// `boot.autostart`: start whenever the daemon starts (`true`), never (`false`), or,
    /// unset, when it was running when the daemon last went down (LXD's rule).
    pub autostart: Option<bool>,
    /// `boot.autostart.priority`: higher starts first (default 0).
    pub priority: i64,
    /// `boot.autostart.delay`: seconds to wait after starting this one before the next.
    pub delay: std::time::Duration,
    /// `boot.stop.priority`: higher stops first at shutdown (default 0).
    pub stop_priority: i64,
}

impl Boot {
    /// Whether a daemon start starts the instance (`config` is its own, for the last
    /// power state).
    pub fn starts(&self, config: &BTreeMap<String, String>) -> bool {
        self.autostart
            .unwrap_or_else(|| config.get(LAST_POWER).is_some_and(|v| v == "RUNNING"))
    }
}

/// The `boot.*` keys of an (expanded) config.
pub fn boot(config: &BTreeMap<String, String>) -> Result<Boot, ConfigError> {
    let int = |key: &str| -> Result<i64, ConfigError> {
        config.get(key).map_or(Ok(0), |v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| invalid(key, v, "expected an integer"))
        })
    };
    let delay = int("boot.autostart.delay")?;
    if !(0..=3600).contains(&delay) {
        return Err(invalid(
            "boot.autostart.delay",
            &delay.to_string(),
            "expected seconds from 0 to 3600",
        ));
    }
    Ok(Boot {
        autostart: boolean("boot.autostart", config)?,
        priority: int("boot.autostart.priority")?,
        delay: std::time::Duration::from_secs(delay as u64),
        stop_priority: int("boot.stop.priority")?,
    })
}

/// The key that overrides the signal a clean stop sends the init.
pub const STOP_SIGNAL: &str = "boot.stop.signal";

/// `boot.stop.signal`: a signal name (`SIGPWR`, `PWR`, `SIGRTMIN+3`) or number (1–64).
pub fn stop_signal(config: &BTreeMap<String, String>) -> Result<Option<i32>, ConfigError> {
    let Some(v) = config.get(STOP_SIGNAL) else {
        return Ok(None);
    };
    let bad = || invalid(STOP_SIGNAL, v, "expected a signal name or number (1-64)");
    if let Ok(n) = v.trim().parse::<i32>() {
        return (1..=libc::SIGRTMAX())
            .contains(&n)
            .then_some(Some(n))
            .ok_or_else(bad);
    }
    let upper = v.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off = match rest {
            "" => 0,
            r => r
                .strip_prefix('+')
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(bad)?,
        };
        let n = libc::SIGRTMIN() + off;
        return (n <= libc::SIGRTMAX()).then_some(Some(n)).ok_or_else(bad);
    }
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "PWR" => libc::SIGPWR,
        _ => return Err(bad()),
    };
    Ok(Some(n))
}

pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// How `limits.cpu` chooses CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuChoice {
    /// Unset: every online CPU.
    All,
    /// A count: that many CPUs, spread over the host.
    Count(usize),
    /// An explicit set (`0-1`, `0,2`).
    Set(Vec<u32>),
}

/// Parse `limits.cpu`: a count (`2`) or a set (`0-1`, `1,3`, `1-1` for just CPU 1), checked
/// against the host's online CPUs.
pub fn cpu_choice(
    config: &BTreeMap<String, String>,
    host: &Host,
) -> Result<CpuChoice, ConfigError> {
    let Some(v) = config.get("limits.cpu") else {
        return Ok(CpuChoice::All);
    };
    let online = format_cpu_list(&host.cpus);
    if let Ok(n) = v.parse::<usize>() {
        if n == 0 {
            return Err(invalid("limits.cpu", v, "at least 1 CPU is needed"));
        }
        if n > host.cpus.len() {
            return Err(invalid(
                "limits.cpu",
                v,
                format!(
                    "this host has only {} CPUs online ({online})",
                    host.cpus.len()
                ),
            ));
        }
        return Ok(CpuChoice::Count(n));
    }
    let set = parse_cpu_list(v).ok_or_else(|| {
        invalid(
            "limits.cpu",
            v,
            "expected a CPU count (2) or a CPU set (0-1, 0,2)",
        )
    })?;
    if let Some(bad) = set.iter().find(|c| !host.cpus.contains(c)) {
        return Err(invalid(
            "limits.cpu",
            v,
            format!("CPU {bad} is not online on this host (online: {online})"),
        ));
    }
    Ok(CpuChoice::Set(set))
}

/// `count` CPUs for instance `name`, spread over the host: consecutive CPUs starting at an
/// offset derived from the name, so instances with the same count land on different CPUs.
pub fn spread_cpus(count: usize, host_cpus: &[u32], name: &str) -> Vec<u32> {
    if host_cpus.is_empty() {
        return Vec::new();
    }
    let offset = name.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % host_cpus.len();
    let mut out: Vec<u32> = (0..count.min(host_cpus.len()))
        .map(|i| host_cpus[(offset + i) % host_cpus.len()])
        .collect();
    out.sort_unstable();
    out
}

fn level(key: &str, config: &BTreeMap<String, String>) -> Result<Option<u32>, ConfigError> {
    config
        .get(key)
        .map(|v| match v.parse::<u32>() {
            Ok(n) if n <= 10 => Ok(n),
            _ => Err(invalid(key, v, "expected an integer from 0 to 10")),
        })
        .transpose()
}

pub(crate) fn boolean(
    key: &str,
    config: &BTreeMap<String, String>,
) -> Result<Option<bool>, ConfigError> {
    config
        .get(key)
        .map(|v| match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(key, v, "expected true or false")),
        })
        .transpose()
}

/// The cgroup limits a config asks for, for instance `name` (the name spreads CPU counts).
pub fn limits(
    config: &BTreeMap<String, String>,
    host: &Host,
    name: &str,
) -> Result<CgroupLimits, ConfigError> {
    let mut l = CgroupLimits {
        cpuset: match cpu_choice(config, host)? {
            CpuChoice::All => format_cpu_list(&host.cpus),
            CpuChoice::Count(n) => format_cpu_list(&spread_cpus(n, &host.cpus, name)),
            CpuChoice::Set(set) => format_cpu_list(&set),
        },
        ..CgroupLimits::default()
    };
    if let Some(p) = level("limits.cpu.priority", config)? {
        l.cpu_priority = p;
    }
    l.disk_priority = level("limits.disk.priority", config)?;
    if let Some(swap) = boolean("limits.memory.swap", config)? {
        l.memory_swap = swap;
    }
    match config.get("limits.memory.enforce").map(String::as_str) {
        None | Some("hard") => {}
        Some("soft") => l.memory_soft = true,
        Some(v) => return Err(invalid("limits.memory.enforce", v, "expected hard or soft")),
    }
    if let Some(v) = config.get("limits.cpu.allowance") {
        l.cpu = Some(parse_allowance(v).map_err(|r| invalid("limits.cpu.allowance", v, r))?);
    }
    if let Some(v) = config.get("limits.memory") {
        l.memory = Some(parse_memory(v, host.memory).map_err(|r| invalid("limits.memory", v, r))?);
    }
    if let Some(v) = config.get("limits.processes") {
        let n: u64 = v
            .parse()
            .map_err(|_| invalid("limits.processes", v, "expected a positive integer"))?;
        if n == 0 {
            return Err(invalid("limits.processes", v, "must be at least 1"));
        }
        l.processes = Some(n);
    }
    Ok(l)
}

/// `50%` (a share, 1-100) or `25ms/100ms` (a hard quota; both parts in ms or us).
pub fn parse_allowance(v: &str) -> Result<CpuAllowance, String> {
    if let Some(p) = v.strip_suffix('%') {
        let p: u32 = p
            .parse()
            .map_err(|_| "expected a percentage like 50% or a quota like 25ms/100ms")?;
        if !(1..=100).contains(&p) {
            return Err("percentage must be between 1% and 100%".into());
        }
        return Ok(CpuAllowance::Percent(p));
    }
    let (q, p) = v
        .split_once('/')
        .ok_or("expected a percentage like 50% or a quota like 25ms/100ms")?;
    let quota_us = parse_duration_us(q)?;
    let period_us = parse_duration_us(p)?;
    if !(1_000..=1_000_000).contains(&period_us) {
        return Err("period must be between 1ms and 1000ms".into());
    }
    if quota_us < 1_000 {
        return Err("quota must be at least 1ms".into());
    }
    Ok(CpuAllowance::Quota {
        quota_us,
        period_us,
    })
}

fn parse_duration_us(s: &str) -> Result<u64, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1)
    } else {
        return Err(format!("\"{s}\" needs a unit, ms or us"));
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

/// Bytes from `256MiB`, `1GB`, `512kB`, `1048576` or `50%` (of `host_memory`).
pub fn parse_memory(v: &str, host_memory: u64) -> Result<u64, String> {
    if let Some(p) = v.strip_suffix('%') {
        let p: u64 = p
            .parse()
            .map_err(|_| "expected a size like 256MiB or 50%")?;
        if !(1..=100).contains(&p) {
            return Err("percentage must be between 1% and 100%".into());
        }
        return Ok(u64::try_from(u128::from(host_memory) * u128::from(p) / 100).unwrap_or(u64::MAX));
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size like 256MiB, 1GB or 50%")?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("unknown unit \"{unit}\"")),
    };
    let bytes = n.checked_mul(mult).ok_or("size is too large")?;
    if bytes < 1 << 20 {
        return Err("must be at least 1MiB".into());
    }
    Ok(bytes)
}

/// The init command from `raw.init` (split on whitespace), if set.
pub fn init_command(config: &BTreeMap<String, String>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = config.get("raw.init") else {
        return Ok(None);
    };
    let argv: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
    match argv.first() {
        None => Err(invalid("raw.init", v, "must name a program")),
        Some(p) if !p.starts_with('/') => Err(invalid("raw.init", v, "must be an absolute path")),
        Some(_) => Ok(Some(argv)),
    }
}

const CAPS_DROP: &str = "security.capabilities.drop";
const SYSCALLS_ALLOW: &str = "security.syscalls.allow";
const SYSCALLS_DENY: &str = "security.syscalls.deny";
const SYSCALLS_DENY_COMPAT: &str = "security.syscalls.deny_compat";
const SYSCALLS_DENY_DEFAULT: &str = "security.syscalls.deny_default";

/// The capabilities a container's processes lose: LXC's defaults ([`caps::DEFAULT_DROP`])
/// plus the names in `security.capabilities.drop` (`sys_admin`, `CAP_NET_RAW`...; comma or
/// space separated), sorted, each once.
pub fn capabilities_drop(config: &BTreeMap<String, String>) -> Result<Vec<u32>, ConfigError> {
    let mut drop = caps::DEFAULT_DROP.to_vec();
    if let Some(v) = config.get(CAPS_DROP) {
        for name in v
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
        {
            let cap = caps::cap_number(name)
                .ok_or_else(|| invalid(CAPS_DROP, v, format!("unknown capability \"{name}\"")))?;
            drop.push(cap);
        }
    }
    drop.sort_unstable();
    drop.dedup();
    Ok(drop)
}

/// System call names from `key` (one per line or comma-separated), each once, every one
/// known to libseccomp on this architecture. Unset or empty: none.
fn syscall_names(key: &str, config: &BTreeMap<String, String>) -> Result<Vec<String>, ConfigError> {
    let Some(v) = config.get(key) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = Vec::new();
    for entry in v
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if entry.contains(char::is_whitespace) {
            return Err(invalid(
                key,
                v,
                format!(
                    "\"{entry}\" is not a system call name (names only, one per line or \
                     comma-separated; no actions or arguments)"
                ),
            ));
        }
        if !names.iter().any(|n| n == entry) {
            names.push(entry.to_string());
        }
    }
    seccomp::validate_names(&names).map_err(|e| invalid(key, v, e.to_string()))?;
    Ok(names)
}

/// The seccomp policy of a container from the `security.syscalls.*` keys, as in Incus:
/// `deny_default` (default true: the default denylist, larger when `privileged`),
/// `deny_compat` (default false), `deny` (more names to deny), or `allow` (an allowlist,
/// which excludes the other three; `deny_default` then defaults to false).
pub fn syscall_policy(
    config: &BTreeMap<String, String>,
    privileged: bool,
) -> Result<SyscallPolicy, ConfigError> {
    let deny_default = boolean(SYSCALLS_DENY_DEFAULT, config)?;
    let deny_compat = boolean(SYSCALLS_DENY_COMPAT, config)?.unwrap_or(false);
    let deny = syscall_names(SYSCALLS_DENY, config)?;
    let allow = syscall_names(SYSCALLS_ALLOW, config)?;
    let allowlist = !allow.is_empty();
    if allowlist {
        let value = |key: &str| config.get(key).map_or("", String::as_str);
        let conflict = if deny_default == Some(true) {
            Some(SYSCALLS_DENY_DEFAULT)
        } else if deny_compat {
            Some(SYSCALLS_DENY_COMPAT)
        } else if !deny.is_empty() {
            Some(SYSCALLS_DENY)
        } else {
            None
        };
        if let Some(key) = conflict {
            return Err(invalid(
                key,
                value(key),
                format!(
                    "cannot be combined with {SYSCALLS_ALLOW}: an allowlist is the whole policy"
                ),
            ));
        }
    }
    let policy = SyscallPolicy {
        privileged,
        deny_default: deny_default.unwrap_or(!allowlist),
        deny_compat,
        deny,
        allow,
    };
    policy.validate().map_err(|e: SeccompError| {
        let key = if allowlist {
            SYSCALLS_ALLOW
        } else {
            SYSCALLS_DENY
        };
        invalid(
            key,
            config.get(key).map_or("", String::as_str),
            e.to_string(),
        )
    })?;
    Ok(policy)
}

/// The host's total memory in bytes, from `/proc/meminfo` content.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn host() -> Host {
        Host {
            memory: GIB,
            cpus: vec![0, 1],
        }
    }

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn memory_values() {
        let ok: &[(&str, u64)] = &[
            ("256MiB", 256 << 20),
            ("1GB", 1_000_000_000),
            ("1GiB", GIB),
            ("2097152", 2 << 20),
            ("50%", 12 * GIB),
        ];
        for (v, want) in ok {
            assert_eq!(parse_memory(v, 24 * GIB), Ok(*want), "{v}");
        }
        for v in [
            "banana",
            "-1",
            "",
            "10XB",
            "0%",
            "101%",
            "1kB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_memory(v, 24 * GIB).is_err(), "{v}");
        }
    }

    #[test]
    fn allowance_values() {
        assert_eq!(parse_allowance("50%"), Ok(CpuAllowance::Percent(50)));
        assert_eq!(
            parse_allowance("25ms/100ms"),
            Ok(CpuAllowance::Quota {
                quota_us: 25_000,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_allowance("200ms/100ms"),
            Ok(CpuAllowance::Quota {
                quota_us: 200_000,
                period_us: 100_000
            })
        );
        for v in ["0%", "150%", "x", "25/100", "1ms/2000ms", "0ms/100ms", "%"] {
            assert!(parse_allowance(v).is_err(), "{v}");
        }
    }

    #[test]
    fn stop_signal_takes_names_and_numbers() {
        let sig = |v: &str| {
            let mut c = BTreeMap::new();
            c.insert(STOP_SIGNAL.to_string(), v.to_string());
            stop_signal(&c)
        };
        assert_eq!(stop_signal(&BTreeMap::new()), Ok(None));
        assert_eq!(sig("SIGPWR"), Ok(Some(libc::SIGPWR)));
        assert_eq!(sig("term"), Ok(Some(libc::SIGTERM)));
        assert_eq!(sig("SIGRTMIN+3"), Ok(Some(libc::SIGRTMIN() + 3)));
        assert_eq!(sig("RTMIN"), Ok(Some(libc::SIGRTMIN())));
        assert_eq!(sig("10"), Ok(Some(10)));
        for bad in ["0", "65", "-1", "SIGFOO", "RTMIN+99", "RTMIN-1", ""] {
            assert!(sig(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn snapshot_keys_are_checked() {
        let ok = |k: &str, v: &str| validate(&cfg(&[(k, v)]), &cfg(&[]), &host()).is_ok();
        let bad_key = |k: &str, v: &str| {
            matches!(validate(&cfg(&[(k, v)]), &cfg(&[]), &host()),
                Err(ConfigError::Invalid { key, .. }) if key == k)
        };
        assert!(ok("snapshots.schedule", "*/5 * * * *"));
        assert!(ok("snapshots.schedule", "@daily, 0 6 * * 1-5"));
        assert!(ok("snapshots.schedule", ""));
        assert!(bad_key("snapshots.schedule", "every day"));
        assert!(bad_key("snapshots.schedule", "* * * *"));
        assert!(ok("snapshots.schedule.stopped", "true"));
        assert!(bad_key("snapshots.schedule.stopped", "sometimes"));
        assert!(ok("snapshots.expiry", "1d 2H"));
        assert!(bad_key("snapshots.expiry", "2 days"));
        assert!(bad_key("snapshots.expiry.manual", "1d 1d"));
        assert!(ok("snapshots.pattern", "auto-%d"));
        assert!(ok(
            "snapshots.pattern",
            "{{ creation_date|date:'2006-01-02_15-04-05' }}"
        ));
        assert!(bad_key("snapshots.pattern", "a/%d"), "not a snapshot name");
        assert!(bad_key("snapshots.pattern", "%d-%d"));
        assert!(bad_key("snapshots.pattern", "{{ creation_date }}"));
    }

    #[test]
    fn validate_names_the_key() {
        let e = validate(&cfg(&[("limits.memory", "banana")]), &cfg(&[]), &host());
        assert!(matches!(&e, Err(ConfigError::Invalid { key, .. }) if key == "limits.memory"));
        assert!(
            e.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("limits.memory")
        );
        assert_eq!(
            validate(&cfg(&[("limits.bogus", "1")]), &cfg(&[]), &host()),
            Err(ConfigError::UnknownKey("limits.bogus".into()))
        );
        assert!(validate(&cfg(&[("user.", "1")]), &cfg(&[]), &host()).is_err());
        assert!(
            validate(
                &cfg(&[
                    ("user.note", "x"),
                    ("environment.FOO", "bar"),
                    ("limits.processes", "64")
                ]),
                &cfg(&[]),
                &host()
            )
            .is_ok()
        );
        assert!(validate(&cfg(&[("limits.processes", "0")]), &cfg(&[]), &host()).is_err());
        assert!(validate(&cfg(&[("raw.init", "sbin/init")]), &cfg(&[]), &host()).is_err());
    }

    #[test]
    fn daemon_keys_are_read_only() {
        let prev = cfg(&[("volatile.base_image", "abc")]);
        assert!(validate(&prev, &prev, &host()).is_ok());
        assert_eq!(
            validate(&cfg(&[("volatile.base_image", "zzz")]), &prev, &host()),
            Err(ConfigError::ReadOnly("volatile.base_image".into()))
        );
    }

    #[test]
    fn limits_and_init_translate() {
        let c = cfg(&[
            ("limits.cpu.allowance", "50ms/100ms"),
            ("limits.memory", "64MiB"),
            ("limits.processes", "64"),
            ("raw.init", "/bin/sh -c sleep"),
        ]);
        let l = limits(&c, &host(), "c1");
        assert_eq!(
            l,
            Ok(CgroupLimits {
                cpu: Some(CpuAllowance::Quota {
                    quota_us: 50_000,
                    period_us: 100_000
                }),
                memory: Some(64 << 20),
                processes: Some(64),
                cpuset: "0-1".into(),
                ..CgroupLimits::default()
            })
        );
        assert_eq!(
            init_command(&c),
            Ok(Some(vec!["/bin/sh".into(), "-c".into(), "sleep".into()]))
        );
        assert_eq!(init_command(&cfg(&[])), Ok(None));
    }

    #[test]
    fn cpu_choices_against_a_two_cpu_host() {
        let h = host();
        let choice = |v: &str| cpu_choice(&cfg(&[("limits.cpu", v)]), &h);
        assert_eq!(cpu_choice(&cfg(&[]), &h), Ok(CpuChoice::All));
        assert_eq!(choice("1"), Ok(CpuChoice::Count(1)));
        assert_eq!(choice("0-1"), Ok(CpuChoice::Set(vec![0, 1])));
        assert_eq!(choice("1-1"), Ok(CpuChoice::Set(vec![1])));
        for bad in ["0", "3", "0-99", "0,5", "x", "1-0"] {
            let e = choice(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("limits.cpu"), "{bad}: {e}");
        }
        let e = choice("0-99")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("CPU 2 is not online") && e.contains("0-1"),
            "{e}"
        );
        // One CPU per instance, spread: some names land on CPU 0, others on CPU 1.
        let picks: std::collections::BTreeSet<Vec<u32>> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| spread_cpus(1, &h.cpus, n))
            .collect();
        assert_eq!(picks.len(), 2, "{picks:?}");
        let l = limits(&cfg(&[("limits.cpu", "1")]), &h, "c1").map(|l| l.cpuset);
        assert!(matches!(l.as_deref(), Ok("0" | "1")), "{l:?}");
        assert_eq!(
            limits(&cfg(&[]), &h, "c1").map(|l| l.cpuset),
            Ok("0-1".to_string())
        );
    }

    #[test]
    fn priority_enforce_swap_disk() {
        let h = host();
        let l = limits(
            &cfg(&[
                ("limits.cpu.priority", "5"),
                ("limits.memory", "64MiB"),
                ("limits.memory.enforce", "soft"),
                ("limits.memory.swap", "false"),
                ("limits.disk.priority", "7"),
            ]),
            &h,
            "c1",
        );
        let l = l.unwrap_or_default();
        assert_eq!(
            (
                l.cpu_priority,
                l.memory_soft,
                l.memory_swap,
                l.disk_priority
            ),
            (5, true, false, Some(7))
        );
        for (k, v) in [
            ("limits.cpu.priority", "11"),
            ("limits.disk.priority", "-1"),
            ("limits.memory.enforce", "sometimes"),
            ("limits.memory.swap", "maybe"),
        ] {
            let e = validate(&cfg(&[(k, v)]), &cfg(&[]), &h);
            assert!(
                matches!(&e, Err(ConfigError::Invalid { key, .. }) if key == k),
                "{k}"
            );
        }
    }

    #[test]
    fn capabilities_to_drop() {
        let defaults = caps::DEFAULT_DROP
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(
            capabilities_drop(&cfg(&[])),
            Ok(defaults.iter().copied().collect::<Vec<_>>())
        );
        let got = capabilities_drop(&cfg(&[(
            "security.capabilities.drop",
            "sys_admin, CAP_NET_RAW  cap_sys_time,,mknod",
        )]));
        let mut want: Vec<u32> = defaults.iter().copied().chain([21, 13, 27]).collect();
        want.sort_unstable();
        assert_eq!(got, Ok(want));
        let e = validate(
            &cfg(&[("security.capabilities.drop", "sys_admin,sys_admn")]),
            &cfg(&[]),
            &host(),
        );
        assert!(
            matches!(&e, Err(ConfigError::Invalid { key, reason, .. })
                if key == "security.capabilities.drop" && reason.contains("sys_admn")),
            "{e:?}"
        );
    }

    #[test]
    fn syscall_policies() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Unset: Incus' defaults.
        assert_eq!(
            syscall_policy(&cfg(&[]), true),
            Ok(SyscallPolicy {
                privileged: true,
                deny_default: true,
                deny_compat: false,
                deny: Vec::new(),
                allow: Vec::new(),
            })
        );
        let p = syscall_policy(
            &cfg(&[
                ("security.syscalls.deny_default", "false"),
                ("security.syscalls.deny_compat", "true"),
                ("security.syscalls.deny", "mknod\nmknodat, mknod\n\n"),
            ]),
            false,
        );
        assert_eq!(
            p,
            Ok(SyscallPolicy {
                privileged: false,
                deny_default: false,
                deny_compat: true,
                deny: names(&["mknod", "mknodat"]),
                allow: Vec::new(),
            })
        );
        // An allowlist: deny_default off unless set, and then a conflict.
        let allow = ("security.syscalls.allow", "execve\nread\nwrite");
        let p = syscall_policy(&cfg(&[allow]), false).map(|p| (p.deny_default, p.allow));
        assert_eq!(p, Ok((false, names(&["execve", "read", "write"]))));
        let p = syscall_policy(
            &cfg(&[allow, ("security.syscalls.deny_default", "false")]),
            false,
        );
        assert!(p.is_ok(), "{p:?}");
        for (k, v) in [
            ("security.syscalls.deny_default", "true"),
            ("security.syscalls.deny_compat", "true"),
            ("security.syscalls.deny", "mknod"),
        ] {
            let e = syscall_policy(&cfg(&[allow, (k, v)]), false);
            assert!(
                matches!(&e, Err(ConfigError::Invalid { key, reason, .. })
                    if key == k && reason.contains("security.syscalls.allow")),
                "{k}: {e:?}"
            );
        }
        // Bad values name their key (and the bad name), through validate too.
        for (k, v, needle) in [
            (
                "security.syscalls.deny",
                "mknod,no_such_call",
                "no_such_call",
            ),
            (
                "security.syscalls.deny",
                "kexec_load errno 1",
                "kexec_load errno 1",
            ),
            ("security.syscalls.allow", "read\nwrite", "execve"),
            ("security.syscalls.allow", "execve\nbogus", "bogus"),
            ("security.syscalls.deny_compat", "maybe", "true or false"),
            ("security.syscalls.deny_default", "2", "true or false"),
        ] {
            let e = validate(&cfg(&[(k, v)]), &cfg(&[]), &host());
            assert!(
                matches!(&e, Err(ConfigError::Invalid { key, reason, .. })
                    if key == k && reason.contains(needle)),
                "{k}={v}: {e:?}"
            );
        }
        assert!(
            validate(
                &cfg(&[
                    ("security.syscalls.deny", "mknod"),
                    ("security.syscalls.deny_compat", "true"),
                    ("security.capabilities.drop", "net_raw"),
                ]),
                &cfg(&[]),
                &host()
            )
            .is_ok()
        );
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24589916 kB\nMemFree: 1 kB\n"),
            Some(24_589_916 * 1024)
        );
        assert_eq!(parse_meminfo_total(""), None);
    }
}
