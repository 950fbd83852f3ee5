//! Container consoles: the init's `/dev/console` is a PTY whose master the container's
//! monitor holds. The monitor keeps the output in a bounded ring log and serves a Unix
//! socket in the container directory, one request per connection: `log` (send the ring and
//! close), `clear` (empty it), `attach` (copy both ways until either side closes). When the
//! init exits the ring is written to `console.log`, so a stopped container's last output
//! stays readable.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Bytes of console output kept.
pub const RING_BYTES: usize = 128 * 1024;

/// The request lines of the console socket.
pub const CMD_LOG: &[u8] = b"log\n";
pub const CMD_CLEAR: &[u8] = b"clear\n";
pub const CMD_ATTACH: &[u8] = b"attach\n";

/// A bounded byte ring: the newest [`RING_BYTES`] of output.
#[derive(Debug, Default)]
pub struct Ring {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Ring {
    /// An empty ring holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Ring {
            buf: VecDeque::with_capacity(cap.min(16 * 1024)),
            cap,
        }
    }

    /// Append, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let over = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..over);
        self.buf.extend(data);
    }

    /// The contents, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Open a PTY on the host's devpts for a container console: (master, slave path).
pub fn open_console() -> io::Result<(OwnedFd, PathBuf)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let path = nix::pty::ptsname_r(&master)?;
    Ok((master.into(), PathBuf::from(path)))
}

/// Bind the console socket at `path` (replacing a stale one), owner-only.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    let _ = fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serve the console until `init_exit` (a pidfd of the init) becomes readable; then write
/// the ring to `log` and remove the socket.
pub fn serve(
    init_exit: &OwnedFd,
    master: OwnedFd,
    listener: UnixListener,
    sock: &Path,
    log: &Path,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut master = File::from(master);
    let mut ring = Ring::new(RING_BYTES);
    let mut attached: Vec<UnixStream> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut fds = vec![
            PollFd::new(init_exit.as_fd(), PollFlags::POLLIN),
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        for c in &attached {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[1] {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    ring.push(&buf[..n]);
                    // A client that cannot keep up is dropped, never waited for.
                    attached.retain_mut(|c| c.write_all(&buf[..n]).is_ok());
                }
                _ => {}
            }
        }
        if ready[2]
            && let Ok((conn, _)) = listener.accept()
        {
            handle_request(conn, &mut ring, &mut attached);
        }
        let mut gone = Vec::new();
        for (i, c) in attached.iter_mut().enumerate() {
            // A client accepted in this round was not polled yet.
            if !ready.get(3 + i).copied().unwrap_or(false) {
                continue;
            }
            match c.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                _ => gone.push(i),
            }
        }
        for i in gone.into_iter().rev() {
            attached.remove(i);
        }
        if ready[0] {
            break;
        }
    }
    let _ = fs::write(log, ring.contents());
    let _ = fs::remove_file(sock);
}

fn handle_request(mut conn: UnixStream, ring: &mut Ring, attached: &mut Vec<UnixStream>) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 16 {
        match conn.read(&mut byte) {
            Ok(1) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            _ => return,
        }
    }
    let _ = conn.set_read_timeout(None);
    match line.as_slice() {
        CMD_LOG => {
            let _ = conn.write_all(&ring.contents());
        }
        CMD_CLEAR => ring.clear(),
        CMD_ATTACH => {
            let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(2)));
            attached.push(conn);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let mut r = Ring::new(8);
        r.push(b"hello");
        r.push(b" world");
        assert_eq!(r.contents(), b"lo world");
        r.push(b"0123456789");
        assert_eq!(r.contents(), b"23456789");
        r.clear();
        assert!(r.contents().is_empty());
    }

    #[test]
    fn requests_over_a_socket_pair() -> Result<(), Box<dyn std::error::Error>> {
        let mut ring = Ring::new(64);
        ring.push(b"boot message\n");
        let mut attached = Vec::new();
        let (mut client, server) = UnixStream::pair()?;
        client.write_all(CMD_LOG)?;
        handle_request(server, &mut ring, &mut attached);
        let mut got = Vec::new();
        client.read_to_end(&mut got)?;
        assert_eq!(got, b"boot message\n");
        let (mut client, server) = UnixStream::pair()?;
        client.write_all(CMD_CLEAR)?;
        handle_request(server, &mut ring, &mut attached);
        assert!(ring.contents().is_empty());
        let (mut client, server) = UnixStream::pair()?;
        client.write_all(CMD_ATTACH)?;
        handle_request(server, &mut ring, &mut attached);
        assert_eq!(attached.len(), 1);
        Ok(())
    }
}
