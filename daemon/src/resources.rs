//! The host's hardware for `GET /1.0/resources`, read from `/proc` and `/sys` under a root
//! (`/` in the daemon, a fixture tree in tests). Reading only: nothing here changes the
//! host. What cannot be read is left out or zero, never an error: a host without DMI or a
//! NUMA layout still answers.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ctl_api::resources::{
    CpuCore, CpuSocket, CpuThread, NetworkCard, NetworkPort, Resources, ResourcesCpu,
    ResourcesMemory, ResourcesNetwork, ResourcesStorage, ResourcesSystem, StorageDisk,
    StoragePartition,
};

fn read(root: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_num(root: &Path, rel: &str) -> Option<u64> {
    read(root, rel)?.parse().ok()
}

/// Everything, for the host whose `/proc` and `/sys` are under `root`.
pub fn collect(root: &Path) -> Resources {
    let cpuinfo = read(root, "proc/cpuinfo").unwrap_or_default();
    Resources {
        cpu: cpu(root, &cpuinfo),
        memory: memory(&read(root, "proc/meminfo").unwrap_or_default()),
        network: network(root),
        storage: storage(root),
        system: system(root, &cpuinfo),
        ..Default::default()
    }
}

/// One `processor` block of `/proc/cpuinfo`.
#[derive(Debug, Default, Clone, PartialEq)]
struct Processor {
    id: i64,
    socket: u64,
    core: u64,
    die: u64,
    model: String,
    vendor: String,
    mhz: u64,
    flags: Vec<String>,
}

/// The `processor` blocks of `/proc/cpuinfo` (x86's keys; others give what they have).
fn processors(cpuinfo: &str) -> Vec<Processor> {
    let mut out = Vec::new();
    for block in cpuinfo.split("\n\n") {
        let fields: BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let Some(id) = fields.get("processor").and_then(|v| v.parse().ok()) else {
            continue;
        };
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        out.push(Processor {
            id,
            socket: num("physical id").unwrap_or(0),
            core: num("core id").unwrap_or(u64::try_from(id).unwrap_or(0)),
            die: 0,
            model: fields
                .get("model name")
                .or_else(|| fields.get("cpu model"))
                .unwrap_or(&"")
                .to_string(),
            vendor: fields.get("vendor_id").unwrap_or(&"").to_string(),
            mhz: fields
                .get("cpu MHz")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|f| f as u64)
                .unwrap_or(0),
            flags: fields
                .get("flags")
                .map(|f| f.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    out
}

fn cpu(root: &Path, cpuinfo: &str) -> ResourcesCpu {
    let procs = processors(cpuinfo);
    let mut sockets: BTreeMap<u64, CpuSocket> = BTreeMap::new();
    for p in &procs {
        let online = p.id == 0
            || read(root, &format!("sys/devices/system/cpu/cpu{}/online", p.id))
                .is_none_or(|v| v == "1");
        let s = sockets.entry(p.socket).or_insert_with(|| CpuSocket {
            name: p.model.clone(),
            vendor: p.vendor.clone(),
            socket: p.socket,
            frequency: p.mhz,
            ..Default::default()
        });
        let core = match s.cores.iter_mut().position(|c| c.core == p.core) {
            Some(i) => &mut s.cores[i],
            None => {
                s.cores.push(CpuCore {
                    core: p.core,
                    die: p.die,
                    flags: p.flags.clone(),
                    ..Default::default()
                });
                let last = s.cores.len() - 1;
                &mut s.cores[last]
            }
        };
        let thread = core.threads.len() as u64;
        core.threads.push(CpuThread {
            id: p.id,
            thread,
            online,
            ..Default::default()
        });
    }
    ResourcesCpu {
        architecture: std::env::consts::ARCH.to_string(),
        total: procs.len() as u64,
        sockets: sockets.into_values().collect(),
    }
}

fn memory(meminfo: &str) -> ResourcesMemory {
    let kib: BTreeMap<&str, u64> = meminfo
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    let get = |k: &str| kib.get(k).copied().unwrap_or(0);
    let total = get("MemTotal") * 1024;
    let available = match kib.get("MemAvailable") {
        Some(a) => a * 1024,
        None => (get("MemFree") + get("Buffers") + get("Cached")) * 1024,
    };
    let page = get("Hugepagesize") * 1024;
    ResourcesMemory {
        hugepages_total: get("HugePages_Total") * page,
        hugepages_used: get("HugePages_Total").saturating_sub(get("HugePages_Free")) * page,
        hugepages_size: page,
        used: total.saturating_sub(available),
        total,
    }
}

/// The links backed by a device (not `devices/virtual`), one card per device.
fn network(root: &Path) -> ResourcesNetwork {
    let dir = root.join("sys/class/net");
    let mut cards: BTreeMap<String, NetworkCard> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return ResourcesNetwork::default();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let rel = format!("sys/class/net/{name}");
        let Ok(device) = fs::canonicalize(root.join(&rel).join("device")) else {
            continue;
        };
        if device.to_string_lossy().contains("/devices/virtual/") {
            continue;
        }
        let driver = fs::read_link(root.join(&rel).join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        // The PCI address is the first path component that looks like one.
        let pci_address = device
            .iter()
            .rev()
            .map(|c| c.to_string_lossy().into_owned())
            .find(|c| c.len() == 12 && c.as_bytes().get(4) == Some(&b':'))
            .unwrap_or_default();
        let card = cards
            .entry(device.to_string_lossy().into_owned())
            .or_insert_with(|| NetworkCard {
                driver,
                pci_address,
                numa_node: read_num(root, &format!("{rel}/device/numa_node")).unwrap_or(0),
                ports: Vec::new(),
            });
        card.ports.push(NetworkPort {
            port: card.ports.len() as u64,
            address: read(root, &format!("{rel}/address")).unwrap_or_default(),
            protocol: "ethernet".into(),
            link_detected: read(root, &format!("{rel}/carrier")).as_deref() == Some("1"),
            link_speed: read(root, &format!("{rel}/speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
            id: name,
        });
    }
    let cards: Vec<NetworkCard> = cards.into_values().collect();
    ResourcesNetwork {
        total: cards.len() as u64,
        cards,
    }
}

/// Whether block device `name` is a disk worth listing.
fn is_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "dm-", "md", "sr", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn storage(root: &Path) -> ResourcesStorage {
    let Ok(entries) = fs::read_dir(root.join("sys/block")) else {
        return ResourcesStorage::default();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_disk(n))
        .collect();
    names.sort();
    let disks: Vec<StorageDisk> = names
        .into_iter()
        .map(|name| {
            let rel = format!("sys/block/{name}");
            let sectors = |rel: &str| read_num(root, &format!("{rel}/size")).unwrap_or(0) * 512;
            let mut partitions: Vec<StoragePartition> = fs::read_dir(root.join(&rel))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|p| p.starts_with(&name))
                        .map(|p| {
                            let prel = format!("{rel}/{p}");
                            StoragePartition {
                                device: read(root, &format!("{prel}/dev")).unwrap_or_default(),
                                read_only: read(root, &format!("{prel}/ro")).as_deref()
                                    == Some("1"),
                                size: sectors(&prel),
                                partition: read_num(root, &format!("{prel}/partition"))
                                    .unwrap_or(0),
                                id: p,
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            partitions.sort_by_key(|p| p.partition);
            let rotational = read(root, &format!("{rel}/queue/rotational")).as_deref() == Some("1");
            StorageDisk {
                device: read(root, &format!("{rel}/dev")).unwrap_or_default(),
                model: read(root, &format!("{rel}/device/model")).unwrap_or_default(),
                kind: disk_kind(&name).to_string(),
                read_only: read(root, &format!("{rel}/ro")).as_deref() == Some("1"),
                size: sectors(&rel),
                removable: read(root, &format!("{rel}/removable")).as_deref() == Some("1"),
                numa_node: read_num(root, &format!("{rel}/device/numa_node")).unwrap_or(0),
                block_size: read_num(root, &format!("{rel}/queue/logical_block_size"))
                    .unwrap_or(512),
                rpm: u64::from(rotational),
                serial: read(root, &format!("{rel}/device/serial")).unwrap_or_default(),
                partitions,
                id: name,
            }
        })
        .collect();
    ResourcesStorage {
        total: disks.len() as u64,
        disks,
    }
}

/// The bus a disk hangs off, from its kernel name.
fn disk_kind(name: &str) -> &'static str {
    if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("vd") {
        "virtio"
    } else if name.starts_with("sd") {
        "scsi"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else {
        ""
    }
}

fn system(root: &Path, cpuinfo: &str) -> ResourcesSystem {
    let dmi = |f: &str| read(root, &format!("sys/class/dmi/id/{f}")).unwrap_or_default();
    let virtual_machine = processors(cpuinfo)
        .first()
        .is_some_and(|p| p.flags.iter().any(|f| f == "hypervisor"));
    ResourcesSystem {
        uuid: dmi("product_uuid"),
        vendor: dmi("sys_vendor"),
        product: dmi("product_name"),
        family: dmi("product_family"),
        version: dmi("product_version"),
        sku: dmi("product_sku"),
        serial: dmi("product_serial"),
        kind: if virtual_machine {
            "virtual-machine"
        } else {
            "physical"
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\n\
        cpu MHz\t\t: 2400.000\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu sse hypervisor\n\n\
        processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\ncpu MHz\t\t: 2400.000\n\
        physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu sse hypervisor\n\n\
        processor\t: 2\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon X\ncpu MHz\t\t: 2400.000\n\
        physical id\t: 1\ncore id\t\t: 3\nflags\t\t: fpu sse hypervisor\n";

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn cpus_group_by_socket_core_and_thread() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(root.path(), "sys/devices/system/cpu/cpu1/online", "1\n");
        write(root.path(), "sys/devices/system/cpu/cpu2/online", "0\n");
        let c = cpu(root.path(), CPUINFO);
        assert_eq!(c.total, 3);
        assert_eq!(c.sockets.len(), 2);
        let s0 = &c.sockets[0];
        assert_eq!(
            (s0.name.as_str(), s0.vendor.as_str(), s0.frequency),
            ("Xeon X", "GenuineIntel", 2400)
        );
        assert_eq!(s0.cores.len(), 1);
        let threads: Vec<(i64, u64, bool)> = s0.cores[0]
            .threads
            .iter()
            .map(|t| (t.id, t.thread, t.online))
            .collect();
        assert_eq!(threads, vec![(0, 0, true), (1, 1, true)]);
        assert_eq!(c.sockets[1].cores[0].core, 3);
        assert!(!c.sockets[1].cores[0].threads[0].online);
        assert_eq!(system(root.path(), CPUINFO).kind, "virtual-machine");
    }

    #[test]
    fn memory_is_in_bytes_and_used_is_what_is_not_available() {
        let m = memory(
            "MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n\
             HugePages_Total:       4\nHugePages_Free:        1\nHugepagesize:       2048 kB\n",
        );
        assert_eq!(m.total, 2048 * 1024);
        assert_eq!(m.used, 1024 * 1024);
        assert_eq!(m.hugepages_size, 2048 * 1024);
        assert_eq!(m.hugepages_total, 4 * 2048 * 1024);
        assert_eq!(m.hugepages_used, 3 * 2048 * 1024);
        // Without MemAvailable (old kernels): free + buffers + cached.
        let m = memory("MemTotal: 10 kB\nMemFree: 2 kB\nBuffers: 1 kB\nCached: 3 kB\n");
        assert_eq!(m.used, 4 * 1024);
    }

    #[test]
    fn disks_leave_out_loop_and_ram_devices_and_list_partitions() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = root.path();
        write(r, "sys/block/vda/size", "2097152\n");
        write(r, "sys/block/vda/dev", "254:0\n");
        write(r, "sys/block/vda/ro", "0\n");
        write(r, "sys/block/vda/queue/logical_block_size", "4096\n");
        write(r, "sys/block/vda/vda1/size", "2048\n");
        write(r, "sys/block/vda/vda1/partition", "1\n");
        write(r, "sys/block/vda/vda1/dev", "254:1\n");
        write(r, "sys/block/loop0/size", "8\n");
        write(r, "sys/block/zram0/size", "8\n");
        let s = storage(r);
        assert_eq!(s.total, 1);
        let d = &s.disks[0];
        assert_eq!(
            (d.id.as_str(), d.kind.as_str(), d.device.as_str()),
            ("vda", "virtio", "254:0")
        );
        assert_eq!(d.size, 1 << 30);
        assert_eq!(d.block_size, 4096);
        assert_eq!(d.partitions.len(), 1);
        assert_eq!(d.partitions[0].size, 2048 * 512);
    }

    #[test]
    fn the_real_host_answers() {
        let r = collect(Path::new("/"));
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        assert!(r.cpu.total as usize >= online, "{:?}", r.cpu);
        assert!(r.memory.total > 0 && r.memory.used <= r.memory.total);
    }
}
