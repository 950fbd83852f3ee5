//! End-to-end tests: the real `ctld` and `ctl`, real namespaces, overlay mounts and cgroups.
//! Each test owns a daemon on a temp dir with its own cgroup parent; everything is removed
//! when the daemon handle drops, also on failure. Run as root (`CTL_REQUIRE_ALL=1` makes a
//! non-root run fail instead of skipping).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ctl_tests::{
    Daemon, bin_dir, cgroup_parent_exists, pid_alive, read_num, require_root, wait_until,
};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

fn image_rootfs(d: &Daemon) -> std::path::PathBuf {
    let (_, v) = d.http("GET", "/1.0/images/aliases/busybox", None);
    let fp = v["metadata"]["target"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(fp.len(), 64, "busybox alias: {v}");
    d.path().join("images").join(fp).join("rootfs")
}

#[test]
fn seed_checkpoints_through_ctl() {
    root_or_skip!("seed_checkpoints_through_ctl");
    let d = Daemon::start();
    let name = "c1";
    d.ok(&["launch", "busybox", name]);

    // `ctl list` shows it running with its PID.
    let list = d.ok(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    assert_eq!(v[0]["name"], name, "{list}");
    assert_eq!(v[0]["status"], "Running", "{list}");
    let pid = d.init_pid(name);
    assert!(pid > 1, "init pid {pid}");
    let table = d.ok(&["list"]);
    assert!(
        table.contains("RUNNING") && table.contains(&pid.to_string()),
        "{table}"
    );

    // Hostname inside is the instance name; the host's is unchanged.
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_eq!(d.ok(&["exec", name, "--", "hostname"]).trim(), name);
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_eq!(host_before, host_after);
    assert_ne!(host_after.trim(), name);

    // Inside, PID 1 is the image's init and only the container's processes are visible.
    let ps = d.ok(&["exec", name, "--", "ps", "-o", "pid,comm"]);
    let procs: Vec<(i32, String)> = ps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.to_string()))
        })
        .collect();
    assert!(procs.contains(&(1, "init".to_string())), "{ps}");
    assert!(procs.len() <= 3, "only init and ps expected: {ps}");
    // The host sees the init, in the container's cgroup.
    assert!(pid_alive(pid));
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "init");
    // Limits on the instance's cgroup, its processes in the inner one it may manage.
    let procs_file = d.cgroup_dir("pids", name).join("ns/cgroup.procs");
    let members = std::fs::read_to_string(&procs_file).unwrap_or_default();
    assert!(
        members.lines().any(|l| l.trim() == pid.to_string()),
        "{members}"
    );
    // The container sees its cgroup as the root of its cgroup namespace.
    let cg = d.ok(&["exec", name, "--", "cat", "/proc/self/cgroup"]);
    assert!(cg.lines().all(|l| l.ends_with(":/")), "{cg}");

    // The mount table differs from the host's: an overlay root, its own /proc and /dev.
    let mounts = d.ok(&["exec", name, "--", "cat", "/proc/mounts"]);
    let host_mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert_ne!(mounts, host_mounts);
    let root_line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"));
    assert!(
        root_line.is_some_and(|l| l.starts_with("overlay / overlay")),
        "{mounts}"
    );
    assert!(mounts.contains(" /sys sysfs ro,"), "{mounts}");
    assert!(mounts.contains(" /dev/pts devpts "), "{mounts}");
    let container_dir = d.path().join("containers").join(name);
    assert!(
        !host_mounts.contains(&container_dir.display().to_string()),
        "the overlay lives only in the container's mount namespace"
    );

    // Writes land in the container's upper dir; the image rootfs is unchanged.
    d.ok(&[
        "exec",
        name,
        "--",
        "sh",
        "-c",
        "echo hello > /root/note; rm /etc/hosts",
    ]);
    let upper = container_dir.join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("root/note")).unwrap_or_default(),
        "hello\n"
    );
    let lower = image_rootfs(&d);
    assert!(!lower.join("root/note").exists());
    assert!(
        lower.join("etc/hosts").exists(),
        "delete must not reach the image"
    );
    // A whiteout records the delete in the upper dir.
    assert!(upper.join("etc/hosts").symlink_metadata().is_ok());

    // Stop cleanly through the init; then delete leaves nothing.
    let monitor_pids = monitor_of(pid);
    d.ok(&["stop", name]);
    assert!(!pid_alive(pid), "init still alive after stop");
    assert_eq!(d.state(name)["status"], "Stopped");
    assert!(
        !d.cgroup_dir("pids", name).exists(),
        "cgroup left after stop"
    );
    d.ok(&["delete", name]);
    assert!(d.instances().is_empty());
    assert!(!container_dir.exists(), "container dir left after delete");
    assert!(
        wait_until(Duration::from_secs(5), || monitor_pids
            .iter()
            .all(|p| !pid_alive(*p))),
        "monitor left behind"
    );
    for ctl in ["pids", "memory", "cpu", "freezer"] {
        assert!(!d.cgroup_dir(ctl, name).exists(), "{ctl} cgroup left");
    }
    let trash = d.path().join("trash");
    let trash_empty = std::fs::read_dir(&trash).map_or(true, |mut r| r.next().is_none());
    assert!(trash_empty, "files left in {}", trash.display());
}

/// The parent process (the per-container monitor) of `pid`.
fn monitor_of(pid: i32) -> Vec<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    vec![ppid]
}

#[test]
fn exec_streams_env_and_exit_codes() {
    root_or_skip!("exec_streams_env_and_exit_codes");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "ex", "-c", "environment.GREETING=hi"]);
    let r = d.ctl(&[
        "exec",
        "ex",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (7, "out\n", "err\n")
    );
    let r = d.ctl_stdin(
        &["exec", "ex", "--", "wc", "-c"],
        Some(&vec![b'x'; 100_000]),
    );
    assert_eq!(r.stdout.trim(), "100000", "{r:?}");
    let r = d.ctl(&[
        "exec",
        "ex",
        "--env",
        "FOO=bar",
        "--",
        "sh",
        "-c",
        "echo $FOO $GREETING $HOME; pwd",
    ]);
    assert_eq!(r.stdout, "bar hi /root\n/root\n", "{r:?}");
    let r = d.ctl(&["exec", "ex", "--cwd", "/tmp", "--", "pwd"]);
    assert_eq!(r.stdout, "/tmp\n");
    let r = d.ctl(&["exec", "ex", "--", "no-such-command"]);
    assert_eq!(r.code, 127, "{r:?}");
    let r = d.ctl(&["exec", "ex", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(r.code, 137, "{r:?}");
    // The exec'd process is inside the container's cgroup.
    let r = d.ok(&["exec", "ex", "--", "cat", "/proc/self/cgroup"]);
    assert!(
        r.lines()
            .any(|l| l.contains(":pids:/") || l.starts_with("0::/")),
        "{r}"
    );
    d.ok(&["stop", "--force", "ex"]);
    let r = d.ctl(&["exec", "ex", "--", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not running"), "{r:?}");
}

/// CPU time used by the instance's cgroup, in ns.
fn cpu_ns(d: &Daemon, name: &str) -> i64 {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let stat =
            std::fs::read_to_string(d.cgroup_dir("", name).join("cpu.stat")).unwrap_or_default();
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(-1, |us| us * 1000)
    } else {
        read_num(&d.cgroup_dir("cpuacct", name).join("cpuacct.usage"))
    }
}

#[test]
fn cpu_allowance_caps_a_busy_loop() {
    root_or_skip!("cpu_allowance_caps_a_busy_loop");
    let d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "cpu",
        "-c",
        "limits.cpu.allowance=50ms/100ms",
    ]);
    // A busy loop in the background for a few seconds.
    d.ok(&[
        "exec",
        "cpu",
        "--",
        "sh",
        "-c",
        "timeout 6 sh -c 'while :; do :; done' >/dev/null 2>&1 &",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (Instant::now(), cpu_ns(&d, "cpu"));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, c1) = (Instant::now(), cpu_ns(&d, "cpu"));
    let share = (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64;
    assert!(
        (0.40..=0.60).contains(&share),
        "busy loop used {share:.2} of a CPU"
    );
}

#[test]
fn cpu_percent_is_a_share_under_contention() {
    root_or_skip!("cpu_percent_is_a_share_under_contention");
    // Incus semantics: `50%` is a soft share. Two busy loops pinned to one CPU, one in a
    // container at 50% and one at 100%: the first gets half the time of the second.
    let d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "half",
        "-c",
        "limits.cpu.allowance=50%",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "full",
        "-c",
        "limits.cpu.allowance=100%",
    ]);
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let w = std::fs::read_to_string(d.cgroup_dir("", "half").join("cpu.weight"))
            .unwrap_or_default();
        assert_eq!(w.trim(), "50");
    } else {
        assert_eq!(
            read_num(&d.cgroup_dir("cpu", "half").join("cpu.shares")),
            512
        );
        assert_eq!(
            read_num(&d.cgroup_dir("cpu", "full").join("cpu.shares")),
            1024
        );
    }
    for n in ["half", "full"] {
        d.ok(&[
            "exec",
            n,
            "--",
            "sh",
            "-c",
            "timeout 6 taskset -c 0 sh -c 'while :; do :; done' >/dev/null 2>&1 &",
        ]);
    }
    std::thread::sleep(Duration::from_millis(700));
    let (h0, f0) = (cpu_ns(&d, "half"), cpu_ns(&d, "full"));
    std::thread::sleep(Duration::from_secs(3));
    let (h1, f1) = (cpu_ns(&d, "half"), cpu_ns(&d, "full"));
    let (h, f) = ((h1 - h0) as f64, (f1 - f0) as f64);
    let part = h / (h + f);
    assert!(
        (0.22..=0.45).contains(&part),
        "50% vs 100% got {part:.2} of the shared CPU"
    );
}

#[test]
fn memory_limit_oom_kills_inside_only() {
    root_or_skip!("memory_limit_oom_kills_inside_only");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "mem", "-c", "limits.memory=32MiB"]);
    let limit_file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        d.cgroup_dir("", "mem").join("memory.max")
    } else {
        d.cgroup_dir("memory", "mem").join("memory.limit_in_bytes")
    };
    assert_eq!(read_num(&limit_file), 32 << 20);
    // awk doubling a string until the cgroup's OOM killer ends it.
    let r = d.ctl(&[
        "exec",
        "mem",
        "--",
        "awk",
        "BEGIN { s = \"x\"; while (1) s = s s }",
    ]);
    assert_eq!(
        r.code, 137,
        "the hog should be SIGKILLed by the OOM killer: {r:?}"
    );
    // The container and the daemon are still fine.
    assert_eq!(d.ok(&["exec", "mem", "--", "echo", "alive"]), "alive\n");
    assert_eq!(d.state("mem")["status"], "Running");
    let peak = d.state("mem")["memory"]["usage_peak"].as_i64().unwrap_or(0);
    assert!(
        peak > 8 << 20 && peak <= (32 << 20) + (1 << 20),
        "peak {peak}"
    );
}

#[test]
fn process_limit_caps_forks() {
    root_or_skip!("process_limit_caps_forks");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "pids", "-c", "limits.processes=20"]);
    // 60 parallel sleeps; forks beyond the limit fail (xargs reports them, sh goes on).
    let r = d.ctl(&[
        "exec",
        "pids",
        "--",
        "sh",
        "-c",
        "seq 60 | xargs -P 60 -n 1 sleep 2 >/dev/null 2>&1; echo done",
    ]);
    assert!(r.stdout.contains("done"), "{r:?}");
    let dir = d.cgroup_dir("pids", "pids");
    let peak = read_num(&dir.join("pids.peak"));
    if peak >= 0 {
        assert!((10..=20).contains(&peak), "pids.peak {peak}");
    }
    // v1 counts a refused fork where the forking task lives (the inner cgroup), v2 also
    // where the limit is.
    let events = ["pids.events", "ns/pids.events"]
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .join(" ");
    let refused: i64 = events
        .split_whitespace()
        .filter_map(|v| v.parse::<i64>().ok())
        .sum();
    assert!(
        refused > 0,
        "forks over the limit must be refused: {events}"
    );
    let current = read_num(&dir.join("pids.current"));
    assert!((1..=20).contains(&current), "pids.current {current}");
    assert_eq!(d.state("pids")["processes"].as_i64(), Some(current));
}

fn survives_daemon_death(signal: i32) {
    let mut d = Daemon::start();
    d.ok(&["launch", "busybox", "keep"]);
    let pid = d.init_pid("keep");
    d.kill(signal);
    assert!(pid_alive(pid), "container died with the daemon");
    d.restart();
    assert_eq!(d.init_pid("keep"), pid);
    assert_eq!(d.state("keep")["status"], "Running");
    assert_eq!(d.ok(&["exec", "keep", "--", "echo", "ok"]), "ok\n");
    d.ok(&["stop", "keep"]);
    assert!(!pid_alive(pid));
    d.ok(&["start", "keep"]);
    assert!(d.init_pid("keep") > 0);
    d.ok(&["delete", "--force", "keep"]);
    assert!(d.instances().is_empty());
}

#[test]
fn container_survives_daemon_sigkill() {
    root_or_skip!("container_survives_daemon_sigkill");
    survives_daemon_death(9);
}

#[test]
fn container_survives_daemon_sigterm() {
    root_or_skip!("container_survives_daemon_sigterm");
    survives_daemon_death(15);
}

#[test]
fn stopped_while_daemon_away_is_reconciled() {
    root_or_skip!("stopped_while_daemon_away_is_reconciled");
    let mut d = Daemon::start();
    d.ok(&["launch", "busybox", "gone"]);
    let pid = d.init_pid("gone");
    d.kill(9);
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(pid)));
    // A create that died before its row was written left a directory behind: never removed
    // at start-up (ctld deletes no directory it has no record of), replaced by the next
    // create of that name.
    let orphan = d.path().join("containers/orphan");
    std::fs::create_dir_all(orphan.join("upper")).unwrap_or_default();
    std::fs::write(orphan.join("upper/left"), b"x").unwrap_or_default();
    d.restart();
    assert!(
        orphan.join("upper/left").exists(),
        "an unknown directory was removed"
    );
    assert!(d.log().contains("unfinished container directory"));
    d.ok(&["init", "busybox", "orphan"]);
    assert!(
        !orphan.join("upper/left").exists(),
        "the create replaced it"
    );
    assert!(orphan.join("backup.yaml").exists());
    assert_eq!(d.state("gone")["status"], "Stopped");
    assert!(
        !d.cgroup_dir("pids", "gone").exists(),
        "stale cgroup not removed"
    );
    d.ok(&["start", "gone"]);
    assert_eq!(d.state("gone")["status"], "Running");
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    root_or_skip!("bad_input_is_refused_and_leaves_nothing");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "ok1"]);
    let post = |body: &str| d.http("POST", "/1.0/instances", Some(body));
    let cases: &[(&str, u16, &str)] = &[
        (
            r#"{"name":"1abc","source":{"type":"image","alias":"busybox"}}"#,
            400,
            "1abc",
        ),
        (
            r#"{"name":"bad-","source":{"type":"image","alias":"busybox"}}"#,
            400,
            "bad-",
        ),
        (
            r#"{"name":"UPPER","source":{"type":"image","alias":"busybox"}}"#,
            400,
            "UPPER",
        ),
        (
            r#"{"name":"ok1","source":{"type":"image","alias":"busybox"}}"#,
            409,
            "ok1",
        ),
        (
            r#"{"name":"x1","source":{"type":"image","alias":"nope/nope"}}"#,
            404,
            "busybox",
        ),
        (
            r#"{"name":"x2","source":{"type":"image","alias":"busybox"},"config":{"limits.bogus":"1"}}"#,
            400,
            "limits.bogus",
        ),
        (
            r#"{"name":"x3","source":{"type":"image","alias":"busybox"},"config":{"limits.memory":"banana"}}"#,
            400,
            "limits.memory",
        ),
        (
            r#"{"name":"x4","source":{"type":"image","alias":"busybox"},"config":{"limits.memory":"-1"}}"#,
            400,
            "limits.memory",
        ),
        (r#"{"name": "x5", "source": "#, 400, "invalid request body"),
    ];
    for (body, status, needle) in cases {
        let (code, v) = post(body);
        assert_eq!(code, *status, "{body} → {v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error_code"].as_u64(), Some(u64::from(*status)));
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{body}: error {msg:?} should name {needle:?}"
        );
    }
    let (code, v) = d.http("GET", "/1.0/instances/missing", None);
    assert_eq!((code, v["error_code"].as_u64()), (404, Some(404)));
    let (code, _) = d.http(
        "PUT",
        "/1.0/instances/missing/state",
        Some(r#"{"action":"start"}"#),
    );
    assert_eq!(code, 404);
    let (code, _) = d.http(
        "PUT",
        "/1.0/instances/ok1/state",
        Some(r#"{"action":"dance"}"#),
    );
    assert_eq!(code, 400);
    let (code, v) = d.http("DELETE", "/1.0/instances/ok1", None);
    assert_eq!(code, 400, "deleting a running instance: {v}");
    let (code, v) = d.http(
        "PATCH",
        "/1.0/instances/ok1",
        Some(r#"{"config":{"limits.processes":"many"}}"#),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.processes")
    );
    // Through ctl: one clear line and a non-zero exit.
    let r = d.ctl(&["launch", "busybox", "-c", "limits.memory=banana"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("limits.memory"), "{r:?}");
    // Nothing half-created.
    assert_eq!(d.instances(), vec!["ok1".to_string()]);
    let dirs: Vec<_> = std::fs::read_dir(d.path().join("containers"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    for n in ["x1", "x2", "x3", "x4", "x5"] {
        assert!(!d.cgroup_dir("pids", n).exists());
    }
}

#[test]
fn failed_start_undoes_its_steps() {
    root_or_skip!("failed_start_undoes_its_steps");
    let d = Daemon::start();
    let r = d.ctl(&[
        "launch",
        "busybox",
        "broken",
        "-c",
        "raw.init=/no/such/init",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/no/such/init"), "{r:?}");
    // The instance exists, stopped (as Incus leaves it); the start left nothing behind.
    assert_eq!(d.state("broken")["status"], "Stopped");
    assert!(
        !d.cgroup_dir("pids", "broken").exists(),
        "cgroup left by failed start"
    );
    // Fixing the config makes it start.
    let (code, v) = d.http(
        "PATCH",
        "/1.0/instances/broken",
        Some(r#"{"config":{"raw.init":""}}"#),
    );
    assert_eq!(code, 200, "{v}");
    d.ok(&["start", "broken"]);
    assert_eq!(d.ok(&["exec", "broken", "--", "echo", "up"]), "up\n");
}

#[test]
fn minimal_init_for_images_without_one() {
    root_or_skip!("minimal_init_for_images_without_one");
    let d = Daemon::start();
    // Remove /sbin/init from the container's view: the built-in init takes over.
    d.ok(&["init", "busybox", "noinit"]);
    let upper = d.path().join("containers/noinit/upper");
    std::fs::create_dir_all(upper.join("sbin")).unwrap_or_default();
    // An overlay whiteout is a 0/0 character device.
    let st = std::process::Command::new("mknod")
        .arg(upper.join("sbin/init"))
        .args(["c", "0", "0"])
        .status();
    assert!(st.is_ok_and(|s| s.success()));
    d.ok(&["start", "noinit"]);
    let ps = d.ok(&["exec", "noinit", "--", "ps", "-o", "pid,comm"]);
    let first = ps.lines().nth(1).unwrap_or_default().to_string();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["1", "ctl-init"],
        "{ps}"
    );
    // Zombies are reaped by the minimal init.
    d.ok(&["exec", "noinit", "--", "sh", "-c", "sleep 0 & exit 0"]);
    std::thread::sleep(Duration::from_millis(200));
    let ps = d.ok(&["exec", "noinit", "--", "ps", "-o", "stat"]);
    assert!(!ps.lines().any(|l| l.trim() == "Z"), "zombie left: {ps}");
    let t0 = Instant::now();
    d.ok(&["stop", "noinit"]);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "SIGTERM should stop the minimal init"
    );
}

#[test]
fn api_shape_follows_incus() {
    root_or_skip!("api_shape_follows_incus");
    let d = Daemon::start();
    let (code, v) = d.http("GET", "/1.0", None);
    assert_eq!(code, 200);
    assert_eq!(v["type"], "sync");
    assert_eq!(v["status_code"], 200);
    let m = &v["metadata"];
    assert_eq!(m["api_version"], "1.0");
    assert!(m["api_extensions"].is_array());
    assert_eq!(m["auth"], "trusted");
    assert!(
        m["environment"]["kernel_version"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        ["v1", "v2", "hybrid"].contains(&m["environment"]["cgroup_version"].as_str().unwrap_or(""))
    );

    // Async create: 202 with Location, then wait.
    let head = d.http_head(
        "POST",
        "/1.0/instances",
        r#"{"name":"a1","source":{"type":"image","alias":"busybox"},"start":true}"#,
    );
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    let loc = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("location: ")
                .or_else(|| l.strip_prefix("Location: "))
        })
        .unwrap_or_default()
        .to_string();
    assert!(loc.starts_with("/1.0/operations/"), "{head}");
    let (code, v) = d.http("GET", &format!("{loc}/wait?timeout=30"), None);
    assert_eq!(code, 200);
    assert_eq!(v["metadata"]["status"], "Success", "{v}");
    assert_eq!(v["metadata"]["status_code"], 200);
    assert_eq!(
        v["metadata"]["resources"]["instances"][0],
        "/1.0/instances/a1"
    );

    for (q, check) in [
        ("?recursion=0", "string"),
        ("?recursion=1", "object"),
        ("?recursion=2", "state"),
        ("?recursion=1&filter=", "object"),
    ] {
        let (code, v) = d.http("GET", &format!("/1.0/instances{q}"), None);
        assert_eq!(code, 200, "{q}");
        let first = &v["metadata"][0];
        match check {
            "string" => assert_eq!(first, "/1.0/instances/a1"),
            "object" => {
                assert_eq!(first["name"], "a1");
                assert_eq!(first["status"], "Running");
                assert_eq!(first["type"], "container");
                assert!(first["expanded_config"].is_object());
            }
            _ => {
                assert_eq!(first["state"]["status"], "Running");
                assert!(first["state"]["pid"].as_i64().unwrap_or(0) > 0);
            }
        }
    }
    let (_, v) = d.http("GET", "/1.0/instances/a1/state", None);
    assert!(
        v["metadata"]["memory"]["usage"].as_i64().unwrap_or(0) > 0,
        "{v}"
    );
    assert!(v["metadata"]["processes"].as_i64().unwrap_or(0) >= 1, "{v}");

    // Operations list and lookup.
    let (code, v) = d.http("GET", "/1.0/operations", None);
    assert_eq!(code, 200);
    assert!(v["metadata"]["success"].is_array(), "{v}");
    let (code, _) = d.http("GET", "/1.0/operations/no-such-op", None);
    assert_eq!(code, 404);

    // Images and aliases, names with '/' percent-encoded.
    let (_, v) = d.http("GET", "/1.0/images?recursion=1", None);
    let img = &v["metadata"][0];
    assert_eq!(img["aliases"][0]["name"], "busybox");
    let fp = img["fingerprint"].as_str().unwrap_or_default().to_string();
    let (code, v) = d.http("GET", &format!("/1.0/images/{}", &fp[..12]), None);
    assert_eq!(
        (code, v["metadata"]["fingerprint"].as_str()),
        (200, Some(fp.as_str()))
    );
    let (code, v) = d.http("GET", "/1.0/images/aliases/busybox", None);
    assert_eq!(
        (code, v["metadata"]["target"].as_str()),
        (200, Some(fp.as_str()))
    );
    let (code, v) = d.http("GET", "/1.0/images/aliases/debian%2Fnosuch", None);
    assert_eq!(code, 404);
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("debian/bookworm") && msg.contains("busybox"),
        "{msg}"
    );
    // An image in use cannot be deleted.
    let (code, _) = d.http("DELETE", &format!("/1.0/images/{fp}"), None);
    assert_eq!(code, 409);

    // Exec: a websocket operation with per-stream secrets; a wrong secret is refused.
    let (code, v) = d.http(
        "POST",
        "/1.0/instances/a1/exec",
        Some(r#"{"command":["true"],"wait-for-websocket":true,"interactive":false}"#),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["metadata"]["class"], "websocket");
    let fds = &v["metadata"]["metadata"]["fds"];
    for s in ["0", "1", "2", "control"] {
        assert!(fds[s].as_str().is_some_and(|x| x.len() >= 32), "{v}");
    }
    let id = v["metadata"]["id"].as_str().unwrap_or_default();
    let head = d.http_head(
        "GET",
        &format!("/1.0/operations/{id}/websocket?secret=wrong"),
        "",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // Freeze and unfreeze.
    let (code, v) = d.http(
        "PUT",
        "/1.0/instances/a1/state",
        Some(r#"{"action":"freeze"}"#),
    );
    assert_eq!(code, 202, "{v}");
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    let (_, done) = d.http("GET", &format!("{op}/wait"), None);
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    assert_eq!(d.state("a1")["status"], "Frozen");
    let (_, v) = d.http(
        "PUT",
        "/1.0/instances/a1/state",
        Some(r#"{"action":"unfreeze"}"#),
    );
    let op = v["operation"].as_str().unwrap_or_default().to_string();
    d.http("GET", &format!("{op}/wait"), None);
    assert_eq!(d.state("a1")["status"], "Running");
}

#[test]
fn image_is_built_once_and_shared() {
    root_or_skip!("image_is_built_once_and_shared");
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start();
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    for n in &names {
        d.ok(&["launch", "busybox", n]);
    }
    let (_, v) = d.http("GET", "/1.0/images", None);
    assert_eq!(v["metadata"].as_array().map(Vec::len), Some(1), "{v}");
    let lower = image_rootfs(&d);
    let busybox = lower.join("bin/busybox");
    let before = std::fs::read(&busybox).unwrap_or_default();
    let lower_md = std::fs::metadata(&busybox).unwrap_or_else(|e| panic!("{e}"));
    for n in &names {
        // Unprivileged: the init is a non-root host user, container root inside.
        let host_uid = d.init_host_uid(n);
        assert!(host_uid >= 100_000, "{n}: init runs as host uid {host_uid}");
        assert_eq!(d.ok(&["exec", n, "--", "id", "-u"]).trim(), "0");
        let mounts = d.ok(&["exec", n, "--", "cat", "/proc/mounts"]);
        assert!(
            mounts.lines().any(|l| l.starts_with("overlay / overlay")),
            "{mounts}"
        );
        // One copy on disk: the file each container sees is the image layer's inode.
        let ino = d.ok(&["exec", n, "--", "stat", "-c", "%i %u", "/bin/busybox"]);
        assert_eq!(ino.trim(), format!("{} 0", lower_md.ino()), "{n}");
        // What root writes inside lands in the container's upper layer with mapped ids.
        d.ok(&[
            "exec",
            n,
            "--",
            "sh",
            "-c",
            "echo x > /bin/busybox-note; echo y >> /etc/passwd",
        ]);
        let upper = d.path().join("containers").join(n).join("upper");
        for f in ["bin/busybox-note", "etc/passwd"] {
            let md = std::fs::metadata(upper.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!((md.uid(), md.gid()), (host_uid, host_uid), "{n}: {f}");
        }
    }
    // The shared layer is unchanged: same bytes, still root's, nothing added to it.
    let after_md = std::fs::metadata(&busybox).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&busybox).unwrap_or_default(), before);
    assert_eq!((after_md.uid(), after_md.ino()), (0, lower_md.ino()));
    assert!(!lower.join("bin/busybox-note").exists());
    let passwd = std::fs::read_to_string(lower.join("etc/passwd")).unwrap_or_default();
    assert!(!passwd.contains("\ny\n"), "{passwd}");
    let listing = d.ok(&["image", "list"]);
    assert!(listing.contains("busybox"), "{listing}");
    for n in &names {
        d.ok(&["delete", "-f", n]);
    }
    d.ok(&["image", "delete", "busybox"]);
    let (_, v) = d.http("GET", "/1.0/images", None);
    assert_eq!(v["metadata"].as_array().map(Vec::len), Some(0));
    assert!(!lower.exists());
    // Launching again rebuilds it; without a name the server picks a valid one.
    let out = d.ok(&["launch", "busybox"]);
    let picked = out
        .lines()
        .find_map(|l| l.strip_prefix("Instance name is: "))
        .unwrap_or_default()
        .to_string();
    assert_eq!(d.instances(), vec![picked.clone()], "{out}");
    assert_eq!(d.state(&picked)["status"], "Running");
}

#[test]
fn the_start_up_probe_finds_where_idmapped_mounts_work() {
    root_or_skip!("the_start_up_probe_finds_where_idmapped_mounts_work");
    /// Unmounts the scratch ramfs however the test ends.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ramfs = tmp.path().join("ramfs");
    std::fs::create_dir(&ramfs).unwrap_or_else(|e| panic!("{e}"));
    let mounted = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&ramfs)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mount a ramfs");
    let _unmount = Unmount(ramfs.clone());
    let probe = |dir: &std::path::Path| {
        Command::new(bin_dir().join("ctld"))
            .arg("forkprobe")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // This kernel id-maps the test directory's filesystem (ext4 or tmpfs), even with a
    // filesystem that cannot be id-mapped mounted below it...
    let ok = probe(tmp.path());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // ...and not ramfs, which has no id-mapped mounts.
    let no = probe(&ramfs);
    assert_eq!(no.status.code(), Some(1));
    let why = String::from_utf8_lossy(&no.stderr);
    assert!(why.contains("id-mapped mount: Invalid argument"), "{why}");
    // A daemon left to choose picks id-mapped mounts here, and says so.
    let d = Daemon::start();
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("image layers for unprivileged") && l.contains("Idmapped")),
        "{log}"
    );
}

#[test]
fn without_idmapped_mounts_containers_share_one_shifted_copy_per_id_map() {
    root_or_skip!("without_idmapped_mounts_containers_share_one_shifted_copy_per_id_map");
    use std::os::unix::fs::MetadataExt;
    // What a kernel or filesystem without id-mapped mounts gets (the probe's fallback).
    let mut d = Daemon::start_with(&["--image-shift", "copy"]);
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("image layers for unprivileged") && l.contains("Copy")),
        "{log}"
    );
    for n in ["a", "b"] {
        d.ok(&["launch", "busybox", n]);
    }
    d.ok(&[
        "launch",
        "busybox",
        "i",
        "-c",
        "security.idmap.isolated=true",
    ]);
    d.ok(&["launch", "busybox", "p", "-c", "security.privileged=true"]);
    let lower = image_rootfs(&d);
    let layer_md = std::fs::metadata(lower.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
    let copies = lower.with_file_name("shifted");
    let list = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    // One copy for the shared range (a and b), one for the isolated range; none for p.
    assert_eq!(list(&copies).len(), 2, "{:?}", list(&copies));
    let (a, i) = (d.init_host_uid("a"), d.init_host_uid("i"));
    assert!(
        a >= 100_000 && a == d.init_host_uid("b") && i != a,
        "{a} {i}"
    );
    for (n, uid) in [("a", a), ("b", a), ("i", i)] {
        assert_eq!(d.ok(&["exec", n, "--", "id", "-u"]).trim(), "0");
        // Inside, the image's files are root's and setuid-free busybox runs.
        let seen = d.ok(&["exec", n, "--", "stat", "-c", "%u %g %i", "/bin/busybox"]);
        let copy = list(&copies)
            .into_iter()
            .find(|c| std::fs::metadata(c.join("bin/busybox")).is_ok_and(|m| m.uid() == uid))
            .unwrap_or_else(|| panic!("{n}: no copy owned by {uid}: {:?}", list(&copies)));
        let copy_md = std::fs::metadata(copy.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            seen.trim(),
            format!("0 0 {}", copy_md.ino()),
            "{n} sees its map's copy"
        );
        assert_eq!(copy_md.len(), layer_md.len());
        d.ok(&["exec", n, "--", "sh", "-c", "echo x > /etc/note"]);
        let md = std::fs::metadata(d.path().join("containers").join(n).join("upper/etc/note"))
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(
            md.uid(),
            uid,
            "{n}: writes land in the upper layer with mapped ids"
        );
    }
    // The privileged one sees the image layer itself; the layer is still root's.
    let seen = d.ok(&["exec", "p", "--", "stat", "-c", "%u %i", "/bin/busybox"]);
    assert_eq!(seen.trim(), format!("0 {}", layer_md.ino()));
    let after = std::fs::metadata(lower.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((after.uid(), after.ino()), (0, layer_md.ino()));
    // A restart and a new start reuse the copies; a half-made copy left by a crash goes
    // at the next start of ctld (and, if one is made while ctld runs, at the next copy).
    std::fs::create_dir_all(copies.join(".tmp-left-by-a-crash/bin"))
        .unwrap_or_else(|e| panic!("{e}"));
    d.restart();
    assert!(d.log().contains("removed an unfinished shifted copy"));
    d.ok(&["restart", "-f", "a"]);
    d.ok(&["launch", "busybox", "c"]);
    assert_eq!(d.ok(&["exec", "c", "--", "id", "-u"]).trim(), "0");
    let now = list(&copies);
    assert_eq!(now.len(), 2, "the 2 copies, the leftover gone: {now:?}");
    std::fs::create_dir_all(copies.join(".tmp-left-while-running/bin"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The next copy made removes the leftover.
    d.ok(&[
        "launch",
        "busybox",
        "j",
        "-c",
        "security.idmap.isolated=true",
    ]);
    let now = list(&copies);
    assert_eq!(now.len(), 3, "a new map, a new copy: {now:?}");
    assert!(
        now.iter().all(|p| !p.to_string_lossy().contains(".tmp-")),
        "{now:?}"
    );
    // Deleting the image takes its copies along.
    for n in ["a", "b", "c", "i", "j", "p"] {
        d.ok(&["delete", "-f", n]);
    }
    d.ok(&["image", "delete", "busybox"]);
    assert!(!copies.exists());
}

#[test]
fn nothing_left_after_daemon_cleanup() {
    root_or_skip!("nothing_left_after_daemon_cleanup");
    let parent;
    {
        let d = Daemon::start();
        parent = d.cgroup_parent.clone();
        d.ok(&["launch", "busybox", "z1"]);
        d.ok(&["launch", "busybox", "z2", "-c", "limits.memory=64MiB"]);
        assert!(cgroup_parent_exists(&parent));
    }
    assert!(!cgroup_parent_exists(&parent), "test harness left cgroups");
}

#[test]
fn poweroff_inside_stops_and_cleans_up() {
    root_or_skip!("poweroff_inside_stops_and_cleans_up");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "po"]);
    let pid = d.init_pid("po");
    d.ok(&["exec", "po", "--", "poweroff"]);
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(pid)),
        "init did not exit"
    );
    assert_eq!(d.state("po")["status"], "Stopped");
    // The monitor removed the cgroup on its own.
    assert!(
        wait_until(Duration::from_secs(5), || !d
            .cgroup_dir("pids", "po")
            .exists()),
        "cgroup left after poweroff"
    );
    // And it starts again; restart works too.
    d.ok(&["start", "po"]);
    let pid2 = d.init_pid("po");
    assert!(pid2 > 0 && pid2 != pid);
    d.ok(&["restart", "--force", "po"]);
    let pid3 = d.init_pid("po");
    assert!(pid3 > 0 && pid3 != pid2 && !pid_alive(pid2));
    assert_eq!(d.ok(&["exec", "po", "--", "echo", "back"]), "back\n");
}

#[test]
fn client_gone_mid_exec_leaves_no_process() {
    root_or_skip!("client_gone_mid_exec_leaves_no_process");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "dc"]);
    // Look for the command itself (the console's shell may come and go, so task counts
    // are no baseline): a `sleep 300` among the container's processes.
    let sleeping = || {
        d.ok(&["exec", "dc", "--", "ps", "-o", "args"])
            .lines()
            .any(|l| l.trim() == "sleep 300")
    };
    let mut child = std::process::Command::new(ctl_tests::bin_dir().join("ctl"))
        .args(["exec", "dc", "--", "sleep", "300"])
        .env("CTL_DIR", d.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ctl: {e}"));
    assert!(
        wait_until(Duration::from_secs(5), sleeping),
        "sleep never ran"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(5), || !sleeping()),
        "the command outlived its client"
    );
}

#[test]
fn privileged_container_is_still_fenced() {
    root_or_skip!("privileged_container_is_still_fenced");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "fence"]);
    // Host kernel knobs are read-only.
    let r = d.ctl(&[
        "exec",
        "fence",
        "--",
        "sh",
        "-c",
        "echo 1 > /proc/sys/vm/drop_caches",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Read-only"), "{r:?}");
    // Both the init and exec'd commands lost CAP_SYS_MODULE (16) and CAP_SYS_TIME (25).
    for pid in ["1", "self"] {
        let status = d.ok(&["exec", "fence", "--", "cat", &format!("/proc/{pid}/status")]);
        let bnd = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX);
        assert_eq!(bnd & (1 << 16), 0, "{pid}: CAP_SYS_MODULE kept ({bnd:x})");
        assert_eq!(bnd & (1 << 25), 0, "{pid}: CAP_SYS_TIME kept ({bnd:x})");
    }
    // A block device node can be made but not opened (v1 devices controller).
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let r = d.ctl(&[
            "exec",
            "fence",
            "--",
            "sh",
            "-c",
            "mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk",
        ]);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            r.stderr.contains("not permitted") || r.stderr.contains("Permission denied"),
            "{r:?}"
        );
        assert_eq!(
            d.ok(&["exec", "fence", "--", "head", "-c", "3", "/dev/zero"])
                .len(),
            3
        );
    }
    // An exec'd command leads a session of its own (no terminal of ctld's is reachable).
    let ids = d.ok(&[
        "exec",
        "fence",
        "--",
        "sh",
        "-c",
        "echo $$ $(cut -d' ' -f6 /proc/$$/stat)",
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the command is not a session leader");
}

/// Image rootfs and container layers can hold setuid files an image brought: only root
/// may reach them; the state dir stays traversable for the socket's group.
#[test]
fn state_dirs_are_closed_to_other_users() {
    if !require_root("state_dirs_are_closed_to_other_users") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(d.path()), 0o711);
    assert_eq!(mode(&d.path().join("images")), 0o700);
    assert_eq!(mode(&d.path().join("containers")), 0o700);
}

#[test]
fn nesting_lets_a_container_make_namespaces_and_mount_proc() {
    root_or_skip!("nesting_lets_a_container_make_namespaces_and_mount_proc");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "nest", "-c", "security.nesting=true"]);
    d.ok(&["launch", "busybox", "plain"]);
    let nested = [
        "exec",
        "nest",
        "--",
        "unshare",
        "-U",
        "-r",
        "-m",
        "-p",
        "-f",
        "--mount-proc",
        "sh",
        "-c",
        "echo $$; cat /proc/self/uid_map",
    ];
    // A user, mount and PID namespace of its own inside, with a /proc of that PID namespace.
    let out = d.ok(&nested);
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim), Some("1"), "{out}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.split_whitespace().eq(["0", "0", "1"])),
        "{out}"
    );
    // Without nesting, the masked /proc cannot be mounted again in a nested namespace.
    let mut plain = nested;
    plain[1] = "plain";
    let r = d.ctl(&plain);
    assert_ne!(r.code, 0, "{r:?}");
    // Both are unprivileged all the same.
    for n in ["nest", "plain"] {
        let map = d.ok(&["exec", n, "--", "cat", "/proc/self/uid_map"]);
        assert!(
            !map.split_whitespace().eq(["0", "0", "4294967295"]),
            "{map}"
        );
    }
}

#[test]
fn id_maps_follow_the_security_keys() {
    root_or_skip!("id_maps_follow_the_security_keys");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "a"]);
    d.ok(&["launch", "busybox", "b"]);
    d.ok(&[
        "launch",
        "busybox",
        "i1",
        "-c",
        "security.idmap.isolated=true",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "i2",
        "-c",
        "security.idmap.isolated=true",
    ]);
    d.ok(&["launch", "busybox", "p", "-c", "security.privileged=true"]);
    let (a, b, i1, i2) = (
        d.init_host_uid("a"),
        d.init_host_uid("b"),
        d.init_host_uid("i1"),
        d.init_host_uid("i2"),
    );
    // Shared range for the default ones, a range of its own for each isolated one.
    assert!(a >= 100_000 && a == b, "{a} {b}");
    assert!(i1 != a && i2 != a && i1 != i2, "{a} {i1} {i2}");
    assert!(
        i1.abs_diff(i2) >= 65536 && i1.abs_diff(a) >= 65536,
        "{a} {i1} {i2}"
    );
    assert_eq!(d.init_host_uid("p"), 0);
    // Isolated containers launched at the same moment still get distinct ranges.
    let names = ["j0", "j1", "j2", "j3"];
    std::thread::scope(|s| {
        for n in names {
            let d = &d;
            s.spawn(move || {
                d.ok(&["launch", "busybox", n, "-c", "security.idmap.isolated=true"]);
            });
        }
    });
    let mut bases: Vec<u32> = names.iter().map(|n| d.init_host_uid(n)).collect();
    bases.extend([i1, i2]);
    bases.sort();
    bases.dedup();
    assert_eq!(bases.len(), 6, "isolated ranges shared: {bases:?}");
    // The map is recorded, Incus' form, and the isolated base is kept across restarts.
    let (_, v) = d.http("GET", "/1.0/instances/i1", None);
    let cur = v["metadata"]["config"]["volatile.idmap.current"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cur.contains(&format!("\"Hostid\":{i1}")), "{cur}");
    d.ok(&["restart", "-f", "i1"]);
    assert_eq!(d.init_host_uid("i1"), i1);
    // raw.idmap maps a host id straight in: a file the host made for uid 4242 is the
    // container's uid 1000.
    d.ok(&["stop", "-f", "a"]);
    d.ok(&["config", "set", "a", "raw.idmap=both 4242 1000"]);
    d.ok(&["start", "a"]);
    let map = d.ok(&["exec", "a", "--", "cat", "/proc/self/uid_map"]);
    assert!(
        map.lines()
            .any(|l| l.split_whitespace().eq(["1000", "4242", "1"])),
        "{map}"
    );
    // Bad values are refused before anything changes.
    for bad in [
        "raw.idmap=uid 0 0",
        "security.idmap.size=0",
        "security.privileged=maybe",
    ] {
        let r = d.ctl(&["config", "set", "b", bad]);
        assert_ne!(r.code, 0, "{bad}: {r:?}");
    }
    // Made privileged while running: takes effect at the next start, files follow.
    d.ok(&["exec", "b", "--", "touch", "/root/mine"]);
    d.ok(&["config", "set", "b", "security.privileged=true"]);
    assert_eq!(d.init_host_uid("b"), b, "changes only at the next start");
    d.ok(&["restart", "-f", "b"]);
    assert_eq!(d.init_host_uid("b"), 0);
    let owner = d.ok(&["exec", "b", "--", "stat", "-c", "%u", "/root/mine"]);
    assert_eq!(owner.trim(), "0");
    let list = d.ok(&["list", "--format", "csv"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("b,") && l.contains("CONTAINER (PRIVILEGED)")),
        "{list}"
    );
}

/// The monitor writes down what happens to the init (started, how it ended) in the
/// instance's `monitor.log`, listed with the instance's logs: a container that dies while
/// nobody watches leaves a trace.
#[test]
fn the_monitor_writes_down_how_the_init_ended() {
    if !require_root("the_monitor_writes_down_how_the_init_ended") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    let pid = d.init_pid("c1");
    let kill = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(kill);
    assert!(wait_until(
        Duration::from_secs(5),
        || d.state("c1")["status"] == "Stopped"
    ));
    let (_, logs) = d.http("GET", "/1.0/instances/c1/logs", None);
    assert!(logs.to_string().contains("monitor.log"), "{logs}");
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            text = d
                .http_text("GET", "/1.0/instances/c1/logs/monitor.log", None)
                .1;
            text.contains("was killed by SIGKILL")
        }),
        "{text}"
    );
    assert!(text.contains(&format!("init {pid} started")), "{text}");
    // What LXD clients ask for (`lxc info --show-log`), and `ctl info --show-log`.
    let (code, lxc_log) = d.http_text("GET", "/1.0/instances/c1/logs/lxc.log", None);
    assert_eq!((code, lxc_log), (200, text.clone()));
    let info = d.ok(&["info", "c1", "--show-log"]);
    assert!(
        info.contains("Log:") && info.contains("was killed by SIGKILL"),
        "{info}"
    );
}
