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
use std::os::unix::fs::OpenOptionsExt;
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

/// Bytes a client may have queued towards the console, or the console towards a client,
/// before it is dropped: the monitor never waits for anybody.
const CLIENT_QUEUE: usize = 256 * 1024;

/// One connection to the console socket.
struct Client {
    stream: UnixStream,
    /// The request line, until it is complete.
    request: Vec<u8>,
    attached: bool,
    /// Output waiting to be written to the client.
    out: VecDeque<u8>,
    /// Close once `out` is written (a `log` answer).
    close_when_flushed: bool,
    gone: bool,
}

impl Client {
    fn queue(&mut self, data: &[u8]) {
        if self.out.len() + data.len() > CLIENT_QUEUE {
            // Too slow to keep up: dropped, never waited for.
            self.gone = true;
        } else {
            self.out.extend(data);
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            match self.stream.write(a) {
                Ok(0) => {
                    self.gone = true;
                    return;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    return;
                }
            }
        }
        if self.close_when_flushed {
            self.gone = true;
        }
    }
}

fn set_nonblocking(fd: &impl AsFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .unwrap_or(OFlag::empty());
    let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
}

/// Serve the console until `init_exit` (a pidfd of the init) becomes readable; then write
/// the ring to `log` and remove the socket. Every descriptor is non-blocking and every queue
/// bounded: a stuck console, a slow client or a silent one never blocks the monitor, which
/// must always be there to reap the init.
pub fn serve(
    init_exit: &OwnedFd,
    master: OwnedFd,
    slave: Option<PathBuf>,
    listener: UnixListener,
    sock: &Path,
    log: &Path,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // Holding a slave open ourselves keeps the master from reporting a hang-up (and poll
    // from spinning) while nothing inside has the console open.
    let _slave = slave.and_then(|p| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(p)
            .ok()
    });
    set_nonblocking(&master);
    let _ = listener.set_nonblocking(true);
    let mut master = File::from(master);
    let mut ring = Ring::new(RING_BYTES);
    let mut to_console: VecDeque<u8> = VecDeque::new();
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut fds = vec![
            PollFd::new(init_exit.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                master.as_fd(),
                if to_console.is_empty() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                },
            ),
        ];
        for c in &clients {
            let mut f = PollFlags::empty();
            // Stop reading input from clients while the console's queue is full.
            if to_console.len() < CLIENT_QUEUE {
                f |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), f));
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(_) => {}
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let any = |f: PollFlags| !f.is_empty();
        // Console output → ring and attached clients.
        if any(ready[2] & (PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
            && let Ok(n) = master.read(&mut buf)
            && n > 0
        {
            ring.push(&buf[..n]);
            for c in clients.iter_mut().filter(|c| c.attached) {
                c.queue(&buf[..n]);
            }
        }
        // Queued input → console.
        if any(ready[2] & PollFlags::POLLOUT) {
            let (a, _) = to_console.as_slices();
            if let Ok(n) = master.write(a) {
                to_console.drain(..n);
            }
        }
        // Clients: requests, input, output. Readiness belongs to the client it was polled
        // for; new clients join after this pass.
        for (c, r) in clients.iter_mut().zip(ready[3..].iter().copied()) {
            if any(r & (PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)) {
                match c.stream.read(&mut buf) {
                    Ok(0) => c.gone = true,
                    Ok(n) if c.attached => {
                        if to_console.len() + n <= CLIENT_QUEUE {
                            to_console.extend(&buf[..n]);
                        }
                    }
                    Ok(n) => {
                        c.request.extend(&buf[..n]);
                        if let Some(end) = c.request.iter().position(|b| *b == b'\n') {
                            let line = c.request[..=end].to_vec();
                            match line.as_slice() {
                                CMD_LOG => {
                                    let contents = ring.contents();
                                    c.out.extend(contents);
                                    c.close_when_flushed = true;
                                }
                                CMD_CLEAR => {
                                    ring.clear();
                                    c.close_when_flushed = true;
                                }
                                CMD_ATTACH => c.attached = true,
                                _ => c.gone = true,
                            }
                        } else if c.request.len() > 16 {
                            c.gone = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => c.gone = true,
                }
            }
            c.flush();
        }
        clients.retain(|c| !c.gone);
        if any(ready[1])
            && let Ok((stream, _)) = listener.accept()
        {
            let _ = stream.set_nonblocking(true);
            clients.push(Client {
                stream,
                request: Vec::new(),
                attached: false,
                out: VecDeque::new(),
                close_when_flushed: false,
                gone: false,
            });
        }
        if any(ready[0]) {
            break;
        }
    }
    let _ = fs::write(log, ring.contents());
    let _ = fs::remove_file(sock);
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
    fn client_queues_are_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let (a, _b) = UnixStream::pair()?;
        let mut c = Client {
            stream: a,
            request: Vec::new(),
            attached: true,
            out: VecDeque::new(),
            close_when_flushed: false,
            gone: false,
        };
        c.queue(&vec![b'x'; CLIENT_QUEUE]);
        assert!(!c.gone);
        c.queue(b"one more");
        assert!(
            c.gone,
            "a client that does not read is dropped, not waited for"
        );
        Ok(())
    }
}
