//! The trust store: the client certificates allowed on the HTTPS listener, kept in the
//! database and mirrored in memory so every request is checked without a query. Every
//! change reloads the mirror, so a removed certificate is refused on its holder's next
//! request, also on a connection opened before.
//!
//! One-time tokens (`ctl config trust add NAME`) live as operations of class `token`, as
//! in Incus: their secret is in the operation's metadata for the admin who asked; a client
//! presenting it is added with the token's name and type, and the token is spent.
//! Cancelling the operation (`DELETE /1.0/operations/ID`) revokes the token. Tokens do not
//! survive a restart of the daemon.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ctl_api::{Certificate, CertificateAddToken, CertificatePut, OperationClass};
use serde_json::json;

use crate::db::DbError;
use crate::db::shared::SharedStore;
use crate::db::trust::CertificateRow;
use crate::operations::{CancelToken, OpHandle, Operations};
use tokio_util::sync::CancellationToken;

use super::tls;

/// Trust store errors.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    Invalid(String),
    #[error("certificate \"{0}\" not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A pending token: what the client it admits becomes.
struct Pending {
    request: CertificatePut,
    handle: OpHandle,
    /// Set at once when the operation is cancelled (its task removes the entry later).
    cancel: CancelToken,
    /// When it expires, by the wall clock (the timer task's clock stops while suspended).
    expires: time::OffsetDateTime,
}

/// The table in memory, with each certificate's validity window (Unix seconds).
#[derive(Default)]
struct Mirror {
    rows: HashMap<String, CertificateRow>,
    windows: HashMap<String, (i64, i64)>,
}

/// An open connection of a certificate's holder, ended when the certificate stops being
/// trusted as it was.
struct Watched {
    fingerprint: String,
    /// The row the connection was trusted with (`None`: not trusted yet).
    seen: Option<CertificateRow>,
    conn: CancellationToken,
}

/// The trust store. Cheap to clone.
#[derive(Clone)]
pub struct Trust {
    store: SharedStore,
    cache: Arc<RwLock<Mirror>>,
    /// Pending tokens by secret.
    tokens: Arc<Mutex<HashMap<String, Pending>>>,
    /// Open connections by certificate.
    watched: Arc<Mutex<Vec<Watched>>>,
    /// Orders changes: each one's reload is the last to install the mirror.
    changes: Arc<tokio::sync::Mutex<()>>,
}

/// How long a token is good for when its request names no expiry.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

const KINDS: &[&str] = &["client", "metrics"];

fn to_api(row: &CertificateRow) -> Certificate {
    Certificate {
        put: CertificatePut {
            name: row.name.clone(),
            kind: row.kind.clone(),
            restricted: row.restricted,
            projects: row.projects.clone(),
            certificate: row.certificate.clone(),
            description: row.description.clone(),
        },
        fingerprint: row.fingerprint.clone(),
    }
}

/// Check the writable fields of a request.
fn check_put(put: &CertificatePut) -> Result<(), TrustError> {
    if !KINDS.contains(&put.kind.as_str()) {
        return Err(TrustError::Invalid(format!(
            "invalid certificate type \"{}\": use client or metrics",
            put.kind
        )));
    }
    if put.name.len() > 255 || put.name.chars().any(char::is_control) {
        return Err(TrustError::Invalid(
            "invalid certificate name: at most 255 characters, no control characters".into(),
        ));
    }
    if let Some(p) = put.projects.iter().find(|p| p.as_str() != "default") {
        return Err(TrustError::Invalid(format!(
            "project \"{p}\" not found (only \"default\" exists)"
        )));
    }
    Ok(())
}

impl Trust {
    /// The trust store in `store`, its mirror loaded.
    pub async fn load(store: SharedStore) -> Result<Trust, TrustError> {
        let trust = Trust::unloaded(store);
        trust.reload().await?;
        Ok(trust)
    }

    /// The trust store in `store` with an empty mirror (nobody trusted until
    /// [`Trust::refresh`] reads it: a cluster's database may be away at start-up).
    pub fn unloaded(store: SharedStore) -> Trust {
        Trust {
            store,
            cache: Arc::default(),
            tokens: Arc::default(),
            watched: Arc::default(),
            changes: Arc::default(),
        }
    }

    /// Read the table again (a cluster's other members change it too).
    pub async fn refresh(&self) -> Result<(), TrustError> {
        let _order = self.changes.lock().await;
        self.reload().await
    }

    /// Read the table into the mirror, then end the open connections whose certificate
    /// was removed or changed (type, restriction) since they were trusted.
    async fn reload(&self) -> Result<(), TrustError> {
        let rows = self.store.get().certificates().await?;
        let map: HashMap<String, CertificateRow> = rows
            .into_iter()
            .map(|r| (r.fingerprint.clone(), r))
            .collect();
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain_mut(|w| {
            if w.conn.is_cancelled() {
                return false;
            }
            let now = map.get(&w.fingerprint);
            let same = |a: &CertificateRow, b: &CertificateRow| {
                a.kind == b.kind && a.restricted == b.restricted
            };
            match (&w.seen, now) {
                (Some(was), Some(is)) if same(was, is) => true,
                (Some(_), _) => {
                    w.conn.cancel();
                    false
                }
                (None, is) => {
                    w.seen = is.cloned();
                    true
                }
            }
        });
        let windows = map
            .iter()
            .filter_map(|(fp, row)| {
                let der = tls::parse_certificate(&row.certificate).ok()?;
                Some((fp.clone(), tls::validity(&der)?))
            })
            .collect();
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Mirror { rows: map, windows };
        Ok(())
    }

    /// Watch an open connection of the holder of `fingerprint`: it is ended (`conn`
    /// cancelled) when the certificate it is trusted with is removed or changed.
    pub fn watch(&self, fingerprint: &str, conn: CancellationToken) {
        let seen = self.lookup(fingerprint);
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.retain(|w| !w.conn.is_cancelled());
        watched.push(Watched {
            fingerprint: fingerprint.to_string(),
            seen,
            conn,
        });
    }

    /// The trusted certificate with this fingerprint, if any and valid now (no database
    /// access): an expired or not yet valid certificate trusts nobody, as with Incus.
    pub fn lookup(&self, fingerprint: &str) -> Option<CertificateRow> {
        let mirror = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let (from, until) = *mirror.windows.get(fingerprint)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if now < from || now > until {
            return None;
        }
        mirror.rows.get(fingerprint).cloned()
    }

    /// Every trusted certificate.
    pub async fn list(&self) -> Result<Vec<Certificate>, TrustError> {
        Ok(self
            .store
            .get()
            .certificates()
            .await?
            .iter()
            .map(to_api)
            .collect())
    }

    /// The full fingerprint of the one certificate `prefix` names (as LXD, a unique
    /// prefix will do).
    fn resolve(&self, prefix: &str) -> Result<CertificateRow, TrustError> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        if prefix.is_empty() {
            return Err(TrustError::NotFound(String::new()));
        }
        let mut hits = cache
            .rows
            .values()
            .filter(|r| r.fingerprint.starts_with(prefix));
        match (hits.next(), hits.next()) {
            (Some(r), None) => Ok(r.clone()),
            (Some(_), Some(_)) => Err(TrustError::Invalid(format!(
                "more than one certificate starts with \"{prefix}\""
            ))),
            (None, _) => Err(TrustError::NotFound(prefix.to_string())),
        }
    }

    /// One certificate by fingerprint (or a unique prefix of it).
    pub fn get(&self, fingerprint: &str) -> Result<Certificate, TrustError> {
        self.resolve(fingerprint).map(|r| to_api(&r))
    }

    /// Trust the certificate in `put.certificate` (PEM or base64 DER). The name defaults
    /// to the one the client asked for.
    pub async fn add(&self, put: CertificatePut) -> Result<Certificate, TrustError> {
        let der = tls::parse_certificate(&put.certificate)
            .map_err(|e| TrustError::Invalid(e.to_string()))?;
        self.add_der(put, der.as_ref()).await
    }

    /// Trust a DER certificate with `put`'s name, type and restrictions.
    pub async fn add_der(
        &self,
        put: CertificatePut,
        der: &[u8],
    ) -> Result<Certificate, TrustError> {
        check_put(&put)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match tls::validity(der) {
            Some((from, _)) if now < from => {
                return Err(TrustError::Invalid(
                    "the certificate is not valid yet".into(),
                ));
            }
            Some((_, until)) if now > until => {
                return Err(TrustError::Invalid("the certificate has expired".into()));
            }
            Some(_) => {}
            None => {
                return Err(TrustError::Invalid(
                    "the certificate's validity cannot be read".into(),
                ));
            }
        }
        let _change = self.changes.lock().await;
        let row = CertificateRow {
            fingerprint: tls::fingerprint(der),
            kind: put.kind,
            name: put.name,
            certificate: tls::to_pem(der),
            restricted: put.restricted,
            projects: put.projects,
            description: put.description,
        };
        let res = self.store.get().insert_certificate(&row).await;
        self.reload().await?;
        match res {
            Err(DbError::Conflict(_)) => Err(TrustError::Conflict(format!(
                "certificate {} is already trusted",
                row.fingerprint
            ))),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(to_api(&row)),
        }
    }

    /// Replace a certificate's name, type, restrictions and description (`PUT`). The
    /// certificate itself cannot change: a new one is a new entry.
    pub async fn update(
        &self,
        fingerprint: &str,
        put: CertificatePut,
    ) -> Result<Certificate, TrustError> {
        let _change = self.changes.lock().await;
        let old = self.resolve(fingerprint)?;
        if !put.certificate.is_empty() {
            let der = tls::parse_certificate(&put.certificate)
                .map_err(|e| TrustError::Invalid(e.to_string()))?;
            if tls::fingerprint(&der) != old.fingerprint {
                return Err(TrustError::Invalid(
                    "the certificate cannot be changed: add the new one and remove this one".into(),
                ));
            }
        }
        check_put(&put)?;
        let row = CertificateRow {
            kind: put.kind,
            name: put.name,
            restricted: put.restricted,
            projects: put.projects,
            description: put.description,
            ..old
        };
        let res = self.store.get().update_certificate(&row).await;
        self.reload().await?;
        res?;
        Ok(to_api(&row))
    }

    /// Stop trusting a certificate: its holder is refused from its next request on.
    pub async fn remove(&self, fingerprint: &str) -> Result<(), TrustError> {
        let _change = self.changes.lock().await;
        let row = self.resolve(fingerprint)?;
        let res = self.store.get().delete_certificate(&row.fingerprint).await;
        self.reload().await?;
        res?;
        Ok(())
    }

    /// Issue a one-time token for a client named `request.name`: an operation of class
    /// `token` that runs until the token is used, cancelled or expires. `server` is the
    /// server certificate's fingerprint and `addresses` where the listener is reached.
    pub fn issue_token(
        &self,
        ops: &Operations,
        request: CertificatePut,
        server: &str,
        addresses: Vec<String>,
    ) -> Result<ctl_api::Operation, TrustError> {
        if request.kind != "client" {
            return Err(TrustError::Invalid(
                "tokens can only be issued for client certificates".into(),
            ));
        }
        if !request.certificate.is_empty() {
            return Err(TrustError::Invalid(
                "a token request cannot carry a certificate".into(),
            ));
        }
        check_put(&request)?;
        let secret = super::random_hex(32);
        let expires = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(TOKEN_LIFETIME.as_secs() as i64);
        let expires_at = expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let cancel = CancelToken::new();
        let metadata = json!({
            "secret": secret,
            "fingerprint": server,
            "addresses": addresses,
            "request": {
                "name": request.name,
                "type": request.kind,
                "restricted": request.restricted,
                "projects": request.projects,
                "certificate": "",
                "description": request.description,
            },
            "expiresAt": expires_at,
        });
        let (handle, op) = ops.create(
            OperationClass::Token,
            "Certificate add token",
            BTreeMap::new(),
            metadata,
            Some(cancel.clone()),
        );
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                secret.clone(),
                Pending {
                    request,
                    handle: handle.clone(),
                    cancel: cancel.clone(),
                    expires,
                },
            );
        // The token ends when cancelled or expired; a use ends it too (see `redeem`).
        let tokens = self.tokens.clone();
        tokio::spawn(async move {
            let cancelled = tokio::select! {
                () = cancel.cancelled() => true,
                () = tokio::time::sleep(TOKEN_LIFETIME) => false,
            };
            let gone = tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&secret);
            if gone.is_some() {
                if cancelled {
                    handle.cancelled();
                } else {
                    handle.fail("token expired".into());
                }
            }
        });
        Ok(op)
    }

    /// Spend a token (the whole base64 token or its bare secret): what it admits, or
    /// `None` when no pending token matches. A token is spent once, also under races.
    pub fn redeem(&self, presented: &str) -> Option<CertificatePut> {
        let secret = decode_token(presented)
            .map(|t| t.secret)
            .unwrap_or_else(|| presented.trim().to_string());
        if secret.is_empty() {
            return None;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let found = tokens.get(&secret)?;
        if found.cancel.is_cancelled() || found.expires <= time::OffsetDateTime::now_utc() {
            return None;
        }
        let pending = tokens.remove(&secret)?;
        // Ended while the lock is held: a cancel cannot slip in between.
        pending.handle.succeed();
        Some(pending.request)
    }
}

/// The token a client got from `ctl config trust add` (base64 of JSON), if `text` is one.
pub fn decode_token(text: &str) -> Option<CertificateAddToken> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn client(name: &str) -> CertificatePut {
        CertificatePut {
            name: name.into(),
            kind: "client".into(),
            ..Default::default()
        }
    }

    async fn store() -> Result<(tempfile::TempDir, Trust), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let pool = crate::db::open(&tmp.path().join("ctld.db")).await?;
        let store = SharedStore::new(crate::db::store::Store::sqlite(pool));
        Ok((tmp, Trust::load(store).await?))
    }

    #[tokio::test]
    async fn a_token_admits_once_and_a_cancelled_one_never() -> TestResult {
        let (_tmp, trust) = store().await?;
        let ops = Operations::default();
        let op = trust.issue_token(&ops, client("laptop"), "fp", vec!["127.0.0.1:1".into()])?;
        assert_eq!(op.class, OperationClass::Token);
        let secret = op.metadata["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(secret.len(), 64);
        // Presented as Incus' base64 token.
        let token = CertificateAddToken {
            client_name: "laptop".into(),
            fingerprint: "fp".into(),
            addresses: vec![],
            secret: secret.clone(),
            expires_at: None,
        };
        let encoded = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&token)?)
        };
        assert_eq!(
            trust.redeem(&encoded).map(|p| p.name),
            Some("laptop".into())
        );
        assert!(trust.redeem(&encoded).is_none(), "spent");
        assert!(
            trust.redeem(&secret).is_none(),
            "spent, also as a bare secret"
        );
        assert_eq!(ops.get(&op.id)?.status_code, ctl_api::StatusCode::Success);

        let op = trust.issue_token(&ops, client("phone"), "fp", vec![])?;
        let secret = op.metadata["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ops.cancel(&op.id)?;
        assert!(trust.redeem(&secret).is_none(), "revoked at once");
        let done = ops.wait(&op.id, Some(Duration::from_secs(5))).await?;
        assert_eq!(done.status_code, ctl_api::StatusCode::Cancelled);
        assert!(trust.redeem(&secret).is_none(), "revoked");
        assert!(trust.redeem("").is_none());
        Ok(())
    }

    /// A self-signed certificate valid from `from` to `until` (days from now), PEM.
    fn cert_valid(from: i64, until: i64) -> Result<String, Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["client".to_string()])?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(until);
        Ok(params.self_signed(&key)?.pem())
    }

    #[tokio::test]
    async fn only_certificates_valid_now_are_trusted() -> TestResult {
        let (_tmp, trust) = store().await?;
        for (from, until) in [(-10, -1), (1, 10)] {
            let mut put = client("stale");
            put.certificate = cert_valid(from, until)?;
            assert!(matches!(trust.add(put).await, Err(TrustError::Invalid(_))));
        }
        let mut good = client("good");
        good.certificate = cert_valid(-1, 10)?;
        let added = trust.add(good).await?;
        assert!(trust.lookup(&added.fingerprint).is_some());
        // One that expired after it was added (written behind the store's back) trusts
        // nobody.
        let old = cert_valid(-10, -1)?;
        let der = tls::parse_certificate(&old)?;
        trust
            .store
            .get()
            .insert_certificate(&CertificateRow {
                fingerprint: tls::fingerprint(&der),
                kind: "client".into(),
                name: "old".into(),
                certificate: old,
                restricted: false,
                projects: vec![],
                description: String::new(),
            })
            .await?;
        trust.reload().await?;
        assert!(trust.lookup(&tls::fingerprint(&der)).is_none());
        assert!(trust.get(&tls::fingerprint(&der)).is_ok(), "still listed");
        Ok(())
    }

    #[tokio::test]
    async fn bad_requests_are_refused() -> TestResult {
        let (_tmp, trust) = store().await?;
        let ops = Operations::default();
        let mut metrics = client("m");
        metrics.kind = "metrics".into();
        assert!(trust.issue_token(&ops, metrics, "fp", vec![]).is_err());
        let mut odd = client("x");
        odd.kind = "server".into();
        assert!(matches!(trust.add(odd).await, Err(TrustError::Invalid(_))));
        let mut garbage = client("x");
        garbage.certificate = "not a certificate".into();
        assert!(matches!(
            trust.add(garbage).await,
            Err(TrustError::Invalid(_))
        ));
        let mut project = client("x");
        project.projects = vec!["other".into()];
        assert!(trust.issue_token(&ops, project, "fp", vec![]).is_err());
        assert!(matches!(
            trust.remove("abc").await,
            Err(TrustError::NotFound(_))
        ));
        assert!(ops.list().is_empty(), "no token made by a bad request");
        Ok(())
    }
}
