//! Waiting for an operation while showing its progress: the `progress` object ctld puts in
//! an operation's metadata (`stage`, `percent`) drawn as a bar on a terminal, or an
//! Incus-style `*_progress` string (`download_progress`, `evacuation_progress`...). Without
//! a terminal it only waits.

use std::io::Write;
use std::time::Duration;

use ctl_api::Operation;
use serde_json::Value;

use crate::{Client, Error};

/// How often the operation is polled while a bar is shown.
const POLL: Duration = Duration::from_millis(200);

/// The progress line of an operation's metadata: (stage, percent), if it has one.
pub fn progress_of(metadata: &Value) -> Option<(String, Option<u8>)> {
    if let Some(p) = metadata.get("progress") {
        let stage = p.get("stage")?.as_str()?.to_string();
        let percent = p
            .get("percent")
            .and_then(Value::as_u64)
            .map(|v| v.min(100) as u8);
        return Some((stage, percent));
    }
    if let Some(text) = metadata.get("download_progress").and_then(Value::as_str) {
        return Some((text.to_string(), None));
    }
    // Any other `*_progress` string, as Incus' progress renderer reads them.
    metadata
        .as_object()?
        .iter()
        .filter(|(key, _)| key.ends_with("_progress"))
        .find_map(|(_, value)| value.as_str())
        .map(|s| (s.to_string(), None))
}

/// One line of text for a bar `width` cells wide: `stage [#####     ]  42%`.
pub fn render_line(stage: &str, percent: Option<u8>, width: usize) -> String {
    match percent {
        Some(p) => {
            let filled = width * usize::from(p) / 100;
            format!(
                "{stage} [{}{}] {p:>3}%",
                "#".repeat(filled),
                " ".repeat(width - filled)
            )
        }
        None => format!("{stage} ..."),
    }
}

/// Wait for operation `id`; on a terminal (`tty` is stderr), draw its progress meanwhile.
pub async fn wait(
    client: &Client,
    id: &str,
    tty: Option<&mut dyn Write>,
) -> Result<Operation, Error> {
    let Some(term) = tty else {
        return client.wait_operation(id).await;
    };
    let mut last = String::new();
    let result = loop {
        let op: Operation = match client.get(&format!("/1.0/operations/{id}")).await {
            Ok(op) => op,
            Err(e) => break Err(e),
        };
        if op.status_code.is_final() {
            break client.wait_operation(id).await;
        }
        if let Some((stage, percent)) = progress_of(&op.metadata) {
            let line = render_line(&stage, percent, 30);
            if line != last {
                let _ = write!(term, "\r\x1b[2K{line}");
                let _ = term.flush();
                last = line;
            }
        }
        tokio::time::sleep(POLL).await;
    };
    if !last.is_empty() {
        let _ = write!(term, "\r\x1b[2K");
        let _ = term.flush();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_structured_or_incus_progress() {
        assert_eq!(
            progress_of(&json!({"progress": {"stage": "downloading rootfs", "percent": 42}})),
            Some(("downloading rootfs".into(), Some(42)))
        );
        assert_eq!(
            progress_of(&json!({"download_progress": "rootfs: 10% (3MB/s)"})),
            Some(("rootfs: 10% (3MB/s)".into(), None))
        );
        assert_eq!(
            progress_of(&json!({"evacuation_progress": "Stopping \"c1\""})),
            Some(("Stopping \"c1\"".into(), None))
        );
        assert_eq!(progress_of(&json!({"other": "x"})), None);
        assert_eq!(progress_of(&json!(null)), None);
    }

    #[test]
    fn draws_a_bar() {
        assert_eq!(render_line("x", Some(50), 10), "x [#####     ]  50%");
        assert_eq!(render_line("x", Some(100), 4), "x [####] 100%");
        assert_eq!(render_line("unpacking", None, 4), "unpacking ...");
    }
}
