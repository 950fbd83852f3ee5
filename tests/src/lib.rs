//! Shared harness for the end-to-end tests: a real `ctld` on a temp state directory with its
//! own cgroup parent, the real `ctl` binary, and raw HTTP over the Unix socket.
//!
//! Everything a test creates is removed when its [`Daemon`] drops, also when the test
//! fails: instances are force-deleted, leftover processes in the daemon's cgroups killed,
//! the daemon stopped by PID, its cgroup directories and temp dir removed.
//!
//! A daemon may run behind a wrapper command ([`Daemon::start_wrapped`], e.g. `nsenter` into
//! a cluster member's namespaces, see [`cluster`]): it is spawned through the wrapper on every
//! (re)start, and its cleanup commands run through it too, so they act inside its namespaces.

pub mod clients;
pub mod cluster;
pub mod pg;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether privileged tests can run. Without root they are skipped with a printed reason,
/// unless `CTL_REQUIRE_ALL` is set (as CI does), which turns the skip into a failure.
pub fn require_root(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    assert!(
        std::env::var_os("CTL_REQUIRE_ALL").is_none(),
        "{test}: needs root, and CTL_REQUIRE_ALL forbids skipping"
    );
    eprintln!("SKIP {test}: needs root");
    false
}

/// Directory holding the built `ctl` and `ctld` (the test binary's `target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CTL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running `ctld` owned by one test.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    child: Option<Child>,
    /// Extra `ctld` arguments and environment, kept across restarts.
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// Command prefix `ctld` and the cleanup commands run behind (empty: run directly).
    wrapper: Vec<String>,
}

/// `program` run behind `wrapper` (a command prefix such as `nsenter --net=… --mount=… --`
/// that execs its arguments), or directly when `wrapper` is empty.
pub fn command_in(wrapper: &[String], program: impl AsRef<OsStr>) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// The machine-wide debootstrap cache every test daemon shares (`CTL_TEST_BUILD_CACHE`,
/// default `/var/cache/ctl-tests/build`): repeated runs on one day skip debootstrap.
pub fn build_cache() -> PathBuf {
    std::env::var_os("CTL_TEST_BUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ctl-tests/build"))
}

/// The result of one `ctl` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Daemon {
    /// Start a daemon on a fresh temp dir with a unique cgroup parent and no default
    /// network (tests run daemons in parallel: they must never share a bridge).
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Like [`Daemon::start`], with extra `ctld` arguments (kept for restarts). Unless they
    /// say otherwise (`--default-network…`), the daemon makes no default network, so
    /// parallel tests never fight over one bridge name.
    pub fn start_with(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Like [`Daemon::start_with`], with environment variables for `ctld`.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(args, env, None, Vec::new())
    }

    /// Like [`Daemon::start_with`], with `ctld` started behind `wrapper` (a prefix that
    /// execs its arguments in place, such as `nsenter --net=… --mount=… --`, so the PID
    /// recorded is ctld's own), on every restart too. The cleanup when the daemon drops runs
    /// its `ip`, `nft` and `umount` commands behind the wrapper as well: a wrapped daemon's
    /// bridges, tables and mounts are never looked for on the host. Whatever the wrapper
    /// enters must outlive the daemon (drop the daemon first).
    pub fn start_wrapped(wrapper: Vec<String>, args: &[&str]) -> Daemon {
        Daemon::start_full(args, &[], None, wrapper)
    }

    /// Like [`Daemon::start_with`], with the state directory made inside `parent` (e.g. a
    /// 0700 directory other users cannot pass).
    pub fn start_in(parent: &Path, args: &[&str]) -> Daemon {
        Daemon::start_full(args, &[], Some(parent), Vec::new())
    }

    fn start_full(
        args: &[&str],
        env: &[(&str, &str)],
        parent: Option<&Path>,
        wrapper: Vec<String>,
    ) -> Daemon {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.iter().any(|a| a.starts_with("--default-network")) {
            args.insert(0, "--default-network=false".into());
        }
        if !args.iter().any(|a| a == "--build-cache") {
            args.push("--build-cache".into());
            args.push(build_cache().display().to_string());
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("ctl-test-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut d = Daemon {
            dir,
            cgroup_parent: unique("ctl-test"),
            child: None,
            extra_args: args,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper,
        };
        d.spawn();
        d
    }

    /// The state directory (`CTL_DIR`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.path().join("unix.socket")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("ctld.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = command_in(&self.wrapper, bin_dir().join("ctld"))
            .arg("--dir")
            .arg(self.path())
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .env("CTL_LOG", "debug,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("start ctld from {}: {e}", bin_dir().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                self.check_pid_is_ctld();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("ctld did not come up; log:\n{}", self.log());
    }

    /// The PID recorded must be ctld's own, also behind a wrapper (which must exec, not
    /// fork): `kill` and the cleanup signal it.
    fn check_pid_is_ctld(&self) {
        let pid = self.pid();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "ctld",
            "PID {pid} (wrapper {:?}) is not ctld; log:\n{}",
            self.wrapper,
            self.log()
        );
    }

    /// A command run where this daemon runs: behind its wrapper, if it has one.
    pub fn command_in(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.wrapper, program)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("ctld.log")).unwrap_or_default()
    }

    /// The daemon's PID.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Send `signal` to the daemon and reap it.
    pub fn kill(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Start the daemon again on the same state directory.
    pub fn restart(&mut self) {
        self.kill(15);
        self.spawn();
    }

    /// Run `ctl` with `args` against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_stdin(args, None)
    }

    /// Run `ctl` feeding `stdin`.
    pub fn ctl_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut cmd = Command::new(bin_dir().join("ctl"));
        cmd.args(args)
            .env("CTL_DIR", self.path())
            .env("CTL_CONF", self.path().join("client"))
            .env_remove("CTL_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("run ctl {args:?}: {e}"));
        // Feed stdin from a thread while the output is read: writing it all first would
        // deadlock once ctl's output pipe fills up.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut si)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || {
                    let _ = si.write_all(&data);
                }))
            }
            _ => None,
        };
        let run = child
            .wait_with_output()
            .map(Run::from)
            .unwrap_or_else(|e| panic!("ctl {args:?}: {e}"));
        if let Some(f) = feeder {
            let _ = f.join();
        }
        run
    }

    /// A `ctl ARGS` command against this daemon, not yet started (stdin null, stdout and
    /// stderr piped): for a test that runs it in the background or with a deadline.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("ctl"));
        cmd.args(args)
            .env("CTL_DIR", self.path())
            .env("CTL_CONF", self.path().join("client"))
            .env_remove("CTL_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run `ctl`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert_eq!(
            r.code,
            0,
            "ctl {args:?} failed: {r:?}\n--- ctld log ---\n{}",
            self.log()
        );
        r.stdout
    }

    /// Run `ctl ARGS` on a real PTY through `tests/pty_driver.py` following `script`
    /// (`send:`/`expect:`/`resize:`/`sleep:` steps); returns (all expects met, transcript).
    pub fn ctl_on_pty(&self, script: &str, args: &[&str]) -> (bool, String) {
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("pty_driver.py");
        let out = Command::new("python3")
            .arg(driver)
            .arg(script)
            .arg("--")
            .arg(bin_dir().join("ctl"))
            .args(args)
            .env("CTL_DIR", self.path())
            .env("CTL_CONF", self.path().join("client"))
            .env("TERM", "xterm")
            .output()
            .unwrap_or_else(|e| panic!("run the pty driver (python3): {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// One HTTP/1.1 request over the socket; the whole raw response.
    fn raw(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = UnixStream::connect(self.socket()).unwrap_or_else(|e| panic!("connect: {e}"));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// One HTTP request over the socket: `(status, body as JSON)`.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, payload) = self.http_text(method, path, body);
        let json = serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// One HTTP request over the socket: `(status, body text)`.
    pub fn http_text(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let text = self.raw(method, path, body.unwrap_or(""));
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let payload = if chunked {
            dechunk(payload)
        } else {
            payload.to_string()
        };
        (status, payload)
    }

    /// The raw response head (status line and headers) of a request.
    pub fn http_head(&self, method: &str, path: &str, body: &str) -> String {
        let text = self.raw(method, path, body);
        text.split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Instance names this daemon knows.
    pub fn instances(&self) -> Vec<String> {
        let (_, v) = self.http("GET", "/1.0/instances", None);
        v["metadata"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str())
                    .filter_map(|u| u.rsplit('/').next())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /1.0/instances/{name}/state` metadata.
    pub fn state(&self, name: &str) -> serde_json::Value {
        self.http("GET", &format!("/1.0/instances/{name}/state"), None)
            .1["metadata"]
            .clone()
    }

    /// The host PID of the instance's init (0 when stopped).
    pub fn init_pid(&self, name: &str) -> i32 {
        self.state(name)["pid"].as_i64().unwrap_or(0) as i32
    }

    /// The host uid the instance's init runs as (`Uid:` of its `/proc/<pid>/status`; 0 when
    /// unreadable): non-zero for an unprivileged container.
    pub fn init_host_uid(&self, name: &str) -> u32 {
        let pid = self.init_pid(name);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or(0)
    }

    /// The instance's cgroup directory for a v1 controller (this daemon's parent).
    pub fn cgroup_dir(&self, controller: &str, name: &str) -> PathBuf {
        cgroup_root(controller).join(&self.cgroup_parent).join(name)
    }
}

/// The hierarchy root of a controller: `/sys/fs/cgroup/<controller>` on v1/hybrid hosts,
/// `/sys/fs/cgroup` on v2.
pub fn cgroup_root(controller: &str) -> PathBuf {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup").join(controller)
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Every cgroup directory a daemon with `parent` may have created.
pub fn cgroup_parents(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let p = e.path().join(parent);
            if p.exists() {
                out.push(p);
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup").join(parent);
    if v2.exists() {
        out.push(v2);
    }
    out
}

fn kill_cgroup_tree(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                kill_cgroup_tree(&e.path());
            }
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                rmdir_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether any cgroup directory of `parent` is left.
pub fn cgroup_parent_exists(parent: &str) -> bool {
    !cgroup_parents(parent).is_empty()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
        for name in self.instances() {
            let _ = self.ctl(&["delete", "--force", &name]);
        }
        // Storage pools may be loop files mounted on the host: their custom volumes, then
        // the pools themselves go (the daemon unmounts them and frees the loop devices).
        let (_, v) = self.http("GET", "/1.0/storage-pools?recursion=1", None);
        for pool in v["metadata"].as_array().cloned().unwrap_or_default() {
            let name = pool["name"].as_str().unwrap_or_default().to_string();
            let (_, vols) = self.http(
                "GET",
                &format!("/1.0/storage-pools/{name}/volumes/custom"),
                None,
            );
            for vol in vols["metadata"].as_array().cloned().unwrap_or_default() {
                if let Some(url) = vol.as_str() {
                    let _ = self.http("DELETE", url, None);
                }
            }
            if name != "default" {
                let _ = self.http("DELETE", &format!("/1.0/storage-pools/{name}"), None);
            }
        }
        // Networks are host bridges: none may outlive the test. Profiles may point at
        // them, so their devices go first.
        let (_, v) = self.http("GET", "/1.0/networks", None);
        let networks: Vec<String> = v["metadata"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str()?.rsplit('/').next().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !networks.is_empty() {
            let _ = self.http("PATCH", "/1.0/profiles/default", Some(r#"{"devices":{}}"#));
            let _ = self.http("PUT", "/1.0/profiles/default", Some(r#"{"devices":{}}"#));
        }
        for n in &networks {
            let _ = self.http("DELETE", &format!("/1.0/networks/{n}"), None);
        }
        self.kill(15);
        // Whatever is still there (a daemon that failed): remove the bridges, nftables
        // tables and dnsmasq processes directly (dnsmasq only by its pid file's PID, and only
        // if that process is a dnsmasq). A wrapped daemon's bridges and tables are inside its
        // namespaces: those commands run there, and nothing of the host's is looked at. Its
        // dnsmasq is ended by PID all the same (no wrapper enters a PID namespace).
        for n in &networks {
            if !self.wrapper.is_empty() {
                let _ = self
                    .command_in("ip")
                    .args(["link", "del", n])
                    .stderr(Stdio::null())
                    .status();
            } else if Path::new("/sys/class/net").join(n).exists() {
                let _ = Command::new("ip").args(["link", "del", n]).status();
            }
            let _ = self
                .command_in("nft")
                .args(["delete", "table", "inet", &format!("ctl_{n}")])
                .stderr(Stdio::null())
                .status();
            let pid_file = self.path().join("networks").join(n).join("dnsmasq.pid");
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "dnsmasq")
            {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        // Whatever survived (a test that failed half-way): kill by cgroup, then remove.
        for p in cgroup_parents(&self.cgroup_parent) {
            kill_cgroup_tree(&p);
        }
        std::thread::sleep(Duration::from_millis(50));
        for p in cgroup_parents(&self.cgroup_parent) {
            rmdir_tree(&p);
        }
        // Mounts left under the state dir (a pool the daemon could not delete): detached,
        // deepest first, which also frees their loop devices (in the wrapped daemon's mount
        // namespace when it has its own).
        unmount_under_in(&self.wrapper, self.path());
    }
}

/// Detach every mount at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    unmount_under_in(&[], dir);
}

/// [`unmount_under`] in the mount namespace `wrapper` enters (the host's when empty).
pub fn unmount_under_in(wrapper: &[String], dir: &Path) {
    let info = if wrapper.is_empty() {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    } else {
        command_in(wrapper, "cat")
            .arg("/proc/self/mountinfo")
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_owned)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = command_in(wrapper, "umount").args(["-l", &m]).status();
    }
}

/// Poll `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Whether a process with `pid` exists (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rfind(')')
                    .and_then(|i| s[i + 1..].split_whitespace().next())
                    != Some("Z")
            })
            .unwrap_or(false)
}

/// Read an integer from a cgroup (or any) file.
pub fn read_num(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1)
}
