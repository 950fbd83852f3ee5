//! A throwaway PostgreSQL server for tests (Debian's `postgresql` package; needs root).
//!
//! [`PgServer::start`] makes a fresh cluster in a temp directory owned by the `postgres`
//! user, runs `postgres` as that user listening on one IP address (and on a Unix socket
//! inside the temp directory, for the superuser), and creates a role `ctl` with a random
//! password that owns a database `ctl`. TCP clients must log in with that password
//! (SCRAM). Dropping the server stops it by PID (immediate shutdown) and removes the
//! directory, also when the test fails.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server binaries (`CTL_PG_BIN` overrides).
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CTL_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Whether the PostgreSQL server binaries are installed.
pub fn available() -> bool {
    bin_dir().join("postgres").exists() && bin_dir().join("initdb").exists()
}

/// The database and role made in every server.
pub const USER: &str = "ctl";
pub const DATABASE: &str = "ctl";

/// A PostgreSQL server owned by one test.
pub struct PgServer {
    /// The cluster's directory: `data/` (the data directory), the Unix socket, `log`.
    dir: tempfile::TempDir,
    listen: IpAddr,
    port: u16,
    password: String,
    uid: u32,
    gid: u32,
    child: Option<Child>,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// The uid and gid of `user`, from `/etc/passwd`.
fn user_ids(user: &str) -> io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| other(format!("no user {user} in /etc/passwd")))
}

/// 32 random hex digits.
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A TCP port nothing listens on now on `ip` (bound, then released).
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0))
        .or_else(|_| TcpListener::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)))?;
    Ok(l.local_addr()?.port())
}

fn check(what: &str, out: Output) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(other(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl PgServer {
    /// Make and start a server listening on `listen` (an IP address) and `port` (0: a
    /// free one), with the `ctl` role and database.
    pub fn start(listen: &str, port: u16) -> io::Result<PgServer> {
        let listen: IpAddr = listen
            .parse()
            .map_err(|e| other(format!("listen address {listen:?}: {e}")))?;
        let port = if port == 0 { free_port(listen)? } else { port };
        let (uid, gid) = user_ids("postgres")?;
        let dir = tempfile::Builder::new().prefix("ctl-pg-").tempdir()?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        let mut server = PgServer {
            dir,
            listen,
            port,
            password: random_hex()?,
            uid,
            gid,
            child: None,
        };
        server.init()?;
        server.start_again()?;
        server.create_role()?;
        Ok(server)
    }

    /// A command running `program` from [`bin_dir`] as the `postgres` user.
    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new(bin_dir().join(program));
        std::os::unix::process::CommandExt::uid(&mut cmd, self.uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, self.gid);
        cmd.current_dir(self.dir.path())
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        cmd
    }

    fn init(&self) -> io::Result<()> {
        let out = self
            .as_postgres("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .output()?;
        check("initdb", out)?;
        // Clients may come from any address (a cluster test's other network namespaces),
        // always with the password.
        let hba = self.data_dir().join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba)?;
        text.push_str("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n");
        std::fs::write(&hba, text)
    }

    fn create_role(&self) -> io::Result<()> {
        let sql = format!(
            "CREATE ROLE {USER} LOGIN PASSWORD '{}'; CREATE DATABASE {DATABASE} OWNER {USER};",
            self.password
        );
        for statement in sql.split_inclusive(';') {
            self.superuser_sql("postgres", statement.trim())?;
        }
        Ok(())
    }

    /// Run `sql` as the superuser in `database` over the Unix socket; psql's unaligned,
    /// tuples-only output.
    pub fn superuser_sql(&self, database: &str, sql: &str) -> io::Result<String> {
        let out = self
            .as_postgres("psql")
            .arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1"])
            .args(["-X", "-q", "-A", "-t", "-c", sql])
            .output()?;
        let out = check("psql", out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start the server again (stopping it first if it runs) on the same data, port and
    /// password: after [`PgServer::stop`] or [`PgServer::kill`], the database comes back.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.start_again()
    }

    fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = self
            .as_postgres("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={}", self.listen))
            // A throwaway server: durability is not worth the time.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=100"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                return Err(other(format!(
                    "postgres exited ({status}); log:\n{}",
                    self.log()
                )));
            }
            let ready = Command::new(bin_dir().join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.listen.to_string())
                .arg("-p")
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "postgres did not come up; log:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server (fast shutdown: clients are disconnected) and wait for it. The data
    /// stays for [`PgServer::restart`].
    pub fn stop(&mut self) {
        self.signal_and_reap("INT");
    }

    /// Stop the server as a crash would (immediate shutdown) and wait for it.
    pub fn kill(&mut self) {
        self.signal_and_reap("QUIT");
    }

    fn signal_and_reap(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The postmaster's PID; 0 when stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `postgres://ctl:PASSWORD@IP:PORT/ctl`.
    pub fn url(&self) -> String {
        let host = match self.listen {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        format!(
            "postgres://{USER}:{}@{host}:{}/{DATABASE}",
            self.password, self.port
        )
    }

    pub fn listen(&self) -> IpAddr {
        self.listen
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The directory holding everything of this server.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
