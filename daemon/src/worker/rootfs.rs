//! A container's root filesystem as one overlay mount: the image layer (seen through the
//! container's id map when the store uses id-mapped mounts, so the shared layer is never
//! chowned) under the container's own upper layer.
//!
//! A start makes it in the monitor ([`super::spawn`]) and the init attaches it in its own
//! mount namespace. The file API on a *stopped* container makes the same overlay here, as a
//! detached mount ([`detached_root`]): it is attached nowhere, so no other process on the
//! host sees it, and it goes away with the last descriptor into it.
//!
//! An id-mapped mount needs a user namespace with the container's map. The daemon is
//! multi-threaded and cannot `unshare` one itself: the hidden `ctld forkuserns` entry
//! ([`forkuserns_main`]) makes one and holds it while the mount is made.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use super::spec::IdMap;
use super::sys;

/// The layers of one container's root.
#[derive(Debug, Clone)]
pub struct Layers<'a> {
    /// The image layer (or its shifted copy).
    pub lower: &'a Path,
    /// Whether `lower` is id-mapped onto the container's map (`id_map` must be set).
    pub idmap_lower: bool,
    pub upper: &'a Path,
    pub work: &'a Path,
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: path contains a NUL byte", p.display()))
}

/// The overlay of `layers` as a detached mount with `attrs`. `userns` is the user namespace
/// whose map the lower layer is seen through (needed iff `layers.idmap_lower`).
pub fn overlay(
    layers: &Layers<'_>,
    userns: Option<&File>,
    attrs: sys::MountAttrs,
) -> Result<OwnedFd, String> {
    let lower = cpath(layers.lower)?;
    // Held until the overlay exists: the lower layer's path names this descriptor.
    let mut _idmapped = None;
    let lower = match (layers.idmap_lower, userns) {
        (false, _) => lower,
        (true, None) => return Err("an id-mapped image layer needs a user namespace".into()),
        (true, Some(userns)) => {
            let mnt = sys::open_tree_clone(&lower)
                .map_err(|e| format!("open image layer {}: {e}", layers.lower.display()))?;
            sys::mount_set_idmap(mnt.as_fd(), userns.as_fd()).map_err(|e| {
                format!(
                    "id-mapped mount of the image layer {}: {e} (the image store's filesystem \
                     must support id-mapped mounts; start ctld with --image-shift=copy to use \
                     shifted copies instead)",
                    layers.lower.display()
                )
            })?;
            let path = format!("/proc/self/fd/{}", mnt.as_raw_fd());
            _idmapped = Some(mnt);
            CString::new(path).map_err(|e| e.to_string())?
        }
    };
    let fsfd = sys::fsopen(c"overlay").map_err(|e| format!("fsopen overlay: {e}"))?;
    let set = |key: &CStr, value: &CStr| {
        sys::fsconfig_string(fsfd.as_fd(), key, value)
            .map_err(|e| format!("overlay option {}: {e}", key.to_string_lossy()))
    };
    set(c"source", c"overlay")?;
    // `lowerdir+` takes one layer, unescaped (kernel 6.8+); older kernels get `lowerdir`.
    if sys::fsconfig_string(fsfd.as_fd(), c"lowerdir+", &lower).is_err() {
        set(c"lowerdir", &lower)?;
    }
    set(c"upperdir", &cpath(layers.upper)?)?;
    set(c"workdir", &cpath(layers.work)?)?;
    sys::fs_create_and_mount(fsfd.as_fd(), attrs)
        .map_err(|e| format!("mount overlay over {}: {e}", layers.upper.display()))
}

/// The root of a stopped container: [`overlay`] made in this process (nosuid, nodev,
/// noexec: ctld only reads and writes files there), with a user namespace of map `id_map`
/// from `ctld forkuserns` (binary `exe`) when the lower layer is id-mapped.
pub fn detached_root(
    exe: &Path,
    layers: &Layers<'_>,
    id_map: Option<&IdMap>,
) -> Result<OwnedFd, String> {
    match (layers.idmap_lower, id_map) {
        (true, Some(map)) => {
            let holder = UsernsHolder::spawn(exe, map)?;
            let root = overlay(layers, Some(&holder.userns), sys::MountAttrs::INERT);
            holder.release();
            root
        }
        (true, None) => Err("an id-mapped image layer needs the container's id map".into()),
        (false, _) => overlay(layers, None, sys::MountAttrs::INERT),
    }
}

/// A `ctld forkuserns` child holding a user namespace with a given map, and that namespace.
struct UsernsHolder {
    child: std::process::Child,
    userns: File,
}

impl UsernsHolder {
    fn spawn(exe: &Path, map: &IdMap) -> Result<UsernsHolder, String> {
        let mut child = Command::new(exe)
            .arg("forkuserns")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("run {} forkuserns: {e}", exe.display()))?;
        let made = (|| {
            let mut ready = [0u8; 1];
            let out = child.stdout.as_mut().ok_or("forkuserns without stdout")?;
            match out.read(&mut ready) {
                Ok(1) if ready[0] == b'1' => {}
                _ => return Err("forkuserns could not make a user namespace".to_string()),
            }
            let pid = child.id();
            super::spawn::write_id_map(pid as i32, map)
                .map_err(|e| format!("id map of the user namespace: {e}"))?;
            File::open(format!("/proc/{pid}/ns/user")).map_err(|e| format!("user namespace: {e}"))
        })();
        match made {
            Ok(userns) => Ok(UsernsHolder { child, userns }),
            Err(e) => {
                UsernsHolder::end(&mut child);
                Err(e)
            }
        }
    }

    /// Let the child go (its namespace lives on in whatever mount was made from it).
    fn release(mut self) {
        UsernsHolder::end(&mut self.child);
    }

    fn end(child: &mut std::process::Child) {
        // EOF on its stdin is its cue to exit.
        drop(child.stdin.take());
        if child.wait().is_err() {
            let _ = child.kill();
        }
    }
}

/// The `forkuserns` entry (single threaded, before any runtime): enter a new user namespace,
/// say `1` on stdout, and stay until stdin closes, so the parent can write its maps and open
/// it. Exit status 1 when no namespace could be made.
pub fn forkuserns_main() -> i32 {
    let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
    let mut out = io::stdout();
    let _ = out.write_all(if ok { b"1" } else { b"0" });
    let _ = out.flush();
    if !ok {
        return 1;
    }
    let _ = io::stdin().read(&mut [0u8; 1]);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_root_is_an_overlay_that_runs_nothing() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = |n: &str| {
            let p = tmp.path().join(n);
            std::fs::create_dir(&p).unwrap_or_else(|e| panic!("{e}"));
            p
        };
        let (lower, upper, work) = (dir("lower"), dir("upper"), dir("work"));
        std::fs::write(lower.join("from-image"), "x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(upper.join("own"), "y").unwrap_or_else(|e| panic!("{e}"));
        let layers = Layers {
            lower: &lower,
            idmap_lower: false,
            upper: &upper,
            work: &work,
        };
        let root = match detached_root(Path::new("/proc/self/exe"), &layers, None) {
            Ok(r) => r,
            // Not root (or no overlay here): nothing to check.
            Err(e) if e.contains("EPERM") || e.contains("Operation not permitted") => return,
            Err(e) => panic!("{e}"),
        };
        let fs = nix::sys::statvfs::fstatvfs(&root).unwrap_or_else(|e| panic!("{e}"));
        use nix::sys::statvfs::FsFlags;
        for flag in [FsFlags::ST_NOSUID, FsFlags::ST_NODEV, FsFlags::ST_NOEXEC] {
            assert!(
                fs.flags().contains(flag),
                "{flag:?} missing: {:?}",
                fs.flags()
            );
        }
        // Both layers are seen through it, and nothing is attached anywhere.
        let at = format!("/proc/self/fd/{}", root.as_raw_fd());
        assert_eq!(
            std::fs::read_to_string(format!("{at}/from-image"))
                .ok()
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            std::fs::read_to_string(format!("{at}/own")).ok().as_deref(),
            Some("y")
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(!mounts.contains(&*tmp.path().to_string_lossy()), "{mounts}");
    }
}
