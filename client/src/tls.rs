//! TLS for remote ctld servers: the client's identity (a certificate and key made on first
//! use in the config dir, ECDSA P-384 as Incus makes them), server certificates pinned per
//! remote, and rustls configs that trust exactly the pinned certificate.
//!
//! A ctld server's certificate is self-signed, so there is no chain to check: like Incus with
//! a self-signed server, the client trusts the one certificate it saved when the remote was
//! added (`servercerts/NAME.crt`). The handshake signature is still verified against it, so
//! the server proves it holds the key. Fingerprints are the lowercase hex SHA-256 of the DER.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// File names of the client's identity inside the config dir (as Incus names them).
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.key";

/// What can go wrong with certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Pem { path: PathBuf, msg: String },
    #[error("cannot generate the client certificate")]
    Generate(#[source] rcgen::Error),
    #[error("cannot set up TLS")]
    Config(#[source] rustls::Error),
}

/// The lowercase hex SHA-256 of a certificate's DER: its fingerprint.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut text = String::with_capacity(64);
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A certificate as PEM (base64 lines of 64 characters).
pub fn cert_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The first certificate of PEM `text`.
pub fn parse_cert_pem(text: &[u8], path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(text).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        msg: format!("no certificate: {e}"),
    })
}

/// Read the certificate in PEM file `path`.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::File {
        path: path.to_path_buf(),
        source,
    })?;
    parse_cert_pem(&text, path)
}

/// Write `text` to `path` with `mode`, atomically (a temp file renamed over it).
pub fn write_private(path: &Path, text: &[u8], mode: u32) -> Result<(), TlsError> {
    let file_err = |source| TlsError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(file_err)?;
    file.write_all(text)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(file_err)
}

/// Make `dir` (and its parents) if missing; the config dir itself is 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TlsError> {
    let file_err = |source| TlsError::File {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(file_err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(file_err)
}

/// The client's certificate and key.
#[derive(Debug)]
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// The identity in config dir `dir`, made there first if it has none: an ECDSA P-384 key
    /// (`client.key`, mode 0600) and a self-signed certificate (`client.crt`) valid for ten
    /// years; the dir is made 0700.
    pub fn load_or_create(dir: &Path) -> Result<Identity, TlsError> {
        let (cert_path, key_path) = (dir.join(CLIENT_CERT), dir.join(CLIENT_KEY));
        if !cert_path.exists() || !key_path.exists() {
            // Two clients starting at once make one identity: the second waits, then
            // finds it.
            ensure_private_dir(dir)?;
            let lock_path = dir.join(".client.lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&lock_path)
                .and_then(|file| file.lock().map(|()| file))
                .map_err(|source| TlsError::File {
                    path: lock_path,
                    source,
                })?;
            if !cert_path.exists() || !key_path.exists() {
                create(&cert_path, &key_path)?;
            }
            drop(lock);
        }
        let cert = read_cert(&cert_path)?;
        let key_text = std::fs::read(&key_path).map_err(|source| TlsError::File {
            path: key_path.clone(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|e| TlsError::Pem {
            path: key_path,
            msg: format!("no private key: {e}"),
        })?;
        Ok(Identity { cert, key })
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }
}

fn create(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(TlsError::Generate)?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "ctl");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    write_private(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_private(cert_path, cert.pem().as_bytes(), 0o644)
}

/// `user@host`, as Incus names its client certificates.
fn common_name() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// The server presented another certificate than the one pinned for it.
#[derive(Debug, thiserror::Error)]
#[error("certificate {seen} is not the pinned certificate {expected}")]
pub struct PinMismatch {
    pub expected: String,
    pub seen: String,
}

/// What the server certificate must be.
#[derive(Debug)]
enum Trust {
    /// Exactly this certificate.
    Pinned(CertificateDer<'static>),
    /// Any certificate, recorded here (fetching a server's certificate to show the user).
    Capture(Arc<Mutex<Option<CertificateDer<'static>>>>),
}

#[derive(Debug)]
struct Verifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Pinned(pinned) if pinned.as_ref() == end_entity.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            Trust::Pinned(pinned) => {
                let mismatch = PinMismatch {
                    expected: fingerprint(pinned),
                    seen: fingerprint(end_entity),
                };
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
                ))
            }
            Trust::Capture(slot) => {
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(end_entity.clone().into_owned());
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn config(identity: Option<&Identity>, trust: Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Verifier {
        trust,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider) as Arc<CryptoProvider>)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A config that trusts exactly `server` and presents `identity`.
pub fn pinned_config(
    identity: &Identity,
    server: CertificateDer<'static>,
) -> Result<Arc<ClientConfig>, TlsError> {
    config(Some(identity), Trust::Pinned(server))
}

/// A config that accepts any server certificate and records it in `slot` (only to show it to
/// the user, or to compare it with a token's fingerprint, before it is pinned); it presents
/// `identity` if given.
pub fn capture_config(
    identity: Option<&Identity>,
    slot: Arc<Mutex<Option<CertificateDer<'static>>>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    config(identity, Trust::Capture(slot))
}

/// The pin mismatch inside a failed handshake's error, if that is why it failed.
pub fn pin_mismatch(error: &std::io::Error) -> Option<&PinMismatch> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref::<PinMismatch>()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn identity_is_made_once_with_private_modes() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let conf = dir.path().join("conf");
        let first = Identity::load_or_create(&conf);
        let Ok(first) = first else {
            panic!("identity: {first:?}");
        };
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).ok();
        assert_eq!(mode(&conf), Some(0o700));
        assert_eq!(mode(&conf.join(CLIENT_KEY)), Some(0o600));
        assert_eq!(mode(&conf.join(CLIENT_CERT)), Some(0o644));
        let again = Identity::load_or_create(&conf)
            .map(|i| i.fingerprint())
            .ok();
        assert_eq!(again, Some(first.fingerprint()));
        assert_eq!(first.fingerprint().len(), 64);
        // The PEM written round-trips through our own PEM writer.
        let pem = cert_pem(&first.cert);
        let back = parse_cert_pem(pem.as_bytes(), &conf)
            .map(|c| fingerprint(&c))
            .ok();
        assert_eq!(back, Some(first.fingerprint()));
    }

    #[test]
    fn clients_starting_at_once_make_one_identity() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir");
        };
        let conf = dir.path().join("conf");
        let fingerprints: Vec<Option<String>> = std::thread::scope(|s| {
            let made: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        Identity::load_or_create(&conf)
                            .map(|i| i.fingerprint())
                            .ok()
                    })
                })
                .collect();
            made.into_iter().map(|h| h.join().ok().flatten()).collect()
        });
        let first = fingerprints[0].clone();
        assert!(first.is_some());
        assert!(fingerprints.iter().all(|f| *f == first), "{fingerprints:?}");
        assert_eq!(
            Identity::load_or_create(&conf)
                .map(|i| i.fingerprint())
                .ok(),
            first
        );
    }

    #[test]
    fn fingerprints_are_lowercase_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_pin_mismatch_is_found_in_the_io_error() {
        let mismatch = PinMismatch {
            expected: "aa".into(),
            seen: "bb".into(),
        };
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        ));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let found = pin_mismatch(&io).map(|m| (m.expected.clone(), m.seen.clone()));
        assert_eq!(found, Some(("aa".into(), "bb".into())));
        assert!(pin_mismatch(&std::io::Error::other("x")).is_none());
    }
}
