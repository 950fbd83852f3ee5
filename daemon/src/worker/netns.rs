//! Network namespaces as descriptors, and sockets created inside them.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life: once created it can be connected, read and written from any thread. So to reach a
//! service inside a container (`127.0.0.1:80` meaning the container's loopback), ctld
//! creates the socket on a short-lived, dedicated std thread that `setns`es into the
//! container's netns, creates the socket and exits; the descriptor goes back to the caller,
//! which connects it asynchronously. A tokio runtime thread never changes namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// A network namespace, held open by a descriptor (of `/proc/<pid>/ns/net` or a bind mount
/// of one). Holding it keeps the namespace alive even after its last process exited.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

/// What kind of socket to create in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// TCP.
    Stream,
    /// UDP.
    Datagram,
}

impl NetNs {
    /// The network namespace process `pid` lives in.
    pub fn of_pid(pid: i32) -> io::Result<NetNs> {
        NetNs::open(Path::new(&format!("/proc/{pid}/ns/net")))
    }

    /// The network namespace of the process `pid` that started at `starttime` (see
    /// [`super::proc::starttime`]): checked after opening, so a reused PID is an error
    /// rather than someone else's namespace. Use this for a container's init.
    pub fn of_process(pid: i32, starttime: u64) -> io::Result<NetNs> {
        let ns = NetNs::of_pid(pid)?;
        if !super::proc::is_alive(pid, starttime) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(ns)
    }

    /// The network namespace file at `path` (`/proc/<pid>/ns/net`, `/run/netns/<name>`).
    pub fn open(path: &Path) -> io::Result<NetNs> {
        let file = File::open(path)?;
        Ok(NetNs {
            fd: OwnedFd::from(file),
        })
    }

    /// A second handle on the same namespace (a duplicated descriptor).
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs {
            fd: self.fd.try_clone()?,
        })
    }

    /// Wrap a descriptor that refers to a network namespace (checked when first used).
    pub fn from_fd(fd: OwnedFd) -> NetNs {
        NetNs { fd }
    }

    /// Create a non-blocking, close-on-exec socket of `kind` for addresses like `addr`,
    /// inside this namespace. Blocks the caller for a thread spawn and two syscalls; async
    /// code uses [`NetNs::socket_async`].
    pub fn socket(&self, addr: &SocketAddr, kind: SocketKind) -> io::Result<OwnedFd> {
        let ns = self.fd.as_fd();
        let addr = *addr;
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("ctld-netns".into())
                .spawn_scoped(s, move || socket_in(ns, &addr, kind))?;
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns socket thread panicked")))
        })
    }

    /// [`NetNs::socket`] without blocking the caller: the dedicated thread hands the socket
    /// back through a channel.
    pub async fn socket_async(&self, addr: &SocketAddr, kind: SocketKind) -> io::Result<OwnedFd> {
        let ns = self.fd.try_clone()?;
        let addr = *addr;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ctld-netns".into())
            .spawn(move || {
                let _ = tx.send(socket_in(ns.as_fd(), &addr, kind));
            })?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("netns socket thread panicked")))
    }

    /// An unconnected, non-blocking TCP socket inside this namespace, as a std stream: hand
    /// it to `tokio::net::TcpSocket::from_std_stream` and connect it there.
    pub fn tcp_socket(&self, addr: &SocketAddr) -> io::Result<TcpStream> {
        Ok(TcpStream::from(self.socket(addr, SocketKind::Stream)?))
    }

    /// An unbound, non-blocking UDP socket inside this namespace.
    pub fn udp_socket(&self, addr: &SocketAddr) -> io::Result<UdpSocket> {
        Ok(UdpSocket::from(self.socket(addr, SocketKind::Datagram)?))
    }

    /// Connect to `addr` from inside this namespace, blocking up to `timeout`. For
    /// synchronous callers; async code connects [`NetNs::tcp_socket`] itself.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::socket::{SockaddrStorage, connect, getsockopt, sockopt};
        use std::os::fd::AsRawFd;
        let stream = self.tcp_socket(&addr)?;
        let sa = SockaddrStorage::from(addr);
        match connect(stream.as_raw_fd(), &sa) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINPROGRESS) => {
                let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, ms).map_err(io::Error::from)? == 0 {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                let err = getsockopt(&stream, sockopt::SocketError).map_err(io::Error::from)?;
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(err));
                }
            }
            Err(e) => return Err(e.into()),
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// On a thread of its own that exits right after (changing its namespace affects nothing
/// else): enter `ns`, create the socket.
fn socket_in(ns: BorrowedFd<'_>, addr: &SocketAddr, kind: SocketKind) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let ty = match kind {
        SocketKind::Stream => SockType::Stream,
        SocketKind::Datagram => SockType::Datagram,
    };
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io::Error::from)
}

impl AsFd for NetNs {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn socket_in_own_namespace_connects() {
        // Our own netns: no privilege needed, and it proves the socket is usable.
        let ns = NetNs::of_pid(std::process::id() as i32).expect("own netns");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stream = ns.connect_tcp(addr, Duration::from_secs(5));
        if nix::unistd::geteuid().is_root() {
            let stream = stream.expect("is root");
            assert_eq!(stream.peer_addr().expect("peer addr"), addr);
            assert!(listener.accept().is_ok());
        } else {
            // setns needs CAP_SYS_ADMIN, even into one's own namespace.
            assert!(stream.is_err());
        }
    }

    #[test]
    fn of_process_checks_the_start_time() {
        let me = std::process::id() as i32;
        let start = crate::worker::proc::starttime(me).expect("own start time");
        assert!(NetNs::of_process(me, start).is_ok());
        let err = NetNs::of_process(me, start + 1).expect_err("wrong start time");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn not_a_namespace_is_an_error() {
        let file = File::open("/proc/self/stat").expect("open");
        let ns = NetNs::from_fd(OwnedFd::from(file));
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("parse");
        assert!(ns.socket(&addr, SocketKind::Stream).is_err());
    }
}
