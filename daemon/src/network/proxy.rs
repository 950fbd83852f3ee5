//! `proxy` devices: forward a host port to a service inside a container, as Incus's
//! `forkproxy` does, in userspace inside ctld.
//!
//! Device keys (Incus names): `listen=tcp:0.0.0.0:8080` (on the host), `connect=tcp:
//! 127.0.0.1:80` (inside the container: `127.0.0.1` is the *container's* loopback), and
//! `bind=host` (the default and the only mode supported; `bind=instance`, listening inside
//! the container, is refused). Addresses are `<tcp|udp>:<ip>:<ports>`, IPv6 in brackets,
//! ports a comma list of ports and ranges (`80,443,8000-8010`); `connect` has one port (all
//! listen ports go there) or as many as `listen` (pairwise).
//!
//! For every accepted TCP connection ctld creates the outbound socket **inside the
//! container's network namespace** ([`crate::worker::netns`]: a dedicated thread enters the
//! namespace, creates the socket, exits), connects it asynchronously and splices bytes both
//! ways with `copy_bidirectional`. UDP keeps one container-side socket per client address,
//! dropped after [`UDP_IDLE`] without traffic either way. The namespace descriptor lives in
//! the [`ProxyHandle`], so the proxy keeps working whatever happens to PIDs; when the
//! container stops, its namespace dies with it and new connections fail (stop the proxy
//! with the container, and start a new one with the new namespace on the next start).
//!
//! [`ProxyHandle::stop`] (or dropping the handle) closes the listeners and every
//! connection in flight.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::worker::netns::{NetNs, SocketKind};

/// How long a connection into the container may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one listener serves at once; more are refused (closed) until some end.
const MAX_CONNECTIONS: usize = 1024;
/// UDP client flows one listener keeps at once.
const MAX_UDP_FLOWS: usize = 256;
/// A UDP flow without traffic for this long is dropped.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Listen ports one device may open.
const MAX_PORTS: usize = 1024;

/// Errors of `proxy` devices: bad configuration (the user's fault) or starting the
/// listeners (port in use).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy address {value:?}: {reason}")]
    Address { value: String, reason: &'static str },
    #[error("proxy device: missing {0:?}")]
    MissingKey(&'static str),
    #[error("proxy device: unknown key {0:?}")]
    UnknownKey(String),
    #[error("proxy device: {key}={value} is not supported")]
    Unsupported { key: String, value: String },
    #[error("proxy device: listen is {listen}, connect is {connect}: protocols must match")]
    ProtocolMismatch { listen: Protocol, connect: Protocol },
    #[error("proxy device: connect has {connect} ports for {listen} listen ports (1 or {listen})")]
    PortCount { listen: usize, connect: usize },
    #[error("proxy device: connect address {0} is unspecified")]
    UnspecifiedConnect(IpAddr),
    #[error("proxy device: address {0} is already in use")]
    AddrInUse(SocketAddr),
    #[error("proxy device: listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Transport protocol of a proxy address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A parsed `listen` or `connect` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddress {
    pub protocol: Protocol,
    pub ip: IpAddr,
    /// Ports in order, ranges expanded.
    pub ports: Vec<u16>,
}

/// Parse `<tcp|udp>:<ip>:<ports>` (IPv6 as `[addr]`).
pub fn parse_address(value: &str) -> Result<ProxyAddress, ProxyError> {
    let bad = |reason| ProxyError::Address {
        value: value.to_string(),
        reason,
    };
    let (proto, rest) = value
        .split_once(':')
        .ok_or(bad("expected <protocol>:<address>:<port>"))?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "unix" => return Err(bad("unix sockets are not supported")),
        _ => return Err(bad("protocol must be tcp or udp")),
    };
    let (host, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or(bad("missing ] after IPv6 address"))?;
        let ports = after.strip_prefix(':').ok_or(bad("missing port"))?;
        (host, ports)
    } else {
        let (host, ports) = rest.split_once(':').ok_or(bad("missing port"))?;
        if ports.contains(':') {
            return Err(bad("IPv6 addresses must be in brackets"));
        }
        (host, ports)
    };
    let ip: IpAddr = host.parse().map_err(|_| bad("not an IP address"))?;
    if matches!((ip, rest.starts_with('[')), (IpAddr::V4(_), true)) {
        return Err(bad("only IPv6 addresses go in brackets"));
    }
    let mut list = Vec::new();
    for part in ports.split(',') {
        let port = |s: &str| -> Result<u16, ProxyError> {
            match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad("ports are numbers from 1 to 65535")),
                Ok(p) => Ok(p),
            }
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(bad("port range is reversed"));
                }
                list.extend(a..=b);
            }
            None => list.push(port(part)?),
        }
        if list.len() > MAX_PORTS {
            return Err(bad("too many ports"));
        }
    }
    Ok(ProxyAddress {
        protocol,
        ip,
        ports: list,
    })
}

/// A validated `proxy` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub listen: ProxyAddress,
    pub connect: ProxyAddress,
}

impl ProxySpec {
    /// Parse and validate a `proxy` device's configuration (its keys and values, `type`
    /// included or not). Pure: call it when a device is added or changed, before anything
    /// is applied.
    pub fn parse<'a, K, V>(
        config: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<ProxySpec, ProxyError>
    where
        K: AsRef<str> + ?Sized + 'a,
        V: AsRef<str> + ?Sized + 'a,
    {
        let mut listen = None;
        let mut connect = None;
        for (key, value) in config {
            let (key, value) = (key.as_ref(), value.as_ref());
            let unsupported = || ProxyError::Unsupported {
                key: key.to_string(),
                value: value.to_string(),
            };
            match key {
                "type" if value == "proxy" => {}
                "listen" => listen = Some(parse_address(value)?),
                "connect" => connect = Some(parse_address(value)?),
                "bind" if value == "host" => {}
                "nat" | "proxy_protocol" if value == "false" => {}
                "type" | "bind" | "nat" | "proxy_protocol" | "security.uid" | "security.gid"
                | "uid" | "gid" | "mode" => return Err(unsupported()),
                _ => return Err(ProxyError::UnknownKey(key.to_string())),
            }
        }
        let listen = listen.ok_or(ProxyError::MissingKey("listen"))?;
        let connect = connect.ok_or(ProxyError::MissingKey("connect"))?;
        if listen.protocol != connect.protocol {
            return Err(ProxyError::ProtocolMismatch {
                listen: listen.protocol,
                connect: connect.protocol,
            });
        }
        if connect.ports.len() != 1 && connect.ports.len() != listen.ports.len() {
            return Err(ProxyError::PortCount {
                listen: listen.ports.len(),
                connect: connect.ports.len(),
            });
        }
        if connect.ip.is_unspecified() {
            return Err(ProxyError::UnspecifiedConnect(connect.ip));
        }
        Ok(ProxySpec { listen, connect })
    }

    /// (host address to listen on, container address to connect to), one per listen port.
    pub fn pairs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.listen
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let target = self
                    .connect
                    .ports
                    .get(i)
                    .or(self.connect.ports.first())
                    .copied()
                    .unwrap_or(*port);
                (
                    SocketAddr::new(self.listen.ip, *port),
                    SocketAddr::new(self.connect.ip, target),
                )
            })
            .collect()
    }
}

/// A running proxy device. Dropping it stops it too (without waiting).
#[derive(Debug)]
pub struct ProxyHandle {
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
}

fn bind_error(addr: SocketAddr, source: io::Error) -> ProxyError {
    if source.kind() == io::ErrorKind::AddrInUse {
        ProxyError::AddrInUse(addr)
    } else {
        ProxyError::Bind { addr, source }
    }
}

impl ProxyHandle {
    /// Listen on every address of `spec` on the host and forward into the network namespace
    /// `netns` (the container's, e.g. `NetNs::of_pid(init_pid)`). Every listener is bound
    /// before this returns, so a port in use is an error here ([`ProxyError::AddrInUse`])
    /// and nothing is left listening. Call when a container with the device starts, or when
    /// the device is added to a running container.
    pub async fn start(spec: &ProxySpec, netns: NetNs) -> Result<ProxyHandle, ProxyError> {
        let netns = Arc::new(netns);
        let (shutdown, stopping) = watch::channel(false);
        let pairs = spec.pairs();
        let mut tasks = Vec::with_capacity(pairs.len());
        let mut addrs = Vec::with_capacity(pairs.len());
        match spec.listen.protocol {
            Protocol::Tcp => {
                let mut bound = Vec::with_capacity(pairs.len());
                for (listen, target) in pairs {
                    let l = TcpListener::bind(listen)
                        .await
                        .map_err(|e| bind_error(listen, e))?;
                    addrs.push(l.local_addr().unwrap_or(listen));
                    bound.push((l, target));
                }
                for (l, target) in bound {
                    tasks.push(tokio::spawn(serve_tcp(
                        l,
                        target,
                        netns.clone(),
                        stopping.clone(),
                    )));
                }
            }
            Protocol::Udp => {
                let mut bound = Vec::with_capacity(pairs.len());
                for (listen, target) in pairs {
                    let s = UdpSocket::bind(listen)
                        .await
                        .map_err(|e| bind_error(listen, e))?;
                    addrs.push(s.local_addr().unwrap_or(listen));
                    bound.push((s, target));
                }
                for (s, target) in bound {
                    tasks.push(tokio::spawn(serve_udp(
                        s,
                        target,
                        netns.clone(),
                        stopping.clone(),
                    )));
                }
            }
        }
        tracing::info!(listen = ?addrs, connect = %spec.connect.ip, "proxy device started");
        Ok(ProxyHandle {
            tasks,
            addrs,
            shutdown,
        })
    }

    /// The host addresses it listens on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Close the listeners and every connection, and wait until they are closed (the ports
    /// are free when this returns). Call when the container stops or the device is removed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            // Each listener closes its connections and waits for them before it ends.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!(listen = ?self.addrs, "proxy device stopped");
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accept connections until told to stop (then close every connection and wait for them)
/// or aborted; each connection is forwarded by a task of a [`JoinSet`] the loop owns, so
/// aborting the loop closes every connection too.
async fn serve_tcp(
    listener: TcpListener,
    target: SocketAddr,
    netns: Arc<NetNs>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopping.changed() => {
                drop(listener);
                conns.shutdown().await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((inbound, peer)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, %target, "proxy: too many connections, refusing one");
                        continue;
                    }
                    let netns = netns.clone();
                    conns.spawn(async move {
                        if let Err(e) = forward_tcp(inbound, target, &netns).await {
                            tracing::debug!(%peer, %target, error = %e, "proxy connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(%target, error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Connect to `target` from inside `netns` and copy both ways until both sides are done.
async fn forward_tcp(mut inbound: TcpStream, target: SocketAddr, netns: &NetNs) -> io::Result<()> {
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(
        netns.socket_async(&target, SocketKind::Stream).await?,
    ));
    let mut outbound = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// One UDP client: its socket inside the container's namespace, and when it last moved a
/// datagram (milliseconds since the listener started).
struct UdpFlow {
    socket: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
}

/// Relay datagrams until told to stop or aborted: client → its flow's socket in the
/// namespace → target, and the target's answers back to the client from the host socket,
/// which only this task holds (so the port is free once it ended).
async fn serve_udp(
    host: UdpSocket,
    target: SocketAddr,
    netns: Arc<NetNs>,
    mut stopping: watch::Receiver<bool>,
) {
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_millis() as u64;
    let mut flows: HashMap<SocketAddr, UdpFlow> = HashMap::new();
    let mut relays: JoinSet<SocketAddr> = JoinSet::new();
    let (answers_tx, mut answers) = mpsc::channel::<(SocketAddr, Vec<u8>)>(256);
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = stopping.changed() => {
                relays.shutdown().await;
                return;
            }
            Some((client, datagram)) = answers.recv() => {
                if let Err(e) = host.send_to(&datagram, client).await {
                    tracing::debug!(%client, %target, error = %e, "proxy: udp answer failed");
                }
            }
            received = host.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(%target, error = %e, "proxy: udp receive failed");
                        continue;
                    }
                };
                if !flows.contains_key(&client) {
                    if flows.len() >= MAX_UDP_FLOWS {
                        tracing::warn!(%client, %target, "proxy: too many udp flows, dropping a datagram");
                        continue;
                    }
                    let socket = match udp_flow_socket(&netns, target).await {
                        Ok(s) => Arc::new(s),
                        Err(e) => {
                            tracing::debug!(%client, %target, error = %e, "proxy: udp flow failed");
                            continue;
                        }
                    };
                    let last = Arc::new(AtomicU64::new(now()));
                    relays.spawn(relay_answers(answers_tx.clone(), socket.clone(), client, last.clone(), now));
                    flows.insert(client, UdpFlow { socket, last });
                }
                if let Some(flow) = flows.get(&client) {
                    flow.last.store(now(), Ordering::Relaxed);
                    if let Err(e) = flow.socket.send(&buf[..n]).await {
                        tracing::debug!(%client, %target, error = %e, "proxy: udp send failed");
                    }
                }
            }
            Some(ended) = relays.join_next(), if !relays.is_empty() => {
                if let Ok(client) = ended {
                    flows.remove(&client);
                }
            }
        }
    }
}

/// A UDP socket inside `netns`, connected to `target`.
async fn udp_flow_socket(netns: &NetNs, target: SocketAddr) -> io::Result<UdpSocket> {
    let std_socket =
        std::net::UdpSocket::from(netns.socket_async(&target, SocketKind::Datagram).await?);
    let socket = UdpSocket::from_std(std_socket)?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Pass what the target answers on to be sent to `client`, until the flow is idle for
/// [`UDP_IDLE`]; returns the client so the flow can be forgotten.
async fn relay_answers(
    answers: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    flow: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    now: impl Fn() -> u64,
) -> SocketAddr {
    let mut buf = vec![0u8; 65536];
    let idle_ms = UDP_IDLE.as_millis() as u64;
    loop {
        let quiet = now().saturating_sub(last.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return client;
        }
        match tokio::time::timeout(Duration::from_millis(idle_ms - quiet), flow.recv(&mut buf))
            .await
        {
            Ok(Ok(n)) => {
                last.store(now(), Ordering::Relaxed);
                if answers.send((client, buf[..n].to_vec())).await.is_err() {
                    return client;
                }
            }
            // ICMP errors (nothing listening) surface as receive errors: keep the flow.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
