//! User-namespace id maps of unprivileged containers, as pure functions: the host range ctld
//! may hand out (root's `/etc/subuid` and `/etc/subgid` entries, else Incus' default), the
//! `security.idmap.*` and `raw.idmap` keys, the map a container gets, and the Incus JSON
//! form kept in `volatile.idmap.current` and `volatile.last_state.idmap`.
//!
//! Every container maps its ids `0..size` (65536 by default) onto a host range. Containers
//! that are not isolated share one range at the start of ctld's range; an isolated one
//! (`security.idmap.isolated=true`) gets a range no other isolated container uses, chosen once
//! and kept in `volatile.idmap.base`. `raw.idmap` maps chosen host ids straight in, punching
//! holes in the main range.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{ConfigError, boolean, invalid};
use crate::worker::spec::{IdMap, IdRange};

/// Incus' default host range when root has no `/etc/subuid` entry.
pub const DEFAULT_HOST_BASE: u32 = 1_000_000;
/// Incus' default size of that range.
pub const DEFAULT_HOST_SIZE: u32 = 1_000_000_000;
/// Ids a container maps unless `security.idmap.size` says otherwise (uids 0..65535).
pub const DEFAULT_SIZE: u32 = 65536;

/// The keys this module reads.
pub const PRIVILEGED: &str = "security.privileged";
pub const ISOLATED: &str = "security.idmap.isolated";
pub const BASE: &str = "security.idmap.base";
pub const SIZE: &str = "security.idmap.size";
pub const RAW: &str = "raw.idmap";
/// The host base an isolated container was given (daemon-owned).
pub const VOLATILE_BASE: &str = "volatile.idmap.base";
/// The map of the running (or last started) container (daemon-owned).
pub const VOLATILE_CURRENT: &str = "volatile.idmap.current";
/// The map the container's files on disk are shifted to (daemon-owned); absent or `[]`:
/// host ids as they are (never shifted, or privileged).
pub const VOLATILE_ON_DISK: &str = "volatile.last_state.idmap";

/// A contiguous host id range (`/etc/subuid` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    pub start: u32,
    pub count: u32,
}

/// The host ranges ctld hands out: one for uids, one for gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIds {
    pub uids: HostRange,
    pub gids: HostRange,
}

impl Default for HostIds {
    fn default() -> Self {
        let r = HostRange {
            start: DEFAULT_HOST_BASE,
            count: DEFAULT_HOST_SIZE,
        };
        HostIds { uids: r, gids: r }
    }
}

impl HostIds {
    /// Root's ranges from the texts of `/etc/subuid` and `/etc/subgid` (either may be
    /// missing), else the default.
    pub fn from_files(subuid: Option<&str>, subgid: Option<&str>) -> HostIds {
        HostIds::from_files_in(subuid, subgid, None, None)
    }

    /// As [`HostIds::from_files`], for a ctld whose own user namespace has the maps
    /// `uid_map`/`gid_map` (`/proc/self/{uid,gid}_map` texts). Inside a container (a map
    /// that is not the identity) the default range would not exist: without a subuid
    /// entry, the ids its own map gives it beyond its own 65536 are handed out instead.
    pub fn from_files_in(
        subuid: Option<&str>,
        subgid: Option<&str>,
        uid_map: Option<&str>,
        gid_map: Option<&str>,
    ) -> HostIds {
        let d = HostIds::default();
        let pick = |file: Option<&str>, map: Option<&str>, default: HostRange| {
            file.and_then(root_range)
                .or_else(|| map.and_then(spare_range))
                .unwrap_or(default)
        };
        HostIds {
            uids: pick(subuid, uid_map, d.uids),
            gids: pick(subgid, gid_map, d.gids),
        }
    }

    /// Read this host's `/etc/subuid` and `/etc/subgid`, and ctld's own id maps.
    pub fn of_host() -> HostIds {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        HostIds::from_files_in(
            read("/etc/subuid").as_deref(),
            read("/etc/subgid").as_deref(),
            read("/proc/self/uid_map").as_deref(),
            read("/proc/self/gid_map").as_deref(),
        )
    }
}

/// The largest run of ids at or above [`DEFAULT_SIZE`] that a (non-identity) user
/// namespace map gives, if it has at least [`DEFAULT_SIZE`] of them. Ids below are the
/// namespace's own users, never handed to a nested container.
fn spare_range(map: &str) -> Option<HostRange> {
    let ranges = IdMap::parse_proc(map);
    if ranges.is_empty() || IdMap::is_identity(&ranges) {
        return None;
    }
    ranges
        .iter()
        .filter_map(|r| {
            let end = u64::from(r.inside) + u64::from(r.count);
            let start = r.inside.max(DEFAULT_SIZE);
            let count = end.checked_sub(u64::from(start))?;
            Some(HostRange {
                start,
                count: u32::try_from(count).ok()?,
            })
        })
        .filter(|r| r.count >= DEFAULT_SIZE)
        .max_by_key(|r| r.count)
}

/// The largest range of `root` (or uid `0`) in a subuid/subgid file, if it has one of at
/// least [`DEFAULT_SIZE`] ids.
fn root_range(text: &str) -> Option<HostRange> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(':');
            let (who, start, count) = (it.next()?, it.next()?, it.next()?);
            if who != "root" && who != "0" {
                return None;
            }
            Some(HostRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            })
        })
        .filter(|r| r.count >= DEFAULT_SIZE && r.start > 0)
        .max_by_key(|r| r.count)
}

/// Which ids a `raw.idmap` line maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawKind {
    Uid,
    Gid,
    Both,
}

/// One `raw.idmap` line: host ids `host..host+count` become container ids `inside..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEntry {
    kind: RawKind,
    host: u32,
    inside: u32,
    count: u32,
}

/// Parse `raw.idmap`: lines of `uid|gid|both HOST[-HOST] CONTAINER[-CONTAINER]` (Incus' form;
/// one id or a range on each side, of the same length; a single host id maps to the same
/// container id when the container side is left out).
fn parse_raw(text: &str) -> Result<Vec<RawEntry>, String> {
    let range = |s: &str| -> Result<(u32, u32), String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (a, b): (u32, u32) = (
            a.parse()
                .map_err(|_| format!("\"{s}\" is not an id or a range"))?,
            b.parse()
                .map_err(|_| format!("\"{s}\" is not an id or a range"))?,
        );
        if b < a {
            return Err(format!("range \"{s}\" ends before it starts"));
        }
        Ok((a, b - a + 1))
    };
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let kind = match words.first().copied() {
            Some("uid") => RawKind::Uid,
            Some("gid") => RawKind::Gid,
            Some("both") => RawKind::Both,
            _ => return Err(format!("\"{line}\": expected uid, gid or both first")),
        };
        let (host, count) = range(words.get(1).ok_or(format!("\"{line}\": no host id"))?)?;
        let (inside, icount) = match words.get(2) {
            Some(w) => range(w)?,
            None => (host, count),
        };
        if words.len() > 3 || icount != count {
            return Err(format!(
                "\"{line}\": the host and container ranges must have the same length"
            ));
        }
        out.push(RawEntry {
            kind,
            host,
            inside,
            count,
        });
    }
    Ok(out)
}

/// What a container's config asks for: privileged, or a map of `size` ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmapConfig {
    pub privileged: bool,
    pub isolated: bool,
    /// `security.idmap.base`: a host base chosen by the user.
    pub base: Option<u32>,
    pub size: u32,
    raw: Vec<RawEntry>,
}

/// Read and check the id-map keys of `config`.
pub fn from_config(config: &BTreeMap<String, String>) -> Result<IdmapConfig, ConfigError> {
    let num = |key: &str| -> Result<Option<u32>, ConfigError> {
        config
            .get(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| invalid(key, v, "expected a non-negative integer"))
            })
            .transpose()
    };
    let size = num(SIZE)?.unwrap_or(DEFAULT_SIZE);
    if size == 0 {
        return Err(invalid(SIZE, "0", "must be at least 1"));
    }
    let base = num(BASE)?;
    if base == Some(0) {
        return Err(invalid(
            BASE,
            "0",
            "host id 0 is host root: use security.privileged=true instead",
        ));
    }
    let raw = match config.get(RAW) {
        Some(v) => parse_raw(v).map_err(|r| invalid(RAW, v, r))?,
        None => Vec::new(),
    };
    for r in &raw {
        if r.inside.checked_add(r.count).is_none_or(|end| end > size) {
            return Err(invalid(
                RAW,
                &config[RAW],
                format!("container ids must be below security.idmap.size ({size})"),
            ));
        }
        if r.host == 0 {
            return Err(invalid(
                RAW,
                &config[RAW],
                "host root (id 0) may not be mapped into an unprivileged container",
            ));
        }
    }
    Ok(IdmapConfig {
        privileged: boolean(PRIVILEGED, config)?.unwrap_or(false),
        isolated: boolean(ISOLATED, config)?.unwrap_or(false),
        base,
        size,
        raw,
    })
}

/// The host base of a container's map. `taken` lists the `(base, size)` of every other
/// isolated container; `kept` is the base this one was given before (`volatile.idmap.base`).
/// `None` when the host range has no room left.
pub fn choose_base(
    cfg: &IdmapConfig,
    host: HostRange,
    kept: Option<u32>,
    taken: &[(u32, u32)],
) -> Option<u32> {
    if let Some(b) = cfg.base {
        return Some(b);
    }
    let end = u64::from(host.start) + u64::from(host.count);
    if !cfg.isolated {
        return (u64::from(host.start) + u64::from(cfg.size) <= end).then_some(host.start);
    }
    let overlaps = |b: u32| {
        let (s, e) = (u64::from(b), u64::from(b) + u64::from(cfg.size));
        // The shared range of non-isolated containers is never handed to an isolated one.
        let shared_end = u64::from(host.start) + u64::from(DEFAULT_SIZE.max(cfg.size));
        s < shared_end
            || taken.iter().any(|(tb, ts)| {
                let (ts_s, ts_e) = (u64::from(*tb), u64::from(*tb) + u64::from(*ts));
                s < ts_e && ts_s < e
            })
    };
    if let Some(b) = kept
        && !overlaps(b)
        && u64::from(b) + u64::from(cfg.size) <= end
    {
        return Some(b);
    }
    let step = u64::from(cfg.size.max(DEFAULT_SIZE));
    let mut b = u64::from(host.start) + step;
    while b + u64::from(cfg.size) <= end {
        let b32 = u32::try_from(b).ok()?;
        if !overlaps(b32) {
            return Some(b32);
        }
        b += step;
    }
    None
}

/// The map of ids `0..size` onto `uid_base`/`gid_base`, with the `raw.idmap` entries
/// punched in (each replaces the container ids it covers).
pub fn build(cfg: &IdmapConfig, uid_base: u32, gid_base: u32) -> IdMap {
    let side = |base: u32, wanted: fn(RawKind) -> bool| {
        let mut raw: Vec<&RawEntry> = cfg.raw.iter().filter(|r| wanted(r.kind)).collect();
        raw.sort_by_key(|r| r.inside);
        let mut out = Vec::new();
        let mut next = 0u32;
        for r in raw {
            if r.inside > next {
                out.push(IdRange {
                    inside: next,
                    outside: base + next,
                    count: r.inside - next,
                });
            }
            out.push(IdRange {
                inside: r.inside,
                outside: r.host,
                count: r.count,
            });
            next = next.max(r.inside + r.count);
        }
        if next < cfg.size {
            out.push(IdRange {
                inside: next,
                outside: base + next,
                count: cfg.size - next,
            });
        }
        out
    };
    IdMap {
        uids: side(uid_base, |k| k != RawKind::Gid),
        gids: side(gid_base, |k| k != RawKind::Uid),
    }
}

/// One entry of Incus' JSON id-map form (`volatile.idmap.current`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IncusEntry {
    #[serde(rename = "Isuid")]
    is_uid: bool,
    #[serde(rename = "Isgid")]
    is_gid: bool,
    #[serde(rename = "Hostid")]
    host: u32,
    #[serde(rename = "Nsid")]
    inside: u32,
    #[serde(rename = "Maprange")]
    count: u32,
}

/// The Incus JSON form of a map (`[]` for none: privileged, host ids as they are).
pub fn to_json(map: Option<&IdMap>) -> String {
    let mut entries = Vec::new();
    if let Some(m) = map {
        for (ranges, is_uid) in [(&m.uids, true), (&m.gids, false)] {
            entries.extend(ranges.iter().map(|r| IncusEntry {
                is_uid,
                is_gid: !is_uid,
                host: r.outside,
                inside: r.inside,
                count: r.count,
            }));
        }
    }
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into())
}

/// Read a map kept with [`to_json`]; `None` for `[]`, a missing value or an unreadable one.
pub fn from_json(text: Option<&String>) -> Option<IdMap> {
    let entries: Vec<IncusEntry> = serde_json::from_str(text?).ok()?;
    if entries.is_empty() {
        return None;
    }
    let mut map = IdMap {
        uids: Vec::new(),
        gids: Vec::new(),
    };
    for e in entries {
        let r = IdRange {
            inside: e.inside,
            outside: e.host,
            count: e.count,
        };
        if e.is_uid {
            map.uids.push(r);
        }
        if e.is_gid {
            map.gids.push(r);
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn root_range_comes_from_subuid_else_the_default() {
        let ids = HostIds::from_files(Some("alice:100000:65536\nroot:2000000:10000000\n"), None);
        assert_eq!(
            ids.uids,
            HostRange {
                start: 2_000_000,
                count: 10_000_000
            }
        );
        assert_eq!(ids.gids, HostIds::default().gids);
        // Too small a range, or none for root: the default.
        let small = HostIds::from_files(Some("root:100000:1000\n"), Some("garbage"));
        assert_eq!(small, HostIds::default());
    }

    #[test]
    fn inside_a_container_the_spare_ids_of_its_own_map_are_handed_out() {
        // The host: the identity map, so the default.
        let host = "         0          0 4294967295\n";
        assert_eq!(
            HostIds::from_files_in(None, None, Some(host), Some(host)),
            HostIds::default()
        );
        // A container given 131072 ids: the upper 65536 are for its nested containers.
        let nested = "         0    1000000     131072\n";
        let ids = HostIds::from_files_in(None, None, Some(nested), Some(nested));
        let spare = HostRange {
            start: 65536,
            count: 65536,
        };
        assert_eq!((ids.uids, ids.gids), (spare, spare));
        // Several ranges: the largest spare run; a subuid entry still wins.
        let two = "0 1000000 65536\n65536 3000000 70000\n200000 5000000 100000\n";
        assert_eq!(
            HostIds::from_files_in(None, None, Some(two), None).uids,
            HostRange {
                start: 200000,
                count: 100000
            }
        );
        assert_eq!(
            HostIds::from_files_in(Some("root:70000:65536"), None, Some(two), None).uids,
            HostRange {
                start: 70000,
                count: 65536
            }
        );
        // Only 65536 ids (a default container): nothing to spare, the default stays.
        let small = "0 1000000 65536\n";
        assert_eq!(
            HostIds::from_files_in(None, None, Some(small), Some(small)),
            HostIds::default()
        );
    }

    #[test]
    fn default_map_is_65536_ids_at_the_base() {
        let c = from_config(&cfg(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.privileged && !c.isolated);
        let host = HostIds::default().uids;
        let base = choose_base(&c, host, None, &[]);
        assert_eq!(base, Some(1_000_000));
        let m = build(&c, 1_000_000, 1_000_000);
        assert_eq!(
            m.uids,
            vec![IdRange {
                inside: 0,
                outside: 1_000_000,
                count: 65536
            }]
        );
        assert_eq!(m.host_uid(0), Some(1_000_000));
        assert_eq!(m.host_uid(65536), None);
    }

    #[test]
    fn isolated_containers_get_distinct_ranges_and_keep_theirs() {
        let c = from_config(&cfg(&[(ISOLATED, "true")])).unwrap_or_else(|e| panic!("{e}"));
        let host = HostIds::default().uids;
        let a = choose_base(&c, host, None, &[]).unwrap_or(0);
        assert_eq!(a, 1_000_000 + 65536);
        let b = choose_base(&c, host, None, &[(a, 65536)]).unwrap_or(0);
        assert_eq!(b, 1_000_000 + 2 * 65536);
        // Its own base is kept when free; taken by someone else, a new one is found.
        assert_eq!(choose_base(&c, host, Some(b), &[(a, 65536)]), Some(b));
        assert_eq!(choose_base(&c, host, Some(a), &[(a, 65536)]), Some(b));
        // A full host range: no base.
        let tiny = HostRange {
            start: 1_000_000,
            count: 65536 * 2,
        };
        assert_eq!(choose_base(&c, tiny, None, &[(1_065_536, 65536)]), None);
    }

    #[test]
    fn raw_idmap_punches_host_ids_in() {
        let c = from_config(&cfg(&[(RAW, "both 1000 1000\nuid 5000-5001 20-21")]))
            .unwrap_or_else(|e| panic!("{e}"));
        let m = build(&c, 1_000_000, 1_000_000);
        let r = |inside, outside, count| IdRange {
            inside,
            outside,
            count,
        };
        assert_eq!(
            m.uids,
            vec![
                r(0, 1_000_000, 20),
                r(20, 5000, 2),
                r(22, 1_000_022, 978),
                r(1000, 1000, 1),
                r(1001, 1_001_001, 64535),
            ]
        );
        assert_eq!(
            m.gids,
            vec![
                r(0, 1_000_000, 1000),
                r(1000, 1000, 1),
                r(1001, 1_001_001, 64535)
            ]
        );
        assert_eq!(m.host_uid(21), Some(5001));
        assert_eq!(m.host_gid(21), Some(1_000_021));
    }

    #[test]
    fn bad_keys_are_refused() {
        for (k, v) in [
            (RAW, "user 1 1"),
            (RAW, "uid 10-5 1"),
            (RAW, "uid 1-3 1-2"),
            (RAW, "uid 0 0"),
            (RAW, "uid 70000 70000"),
            (SIZE, "0"),
            (SIZE, "-1"),
            (BASE, "0"),
            (PRIVILEGED, "maybe"),
        ] {
            assert!(from_config(&cfg(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn json_round_trip_in_incus_form() {
        let c = from_config(&cfg(&[])).unwrap_or_else(|e| panic!("{e}"));
        let m = build(&c, 1_000_000, 2_000_000);
        let j = to_json(Some(&m));
        assert!(
            j.contains("\"Isuid\":true") && j.contains("\"Hostid\":2000000"),
            "{j}"
        );
        assert_eq!(from_json(Some(&j)), Some(m));
        assert_eq!(to_json(None), "[]");
        assert_eq!(from_json(Some(&"[]".to_string())), None);
        assert_eq!(from_json(None), None);
    }
}
