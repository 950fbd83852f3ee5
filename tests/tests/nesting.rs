//! `security.nesting=true`: ctl's own daemon runs inside an unprivileged container and starts
//! busybox containers of its own there, unprivileged too (a sub-range of the outer
//! container's ids), through id-mapped mounts and through shifted copies. Without the key the
//! nested start is refused by the kernel.
//!
//! The outer container is the built-in busybox image; ctld, ctl and the shared libraries
//! they link are pushed into it with `ctl file push`, as a user would. The nested daemons
//! keep their state on a tmpfs mounted inside the outer container (overlayfs cannot use
//! another overlay as its upper layer). Deleting the outer container ends them all.

use std::path::{Path, PathBuf};
use std::process::Command;

use ctl_tests::{Daemon, bin_dir, require_root};

/// The libraries `binary` loads (as `ldd` resolves them), with the dynamic loader: each
/// pushed to the same path in the container.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("ldd: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-… (0x…)`.
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Every PID in the cgroup tree below `dir` (any depth).
fn pids_below(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    pids
}

fn host_uid(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Start a nested ctld in `outer` with its state on a fresh tmpfs at `dir`.
fn start_nested_daemon(d: &Daemon, outer: &str, dir: &str, extra: &str) {
    let script = format!(
        "mkdir -p {dir} && mount -t tmpfs -o mode=0711 tmpfs {dir} && \
         (/usr/local/bin/ctld --dir {dir} --default-network=false --cgroup-parent ctl-{outer} \
          {extra} > {dir}.log 2>&1 &) && \
         i=0; while [ ! -S {dir}/unix.socket ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
         test -S {dir}/unix.socket || {{ cat {dir}.log; exit 1; }}"
    );
    d.ok(&["exec", outer, "--", "sh", "-c", &script]);
}

/// `ctl ARGS` run inside `outer` against the nested daemon in `dir`.
fn nested(d: &Daemon, outer: &str, dir: &str, args: &[&str]) -> ctl_tests::Run {
    let mut full = vec!["exec", outer, "--", "/usr/local/bin/ctl", "--dir", dir];
    full.extend_from_slice(args);
    d.ctl(&full)
}

#[test]
fn nesting_runs_ctl_and_its_unprivileged_containers_inside_a_container() {
    if !require_root("nesting_runs_ctl_and_its_unprivileged_containers_inside_a_container") {
        return;
    }
    let d = Daemon::start();
    // 131072 ids: the outer container's own 65536, and 65536 for what it nests.
    d.ok(&[
        "launch",
        "busybox",
        "outer",
        "-c",
        "security.nesting=true",
        "-c",
        "security.idmap.size=131072",
    ]);
    let outer_uid = d.init_host_uid("outer");
    assert!(
        outer_uid >= 100_000,
        "outer init runs as host uid {outer_uid}"
    );
    let bins = bin_dir();
    for b in ["ctld", "ctl"] {
        let target = format!("outer/usr/local/bin/{b}");
        let local = bins.join(b);
        let local = local.to_str().unwrap_or_default();
        d.ok(&["file", "push", "-p", "--mode", "0755", local, &target]);
    }
    let mut libs = shared_libraries(&bins.join("ctld"));
    libs.extend(shared_libraries(&bins.join("ctl")));
    libs.sort();
    libs.dedup();
    assert!(!libs.is_empty(), "ldd found the libraries");
    for lib in libs {
        let real = std::fs::canonicalize(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
        let target = format!("outer{}", lib.display());
        d.ok(&[
            "file",
            "push",
            "-p",
            real.to_str().unwrap_or_default(),
            &target,
        ]);
    }

    // A nested daemon with id-mapped mounts where they work (a tmpfs made in the outer
    // container's namespace can be id-mapped by it), and one forced to shifted copies.
    start_nested_daemon(&d, "outer", "/var/lib/n1", "");
    start_nested_daemon(&d, "outer", "/var/lib/n2", "--image-shift copy");
    for (dir, name) in [("/var/lib/n1", "inner1"), ("/var/lib/n2", "inner2")] {
        let r = nested(&d, "outer", dir, &["launch", "busybox", name]);
        assert_eq!(
            r.code, 0,
            "nested launch in {dir}: {}{}",
            r.stdout, r.stderr
        );
        let list = nested(&d, "outer", dir, &["list", "--format", "csv"]);
        assert!(
            list.stdout.contains(&format!("{name},RUNNING")),
            "{}{}",
            list.stdout,
            list.stderr
        );
        // Unprivileged inside the outer one: its root is the outer container's uid 65536.
        let id = nested(
            &d,
            "outer",
            dir,
            &[
                "exec",
                name,
                "--",
                "sh",
                "-c",
                "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox",
            ],
        );
        let words: Vec<&str> = id.stdout.split_whitespace().collect();
        assert_eq!(
            words,
            ["0", "0", "65536", "65536", "0"],
            "{}{}",
            id.stdout,
            id.stderr
        );
    }
    // From the host: the nested inits run as the outer range's uid 65536, in the outer
    // container's cgroup tree.
    let nested_uid = outer_uid + 65536;
    let tree = d.cgroup_dir("pids", "outer");
    let inits = pids_below(&tree)
        .into_iter()
        .filter(|p| host_uid(*p) == Some(nested_uid))
        .count();
    assert!(
        inits >= 2,
        "two nested inits as host uid {nested_uid} below {}",
        tree.display()
    );
    let copy_log = d.ok(&["exec", "outer", "--", "cat", "/var/lib/n2.log"]);
    assert!(
        copy_log.contains("shifted copy of an image layer made"),
        "{copy_log}"
    );

    // Without security.nesting the kernel refuses the nested container its /proc.
    d.ok(&["config", "set", "outer", "security.nesting=false"]);
    d.ok(&["restart", "--force", "outer"]);
    start_nested_daemon(&d, "outer", "/var/lib/n3", "");
    let r = nested(&d, "outer", "/var/lib/n3", &["launch", "busybox", "inner3"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("mount proc"), "{}", r.stderr);

    // Deleting the outer container ends everything it nests, cgroups included.
    d.ok(&["delete", "-f", "outer"]);
    assert!(!tree.exists(), "{} is gone", tree.display());
}
