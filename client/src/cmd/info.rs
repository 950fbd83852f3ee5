//! `ctl info`: one instance's details, state and resource usage.

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use ctl_api::{Instance, InstanceState};

use super::Error;
use crate::Client;
use crate::output::human_size;

/// Arguments of `ctl info`.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Instance name
    pub name: String,
}

/// The `ctl info` text for an instance and its state.
pub fn render(instance: &Instance, state: &InstanceState) -> String {
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
    let _ = writeln!(text, "Type: container");
    let _ = writeln!(text, "Architecture: {}", instance.architecture);
    if state.pid > 0 {
        let _ = writeln!(text, "PID: {}", state.pid);
    }
    let _ = writeln!(text, "Created: {}", or_never(&instance.created_at));
    let _ = writeln!(text, "Last Used: {}", or_never(&instance.last_used_at));
    let _ = writeln!(text, "\nResources:");
    let _ = writeln!(text, "  Processes: {}", state.processes);
    let _ = writeln!(text, "  CPU usage:");
    let _ = writeln!(
        text,
        "    CPU usage (in seconds): {}",
        state.cpu.usage.max(0) / 1_000_000_000
    );
    let _ = writeln!(text, "  Memory usage:");
    let bytes = |n: i64| human_size(u64::try_from(n).unwrap_or(0));
    let _ = writeln!(text, "    Memory (current): {}", bytes(state.memory.usage));
    let _ = writeln!(
        text,
        "    Memory (peak): {}",
        bytes(state.memory.usage_peak)
    );
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

/// Show one instance.
pub async fn run(client: &Client, args: &InfoArgs, out: &mut dyn Write) -> Result<(), Error> {
    let instance = client.instance(&args.name).await?;
    let state = client.instance_state(&args.name).await?;
    out.write_all(render(&instance, &state).as_bytes())?;
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
        let state: Option<InstanceState> = serde_json::from_value(json!({
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
}
