//! Assembling and running the daemon: open the database, reconcile with the host, build the
//! router, serve on a bound Unix listener until the shutdown future resolves. Tests call
//! [`serve`] with a temp socket; `main` adds signals.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::api::{self, AppState, exec::ExecRegistry, server_info::StaticInfo};
use crate::db;
use crate::events::Events;
use crate::images::ImageStore;
use crate::images::unpack::Limits;
use crate::instance::{InstanceError, Instances};
use crate::operations::Operations;
use crate::paths::Paths;
use crate::worker::Worker;

/// Start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database cannot be opened or brought to the current schema (damaged, not a
    /// database, unreadable). Nothing is changed.
    #[error(
        "cannot open the database {db}: {source}. Nothing was changed. If the file is \
         damaged, move it aside (keep it) and run `ctld --dir {dir} recover`: it rebuilds \
         the records of every container from its directory's backup file.",
        db = db.display(),
        dir = dir.display()
    )]
    DatabaseOpen {
        db: std::path::PathBuf,
        dir: std::path::PathBuf,
        #[source]
        source: db::DbError,
    },
    /// The database records no instance while container directories with backup files
    /// exist: it was lost or replaced. Nothing is changed.
    #[error(
        "refusing to start: the database {db} records no instance, but {count} container \
         director{plural} under {containers} {have} a backup file (a lost or replaced \
         database?). Nothing was changed. Run `ctld --dir {dir} recover` to rebuild the \
         records from them.",
        db = db.display(),
        containers = containers.display(),
        dir = dir.display(),
        plural = if *count == 1 { "y" } else { "ies" },
        have = if *count == 1 { "has" } else { "have" }
    )]
    LostDatabase {
        db: std::path::PathBuf,
        containers: std::path::PathBuf,
        dir: std::path::PathBuf,
        count: usize,
    },
}

/// Daemon-wide options of a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Create this network and put it on the default profile on the first start (none: no
    /// default network).
    pub default_network: Option<String>,
    /// Size caps of every image unpacked (`--image-max-size-gib`).
    pub image_limits: Limits,
    /// Connection bounds of the HTTPS listener (the socket's are given to [`serve`]).
    pub conn_limits: ConnLimits,
    /// Serve the web UI from this directory instead of the embedded build (`CTL_UI`).
    pub ui_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_network: Some("ctlbr0".into()),
            image_limits: Limits::default(),
            conn_limits: ConnLimits::default(),
            ui_dir: None,
        }
    }
}

/// Make `dir` (and its missing parents) if needed and give it `mode`, also when it exists
/// with another mode (made by an older ctld).
fn make_dir(dir: &Path, mode: u32) -> Result<(), StartError> {
    let io_at = |source| StartError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_at)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_at)
}

/// Make the state directories with their modes ([`Paths::state_dirs`]), and make every
/// existing container directory 0700. The database files are made 0600 by [`db::open`].
pub fn prepare_dirs(paths: &Paths) -> Result<(), StartError> {
    for (dir, mode) in paths.state_dirs() {
        make_dir(&dir, mode)?;
    }
    let containers = paths.containers();
    let entries = std::fs::read_dir(&containers).map_err(|source| StartError::Io {
        path: containers.clone(),
        source,
    })?;
    for entry in entries.flatten() {
        // Directories only: `file_type` does not follow symlinks.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let dir = entry.path();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| StartError::Io { path: dir, source })?;
        }
    }
    Ok(())
}

/// Open the state, reconcile networks and running containers, and build the handlers'
/// state; operations, instances and images publish on `events`.
pub async fn build_state(
    paths: Paths,
    worker: Arc<dyn Worker>,
    events: Events,
    options: &Options,
) -> Result<AppState, StartError> {
    // A few syscalls at start-up, before anything is served: fine on this thread.
    prepare_dirs(&paths)?;
    // A build killed with ctld may have left mounts (debootstrap's proc, sys) in there.
    let left = {
        let tmp = paths.tmp();
        tokio::task::spawn_blocking(move || crate::worker::mounts::unmount_under(&tmp))
            .await
            .unwrap_or_default()
    };
    for (mount, error) in &left {
        tracing::error!(mount = %mount.display(), error, "cannot detach a leftover mount; keeping the scratch dir");
    }
    if left.is_empty() {
        let _ = tokio::fs::remove_dir_all(paths.tmp()).await;
        make_dir(&paths.tmp(), 0o700)?;
    }
    let pool = db::open(&paths.db())
        .await
        .map_err(|source| StartError::DatabaseOpen {
            db: paths.db(),
            dir: paths.dir.clone(),
            source,
        })?;
    if let Some(count) = crate::recover::lost_instances(&pool, &paths.containers()).await? {
        return Err(StartError::LostDatabase {
            db: paths.db(),
            containers: paths.containers(),
            dir: paths.dir.clone(),
            count,
        });
    }
    let networks_dir = services_dir(&paths.dir);
    let paths = Arc::new(paths);
    let images = ImageStore::new(pool.clone(), paths.clone())
        .with_events(events.clone())
        .with_limits(options.image_limits);
    images.reconcile().await?;
    let version = worker.cgroup_version();
    // The shared state: this database, or a cluster's PostgreSQL when this server is a
    // member (reached lazily: a database that is away does not keep ctld from starting).
    let store = match crate::cluster::Cluster::stored_membership(&pool).await? {
        Some((_, url)) => db::store::Store::postgres_lazy(&url)?,
        None => db::store::Store::sqlite(pool.clone()),
    };
    let store = db::shared::SharedStore::new(store);
    let remote =
        crate::remote::Remote::load(pool.clone(), store.clone(), &paths.dir, options.conn_limits)
            .await?;
    let instances =
        Instances::new(pool.clone(), worker, paths, images.clone()).with_events(events.clone());
    // Pools first: the instances' files are on them.
    instances.storage().mount_all().await?;
    instances.storage().reconcile_volumes().await?;
    let networks = instances.networks().clone();
    networks.enable_host_services(networks_dir);
    networks.reconcile().await?;
    if let Some(name) = &options.default_network
        && let Err(e) = networks.ensure_default(name).await
    {
        tracing::error!(network = %name, error = %e, "could not create the default network");
    }
    instances.reconcile().await?;
    if let Err(e) = instances.storage().prune_images().await {
        tracing::warn!(error = %e, "pool copies of images not pruned");
    }
    let ops = Operations::with_events(events.clone());
    let cluster = crate::cluster::Cluster::load(crate::cluster::Parts {
        local: pool.clone(),
        instances: instances.clone(),
        store,
        remote: remote.clone(),
        ops: ops.clone(),
        events: events.clone(),
    })
    .await?;
    cluster.start().await?;
    Ok(AppState {
        cluster,
        networks,
        instances,
        images,
        ops,
        execs: ExecRegistry::default(),
        info: StaticInfo::gather(version.as_str()),
        events,
        remote,
        ui: match &options.ui_dir {
            Some(dir) => {
                tracing::info!(dir = %dir.display(), "serving the web UI from a directory");
                api::ui::UiAssets::from_dir(dir.clone())
            }
            None => api::ui::UiAssets::default(),
        },
    })
}

/// Where dnsmasq's files go: `DIR/networks` when every directory above it lets others pass
/// (dnsmasq drops to its own user and re-reads its hosts files as that user), else a
/// directory of this state directory's own under `/run/ctld` (named by a digest of its path,
/// so a restart finds it again), because a state directory under a 0700 path would leave
/// dnsmasq unable to read its files and names silently unresolved.
pub fn services_dir(dir: &Path) -> PathBuf {
    let dir = &std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let passable = dir
        .ancestors()
        .skip(1)
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if passable {
        return dir.join("networks");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let run = PathBuf::from("/run/ctld").join(name).join("networks");
    tracing::info!(dir = %dir.display(), services = %run.display(),
        "the state directory's path is closed to other users: dnsmasq's files go under /run/ctld");
    run
}

/// Bounds on what clients may hold of the daemon: connections at once, and how long a
/// connection may take to send a request's headers (an idle keep-alive connection waiting
/// for its next request counts as sending one, so idle connections are closed too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time allowed for a request's headers, from the moment the connection waits for them.
    pub header_timeout: std::time::Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            header_timeout: std::time::Duration::from_secs(15),
        }
    }
}

/// Open connections and their peak since memory was last given back: after a burst of
/// connections ends, the allocator's free memory goes back to the kernel.
#[derive(Default)]
struct Load {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Load {
    /// Bursts smaller than this are not worth a trim.
    const BURST: usize = 256;

    fn opened(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(open, Relaxed);
    }

    /// A connection ended; true when a burst is over (open fell to a tenth of a peak of
    /// at least [`Load::BURST`]), once per burst.
    fn closed(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let open = self.open.fetch_sub(1, Relaxed) - 1;
        let peak = self.peak.load(Relaxed);
        peak >= Self::BURST
            && open <= peak / 10
            && self
                .peak
                .compare_exchange(peak, open, Relaxed, Relaxed)
                .is_ok()
    }
}

/// A client's socket with its connection slot: both end together, also after an upgrade.
pub struct Counted<T> {
    inner: T,
    _permit: tokio::sync::OwnedSemaphorePermit,
    load: Arc<Load>,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        if self.load.closed()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn_blocking(crate::worker::release_free_memory);
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Who is at the other end of a connection, as the handlers see it (a request extension
/// on every request of the connection).
#[derive(Debug, Clone)]
pub enum Peer {
    /// The root-only Unix socket: trusted.
    Unix,
    /// A plain TCP client of the public simplestreams listener.
    Public,
    /// A TLS client of the HTTPS listener, with its certificate's fingerprint if it sent
    /// one and the certificate itself (DER).
    Tls {
        fingerprint: Option<String>,
        certificate: Option<Vec<u8>>,
        /// Cancelling it ends the connection, also after an upgrade to a websocket
        /// (revocation, logout, the listener stopping).
        conn: tokio_util::sync::CancellationToken,
    },
}

/// What turns an accepted socket into the stream HTTP is served on, and says who the
/// peer is: nothing for plain sockets, a TLS handshake for the HTTPS listener. Runs on the
/// connection's own task, so a slow handshake never holds up the accept loop.
pub trait Handshake<I>: Clone + Send + Sync + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, io: I) -> impl Future<Output = Option<(Self::Io, Peer)>> + Send;
}

/// No handshake: the socket as it is, with a fixed [`Peer`].
#[derive(Debug, Clone)]
pub struct Plain(pub Peer);

impl<I> Handshake<I> for Plain
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = I;
    async fn handshake(&self, io: I) -> Option<(I, Peer)> {
        Some((io, self.0.clone()))
    }
}

/// Serve `app` on `listener` within `limits` until `shutdown` resolves: HTTP/1.1 with
/// upgrades (websockets for exec, console and events) over what `handshake` makes of each
/// connection. At shutdown, accepting stops and open connections get up to a second to
/// finish their current request.
pub async fn serve_limited<L, H>(
    mut listener: L,
    app: axum::Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
    handshake: H,
) where
    L: axum::serve::Listener,
    H: Handshake<Counted<L::Io>>,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = Arc::new(Load::default());
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            // `Listener::accept` retries (after a pause) on errors such as EMFILE.
            (io, _) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = limits.max_connections,
                    "too many connections: closing new ones until some end"
                );
            }
            drop(io);
            continue;
        };
        load.opened();
        // The connection's slot and load go with its socket, which an upgrade (exec,
        // console, events websockets) hands over and keeps: those count until they close.
        let io = Counted {
            inner: io,
            _permit: permit,
            load: load.clone(),
        };
        let app = app.clone();
        let handshake = handshake.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            // The handshake gets as long as a request's headers would.
            let Ok(Some((io, peer))) =
                tokio::time::timeout(limits.header_timeout, handshake.handshake(io)).await
            else {
                return;
            };
            let app = app.map_request(move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = async { drop(stop.wait_for(|s| *s).await) } => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    stop_tx.send_replace(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained =
        tokio::time::timeout(std::time::Duration::from_secs(1), permits.acquire_many(all)).await;
    if drained.is_err() {
        tracing::debug!("connections still open at shutdown: dropped");
    }
}

/// Serve the API on `listener` until `shutdown` resolves. Running containers are not
/// touched on the way out; `/1.0/events` listeners get a close frame.
pub async fn serve(
    listener: UnixListener,
    state: AppState,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let events = state.events.clone();
    let remote = state.remote.clone();
    let router = api::router(state);
    // The same API over HTTPS when `core.https_address` says so.
    remote.start(router.clone()).await;
    serve_limited(listener, router, limits, shutdown, Plain(Peer::Unix)).await;
    remote.stop().await;
    // `/1.0/events` listeners outlive the HTTP connections: tell them goodbye.
    events.close(std::time::Duration::from_millis(500)).await;
}

/// Serve the public simplestreams tree ([`api::public_router`]) on a TCP listener until
/// `shutdown` resolves.
pub async fn serve_public(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_limited(
        listener,
        api::public_router(state),
        limits,
        shutdown,
        Plain(Peer::Public),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::fake::FakeWorker;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Start the daemon's state in `paths` as `main` does (the fake worker, no default
    /// network) and check every mode.
    async fn start_and_check(paths: &Paths) -> TestResult {
        let options = Options {
            default_network: None,
            ..Options::default()
        };
        let state = build_state(
            paths.clone(),
            Arc::new(FakeWorker::default()),
            Events::default(),
            &options,
        )
        .await?;
        for (dir, want) in paths.state_dirs() {
            assert_eq!(mode(&dir), want, "{}", dir.display());
        }
        let [db, wal, shm] = db::files(&paths.db());
        for f in [&db, &wal, &shm] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        drop(state);
        Ok(())
    }

    #[tokio::test]
    async fn a_new_state_dir_is_root_only() -> TestResult {
        let tmp = tempfile::tempdir()?;
        start_and_check(&Paths::new(tmp.path().join("ctld"))).await
    }

    #[tokio::test]
    async fn an_older_state_dir_is_made_root_only() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let paths = Paths::new(tmp.path().join("ctld"));
        // What an older ctld left: directories 0755, the database and its WAL files 0644.
        let c1 = paths.container("c1");
        for d in [&paths.dir, &paths.images(), &paths.tmp(), &paths.run(), &c1] {
            std::fs::create_dir_all(d)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::set_permissions(paths.containers(), std::fs::Permissions::from_mode(0o755))?;
        let pool = db::open(&paths.db()).await?;
        for f in db::files(&paths.db()) {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        }
        start_and_check(&paths).await?;
        pool.close().await;
        // Reconcile removed `c1` (no row): an existing container's directory is fixed too.
        std::fs::create_dir_all(&c1)?;
        std::fs::set_permissions(&c1, std::fs::Permissions::from_mode(0o755))?;
        prepare_dirs(&paths)?;
        assert_eq!(mode(&c1), 0o700, "a container directory");
        Ok(())
    }
}
