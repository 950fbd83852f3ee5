//! Reading a regular file beneath a directory the daemon serves from (the web UI's
//! `CTL_UI` build): the kernel resolves the relative path with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so neither `..` nor a symlink (even
//! one swapped in between two requests) can reach a file outside the directory.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::sys;

/// `openat2` answers `EAGAIN` when a rename raced with the walk; it is safe to retry.
const RETRIES: usize = 8;

/// What [`open_regular`] found at a path that exists but is no regular file.
pub const NOT_A_FILE: i32 = libc::EISDIR;

/// Open `rel` (a relative path) beneath `dir` for reading. `ENOENT` when nothing is there,
/// [`NOT_A_FILE`] for a directory or another non-regular file, `EXDEV` or `ELOOP` for a
/// path that would leave `dir`.
pub fn open_regular(dir: &Path, rel: &str) -> io::Result<File> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let rel = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = (OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits();
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    let mut last = io::Error::from_raw_os_error(libc::EAGAIN);
    for _ in 0..RETRIES {
        match sys::openat2(root.as_fd(), &rel, flags, 0, resolve) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => last = e,
            Err(e) => return Err(e),
            Ok(fd) => {
                let file = File::from(fd);
                if !file.metadata()?.is_file() {
                    return Err(io::Error::from_raw_os_error(NOT_A_FILE));
                }
                return Ok(file);
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_beneath_the_directory() {
        let outer = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = outer.path().join("dist");
        std::fs::create_dir_all(dir.join("assets")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("index.html"), "<p>").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(outer.path().join("secret"), "no").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("../secret", dir.join("out")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("index.html", dir.join("in")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/etc/passwd", dir.join("abs"))
            .unwrap_or_else(|e| panic!("{e}"));
        let code = |rel: &str| open_regular(&dir, rel).err().and_then(|e| e.raw_os_error());
        assert_eq!(code("index.html"), None);
        assert_eq!(
            code("in"),
            None,
            "a symlink inside the directory is followed"
        );
        assert_eq!(code("missing.js"), Some(libc::ENOENT));
        assert_eq!(code("assets"), Some(NOT_A_FILE));
        for escape in [
            "../secret",
            "assets/../../secret",
            "out",
            "abs",
            "/etc/passwd",
        ] {
            assert!(
                matches!(code(escape), Some(libc::EXDEV | libc::ELOOP)),
                "{escape}: {:?}",
                code(escape)
            );
        }
    }
}
