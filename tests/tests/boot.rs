//! `boot.*`: after a host reboot (simulated: ctld and every container init killed, then
//! ctld started again) the right containers come back, in `boot.autostart.priority` order
//! with `boot.autostart.delay` between them; on SIGPWR ctld stops every container cleanly in
//! `boot.stop.priority` order, and the next start brings them back.

use std::time::{Duration, Instant};

use ctl_tests::{Daemon, pid_alive, require_root, wait_until};

/// The monitor PID a container's monitor recorded for it (`init.json`).
fn monitor_of(d: &Daemon, name: &str) -> i32 {
    let path = d.path().join("containers").join(name).join("init.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let pid = v["monitor_pid"].as_i64().unwrap_or(0) as i32;
    assert!(pid > 1, "monitor of {name}: {text}");
    pid
}

fn running(d: &Daemon, name: &str) -> bool {
    d.state(name)["status"].as_str() == Some("Running")
}

/// `text` without terminal colour sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since midnight of a log line's leading RFC 3339 timestamp.
fn seconds_of(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The log line with `marker` that names `instance`.
fn line_for<'a>(log: &'a str, marker: &str, instance: &str) -> Option<&'a str> {
    log.lines()
        .find(|l| l.contains(marker) && l.contains(&format!("instance={instance} ")))
}

/// The instances a log line with `marker` names, in log order.
fn logged_order(log: &str, marker: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let at = l.find("instance=")? + "instance=".len();
            Some(
                l[at..]
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn a_host_reboot_brings_back_the_right_containers_in_priority_order() {
    if !require_root("a_host_reboot_brings_back_the_right_containers_in_priority_order") {
        return;
    }
    let mut d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "low",
        "-c",
        "boot.autostart=true",
        "-c",
        "boot.autostart.priority=10",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "high",
        "-c",
        "boot.autostart=true",
        "-c",
        "boot.autostart.priority=20",
        "-c",
        "boot.autostart.delay=1",
    ]);
    d.ok(&["launch", "busybox", "was-running"]);
    d.ok(&["launch", "busybox", "never", "-c", "boot.autostart=false"]);
    d.ok(&["launch", "busybox", "user-stopped"]);
    d.ok(&["stop", "-f", "user-stopped"]);
    d.ok(&["init", "busybox", "never-started"]);
    let bad = d.ctl(&["config", "set", "low", "boot.autostart.delay", "soon"]);
    assert_ne!(bad.code, 0, "a bad delay is refused");

    // A container that powers itself off stays off.
    let pid = d.init_pid("never");
    d.ok(&["config", "unset", "never", "boot.autostart"]);
    d.ok(&["exec", "never", "--", "poweroff", "-f"]);
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)));

    // The host goes down hard: ctld, every container's monitor and init die at once,
    // nothing is recorded.
    let inits: Vec<i32> = ["low", "high", "was-running"]
        .iter()
        .map(|n| d.init_pid(n))
        .collect();
    let monitors: Vec<i32> = ["low", "high", "was-running"]
        .iter()
        .map(|n| monitor_of(&d, n))
        .collect();
    d.kill(9);
    for pid in monitors.iter().chain(&inits) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    assert!(wait_until(Duration::from_secs(5), || inits
        .iter()
        .all(|p| !pid_alive(*p))));
    let log_before = d.log().len();
    let started = Instant::now();
    d.restart();
    assert!(
        wait_until(Duration::from_secs(15), || ["low", "high", "was-running"]
            .iter()
            .all(|n| running(&d, n))),
        "autostart; log:\n{}",
        &d.log()[log_before..]
    );
    println!(
        "3 containers back {:.1} s after ctld started",
        started.elapsed().as_secs_f64()
    );
    for n in ["never", "user-stopped", "never-started"] {
        assert!(!running(&d, n), "{n} must stay stopped");
    }
    let log = plain(&d.log()[log_before..]);
    assert_eq!(
        logged_order(&log, "autostarted"),
        ["high", "low", "was-running"],
        "priority order (20, 10, then 0)"
    );
    // The delay after "high" (1 s) is honoured before "low" starts.
    let at = |n: &str| line_for(&log, "autostarted", n).and_then(seconds_of);
    let gap = at("low").zip(at("high")).map(|(l, h)| l - h);
    println!("high → low: {gap:?} s");
    assert!(
        gap.is_some_and(|g| g >= 0.95),
        "delay honoured: {gap:?}\n{log}"
    );
    d.ok(&["exec", "low", "--", "true"]);

    // SIGPWR: every container stops cleanly, the higher boot.stop.priority first.
    d.ok(&["config", "set", "was-running", "boot.stop.priority", "5"]);
    let inits: Vec<i32> = ["low", "high", "was-running"]
        .iter()
        .map(|n| d.init_pid(n))
        .collect();
    let log_before = d.log().len();
    d.kill(libc::SIGPWR);
    assert!(
        inits.iter().all(|p| !pid_alive(*p)),
        "every init is gone when ctld exits"
    );
    let log = plain(&d.log()[log_before..]);
    let stops: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shutdown: stopping"))
        .collect();
    assert_eq!(stops.len(), 2, "two priorities: {log}");
    assert!(
        stops[0].contains("priority=5") && stops[0].contains("was-running"),
        "{log}"
    );
    assert!(!log.contains("clean stop timed out"), "{log}");
    // They come back at the next start: the host's shutdown is not a user's stop.
    d.restart();
    assert!(
        wait_until(Duration::from_secs(15), || ["low", "high", "was-running"]
            .iter()
            .all(|n| running(&d, n))),
        "back after a clean shutdown"
    );
    assert!(!running(&d, "user-stopped"));
}
