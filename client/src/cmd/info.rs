//! `ctl info`: one instance's details, state and resource usage (processes, disk, CPU,
//! memory and swap, network interfaces with their addresses and counters).

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use ctl_api::Instance;

use super::Error;
use crate::Client;
use crate::output::human_size;
use crate::usage::{self, Network, State};

/// Arguments of `ctl info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Instance name (none with `--resources`)
    #[arg(required_unless_present = "resources")]
    pub name: Option<String>,
    /// Show the server's hardware instead (`GET /1.0/resources`)
    #[arg(long, conflicts_with_all = ["name", "show_log"])]
    pub resources: bool,
    /// Also print the instance's monitor log (`lxc.log` to LXD clients)
    #[arg(long)]
    pub show_log: bool,
}

/// A byte count from the API (negative reads as 0) in IEC units.
fn bytes(n: i64) -> String {
    human_size(u64::try_from(n).unwrap_or(0))
}

/// The `ctl info --resources` text.
pub fn render_resources(r: &ctl_api::Resources) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "CPU ({}, {} threads):", r.cpu.architecture, r.cpu.total);
    for s in &r.cpu.sockets {
        let threads: usize = s.cores.iter().map(|c| c.threads.len()).sum();
        let _ = writeln!(
            t,
            "  Socket {}: {} ({} cores, {threads} threads)",
            s.socket,
            if s.name.is_empty() {
                "unknown"
            } else {
                &s.name
            },
            s.cores.len()
        );
    }
    let _ = writeln!(
        t,
        "Memory:\n  Used: {}\n  Total: {}",
        human_size(r.memory.used),
        human_size(r.memory.total)
    );
    if !r.network.cards.is_empty() {
        let _ = writeln!(t, "Network cards:");
        for c in &r.network.cards {
            for p in &c.ports {
                let _ = writeln!(
                    t,
                    "  {} ({}){}{}",
                    p.id,
                    if c.driver.is_empty() {
                        "unknown driver"
                    } else {
                        &c.driver
                    },
                    if p.address.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", p.address)
                    },
                    if p.link_detected {
                        ", link up"
                    } else {
                        ", no link"
                    }
                );
            }
        }
    }
    if !r.storage.disks.is_empty() {
        let _ = writeln!(t, "Disks:");
        for d in &r.storage.disks {
            let _ = writeln!(
                t,
                "  {} ({}): {}{}",
                d.id,
                if d.kind.is_empty() { "disk" } else { &d.kind },
                human_size(d.size),
                if d.read_only { ", read-only" } else { "" }
            );
        }
    }
    t
}

/// The `ctl info` text for an instance and its state.
pub fn render(instance: &Instance, state: &State) -> String {
    let mut text = String::new();
    let or_never = |s: &str| {
        if s.is_empty() || s.starts_with("0001-01-01") {
            "never".to_string()
        } else {
            s.to_string()
        }
    };
    let _ = writeln!(text, "Name: {}", instance.name);
    let _ = writeln!(text, "Status: {}", state.status.to_uppercase());
    let _ = writeln!(
        text,
        "Type: {}",
        if super::list::is_privileged(instance) {
            "container (privileged)"
        } else {
            "container"
        }
    );
    let _ = writeln!(text, "Architecture: {}", instance.architecture);
    // The cluster member it is on (a standalone server says `none`, as Incus does).
    if !instance.location.is_empty() && instance.location != "none" {
        let _ = writeln!(text, "Location: {}", instance.location);
    }
    if state.pid > 0 {
        let _ = writeln!(text, "PID: {}", state.pid);
    }
    let _ = writeln!(text, "Created: {}", or_never(&instance.created_at));
    let _ = writeln!(text, "Last Used: {}", or_never(&instance.last_used_at));
    let _ = writeln!(text, "\nResources:");
    // A negative count means unknown (ctld sends -1 for a stopped instance).
    if state.processes >= 0 {
        let _ = writeln!(text, "  Processes: {}", state.processes);
    }
    if !state.disk.is_empty() {
        let _ = writeln!(text, "  Disk usage:");
        for (device, disk) in &state.disk {
            let _ = writeln!(text, "    {device}: {}", bytes(disk.usage));
        }
    }
    let _ = writeln!(text, "  CPU usage:");
    let _ = writeln!(
        text,
        "    CPU usage (in seconds): {}",
        state.cpu.usage.max(0) / 1_000_000_000
    );
    let memory = &state.memory;
    let _ = writeln!(text, "  Memory usage:");
    let _ = writeln!(text, "    Memory (current): {}", bytes(memory.usage));
    let _ = writeln!(text, "    Memory (peak): {}", bytes(memory.usage_peak));
    if memory.swap_usage > 0 {
        let _ = writeln!(text, "    Swap (current): {}", bytes(memory.swap_usage));
    }
    if memory.swap_usage_peak > 0 {
        let _ = writeln!(text, "    Swap (peak): {}", bytes(memory.swap_usage_peak));
    }
    if !state.network.is_empty() {
        let _ = writeln!(text, "  Network usage:");
        for (name, interface) in &state.network {
            render_interface(&mut text, name, interface);
        }
    }
    let config: Vec<_> = instance
        .config
        .iter()
        .filter(|(key, _)| !key.starts_with("volatile."))
        .collect();
    if !config.is_empty() {
        let _ = writeln!(text, "\nConfig:");
        for (key, value) in config {
            let _ = writeln!(text, "  {key}: {value}");
        }
    }
    text
}

/// One interface under `Network usage:`, as `incus info` shows it; fields the server left
/// out are not shown.
fn render_interface(text: &mut String, name: &str, interface: &Network) {
    let _ = writeln!(text, "    {name}:");
    let mut line = |label: &str, value: &str| {
        if !value.is_empty() {
            let _ = writeln!(text, "      {label}: {value}");
        }
    };
    line("Type", &interface.kind);
    line("State", &interface.state.to_uppercase());
    line("Host interface", &interface.host_name);
    line("MAC address", &interface.hwaddr);
    if interface.mtu > 0 {
        line("MTU", &interface.mtu.to_string());
    }
    if let Some(counters) = &interface.counters {
        line("Bytes received", &bytes(counters.bytes_received));
        line("Bytes sent", &bytes(counters.bytes_sent));
        line("Packets received", &counters.packets_received.to_string());
        line("Packets sent", &counters.packets_sent.to_string());
    }
    if !interface.addresses.is_empty() {
        let _ = writeln!(text, "      IP addresses:");
        for address in &interface.addresses {
            let mut shown = address.address.clone();
            if !address.netmask.is_empty() {
                let _ = write!(shown, "/{}", address.netmask);
            }
            if !address.scope.is_empty() {
                let _ = write!(shown, " ({})", address.scope);
            }
            let family = format!("{}:", address.family);
            let _ = writeln!(text, "        {family:<7}{shown}");
        }
    }
}

/// Show one instance.
pub async fn run(client: &Client, args: &InfoArgs, out: &mut dyn Write) -> Result<(), Error> {
    let Some(name) = args.name.as_deref() else {
        let r: ctl_api::Resources = client.get("/1.0/resources").await?;
        out.write_all(render_resources(&r).as_bytes())?;
        return Ok(());
    };
    let instance = client.instance(name).await?;
    let raw = client.instance_state_value(name).await?;
    let state: State = usage::decode("instance state", raw)?;
    out.write_all(render(&instance, &state).as_bytes())?;
    if args.show_log {
        let path = format!(
            "/1.0/instances/{}/logs/lxc.log",
            crate::client::encode_segment(name)
        );
        let log = super::console::raw_get(client, &path).await?;
        writeln!(out, "\nLog:\n")?;
        out.write_all(&log)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_text() {
        let instance: Option<Instance> = serde_json::from_value(json!({
            "name": "c1", "status": "Running", "status_code": 103, "type": "container",
            "architecture": "x86_64", "created_at": "2026-01-02T03:04:05Z", "last_used_at": "",
            "config": {"limits.memory": "64MiB", "volatile.base_image": "abc"}
        }))
        .ok();
        let state: Option<State> = usage::decode("state", json!({
            "status": "Running", "status_code": 103, "pid": 77, "processes": 2,
            "cpu": {"usage": 2_500_000_000_i64}, "memory": {"usage": 1_289_748, "usage_peak": 2_097_152}
        }))
        .ok();
        let (Some(instance), Some(state)) = (instance, state) else {
            panic!("golden info does not decode");
        };
        assert_eq!(
            render(&instance, &state),
            "Name: c1\nStatus: RUNNING\nType: container\nArchitecture: x86_64\nPID: 77\n\
             Created: 2026-01-02T03:04:05Z\nLast Used: never\n\nResources:\n  Processes: 2\n\
             \x20 CPU usage:\n    CPU usage (in seconds): 2\n  Memory usage:\n\
             \x20   Memory (current): 1.23MiB\n    Memory (peak): 2.00MiB\n\n\
             Config:\n  limits.memory: 64MiB\n"
        );
    }

    #[test]
    fn a_clustered_instance_names_its_member() {
        let instance = |location: &str| -> Instance {
            serde_json::from_value(json!({
                "name": "c1", "status": "Stopped", "status_code": 102, "type": "container",
                "architecture": "x86_64", "created_at": "", "location": location
            }))
            .expect("instance")
        };
        let state = State::default();
        let text = render(&instance("node2"), &state);
        assert!(
            text.starts_with(
                "Name: c1\nStatus: \nType: container\nArchitecture: x86_64\nLocation: node2\n"
            ),
            "{text}"
        );
        assert!(!render(&instance("none"), &state).contains("Location"));
    }

    /// A running instance's state as Incus reports it, with disk, swap and network.
    fn golden_state() -> serde_json::Value {
        json!({
            "status": "Running", "status_code": 103, "pid": 77, "processes": 5,
            "cpu": {"usage": 61_000_000_000_i64},
            "memory": {"usage": 10_485_760, "usage_peak": 20_971_520,
                       "swap_usage": 4096, "swap_usage_peak": 0, "total": 0},
            "disk": {"root": {"usage": 1_289_748, "total": 0}},
            "network": {
                "eth0": {
                    "addresses": [
                        {"family": "inet", "address": "10.0.0.2", "netmask": "24", "scope": "global"},
                        {"family": "inet6", "address": "fd42::2", "netmask": "64", "scope": "global"}
                    ],
                    "counters": {"bytes_received": 123_456, "bytes_sent": 2048,
                                 "packets_received": 100, "packets_sent": 20,
                                 "errors_received": 0, "errors_sent": 0},
                    "hwaddr": "00:16:3e:aa:bb:cc", "host_name": "veth1234", "mtu": 1500,
                    "state": "up", "type": "broadcast"
                },
                "lo": {
                    "addresses": [{"family": "inet", "address": "127.0.0.1", "netmask": "8",
                                   "scope": "local"}],
                    "mtu": 65536, "state": "up", "type": "loopback"
                }
            }
        })
    }

    #[test]
    fn info_text_with_disk_swap_and_network() {
        let instance: Option<Instance> = serde_json::from_value(json!({
            "name": "web", "status": "Running", "status_code": 103, "type": "container",
            "architecture": "x86_64", "created_at": "2026-01-02T03:04:05Z",
            "last_used_at": "2026-01-02T03:04:06Z", "config": {}
        }))
        .ok();
        let state: Option<State> = usage::decode("state", golden_state()).ok();
        let (Some(instance), Some(state)) = (instance, state) else {
            panic!("golden info does not decode");
        };
        let expected = "\
Name: web
Status: RUNNING
Type: container
Architecture: x86_64
PID: 77
Created: 2026-01-02T03:04:05Z
Last Used: 2026-01-02T03:04:06Z

Resources:
  Processes: 5
  Disk usage:
    root: 1.23MiB
  CPU usage:
    CPU usage (in seconds): 61
  Memory usage:
    Memory (current): 10.00MiB
    Memory (peak): 20.00MiB
    Swap (current): 4.00KiB
  Network usage:
    eth0:
      Type: broadcast
      State: UP
      Host interface: veth1234
      MAC address: 00:16:3e:aa:bb:cc
      MTU: 1500
      Bytes received: 120.56KiB
      Bytes sent: 2.00KiB
      Packets received: 100
      Packets sent: 20
      IP addresses:
        inet:  10.0.0.2/24 (global)
        inet6: fd42::2/64 (global)
    lo:
      Type: loopback
      State: UP
      MTU: 65536
      IP addresses:
        inet:  127.0.0.1/8 (local)
";
        assert_eq!(render(&instance, &state), expected);
    }

    #[test]
    fn state_with_only_some_fields_renders() {
        let instance: Option<Instance> = serde_json::from_value(json!({
            "name": "c1", "status": "Stopped", "status_code": 102, "type": "container",
            "architecture": "x86_64", "created_at": ""
        }))
        .ok();
        let state: Option<State> = usage::decode(
            "state",
            json!({"status": "Stopped", "processes": -1, "network": null}),
        )
        .ok();
        let (Some(instance), Some(state)) = (instance, state) else {
            panic!("partial state does not decode");
        };
        let text = render(&instance, &state);
        assert!(text.contains("Status: STOPPED\n"), "{text}");
        assert!(!text.contains("Processes"), "{text}");
        assert!(text.contains("    Memory (current): 0B\n"), "{text}");
        assert!(!text.contains("Disk usage"), "{text}");
        assert!(!text.contains("Network usage"), "{text}");
        assert!(!text.contains("Swap"), "{text}");
    }
}
