//! The worker: every piece of code that changes the host kernel's state lives below this
//! module (mounts, namespaces, cgroups, processes, signals). The rest of the daemon talks to
//! it through the [`Worker`] trait, one method per operation, so the lifecycle order and its
//! rollback can be unit-tested with a recording fake while end-to-end tests use
//! [`HostWorker`].
//!
//! Invariant: no `unsafe` outside `sys`, no namespace or mount syscall outside this module,
//! and no fork from a tokio thread: children are started by re-executing ctld into the
//! hidden `forkstart`/`forkexec`/`forkprobe` entries.

pub mod beneath;
pub mod btrfs;
pub mod caps;
pub mod cgroup;
pub mod console;
pub mod disk;
pub mod exec;
#[cfg(test)]
pub mod fake;
pub mod files;
pub mod idshift;
pub mod mounts;
pub mod net;
pub mod netns;
pub mod probe;
pub mod proc;
pub mod quota;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
mod sys;
pub mod usage;

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cgroup::{CgroupLimits, CgroupStats, CgroupUsage, CgroupVersion, CpuAllowance, IoThrottle};
pub use exec::ExecSpec;
pub use net::{BridgeSpec, Interface, NicSpec, ResolverSpec};
pub use spawn::InitProcess;
pub use spec::SpawnSpec;
pub use sys::{raise_fd_limit, release_free_memory};

/// Errors from host operations.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Spawn(#[from] spawn::SpawnError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("disk device on /{target}: {reason}")]
    Disk { target: String, reason: String },
    #[error("signal {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// A command line to run: program, arguments, extra environment.
pub type ExecCommand = (PathBuf, Vec<String>, Vec<(String, String)>);

/// How unprivileged containers see the shared image layers in their own ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageShift {
    /// Id-mapped mounts where the probe at start-up finds them working, else copies.
    Auto,
    /// Id-mapped mounts of the one shared layer (kernel 5.12+, and the state directory's
    /// filesystem must support them).
    Idmapped,
    /// One copy of a layer per id map, its owners shifted.
    Copy,
}

impl std::str::FromStr for ImageShift {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ImageShift::Auto),
            "idmapped" => Ok(ImageShift::Idmapped),
            "copy" => Ok(ImageShift::Copy),
            _ => Err(format!("{s:?}: expected auto, idmapped or copy")),
        }
    }
}

/// A container's lower layer (see [`Worker::lower_layer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerLayer {
    pub path: PathBuf,
    /// Whether the monitor id-maps it onto the container's user namespace.
    pub idmap: bool,
}

/// The layers of a stopped container and the id map its own files are shifted to.
#[derive(Debug, Clone)]
pub struct StoppedRoot {
    pub lower: LowerLayer,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub id_map: Option<spec::IdMap>,
}

/// Where a container's (or a snapshot's) files go, as its storage pool says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The directory in a pool that `containers/<name>` is a symlink to; `None`:
    /// `containers/<name>` itself holds the files (the `default` pool, on the state dir).
    pub home: Option<PathBuf>,
    /// Whether the writable layer is a btrfs subvolume (`layer/`, holding `upper` and
    /// `work`: overlayfs moves files from `work` to `upper`, which btrfs allows only
    /// inside one subvolume).
    pub subvolume: bool,
}

/// Host operations at the granularity the instance lifecycle needs.
pub trait Worker: Send + Sync + 'static {
    /// The cgroup layout detected at start-up.
    fn cgroup_version(&self) -> CgroupVersion;
    /// Create a container's directory (mode 0700; in a pool's own directory with `dir` a
    /// symlink to it when `place.home` is set) with its `rootfs` mount point and its writable
    /// layer (see [`crate::paths::overlay_dirs`]): empty, or a copy of the layer of the
    /// container or snapshot directory `layer_from`.
    fn prepare_container_dir(
        &self,
        dir: &Path,
        place: &Placement,
        layer_from: Option<&Path>,
    ) -> Result<(), WorkerError>;
    /// Copy the writable layer of the container or snapshot directory `from` into the
    /// directory `to` (made if missing; it must hold no layer yet): a btrfs snapshot (O(1))
    /// when both are on one btrfs pool and `subvolume` is set, else a [`Worker::copy_tree`]
    /// of `upper` into a new layer.
    fn copy_layer(&self, from: &Path, to: &Path, subvolume: bool) -> Result<(), WorkerError>;
    /// Remove a container's directory (renamed aside first, so the name is free at once;
    /// for a symlink into a pool, the pool's directory and then the link).
    fn remove_container_dir(&self, dir: &Path) -> Result<(), WorkerError>;
    /// Copy the tree `from` to `to` (which must not exist) exactly: owners, modes, times,
    /// every extended attribute (overlay's opaque-directory marks among them), device nodes
    /// (overlay's whiteouts), hard links; sharing extents where the filesystem can (reflink).
    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), WorkerError>;
    /// Re-own a stopped container's own files under `dir` from id map `from` to `to`
    /// (`None`: host ids as they are). See [`idshift`].
    fn shift_ids(
        &self,
        dir: &Path,
        from: Option<&spec::IdMap>,
        to: Option<&spec::IdMap>,
    ) -> Result<(), WorkerError>;
    /// The lower layer a container with id map `map` mounts for the image layer `layer`:
    /// the layer itself (id-mapped at mount time when `map` is set), or, where id-mapped
    /// mounts are unavailable, one copy shifted into `map` shared by every container with
    /// that map (made on first use; see [`idshift::shifted_copy`]).
    fn lower_layer(
        &self,
        layer: &Path,
        map: Option<&spec::IdMap>,
    ) -> Result<LowerLayer, WorkerError>;
    /// Create the container's cgroup with `limits` and its device policy; returns the
    /// `cgroup.procs` files of its inner cgroup, which the init is written into (see
    /// [`cgroup`]: limits on `<parent>/<name>`, processes in `<parent>/<name>/ns`).
    fn create_cgroup(&self, name: &str, limits: &CgroupLimits)
    -> Result<Vec<PathBuf>, WorkerError>;
    /// Hand the inner cgroup of an existing container cgroup to the host ids `uid`/`gid`
    /// its root user maps to, so an unprivileged container's init can manage sub-cgroups
    /// (see [`cgroup::Cgroup::delegate`]). Call after `create_cgroup`, before
    /// `spawn_init`; privileged containers skip it.
    fn delegate_cgroup(&self, name: &str, uid: u32, gid: u32) -> Result<(), WorkerError>;
    /// Apply `limits` to an existing cgroup (live update).
    fn apply_limits(&self, name: &str, limits: &CgroupLimits) -> Result<(), WorkerError>;
    /// Kill what is left in the cgroup and remove it. Succeeds if it does not exist.
    fn remove_cgroup(&self, name: &str) -> Result<(), WorkerError>;
    /// The `cgroup.procs` files of an existing cgroup's inner cgroup (to join it).
    fn cgroup_procs(&self, name: &str) -> Vec<PathBuf>;
    /// Freeze or thaw.
    fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), WorkerError>;
    /// Whether the cgroup is frozen.
    fn is_frozen(&self, name: &str) -> bool;
    /// Resource usage.
    fn usage(&self, name: &str) -> CgroupUsage;
    /// CPU split, OOM kills, memory limit (for metrics).
    fn stats(&self, name: &str) -> CgroupStats;
    /// Interface counters of the network namespace `pid` lives in.
    fn net_counters(&self, pid: i32) -> Vec<usage::NetCounters>;
    /// Bytes used by the files under `dir` (one filesystem, links not followed).
    fn disk_usage(&self, dir: &Path) -> u64;
    /// The host's online CPUs.
    fn online_cpus(&self) -> Vec<u32>;
    /// The mounts that give a container its cgroup view under `/sys/fs/cgroup`, and (when
    /// lxcfs runs on the host) its container-accurate `/proc` files.
    fn cgroup_mounts(&self) -> Vec<spec::MountEntry>;
    /// Start the init described by `spec`; returns once it runs.
    fn spawn_init(&self, spec: &SpawnSpec) -> Result<InitProcess, WorkerError>;
    /// Whether `init` is still the running process it was.
    fn is_alive(&self, init: &InitProcess) -> bool;
    /// Send `signal` to `init` (checked against PID reuse). `Ok(false)` if it is gone.
    fn signal(&self, init: &InitProcess, signal: i32) -> Result<bool, WorkerError>;
    /// Block until `init` exits or `timeout` passes; true if it is gone.
    fn wait_exit(&self, init: &InitProcess, timeout: Duration) -> bool;
    /// Block until no process `pid` exists (it need not be our child), up to `timeout`.
    fn wait_pid_gone(&self, pid: i32, timeout: Duration) -> bool;
    /// The program and arguments that run `spec` inside the container (`ctld forkexec`).
    fn exec_command(&self, spec: &ExecSpec) -> ExecCommand;
    /// The root directory of the running container whose init is `init`, for the file API
    /// (see [`files`]). Fails if `init` is gone.
    fn open_root(&self, init: &InitProcess) -> Result<files::RootDir, WorkerError>;
    /// The root of a stopped container, for the file API: its overlay as a detached mount
    /// that nothing else sees (see [`rootfs`]).
    fn open_stopped_root(&self, root: &StoppedRoot) -> Result<files::RootDir, WorkerError>;
    /// Bind `disk` into the running container whose init is `init` (`ctld forkmount`, see
    /// [`disk`]).
    fn mount_disk(&self, init: &InitProcess, disk: &spec::DiskMount) -> Result<(), WorkerError>;
    /// Detach the mount on `target` (relative to the root) inside the running container;
    /// nothing mounted there is fine.
    fn unmount_disk(&self, init: &InitProcess, target: &str) -> Result<(), WorkerError>;

    // ----- networking (see [`net`]) -----

    /// Create bridge `spec.name` or adopt the existing one: up, MTU, exactly its addresses.
    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), WorkerError>;
    /// Delete a bridge (nothing to do when it does not exist).
    fn delete_bridge(&self, name: &str) -> Result<(), WorkerError>;
    /// Whether `name` is a bridge on the host.
    fn bridge_exists(&self, name: &str) -> bool;
    /// The IPv4 subnets of the host's routes and addresses (default routes left out).
    fn host_ipv4_subnets(&self) -> Result<Vec<(std::net::Ipv4Addr, u8)>, WorkerError>;
    /// Create a running container's NICs (veth peers made inside its netns) and configure
    /// addresses and routes inside. On failure the caller kills the init.
    fn setup_nics(&self, init: &InitProcess, nics: &[NicSpec]) -> Result<(), WorkerError>;
    /// Remove interfaces (by their name inside) from a running container (hot-unplug).
    fn remove_nics(&self, init: &InitProcess, names: &[String]) -> Result<(), WorkerError>;
    /// Write `/etc/resolv.conf` and `/etc/hosts` entries a running container lacks.
    fn write_resolver(&self, init: &InitProcess, spec: &ResolverSpec) -> Result<(), WorkerError>;
    /// The interfaces of the netns `init` lives in (`None`: the host's), or only `only`.
    /// An init that is gone has none.
    fn interfaces(&self, init: Option<&InitProcess>, only: Option<&str>) -> Vec<Interface>;
    /// The interfaces of the netns of each of `inits`, in order (for listings).
    fn interfaces_of_many(&self, inits: &[InitProcess]) -> Vec<Vec<Interface>> {
        inits
            .iter()
            .map(|i| self.interfaces(Some(i), None))
            .collect()
    }
    /// The network namespace of the running container whose init is `init`, held open (for
    /// `proxy` devices, see [`netns`]). Fails if `init` is gone.
    fn open_netns(&self, init: &InitProcess) -> Result<netns::NetNs, WorkerError>;
}

/// Run test `test` of this test binary again in a child process with `env` set, and assert
/// it passed: for tests that change their own process (a seccomp filter, capabilities)
/// where the test harness is multi-threaded.
#[cfg(test)]
pub(crate) fn rerun_test_in_child(test: &str, env: &str) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out = std::process::Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap_or_else(|e| panic!("run the child: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make descriptors the daemon inherited close-on-exec, so no child (monitor, container,
/// exec) ever sees them. Call first thing in the daemon's `main`.
pub fn seal_inherited_fds() {
    if let Err(e) = sys::cloexec_from(3) {
        tracing::warn!(error = %e, "could not mark inherited descriptors close-on-exec");
    }
}

/// Send `signal` to process `pid` only if its argument vector satisfies `is_ours` (for
/// helpers such as dnsmasq left running by an earlier daemon, found through a PID file).
/// The process is pinned with a pidfd before its command line is read, so a PID reused in
/// between is never signalled. `Ok(false)` if there is no such process or it is not ours.
pub fn signal_if(
    pid: i32,
    signal: i32,
    is_ours: impl FnOnce(&[String]) -> bool,
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    if pid <= 0 {
        return Ok(false);
    }
    let fd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) => return Err(e),
    };
    match proc::cmdline(pid) {
        Some(args) if is_ours(&args) => {}
        _ => return Ok(false),
    }
    match sys::pidfd_send_signal(fd.as_raw_fd(), signal) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Block until the process of pidfd `fd` exits or `timeout` passes; true if it is gone.
/// `alive` is asked first (the pidfd may name a process that already exited) and when the
/// wait ends without an answer.
fn wait_pidfd(fd: &std::os::fd::OwnedFd, timeout: Duration, alive: impl Fn() -> bool) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    if !alive() {
        return true;
    }
    let deadline = std::time::Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(86_400));
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return !alive(),
            Ok(_) if left.is_zero() => return !alive(),
            Ok(_) => continue,
        }
    }
}

/// The real worker, acting on this host.
#[derive(Debug, Clone)]
pub struct HostWorker {
    exe: PathBuf,
    cgroup_parent: String,
    layout: cgroup::CgroupLayout,
    trash: PathBuf,
    /// `Idmapped` or `Copy`, decided at start-up.
    image_shift: ImageShift,
    /// One shifted copy made at a time (two starts with one new map wait for one copy).
    copying: std::sync::Arc<std::sync::Mutex<()>>,
    /// A `forkstart` kept ready for the next start.
    starters: spawn::Starters,
}

impl HostWorker {
    /// Detect the cgroup layout under `cgroup_root`: its version, and every hierarchy
    /// mounted (from `/proc/self/mountinfo`), each of which a container gets a cgroup in.
    /// Hierarchies that exist but are mounted nowhere (`/proc/self/cgroup`) are logged.
    /// `exe` is the ctld binary to re-execute (normally `/proc/self/exe`).
    pub fn new(
        exe: PathBuf,
        cgroup_root: PathBuf,
        cgroup_parent: String,
        trash: PathBuf,
    ) -> Result<Self, WorkerError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut layout = cgroup::CgroupLayout::detect(&cgroup_root, &mountinfo)?;
        let own_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let own_map = spec::IdMap::parse_proc(&own_map);
        if !own_map.is_empty() && !spec::IdMap::is_identity(&own_map) {
            tracing::info!(
                "ctld runs in a user namespace (nested): containers get the device policy of \
                 the container ctld runs in"
            );
            layout.devices_inherited = true;
        }
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for h in cgroup::unmounted_hierarchies(&proc_cgroup, &layout.hierarchies) {
            tracing::warn!(
                hierarchy = %h,
                "cgroup hierarchy mounted nowhere: containers get no cgroup of their own in it"
            );
        }
        if layout.unified().is_some() && !layout.bpf_devices {
            tracing::warn!(
                root = %cgroup_root.display(),
                "unified cgroup tree is no cgroup2 filesystem: no BPF device policy"
            );
        }
        Ok(HostWorker {
            exe,
            cgroup_parent,
            layout,
            trash,
            image_shift: ImageShift::Idmapped,
            copying: Default::default(),
            starters: spawn::Starters::default(),
        })
    }

    /// Decide how image layers reach unprivileged containers. `Auto` runs the
    /// [`probe`] on `images` (the image store, where the layers live) and falls back to
    /// shifted copies when an id-mapped mount of it fails. Returns the choice.
    pub fn choose_image_shift(&mut self, wanted: ImageShift, images: &Path) -> ImageShift {
        self.image_shift = match wanted {
            ImageShift::Auto => {
                let out = std::process::Command::new(&self.exe)
                    .arg("forkprobe")
                    .arg(images)
                    .stdin(std::process::Stdio::null())
                    .output();
                match out {
                    Ok(o) if o.status.success() => ImageShift::Idmapped,
                    Ok(o) => {
                        tracing::warn!(
                            dir = %images.display(),
                            reason = %String::from_utf8_lossy(&o.stderr).trim(),
                            "no id-mapped mounts here: unprivileged containers get a shifted \
                             copy of each image per id map"
                        );
                        ImageShift::Copy
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "id-mapped mount probe did not run");
                        ImageShift::Copy
                    }
                }
            }
            other => other,
        };
        self.image_shift
    }

    fn cgroup(&self, name: &str) -> cgroup::Cgroup<'_> {
        cgroup::Cgroup::new(&self.layout, &self.cgroup_parent, name)
    }

    /// Remove whatever earlier deletes left in the trash directory.
    pub fn empty_trash(&self) {
        if let Ok(rd) = fs::read_dir(&self.trash) {
            for e in rd.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Remove the (empty) cgroup parent directories, for a daemon that leaves no trace.
    pub fn remove_cgroup_parent(&self) {
        let probe = self.cgroup("x");
        for d in probe.dirs() {
            if let Some(parent) = d.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// `cp -a` of the tree `from` as `to`, or into `to` when it is an existing directory (its
/// contents, and the root's owner, mode and attributes): GNU cp knows every file type and
/// attribute (overlay's xattrs, whiteouts, hard links), and reflinks where it can.
pub fn copy_archive(from: &Path, to: &Path) -> io::Result<()> {
    let out = std::process::Command::new("cp")
        .args([
            "-a",
            "--preserve=all",
            "--reflink=auto",
            "--no-target-directory",
            "--",
        ])
        .arg(from)
        .arg(to)
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "copying {}: {}",
        from.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// An empty writable layer in the container or snapshot directory `holder`: `upper` and
/// `work`, inside a new `layer` subvolume when `subvolume` is set.
fn make_layer(holder: &Path, subvolume: bool) -> Result<(), WorkerError> {
    let base = if subvolume {
        let layer = holder.join("layer");
        btrfs::create_subvolume(&layer).map_err(io_err(&layer))?;
        fs::set_permissions(&layer, fs::Permissions::from_mode(0o700)).map_err(io_err(&layer))?;
        layer
    } else {
        holder.to_path_buf()
    };
    for sub in ["upper", "work"] {
        let p = base.join(sub);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Worker for HostWorker {
    fn cgroup_version(&self) -> CgroupVersion {
        self.layout.version
    }

    fn shift_ids(
        &self,
        dir: &Path,
        from: Option<&spec::IdMap>,
        to: Option<&spec::IdMap>,
    ) -> Result<(), WorkerError> {
        let n = idshift::shift_tree(dir, from, to).map_err(io_err(dir))?;
        tracing::debug!(dir = %dir.display(), entries = n, "ids shifted");
        Ok(())
    }

    fn lower_layer(
        &self,
        layer: &Path,
        map: Option<&spec::IdMap>,
    ) -> Result<LowerLayer, WorkerError> {
        let Some(map) = map else {
            return Ok(LowerLayer {
                path: layer.to_path_buf(),
                idmap: false,
            });
        };
        if self.image_shift != ImageShift::Copy {
            return Ok(LowerLayer {
                path: layer.to_path_buf(),
                idmap: true,
            });
        }
        let copies = layer.with_file_name("shifted");
        let path = copies.join(idshift::map_key(map));
        if path.is_dir() {
            return Ok(LowerLayer { path, idmap: false });
        }
        let _one = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        if path.is_dir() {
            return Ok(LowerLayer { path, idmap: false });
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&copies)
            .map_err(io_err(&copies))?;
        // Half-made copies of a daemon that died while copying (this one holds the lock).
        idshift::remove_tmp_copies(&copies);
        let tmp = copies.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let started = std::time::Instant::now();
        let made = idshift::shifted_copy(layer, &tmp, map)
            // Durable before it is published under its name: a crash never leaves a
            // complete-looking copy with empty files.
            .and_then(|stats| {
                let dir = fs::File::open(&tmp)?;
                rustix::fs::syncfs(&dir)?;
                fs::rename(&tmp, &path)?;
                Ok(stats)
            });
        match made {
            Ok(stats) => {
                tracing::info!(
                    layer = %layer.display(),
                    copy = %path.display(),
                    entries = stats.entries,
                    skipped_nodes = stats.skipped_nodes,
                    ms = started.elapsed().as_millis() as u64,
                    "shifted copy of an image layer made"
                );
                Ok(LowerLayer { path, idmap: false })
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(WorkerError::Io { path, source: e })
            }
        }
    }

    fn prepare_container_dir(
        &self,
        dir: &Path,
        place: &Placement,
        layer_from: Option<&Path>,
    ) -> Result<(), WorkerError> {
        // Root's alone: the layers hold setuid files, the console log the guest's output.
        let real = place.home.as_deref().unwrap_or(dir);
        // A pool's directory for the instance must be new: one a crash left (or another
        // instance's) is never taken over.
        fs::DirBuilder::new()
            .recursive(place.home.is_none())
            .mode(0o700)
            .create(real)
            .map_err(io_err(real))?;
        fs::set_permissions(real, fs::Permissions::from_mode(0o700)).map_err(io_err(real))?;
        if let Some(home) = &place.home {
            match fs::read_link(dir) {
                Ok(to) if &to == home => {}
                Ok(_) => {
                    // A link a crash left (its create never recorded): replaced.
                    fs::remove_file(dir).map_err(io_err(dir))?;
                    std::os::unix::fs::symlink(home, dir).map_err(io_err(dir))?;
                }
                Err(_) => std::os::unix::fs::symlink(home, dir).map_err(io_err(dir))?,
            }
        }
        let rootfs = real.join("rootfs");
        fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
        match layer_from {
            Some(from) => self.copy_layer(from, real, place.subvolume),
            None => make_layer(real, place.subvolume),
        }
    }

    fn copy_layer(&self, from: &Path, to: &Path, subvolume: bool) -> Result<(), WorkerError> {
        fs::create_dir_all(to).map_err(io_err(to))?;
        let from_layer = from.join("layer");
        let to_layer = to.join("layer");
        for taken in [&to_layer, &to.join("upper")] {
            if fs::symlink_metadata(taken).is_ok() {
                return Err(io_err(taken)(io::Error::from(io::ErrorKind::AlreadyExists)));
            }
        }
        if subvolume && btrfs::is_subvolume(&from_layer) && btrfs::same_btrfs(from, to) {
            return btrfs::snapshot(&from_layer, &to_layer).map_err(io_err(&to_layer));
        }
        make_layer(to, subvolume)?;
        let (from_upper, _, _) = crate::paths::overlay_dirs(from);
        let (to_upper, _, _) = crate::paths::overlay_dirs(to);
        fs::remove_dir(&to_upper).map_err(io_err(&to_upper))?;
        self.copy_tree(&from_upper, &to_upper)
    }

    fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), WorkerError> {
        copy_archive(from, to).map_err(|e| {
            let _ = fs::remove_dir_all(to);
            WorkerError::Io {
                path: to.to_path_buf(),
                source: e,
            }
        })
    }

    fn remove_container_dir(&self, dir: &Path) -> Result<(), WorkerError> {
        // A container in another pool: `dir` links to its directory there, which is set
        // aside in that pool (a rename across filesystems would fail), then the link goes.
        // (A link an administrator made to elsewhere is only a link: it alone goes.)
        if let Ok(home) = fs::read_link(dir) {
            if let Some(parent) = home
                .parent()
                .filter(|_| crate::storage::is_pool_home(&home, dir) && home.is_dir())
            {
                let aside = parent.join(format!(".deleting-{}", uuid::Uuid::new_v4().simple()));
                fs::rename(&home, &aside).map_err(io_err(&home))?;
                fs::remove_file(dir).map_err(io_err(dir))?;
                return btrfs::remove_tree(&aside).map_err(io_err(&aside));
            }
            return fs::remove_file(dir).map_err(io_err(dir));
        }
        if !dir.exists() {
            return Ok(());
        }
        fs::create_dir_all(&self.trash).map_err(io_err(&self.trash))?;
        let mut aside = self.trash.join(uuid::Uuid::new_v4().simple().to_string());
        if let Err(e) = fs::rename(dir, &aside) {
            // On another filesystem than the trash (a snapshot of an instance in another
            // pool): set aside beside itself.
            if e.raw_os_error() != Some(libc::EXDEV) {
                return Err(io_err(dir)(e));
            }
            let parent = dir.parent().unwrap_or(dir);
            aside = parent.join(format!(".deleting-{}", uuid::Uuid::new_v4().simple()));
            fs::rename(dir, &aside).map_err(io_err(dir))?;
        }
        btrfs::remove_tree(&aside).map_err(io_err(&aside))
    }

    fn create_cgroup(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<Vec<PathBuf>, WorkerError> {
        let cg = self.cgroup(name);
        cg.create(limits)?;
        Ok(cg.procs_files())
    }

    fn delegate_cgroup(&self, name: &str, uid: u32, gid: u32) -> Result<(), WorkerError> {
        Ok(self.cgroup(name).delegate(uid, gid)?)
    }

    fn apply_limits(&self, name: &str, limits: &CgroupLimits) -> Result<(), WorkerError> {
        Ok(self.cgroup(name).apply(limits)?)
    }

    fn remove_cgroup(&self, name: &str) -> Result<(), WorkerError> {
        Ok(self.cgroup(name).remove()?)
    }

    fn cgroup_procs(&self, name: &str) -> Vec<PathBuf> {
        self.cgroup(name).procs_files()
    }

    fn set_frozen(&self, name: &str, frozen: bool) -> Result<(), WorkerError> {
        Ok(self.cgroup(name).set_frozen(frozen)?)
    }

    fn is_frozen(&self, name: &str) -> bool {
        self.cgroup(name).is_frozen()
    }

    fn usage(&self, name: &str) -> CgroupUsage {
        self.cgroup(name).usage()
    }

    fn stats(&self, name: &str) -> CgroupStats {
        self.cgroup(name).stats()
    }

    fn net_counters(&self, pid: i32) -> Vec<usage::NetCounters> {
        std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
            .map(|t| usage::parse_net_dev(&t))
            .unwrap_or_default()
    }

    fn disk_usage(&self, dir: &Path) -> u64 {
        usage::disk_usage(dir)
    }

    fn cgroup_mounts(&self) -> Vec<spec::MountEntry> {
        // Every hierarchy of the layout, named ones included: the container has its own
        // cgroup in each, which its cgroup namespace makes the root of what it mounts.
        let host: Vec<_> = self
            .layout
            .hierarchies
            .iter()
            .map(cgroup::Hierarchy::view)
            .collect();
        let mut mounts = spec::cgroup_mounts(&host);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if let Some(lxcfs) = cgroup::lxcfs_mount_point(&mountinfo) {
            mounts.extend(spec::lxcfs_mounts(&lxcfs));
        }
        mounts
    }

    fn online_cpus(&self) -> Vec<u32> {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|t| usage::parse_cpu_list(t.trim()))
            .unwrap_or_default()
    }

    fn spawn_init(&self, spec: &SpawnSpec) -> Result<InitProcess, WorkerError> {
        Ok(self.starters.spawn_init(&self.exe, spec)?)
    }

    fn is_alive(&self, init: &InitProcess) -> bool {
        proc::is_alive(init.pid, init.starttime)
    }

    fn signal(&self, init: &InitProcess, signal: i32) -> Result<bool, WorkerError> {
        // Open a pidfd first, then check identity: the signal goes to exactly that process.
        let Ok(fd) = sys::pidfd_open(init.pid) else {
            return Ok(false);
        };
        if !proc::is_alive(init.pid, init.starttime) {
            return Ok(false);
        }
        use std::os::fd::AsRawFd;
        match sys::pidfd_send_signal(fd.as_raw_fd(), signal) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(source) => Err(WorkerError::Signal {
                pid: init.pid,
                source,
            }),
        }
    }

    fn wait_exit(&self, init: &InitProcess, timeout: Duration) -> bool {
        let Ok(fd) = sys::pidfd_open(init.pid) else {
            return true;
        };
        wait_pidfd(&fd, timeout, || proc::is_alive(init.pid, init.starttime))
    }

    fn wait_pid_gone(&self, pid: i32, timeout: Duration) -> bool {
        // A pidfd becomes readable when its process exits, child of ours or not: no polling
        // interval between the monitor's exit and the next step of a stop.
        let Ok(fd) = sys::pidfd_open(pid) else {
            return !proc::exists(pid);
        };
        wait_pidfd(&fd, timeout, || proc::exists(pid))
    }

    fn open_root(&self, init: &InitProcess) -> Result<files::RootDir, WorkerError> {
        files::RootDir::of_process(init.pid, init.starttime).map_err(|source| WorkerError::Io {
            path: PathBuf::from(format!("/proc/{}/root", init.pid)),
            source,
        })
    }

    fn open_stopped_root(&self, root: &StoppedRoot) -> Result<files::RootDir, WorkerError> {
        let layers = rootfs::Layers {
            lower: &root.lower.path,
            idmap_lower: root.lower.idmap,
            upper: &root.upper,
            work: &root.work,
        };
        let fd = rootfs::detached_root(&self.exe, &layers, root.id_map.as_ref()).map_err(|e| {
            WorkerError::Io {
                path: root.upper.clone(),
                source: io::Error::other(e),
            }
        })?;
        Ok(files::RootDir::of_mount(fd, root.id_map.clone()))
    }

    fn mount_disk(&self, init: &InitProcess, disk: &spec::DiskMount) -> Result<(), WorkerError> {
        let req = disk::MountRequest {
            pid: init.pid,
            starttime: init.starttime,
            action: disk::MountAction::Add(disk.clone()),
        };
        disk::run_forkmount(&self.exe, &req).map_err(|reason| WorkerError::Disk {
            target: disk.target.clone(),
            reason,
        })
    }

    fn unmount_disk(&self, init: &InitProcess, target: &str) -> Result<(), WorkerError> {
        let req = disk::MountRequest {
            pid: init.pid,
            starttime: init.starttime,
            action: disk::MountAction::Remove {
                target: target.to_string(),
            },
        };
        disk::run_forkmount(&self.exe, &req).map_err(|reason| WorkerError::Disk {
            target: target.to_string(),
            reason,
        })
    }

    fn open_netns(&self, init: &InitProcess) -> Result<netns::NetNs, WorkerError> {
        netns::NetNs::of_process(init.pid, init.starttime).map_err(|source| WorkerError::Io {
            path: PathBuf::from(format!("/proc/{}/ns/net", init.pid)),
            source,
        })
    }

    fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), WorkerError> {
        Ok(net::ensure_bridge(spec)?)
    }

    fn delete_bridge(&self, name: &str) -> Result<(), WorkerError> {
        Ok(net::delete_bridge(name)?)
    }

    fn bridge_exists(&self, name: &str) -> bool {
        net::is_bridge(name)
    }

    fn host_ipv4_subnets(&self) -> Result<Vec<(std::net::Ipv4Addr, u8)>, WorkerError> {
        Ok(net::host_ipv4_subnets()?)
    }

    fn setup_nics(&self, init: &InitProcess, nics: &[NicSpec]) -> Result<(), WorkerError> {
        if nics.is_empty() {
            return Ok(());
        }
        let Ok(ns) = netns::NetNs::of_process(init.pid, init.starttime) else {
            return Err(WorkerError::Spawn(spawn::SpawnError::Container(format!(
                "init {} exited before its network was set up",
                init.pid
            ))));
        };
        Ok(net::setup_nics(&ns, nics)?)
    }

    fn remove_nics(&self, init: &InitProcess, names: &[String]) -> Result<(), WorkerError> {
        if names.is_empty() {
            return Ok(());
        }
        // Gone: its interfaces went with its namespace.
        let Ok(ns) = netns::NetNs::of_process(init.pid, init.starttime) else {
            return Ok(());
        };
        Ok(net::remove_nics(&ns, names)?)
    }

    fn write_resolver(&self, init: &InitProcess, spec: &ResolverSpec) -> Result<(), WorkerError> {
        let root = self.open_root(init)?;
        Ok(net::write_resolver(&root, spec)?)
    }

    fn interfaces_of_many(&self, inits: &[InitProcess]) -> Vec<Vec<Interface>> {
        let namespaces = inits
            .iter()
            .map(|i| netns::NetNs::of_process(i.pid, i.starttime).ok())
            .collect();
        net::interfaces_of_many(namespaces)
    }

    fn interfaces(&self, init: Option<&InitProcess>, only: Option<&str>) -> Vec<Interface> {
        let ns = match init {
            None => None,
            Some(i) => match netns::NetNs::of_process(i.pid, i.starttime) {
                Ok(ns) => Some(ns),
                Err(_) => return Vec::new(),
            },
        };
        net::interfaces(ns.as_ref(), only).unwrap_or_else(|e| {
            tracing::debug!(error = %e, init = ?init.map(|i| i.pid), "listing interfaces failed");
            Vec::new()
        })
    }

    fn exec_command(&self, spec: &ExecSpec) -> ExecCommand {
        let json = serde_json::to_string(spec).unwrap_or_default();
        (
            self.exe.clone(),
            vec!["forkexec".into()],
            vec![(exec::SPEC_ENV.into(), json)],
        )
    }
}
