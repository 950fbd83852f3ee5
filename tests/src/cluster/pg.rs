//! A PostgreSQL server for cluster tests ([`ClusterPg`]), run as the `postgres` user on a
//! data directory in a temp dir, listening on the test bridge's address.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{report, run, try_run};
use crate::{pid_alive, wait_until};

/// The PostgreSQL server binaries: `CTL_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub fn pg_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CTL_PG_BIN") {
        return PathBuf::from(d);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no PostgreSQL server (apt-get install postgresql)"))
}

/// Uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        run(Command::new("id").args([flag, "postgres"]))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("id {flag} postgres: {e}"))
    };
    (id("-u"), id("-g"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("/dev/urandom: {e}"));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Child processes of `pid` (from every `/proc/<pid>/stat`).
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// A PostgreSQL server for a cluster test, run as `postgres` on a data directory in a temp
/// dir (its Unix socket there too), listening on one address (the bridge's) and port. It
/// has a login role `ctl` (a random password, scram-sha-256) owning database `ctl`, reachable
/// from the bridge's /24 only. Dropping it stops it (fast shutdown; SIGKILL to its
/// processes if that fails) and removes the directory.
pub struct ClusterPg {
    dir: tempfile::TempDir,
    ip: Ipv4Addr,
    port: u16,
    password: String,
    /// The postmaster's PID, 0 when stopped.
    pid: i32,
}

impl ClusterPg {
    /// initdb, configure, start, and make the `ctl` role and database.
    pub fn start(listen_ip: Ipv4Addr, port: u16) -> ClusterPg {
        let dir = tempfile::Builder::new()
            .prefix("ctl-cluster-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.path().display()));
        let mut pg = ClusterPg {
            dir,
            ip: listen_ip,
            port,
            password: random_hex(16),
            pid: 0,
        };
        run(pg
            .as_postgres(pg_bin_dir().join("initdb"))
            .arg("-D")
            .arg(pg.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]));
        let conf = format!(
            "\n# ctl-tests (cluster harness)\n\
             listen_addresses = '{listen_ip}'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            pg.dir.path().display()
        );
        let hba = format!(
            "\n# ctl-tests (cluster harness): the members, on the test bridge\n\
             host ctl ctl 10.{}.{}.0/24 scram-sha-256\n",
            listen_ip.octets()[1],
            listen_ip.octets()[2]
        );
        pg.append(&pg.data_dir().join("postgresql.conf"), &conf);
        pg.append(&pg.data_dir().join("pg_hba.conf"), &hba);
        pg.start_again();
        run(pg.as_postgres(pg_bin_dir().join("psql")).args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &pg.dir.path().display().to_string(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            &format!("CREATE ROLE ctl LOGIN PASSWORD '{}'", pg.password),
            "-c",
            "CREATE DATABASE ctl OWNER ctl",
        ]));
        pg
    }

    fn append(&self, path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// `program` as the `postgres` user, in the server's directory.
    fn as_postgres(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(program)
            .current_dir(self.dir.path());
        cmd
    }

    /// The server's directory (its Unix socket, log and data directory are in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `postgres://ctl:PASSWORD@IP:PORT/ctl`.
    pub fn url(&self) -> String {
        format!(
            "postgres://ctl:{}@{}:{}/ctl",
            self.password, self.ip, self.port
        )
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// The postmaster's PID (0 when stopped).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Start the server again on the same data directory (after [`ClusterPg::stop`] or
    /// [`ClusterPg::kill`]); waits until it accepts connections.
    pub fn start_again(&mut self) {
        let out = self
            .as_postgres(pg_bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n--- postgres log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let pid_file = self.data_dir().join("postmaster.pid");
        self.pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no PID in {}", pid_file.display()));
    }

    /// Fast shutdown (clients disconnected, a clean checkpoint); waits until it is down.
    pub fn stop(&mut self) {
        let mut errors = Vec::new();
        self.stop_into(&mut errors);
        assert!(errors.is_empty(), "stop postgres: {}", errors.join("; "));
    }

    fn stop_into(&mut self, errors: &mut Vec<String>) {
        if self.pid == 0 {
            return;
        }
        try_run(
            self.as_postgres(pg_bin_dir().join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            errors,
        );
        let pid = self.pid;
        if wait_until(Duration::from_secs(10), || !pid_alive(pid)) {
            self.pid = 0;
        } else {
            errors.push(format!("postmaster {pid} still runs"));
        }
    }

    /// SIGKILL to the postmaster and its children (a crash); waits until all are gone. The
    /// next [`ClusterPg::start_again`] runs crash recovery.
    pub fn kill(&mut self) {
        if self.pid == 0 {
            return;
        }
        let mut pids = children_of(self.pid);
        pids.push(self.pid);
        for p in &pids {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        let gone = wait_until(Duration::from_secs(10), || {
            pids.iter().all(|p| !pid_alive(*p))
        });
        assert!(gone, "postgres processes {pids:?} outlived SIGKILL");
        self.pid = 0;
    }
}

impl Drop for ClusterPg {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        self.stop_into(&mut errors);
        if self.pid != 0 {
            let mut pids = children_of(self.pid);
            pids.push(self.pid);
            for p in &pids {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            wait_until(Duration::from_secs(10), || {
                pids.iter().all(|p| !pid_alive(*p))
            });
        }
        report(
            &format!("postgres in {}", self.dir.path().display()),
            &errors,
        );
        // The data directory goes with `dir`.
    }
}
