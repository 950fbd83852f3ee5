//! The HTTPS listener on `core.https_address`: the whole API over TLS, started, moved or
//! stopped at once when the address changes. A new address is bound before the old
//! listener is let go, so a failed change leaves the old one serving.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, watch};
use tokio_rustls::TlsAcceptor;

use crate::server::{ConnLimits, Handshake, Peer};

/// The TLS handshake of one connection: the peer's certificate (if it sent one) becomes
/// its [`Peer::Tls`].
#[derive(Clone)]
struct Tls(TlsAcceptor);

impl<I> Handshake<I> for Tls
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = tokio_rustls::server::TlsStream<I>;

    async fn handshake(&self, io: I) -> Option<(Self::Io, Peer)> {
        let stream = match self.0.accept(io).await {
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
        let peer = Peer::Tls {
            fingerprint: certificate.as_deref().map(super::tls::fingerprint),
            certificate,
        };
        Some((stream, peer))
    }
}

struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The HTTPS listener. Cheap to clone.
#[derive(Clone)]
pub struct Https {
    tls: TlsAcceptor,
    limits: ConnLimits,
    router: Arc<OnceLock<axum::Router>>,
    running: Arc<Mutex<Option<Running>>>,
}

impl Https {
    /// A listener (not yet bound) serving with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>, limits: ConnLimits) -> Https {
        Https {
            tls: TlsAcceptor::from(config),
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
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && running.is_some() => {
                let old = running.take();
                let old_addr = old.as_ref().map(|r| r.addr);
                if let Some(old) = old {
                    stop(old).await;
                }
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        if let Some(a) = old_addr
                            && let Ok(l) = tokio::net::TcpListener::bind(a).await
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
        let task = tokio::spawn(crate::server::serve_limited(
            listener,
            router,
            self.limits,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            Tls(self.tls.clone()),
        ));
        Running {
            addr,
            stop: stop_tx,
            task,
        }
    }
}

async fn stop(r: Running) {
    r.stop.send_replace(true);
    let _ = r.task.await;
}
