//! Progress of long image work (builds, downloads, unpacking), reported into the
//! operation's metadata the way Incus does it, so `ctl`, `lxc` and dashboards can show it.
//!
//! The metadata carries Incus' human string under `download_progress` (what `lxc launch`
//! prints) and a structured `progress` object (`stage`, `percent`) that `ctl` draws as a
//! bar. Reporting is cheap and never fails; without an operation it only logs.

use serde_json::json;

use crate::operations::OpHandle;

/// Where progress goes: an operation's metadata, or nowhere.
#[derive(Clone, Default)]
pub struct Progress {
    op: Option<OpHandle>,
}

impl Progress {
    /// Progress that is not reported anywhere (work done outside an operation).
    pub fn none() -> Self {
        Progress { op: None }
    }

    /// Progress reported into `op`'s metadata.
    pub fn for_op(op: OpHandle) -> Self {
        Progress { op: Some(op) }
    }

    /// Report the current `stage` and, when known, how far along it is (0–100).
    pub fn report(&self, stage: &str, percent: Option<u8>) {
        tracing::debug!(stage, ?percent, "progress");
        let Some(op) = &self.op else { return };
        let text = match percent {
            Some(p) => format!("{stage}: {}%", p.min(100)),
            None => stage.to_string(),
        };
        op.set_metadata(json!({
            "download_progress": text,
            "progress": { "stage": stage, "percent": percent.map(|p| p.min(100)) },
        }));
    }

    /// Report a byte count against an optional total (downloads, uploads, unpacking).
    pub fn bytes(&self, stage: &str, done: u64, total: Option<u64>) {
        let percent = total
            .filter(|t| *t > 0)
            .map(|t| ((done.min(t) * 100) / t) as u8);
        self.report(stage, percent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::Operations;
    use ctl_api::OperationClass;
    use std::collections::BTreeMap;

    #[test]
    fn reports_into_operation_metadata() {
        let ops = Operations::default();
        let (handle, _) = ops.create(
            OperationClass::Task,
            "t",
            BTreeMap::new(),
            serde_json::Value::Null,
            None,
        );
        let p = Progress::for_op(handle.clone());
        p.bytes("rootfs", 50, Some(200));
        let md = handle.metadata();
        assert_eq!(md["download_progress"], "rootfs: 25%");
        assert_eq!(md["progress"]["stage"], "rootfs");
        assert_eq!(md["progress"]["percent"], 25);
        p.report("unpacking", None);
        let md = handle.metadata();
        assert_eq!(md["download_progress"], "unpacking");
        assert!(md["progress"]["percent"].is_null());
        Progress::none().report("ignored", Some(3));
    }
}
