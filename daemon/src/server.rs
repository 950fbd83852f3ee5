//! Assembling and running the daemon: open the database, reconcile with the host, build the
//! router, serve on a bound Unix listener until the shutdown future resolves. Tests call
//! [`serve`] with a temp socket; `main` adds signals.

use std::future::Future;
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
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_network: Some("ctlbr0".into()),
            image_limits: Limits::default(),
        }
    }
}

/// Open the state, reconcile networks and running containers, and build the handlers'
/// state; operations, instances and images publish on `events`.
pub async fn build_state(
    paths: Paths,
    worker: Arc<dyn Worker>,
    events: Events,
    options: &Options,
) -> Result<AppState, StartError> {
    for d in [
        paths.dir.clone(),
        paths.containers(),
        paths.images(),
        paths.tmp(),
        paths.run(),
    ] {
        tokio::fs::create_dir_all(&d)
            .await
            .map_err(|source| StartError::Io { path: d, source })?;
    }
    // Image rootfs and container layers may hold setuid files and whatever an image brought:
    // only root may reach them. The state dir itself is traversable (the socket's group).
    for (d, mode) in [
        (paths.dir.clone(), 0o711),
        (paths.images(), 0o700),
        (paths.containers(), 0o700),
    ] {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|source| StartError::Io { path: d, source })?;
    }
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
    }
    let _ = tokio::fs::create_dir_all(paths.tmp()).await;
    let pool = db::open(&paths.db()).await?;
    let networks_dir = paths.dir.join("networks");
    let paths = Arc::new(paths);
    let images = ImageStore::new(pool.clone(), paths.clone())
        .with_events(events.clone())
        .with_limits(options.image_limits);
    let version = worker.cgroup_version();
    let instances = Instances::new(pool, worker, paths, images.clone()).with_events(events.clone());
    let networks = instances.networks().clone();
    networks.enable_host_services(networks_dir);
    networks.reconcile().await?;
    if let Some(name) = &options.default_network
        && let Err(e) = networks.ensure_default(name).await
    {
        tracing::error!(network = %name, error = %e, "could not create the default network");
    }
    instances.reconcile().await?;
    Ok(AppState {
        networks,
        instances,
        images,
        ops: Operations::with_events(events.clone()),
        execs: ExecRegistry::default(),
        info: StaticInfo::gather(version.as_str()),
        events,
    })
}

/// Serve the API on `listener` until `shutdown` resolves. Running containers are not
/// touched on the way out; `/1.0/events` listeners get a close frame.
pub async fn serve(
    listener: UnixListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let events = state.events.clone();
    let app = api::router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // `/1.0/events` listeners outlive the HTTP connections: tell them goodbye.
    events.close(std::time::Duration::from_millis(500)).await;
    served
}

/// Serve the public simplestreams tree ([`api::public_router`]) on a TCP listener until
/// `shutdown` resolves.
pub async fn serve_public(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, api::public_router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
