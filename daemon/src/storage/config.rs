//! Pure checks of storage pool and volume names and configs, and of root disk devices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The drivers ctld has.
pub const DRIVERS: [&str; 2] = ["dir", "btrfs"];

/// The smallest loop file ctld makes for a btrfs pool (mkfs.btrfs needs ~114 MiB).
pub const MIN_LOOP_SIZE: u64 = 128 << 20;

/// The size of a btrfs pool's loop file when none is given (sparse: it takes what is used).
pub const DEFAULT_LOOP_SIZE: u64 = 5 << 30;

/// A pool or volume name: what fits in a path component and a URL segment.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{kind} name must be 1 to 63 characters"));
    }
    if name.starts_with(['-', '.']) {
        return Err(format!(
            "{kind} name \"{name}\" must not start with '-' or '.'"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{kind} name \"{name}\" has an invalid character {c:?}"
        ));
    }
    Ok(())
}

/// Bytes of a disk size (`64MiB`, `1GB`, `1073741824`); at least 1 MiB, no percentages.
pub fn parse_size(v: &str) -> Result<u64, String> {
    if v.ends_with('%') {
        return Err(format!("size \"{v}\": a disk size cannot be a percentage"));
    }
    crate::instance::config::parse_memory(v, 0).map_err(|e| format!("size \"{v}\": {e}"))
}

/// How a pool's filesystem comes to be, from its driver and config (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSource {
    /// A directory (`dir`: `source`, or ctld's own place for the pool).
    Dir(PathBuf),
    /// A btrfs filesystem on a loop file ctld makes (and removes with the pool).
    LoopFile { file: PathBuf, size: u64 },
    /// A btrfs filesystem on a block device.
    Device(PathBuf),
    /// A directory on a btrfs filesystem that is already mounted.
    BtrfsDir(PathBuf),
}

/// Check a new pool's driver and config. `own_file` is where ctld would put its loop file,
/// `own_dir` where a `dir` pool without `source` lives.
pub fn check_pool(
    driver: &str,
    config: &BTreeMap<String, String>,
    own_file: &Path,
    own_dir: &Path,
) -> Result<PoolSource, String> {
    if !DRIVERS.contains(&driver) {
        return Err(format!(
            "storage driver \"{driver}\" is not supported (use {})",
            DRIVERS.join(" or ")
        ));
    }
    let allowed: &[&str] = match driver {
        "dir" => &["source"],
        _ => &["source", "size"],
    };
    if let Some(k) = config.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown {driver} pool key \"{k}\""));
    }
    let source = config.get("source").filter(|s| !s.is_empty());
    if let Some(s) = source
        && !Path::new(s).is_absolute()
    {
        return Err(format!("source \"{s}\" must be an absolute path"));
    }
    if let Some(s) = source
        && Path::new(s)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("source \"{s}\" must not contain \"..\""));
    }
    match driver {
        "dir" => Ok(PoolSource::Dir(
            source.map_or_else(|| own_dir.to_path_buf(), PathBuf::from),
        )),
        _ => match source {
            None => {
                let size = match config.get("size") {
                    Some(v) => parse_size(v)?,
                    None => DEFAULT_LOOP_SIZE,
                };
                if size < MIN_LOOP_SIZE {
                    return Err(format!(
                        "size: a btrfs pool needs at least {} MiB",
                        MIN_LOOP_SIZE >> 20
                    ));
                }
                Ok(PoolSource::LoopFile {
                    file: own_file.to_path_buf(),
                    size,
                })
            }
            Some(s) if s.starts_with("/dev/") => {
                if config.contains_key("size") {
                    return Err("size: only for a pool on a loop file ctld makes".into());
                }
                Ok(PoolSource::Device(PathBuf::from(s)))
            }
            Some(s) => {
                if config.contains_key("size") {
                    return Err("size: only for a pool on a loop file ctld makes".into());
                }
                Ok(PoolSource::BtrfsDir(PathBuf::from(s)))
            }
        },
    }
}

/// The keys a custom volume may have.
pub fn check_volume_config(config: &BTreeMap<String, String>) -> Result<Option<u64>, String> {
    if let Some(k) = config.keys().find(|k| k.as_str() != "size") {
        return Err(format!("unknown volume key \"{k}\""));
    }
    config.get("size").map(|v| parse_size(v)).transpose()
}

/// The root disk of an expanded device map: its `pool` and `size`. Refuses more than one
/// root disk, and keys a root disk does not have.
pub fn root_disk(
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Option<(String, Option<u64>)>, String> {
    let mut roots = devices.iter().filter(|(_, d)| is_root_disk(d));
    let Some((name, dev)) = roots.next() else {
        return Ok(None);
    };
    if let Some((other, _)) = roots.next() {
        return Err(format!(
            "devices \"{name}\" and \"{other}\" are both the root disk (path /)"
        ));
    }
    if let Some(k) = dev
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "path" | "pool" | "size"))
    {
        return Err(format!(
            "device \"{name}\": root disk key \"{k}\" is not supported"
        ));
    }
    let pool = dev.get("pool").cloned().unwrap_or_default();
    if pool.is_empty() {
        return Err(format!("device \"{name}\": the root disk needs a \"pool\""));
    }
    let size = dev
        .get("size")
        .filter(|s| !s.is_empty())
        .map(|s| parse_size(s))
        .transpose()
        .map_err(|e| format!("device \"{name}\": {e}"))?;
    Ok(Some((pool, size)))
}

/// Whether a device is a root disk (`type: disk`, `path: /`).
pub fn is_root_disk(d: &BTreeMap<String, String>) -> bool {
    d.get("type").map(String::as_str) == Some("disk")
        && d.get("path").map(String::as_str) == Some("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names() {
        assert!(check_name("pool", "fast-1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", "..", &"x".repeat(64)] {
            assert!(check_name("pool", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pool_configs() {
        let (f, d) = (Path::new("/s/disks/p.img"), Path::new("/s/storage-pools/p"));
        assert_eq!(
            check_pool("dir", &map(&[]), f, d),
            Ok(PoolSource::Dir(d.to_path_buf()))
        );
        assert_eq!(
            check_pool("btrfs", &map(&[("size", "1GiB")]), f, d),
            Ok(PoolSource::LoopFile {
                file: f.to_path_buf(),
                size: 1 << 30
            })
        );
        assert_eq!(
            check_pool("btrfs", &map(&[("source", "/dev/vdb")]), f, d),
            Ok(PoolSource::Device("/dev/vdb".into()))
        );
        for (driver, cfg) in [
            ("zfs", map(&[])),
            ("dir", map(&[("size", "1GiB")])),
            ("dir", map(&[("source", "rel/path")])),
            ("dir", map(&[("source", "/a/../b")])),
            ("btrfs", map(&[("size", "64MiB")])),
            ("btrfs", map(&[("size", "10%")])),
            ("btrfs", map(&[("source", "/dev/vdb"), ("size", "1GiB")])),
            ("btrfs", map(&[("color", "red")])),
        ] {
            assert!(check_pool(driver, &cfg, f, d).is_err(), "{driver} {cfg:?}");
        }
    }

    #[test]
    fn root_disks() {
        let mut devs = BTreeMap::new();
        assert_eq!(root_disk(&devs), Ok(None));
        devs.insert(
            "root".to_string(),
            map(&[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "p"),
                ("size", "64MiB"),
            ]),
        );
        assert_eq!(root_disk(&devs), Ok(Some(("p".into(), Some(64 << 20)))));
        devs.insert(
            "data".to_string(),
            map(&[("type", "disk"), ("path", "/data")]),
        );
        assert!(root_disk(&devs).is_ok(), "other disks are not root disks");
        devs.insert("r2".to_string(), map(&[("type", "disk"), ("path", "/")]));
        assert!(root_disk(&devs).is_err(), "two root disks");
        devs.remove("r2");
        devs.insert(
            "root".to_string(),
            map(&[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "p"),
                ("readonly", "true"),
            ]),
        );
        assert!(root_disk(&devs).is_err(), "unknown key");
        devs.insert("root".to_string(), map(&[("type", "disk"), ("path", "/")]));
        assert!(root_disk(&devs).is_err(), "no pool");
        assert!(check_volume_config(&map(&[("size", "1GiB")])).is_ok());
        assert!(check_volume_config(&map(&[("shift", "true")])).is_err());
    }
}
