//! The web dashboard in a real browser: Debian's headless `chromium`, driven by
//! `tests/ui/dashboard.mjs` (node + playwright-core from `ui/node_modules`), against a real
//! ctld serving HTTPS on a loopback port. The script logs in with a link from `ctl ui` (or
//! `POST /1.0/ui/login-links`, what it asks for), sees `c1` running, stops it and sees it
//! stopped within 2 s without a reload, starts it, runs a command in the terminal and reads
//! its output, resizes and reads `stty size`, restores a snapshot (a file made after it is
//! gone), launches `c2` from the dialog, renames and deletes it, renders 200 instances in
//! under 1 s, and checks that a foreign `Origin` and a request without the session are
//! refused (403). On failure it writes screenshots of the list and the terminal to
//! `$CTL_TEST_ARTIFACTS` (default `target/ui-artifacts/`).

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, require_root, wait_until};
use serde_json::{Value, json};

/// The whole browser run may take this long (it takes ~15 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the browser test needs that `cargo test` does not bring: node, chromium and
/// `npm ci` in `ui/`. Missing: a skip with the reason, or a failure under `CTL_REQUIRE_ALL`.
fn browser_tools(test: &str) -> bool {
    let root = workspace_root();
    let missing: Vec<String> = [
        ("node", Path::new("/usr/bin/node").to_path_buf()),
        ("chromium", PathBuf::from("/usr/bin/chromium")),
        (
            "playwright-core (run `npm ci` in ui/)",
            root.join("ui/node_modules/playwright-core/package.json"),
        ),
    ]
    .into_iter()
    .filter(|(_, p)| !p.exists())
    .map(|(what, p)| format!("{what} at {}", p.display()))
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CTL_REQUIRE_ALL").is_none(),
        "{test}: missing {}, and CTL_REQUIRE_ALL forbids skipping",
        missing.join(", ")
    );
    eprintln!("SKIP {test}: missing {}", missing.join(", "));
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("CTL_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/ui-artifacts"))
}

/// The `UI-REPORT {json}` lines of the script, by step.
fn reports(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("UI-REPORT "))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect()
}

fn step<'a>(reports: &'a [Value], name: &str) -> &'a Value {
    reports
        .iter()
        .find(|r| r["step"] == name)
        .unwrap_or_else(|| panic!("no report of step {name}: {reports:?}"))
}

/// Run the browser script to its end (or kill its process group after `timeout`):
/// `(exit code, stdout, stderr)`.
fn run_script(args: &[String], timeout: Duration) -> (i32, String, String) {
    let script = workspace_root().join("tests/ui/dashboard.mjs");
    let mut child = Command::new("/usr/bin/node")
        .arg(&script)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: node and the chromium it starts end together.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("node {}: {e}", script.display()));
    let pid = child.id() as i32;
    let mut stderr = child.stderr.take().map(BufReader::new);
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let stdout = child.stdout.take().map(BufReader::new);
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stdout
            .into_iter()
            .flat_map(|s| s.lines())
            .map_while(Result::ok)
        {
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = Instant::now();
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if started.elapsed() > timeout => {
                // Our child's own process group, by its id.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
                let _ = child.wait();
                break -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("wait for node: {e}"),
        }
    };
    if code != 0 {
        // Whatever a failed script left behind in its group (the chromium of a crashed node).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
    }
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    (code, out, err)
}

/// A single-use login link: what `ctl ui` prints, or, from a `ctl` without that command,
/// what it asks the daemon for (`POST /1.0/ui/login-links` on the socket).
fn login_link(d: &Daemon) -> String {
    let run = d.ctl(&["ui"]);
    if run.code == 0
        && let Some(url) = run
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("https://") && w.contains("/ui/login?token="))
    {
        return url.to_string();
    }
    let (status, v) = d.http("POST", "/1.0/ui/login-links", Some("{}"));
    assert_eq!(status, 200, "POST /1.0/ui/login-links: {v}");
    v["metadata"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn dashboard_in_a_browser() {
    if !require_root("dashboard_in_a_browser") || !browser_tools("dashboard_in_a_browser") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let (status, v) = d.http(
        "PATCH",
        "/1.0",
        Some(&json!({"config": {"core.https_address": address}}).to_string()),
    );
    assert_eq!(status, 200, "PATCH /1.0: {v}");
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(&address)
            .is_ok()),
        "nothing listens on {address}"
    );
    let url = login_link(&d);
    assert!(
        url.starts_with(&format!("https://{address}/ui/login?token=")),
        "{url}"
    );

    let artifacts = artifacts_dir();
    let started = Instant::now();
    let (code, stdout, stderr) = run_script(
        &[
            "--url".into(),
            url,
            "--instance".into(),
            "c1".into(),
            "--artifacts".into(),
            artifacts.display().to_string(),
            "--bulk".into(),
            "200".into(),
        ],
        SCRIPT_TIMEOUT,
    );
    let took = started.elapsed();
    println!("browser test: {:.1} s", took.as_secs_f64());
    if code != 0 {
        eprintln!("{stderr}");
        eprintln!(
            "screenshots (if any) in {}; ctld log:\n{}",
            artifacts.display(),
            d.log()
        );
    }
    assert_eq!(code, 0, "tests/ui/dashboard.mjs failed");

    let r = reports(&stdout);
    let login = step(&r, "login");
    assert_eq!(login["cookie"], true, "{login}");
    assert_eq!(login["http_only"], true, "{login}");
    assert_eq!(login["secure"], true, "{login}");
    assert_eq!(login["same_site"], "Strict", "{login}");
    let stopped = step(&r, "stopped")["ms"].as_f64().unwrap_or(f64::MAX);
    assert!(stopped < 2000.0, "Stopped shown after {stopped} ms");
    assert_eq!(step(&r, "terminal")["line"], "ui-42");
    assert_eq!(step(&r, "console_tab")["attached"], true);
    let api_error = step(&r, "api_error")["text"].as_str().unwrap_or_default();
    assert!(api_error.contains("no_such name"), "{api_error}");
    let resize = step(&r, "resize");
    assert_eq!(resize["stty"], resize["after"], "{resize}");
    assert_ne!(resize["before"], resize["after"], "{resize}");
    assert_eq!(step(&r, "snapshot")["marks"], "marks-B");
    step(&r, "launch");
    step(&r, "rename");
    step(&r, "delete");
    let bulk = step(&r, "bulk");
    assert!(bulk["rendered_rows"].as_u64().unwrap_or(0) >= 200, "{bulk}");
    assert!(
        bulk["rendered_ms"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "{bulk}"
    );
    let refusals = step(&r, "refusals");
    for key in [
        "foreign_origin",
        "foreign_origin_ws",
        "no_session",
        "no_session_ws",
    ] {
        assert_eq!(refusals[key], 403, "{key}: {refusals}");
    }
    assert_eq!(step(&r, "logout")["old_session"], 403);
    assert_eq!(step(&r, "console")["csp"], 0);
    assert_eq!(step(&r, "done")["ok"], true);
    // The instances the script made or deleted, as the daemon sees them.
    let names = d.instances();
    assert!(
        !names.iter().any(|n| n.starts_with("c2")),
        "c2 is still there: {names:?}"
    );
    assert!(names.iter().any(|n| n == "c1"));
}
