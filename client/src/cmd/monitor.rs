//! `ctl monitor`: follow the daemon's event stream (`/1.0/events`) and print each event,
//! until Ctrl-C, SIGTERM or the daemon closing the stream.

use std::fmt::Write as _;
use std::io::Write;

use clap::{Args, ValueEnum};
use ctl_api::{Event, EventLifecycle, EventLogging, EventType, Operation};
use serde_json::Value;

use super::Error;
use crate::Client;
use crate::events::next_event;

/// Arguments of `ctl monitor`.
#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// The server to watch, as REMOTE: (default: the default remote)
    #[arg(value_name = "REMOTE:")]
    pub remote: Option<String>,
    /// Event type to show (repeatable; default: all)
    #[arg(long = "type", value_name = "TYPE", value_enum)]
    pub types: Vec<MonitorType>,
    /// Output format
    #[arg(long, short = 'f', value_enum, default_value_t = MonitorFormat::Pretty)]
    pub format: MonitorFormat,
}

/// The event types, as `--type` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MonitorType {
    /// Operations created or changing status
    Operation,
    /// Instances and images created, started, stopped, deleted...
    Lifecycle,
    /// The daemon's log at info and above
    Logging,
}

impl MonitorType {
    /// The API's name for this type.
    pub fn api(self) -> EventType {
        match self {
            MonitorType::Operation => EventType::Operation,
            MonitorType::Lifecycle => EventType::Lifecycle,
            MonitorType::Logging => EventType::Logging,
        }
    }
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MonitorFormat {
    /// One readable line per event
    #[default]
    Pretty,
    /// One compact JSON object per line
    Json,
    /// YAML documents separated by `---`
    Yaml,
}

/// Follow the events and write each one to `out` as it arrives.
pub async fn run(client: &Client, args: &MonitorArgs, out: &mut dyn Write) -> Result<(), Error> {
    let mut types: Vec<EventType> = args.types.iter().map(|t| t.api()).collect();
    types.sort();
    types.dedup();
    let mut socket = client.events(&types).await?;
    let stop = stop_requested();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            event = next_event(&mut socket) => event?,
            () = &mut stop => {
                // Say goodbye, but never wait long for a daemon that is not listening.
                let close = socket.close(None);
                let _ = tokio::time::timeout(std::time::Duration::from_millis(200), close).await;
                return Ok(());
            }
        };
        let Some(event) = event else {
            return Ok(());
        };
        let text = render(&event, args.format)?;
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`ctl monitor | head`): that is the end, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error::Stdout(e)),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One event in `format`, ending with a newline.
pub fn render(event: &Value, format: MonitorFormat) -> Result<String, Error> {
    Ok(match format {
        MonitorFormat::Json => format!("{event}\n"),
        MonitorFormat::Yaml => {
            let yaml = serde_yaml_ng::to_string(event)
                .map_err(|e| Error::Output(crate::output::Error::Yaml(e)))?;
            format!("---\n{yaml}")
        }
        MonitorFormat::Pretty => format!("{}\n", pretty(event)),
    })
}

/// `TIMESTAMP TYPE SUMMARY` on one line: for lifecycle events the action and the source, for
/// operations the status, the description and the URL, for log records the level, the
/// message and the fields.
pub fn pretty(event: &Value) -> String {
    let Ok(e) = serde_json::from_value::<Event>(event.clone()) else {
        return event.to_string();
    };
    let mut line = format!("{} {}", e.timestamp, e.kind);
    let metadata = e.metadata;
    let summary = match e.kind.parse::<EventType>() {
        Ok(EventType::Lifecycle) => serde_json::from_value::<EventLifecycle>(metadata.clone())
            .ok()
            .map(|l| {
                let mut s = format!("{} {}", l.action, l.source);
                for (k, v) in &l.context {
                    let _ = write!(s, " {k}={}", field(v));
                }
                s
            }),
        Ok(EventType::Operation) => serde_json::from_value::<Operation>(metadata.clone())
            .ok()
            .map(|o| {
                let mut s = format!("{} {:?} /1.0/operations/{}", o.status, o.description, o.id);
                if !o.err.is_empty() {
                    let _ = write!(s, " err={:?}", o.err);
                }
                s
            }),
        Ok(EventType::Logging) => serde_json::from_value::<EventLogging>(metadata.clone())
            .ok()
            .map(|l| {
                let mut s = format!("{} {}", l.level, l.message);
                for (k, v) in &l.context {
                    let _ = write!(s, " {k}={}", field(&Value::from(v.as_str())));
                }
                s
            }),
        Err(_) => None,
    };
    line.push(' ');
    line.push_str(&summary.unwrap_or_else(|| metadata.to_string()));
    line
}

/// A context value: plain text when it is a word, JSON otherwise.
fn field(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lifecycle() -> Value {
        json!({
            "type": "lifecycle",
            "timestamp": "2026-11-29T00:00:00Z",
            "metadata": {"action": "instance-started", "source": "/1.0/instances/c1",
                         "context": {}, "requestor": null},
            "location": "none",
            "project": "default"
        })
    }

    #[test]
    fn pretty_lines() {
        assert_eq!(
            pretty(&lifecycle()),
            "2026-11-29T00:00:00Z lifecycle instance-started /1.0/instances/c1"
        );
        let exec = json!({
            "type": "lifecycle", "timestamp": "T",
            "metadata": {"action": "instance-exec", "source": "/1.0/instances/c1",
                         "context": {"command": ["sh", "-c", "true"]}}
        });
        assert_eq!(
            pretty(&exec),
            r#"T lifecycle instance-exec /1.0/instances/c1 command=["sh","-c","true"]"#
        );
        let op = json!({
            "type": "operation", "timestamp": "T",
            "metadata": {"id": "42", "class": "task", "description": "Creating instance",
                         "created_at": "T", "updated_at": "T", "status": "Failure",
                         "status_code": 400, "may_cancel": false, "err": "no image"}
        });
        assert_eq!(
            pretty(&op),
            r#"T operation Failure "Creating instance" /1.0/operations/42 err="no image""#
        );
        let log = json!({
            "type": "logging", "timestamp": "T",
            "metadata": {"level": "info", "message": "started",
                         "context": {"instance": "c1", "why": "a b"}}
        });
        assert_eq!(
            pretty(&log),
            r#"T logging info started instance=c1 why="a b""#
        );
        // Unknown types and shapes still print something useful.
        let other = json!({"type": "ovn", "timestamp": "T", "metadata": {"x": 1}});
        assert_eq!(pretty(&other), r#"T ovn {"x":1}"#);
        assert_eq!(pretty(&json!([1])), "[1]");
    }

    #[test]
    fn json_and_yaml() {
        let json_line = render(&lifecycle(), MonitorFormat::Json).unwrap_or_default();
        assert!(json_line.ends_with("}\n") && json_line.lines().count() == 1);
        assert_eq!(
            serde_json::from_str::<Value>(&json_line).ok(),
            Some(lifecycle())
        );
        let yaml = render(&lifecycle(), MonitorFormat::Yaml).unwrap_or_default();
        assert!(yaml.starts_with("---\n"), "{yaml}");
        assert!(yaml.contains("action: instance-started\n"), "{yaml}");
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap_or_default();
        assert_eq!(back, lifecycle());
    }
}
