//! Clustering: many ctld as one, their shared state in one PostgreSQL database.
//!
//! - Forming: `enable` turns a standalone server into the first member (its global rows
//!   copied into PostgreSQL in one transaction); `issue_token` makes a join token; `join`
//!   redeems one from another host.
//! - Membership: every member writes a heartbeat with the database's clock every
//!   [`HEARTBEAT_INTERVAL`]; a member whose heartbeat is older than
//!   `cluster.offline_threshold` is offline. One member at a time holds the leader lease
//!   (a row with a fencing term, [`LEASE_TTL`]); the leader's housekeeping is guarded by its
//!   term, so a leader that lost the lease cannot act on stale belief.
//! - Placement and forwarding ([`route`]): which member holds which instance is in the
//!   database; requests about an instance go to its member over mutual TLS ([`forward`]).
//!
//! Member-local facts (instances' configuration, networks, storage) stay in each member's
//! SQLite; the database holds what all must agree on (`db::store`).

mod events;
pub mod forward;
pub mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ctl_api::{ClusterMember, ClusterMemberJoinToken, ClusterPut, OperationClass};
use serde_json::json;

use crate::db::shared::SharedStore;
use crate::db::store::{Bootstrap, MemberRow, MemberState, NewMember, PlaceError, Store};
use crate::db::{self, DbError, Pool};
use crate::events::Events;
use crate::operations::Operations;
use crate::remote::{Remote, RemoteError, ServerIdentity};

pub use forward::{ForwardError, PeerClient, Target};

/// How often a member writes its heartbeat (and refreshes its view of the cluster).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long the leader lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// `cluster.offline_threshold` when unset, and its minimum (seconds).
pub const DEFAULT_OFFLINE_THRESHOLD: u64 = 20;
pub const MIN_OFFLINE_THRESHOLD: u64 = 10;
/// How long a join token is good for.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// A placement younger than this may be a launch in flight (an image copy included): the
/// periodic sync keeps it.
const RESERVATION_GRACE_MS: i64 = 15 * 60_000;
/// How long a member may take to answer a state query or a state change request.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where a member listens when nothing says otherwise.
pub const DEFAULT_PORT: u16 = 8443;

const SETTING_NAME: &str = "cluster.name";
const SETTING_DATABASE: &str = "cluster.database";

static LOCATION: RwLock<Option<String>> = RwLock::new(None);

/// The `location` API objects carry: this member's name, or `none` when standalone.
pub fn location() -> String {
    LOCATION
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_else(|| "none".into())
}

fn set_location(name: &str) {
    *LOCATION.write().unwrap_or_else(PoisonError::into_inner) = Some(name.to_string());
}

/// Clustering errors.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the cluster database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(DbError),
    #[error(transparent)]
    Place(PlaceError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl From<DbError> for ClusterError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            ClusterError::Unavailable(e.to_string())
        } else if let DbError::Conflict(what) = e {
            ClusterError::Conflict(format!("{what} already exists"))
        } else {
            ClusterError::Db(e)
        }
    }
}

impl From<PlaceError> for ClusterError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::Db(d) => d.into(),
            PlaceError::Taken(_) => ClusterError::Conflict(e.to_string()),
            PlaceError::UnknownMember(_) => ClusterError::NotFound(e.to_string()),
            other => ClusterError::Place(other),
        }
    }
}

/// What the clustering service needs from the rest of the daemon.
pub struct Parts {
    pub local: Pool,
    /// The member's instances (profiles are applied through them).
    pub instances: crate::instance::Instances,
    pub store: SharedStore,
    pub remote: Remote,
    pub ops: Operations,
    pub events: Events,
}

/// The clustering service. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    local: Pool,
    instances: crate::instance::Instances,
    /// Orders profile changes here and the sync from the store, so a sync never puts back
    /// what a change made before the change reaches the store.
    profiles: tokio::sync::Mutex<()>,
    /// Profile sync problems already logged (each once).
    profile_problems: Mutex<std::collections::HashSet<String>>,
    store: SharedStore,
    remote: Remote,
    identity: Arc<ServerIdentity>,
    ops: Operations,
    events: Events,
    /// This member's name and its client for the others, once clustered.
    me: RwLock<Option<(String, PeerClient)>>,
    /// The members as the last heartbeat saw them.
    members: RwLock<Vec<MemberRow>>,
    /// Operations of other members this one forwarded the creating request of.
    op_owners: Mutex<HashMap<String, String>>,
    /// The leader lease's term while this member holds it, else 0.
    term: AtomicI64,
    /// Orders enabling and joining.
    forming: tokio::sync::Mutex<()>,
}

/// A member name: like an instance's, 1 to 63 of `a-z A-Z 0-9 -`, not starting with a
/// digit or `-`.
pub fn check_member_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Invalid(format!(
            "invalid member name \"{name}\": 1 to 63 letters, digits and dashes, starting \
             with a letter"
        )))
    }
}

fn check_database_url(url: &str) -> Result<(), ClusterError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if !url.contains("sslmode=verify-") {
            tracing::warn!(
                "the cluster database URL does not ask for a verified TLS connection \
                 (sslmode=verify-full): its password and the cluster's state may cross the \
                 network readable by others"
            );
        }
        Ok(())
    } else {
        Err(ClusterError::Invalid(
            "the cluster database must be a PostgreSQL URL: postgres://USER:PASSWORD@HOST[:PORT]/DB"
                .into(),
        ))
    }
}

/// `IP[:PORT]` to a socket address (port [`DEFAULT_PORT`] when absent).
fn member_address(text: &str) -> Result<SocketAddr, ClusterError> {
    crate::remote::config::https_address(text)
        .ok()
        .filter(|a| !a.ip().is_unspecified())
        .ok_or_else(|| {
            ClusterError::Invalid(format!(
                "invalid member address \"{text}\": an IP address other members reach, with \
                 an optional port"
            ))
        })
}

impl Cluster {
    /// The service; clustered at once when the local database says this server is a
    /// member (its store is then PostgreSQL, reached lazily: a database that is down does
    /// not keep the daemon from starting).
    pub async fn load(parts: Parts) -> Result<Cluster, ClusterError> {
        let identity = parts.remote.identity.clone();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                local: parts.local,
                instances: parts.instances,
                profiles: tokio::sync::Mutex::new(()),
                profile_problems: Mutex::new(Default::default()),
                store: parts.store,
                remote: parts.remote,
                identity,
                ops: parts.ops,
                events: parts.events,
                me: RwLock::new(None),
                members: RwLock::new(Vec::new()),
                op_owners: Mutex::new(HashMap::new()),
                term: AtomicI64::new(0),
                forming: tokio::sync::Mutex::new(()),
            }),
        };
        Ok(cluster)
    }

    /// The stored membership of this server: `(name, database URL)`.
    pub async fn stored_membership(local: &Pool) -> Result<Option<(String, String)>, DbError> {
        let name = db::networks::setting(local, SETTING_NAME).await?;
        let url = db::networks::setting(local, SETTING_DATABASE).await?;
        Ok(name
            .zip(url)
            .filter(|(n, u)| !n.is_empty() && !u.is_empty()))
    }

    /// Start the member's background work when the local database says it is one.
    pub async fn start(&self) -> Result<(), ClusterError> {
        if let Some((name, _)) = Cluster::stored_membership(&self.inner.local).await? {
            self.become_member(&name);
            tracing::info!(member = %name, "clustered: the global state is in PostgreSQL");
        }
        Ok(())
    }

    fn become_member(&self, name: &str) {
        set_location(name);
        let client = PeerClient::new(self.inner.identity.clone(), name);
        *self
            .inner
            .me
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some((name.to_string(), client));
        let me = self.clone();
        tokio::spawn(async move { me.run().await });
        let me = self.clone();
        tokio::spawn(async move { me.follow_lifecycle().await });
        let (me, events) = (self.clone(), self.inner.events.clone());
        tokio::spawn(async move { me.publish_events(events).await });
        let (me, events) = (self.clone(), self.inner.events.clone());
        tokio::spawn(async move { me.relay_events(events).await });
    }

    /// This member's name, when clustered.
    pub fn me(&self) -> Option<String> {
        self.inner
            .me
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(n, _)| n.clone())
    }

    /// The client for other members, when clustered.
    pub fn client(&self) -> Option<PeerClient> {
        self.inner
            .me
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// This member's own database.
    pub fn local(&self) -> &Pool {
        &self.inner.local
    }

    pub fn clustered(&self) -> bool {
        self.me().is_some()
    }

    /// The store (PostgreSQL when clustered).
    pub fn store(&self) -> Store {
        self.inner.store.get()
    }

    /// `cluster.offline_threshold` in milliseconds.
    pub async fn offline_after_ms(&self) -> i64 {
        let secs = self
            .inner
            .remote
            .get(crate::remote::config::OFFLINE_THRESHOLD)
            .await
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_OFFLINE_THRESHOLD)
            .max(MIN_OFFLINE_THRESHOLD);
        (secs * 1000) as i64
    }

    /// Whether `fingerprint` is a member's certificate (as of the last heartbeat).
    pub fn is_member_certificate(&self, fingerprint: &str) -> bool {
        self.clustered()
            && self
                .inner
                .members
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|m| m.fingerprint == fingerprint)
    }

    /// `GET /1.0/cluster`.
    pub fn status(&self) -> ctl_api::Cluster {
        let name = self.me();
        ctl_api::Cluster {
            enabled: name.is_some(),
            server_name: name.unwrap_or_default(),
            member_config: Vec::new(),
        }
    }

    // ---- forming a cluster ----

    /// `PUT /1.0/cluster`: enable clustering on this standalone server, or join one with a
    /// token.
    pub async fn configure(&self, req: ClusterPut) -> Result<(), ClusterError> {
        let _forming = self.inner.forming.lock().await;
        if !req.cluster.enabled {
            return Err(ClusterError::Invalid(
                "disabling clustering is not supported: remove the member from the cluster \
                 instead"
                    .into(),
            ));
        }
        if let Some(me) = self.me() {
            return Err(ClusterError::Conflict(format!(
                "this server is already the cluster member \"{me}\""
            )));
        }
        if !req.cluster_token.is_empty() {
            return self.join(req).await;
        }
        self.enable(req).await
    }

    /// Where other members reach this one: `server_address`, else `core.https_address`
    /// when it names one address. The HTTPS listener is moved there when needed.
    async fn own_address(
        &self,
        asked: &str,
        towards: Option<&str>,
    ) -> Result<String, ClusterError> {
        let remote = &self.inner.remote;
        let configured = remote.get(crate::remote::config::HTTPS_ADDRESS).await;
        let addr = if !asked.is_empty() {
            member_address(asked)?
        } else if let Some(a) = configured
            .as_deref()
            .and_then(|c| crate::remote::config::https_address(c).ok())
            .filter(|a| !a.ip().is_unspecified())
        {
            a
        } else if let Some(peer) = towards {
            // The address this host would use to reach the member that issued the token
            // (a UDP socket's connect sends nothing), on the default port.
            let peer = member_address(peer)?;
            let ip = local_ip_towards(peer).ok_or_else(|| {
                ClusterError::Invalid(format!("no local address reaches {peer}: give --address"))
            })?;
            SocketAddr::new(ip, DEFAULT_PORT)
        } else {
            return Err(ClusterError::Invalid(
                "set core.https_address to an address the other members reach (not :PORT \
                 alone), or give the server address"
                    .into(),
            ));
        };
        let wanted = addr.to_string();
        if configured.as_deref() != Some(wanted.as_str())
            && remote.https.local_addr().await != Some(addr)
        {
            let mut config = remote.config().await;
            config.insert(crate::remote::config::HTTPS_ADDRESS.into(), wanted.clone());
            remote.set_config(config).await?;
        }
        Ok(wanted)
    }

    fn new_member(&self, name: &str, address: &str) -> NewMember {
        NewMember {
            name: name.to_string(),
            address: address.to_string(),
            fingerprint: self.inner.identity.fingerprint.clone(),
            certificate: self.inner.identity.certificate_pem.clone(),
            architecture: crate::images::host_architecture().to_string(),
            description: String::new(),
        }
    }

    async fn enable(&self, req: ClusterPut) -> Result<(), ClusterError> {
        let name = req.cluster.server_name.clone();
        check_member_name(&name)?;
        check_database_url(&req.database)?;
        let pg = Store::postgres_lazy(&req.database)?;
        pg.migrate().await?;
        let address = self.own_address(&req.server_address, None).await?;
        let local = &self.inner.local;
        let current = self.inner.store.get();
        let config = crate::remote::config::global_keys(&current.config().await?);
        let mut images = Vec::new();
        let aliases = db::images::aliases(local).await?;
        for image in db::images::list(local).await? {
            let names = aliases
                .iter()
                .filter(|(_, fp, _)| *fp == image.fingerprint)
                .map(|(n, _, _)| n.clone())
                .collect();
            images.push((image.fingerprint.clone(), names));
        }
        let data = Bootstrap {
            config,
            certificates: current.certificates().await?,
            member: self.new_member(&name, &address),
            instances: db::instances::names(local).await?,
            images,
            profiles: self
                .inner
                .instances
                .profiles()
                .await
                .map_err(|e| ClusterError::Invalid(e.to_string()))?
                .into_iter()
                .map(profile_post)
                .collect(),
        };
        match pg.bootstrap(&data).await {
            Ok(()) => {}
            Err(DbError::Conflict(_)) => {
                // A cluster this very server founded, its daemon gone before it remembered
                // (same name, same certificate, alone): take it up again.
                let members = pg.members(i64::MAX).await?;
                let ours = members.len() == 1
                    && members[0].name == name
                    && members[0].fingerprint == self.inner.identity.fingerprint;
                if !ours {
                    return Err(ClusterError::Conflict(
                        "the database already holds a cluster: join it with a token from one \
                         of its members (`ctl cluster add NAME` there)"
                            .into(),
                    ));
                }
                tracing::info!(member = %name, "resuming the cluster this server founded");
            }
            Err(e) => return Err(e.into()),
        }
        self.adopt(&name, &req.database, pg).await?;
        tracing::info!(member = %name, %address, "clustering enabled: this server is the first member");
        Ok(())
    }

    async fn join(&self, req: ClusterPut) -> Result<(), ClusterError> {
        let token = decode_token(&req.cluster_token)?;
        let name = if req.cluster.server_name.is_empty() {
            token.server_name.clone()
        } else {
            req.cluster.server_name.clone()
        };
        if name != token.server_name {
            return Err(ClusterError::Invalid(format!(
                "the token is for member \"{}\", not \"{name}\"",
                token.server_name
            )));
        }
        check_member_name(&name)?;
        check_database_url(&token.database)?;
        let local = &self.inner.local;
        if !db::instances::names(local).await?.is_empty() {
            return Err(ClusterError::Invalid(
                "only a server without instances can join a cluster".into(),
            ));
        }
        let pg = Store::postgres_lazy(&token.database)?;
        pg.migrate().await?;
        // The token names the member that issued it: it must be one of the cluster's.
        let members = pg.members(i64::MAX).await?;
        if !members.iter().any(|m| m.fingerprint == token.fingerprint) {
            return Err(ClusterError::Forbidden(
                "the token's certificate is no member's of the cluster in that database".into(),
            ));
        }
        let address = self
            .own_address(
                &req.server_address,
                token.addresses.first().map(String::as_str),
            )
            .await?;
        let resumed = members
            .iter()
            .any(|m| m.name == name && m.fingerprint == self.inner.identity.fingerprint);
        // One transaction: the token is spent only if this member is recorded. A server the
        // database already knows by this name and certificate (its daemon died before it
        // remembered joining) takes its membership up again.
        let joined = resumed
            || pg
                .join_member(&token.secret, &self.new_member(&name, &address))
                .await
                .map_err(|e| match e {
                    DbError::Conflict(what) => {
                        ClusterError::Conflict(format!("{what} is already in the cluster"))
                    }
                    other => other.into(),
                })?;
        if !joined {
            return Err(ClusterError::Forbidden(
                "no matching join token (spent, revoked or expired)".into(),
            ));
        }
        self.adopt(&name, &token.database, pg).await?;
        self.register_images().await;
        tracing::info!(member = %name, %address, "joined the cluster");
        Ok(())
    }

    /// Use `pg` from now on: remember the membership locally, reload the server
    /// configuration and trust store from it, start the member's work.
    async fn adopt(&self, name: &str, url: &str, pg: Store) -> Result<(), ClusterError> {
        // Both or neither: a server with only one of them is standalone.
        db::networks::set_settings(
            &self.inner.local,
            &[(SETTING_DATABASE, url), (SETTING_NAME, name)],
        )
        .await?;
        self.inner.store.set(pg);
        if let Err(e) = self.inner.remote.reload().await {
            tracing::warn!(error = %e, "reloading the configuration from the cluster");
        }
        self.become_member(name);
        self.refresh().await?;
        Ok(())
    }

    /// `POST /1.0/cluster/members`: a join token for member `name`, as an operation of
    /// class `token` (Incus' metadata keys) that ends at once.
    pub async fn issue_token(&self, name: &str) -> Result<ctl_api::Operation, ClusterError> {
        let me = self
            .me()
            .ok_or_else(|| ClusterError::Invalid("this server is not clustered".into()))?;
        check_member_name(name)?;
        let store = self.store();
        let secret = crate::remote::random_hex(32);
        store
            .add_join_token(name, &secret, TOKEN_LIFETIME.as_millis() as i64)
            .await
            .map_err(|e| match e {
                DbError::Conflict(_) => ClusterError::Conflict(format!(
                    "a member or a pending join token is already named \"{name}\""
                )),
                other => other.into(),
            })?;
        let address = self
            .inner
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|m| m.name == me)
            .map(|m| m.address.clone())
            .unwrap_or_default();
        let expires = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(TOKEN_LIFETIME.as_secs() as i64);
        let expires = expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let database = db::networks::setting(&self.inner.local, SETTING_DATABASE)
            .await?
            .unwrap_or_default();
        let metadata = json!({
            "serverName": name,
            "secret": secret,
            "fingerprint": self.inner.identity.fingerprint,
            "addresses": [address],
            "expiresAt": expires,
            "database": database,
        });
        let (handle, op) = self.inner.ops.create(
            OperationClass::Token,
            "Executing operation",
            Default::default(),
            metadata,
            None,
        );
        handle.succeed();
        Ok(op)
    }

    // ---- members ----

    /// Every member, in the API's shape.
    pub async fn members(&self) -> Result<Vec<ClusterMember>, ClusterError> {
        self.require()?;
        self.refresh().await?;
        let leader = self.store().lease().await?;
        let rows = self
            .inner
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(rows
            .iter()
            .map(|m| member_to_api(m, leader.remaining_ms > 0 && leader.holder == m.name))
            .collect())
    }

    pub async fn member(&self, name: &str) -> Result<ClusterMember, ClusterError> {
        self.members()
            .await?
            .into_iter()
            .find(|m| m.server_name == name)
            .ok_or_else(|| ClusterError::NotFound(format!("cluster member \"{name}\" not found")))
    }

    /// `DELETE /1.0/cluster/members/NAME`: a member holding instances only with `force`
    /// (its instances' rows go with it; their files stay on that host).
    pub async fn remove_member(&self, name: &str, force: bool) -> Result<(), ClusterError> {
        self.require()?;
        let store = self.store();
        if force {
            for row in store.instance_locations().await? {
                if row.member == name {
                    store.remove_instance(&row.name, name).await?;
                }
            }
        }
        match store.remove_member(name).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ClusterError::NotFound(format!(
                "cluster member \"{name}\" not found"
            ))),
            Err(DbError::Conflict(_)) => Err(ClusterError::Conflict(format!(
                "cluster member \"{name}\" still holds instances: move or delete them, or \
                 remove it with --force"
            ))),
            Err(e) => Err(e.into()),
        }?;
        self.refresh().await
    }

    /// Mark `name` evacuated (placement skips it) or online again.
    pub async fn set_member_state(
        &self,
        name: &str,
        state: MemberState,
    ) -> Result<(), ClusterError> {
        if !self.store().set_member_state(name, state).await? {
            return Err(ClusterError::NotFound(format!(
                "cluster member \"{name}\" not found"
            )));
        }
        self.refresh().await
    }

    /// Evacuate member `name` (no new instances; its running ones stopped and marked to
    /// come back) or restore it (those started again).
    pub async fn evacuate_or_restore(
        &self,
        name: &str,
        action: MemberState,
    ) -> Result<(), ClusterError> {
        self.require()?;
        let store = self.store();
        let target = self.target(name).await?;
        let client = self
            .client()
            .ok_or_else(|| ClusterError::Invalid("this server is not clustered".into()))?;
        let rows: Vec<_> = store
            .instance_locations()
            .await?
            .into_iter()
            .filter(|r| r.member == name)
            .collect();
        if action == MemberState::Evacuated {
            self.set_member_state(name, MemberState::Evacuated).await?;
        }
        for row in rows {
            let path = format!("/1.0/instances/{}/state", row.name);
            let state = client.get_json(&target, &path, STATE_TIMEOUT).await?;
            let running = state["status"].as_str() == Some("Running");
            let change = match action {
                MemberState::Evacuated if running => {
                    store.set_instance_evacuated(&row.name, true).await?;
                    Some("stop")
                }
                MemberState::Online if row.evacuated => Some("start"),
                _ => None,
            };
            if let Some(verb) = change {
                let body = json!({"action": verb, "timeout": 30});
                self.run_on(&client, &target, axum::http::Method::PUT, &path, &body)
                    .await?;
            }
            if action == MemberState::Online && row.evacuated {
                store.set_instance_evacuated(&row.name, false).await?;
            }
        }
        if action == MemberState::Online {
            self.set_member_state(name, MemberState::Online).await?;
        }
        Ok(())
    }

    /// A request on `target` that may start an operation, waited for.
    async fn run_on(
        &self,
        client: &PeerClient,
        target: &Target,
        method: axum::http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), ClusterError> {
        let (status, answer) = client
            .request(target, method, path, Some(body), STATE_TIMEOUT)
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        if !status.is_success() {
            return Err(ClusterError::Invalid(format!(
                "{} on {}: {}",
                path,
                target.name,
                answer["error"].as_str().unwrap_or_default()
            )));
        }
        if let Some(op) = answer["operation"].as_str().filter(|o| !o.is_empty()) {
            let wait = format!("{op}/wait?timeout=60");
            let done = client
                .get_json(target, &wait, Duration::from_secs(65))
                .await?;
            if done["status"].as_str() != Some("Success") {
                return Err(ClusterError::Invalid(format!(
                    "{} on {}: {}",
                    path,
                    target.name,
                    done["err"].as_str().unwrap_or("failed")
                )));
            }
        }
        Ok(())
    }

    fn require(&self) -> Result<String, ClusterError> {
        self.me()
            .ok_or_else(|| ClusterError::Invalid("this server is not clustered".into()))
    }

    /// Read the members again.
    pub async fn refresh(&self) -> Result<(), ClusterError> {
        let offline = self.offline_after_ms().await;
        let rows = self.store().members(offline).await?;
        *self
            .inner
            .members
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rows;
        Ok(())
    }

    /// The members as last seen.
    pub fn cached_members(&self) -> Vec<MemberRow> {
        self.inner
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where to reach member `name`.
    pub async fn target(&self, name: &str) -> Result<Target, ClusterError> {
        let find = |rows: &[MemberRow]| {
            rows.iter().find(|m| m.name == name).map(|m| Target {
                name: m.name.clone(),
                address: m.address.clone(),
                fingerprint: m.fingerprint.clone(),
            })
        };
        if let Some(t) = find(&self.cached_members()) {
            return Ok(t);
        }
        self.refresh().await?;
        find(&self.cached_members())
            .ok_or_else(|| ClusterError::NotFound(format!("cluster member \"{name}\" not found")))
    }

    // ---- operations of other members ----

    /// Remember that operation `id` lives on `member`.
    pub fn record_operation(&self, id: &str, member: &str) {
        let mut owners = self
            .inner
            .op_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if owners.len() > 10_000 {
            owners.clear();
        }
        owners.insert(id.to_string(), member.to_string());
    }

    pub fn operation_owner(&self, id: &str) -> Option<String> {
        self.inner
            .op_owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    // ---- background work ----

    async fn run(&self) {
        let mut migrated = false;
        let mut healthy = true;
        let mut ticks: u64 = 0;
        loop {
            let result = self.tick(&mut migrated, ticks).await;
            match (&result, healthy) {
                (Err(e), true) => {
                    tracing::error!(error = %e, "cluster heartbeat failed; retrying");
                    healthy = false;
                }
                (Ok(()), false) => {
                    tracing::info!("cluster heartbeat works again");
                    healthy = true;
                }
                _ => {}
            }
            ticks += 1;
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
        }
    }

    async fn tick(&self, migrated: &mut bool, ticks: u64) -> Result<(), ClusterError> {
        let Some(me) = self.me() else { return Ok(()) };
        let store = self.store();
        if !*migrated {
            store.migrate().await?;
            *migrated = true;
            // Whatever changed while the database was away.
            self.inner.remote.reload().await?;
        }
        // The others first: once the heartbeat says this member is online, it must already
        // know them (their certificates) to answer their requests.
        self.refresh().await?;
        if !store.heartbeat(&me).await? {
            // Logged by the loop once, not every heartbeat.
            return Err(ClusterError::NotFound(format!(
                "this member (\"{me}\") is no longer in the cluster's database: it was removed"
            )));
        }
        if ticks.is_multiple_of(2) {
            self.inner.remote.reload().await?;
        }
        let term = store
            .acquire_lease(&me, LEASE_TTL.as_millis() as i64)
            .await?
            .unwrap_or(0);
        let before = self.inner.term.swap(term, Ordering::Relaxed);
        if term != before {
            if term > 0 {
                tracing::info!(member = %me, term, "this member holds the leader lease");
            } else {
                tracing::info!(member = %me, "this member no longer holds the leader lease");
            }
        }
        if term > 0 {
            store.prune_join_tokens_as_leader(&me, term).await?;
            store
                .prune_events_as_leader(&me, term, events::KEEP.as_millis() as i64)
                .await?;
        }
        self.sync_profiles().await?;
        if ticks.is_multiple_of(15) {
            let names = db::instances::names(&self.inner.local).await?;
            store
                .sync_member_instances(&me, &names, RESERVATION_GRACE_MS)
                .await?;
            self.register_images().await;
        }
        Ok(())
    }

    /// Hold while changing a profile here and recording it in the store.
    pub async fn lock_profiles(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.profiles.lock().await
    }

    /// Record profile `name` in the store as it now is here (gone: forgotten).
    pub async fn push_profile(&self, name: &str) -> Result<(), ClusterError> {
        let store = self.store();
        match self.inner.instances.profile(name).await {
            Ok(p) => store.put_profile(&profile_post(p)).await?,
            Err(crate::instance::InstanceError::ProfileNotFound(_)) => {
                store.delete_profile(name).await.map(|_| ())?
            }
            Err(e) => return Err(ClusterError::Invalid(e.to_string())),
        }
        Ok(())
    }

    /// Bring this member's profiles in line with the cluster's: missing ones made,
    /// different ones updated (applied to this member's instances as any profile change
    /// is), ones the cluster no longer has deleted. A change this member cannot make (a
    /// NIC on a network it lacks, a profile its instances still use) is logged once and
    /// tried again on the next heartbeat.
    pub async fn sync_profiles(&self) -> Result<(), ClusterError> {
        let order = self.inner.profiles.lock().await;
        self.sync_profiles_locked(&order).await
    }

    /// [`Cluster::sync_profiles`] under the lock `_order` from [`Cluster::lock_profiles`].
    pub async fn sync_profiles_locked(
        &self,
        _order: &tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<(), ClusterError> {
        let shared = self.store().profiles().await?;
        let instances = &self.inner.instances;
        let local = instances
            .profiles()
            .await
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let mut problems = Vec::new();
        for want in &shared {
            let have = local.iter().find(|p| p.name == want.name);
            let result = match have {
                None => instances.create_profile(want.clone()).await,
                Some(p) if profile_post(p.clone()) != *want => {
                    let put = ctl_api::ProfilePut {
                        description: Some(want.description.clone()),
                        config: Some(want.config.clone()),
                        devices: Some(want.devices.clone()),
                    };
                    instances.update_profile(&want.name, put, false).await
                }
                Some(_) => Ok(()),
            };
            if let Err(e) = result {
                problems.push(format!("profile \"{}\": {e}", want.name));
            }
        }
        for p in &local {
            if !shared.iter().any(|s| s.name == p.name)
                && let Err(e) = instances.delete_profile(&p.name).await
            {
                problems.push(format!(
                    "profile \"{}\" (gone from the cluster): {e}",
                    p.name
                ));
            }
        }
        let mut seen = self
            .inner
            .profile_problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for p in problems {
            if seen.insert(p.clone()) {
                tracing::warn!(problem = %p, "cannot apply the cluster's profile here");
            }
        }
        Ok(())
    }

    /// Record this member's images (and their aliases) in the store.
    async fn register_images(&self) {
        let Some(me) = self.me() else { return };
        let local = &self.inner.local;
        let (Ok(images), Ok(aliases)) = (
            db::images::list(local).await,
            db::images::aliases(local).await,
        ) else {
            return;
        };
        let store = self.store();
        for image in images {
            let names: Vec<String> = aliases
                .iter()
                .filter(|(_, fp, _)| *fp == image.fingerprint)
                .map(|(n, _, _)| n.clone())
                .collect();
            if let Err(e) = store.add_image(&image.fingerprint, &me, &names).await {
                tracing::debug!(error = %e, "registering an image with the cluster");
                return;
            }
        }
    }

    /// Keep the store's instance locations in step with this member's instances as they
    /// are created, renamed and deleted (the periodic sync catches what is missed).
    async fn follow_lifecycle(&self) {
        let mut sub = self.inner.events.subscribe();
        while let Ok(published) = sub.recv().await {
            let Some(me) = self.me() else { continue };
            // Only this member's own: the others' are relayed here from the database.
            if published.event.location != me {
                continue;
            }
            let meta = &published.event.metadata;
            let action = meta["action"].as_str().unwrap_or_default();
            if action == "image-created" {
                self.register_images().await;
                continue;
            }
            let Some(name) = meta["source"]
                .as_str()
                .and_then(|s| s.strip_prefix("/1.0/instances/"))
                .filter(|n| !n.contains('/'))
            else {
                continue;
            };
            let store = self.store();
            let result = match action {
                "instance-created" => store.register_instance(name, &me).await,
                "instance-deleted" => store.remove_instance(name, &me).await.map(|_| ()),
                // The new name was reserved for this member before the rename.
                "instance-renamed" => match meta["context"]["old_name"].as_str() {
                    Some(old) => match store.remove_instance(old, &me).await {
                        Ok(_) => store.register_instance(name, &me).await,
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(instance = %name, action, error = %e, "cluster location not updated");
            }
        }
    }

    /// Give up the leader lease (daemon shutdown), so another member takes it at once.
    pub async fn stop(&self) {
        if let Some(me) = self.me()
            && self.inner.term.load(Ordering::Relaxed) > 0
            && let Err(e) = self.store().release_lease(&me).await
        {
            tracing::debug!(error = %e, "releasing the leader lease");
        }
    }
}

/// A profile as the store keeps it.
fn profile_post(p: ctl_api::Profile) -> ctl_api::ProfilesPost {
    ctl_api::ProfilesPost {
        name: p.name,
        description: p.description,
        config: p.config,
        devices: p.devices,
    }
}

/// The address of this host that routes to `peer` (no packet is sent).
fn local_ip_towards(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(bind).ok()?;
    sock.connect(peer).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// A join token from `ctl cluster add`: base64 of its JSON.
pub fn decode_token(text: &str) -> Result<ClusterMemberJoinToken, ClusterError> {
    use base64::Engine;
    let bad = || ClusterError::Invalid("not a cluster join token".into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| bad())?;
    let token: ClusterMemberJoinToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if token.secret.is_empty() || token.server_name.is_empty() || token.database.is_empty() {
        return Err(bad());
    }
    Ok(token)
}

fn member_to_api(m: &MemberRow, leader: bool) -> ClusterMember {
    let (status, message) = match (m.online, m.state) {
        (false, _) => (
            "Offline",
            format!("No heartbeat for {}s", m.heartbeat_age_ms / 1000),
        ),
        (true, MemberState::Evacuated) => ("Evacuated", "Unavailable due to maintenance".into()),
        (true, MemberState::Online) => ("Online", "Fully operational".into()),
    };
    let mut roles = vec!["database-client".to_string()];
    if leader {
        roles.push("leader".into());
    }
    ClusterMember {
        put: ctl_api::ClusterMemberPut {
            roles,
            failure_domain: "default".into(),
            description: m.description.clone(),
            config: Default::default(),
            groups: vec!["default".into()],
        },
        server_name: m.name.clone(),
        url: format!("https://{}", m.address),
        database: true,
        status: status.into(),
        message,
        architecture: m.architecture.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        for ok in ["m1", "node-a", "A"] {
            assert!(check_member_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1m", "-m", "m-", "a/b", "a b", &"x".repeat(64)] {
            assert!(check_member_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_decode_or_fail_clearly() {
        use base64::Engine;
        let token = ClusterMemberJoinToken {
            server_name: "m2".into(),
            fingerprint: "ab".into(),
            addresses: vec!["10.0.0.1:8443".into()],
            secret: "s".into(),
            expires_at: String::new(),
            database: "postgres://u:p@h/db".into(),
        };
        let text = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&token).unwrap_or_default());
        assert_eq!(decode_token(&text).ok(), Some(token));
        for bad in ["", "!!", "aGVsbG8=", "e30="] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_must_be_reachable_ones() {
        assert!(member_address("10.1.2.3").is_ok());
        assert_eq!(
            member_address("10.1.2.3").map(|a| a.port()).ok(),
            Some(DEFAULT_PORT)
        );
        assert!(member_address(":8443").is_err());
        assert!(member_address("0.0.0.0:8443").is_err());
        assert!(member_address("nonsense").is_err());
    }
}
