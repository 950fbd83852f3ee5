//! Remote access: the server's own configuration (`GET/PUT/PATCH /1.0`), the HTTPS
//! listener it starts (`core.https_address`), the TLS identity, the trust store of client
//! certificates and tokens, and the dashboard's login sessions.
//!
//! Who may do what is decided per request in `api::auth` from the [`crate::server::Peer`]
//! of the connection and the state here.

pub mod config;
pub mod https;
pub mod sessions;
pub mod tls;
pub mod trust;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::db::shared::SharedStore;
use crate::db::store::Store;
use crate::db::{DbError, Pool};
use crate::server::ConnLimits;

pub use config::ConfigError;
pub use sessions::Sessions;
pub use tls::ServerIdentity;
pub use trust::{Trust, TrustError};

/// Errors of the remote-access service.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
}

/// Who asks to add a certificate.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    /// Root on the socket, a trusted unrestricted client, or a dashboard session.
    Admin,
    /// Anyone else, with the TLS certificate it presented, if any.
    Untrusted(Option<&'a [u8]>),
    /// A trusted but restricted or metrics-only client.
    Other,
}

/// What `POST /1.0/certificates` made.
#[derive(Debug)]
pub enum Added {
    /// A token (an operation of class `token`).
    Token(ctl_api::Operation),
    /// A trusted certificate.
    Certificate(ctl_api::Certificate),
}

/// `n` random bytes as lowercase hex (secrets, session ids).
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    // The system's CSPRNG; it fails only without a kernel random source, where nothing
    // secret could be made at all.
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        tracing::error!("the system random source failed");
        buf = uuid::Uuid::new_v4().as_bytes().repeat(n.div_ceil(16));
        buf.truncate(n);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The remote-access service. Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    /// This server's own database (its member keys when clustered).
    local: Pool,
    /// Where the shared configuration and trust store live.
    store: SharedStore,
    pub identity: Arc<ServerIdentity>,
    pub trust: Trust,
    pub sessions: Sessions,
    pub https: https::Https,
    /// The stored server configuration; the lock also orders updates.
    config: Arc<tokio::sync::Mutex<BTreeMap<String, String>>>,
}

impl Remote {
    /// Load the server's identity (made on first start in `dir`), its configuration and
    /// trust store. Nothing listens until [`Remote::start`]. A cluster's database that is
    /// away leaves the member with its own keys and nobody trusted over HTTPS but the
    /// other members, until it is back ([`Remote::reload`]).
    pub async fn load(
        local: Pool,
        store: SharedStore,
        dir: &Path,
        limits: ConnLimits,
    ) -> Result<Remote, RemoteError> {
        let identity = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || ServerIdentity::load_or_create(&dir))
                .await
                .map_err(|e| tls::TlsError::Certificate(e.to_string()))??
        };
        let tls = identity.server_config()?;
        let clustered = store.get().is_postgres();
        let config = match read_config(&local, &store.get()).await {
            Ok(c) => c,
            Err(e) if clustered => {
                tracing::warn!(error = %e, "the cluster's database is away: serving with this member's own configuration");
                config::member_keys(&Store::sqlite(local.clone()).config().await?)
            }
            Err(e) => return Err(e.into()),
        };
        let trust = match Trust::load(store.clone()).await {
            Ok(t) => t,
            Err(e) if clustered => {
                tracing::warn!(error = %e, "the cluster's database is away: the trust store loads when it is back");
                Trust::unloaded(store.clone())
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Remote {
            https: https::Https::new(tls, limits, trust.clone()),
            trust,
            local,
            store,
            sessions: Sessions::new(&identity.fingerprint),
            identity: Arc::new(identity),
            config: Arc::new(tokio::sync::Mutex::new(config)),
        })
    }

    /// Read the configuration and the trust store again from the store (after it was
    /// swapped for a cluster's, and periodically: other members change them).
    pub async fn reload(&self) -> Result<(), RemoteError> {
        let fresh = read_config(&self.local, &self.store.get()).await?;
        *self.config.lock().await = fresh;
        self.trust.refresh().await?;
        Ok(())
    }

    /// Serve `router` on the stored `core.https_address`, if any. A failure to bind is
    /// logged, not fatal: the Unix socket serves anyway and the address can be fixed.
    pub async fn start(&self, router: axum::Router) {
        self.https.set_router(router);
        let config = self.config.lock().await;
        let Some(value) = config.get(config::HTTPS_ADDRESS) else {
            return;
        };
        match config::https_address(value) {
            Ok(addr) => {
                if let Err(e) = self.https.listen(Some(addr)).await {
                    tracing::error!(address = %addr, error = %e, "cannot serve the API over HTTPS");
                }
            }
            Err(e) => tracing::error!(error = %e, "core.https_address"),
        }
    }

    /// Stop the HTTPS listener (daemon shutdown).
    pub async fn stop(&self) {
        if let Err(e) = self.https.listen(None).await {
            tracing::debug!(error = %e, "stopping the HTTPS listener");
        }
    }

    /// The server configuration.
    pub async fn config(&self) -> BTreeMap<String, String> {
        self.config.lock().await.clone()
    }

    /// Replace the server configuration with `new` (empty values are unset keys): checked
    /// whole before anything changes, applied (the HTTPS listener bound or moved), then
    /// stored; a failed store puts the listener back.
    pub async fn set_config(&self, mut new: BTreeMap<String, String>) -> Result<(), RemoteError> {
        new.retain(|_, v| !v.is_empty());
        config::check(&new)?;
        let mut current = self.config.lock().await;
        let old_addr = current
            .get(config::HTTPS_ADDRESS)
            .and_then(|v| config::https_address(v).ok());
        let new_addr = new
            .get(config::HTTPS_ADDRESS)
            .map(|v| config::https_address(v))
            .transpose()?;
        // Compared with where it listens, not with the stored value: a bind that failed
        // at start-up is tried again by setting the same address.
        let moved = old_addr != new_addr || self.https.local_addr().await != new_addr;
        if moved {
            self.https
                .listen(new_addr)
                .await
                .map_err(|source| RemoteError::Bind {
                    addr: new_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    source,
                })?;
        }
        if let Err(e) = write_config(&self.local, &self.store.get(), &new).await {
            if moved && let Err(back) = self.https.listen(old_addr).await {
                tracing::error!(error = %back, "cannot put the HTTPS listener back");
            }
            return Err(e.into());
        }
        *current = new;
        Ok(())
    }

    /// `POST /1.0/certificates`: an admin adds a certificate or asks for a token; anyone
    /// else may only present a token, which adds the certificate of their connection.
    pub async fn add_certificate(
        &self,
        ops: &crate::operations::Operations,
        req: ctl_api::CertificatesPost,
        who: Requester<'_>,
    ) -> Result<Added, RemoteError> {
        let presented = if req.trust_token.is_empty() {
            &req.password
        } else {
            &req.trust_token
        };
        match who {
            Requester::Admin if req.token => {
                let addresses = self.addresses().await;
                if addresses.is_empty() {
                    return Err(RemoteError::Invalid(
                        "cannot issue a token while the server does not listen on the network: \
                         set core.https_address first"
                            .into(),
                    ));
                }
                let op =
                    self.trust
                        .issue_token(ops, req.put, &self.identity.fingerprint, addresses)?;
                Ok(Added::Token(op))
            }
            Requester::Admin if !req.put.certificate.is_empty() => {
                Ok(Added::Certificate(self.trust.add(req.put).await?))
            }
            Requester::Admin | Requester::Other => Err(RemoteError::Invalid(
                "the client is already trusted: give a certificate to add or ask for a token"
                    .into(),
            )),
            Requester::Untrusted(_) if req.token => Err(RemoteError::Forbidden(
                "only trusted clients may issue tokens".into(),
            )),
            Requester::Untrusted(None) => Err(RemoteError::Forbidden(
                "present a TLS client certificate to be trusted".into(),
            )),
            Requester::Untrusted(Some(der)) => {
                if presented.is_empty() {
                    return Err(RemoteError::Forbidden(
                        "not authorized: a trust token is needed (`ctl config trust add NAME` \
                         on the server)"
                            .into(),
                    ));
                }
                let Some(mut put) = self.trust.redeem(presented) else {
                    return Err(RemoteError::Forbidden(
                        "no matching certificate add token (spent, revoked or expired)".into(),
                    ));
                };
                if put.name.is_empty() {
                    put.name = req.put.name;
                }
                Ok(Added::Certificate(self.trust.add_der(put, der).await?))
            }
        }
    }

    /// A dashboard login link for a browser (`ctl ui`).
    pub async fn login_link(&self) -> Result<ctl_api::UiLoginLink, RemoteError> {
        let addresses = self.addresses().await;
        // Prefer an address other machines can reach; loopback when that is all there is.
        let host = addresses
            .iter()
            .find(|a| a.parse::<SocketAddr>().is_ok_and(|s| !s.ip().is_loopback()))
            .or(addresses.first())
            .cloned()
            .ok_or_else(|| {
                RemoteError::Invalid(
                    "the server does not listen on HTTPS: set core.https_address first \
                     (`ctl config set core.https_address 127.0.0.1:8443`)"
                        .into(),
                )
            })?;
        let token = self.sessions.new_link();
        let expires = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(sessions::LINK_LIFETIME.as_secs() as i64);
        Ok(ctl_api::UiLoginLink {
            url: format!("https://{host}/ui/login?token={token}"),
            token,
            expires_at: expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        })
    }

    /// A stored value.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.config.lock().await.get(key).cloned()
    }

    /// Where clients reach the HTTPS listener: its address, or every address of the host
    /// with its port when it listens on all of them. Empty when it does not listen.
    pub async fn addresses(&self) -> Vec<String> {
        let Some(bound) = self.https.local_addr().await else {
            return Vec::new();
        };
        if !bound.ip().is_unspecified() {
            return vec![bound.to_string()];
        }
        let port = bound.port();
        let mut out = Vec::new();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(sa) = a.address else { continue };
                let ip: std::net::IpAddr = if let Some(v4) = sa.as_sockaddr_in() {
                    v4.ip().into()
                } else if let Some(v6) = sa.as_sockaddr_in6() {
                    let ip = v6.ip();
                    // Link-local addresses need a scope a URL cannot carry.
                    if ip.segments()[0] & 0xffc0 == 0xfe80 {
                        continue;
                    }
                    ip.into()
                } else {
                    continue;
                };
                if bound.is_ipv4() && ip.is_ipv6() {
                    continue;
                }
                let s = SocketAddr::new(ip, port).to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// The configuration: the store's, or, when the store is a cluster's, this member's own
/// keys from its database and the shared ones from the cluster's.
async fn read_config(local: &Pool, store: &Store) -> Result<BTreeMap<String, String>, DbError> {
    if !store.is_postgres() {
        return store.config().await;
    }
    let mut config = config::member_keys(&Store::sqlite(local.clone()).config().await?);
    config.extend(config::global_keys(&store.config().await?));
    Ok(config)
}

/// Store `config` where [`read_config`] reads it (the shared keys first: the cluster's
/// database is the one that may be away).
async fn write_config(
    local: &Pool,
    store: &Store,
    config: &BTreeMap<String, String>,
) -> Result<(), DbError> {
    if !store.is_postgres() {
        return store.set_config(config).await;
    }
    store.set_config(&config::global_keys(config)).await?;
    Store::sqlite(local.clone())
        .set_config(&config::member_keys(config))
        .await
}
