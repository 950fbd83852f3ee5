//! The HTTPS listener on `core.https_address`: the whole API over TLS, started, moved or
//! stopped at once when the address changes. A new address is bound before the old
//! listener is let go, so a failed change leaves the old one serving.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Mutex, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Trust;
use crate::server::{ConnLimits, Handshake, Peer};

/// The TLS handshake of one connection: the peer's certificate (if it sent one) becomes
/// its [`Peer::Tls`], and the connection gets a token that ends it (a child of the
/// listener's, which ends them all when the listener stops). A connection whose
/// certificate is trusted is watched by the trust store, which ends it when the
/// certificate is removed or downgraded.
#[derive(Clone)]
struct Tls {
    acceptor: TlsAcceptor,
    listener: CancellationToken,
    trust: Trust,
}

impl<I> Handshake<I> for Tls
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = Revocable<tokio_rustls::server::TlsStream<I>>;

    async fn handshake(&self, io: I) -> Option<(Self::Io, Peer)> {
        let stream = match self.acceptor.accept(io).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return None;
            }
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let fingerprint = certificate.as_deref().map(super::tls::fingerprint);
        let conn = self.listener.child_token();
        if let Some(fp) = &fingerprint {
            self.trust.watch(fp, conn.clone());
        }
        let peer = Peer::Tls {
            fingerprint,
            certificate,
            conn: conn.clone(),
        };
        Some((Revocable::new(stream, conn), peer))
    }
}

/// A connection that fails every read and write once its token is cancelled, so an
/// upgraded one (events, exec, console websockets), which no request check sees again,
/// ends too. Dropping it cancels the token (its watchers forget it).
pub struct Revocable<S> {
    inner: S,
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Revocable<S> {
    fn new(inner: S, token: CancellationToken) -> Self {
        Revocable {
            inner,
            cancelled: Box::pin(token.clone().cancelled_owned()),
            token,
        }
    }

    /// An error once the token is cancelled (and the task woken when it is).
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection revoked",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S> Drop for Revocable<S> {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Ends every connection of this listener, upgraded ones too.
    conns: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The HTTPS listener. Cheap to clone.
#[derive(Clone)]
pub struct Https {
    tls: TlsAcceptor,
    trust: Trust,
    limits: ConnLimits,
    router: Arc<OnceLock<axum::Router>>,
    running: Arc<Mutex<Option<Running>>>,
}

impl Https {
    /// A listener (not yet bound) serving with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>, limits: ConnLimits, trust: Trust) -> Https {
        Https {
            tls: TlsAcceptor::from(config),
            trust,
            limits,
            router: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The router to serve (the API's, set once at start-up before any bind).
    pub fn set_router(&self, router: axum::Router) {
        let _ = self.router.set(router);
    }

    /// Where it listens now, if it does.
    pub async fn local_addr(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().map(|r| r.addr)
    }

    /// Listen on `addr` (`None`: stop listening). The new address is bound first; if that
    /// fails only because the old listener holds the same port, the old one is let go and
    /// the bind tried again (and the old one bound back if that fails too).
    pub async fn listen(&self, addr: Option<SocketAddr>) -> std::io::Result<()> {
        let mut running = self.running.lock().await;
        let Some(addr) = addr else {
            if let Some(old) = running.take() {
                stop(old).await;
                tracing::info!("HTTPS listener stopped");
            }
            return Ok(());
        };
        if running.as_ref().is_some_and(|r| r.addr == addr) {
            return Ok(());
        }
        let listener = match bind(addr) {
            Ok(l) => l,
            // Only when the old listener is what holds the port (same port, and the same
            // address or a wildcard on either side); another process's port is an error.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && running.as_ref().is_some_and(|r| overlaps(r.addr, addr)) =>
            {
                tracing::info!(from = ?running.as_ref().map(|r| r.addr), to = %addr,
                    "HTTPS listener: letting the old address go to bind the new one");
                let old = running.take();
                let old_addr = old.as_ref().map(|r| r.addr);
                if let Some(old) = old {
                    stop(old).await;
                }
                match bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        if let Some(a) = old_addr
                            && let Ok(l) = bind(a)
                        {
                            *running = Some(self.spawn(l, a));
                        }
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        };
        let bound = listener.local_addr()?;
        if let Some(old) = running.take() {
            stop(old).await;
        }
        *running = Some(self.spawn(listener, bound));
        tracing::info!(address = %bound, "HTTPS listener serving the API");
        Ok(())
    }

    fn spawn(&self, listener: tokio::net::TcpListener, addr: SocketAddr) -> Running {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let router = self.router.get().cloned().unwrap_or_default();
        let conns = CancellationToken::new();
        // Small writes (handshake flights, websocket frames) go out at once: with Nagle,
        // each waits for the peer's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(crate::server::serve_limited(
            listener,
            router,
            self.limits,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            Tls {
                acceptor: self.tls.clone(),
                listener: conns.clone(),
                trust: self.trust.clone(),
            },
        ));
        Running {
            addr,
            stop: stop_tx,
            conns,
            task,
        }
    }
}

/// Whether a listener on `a` keeps `b` from being bound.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A listening socket on `addr`; a wildcard IPv6 one takes IPv4 too (whatever
/// `net.ipv6.bindv6only` says), as `:PORT` promises.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => match tokio::net::TcpSocket::new_v6() {
            Ok(s) => s,
            // No IPv6 on this host: every IPv4 address is what `:PORT` can still mean.
            Err(e)
                if addr.ip().is_unspecified() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                return bind(SocketAddr::from(([0, 0, 0, 0], addr.port())));
            }
            Err(e) => return Err(e),
        },
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &false)
            .map_err(std::io::Error::from)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn stop(r: Running) {
    r.stop.send_replace(true);
    // Upgraded connections (websockets) outlive the server loop: end them too.
    r.conns.cancel();
    let _ = r.task.await;
}
