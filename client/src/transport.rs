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

/// How long a TCP connection to a remote may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let connect_err = |source| Error::Connect {
        target: format!("https://{addr}"),
        source,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(io::Error::from(io::ErrorKind::TimedOut)))?
        .map_err(connect_err)?;
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
    use crate::Client;
    use crate::test_support::{read_request, sync_envelope, write_response};
    use crate::tls::{Identity, fingerprint, pinned_config};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A self-signed server certificate and its key.
    fn server_identity() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256);
        let Ok(key) = key else {
            panic!("key: {key:?}");
        };
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .and_then(|p| p.self_signed(&key));
        let Ok(cert) = cert else {
            panic!("cert: {cert:?}");
        };
        let der = PrivatePkcs8KeyDer::from(key.serialize_der());
        (cert.der().clone(), PrivateKeyDer::Pkcs8(der))
    }

    /// A TLS server on 127.0.0.1 answering `connections` requests with `GET /1.0`'s
    /// envelope; returns its address and the `Host` headers it saw.
    async fn tls_server(
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        connections: usize,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key));
        let Ok(config) = config else {
            panic!("server config: {config:?}");
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            panic!("bind: {listener:?}");
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let task = tokio::spawn(async move {
            let mut hosts = Vec::new();
            for _ in 0..connections {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let (head, _) = read_request(&mut tls).await;
                hosts.extend(
                    head.lines()
                        .filter_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                        .map(str::to_string),
                );
                let answer = sync_envelope(serde_json::json!({"auth": "trusted"}));
                write_response(&mut tls, "200 OK", &answer).await;
            }
            hosts
        });
        (addr, task)
    }

    #[tokio::test]
    async fn https_requests_trust_exactly_the_pinned_certificate() {
        let Ok(conf) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let identity = Identity::load_or_create(conf.path());
        let Ok(identity) = identity else {
            panic!("identity: {identity:?}");
        };
        let (cert, key) = server_identity();
        let (other, _) = server_identity();
        let (addr, server) = tls_server(cert.clone(), key, 2).await;
        let client = |pin: &CertificateDer<'static>| {
            let config = pinned_config(&identity, pin.clone());
            let Ok(config) = config else {
                panic!("client config: {config:?}");
            };
            Client::https(HttpsTarget {
                remote: "r1".into(),
                addr: addr.clone(),
                config,
            })
        };

        let answer = client(&cert).get_value("/1.0").await;
        assert_eq!(
            answer
                .ok()
                .and_then(|v| v["auth"].as_str().map(str::to_string)),
            Some("trusted".to_string())
        );
        let refused = client(&other).get_value("/1.0").await.err();
        let Some(Error::CertificateMismatch {
            remote,
            expected,
            seen,
            ..
        }) = refused
        else {
            panic!("not a mismatch: {refused:?}");
        };
        assert_eq!(remote, "r1");
        assert_eq!(expected, fingerprint(&other));
        assert_eq!(seen, fingerprint(&cert));
        let hosts = server.await.unwrap_or_default();
        assert_eq!(hosts, vec![addr.clone()]);
    }

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
