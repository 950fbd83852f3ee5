//! `GET /1.0/resources` against the real host, through `ctl`, `lxc` and `incus`.

use ctl_tests::clients::Cli;
use ctl_tests::{Daemon, require_root};

fn processors() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[test]
fn resources_describe_this_host() {
    if !require_root("resources_describe_this_host") {
        return;
    }
    let d = Daemon::start();
    let (code, v) = d.http("GET", "/1.0/resources", None);
    assert_eq!(code, 200, "{v}");
    let r = &v["metadata"];
    assert_eq!(r["cpu"]["total"], processors(), "{r}");
    let threads: usize = r["cpu"]["sockets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["cores"].as_array().into_iter().flatten())
        .map(|c| c["threads"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(threads as u64, processors());
    assert_eq!(r["memory"]["total"], mem_total());
    // This VM's disk and NIC (virtio) are there; its bridges and veths are not cards.
    let disks: Vec<&str> = r["storage"]["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(!disks.iter().any(|d| d.starts_with("loop")), "{disks:?}");
    let ports: Vec<&str> = r["network"]["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(!ports.contains(&"lo"), "{ports:?}");
    assert!(!ports.iter().any(|p| p.starts_with("veth")), "{ports:?}");

    let text = d.ok(&["info", "--resources"]);
    assert!(
        text.contains(&format!("{} threads", processors())),
        "{text}"
    );
    assert!(text.contains("Memory:"), "{text}");
    for cli in [Cli::lxc(&d), Cli::incus(&d)].into_iter().flatten() {
        let out = cli.ok(&["info", "--resources"]);
        assert!(out.contains("CPU"), "{out}");
        assert!(out.to_lowercase().contains("memory"), "{out}");
    }
}
