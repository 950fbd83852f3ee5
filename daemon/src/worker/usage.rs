//! Reading usage figures the kernel exposes outside cgroups: a network namespace's
//! interface counters (`/proc/<pid>/net/dev`), the bytes under a directory, and CPU lists
//! (`0-3,5`). Parsers are pure and unit-tested.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Counters of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Parse `/proc/net/dev`: two header lines, then `name: rx(8 fields) tx(8 fields)`.
pub fn parse_net_dev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            (f.len() >= 16).then(|| NetCounters {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                tx_bytes: f[8],
                tx_packets: f[9],
            })
        })
        .collect()
}

/// Parse a kernel CPU list (`0-3,5`) into sorted CPU numbers; `None` if malformed.
pub fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut out = BTreeSet::new();
    for part in list.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().ok()?);
            }
        }
    }
    Some(out.into_iter().collect())
}

/// Format CPU numbers as a kernel CPU list (`0-2,5`).
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted: Vec<u32> = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Bytes allocated to the files under `dir` (st_blocks × 512), staying on its filesystem,
/// counting hard links once per walk, never following symlinks.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = root.dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev {
                continue;
            }
            if md.nlink() > 1 && !md.is_dir() && !seen.insert(md.ino()) {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0: 98765     100    0    0    0     0          0         0    4321      50    0    0    0     0       0          0
";

    #[test]
    fn net_dev_counters() {
        let c = parse_net_dev(NET_DEV);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[1],
            NetCounters {
                name: "eth0".into(),
                rx_bytes: 98765,
                rx_packets: 100,
                tx_bytes: 4321,
                tx_packets: 50
            }
        );
        assert!(parse_net_dev("garbage").is_empty());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 3]), "0-3,5");
        assert_eq!(format_cpu_list(&[1]), "1");
        assert_eq!(format_cpu_list(&[0, 2]), "0,2");
    }

    #[test]
    fn disk_usage_counts_files() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        std::fs::create_dir(t.path().join("d"))?;
        std::fs::write(t.path().join("d/f"), vec![1u8; 100_000])?;
        let used = disk_usage(t.path());
        assert!(used >= 100_000, "{used}");
        Ok(())
    }
}
