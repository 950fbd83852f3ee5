//! Every filesystem location the daemon uses, derived from one state directory and injected
//! everywhere, so tests run the real daemon in a temp dir.

use std::path::{Path, PathBuf};

/// Locations of the daemon's state and of the host interfaces it uses.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$CTL_DIR` (default `/var/lib/ctld`).
    pub dir: PathBuf,
    /// Root of the cgroup hierarchies (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// Name of the cgroup under which every container's cgroup is created.
    pub cgroup_parent: String,
    /// The host's `/dev`, source of the device nodes bound into containers.
    pub host_dev: PathBuf,
    /// The busybox binary the built-in `busybox` image is made from.
    pub busybox: PathBuf,
    /// The ctld binary re-executed for `forkstart`/`forkexec`.
    pub exe: PathBuf,
    /// The host's apt configuration (`/etc/apt`), read for the Debian mirror.
    pub apt_dir: PathBuf,
    /// Where finished debootstrap runs are kept between builds (default `$CTL_DIR/cache`).
    pub build_cache: PathBuf,
    /// The Debian mirror to build from, instead of the one the host's apt sources name.
    pub debian_mirror: Option<String>,
}

impl Paths {
    /// Defaults for a state directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir: PathBuf = dir.into();
        Paths {
            build_cache: dir.join("cache"),
            apt_dir: PathBuf::from("/etc/apt"),
            debian_mirror: None,
            dir,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "ctl".into(),
            host_dev: PathBuf::from("/dev"),
            busybox: PathBuf::from("/bin/busybox"),
            exe: PathBuf::from("/proc/self/exe"),
        }
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("unix.socket")
    }

    /// The SQLite database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("ctld.db")
    }

    /// All containers' directories.
    pub fn containers(&self) -> PathBuf {
        self.dir.join("containers")
    }

    /// One container's directory.
    pub fn container(&self, name: &str) -> PathBuf {
        self.containers().join(name)
    }

    /// All images.
    pub fn images(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// One image's directory (its unpacked `rootfs/` lives inside).
    pub fn image(&self, fingerprint: &str) -> PathBuf {
        self.images().join(fingerprint)
    }

    /// Where deleted directories are renamed before removal.
    pub fn trash(&self) -> PathBuf {
        self.dir.join("trash")
    }

    /// Runtime sockets (container consoles): kept short, a socket path has 107 bytes.
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The file a container's monitor keeps while its init runs (see
    /// [`crate::worker::spawn::InitProcess`]): the host's word on what runs.
    pub fn init_state(&self, name: &str) -> PathBuf {
        self.container(name).join("init.json")
    }

    /// The console socket of a container's monitor.
    pub fn console_socket(&self, name: &str) -> PathBuf {
        self.run().join(format!("{name}.console"))
    }

    /// A scratch directory for work in progress (image builds).
    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Image files pulled from image servers, kept between attempts to resume.
    pub fn downloads(&self) -> PathBuf {
        self.dir.join("downloads")
    }

    /// The directories under `dir` the daemon makes at start-up, with their modes: `dir`
    /// itself is traversable (the socket's group reaches the socket), everything holding
    /// image or container content (setuid files, secrets) is root's alone.
    pub fn state_dirs(&self) -> [(PathBuf, u32); 11] {
        [
            (self.dir.clone(), 0o711),
            (self.containers(), 0o700),
            (self.images(), 0o700),
            (self.tmp(), 0o700),
            (self.trash(), 0o700),
            (self.downloads(), 0o700),
            (self.run(), 0o700),
            // The default pool's custom volumes and their snapshots (files a container's
            // root made, setuid ones among them), other pools and their loop files.
            (self.dir.join("custom"), 0o700),
            (self.dir.join("custom-snapshots"), 0o700),
            (self.dir.join("storage-pools"), 0o700),
            (self.dir.join("disks"), 0o700),
        ]
    }
}

/// The overlay directories of a container (or snapshot) directory: `upper` and `work`,
/// inside `layer/` when the layer is a btrfs subvolume (see
/// [`crate::worker::Placement::subvolume`]), and the `rootfs` mount point.
pub fn overlay_dirs(container: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let layer = container.join("layer");
    let base = if layer.is_dir() {
        layer
    } else {
        container.to_path_buf()
    };
    (
        base.join("upper"),
        base.join("work"),
        container.join("rootfs"),
    )
}
