//! The TLS side of remote access: the server's certificate (made once, kept in the state
//! directory), the rustls configuration of the HTTPS listener, and certificate parsing and
//! fingerprints for the trust store.
//!
//! Clients authenticate with self-signed certificates (as with Incus and LXD): the listener
//! asks every client for a certificate, accepts any well-formed one whose handshake
//! signature verifies, and leaves the decision to the trust store, per request. No CA is
//! involved, so a client certificate proves only possession of its key; trust is the
//! fingerprint being in the store.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// TLS set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the server certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a PEM certificate and key: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid certificate: {0}")]
    Certificate(String),
}

/// The server's certificate and key.
#[derive(Debug)]
pub struct ServerIdentity {
    /// PEM, as `GET /1.0` shows it.
    pub certificate_pem: String,
    pub certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pub fingerprint: String,
}

/// Lowercase hex SHA-256 of a certificate's DER: its name in the trust store.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A certificate's validity window (`notBefore`, `notAfter`) in Unix seconds, if it parses.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// PEM text of a DER certificate.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A certificate as a client gives it (`POST /1.0/certificates`): PEM, or base64 of the
/// DER. It must parse as an X.509 end-entity certificate.
pub fn parse_certificate(text: &str) -> Result<CertificateDer<'static>, TlsError> {
    let trimmed = text.trim();
    let der = if trimmed.starts_with("-----BEGIN") {
        CertificateDer::from_pem_slice(trimmed.as_bytes())
            .map_err(|e| TlsError::Certificate(format!("not a PEM certificate: {e}")))?
    } else {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(trimmed.replace(['\n', '\r'], ""))
            .map_err(|e| TlsError::Certificate(format!("neither PEM nor base64: {e}")))?;
        CertificateDer::from(bytes)
    };
    webpki::EndEntityCert::try_from(&der)
        .map_err(|e| TlsError::Certificate(format!("not an X.509 certificate: {e}")))?;
    Ok(der)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `data` to `path` with `mode`, through a temp file renamed over it.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

impl ServerIdentity {
    /// The identity kept as `server.crt` and `server.key` in `dir`, made on first use: an
    /// ECDSA P-384 key (mode 0600) and a self-signed certificate for this host's name,
    /// `localhost` and the loopback addresses, valid ten years.
    pub fn load_or_create(dir: &Path) -> Result<ServerIdentity, TlsError> {
        let crt = dir.join("server.crt");
        let key = dir.join("server.key");
        if !crt.exists() || !key.exists() {
            let (cert_pem, key_pem) = generate()?;
            // The key first: a certificate without its key is never left behind.
            write_file(&key, key_pem.as_bytes(), 0o600)?;
            write_file(&crt, cert_pem.as_bytes(), 0o644)?;
            tracing::info!(certificate = %crt.display(), "made the server certificate");
        }
        let cert_pem = std::fs::read_to_string(&crt).map_err(io_at(&crt))?;
        let certificate =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
                path: crt.clone(),
                msg: e.to_string(),
            })?;
        let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Pem {
            path: key.clone(),
            msg: e.to_string(),
        })?;
        Ok(ServerIdentity {
            fingerprint: fingerprint(&certificate),
            certificate_pem: cert_pem,
            certificate,
            key: key_der,
        })
    }

    /// The listener's rustls configuration: TLS 1.2 and 1.3, HTTP/1.1, client
    /// certificates asked for (never required) and checked only for a valid handshake
    /// signature.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyClientCertificate {
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.certificate.clone()], self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ServerIdentity {
    /// A client configuration for talking to another cluster member: this server's own
    /// certificate as the client certificate, and the peer accepted only when its
    /// certificate's fingerprint is `peer_fingerprint` (members pin each other; no CA).
    pub fn member_client_config(
        &self,
        peer_fingerprint: &str,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedServer {
            fingerprint: peer_fingerprint.to_string(),
            provider: provider.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.certificate.clone()], self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A server accepted by its certificate's fingerprint alone (names and dates are not
/// checked: the fingerprint was exchanged through the cluster's database).
#[derive(Debug)]
struct PinnedServer {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A new self-signed server certificate and its key, as PEM.
fn generate() -> Result<(String, String), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    // The host's name first: LXD's and Incus' clients verify against the first DNS name.
    let mut names = vec![host.clone()];
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ctl");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("root@{host}"));
    // Self-signed and pinned by clients: Go's verifier takes it as its own root.
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Accept any client certificate with a valid handshake signature; the trust store
/// decides per request what its holder may do.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Untrusted clients may still read `GET /1.0` and present a token.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA names: clients then send whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn the_identity_is_made_once_and_its_key_is_root_only() -> TestResult {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir()?;
        let a = ServerIdentity::load_or_create(tmp.path())?;
        let b = ServerIdentity::load_or_create(tmp.path())?;
        assert_eq!(a.fingerprint, b.fingerprint, "kept, not made again");
        assert_eq!(a.fingerprint.len(), 64);
        let mode = std::fs::metadata(tmp.path().join("server.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        a.server_config()?;
        // The PEM the API shows parses back to the same certificate.
        let der = parse_certificate(&a.certificate_pem)?;
        assert_eq!(fingerprint(&der), a.fingerprint);
        assert_eq!(parse_certificate(&to_pem(&der))?, der);
        Ok(())
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for bad in [
            "",
            "hello",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "AAAA",
        ] {
            assert!(parse_certificate(bad).is_err(), "{bad:?}");
        }
    }
}
