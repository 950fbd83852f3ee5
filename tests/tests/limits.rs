//! End-to-end tests of resource limits, live updates, usage and metrics: the real `ctld`
//! and `ctl` on this host's cgroups (v1 or v2, whichever it has; the other layout is
//! covered by the fixture tests in `daemon/src/worker/cgroup.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use ctl_tests::{Daemon, pid_alive, read_num, require_root};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn cpu_ns(d: &Daemon, name: &str) -> i64 {
    d.state(name)["cpu"]["usage"].as_i64().unwrap_or(-1)
}

/// Share of one CPU the instance used over `span`.
fn cpu_share(d: &Daemon, name: &str, span: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), cpu_ns(d, name));
    std::thread::sleep(span);
    let (t1, c1) = (Instant::now(), cpu_ns(d, name));
    (c1 - c0) as f64 / (t1 - t0).as_nanos() as f64
}

fn patch(d: &Daemon, name: &str, key: &str, value: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "config": { key: value } }).to_string();
    d.http("PATCH", &format!("/1.0/instances/{name}"), Some(&body))
}

#[test]
fn cpu_quota_then_raised_live() {
    root_or_skip!("cpu_quota_then_raised_live");
    let d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "q",
        "-c",
        "limits.cpu.allowance=50ms/100ms",
    ]);
    d.ok(&[
        "exec",
        "q",
        "--",
        "sh",
        "-c",
        "timeout 12 sh -c 'while :; do :; done' >/dev/null 2>&1 &",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let throttled = || {
        std::fs::read_to_string(d.cgroup_dir("cpu", "q").join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = throttled();
    let share = cpu_share(&d, "q", Duration::from_secs(3));
    // The cap is the upper bound; on a loaded host the loop may get less than its half,
    // so the kernel's own count of throttled periods proves the quota is what held it.
    assert!(
        (0.2..=0.55).contains(&share),
        "capped loop used {share:.3} of a CPU"
    );
    assert!(
        throttled() > before,
        "the kernel throttled the loop (nr_throttled {before} → {})",
        throttled()
    );
    // Raised live: the same loop gets a whole CPU.
    let (code, v) = patch(&d, "q", "limits.cpu.allowance", "100ms/100ms");
    assert_eq!(code, 200, "{v}");
    std::thread::sleep(Duration::from_millis(300));
    let share = cpu_share(&d, "q", Duration::from_secs(3));
    assert!(
        share >= 0.85,
        "after raising the quota the loop used {share:.3} of a CPU"
    );
}

#[test]
fn memory_hog_is_oom_killed_inside_and_counted() {
    root_or_skip!("memory_hog_is_oom_killed_inside_and_counted");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "hog", "-c", "limits.memory=64MiB"]);
    let init = d.init_pid("hog");
    let r = d.ctl(&[
        "exec",
        "hog",
        "--",
        "awk",
        "BEGIN { s = \"x\"; while (1) s = s s }",
    ]);
    assert_eq!(r.code, 137, "{r:?}");
    assert!(pid_alive(init), "the container's init died");
    assert_eq!(d.ok(&["exec", "hog", "--", "echo", "up"]), "up\n");
    let (_, v) = d.http("GET", "/1.0", None);
    assert_eq!(v["metadata"]["api_version"], "1.0", "daemon must stay up");
    let metrics = metrics_text(&d);
    let oom = sample(&metrics, "ctl_memory_OOM_kills_total", "hog");
    assert!(oom >= 1.0, "OOM kill not counted: {oom}");
    let total = sample(&metrics, "ctl_memory_MemTotal_bytes", "hog");
    assert_eq!(total as u64, 64 << 20);
}

#[test]
fn fork_bomb_is_capped() {
    root_or_skip!("fork_bomb_is_capped");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "bomb", "-c", "limits.processes=64"]);
    let dir = if v2() {
        ctl_tests::cgroup_root("pids")
            .join(&d.cgroup_parent)
            .join("bomb")
    } else {
        d.cgroup_dir("pids", "bomb")
    };
    // A fork bomb that keeps its processes alive; sample the task count while it runs.
    let mut bomb = std::process::Command::new(ctl_tests::bin_dir().join("ctl"))
        .args([
            "exec",
            "bomb",
            "--",
            "sh",
            "-c",
            "b() { b | b & sleep 4; }; b >/dev/null 2>&1",
        ])
        .env("CTL_DIR", d.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ctl: {e}"));
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        most = most.max(read_num(&dir.join("pids.current")));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!((32..=64).contains(&most), "most tasks seen: {most}");
    let peak = read_num(&dir.join("pids.peak"));
    assert!(peak == -1 || (32..=64).contains(&peak), "pids.peak {peak}");
    // v1 counts a refused fork where the forking task lives (the inner cgroup).
    let events = ["pids.events", "ns/pids.events"]
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
        .join(" ");
    assert!(
        events
            .split_whitespace()
            .filter_map(|n| n.parse::<i64>().ok())
            .any(|n| n > 0),
        "no fork was refused: {events}"
    );
    // The host and the daemon are fine, and a forced stop clears it all.
    d.ok(&["stop", "--force", "bomb"]);
    let _ = bomb.kill();
    let _ = bomb.wait();
    assert!(!dir.exists(), "cgroup left after stopping the bomb");
}

#[test]
fn cpu_pinning_and_live_cpuset() {
    root_or_skip!("cpu_pinning_and_live_cpuset");
    let d = Daemon::start();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    d.ok(&["launch", "busybox", "pin", "-c", "limits.cpu=1"]);
    let allowed = |d: &Daemon| {
        d.ok(&[
            "exec",
            "pin",
            "--",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ])
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
    };
    let one = allowed(&d);
    assert!(!one.contains('-') && !one.contains(','), "pinned to {one}");
    // The init too, not only exec'd commands.
    let init = d.ok(&[
        "exec",
        "pin",
        "--",
        "grep",
        "Cpus_allowed_list",
        "/proc/1/status",
    ]);
    assert!(init.trim_end().ends_with(&format!("\t{one}")), "{init}");
    // An explicit set, live.
    let (code, v) = patch(&d, "pin", "limits.cpu", online.trim());
    assert_eq!(code, 200, "{v}");
    assert_eq!(allowed(&d), online.trim());
    // Bad sets are refused with the key named, nothing changes.
    let (code, v) = patch(&d, "pin", "limits.cpu", "0-99");
    assert_eq!(code, 400);
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("limits.cpu") && msg.contains("not online"),
        "{msg}"
    );
    assert_eq!(allowed(&d), online.trim());
}

#[test]
fn bad_limit_values_name_the_key() {
    root_or_skip!("bad_limit_values_name_the_key");
    let d = Daemon::start();
    for (key, value) in [
        ("limits.memory", "-1"),
        ("limits.memory", "banana"),
        ("limits.cpu", "0-99"),
        ("limits.cpu", "0"),
        ("limits.cpu.allowance", "150%"),
        ("limits.cpu.priority", "11"),
        ("limits.memory.enforce", "sometimes"),
        ("limits.memory.swap", "maybe"),
        ("limits.processes", "-5"),
        ("limits.disk.priority", "x"),
    ] {
        let r = d.ctl(&["launch", "busybox", "bad", "-c", &format!("{key}={value}")]);
        assert_ne!(r.code, 0, "{key}={value} accepted");
        assert!(r.stderr.contains(key), "{key}={value}: {r:?}");
    }
    assert!(d.instances().is_empty(), "{:?}", d.instances());
}

#[test]
fn live_memory_limits_and_start_only_keys() {
    root_or_skip!("live_memory_limits_and_start_only_keys");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "lm", "-c", "limits.memory=64MiB"]);
    let limit = |d: &Daemon| {
        if v2() {
            read_num(&d.cgroup_dir("", "lm").join("memory.max"))
        } else {
            read_num(&d.cgroup_dir("memory", "lm").join("memory.limit_in_bytes"))
        }
    };
    assert_eq!(limit(&d), 64 << 20);
    let (code, _) = patch(&d, "lm", "limits.memory", "128MiB");
    assert_eq!(code, 200);
    assert_eq!(limit(&d), 128 << 20);
    // Soft enforcement moves the value to the soft limit and lifts the hard one.
    let (code, v) = patch(&d, "lm", "limits.memory.enforce", "soft");
    assert_eq!(code, 200, "{v}");
    if !v2() {
        assert_eq!(
            read_num(
                &d.cgroup_dir("memory", "lm")
                    .join("memory.soft_limit_in_bytes")
            ),
            128 << 20
        );
        assert!(limit(&d) > 1 << 40, "hard limit not lifted: {}", limit(&d));
    }
    // Unset (empty value) removes the limit live.
    let (code, _) = patch(&d, "lm", "limits.memory", "");
    assert_eq!(code, 200);
    let (_, inst) = d.http("GET", "/1.0/instances/lm", None);
    assert!(
        inst["metadata"]["config"]["limits.memory"].is_null(),
        "{inst}"
    );
    // raw.init cannot change while running, and says so.
    let (code, v) = patch(&d, "lm", "raw.init", "/bin/sh");
    assert_eq!(code, 400);
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains("raw.init") && msg.contains("running"), "{msg}");
}

#[test]
fn usage_moves_when_the_container_works() {
    root_or_skip!("usage_moves_when_the_container_works");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "busy"]);
    let before = d.state("busy");
    d.ok(&[
        "exec",
        "busy",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
         dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; \
         dd if=/dev/zero of=/root/blob bs=1M count=5 2>/dev/null; \
         ping -c 2 -W 1 127.0.0.1 >/dev/null",
    ]);
    let after = d.state("busy");
    let n = |v: &serde_json::Value, p: &str| v.pointer(p).and_then(|x| x.as_i64()).unwrap_or(-1);
    assert!(
        n(&after, "/cpu/usage") > n(&before, "/cpu/usage") + 10_000_000,
        "cpu"
    );
    assert!(
        n(&after, "/memory/usage") >= n(&before, "/memory/usage") + (20 << 20),
        "memory"
    );
    assert!(n(&after, "/disk/root/usage") >= 5 << 20, "disk: {after}");
    assert!(
        n(&after, "/network/lo/counters/packets_received")
            >= n(&before, "/network/lo/counters/packets_received") + 4,
        "lo counters: {after}"
    );
    assert_eq!(
        after["network"]["lo"]["addresses"][0]["address"],
        "127.0.0.1"
    );
    assert!(n(&after, "/processes") >= 1);
}

fn metrics_text(d: &Daemon) -> String {
    let (code, text) = d.http_text("GET", "/1.0/metrics", None);
    assert_eq!(code, 200, "{text}");
    text
}

/// The value of `metric` for instance `name` (first matching sample).
fn sample(text: &str, metric: &str, name: &str) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}\n{text}"));
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get("name") == Some(name))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {metric} for {name} in\n{text}"))
}

#[test]
fn metrics_parse_with_one_series_set_per_running_instance() {
    root_or_skip!("metrics_parse_with_one_series_set_per_running_instance");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "m1"]);
    d.ok(&["launch", "busybox", "m2", "-c", "limits.memory=100MiB"]);
    d.ok(&["init", "busybox", "m3"]);
    let text = metrics_text(&d);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("name"))
        .collect();
    assert_eq!(names, ["m1", "m2"].into_iter().collect(), "{text}");
    for metric in [
        "ctl_cpu_seconds_total",
        "ctl_memory_MemTotal_bytes",
        "ctl_memory_MemFree_bytes",
        "ctl_procs_total",
        "ctl_network_receive_bytes_total",
    ] {
        for n in ["m1", "m2"] {
            let count = scrape
                .samples
                .iter()
                .filter(|s| s.metric == metric && s.labels.get("name") == Some(n))
                .count();
            assert!(count >= 1, "{metric} for {n}");
        }
    }
    assert_eq!(
        sample(&text, "ctl_memory_MemTotal_bytes", "m2") as u64,
        100 << 20
    );
    assert!(sample(&text, "ctl_procs_total", "m1") >= 1.0);
    // Stopping one removes its series.
    d.ok(&["stop", "-f", "m1"]);
    let text = metrics_text(&d);
    assert!(!text.contains("name=\"m1\""), "{text}");
}

#[test]
fn cgroup_namespace_view_and_nesting() {
    root_or_skip!("cgroup_namespace_view_and_nesting");
    let d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "view",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.processes=50",
    ]);
    let cg = d.ok(&["exec", "view", "--", "cat", "/proc/self/cgroup"]);
    assert!(cg.lines().all(|l| l.ends_with(":/")), "{cg}");
    if v2() {
        let max = d.ok(&["exec", "view", "--", "cat", "/sys/fs/cgroup/pids.max"]);
        assert_eq!(max.trim(), "50");
    } else {
        // The container's own limits, at the root of its view; the host tree is not there.
        let lim = d.ok(&[
            "exec",
            "view",
            "--",
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]);
        assert_eq!(lim.trim(), (64u64 << 20).to_string());
        let max = d.ok(&["exec", "view", "--", "cat", "/sys/fs/cgroup/pids/pids.max"]);
        assert_eq!(max.trim(), "50");
        let ls = d.ok(&["exec", "view", "--", "ls", "/sys/fs/cgroup/memory"]);
        assert!(!ls.contains(&d.cgroup_parent), "host tree visible: {ls}");
        // v1 views are read-only: the container cannot lift its own limits.
        let r = d.ctl(&[
            "exec",
            "view",
            "--",
            "sh",
            "-c",
            "echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]);
        assert_ne!(r.code, 0, "{r:?}");
    }
    // Nesting on cgroup v2 (the whole tree on v2 hosts, the unified tree on hybrid ones):
    // a sub-cgroup inside the container takes a process.
    let v2_root = if v2() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
    {
        let script = format!(
            "mkdir {v2_root}/inner && echo $$ > {v2_root}/inner/cgroup.procs && cat /proc/self/cgroup"
        );
        let out = d.ok(&["exec", "view", "--", "sh", "-c", &script]);
        assert!(out.lines().any(|l| l == "0::/inner"), "{out}");
        let host_side = if v2() {
            ctl_tests::cgroup_root("")
                .join(&d.cgroup_parent)
                .join("view/ns/inner")
        } else {
            Path::new("/sys/fs/cgroup/unified")
                .join(&d.cgroup_parent)
                .join("view/ns/inner")
        };
        assert!(host_side.is_dir(), "{}", host_side.display());
        d.ok(&["stop", "-f", "view"]);
        assert!(!host_side.exists(), "nested cgroup left after stop");
    }
}

#[test]
fn lxcfs_gives_container_accurate_proc_files() {
    root_or_skip!("lxcfs_gives_container_accurate_proc_files");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mounts.contains(" - fuse.lxcfs ") {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "lxcfs is not running (`.ci/run` starts it); CTL_REQUIRE_ALL forbids skipping"
        );
        eprintln!("SKIP lxcfs_gives_container_accurate_proc_files: lxcfs not running");
        return;
    }
    let d = Daemon::start();
    d.ok(&[
        "launch",
        "busybox",
        "fs",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.cpu=1",
    ]);
    let meminfo = d.ok(&["exec", "fs", "--", "head", "-1", "/proc/meminfo"]);
    assert_eq!(
        meminfo.split_whitespace().nth(1),
        Some("65536"),
        "{meminfo}"
    );
    let cpus = d.ok(&[
        "exec",
        "fs",
        "--",
        "grep",
        "-c",
        "^processor",
        "/proc/cpuinfo",
    ]);
    assert_eq!(cpus.trim(), "1");
    // top inside sees the container's memory, not the host's.
    let top = d.ok(&["exec", "fs", "--", "top", "-bn1"]);
    let mem = top.lines().next().unwrap_or_default();
    let kib = |word: &str| {
        mem.split_whitespace()
            .zip(mem.split_whitespace().skip(1))
            .find(|(_, w)| w.starts_with(word))
            .and_then(|(n, _)| n.trim_end_matches('K').parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(kib("used") + kib("free") <= 65536, "{mem}");
    // A live change shows up at once.
    let (code, _) = patch(&d, "fs", "limits.memory", "128MiB");
    assert_eq!(code, 200);
    let meminfo = d.ok(&["exec", "fs", "--", "head", "-1", "/proc/meminfo"]);
    assert_eq!(
        meminfo.split_whitespace().nth(1),
        Some("131072"),
        "{meminfo}"
    );
}

#[test]
fn ctl_config_and_top_drive_live_limits() {
    root_or_skip!("ctl_config_and_top_drive_live_limits");
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "cfg", "-c", "limits.processes=30"]);
    d.ok(&["launch", "busybox", "idle"]);
    let pids_max = |d: &Daemon| {
        if v2() {
            read_num(&d.cgroup_dir("", "cfg").join("pids.max"))
        } else {
            read_num(&d.cgroup_dir("pids", "cfg").join("pids.max"))
        }
    };
    assert_eq!(pids_max(&d), 30);
    d.ok(&[
        "config",
        "set",
        "cfg",
        "limits.processes=40",
        "user.note=a=b",
    ]);
    assert_eq!(pids_max(&d), 40, "not applied live");
    assert_eq!(
        d.ok(&["config", "get", "cfg", "limits.processes"]).trim(),
        "40"
    );
    assert_eq!(d.ok(&["config", "get", "cfg", "user.note"]).trim(), "a=b");
    let show = d.ok(&["config", "show", "cfg"]);
    assert!(
        show.contains("limits.processes: '40'") || show.contains("limits.processes: \"40\""),
        "{show}"
    );
    d.ok(&["config", "unset", "cfg", "limits.processes"]);
    assert_eq!(
        d.ok(&["config", "get", "cfg", "limits.processes"]).trim(),
        ""
    );
    let max = if v2() {
        std::fs::read_to_string(d.cgroup_dir("", "cfg").join("pids.max"))
    } else {
        std::fs::read_to_string(d.cgroup_dir("pids", "cfg").join("pids.max"))
    };
    assert_eq!(max.unwrap_or_default().trim(), "max");
    // Refusals are one clear line naming the key.
    let r = d.ctl(&["config", "set", "cfg", "limits.memory=-1"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("limits.memory"), "{r:?}");
    // `config edit` from stdin replaces the config (a PUT).
    let edited = show.replace("user.note: a=b", "user.note: edited");
    let r = d.ctl_stdin(&["config", "edit", "cfg"], Some(edited.as_bytes()));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        d.ok(&["config", "get", "cfg", "user.note"]).trim(),
        "edited"
    );

    // `ctl top` sees the busy one busy and the idle one idle.
    d.ok(&[
        "exec",
        "cfg",
        "--",
        "sh",
        "-c",
        "timeout 5 sh -c 'while :; do :; done' >/dev/null 2>&1 &",
    ]);
    let top = d.ok(&["top", "--count", "1", "--refresh", "1", "--format", "csv"]);
    let row = |name: &str| {
        top.lines()
            .find(|l| l.starts_with(&format!("{name},")))
            .unwrap_or_default()
            .to_string()
    };
    let header: Vec<&str> = top.lines().next().unwrap_or_default().split(',').collect();
    let col = header
        .iter()
        .position(|h| h.starts_with("CPU"))
        .unwrap_or(2);
    let cpu = |name: &str| {
        row(name)
            .split(',')
            .nth(col)
            .and_then(|v| v.trim_end_matches('%').trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert!(cpu("cfg") > 50.0, "busy instance: {top}");
    assert!((0.0..10.0).contains(&cpu("idle")), "idle instance: {top}");
}
