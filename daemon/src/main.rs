//! The `ctld` binary: argument parsing, logging, signals, and the hidden re-exec entries
//! (`forkstart`, `forkexec`, `forkmount`, `forkprobe`) that must run before any async runtime exists.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use ctld::paths::Paths;
use ctld::worker::{self, HostWorker};

/// The ctl daemon: system containers behind an Incus-shaped REST API on a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "ctld", version)]
struct Args {
    /// State directory (socket, database, containers, images).
    #[arg(long, env = "CTL_DIR", default_value = "/var/lib/ctld")]
    dir: PathBuf,
    /// Cgroup under which container cgroups are created.
    #[arg(long, env = "CTL_CGROUP_PARENT", default_value = "ctl")]
    cgroup_parent: String,
    /// Root of the cgroup filesystems.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Busybox binary for the built-in `busybox` image.
    #[arg(long, env = "CTL_BUSYBOX", default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// Also serve the public images as a simplestreams tree over plain HTTP on this
    /// address (e.g. `127.0.0.1:8443`), so other daemons can pull from this one.
    #[arg(long, env = "CTL_HTTP_ADDRESS")]
    http_address: Option<String>,
    /// Serve the web UI (`/ui/`) from this directory (a build like `ui/dist`) instead of
    /// the one embedded in ctld
    #[arg(long, env = "CTL_UI")]
    ui_dir: Option<PathBuf>,
    /// Days after which a cached image (pulled or built for an instance) that no instance
    /// uses and nobody used is deleted; 0 keeps them. Overrides the server key
    /// `images.remote_cache_expiry` (default 10).
    #[arg(long, env = "CTL_IMAGE_CACHE_EXPIRY_DAYS")]
    image_cache_expiry_days: Option<u64>,
    /// Create the default network (a bridge with NAT) on the first start and give the
    /// default profile an eth0 on it.
    #[arg(long, env = "CTL_DEFAULT_NETWORK", default_value_t = true, action = clap::ArgAction::Set)]
    default_network: bool,
    /// Name of the default network (tests use unique names).
    #[arg(
        long,
        env = "CTL_DEFAULT_NETWORK_NAME",
        default_value = "ctlbr0",
        hide = true
    )]
    default_network_name: String,
    /// Debian mirror for `debian/<suite>` images (default: the host's apt sources).
    #[arg(long, env = "CTL_DEBIAN_MIRROR")]
    debian_mirror: Option<String>,
    /// Where debootstrap results are cached between builds (default: `<dir>/cache`).
    #[arg(long, env = "CTL_BUILD_CACHE")]
    build_cache: Option<PathBuf>,
    /// Largest unpacked size of one image, in GiB: the sum of its files' apparent sizes
    /// (one file may have at most 16 GiB, or this if smaller). Bigger images are refused.
    #[arg(long, env = "CTL_IMAGE_MAX_SIZE_GIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    image_max_size_gib: u64,
    /// How unprivileged containers see the shared image layers in their own ids:
    /// `idmapped` (id-mapped mounts of the one shared copy), `copy` (one copy per id map,
    /// owners shifted), or `auto` (probe at start: id-mapped mounts where they work).
    #[arg(long, env = "CTL_IMAGE_SHIFT", default_value = "auto",
          value_parser = clap::value_parser!(worker::ImageShift))]
    image_shift: worker::ImageShift,
    /// Connections to the API served at once; more are closed when accepted.
    #[arg(long, env = "CTL_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_connections: u64,
    /// Seconds a client may take to send a request's headers; an idle connection is
    /// closed after as long.
    #[arg(long, env = "CTL_HEADER_TIMEOUT", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds between two looks for expired snapshots (tests shorten it; the first look is
    /// at start-up).
    #[arg(long, env = "CTL_SNAPSHOT_EXPIRY_INTERVAL", default_value_t = 60, hide = true,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    snapshot_expiry_interval: u64,
    /// Join a cluster with a token from `ctl cluster add NAME` on one of its members
    /// (ignored once this server is a member).
    #[arg(long, env = "CTL_JOIN")]
    join: Option<String>,
    /// Where the other members reach this one when joining (`IP[:PORT]`); by default the
    /// address that routes to the member that issued the token, port 8443.
    #[arg(long, env = "CTL_JOIN_ADDRESS", requires = "join")]
    join_address: Option<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Rebuild the records of containers whose directories have a backup file but that
    /// the database does not know (a lost or replaced database). Run it with ctld stopped.
    /// Directories are never changed; existing records are never touched.
    Recover,
}

fn main() {
    // Hidden entries first: single threaded, no runtime, no logging set-up.
    let mut argv = std::env::args();
    let _ = argv.next();
    match argv.next().as_deref() {
        Some("forkstart") => std::process::exit(worker::spawn::forkstart_main()),
        Some("forkprobe") => {
            let dir = argv.next().unwrap_or_default();
            std::process::exit(worker::probe::forkprobe_main(&dir))
        }
        Some("forkuserns") => std::process::exit(worker::rootfs::forkuserns_main()),
        Some("forkmount") => {
            let spec = std::env::var(worker::disk::SPEC_ENV).unwrap_or_default();
            std::process::exit(worker::disk::forkmount_main(&spec))
        }
        Some("forkexec") => {
            let spec = std::env::var(worker::exec::SPEC_ENV).unwrap_or_default();
            std::process::exit(worker::exec::forkexec_main(&spec))
        }
        _ => {}
    }
    worker::seal_inherited_fds();
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // Log records go to stderr (filtered by CTL_LOG) and, at info and above, to /1.0/events.
    let events = ctld::events::Events::default();
    {
        use tracing_subscriber::prelude::*;
        let filter = tracing_subscriber::EnvFilter::try_from_env("CTL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .with(ctld::events::logging::layer(events.clone()))
            .init();
    }
    let mut paths = Paths::new(&args.dir);
    paths.cgroup_parent = args.cgroup_parent;
    paths.cgroup_root = args.cgroup_root;
    paths.busybox = args.busybox;
    if let Some(cache) = args.build_cache {
        paths.build_cache = cache;
    }
    if let Some(mirror) = args.debian_mirror {
        ctld::images::debian::check_mirror(&mirror).context("--debian-mirror")?;
        paths.debian_mirror = Some(mirror);
    }
    if let Some(Cmd::Recover) = args.command {
        return recover(&paths);
    }
    let limits = ctld::server::ConnLimits {
        max_connections: args.max_connections as usize,
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
    };
    let options = ctld::server::Options {
        default_network: args.default_network.then_some(args.default_network_name),
        image_limits: ctld::images::unpack::Limits::with_max_total(args.image_max_size_gib << 30),
        conn_limits: limits,
        ui_dir: args.ui_dir,
    };
    // Every connection and container holds descriptors: the soft limit (often 1024) would
    // refuse clients long before the connection cap does.
    match worker::raise_fd_limit() {
        Ok(n) => tracing::debug!(limit = n, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(serve(
        paths,
        events,
        options,
        limits,
        args.http_address,
        args.image_shift,
        Housekeeping {
            image_cache_expiry_days: args.image_cache_expiry_days,
            snapshot_expiry_interval: std::time::Duration::from_secs(args.snapshot_expiry_interval),
            join: args.join,
            join_address: args.join_address,
        },
    ))
}

/// `ctld recover`: see [`Cmd::Recover`].
fn recover(paths: &Paths) -> anyhow::Result<()> {
    use ctld::recover::Outcome;
    if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() {
        anyhow::bail!(
            "ctld is running on {} (its socket answers): stop it first",
            paths.dir.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let outcomes = rt.block_on(async {
        let pool = ctld::db::open(&paths.db()).await?;
        ctld::recover::recover(&pool, paths).await
    })?;
    let mut recovered = 0;
    for o in &outcomes {
        match o {
            Outcome::Recovered {
                name,
                image_recovered,
                dropped_profiles,
            } => {
                recovered += 1;
                let mut line = format!("recovered {name}");
                if *image_recovered {
                    line.push_str(" (and its image's record)");
                }
                if !dropped_profiles.is_empty() {
                    line.push_str(&format!(
                        "; profiles that no longer exist left out: {}",
                        dropped_profiles.join(", ")
                    ));
                }
                println!("{line}");
            }
            Outcome::Skipped { dir, reason } => {
                println!("skipped {}: {reason}", dir.display());
            }
            Outcome::PoolRecovered { name } => println!("recovered storage pool {name}"),
            Outcome::VolumeRecovered { pool, name } => {
                println!("recovered storage volume {name} of pool {pool}")
            }
        }
    }
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Skipped { .. }))
        .count();
    println!("{recovered} instance(s) recovered, {skipped} skipped");
    Ok(())
}

/// The periods of the daemon's background clean-ups.
struct Housekeeping {
    /// Days after which an unused cached image goes (0: never), when given as a flag;
    /// else the server key `images.remote_cache_expiry`, else 10.
    image_cache_expiry_days: Option<u64>,
    /// How often expired snapshots are looked for.
    snapshot_expiry_interval: std::time::Duration,
    /// `--join` and `--join-address`.
    join: Option<String>,
    join_address: Option<String>,
}

async fn serve(
    paths: Paths,
    events: ctld::events::Events,
    options: ctld::server::Options,
    limits: ctld::server::ConnLimits,
    http_address: Option<String>,
    image_shift: worker::ImageShift,
    housekeeping: Housekeeping,
) -> anyhow::Result<()> {
    let Housekeeping {
        image_cache_expiry_days,
        snapshot_expiry_interval,
        join,
        join_address,
    } = housekeeping;
    let mut worker = HostWorker::new(
        paths.exe.clone(),
        paths.cgroup_root.clone(),
        paths.cgroup_parent.clone(),
        paths.trash(),
    )
    .context("detect cgroups")?;
    worker.empty_trash();
    // The image store's filesystem decides; before the first start it may not exist yet.
    std::fs::create_dir_all(&paths.dir).with_context(|| format!("{}", paths.dir.display()))?;
    let store = Some(paths.images())
        .filter(|p| p.is_dir())
        .unwrap_or(paths.dir.clone());
    let shift = worker.choose_image_shift(image_shift, &store);
    tracing::info!(image_shift = ?shift, "image layers for unprivileged containers");
    tracing::info!(cgroups = worker::Worker::cgroup_version(&worker).as_str(), dir = %paths.dir.display(), "starting");
    let socket = paths.socket();
    let state = ctld::server::build_state(paths, Arc::new(worker), events, &options).await?;
    let listener = bind(&socket).await?;
    tracing::info!(socket = %socket.display(), "listening");
    if let Some(token) = join {
        if state.cluster.clustered() {
            tracing::info!("already a cluster member: --join ignored");
        } else {
            // The HTTPS listener joining starts serves the API at once.
            state
                .remote
                .https
                .set_router(ctld::api::router(state.clone()));
            let req = ctl_api::ClusterPut {
                cluster: ctl_api::Cluster {
                    enabled: true,
                    ..Default::default()
                },
                cluster_token: token,
                server_address: join_address.unwrap_or_default(),
                ..Default::default()
            };
            state
                .cluster
                .configure(req)
                .await
                .context("joining the cluster")?;
        }
    }
    let cluster = state.cluster.clone();
    {
        let images = state.images.clone();
        let remote = state.remote.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                every.tick().await;
                let days = match image_cache_expiry_days {
                    Some(d) => d,
                    None => remote
                        .get(ctld::remote::config::IMAGE_CACHE_EXPIRY)
                        .await
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10),
                };
                if days == 0 {
                    continue;
                }
                let max_age = std::time::Duration::from_secs(days.saturating_mul(24 * 3600));
                if let Err(e) = images.prune_cached(max_age).await {
                    tracing::warn!(error = %e, "pruning cached images");
                }
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let public = match http_address {
        Some(addr) => {
            let tcp = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("bind {addr}"))?;
            tracing::info!(address = %addr, "serving public images (simplestreams)");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(ctld::server::serve_public(
                tcp,
                state.clone(),
                limits,
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    let instances = state.instances.clone();
    // Expired snapshots go now and every interval; schedules are checked each minute.
    instances.spawn_snapshot_tasks(snapshot_expiry_interval);
    // Instances whose boot keys say so come up once the API answers (their starts are
    // ordinary API-visible starts).
    let autostart = {
        let instances = instances.clone();
        tokio::spawn(async move { instances.autostart().await })
    };
    let (halt_tx, halt_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let _ = halt_tx.send(shutdown_signal().await);
    };
    ctld::server::serve(listener, state, limits, shutdown).await;
    autostart.abort();
    if let Ok(Halt::Host) = halt_rx.await {
        // The host goes down: every container stops cleanly, in boot.stop.priority order,
        // and is remembered as running for the next start.
        instances.shutdown_all().await;
        tracing::info!("every container stopped for the host's shutdown");
    }
    cluster.stop().await;
    stop_tx.send_replace(true);
    if let Some(p) = public {
        let _ = p.await;
    }
    tracing::info!("stopped; containers keep running");
    Ok(())
}

/// Bind the API socket (mode 0660), replacing a stale socket file but never a live daemon.
async fn bind(socket: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            bail!("another ctld is already listening on {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("remove stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", socket.display()))?;
    Ok(listener)
}

/// Why ctld stops: asked to (SIGTERM, SIGINT: containers keep running), or the host goes
/// down (SIGPWR: containers are stopped first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    Daemon,
    Host,
}

async fn shutdown_signal() -> Halt {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut pwr)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::from_raw(libc::SIGPWR)),
    ) else {
        tracing::error!("cannot install signal handlers; stop ctld with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM"); Halt::Daemon }
        _ = int.recv() => { tracing::info!("SIGINT"); Halt::Daemon }
        _ = pwr.recv() => { tracing::info!("SIGPWR: stopping every container"); Halt::Host }
    }
}
