//! LXD 5.0's `lxc` and Incus 6.0's `incus`, pointed at a test daemon's socket (through
//! `LXD_DIR`/`INCUS_DIR`), each with a config directory of its own.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::Daemon;

/// One client binary bound to one daemon.
pub struct Cli {
    program: PathBuf,
    name: &'static str,
    dir_env: &'static str,
    conf_env: &'static str,
    dir: PathBuf,
    conf: tempfile::TempDir,
}

/// Whether `path` exists; else a printed skip, or a failure under `CTL_REQUIRE_ALL`.
fn found(path: &std::path::Path, what: &str) -> bool {
    let ok = path.is_file();
    if !ok {
        assert!(
            std::env::var_os("CTL_REQUIRE_ALL").is_none(),
            "{what} is missing at {} (.ci/run installs it); CTL_REQUIRE_ALL forbids skipping",
            path.display()
        );
        eprintln!("SKIP: no {what} at {}", path.display());
    }
    ok
}

/// The Incus 6.0 client `.ci/run` unpacks (or `$CTL_INCUS`), if it is there; else a printed
/// skip, or a failure under `CTL_REQUIRE_ALL`.
pub fn incus_program() -> Option<PathBuf> {
    let program = std::env::var_os("CTL_INCUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ctl-tests/incus-client/usr/bin/incus"));
    found(&program, "incus client").then_some(program)
}

impl Cli {
    /// Debian's `lxc` (package `lxd-client`), if installed.
    pub fn lxc(d: &Daemon) -> Option<Cli> {
        let program = PathBuf::from("/usr/bin/lxc");
        found(&program, "lxc").then(|| Cli::new(d, program, "lxc", "LXD_DIR", "LXD_CONF"))
    }

    /// Incus 6.0's client, unpacked by `.ci/run` (or at `$CTL_INCUS`).
    pub fn incus(d: &Daemon) -> Option<Cli> {
        incus_program().map(|program| Cli::new(d, program, "incus", "INCUS_DIR", "INCUS_CONF"))
    }

    fn new(
        d: &Daemon,
        program: PathBuf,
        name: &'static str,
        dir_env: &'static str,
        conf_env: &'static str,
    ) -> Cli {
        Cli {
            program,
            name,
            dir_env,
            conf_env,
            dir: d.path().to_path_buf(),
            conf: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The command, environment set, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(args)
            .env(self.dir_env, &self.dir)
            .env(self.conf_env, self.conf.path())
            .stdin(Stdio::null());
        c
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.name))
    }

    /// Run; it must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run; it must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{} {args:?} succeeded: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
