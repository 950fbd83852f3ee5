//! Snapshots the daemon takes and deletes by itself, end to end as root: `expires_at` (from
//! `snapshots.expiry`, a request, `ctl snapshot create --expiry`, or a later `PATCH`) makes
//! the expiry task delete a snapshot once it passes, also at start-up; `snapshots.schedule`
//! takes snapshots named by `snapshots.pattern`, skipping stopped instances unless
//! `snapshots.schedule.stopped` says otherwise; bad values are a 400 that changes nothing.
//! The expiry task's interval is shortened for the test by `CTL_SNAPSHOT_EXPIRY_INTERVAL`
//! (hidden, tests only); the scheduler runs on the real minute.

use std::process::Command;
use std::time::Duration;

use ctl_tests::{Daemon, require_root, wait_until};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Whole seconds, as the daemon stores expiries.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|e| panic!("format {t}: {e}"))
}

fn parse(t: &str) -> OffsetDateTime {
    OffsetDateTime::parse(t, &Rfc3339).unwrap_or_else(|e| panic!("parse {t:?}: {e}"))
}

fn snapshot(d: &Daemon, name: &str, snap: &str) -> (u16, serde_json::Value) {
    d.http(
        "GET",
        &format!("/1.0/instances/{name}/snapshots/{snap}"),
        None,
    )
}

fn expires_at(d: &Daemon, name: &str, snap: &str) -> String {
    let (code, body) = snapshot(d, name, snap);
    assert_eq!(code, 200, "{body}");
    body["metadata"]["expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn names(d: &Daemon, name: &str) -> Vec<String> {
    let (code, body) = d.http(
        "GET",
        &format!("/1.0/instances/{name}/snapshots?recursion=1"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    body["metadata"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `t` lies `expected` after `from`, give or take a minute.
fn about(t: &str, from: OffsetDateTime, expected: time::Duration) -> bool {
    let diff = parse(t) - from - expected;
    diff.abs() < time::Duration::minutes(1)
}

#[test]
fn expired_snapshots_are_deleted_by_the_daemon_and_at_start_up() {
    if !require_root("expired_snapshots_are_deleted_by_the_daemon_and_at_start_up") {
        return;
    }
    let d = Daemon::start_with_env(&[], &[("CTL_SNAPSHOT_EXPIRY_INTERVAL", "1")]);
    d.ok(&["init", "busybox", "c1"]);
    let now = OffsetDateTime::now_utc();

    // snapshots.expiry sets each new snapshot's expiry; --no-expiry and --expiry override it.
    d.ok(&["config", "set", "c1", "snapshots.expiry=2d"]);
    d.ok(&["snapshot", "create", "c1"]);
    let t = expires_at(&d, "c1", "snap0");
    assert!(
        about(&t, now, time::Duration::days(2)),
        "snap0 expires at {t}"
    );
    d.ok(&["snapshot", "create", "c1", "keep", "--no-expiry"]);
    assert!(expires_at(&d, "c1", "keep").starts_with("0001-01-01"));
    d.ok(&["snapshot", "create", "c1", "soon", "--expiry", "1d 3H"]);
    let t_soon = expires_at(&d, "c1", "soon");
    assert!(
        about(&t_soon, now, time::Duration::hours(27)),
        "soon expires at {t_soon}"
    );
    // snapshots.expiry.manual wins for snapshots taken by hand.
    d.ok(&["config", "set", "c1", "snapshots.expiry.manual=1w"]);
    d.ok(&["snapshot", "create", "c1", "weekly"]);
    let t = expires_at(&d, "c1", "weekly");
    assert!(
        about(&t, now, time::Duration::weeks(1)),
        "weekly expires at {t}"
    );
    let list = d.ok(&["snapshot", "list", "c1", "--format", "csv"]);
    assert!(list.starts_with("NAME,TAKEN AT,EXPIRES AT,SIZE"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("keep,") && l.contains(",,")),
        "no expiry shown for keep: {list}"
    );

    // Bad expiries are a 400 and change nothing.
    let (code, body) = d.http(
        "POST",
        "/1.0/instances/c1/snapshots",
        Some(r#"{"name":"x","expires_at":"tomorrow"}"#),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = d.http(
        "PATCH",
        "/1.0/instances/c1/snapshots/soon",
        Some(r#"{"expires_at":"next week"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        expires_at(&d, "c1", "soon"),
        t_soon,
        "a refused PATCH changes nothing"
    );
    let bad = d.ctl(&["config", "set", "c1", "snapshots.expiry=2 days"]);
    assert!(
        bad.code != 0 && bad.stderr.contains("snapshots.expiry"),
        "{bad:?}"
    );
    assert_eq!(
        d.ok(&["config", "get", "c1", "snapshots.expiry"]).trim(),
        "2d"
    );
    assert!(!names(&d, "c1").contains(&"x".to_string()));

    // PUT without expires_at: never; PATCH without it: unchanged.
    let (code, _) = d.http("PUT", "/1.0/instances/c1/snapshots/weekly", Some("{}"));
    assert_eq!(code, 202);
    assert!(wait_until(Duration::from_secs(5), || {
        expires_at(&d, "c1", "weekly").starts_with("0001-01-01")
    }));
    let before = expires_at(&d, "c1", "snap0");
    let (code, _) = d.http("PATCH", "/1.0/instances/c1/snapshots/snap0", Some("{}"));
    assert_eq!(code, 202);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(expires_at(&d, "c1", "snap0"), before);

    // A snapshot whose expiry is moved a few seconds ahead goes once it passes; the others
    // stay.
    let at = rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(3));
    let (code, body) = d.http(
        "PATCH",
        "/1.0/instances/c1/snapshots/soon",
        Some(&format!(r#"{{"expires_at":"{at}"}}"#)),
    );
    assert_eq!(code, 202, "{body}");
    assert!(wait_until(Duration::from_secs(5), || {
        expires_at(&d, "c1", "soon") == at
    }));
    assert!(
        names(&d, "c1").contains(&"soon".to_string()),
        "not before it passes"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            !names(&d, "c1").contains(&"soon".to_string())
        }),
        "an expired snapshot must be deleted; log:\n{}",
        d.log()
    );
    assert_eq!(snapshot(&d, "c1", "soon").0, 404);
    assert!(!d.path().join("containers/c1/snapshots/soon").exists());
    let mut left = names(&d, "c1");
    left.sort();
    assert_eq!(left, ["keep", "snap0", "weekly"]);
    assert!(d.log().contains("expired snapshot deleted"));
    d.ok(&["delete", "c1"]);
}

#[test]
fn a_snapshot_that_expired_while_the_daemon_was_down_goes_at_start_up() {
    if !require_root("a_snapshot_that_expired_while_the_daemon_was_down_goes_at_start_up") {
        return;
    }
    // The default interval (a minute): only the start-up look can delete it in time.
    let mut d = Daemon::start();
    d.ok(&["init", "busybox", "c1"]);
    let at = rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(2));
    let body = format!(r#"{{"name":"brief","expires_at":"{at}"}}"#);
    let (code, reply) = d.http("POST", "/1.0/instances/c1/snapshots", Some(&body));
    assert_eq!(code, 202, "{reply}");
    d.ok(&["snapshot", "create", "c1", "stays"]);
    assert!(wait_until(Duration::from_secs(5), || {
        names(&d, "c1").contains(&"brief".to_string())
    }));
    d.kill(9);
    std::thread::sleep(Duration::from_secs(3));
    d.restart();
    assert!(
        wait_until(Duration::from_secs(10), || names(&d, "c1") == ["stays"]),
        "{:?}",
        names(&d, "c1")
    );
    assert!(!d.path().join("containers/c1/snapshots/brief").exists());
    d.ok(&["delete", "c1"]);
}

#[test]
fn schedules_take_patterned_snapshots_of_running_instances_and_bad_ones_are_refused() {
    if !require_root(
        "schedules_take_patterned_snapshots_of_running_instances_and_bad_ones_are_refused",
    ) {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "run"]);
    d.ok(&["init", "busybox", "idle"]);
    d.ok(&["init", "busybox", "idle2"]);

    // Bad values: 400, nothing changed.
    for bad in ["61 * * * *", "* * * *", "@sometimes", "every minute"] {
        let r = d.ctl(&["config", "set", "run", &format!("snapshots.schedule={bad}")]);
        assert!(
            r.code != 0 && r.stderr.contains("snapshots.schedule"),
            "{bad}: {r:?}"
        );
    }
    let (code, body) = d.http(
        "PATCH",
        "/1.0/instances/run",
        Some(r#"{"config":{"snapshots.schedule":"* * * 13 *","user.x":"1"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        d.ok(&["config", "get", "run", "snapshots.schedule"]).trim(),
        ""
    );
    assert_eq!(d.ok(&["config", "get", "run", "user.x"]).trim(), "");
    let (code, body) = d.http(
        "PATCH",
        "/1.0/instances/run",
        Some(r#"{"config":{"snapshots.pattern":"a/%d"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    let bad = d.ctl(&[
        "profile",
        "set",
        "default",
        "snapshots.schedule",
        "0 0 0 0 0",
    ]);
    assert_ne!(bad.code, 0, "{bad:?}");

    // Every minute, for a running instance and a stopped one that asks for it; the other
    // stopped one is skipped.
    d.ok(&[
        "config",
        "set",
        "run",
        "snapshots.pattern=auto-%d",
        "snapshots.expiry=1d",
    ]);
    d.ok(&["snapshot", "create", "run", "auto-4"]);
    d.ok(&[
        "config",
        "set",
        "idle2",
        "snapshots.schedule.stopped=true",
        "snapshots.pattern={{ creation_date|date:'2006-01-02' }}-%d",
    ]);
    for name in ["run", "idle", "idle2"] {
        d.ok(&["config", "set", name, "snapshots.schedule=* * * * *"]);
    }
    let today = |fmt: &str| {
        let o = Command::new("date")
            .arg(format!("+{fmt}"))
            .output()
            .unwrap_or_else(|e| panic!("date: {e}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let day_before = today("%Y-%m-%d");
    assert!(
        wait_until(Duration::from_secs(75), || {
            names(&d, "run").len() == 2 && !names(&d, "idle2").is_empty()
        }),
        "no scheduled snapshot within 75 s: run {:?}, idle2 {:?}; log:\n{}",
        names(&d, "run"),
        names(&d, "idle2"),
        d.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let day_after = today("%Y-%m-%d");
    assert_eq!(
        names(&d, "run"),
        ["auto-4", "auto-5"],
        "pattern auto-%d, highest + 1"
    );
    let scheduled = names(&d, "idle2");
    assert!(
        scheduled
            .first()
            .is_some_and(|n| *n == format!("{day_before}-0") || *n == format!("{day_after}-0")),
        "{scheduled:?}"
    );
    assert!(
        names(&d, "idle").is_empty(),
        "a stopped instance is skipped"
    );
    let t = expires_at(&d, "run", "auto-5");
    assert!(
        about(&t, OffsetDateTime::now_utc(), time::Duration::days(1)),
        "snapshots.expiry applies to scheduled snapshots: {t}"
    );
    assert_eq!(
        d.state("run")["status"],
        "Running",
        "thawed after the snapshot"
    );
    for name in ["run", "idle", "idle2"] {
        d.ok(&["config", "unset", name, "snapshots.schedule"]);
    }
    d.ok(&["delete", "-f", "run", "idle", "idle2"]);
}
