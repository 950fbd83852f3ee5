//! `disk` devices, pure: which keys exist, what their values mean, and the checks that need
//! no host (paths absolute and without `..`, one device per mount point, where a source may
//! not lie). Two kinds, as in LXD and Incus:
//! - the **root disk** (`path: /`, with `pool` and `size`): accepted and otherwise left
//!   alone here (the root filesystem is the instance's overlay);
//! - a **mount disk**: a host path (`source: /srv/data`) or a custom storage volume
//!   (`pool: P`, `source: VOLUME`) bound at `path` inside.
//!
//! What needs the host (does the source exist, is it a file, which block device backs it)
//! is `disk_devices.rs`'s, through the worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::worker::IoThrottle;
use crate::worker::spec::Propagation;

/// A refused `disk` device (the client's error: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device \"{device}\": {reason}")]
pub struct DiskError {
    pub device: String,
    pub reason: String,
}

/// Keys of the root disk.
pub const ROOT_KEYS: &[&str] = &["type", "path", "pool", "size"];

/// Keys of a mount disk.
pub const MOUNT_KEYS: &[&str] = &[
    "type",
    "source",
    "path",
    "pool",
    "readonly",
    "shift",
    "propagation",
    "required",
    "recursive",
    "limits.read",
    "limits.write",
    "limits.max",
];

/// Where a mount disk's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// An absolute host path (not resolved yet).
    Host(PathBuf),
    /// A custom volume of a storage pool.
    Volume { pool: String, volume: String },
}

/// A mount disk's I/O limits, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoLimits {
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

impl IoLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == IoLimits::default()
    }

    /// The limits as a cgroup rule on block device `major:minor`.
    pub fn on_device(&self, major: u32, minor: u32) -> IoThrottle {
        IoThrottle {
            major,
            minor,
            read_bps: self.read_bps,
            write_bps: self.write_bps,
            read_iops: self.read_iops,
            write_iops: self.write_iops,
        }
    }
}

/// A rate: bytes or operations per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Bytes(u64),
    Iops(u64),
}

/// Parse a `limits.*` value: `10MB` (decimal units), `20MiB` (binary), `512` (bytes), or
/// `100iops`.
pub fn parse_rate(v: &str) -> Result<Rate, String> {
    let v = v.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = v.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with a unit (10MB, 20MiB, 100iops)".to_string())?;
    if n == 0 {
        return Err("must be more than 0".into());
    }
    if unit == "iops" {
        return Ok(Rate::Iops(n));
    }
    let mult: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "PB" => 1000_u64.pow(5),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB or iops)"
            ));
        }
    };
    n.checked_mul(mult)
        .map(Rate::Bytes)
        .ok_or_else(|| "too large".to_string())
}

/// A mount disk, checked key by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountDisk {
    /// The device's name in `devices`.
    pub device: String,
    pub source: DiskSource,
    /// Absolute, normalized (`/srv/data`: no `.`, no empty components, no trailing `/`).
    pub path: String,
    pub readonly: bool,
    pub shift: bool,
    /// `false`: a missing source skips the device instead of refusing the instance.
    pub required: bool,
    pub recursive: bool,
    pub propagation: Propagation,
    pub limits: IoLimits,
}

impl MountDisk {
    /// The mount point relative to the container's root (`srv/data`).
    pub fn target(&self) -> String {
        self.path.trim_start_matches('/').to_string()
    }
}

/// A `disk` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskDevice {
    /// `path: /`: the root disk, which this module leaves alone.
    Root,
    Mount(MountDisk),
}

/// `path` or `source` as an absolute path without `..`, normalized; `None` with the reason.
fn absolute(v: &str) -> Result<String, &'static str> {
    if !v.starts_with('/') {
        return Err("must be an absolute path");
    }
    let mut parts = Vec::new();
    for c in v.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("must not contain \"..\""),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{key}: \"{v}\" is not true or false")),
    }
}

/// Check one `disk` device's keys and values.
pub fn parse(device: &str, config: &BTreeMap<String, String>) -> Result<DiskDevice, DiskError> {
    let err = |reason: String| DiskError {
        device: device.to_string(),
        reason,
    };
    let get = |k: &str| config.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let path = get("path").ok_or_else(|| err("a disk needs \"path\"".into()))?;
    let path = absolute(path).map_err(|r| err(format!("path \"{path}\" {r}")))?;
    if path == "/" {
        if get("source").is_some() {
            return Err(err(
                "path \"/\" is the root disk: it takes \"pool\" and \"size\", not \"source\""
                    .into(),
            ));
        }
        if let Some(k) = config.keys().find(|k| !ROOT_KEYS.contains(&k.as_str())) {
            return Err(err(format!("unknown key \"{k}\" for the root disk")));
        }
        return Ok(DiskDevice::Root);
    }
    if let Some(k) = config.keys().find(|k| !MOUNT_KEYS.contains(&k.as_str())) {
        return Err(err(format!("unknown disk key \"{k}\"")));
    }
    let source = get("source").ok_or_else(|| err("a disk needs \"source\"".into()))?;
    let source = match get("pool") {
        Some(pool) => {
            if source.contains('/') {
                return Err(err(format!(
                    "source \"{source}\" with \"pool\" must be the name of a custom volume"
                )));
            }
            DiskSource::Volume {
                pool: pool.to_string(),
                volume: source.to_string(),
            }
        }
        None => DiskSource::Host(PathBuf::from(
            absolute(source).map_err(|r| err(format!("source \"{source}\" {r}")))?,
        )),
    };
    let flag = |k: &str, default: bool| {
        get(k)
            .map(|v| boolean(k, v))
            .transpose()
            .map(|b| b.unwrap_or(default))
            .map_err(err)
    };
    let propagation = match get("propagation") {
        None => Propagation::default(),
        Some(v) => Propagation::parse(v).ok_or_else(|| {
            err(format!(
                "propagation \"{v}\" is not one of {}",
                Propagation::NAMES.join(", ")
            ))
        })?,
    };
    let mut limits = IoLimits::default();
    for key in ["limits.max", "limits.read", "limits.write"] {
        let Some(v) = get(key) else { continue };
        let rate = parse_rate(v).map_err(|r| err(format!("{key} \"{v}\": {r}")))?;
        let (read, write) = match key {
            "limits.read" => (true, false),
            "limits.write" => (false, true),
            _ => (true, true),
        };
        let (bps, iops) = match rate {
            Rate::Bytes(n) => (Some(n), None),
            Rate::Iops(n) => (None, Some(n)),
        };
        if read {
            limits.read_bps = bps.or(limits.read_bps);
            limits.read_iops = iops.or(limits.read_iops);
        }
        if write {
            limits.write_bps = bps.or(limits.write_bps);
            limits.write_iops = iops.or(limits.write_iops);
        }
    }
    Ok(DiskDevice::Mount(MountDisk {
        device: device.to_string(),
        source,
        path,
        readonly: flag("readonly", false)?,
        shift: flag("shift", false)?,
        required: flag("required", true)?,
        recursive: flag("recursive", false)?,
        propagation,
        limits,
    }))
}

/// Check every `disk` device of a device map; returns the mount disks, parents before the
/// disks mounted below them (by path depth, then name). Two devices (root disk included)
/// may not share a `path`.
pub fn parse_all(
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<MountDisk>, DiskError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, dev) in devices {
        if dev.get("type").map(String::as_str) != Some("disk") {
            continue;
        }
        let (path, mount) = match parse(name, dev)? {
            DiskDevice::Root => ("/".to_string(), None),
            DiskDevice::Mount(m) => (m.path.clone(), Some(m)),
        };
        if let Some(other) = seen.insert(path.clone(), name) {
            return Err(DiskError {
                device: name.clone(),
                reason: format!("path \"{path}\" is also the path of device \"{other}\""),
            });
        }
        out.extend(mount);
    }
    out.sort_by(|a, b| {
        let depth = |m: &MountDisk| m.path.matches('/').count();
        (depth(a), &a.path).cmp(&(depth(b), &b.path))
    });
    Ok(out)
}

/// Refuse a source (canonical: symlinks resolved) that would hand a container the host's
/// kernel interfaces, its whole filesystem, or ctld's own state (`state_dir`, canonical):
/// `/`, anything under `/proc` or `/sys`, anything in or above `state_dir`.
pub fn check_source_location(source: &Path, state_dir: &Path) -> Result<(), String> {
    if source == Path::new("/") {
        return Err("the host's whole filesystem (\"/\") cannot be a source".into());
    }
    for kernel in ["/proc", "/sys"] {
        if source.starts_with(kernel) {
            return Err(format!(
                "{} is in {kernel}, a kernel interface of the host",
                source.display()
            ));
        }
    }
    if source.starts_with(state_dir) || state_dir.starts_with(source) {
        return Err(format!(
            "{} holds or is inside ctld's state directory {}",
            source.display(),
            state_dir.display()
        ));
    }
    Ok(())
}

/// The rules for the block devices of `disks` (`(major, minor)`, limits): one per device,
/// the lowest limit where several disks share one.
pub fn merge_throttles(disks: &[((u32, u32), IoLimits)]) -> Vec<IoThrottle> {
    let mut by_dev: BTreeMap<(u32, u32), IoLimits> = BTreeMap::new();
    let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for ((maj, min_), l) in disks.iter().filter(|(_, l)| !l.is_empty()) {
        let e = by_dev.entry((*maj, *min_)).or_default();
        *e = IoLimits {
            read_bps: min(e.read_bps, l.read_bps),
            write_bps: min(e.write_bps, l.write_bps),
            read_iops: min(e.read_iops, l.read_iops),
            write_iops: min(e.write_iops, l.write_iops),
        };
    }
    by_dev
        .into_iter()
        .map(|((maj, mn), l)| l.on_device(maj, mn))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.entry("type".into()).or_insert_with(|| "disk".into());
        m
    }

    fn mount(pairs: &[(&str, &str)]) -> Result<MountDisk, DiskError> {
        match parse("d", &map(pairs))? {
            DiskDevice::Mount(m) => Ok(m),
            DiskDevice::Root => panic!("{pairs:?} parsed as the root disk"),
        }
    }

    #[test]
    fn a_mount_disk_and_its_defaults() {
        let m = mount(&[("source", "/srv/data/"), ("path", "/data//x/.")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.source, DiskSource::Host("/srv/data".into()));
        assert_eq!((m.path.as_str(), m.target()), ("/data/x", "data/x".into()));
        assert!(!m.readonly && !m.shift && m.required && !m.recursive);
        assert_eq!(m.propagation, Propagation::Private);
        assert!(m.limits.is_empty());
        let m = mount(&[
            ("source", "/srv"),
            ("path", "/srv"),
            ("readonly", "true"),
            ("shift", "yes"),
            ("required", "false"),
            ("recursive", "1"),
            ("propagation", "rslave"),
            ("limits.max", "100iops"),
            ("limits.read", "10MB"),
            ("limits.write", "20MiB"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.readonly && m.shift && !m.required && m.recursive);
        assert_eq!(m.propagation, Propagation::Rslave);
        assert_eq!(
            m.limits,
            IoLimits {
                read_bps: Some(10_000_000),
                write_bps: Some(20 << 20),
                read_iops: Some(100),
                write_iops: Some(100),
            }
        );
    }

    #[test]
    fn the_root_disk_and_volumes() {
        let root = parse(
            "root",
            &map(&[("path", "/"), ("pool", "default"), ("size", "10GiB")]),
        );
        assert_eq!(root, Ok(DiskDevice::Root));
        let v = mount(&[("pool", "p1"), ("source", "vol1"), ("path", "/v")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.source,
            DiskSource::Volume {
                pool: "p1".into(),
                volume: "vol1".into()
            }
        );
    }

    #[test]
    fn every_bad_device_is_refused_with_its_reason() {
        // (keys, words the message must contain)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("source", "/srv")], &["path"]),
            (&[("path", "/data")], &["source"]),
            (
                &[("source", "srv"), ("path", "/data")],
                &["source", "absolute"],
            ),
            (
                &[("source", "/srv"), ("path", "data")],
                &["path", "absolute"],
            ),
            (&[("source", "/srv"), ("path", "/data/../etc")], &["\"..\""]),
            (&[("source", "/srv/../etc"), ("path", "/data")], &["\"..\""]),
            (
                &[("source", "/srv"), ("path", "/d"), ("colour", "red")],
                &["colour"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("readonly", "maybe")],
                &["readonly"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("shift", "2")],
                &["shift"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("required", "x")],
                &["required"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("recursive", "x")],
                &["recursive"],
            ),
            (
                &[
                    ("source", "/srv"),
                    ("path", "/d"),
                    ("propagation", "sideways"),
                ],
                &["propagation", "rslave"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("limits.read", "fast")],
                &["limits.read"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("limits.write", "10XB")],
                &["XB"],
            ),
            (
                &[("source", "/srv"), ("path", "/d"), ("limits.max", "0")],
                &["limits.max"],
            ),
            (&[("source", "/srv"), ("path", "/")], &["root disk"]),
            (&[("path", "/"), ("readonly", "true")], &["readonly"]),
            (
                &[("pool", "p"), ("source", "a/b"), ("path", "/v")],
                &["custom volume"],
            ),
        ];
        for (pairs, words) in cases {
            let e = parse("d", &map(pairs)).expect_err("must be refused");
            let msg = e.to_string();
            assert!(msg.contains("\"d\""), "{msg}");
            for w in *words {
                assert!(msg.contains(w), "{pairs:?}: {msg} lacks {w}");
            }
        }
    }

    #[test]
    fn one_device_per_path_and_parents_first() {
        let devs = BTreeMap::from([
            (
                "a".to_string(),
                map(&[("source", "/s1"), ("path", "/data/sub")]),
            ),
            (
                "b".to_string(),
                map(&[("source", "/s2"), ("path", "/data")]),
            ),
            (
                "root".to_string(),
                map(&[("path", "/"), ("pool", "default")]),
            ),
            (
                "eth0".to_string(),
                map(&[("type", "nic"), ("network", "n")]),
            ),
        ]);
        let got = parse_all(&devs).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = got.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/data", "/data/sub"]);
        let mut dup = devs.clone();
        dup.insert("c".into(), map(&[("source", "/s3"), ("path", "/data/")]));
        let e = parse_all(&dup).expect_err("same path twice");
        assert!(e.to_string().contains("/data"), "{e}");
        let mut two_roots = devs;
        two_roots.insert("root2".into(), map(&[("path", "/")]));
        assert!(parse_all(&two_roots).is_err());
    }

    #[test]
    fn sources_that_would_expose_the_host_or_ctld() {
        let state = Path::new("/var/lib/ctld");
        for ok in ["/srv/data", "/var/lib/other", "/home/u/file.txt"] {
            assert_eq!(check_source_location(Path::new(ok), state), Ok(()), "{ok}");
        }
        for bad in [
            "/",
            "/proc",
            "/proc/1/root",
            "/sys/kernel",
            "/var/lib/ctld",
            "/var/lib/ctld/containers/c1/upper",
            "/var/lib",
        ] {
            assert!(
                check_source_location(Path::new(bad), state).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10MB"), Ok(Rate::Bytes(10_000_000)));
        assert_eq!(parse_rate("20MiB"), Ok(Rate::Bytes(20 << 20)));
        assert_eq!(parse_rate("1kB"), Ok(Rate::Bytes(1000)));
        assert_eq!(parse_rate("512"), Ok(Rate::Bytes(512)));
        assert_eq!(parse_rate("100iops"), Ok(Rate::Iops(100)));
        for bad in [
            "",
            "MB",
            "10 MB",
            "-1MB",
            "0iops",
            "1.5MB",
            "99999999999PiB",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn throttles_merge_per_block_device() {
        let l = |r: Option<u64>, w: Option<u64>| IoLimits {
            read_bps: r,
            write_bps: w,
            ..IoLimits::default()
        };
        let got = merge_throttles(&[
            ((8, 0), l(Some(10), None)),
            ((8, 0), l(Some(5), Some(7))),
            ((7, 1), l(None, Some(3))),
            ((9, 9), IoLimits::default()),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].major, got[0].write_bps), (7, Some(3)));
        assert_eq!(
            (got[1].major, got[1].read_bps, got[1].write_bps),
            (8, Some(5), Some(7))
        );
    }
}
