//! Where a [`Client`](crate::Client) connects: ctld's Unix socket, or a remote ctld over
//! HTTPS (TCP, then TLS with the client's certificate and the server's pinned one, see
//! [`crate::tls`]). Both give a [`Conn`], the byte stream HTTP and websockets run on.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::Error;
use crate::tls::pin_mismatch;

/// A ctld reached over HTTPS.
#[derive(Debug)]
pub struct HttpsTarget {
    /// The remote's name, for messages (`r1`).
    pub remote: String,
    /// `HOST:PORT`.
    pub addr: String,
    pub config: Arc<ClientConfig>,
}

/// How a client reaches its daemon.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The daemon's Unix socket.
    Unix(PathBuf),
    /// A remote daemon over HTTPS.
    Https(Arc<HttpsTarget>),
}

/// One connection to a daemon.
#[derive(Debug)]
pub enum Conn {
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// The `Host` header (and websocket URL host) for requests on this transport.
    pub fn host(&self) -> &str {
        match self {
            Transport::Unix(_) => "localhost",
            Transport::Https(target) => &target.addr,
        }
    }

    /// Open a connection.
    pub async fn connect(&self) -> Result<Conn, Error> {
        match self {
            Transport::Unix(path) => {
                UnixStream::connect(path)
                    .await
                    .map(Conn::Unix)
                    .map_err(|source| Error::Connect {
                        target: path.display().to_string(),
                        source,
                    })
            }
            Transport::Https(target) => {
                let stream = tls_connect(&target.addr, Arc::clone(&target.config)).await;
                stream
                    .map(|s| Conn::Tls(Box::new(s)))
                    .map_err(|e| e.for_remote(&target.remote))
            }
        }
    }
}

/// The host part of `HOST:PORT` (`[::1]:8443` gives `::1`), as a TLS server name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, Error> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| Error::Protocol(format!("invalid server address {addr:?}")))
}

/// TCP to `addr`, then a TLS handshake with `config`. A certificate that is not the pinned
/// one becomes [`Error::CertificateMismatch`].
pub async fn tls_connect(
    addr: &str,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, Error> {
    let name = server_name(addr)?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect {
            target: format!("https://{addr}"),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| match pin_mismatch(&source) {
            Some(mismatch) => Error::CertificateMismatch {
                remote: String::new(),
                addr: addr.to_string(),
                expected: mismatch.expected.clone(),
                seen: mismatch.seen.clone(),
            },
            None => Error::Tls {
                addr: addr.to_string(),
                source,
            },
        })
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned()).ok();
        assert_eq!(name("127.0.0.1:8443").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(name("host.example:8443").as_deref(), Some("host.example"));
        assert_eq!(name("host.example").as_deref(), Some("host.example"));
        assert!(name("bad host:1").is_none());
    }
}
