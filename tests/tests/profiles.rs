//! End-to-end tests of profiles: the real `ctld`, `ctl`, LXD's `lxc` and the Incus client
//! on this host's cgroups. A profile's `limits.memory` reaches the container's cgroup at
//! start and at once when the profile or the instance's profile list changes; a profile's
//! proxy device is plugged and unplugged live; rename, delete and bad values follow Incus.
//! Every instance is unprivileged (the default); each test has its own daemon, state dir
//! and cgroup parent, cleaned up by `Daemon`'s drop even when an assertion fails.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ctl_tests::{Daemon, read_num, require_root, unique, wait_until};

const MIB: i64 = 1 << 20;

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// The hard memory limit of instance `name`'s cgroup, read on the host.
fn memory_limit(d: &Daemon, name: &str) -> i64 {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let v =
            std::fs::read_to_string(d.cgroup_dir("", name).join("memory.max")).unwrap_or_default();
        if v.trim() == "max" {
            return i64::MAX;
        }
        v.trim().parse().unwrap_or(-1)
    } else {
        read_num(&d.cgroup_dir("memory", name).join("memory.limit_in_bytes"))
    }
}

/// No memory limit: the kernel's "unlimited" (v1 reports a page-rounded huge number).
fn unlimited(limit: i64) -> bool {
    limit > 1 << 50
}

fn instance(d: &Daemon, name: &str) -> serde_json::Value {
    let (code, v) = d.http("GET", &format!("/1.0/instances/{name}"), None);
    assert_eq!(code, 200, "{v}");
    v["metadata"].clone()
}

fn profile(d: &Daemon, name: &str) -> (u16, serde_json::Value) {
    let (code, v) = d.http("GET", &format!("/1.0/profiles/{name}"), None);
    (code, v["metadata"].clone())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

#[test]
fn profile_limits_reach_the_cgroup_at_start_and_live() {
    root_or_skip!("profile_limits_reach_the_cgroup_at_start_and_live");
    let d = Daemon::start();
    let (p1, p2, c1) = (unique("p1"), unique("p2"), unique("c1"));
    d.ok(&["profile", "create", &p1, "limits.memory=64MiB"]);
    d.ok(&["launch", "busybox", &c1, "-p", "default", "-p", &p1]);
    assert_eq!(memory_limit(&d, &c1), 64 * MIB);
    let c = instance(&d, &c1);
    assert_eq!(c["profiles"], serde_json::json!(["default", p1]));
    assert_eq!(c["expanded_config"]["limits.memory"], "64MiB");
    assert_eq!(c["config"].get("limits.memory"), None, "{c}");
    assert_eq!(
        profile(&d, &p1).1["used_by"],
        serde_json::json!([format!("/1.0/instances/{c1}")])
    );

    // The profile changes: the running container's cgroup follows at once.
    d.ok(&["profile", "set", &p1, "limits.memory", "96MiB"]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);
    assert_eq!(
        d.ok(&["profile", "get", &p1, "limits.memory"]).trim(),
        "96MiB"
    );
    assert_eq!(
        instance(&d, &c1)["expanded_config"]["limits.memory"],
        "96MiB"
    );

    // The instance's profile list changes: live too, later profiles win.
    d.ok(&["profile", "create", &p2]);
    d.ok(&["profile", "set", &p2, "limits.memory=128MiB"]);
    d.ok(&["profile", "add", &c1, &p2]);
    assert_eq!(memory_limit(&d, &c1), 128 * MIB);
    d.ok(&["profile", "remove", &c1, &p2]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);
    d.ok(&["profile", "assign", &c1, "default"]);
    assert!(
        unlimited(memory_limit(&d, &c1)),
        "{}",
        memory_limit(&d, &c1)
    );
    d.ok(&["profile", "assign", &c1, &format!("default,{p1}")]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);
    // The instance's own key wins over every profile, and unsetting it gives the profile's
    // value back.
    d.ok(&["config", "set", &c1, "limits.memory=80MiB"]);
    assert_eq!(memory_limit(&d, &c1), 80 * MIB);
    d.ok(&["config", "unset", &c1, "limits.memory"]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);

    // Bad values are refused and change nothing, neither the profile nor the cgroup.
    for bad in [
        vec!["profile", "set", &p1, "limits.memory", "lots"],
        vec![
            "profile",
            "set",
            &p1,
            "volatile.eth0.hwaddr=00:16:3e:00:00:01",
        ],
        vec!["profile", "set", &p1, "no.such.key=1"],
        vec!["profile", "add", &c1, "no-such-profile"],
    ] {
        let r = d.ctl(&bad);
        assert_ne!(r.code, 0, "{bad:?} was accepted");
        assert!(r.stderr.contains("Error"), "{bad:?}: {r:?}");
    }
    assert_eq!(
        profile(&d, &p1).1["config"],
        serde_json::json!({"limits.memory": "96MiB"})
    );
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);
    assert_eq!(
        instance(&d, &c1)["profiles"],
        serde_json::json!(["default", p1])
    );

    // A restart starts from the expansion.
    d.ok(&["restart", &c1]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);

    // Edit (YAML on stdin) replaces the profile; the container follows.
    let yaml = "description: edited\nconfig:\n  limits.memory: 72MiB\ndevices: {}\n";
    let r = d.ctl_stdin(&["profile", "edit", &p1], Some(yaml.as_bytes()));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(memory_limit(&d, &c1), 72 * MIB);
    assert_eq!(profile(&d, &p1).1["description"], "edited");
}

#[test]
fn profiles_are_renamed_copied_and_deleted_by_incus_rules() {
    root_or_skip!("profiles_are_renamed_copied_and_deleted_by_incus_rules");
    let d = Daemon::start();
    let (p1, small, copy, c1) = (unique("p1"), unique("small"), unique("copy"), unique("c1"));
    d.ok(&["profile", "create", &p1, "--description", "tiny"]);
    d.ok(&["profile", "set", &p1, "limits.memory=64MiB"]);
    d.ok(&["launch", "busybox", &c1, "-p", "default", "-p", &p1]);

    // Rename: the instance's profile list follows; its limit stays.
    d.ok(&["profile", "rename", &p1, &small]);
    assert_eq!(
        instance(&d, &c1)["profiles"],
        serde_json::json!(["default", small])
    );
    assert_eq!(profile(&d, &p1).0, 404);
    assert_eq!(memory_limit(&d, &c1), 64 * MIB);
    let csv = d.ok(&["profile", "list", "--format", "csv"]);
    assert!(csv.lines().any(|l| l == format!("{small},tiny,1")), "{csv}");
    let json = d.ok(&["profile", "list", "--format", "json"]);
    assert!(json.contains(&format!("/1.0/instances/{c1}")), "{json}");
    // And after a daemon restart it still starts with it.
    d.ok(&["stop", &c1]);
    d.ok(&["start", &c1]);
    assert_eq!(memory_limit(&d, &c1), 64 * MIB);

    // Copy: same config, no users.
    d.ok(&["profile", "copy", &small, &copy]);
    let (_, v) = profile(&d, &copy);
    assert_eq!(v["config"], serde_json::json!({"limits.memory": "64MiB"}));
    assert_eq!(v["used_by"], serde_json::json!([]));

    // Refusals, each leaving everything in place.
    let refused = |args: &[&str], why: &str| {
        let r = d.ctl(args);
        assert_ne!(r.code, 0, "{args:?} was accepted");
        assert!(r.stderr.contains(why), "{args:?}: {r:?}");
    };
    refused(&["profile", "delete", &small], "in use");
    refused(&["profile", "delete", "default"], "cannot be deleted");
    refused(
        &["profile", "rename", "default", "other"],
        "cannot be renamed",
    );
    refused(&["profile", "rename", &small, &copy], "already exists");
    refused(&["profile", "create", &copy], "already exists");
    refused(&["profile", "create", "a/b"], "invalid profile name");
    assert_eq!(profile(&d, &small).0, 200);
    assert_eq!(profile(&d, "default").0, 200);

    // Unused, they go.
    d.ok(&["profile", "delete", &copy]);
    assert_eq!(profile(&d, &copy).0, 404);
    d.ok(&["profile", "remove", &c1, &small]);
    d.ok(&["profile", "delete", &small]);
    assert_eq!(profile(&d, &small).0, 404);
}

#[test]
fn a_profile_proxy_device_is_plugged_live() {
    root_or_skip!("a_profile_proxy_device_is_plugged_live");
    let d = Daemon::start();
    let (web, c1) = (unique("web"), unique("c1"));
    let port = free_port();
    d.ok(&["profile", "create", &web]);
    d.ok(&["launch", "busybox", &c1, "-p", "default", "-p", &web]);
    assert!(!listening(port));
    let listen = format!("listen=tcp:127.0.0.1:{port}");
    d.ok(&[
        "profile",
        "device",
        "add",
        &web,
        "http",
        "proxy",
        &listen,
        "connect=tcp:127.0.0.1:80",
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || listening(port)),
        "no listener on {port}"
    );
    let listed = d.ok(&["profile", "device", "list", &web]);
    assert!(
        listed.contains("http") && listed.contains("proxy"),
        "{listed}"
    );
    assert_eq!(
        instance(&d, &c1)["expanded_devices"]["http"]["type"],
        "proxy"
    );
    d.ok(&["profile", "device", "remove", &web, "http"]);
    assert!(
        wait_until(Duration::from_secs(5), || !listening(port)),
        "{port} still listens"
    );
    assert_eq!(profile(&d, &web).1["devices"], serde_json::json!({}));
}

#[test]
fn profile_security_and_environment_keys_take_effect_where_incus_applies_them() {
    root_or_skip!("profile_security_and_environment_keys_take_effect_where_incus_applies_them");
    let d = Daemon::start();
    let (p1, c1) = (unique("p1"), unique("c1"));
    d.ok(&["profile", "create", &p1, "environment.FROM_PROFILE=yes"]);
    d.ok(&["launch", "busybox", &c1, "-p", "default", "-p", &p1]);
    // Unprivileged by default: root inside is not root outside.
    assert_ne!(d.init_host_uid(&c1), 0);
    // An exec gets the profile's environment.
    let out = d.ok(&["exec", &c1, "--", "sh", "-c", "echo $FROM_PROFILE"]);
    assert_eq!(out.trim(), "yes");
    // security.privileged from a profile: accepted while running, as on the instance
    // itself, and in effect from the next start.
    d.ok(&["profile", "set", &p1, "security.privileged=true"]);
    assert_ne!(d.init_host_uid(&c1), 0, "changed under a running container");
    assert_eq!(
        instance(&d, &c1)["expanded_config"]["security.privileged"],
        "true"
    );
    d.ok(&["restart", &c1]);
    assert_eq!(
        d.init_host_uid(&c1),
        0,
        "the restart did not apply the profile"
    );
    // Back to unprivileged through the instance's own key, which wins.
    d.ok(&["config", "set", &c1, "security.privileged=false"]);
    d.ok(&["restart", &c1]);
    assert_ne!(d.init_host_uid(&c1), 0);
    let out = d.ok(&[
        "exec",
        &c1,
        "--",
        "sh",
        "-c",
        "echo ok > /root/f && cat /root/f",
    ]);
    assert_eq!(out.trim(), "ok");
}

/// Run `tool` (an LXD or Incus client) against `d` until it succeeds; returns stdout.
fn client_ok(d: &Daemon, tool: &Path, conf: &Path, args: &[&str]) -> String {
    let o = Command::new(tool)
        .args(args)
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", conf)
        .env("INCUS_DIR", d.path())
        .env("INCUS_CONF", conf)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} {args:?}: {e}", tool.display()));
    assert!(
        o.status.success(),
        "{} {args:?}: {}{}\n--- ctld log ---\n{}",
        tool.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The same flow through either client: create, set, copy, rename, device add, assign,
/// delete; the cgroup and the records checked on the host.
fn client_flow(tool: &Path) {
    let d = Daemon::start();
    let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ok = |args: &[&str]| client_ok(&d, tool, conf.path(), args);
    let (p1, p2, p3, c1) = (unique("p1"), unique("p2"), unique("p3"), unique("c1"));
    ok(&["profile", "create", &p1]);
    ok(&["profile", "set", &p1, "limits.memory", "64MiB"]);
    ok(&["launch", "busybox", &c1]);
    ok(&["profile", "assign", &c1, &format!("default,{p1}")]);
    assert_eq!(
        instance(&d, &c1)["profiles"],
        serde_json::json!(["default", p1])
    );
    assert_eq!(memory_limit(&d, &c1), 64 * MIB);
    ok(&["profile", "set", &p1, "limits.memory", "96MiB"]);
    assert_eq!(memory_limit(&d, &c1), 96 * MIB);
    let port = free_port();
    ok(&[
        "profile",
        "device",
        "add",
        &p1,
        "http",
        "proxy",
        &format!("listen=tcp:127.0.0.1:{port}"),
        "connect=tcp:127.0.0.1:80",
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || listening(port)),
        "no listener on {port}"
    );
    ok(&["profile", "copy", &p1, &p2]);
    ok(&["profile", "rename", &p2, &p3]);
    let list = ok(&["profile", "list", "--format", "csv"]);
    assert!(list.contains(&p3) && !list.contains(&p2), "{list}");
    assert_eq!(profile(&d, &p3).1["config"]["limits.memory"], "96MiB");
    ok(&["profile", "delete", &p3]);
    assert_eq!(profile(&d, &p3).0, 404);
    ok(&["profile", "assign", &c1, "default"]);
    assert!(unlimited(memory_limit(&d, &c1)));
    assert!(
        wait_until(Duration::from_secs(5), || !listening(port)),
        "{port} still listens"
    );
    ok(&["profile", "delete", &p1]);
    assert_eq!(profile(&d, &p1).0, 404);
}

#[test]
fn lxc_manages_profiles() {
    root_or_skip!("lxc_manages_profiles");
    let found = Command::new("lxc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "lxc is not installed; CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("SKIP: lxc not installed");
        return;
    }
    client_flow(Path::new("lxc"));
}

#[test]
fn incus_manages_profiles() {
    root_or_skip!("incus_manages_profiles");
    let Some(incus) = ctl_tests::clients::incus_program() else {
        return;
    };
    client_flow(&incus);
}
