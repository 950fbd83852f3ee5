//! Managed networks: the `Networks` service behind `/1.0/networks`, the IPAM of instance
//! NICs, and the plan of the veth pairs an instance gets at start.
//!
//! A managed network is a Linux bridge of the same name with a gateway address (and maybe
//! an IPv6 ULA); its config lives in SQLite and the bridge is re-created or adopted when the
//! daemon starts ([`Networks::reconcile`]). Every NIC on a managed network holds one IPv4
//! lease per (network, instance, device) in the database: picked once (or set statically
//! by `ipv4.address`), kept across restarts, released when the instance goes.
//!
//! When a network comes up (created, changed, adopted at start-up) it gets its nftables
//! table and a supervised dnsmasq serving its static leases and `<instance>.<domain>`
//! names; when leases change dnsmasq's host files are rewritten and reloaded; when it is
//! deleted both go. Router tests run without these host services.
//!
//! Invariant: validation happens before anything on the host changes; a failed create
//! removes the bridge it made.
//!
//! Beside the link, a network gets:
//! - [`dnsmasq`]: DHCP (static leases) and DNS (`<name>.<domain>`) per bridge, supervised.
//! - [`nft`]: NAT and forwarding rules, one nftables table per network, and the IP
//!   forwarding sysctls.
//! - [`proxy`]: `proxy` devices, a userspace port forward from the host into a container's
//!   network namespace.
//!
//! How the networks service drives them (all idempotent where it matters):
//!
//! | when | call |
//! |---|---|
//! | network created, or daemon start-up per network (after the bridge is up with its addresses) | `nft::enable_forwarding("/proc/sys/net", v4, v6)`, `nft::apply_network(&NetRules)` (blocking: `spawn_blocking`), `Dnsmasq::start(cfg, &hosts)` (stops a leftover first) |
//! | network config changed | `nft::apply_network` (replaces the table); `handle.stop()` then `Dnsmasq::start` with the new config |
//! | a NIC gets/loses an address (instance create/start/stop/delete/rename) | `handle.update_hosts(&all_hosts)` |
//! | `/1.0/networks/{name}/leases` | `handle.leases()` or `dnsmasq::read_leases(dir)` |
//! | network deleted | `handle.stop()`, `nft::remove_network(name)` |
//! | daemon start-up, leak cleanup | `nft::list_ctl_tables()` minus known networks → `remove_network`; `dnsmasq::stop_stale(dir)` for a network directory without a network |
//! | container with a `proxy` device starts / device added live | `ProxySpec::parse(&device)` (also at config validation), `ProxyHandle::start(&spec, NetNs::of_process(init.pid, init.starttime)?)` |
//! | container stops / device removed | `proxy_handle.stop()` |

pub mod config;
pub mod dnsmasq;
pub mod ipam;
pub mod nft;
pub mod proxy;
#[cfg(test)]
mod testnet;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ctl_api::{
    Network, NetworkLease, NetworkPut, NetworkState, NetworkStateAddress, NetworkStateCounters,
    NetworksPost,
};

use crate::db::intents::Kind;
use crate::db::{self, DbError, LeaseRow, NetworkRow, Pool};
use crate::worker::{BridgeSpec, Interface, NicSpec, ResolverSpec, Worker, WorkerError};
use config::{AddressChoice, BridgeConfig, ConfigError, NicDevice};
use dnsmasq::{Dnsmasq, DnsmasqConfig, DnsmasqHandle, StaticHost};
use ipam::{IpamError, Ipv4Cidr, Ipv6Cidr};
use nft::NetRules;

/// Device map as stored.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// Network errors; `api::error` maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network \"{0}\" not found")]
    NotFound(String),
    #[error("network \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("network \"{name}\" is in use by {}", users.join(", "))]
    InUse { name: String, users: Vec<String> },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A host service of a network (dnsmasq, nftables) failed.
    #[error("{0}")]
    Host(String),
}

/// The user dnsmasq drops to: Debian's `dnsmasq` user when it exists, else `nobody`, else
/// none (it stays root).
fn unprivileged_dnsmasq_user() -> Option<&'static str> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["dnsmasq", "nobody"]
        .into_iter()
        .find(|u| passwd.lines().any(|l| l.split(':').next() == Some(*u)))
}

/// The nameservers of a resolv.conf text (dnsmasq's upstream servers).
fn host_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().split('%').next()?.parse().ok())
        .collect()
}

/// A NIC device whose target has been looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNic {
    pub nic: NicDevice,
    pub target: config::NicTarget,
}

/// One DNS/DHCP host entry of a network (for dnsmasq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    pub hwaddr: String,
    pub ipv4: Ipv4Addr,
    pub name: String,
}

/// The network side of an instance start: the NICs to create and the resolver files.
#[derive(Debug, Clone, Default)]
pub struct StartPlan {
    pub nics: Vec<NicSpec>,
    pub resolver: Option<ResolverSpec>,
}

/// A stored network's parsed config (addresses resolved).
#[derive(Debug, Clone)]
struct Managed {
    row: NetworkRow,
    cfg: BridgeConfig,
}

impl Managed {
    fn ipv4(&self) -> Option<Ipv4Cidr> {
        match self.cfg.ipv4 {
            AddressChoice::Cidr(c) => Some(c),
            _ => None,
        }
    }

    fn ipv6(&self) -> Option<Ipv6Cidr> {
        match self.cfg.ipv6 {
            AddressChoice::Cidr(c) => Some(c),
            _ => None,
        }
    }

    fn bridge_spec(&self) -> BridgeSpec {
        BridgeSpec {
            name: self.row.name.clone(),
            mtu: self.cfg.mtu,
            ipv4: self.ipv4().map(|c| (c.addr, c.prefix)),
            ipv6: self.ipv6().map(|c| (c.addr, c.prefix)),
            hwaddr: self.cfg.hwaddr,
        }
    }
}

fn managed(row: NetworkRow) -> Result<Managed, NetworkError> {
    let cfg = config::parse(&row.config)?;
    Ok(Managed { row, cfg })
}

/// `count` random bytes.
fn random_bytes(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(count);
    out
}

/// A new random MAC in the `00:16:3e` range.
pub fn random_mac() -> [u8; 6] {
    let b = random_bytes(3);
    ipam::mac([b[0], b[1], b[2]])
}

/// A random host-side veth name (`veth` + 8 hex digits).
pub fn random_host_name() -> String {
    let b = random_bytes(4);
    format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3])
}

/// The volatile key of a NIC's MAC.
pub fn hwaddr_key(device: &str) -> String {
    format!("volatile.{device}.hwaddr")
}

/// The volatile key of a NIC's host-side veth name.
pub fn host_name_key(device: &str) -> String {
    format!("volatile.{device}.host_name")
}

/// What a managed network runs on the host besides its bridge: a supervised dnsmasq and
/// an nftables table. Only a real daemon has them ([`Networks::enable_host_services`]);
/// router tests over the fake worker run without.
struct HostServices {
    /// `$CTL_DIR/networks`: one directory per network for dnsmasq's files.
    dir: PathBuf,
    /// `/proc/sys/net`, for the forwarding switches.
    proc_sys_net: PathBuf,
    /// Upstream DNS servers for names outside the networks' domains.
    upstream: Vec<IpAddr>,
    dnsmasq: tokio::sync::Mutex<HashMap<String, DnsmasqHandle>>,
}

/// The networks service. Cheap to clone.
#[derive(Clone)]
pub struct Networks {
    db: Pool,
    worker: Arc<dyn Worker>,
    /// Serializes network changes and lease allocation.
    lock: Arc<tokio::sync::Mutex<()>>,
    services: Arc<OnceLock<HostServices>>,
}

impl Networks {
    /// A service over the database and the worker.
    pub fn new(db: Pool, worker: Arc<dyn Worker>) -> Self {
        Networks {
            db,
            worker,
            lock: Arc::default(),
            services: Arc::default(),
        }
    }

    /// Run DHCP/DNS (dnsmasq, files under `dir`) and NAT/forwarding (nftables) for the
    /// managed networks from now on. Called once by the daemon before [`Networks::reconcile`].
    pub fn enable_host_services(&self, dir: PathBuf) {
        let upstream = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| host_nameservers(&t))
            .unwrap_or_default();
        let _ = self.services.set(HostServices {
            dir,
            proc_sys_net: PathBuf::from("/proc/sys/net"),
            upstream,
            dnsmasq: tokio::sync::Mutex::default(),
        });
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Worker) -> Result<T, WorkerError> + Send + 'static,
    ) -> Result<T, NetworkError> {
        let w = self.worker.clone();
        tokio::task::spawn_blocking(move || f(w.as_ref()))
            .await
            .map_err(|e| NetworkError::Internal(e.to_string()))?
            .map_err(NetworkError::from)
    }

    async fn managed(&self, name: &str) -> Result<Managed, NetworkError> {
        let row = db::networks::get(&self.db, name)
            .await?
            .ok_or_else(|| NetworkError::NotFound(name.to_string()))?;
        managed(row)
    }

    // ----- DHCP/DNS and NAT -----

    /// The bridge of network `m` is up (created, adopted at start-up, or reconfigured):
    /// install its nftables table and (re)start its dnsmasq with the current hosts.
    async fn network_up(&self, m: &Managed) -> Result<(), NetworkError> {
        let Some(s) = self.services.get() else {
            return Ok(());
        };
        let name = m.row.name.clone();
        let rules = NetRules {
            network: name.clone(),
            bridge: name.clone(),
            ipv4: m.ipv4().map(|c| (c.addr, c.prefix)),
            ipv4_nat: m.cfg.nat && m.ipv4().is_some(),
            ipv6: m.ipv6().map(|c| (c.addr, c.prefix)),
            ipv6_nat: false,
        };
        let proc_sys_net = s.proc_sys_net.clone();
        tokio::task::spawn_blocking(move || {
            nft::enable_forwarding(&proc_sys_net, rules.ipv4.is_some(), rules.ipv6.is_some())?;
            nft::apply_network(&rules)
        })
        .await
        .map_err(|e| NetworkError::Internal(e.to_string()))?
        .map_err(|e| NetworkError::Host(format!("nftables for network \"{name}\": {e}")))?;
        let mut running = s.dnsmasq.lock().await;
        if let Some(old) = running.remove(&name)
            && let Err(e) = old.stop().await
        {
            tracing::warn!(network = %name, error = %e, "stopping the old dnsmasq");
        }
        if m.ipv4().is_none() && m.ipv6().is_none() {
            return Ok(());
        }
        let mut cfg = DnsmasqConfig::new(&name, &name, s.dir.join(&name));
        cfg.ipv4 = m.ipv4().map(|c| (c.addr, c.prefix));
        cfg.ipv6 = m.ipv6().map(|c| (c.addr, c.prefix));
        cfg.dhcp = m.cfg.dhcp;
        cfg.domain = m.cfg.domain.clone();
        cfg.upstream = s.upstream.clone();
        // dnsmasq parses what containers send: let it drop root (as LXD and Incus run it).
        if let Some(user) = unprivileged_dnsmasq_user() {
            cfg.user = user.to_string();
        }
        let hosts = self.static_hosts(m).await?;
        let handle = Dnsmasq::start(cfg, &hosts)
            .await
            .map_err(|e| NetworkError::Host(format!("dnsmasq for network \"{name}\": {e}")))?;
        running.insert(name, handle);
        Ok(())
    }

    /// Network `name` is going away: stop its dnsmasq (removing its files) and remove its
    /// nftables table. Best effort: every step is tried, failures are logged.
    async fn network_down(&self, name: &str) {
        let Some(s) = self.services.get() else {
            return;
        };
        let dir = s.dir.join(name);
        match s.dnsmasq.lock().await.remove(name) {
            Some(h) => {
                if let Err(e) = h.stop().await {
                    tracing::warn!(network = %name, error = %e, "stopping dnsmasq");
                }
            }
            // None running under this daemon: one a previous daemon left, found by its pid
            // file, must not outlive the network either.
            None => {
                if let Err(e) = dnsmasq::stop_stale(&dir).await {
                    tracing::warn!(network = %name, error = %e, "stopping a leftover dnsmasq");
                }
            }
        }
        let n = name.to_string();
        match tokio::task::spawn_blocking(move || nft::remove_network(&n)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(network = %name, error = %e, "removing the nftables table")
            }
            Err(e) => tracing::warn!(network = %name, error = %e, "removing the nftables table"),
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }

    /// The `(hwaddr, ipv4, instance)` set of network `name` changed: give dnsmasq the new
    /// static leases and names.
    pub async fn leases_changed(&self, name: &str) {
        let Some(s) = self.services.get() else {
            return;
        };
        let running = s.dnsmasq.lock().await;
        let Some(h) = running.get(name) else {
            return;
        };
        let hosts = match self.managed(name).await {
            Ok(m) => self.static_hosts(&m).await,
            Err(e) => Err(e),
        };
        let result = match hosts {
            Ok(hosts) => h.update_hosts(&hosts).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(network = %name, error = %e, "updating dnsmasq's hosts");
        }
    }

    /// dnsmasq's view of the instances on network `m`: static lease and DNS names.
    async fn static_hosts(&self, m: &Managed) -> Result<Vec<StaticHost>, NetworkError> {
        Ok(self
            .dns_hosts(&m.row.name)
            .await?
            .into_iter()
            .map(|h| StaticHost {
                ipv6: m
                    .ipv6()
                    .zip(ipam::parse_mac(&h.hwaddr))
                    .map(|(net, mac)| net.eui64(mac)),
                ipv4: Some(h.ipv4),
                hwaddr: h.hwaddr,
                name: h.name,
            })
            .collect())
    }

    /// Addresses dnsmasq handed out dynamically on network `name` (DHCP clients whose MAC
    /// has no reservation).
    fn dynamic_leases(&self, name: &str) -> Vec<dnsmasq::Lease> {
        self.services
            .get()
            .and_then(|s| dnsmasq::read_leases(&s.dir.join(name)).ok())
            .unwrap_or_default()
    }

    /// The DHCP/DNS host entries of network `name`.
    pub async fn dns_hosts(&self, name: &str) -> Result<Vec<DnsHost>, NetworkError> {
        Ok(db::networks::leases(&self.db, name)
            .await?
            .into_iter()
            .filter_map(|l| {
                Some(DnsHost {
                    ipv4: l.address.parse().ok()?,
                    hwaddr: l.hwaddr,
                    name: l.instance,
                })
            })
            .collect())
    }

    // ----- reading -----

    /// Every network name.
    pub async fn names(&self) -> Result<Vec<String>, NetworkError> {
        Ok(db::networks::list(&self.db)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect())
    }

    /// Every network.
    pub async fn list(&self) -> Result<Vec<Network>, NetworkError> {
        let users = self.all_users().await?;
        Ok(db::networks::list(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let used = users.get(&row.name).cloned().unwrap_or_default();
                self.to_api(row, used)
            })
            .collect())
    }

    /// One network.
    pub async fn get(&self, name: &str) -> Result<Network, NetworkError> {
        let m = self.managed(name).await?;
        let users = self.all_users().await?;
        let used = users.get(name).cloned().unwrap_or_default();
        Ok(self.to_api(m.row, used))
    }

    fn to_api(&self, row: NetworkRow, used_by: Vec<String>) -> Network {
        Network {
            status: if self.worker.bridge_exists(&row.name) {
                "Created".into()
            } else {
                "Unavailable".into()
            },
            name: row.name,
            description: row.description,
            kind: row.kind,
            managed: true,
            config: row.config,
            used_by,
            locations: vec!["none".into()],
            project: "default".into(),
        }
    }

    /// Network name → URLs of the instances and profiles whose NICs use it.
    async fn all_users(&self) -> Result<BTreeMap<String, Vec<String>>, NetworkError> {
        let names: BTreeSet<String> = self.names().await?.into_iter().collect();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let profiles = db::profiles::list(&self.db).await?;
        let targets = |devices: &Devices| -> BTreeSet<String> {
            devices
                .values()
                .filter(|d| d.get("type").map(String::as_str) == Some("nic"))
                .filter_map(|d| d.get("network").or_else(|| d.get("parent")))
                .filter(|n| names.contains(*n))
                .cloned()
                .collect()
        };
        for p in &profiles {
            for n in targets(&p.devices) {
                out.entry(n)
                    .or_default()
                    .push(format!("/1.0/profiles/{}", p.name));
            }
        }
        let rows = db::instances::list(&self.db).await?;
        for row in &rows {
            let expanded = expand(&profiles, &row.profiles, &row.devices);
            for n in targets(&expanded) {
                out.entry(n)
                    .or_default()
                    .push(format!("/1.0/instances/{}", row.name));
            }
        }
        // A running instance holding a lease (its NIC was removed from a profile, but it
        // runs with it until its next start) uses the network too.
        let running: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.init_pid > 0)
            .map(|r| r.name.as_str())
            .collect();
        for n in &names {
            for l in db::networks::leases(&self.db, n).await? {
                if !running.contains(l.instance.as_str()) {
                    continue;
                }
                let url = format!("/1.0/instances/{}", l.instance);
                let users = out.entry(n.clone()).or_default();
                if !users.contains(&url) {
                    users.push(url);
                }
            }
        }
        Ok(out)
    }

    /// The addresses handed out on network `name`.
    pub async fn leases(&self, name: &str) -> Result<Vec<NetworkLease>, NetworkError> {
        let m = self.managed(name).await?;
        let mut out = Vec::new();
        for l in db::networks::leases(&self.db, name).await? {
            let v6 = m
                .ipv6()
                .zip(ipam::parse_mac(&l.hwaddr))
                .map(|(net, mac)| net.eui64(mac));
            let lease = |address: String, kind: &str| NetworkLease {
                hostname: l.instance.clone(),
                address,
                hwaddr: l.hwaddr.clone(),
                kind: kind.into(),
                location: "none".into(),
                project: "default".into(),
            };
            out.push(lease(
                l.address.clone(),
                if l.is_static { "static" } else { "dynamic" },
            ));
            if let Some(v6) = v6 {
                out.push(lease(v6.to_string(), "dynamic"));
            }
        }
        for d in self.dynamic_leases(name) {
            if out.iter().any(|l| l.address == d.address.to_string()) {
                continue;
            }
            out.push(NetworkLease {
                hostname: d.hostname.unwrap_or_default(),
                address: d.address.to_string(),
                hwaddr: d.hwaddr,
                kind: "dynamic".into(),
                location: "none".into(),
                project: "default".into(),
            });
        }
        Ok(out)
    }

    /// The bridge's live state.
    pub async fn state(&self, name: &str) -> Result<NetworkState, NetworkError> {
        let m = self.managed(name).await?;
        let dnsmasq = self.dnsmasq_state(&m).await;
        let n = name.to_string();
        let found = self
            .blocking(move |w| Ok(w.interfaces(None, Some(&n))))
            .await?
            .into_iter()
            .find(|i| i.name == name);
        Ok(match found {
            Some(i) => NetworkState {
                addresses: state_addresses(&i),
                counters: counters(&i),
                hwaddr: i.hwaddr.clone(),
                mtu: i.mtu,
                state: if i.up { "up" } else { "down" }.into(),
                kind: "broadcast".into(),
                dnsmasq,
            },
            None => NetworkState {
                state: "down".into(),
                kind: "broadcast".into(),
                dnsmasq,
                ..Default::default()
            },
        })
    }

    /// The health of network `m`'s dnsmasq; `None` where it has none (no addresses, or no
    /// host services, as under the fake worker).
    async fn dnsmasq_state(&self, m: &Managed) -> Option<ctl_api::DnsmasqState> {
        let s = self.services.get()?;
        if m.ipv4().is_none() && m.ipv6().is_none() {
            return None;
        }
        let running = s.dnsmasq.lock().await;
        Some(match running.get(&m.row.name) {
            Some(h) => ctl_api::DnsmasqState {
                status: if h.pid().is_some() {
                    "running"
                } else {
                    "restarting"
                }
                .into(),
                pid: h.pid().unwrap_or(0),
                restarts: h.restarts(),
            },
            None => ctl_api::DnsmasqState {
                status: "down".into(),
                ..Default::default()
            },
        })
    }

    // ----- changing -----

    /// Subnets a new or changed network must not overlap: the host's routes and addresses
    /// and every other managed network's.
    async fn taken_subnets(
        &self,
        except: Option<&str>,
    ) -> Result<
        (
            Vec<(String, Ipv4Cidr)>,
            Vec<Ipv4Cidr>,
            Vec<(String, Ipv6Cidr)>,
        ),
        NetworkError,
    > {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for row in db::networks::list(&self.db).await? {
            if Some(row.name.as_str()) == except {
                continue;
            }
            let m = managed(row)?;
            if let Some(c) = m.ipv4() {
                v4.push((m.row.name.clone(), c));
            }
            if let Some(c) = m.ipv6() {
                v6.push((m.row.name.clone(), c));
            }
        }
        let own = except.map(str::to_string);
        let own_subnet = match &own {
            Some(n) => self.managed(n).await.ok().and_then(|m| m.ipv4()),
            None => None,
        };
        let host: Vec<Ipv4Cidr> = self
            .blocking(|w| w.host_ipv4_subnets())
            .await?
            .into_iter()
            .map(|(addr, prefix)| Ipv4Cidr { addr, prefix })
            // The network's own bridge routes are not a collision with itself.
            .filter(|c| own_subnet.is_none_or(|o| !o.overlaps(*c)))
            .collect();
        Ok((v4, host, v6))
    }

    /// Resolve `auto` addresses and check overlaps; returns the config to store.
    async fn resolve_config(
        &self,
        name: &str,
        mut stored: BTreeMap<String, String>,
        previous: Option<&Managed>,
    ) -> Result<(BTreeMap<String, String>, BridgeConfig), NetworkError> {
        stored.retain(|_, v| !v.is_empty());
        // The bridge's MAC is the daemon's: kept from the stored config whatever a PUT says,
        // chosen once for a new network (or one made before the key existed).
        let kept_mac = previous.and_then(|p| p.row.config.get(config::HWADDR_KEY).cloned());
        let mac = kept_mac.unwrap_or_else(|| crate::worker::net::format_mac(&random_mac()));
        stored.insert(config::HWADDR_KEY.into(), mac);
        let mut cfg = config::parse(&stored)?;
        let (others4, host4, others6) = self.taken_subnets(previous.map(|_| name)).await?;
        match cfg.ipv4 {
            AddressChoice::Auto => {
                let keep = previous.and_then(Managed::ipv4);
                let chosen = match keep {
                    Some(c) => c,
                    None => {
                        let mut taken: Vec<Ipv4Cidr> = others4.iter().map(|(_, c)| *c).collect();
                        taken.extend(host4.iter().copied());
                        let bytes = random_bytes(256);
                        let candidates = bytes
                            .chunks(2)
                            .map(|p| (p[0].max(1), p[1]))
                            .collect::<Vec<_>>();
                        ipam::pick_subnet(&taken, candidates)?
                    }
                };
                cfg.ipv4 = AddressChoice::Cidr(chosen);
                stored.insert("ipv4.address".into(), chosen.to_string());
            }
            AddressChoice::Cidr(c) => {
                if let Some((other, _)) = others4.iter().find(|(_, o)| o.overlaps(c)) {
                    return Err(NetworkError::Invalid(format!(
                        "ipv4.address {c} overlaps the subnet of network \"{other}\""
                    )));
                }
                if let Some(h) = host4.iter().find(|h| h.overlaps(c)) {
                    return Err(NetworkError::Invalid(format!(
                        "ipv4.address {c} overlaps the host's route or address {h}"
                    )));
                }
            }
            AddressChoice::None => {
                stored.insert("ipv4.address".into(), "none".into());
            }
        }
        match cfg.ipv6 {
            AddressChoice::Auto => {
                let chosen = match previous.and_then(Managed::ipv6) {
                    Some(c) => c,
                    None => {
                        let b = random_bytes(5);
                        ipam::ula([b[0], b[1], b[2], b[3], b[4]])
                    }
                };
                cfg.ipv6 = AddressChoice::Cidr(chosen);
                stored.insert("ipv6.address".into(), chosen.to_string());
            }
            AddressChoice::Cidr(c) => {
                if let Some((other, _)) = others6.iter().find(|(_, o)| o.overlaps(c)) {
                    return Err(NetworkError::Invalid(format!(
                        "ipv6.address {c} overlaps the subnet of network \"{other}\""
                    )));
                }
            }
            AddressChoice::None => {
                stored.insert("ipv6.address".into(), "none".into());
            }
        }
        stored
            .entry("ipv4.nat".into())
            .or_insert_with(|| cfg.nat.to_string());
        Ok((stored, cfg))
    }

    /// Create a network: validate, pick addresses, make the bridge, store it.
    pub async fn create(&self, req: NetworksPost) -> Result<(), NetworkError> {
        config::validate_name(&req.name)?;
        if !req.kind.is_empty() && req.kind != "bridge" {
            return Err(ConfigError::BadType(req.kind).into());
        }
        config::parse(&req.config)?;
        let _g = self.lock.lock().await;
        if db::networks::get(&self.db, &req.name).await?.is_some() {
            return Err(NetworkError::AlreadyExists(req.name));
        }
        let n = req.name.clone();
        if !self
            .blocking(move |w| Ok(w.interfaces(None, Some(&n))))
            .await?
            .is_empty()
        {
            return Err(NetworkError::Invalid(format!(
                "an interface named \"{}\" already exists on the host",
                req.name
            )));
        }
        let (stored, _) = self.resolve_config(&req.name, req.config, None).await?;
        let row = NetworkRow {
            name: req.name.clone(),
            description: req.description,
            kind: "bridge".into(),
            config: stored,
            created_at: crate::clock::now_rfc3339(),
        };
        let m = managed(row.clone())?;
        let spec = m.bridge_spec();
        // The intent goes first: a crash after the bridge and before its row leaves a row
        // here, and the next start removes the bridge (see `undo_interrupted_creates`).
        db::intents::begin(&self.db, Kind::NetworkCreate, &row.name).await?;
        let made = self.blocking(move |w| w.ensure_bridge(&spec)).await;
        let stored = match made {
            // The row and the end of the intent, together.
            Ok(()) => self.record_created(&row).await.map_err(|e| match e {
                DbError::Conflict(_) => NetworkError::AlreadyExists(row.name.clone()),
                e => e.into(),
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            let n = row.name.clone();
            match self.blocking(move |w| w.delete_bridge(&n)).await {
                Ok(()) => db::intents::finish(&self.db, Kind::NetworkCreate, &row.name).await?,
                // The intent stays: the next start tries again.
                Err(undo) => {
                    tracing::warn!(network = %row.name, error = %undo, "could not remove the bridge again")
                }
            }
            return Err(e);
        }
        if let Err(e) = self.network_up(&m).await {
            self.network_down(&row.name).await;
            let n = row.name.clone();
            if let Err(undo) = self.blocking(move |w| w.delete_bridge(&n)).await {
                tracing::warn!(network = %row.name, error = %undo, "could not remove the bridge again");
            }
            db::networks::delete(&self.db, &row.name).await?;
            return Err(e);
        }
        tracing::info!(network = %row.name, ipv4 = ?m.ipv4().map(|c| c.to_string()), "network created");
        Ok(())
    }

    /// Apply a PUT (`patch == false`: replace) or PATCH (merge) to a network.
    pub async fn update(
        &self,
        name: &str,
        put: NetworkPut,
        patch: bool,
    ) -> Result<(), NetworkError> {
        let _g = self.lock.lock().await;
        let old = self.managed(name).await?;
        let mut cfg = match (put.config, patch) {
            (Some(c), false) => c,
            (Some(c), true) => {
                let mut merged = old.row.config.clone();
                merged.extend(c);
                merged
            }
            (None, _) => old.row.config.clone(),
        };
        cfg.retain(|_, v| !v.is_empty());
        let (stored, new_cfg) = self.resolve_config(name, cfg, Some(&old)).await?;
        let new = Managed {
            row: NetworkRow {
                config: stored,
                description: put
                    .description
                    .unwrap_or_else(|| old.row.description.clone()),
                ..old.row.clone()
            },
            cfg: new_cfg,
        };
        if new.ipv4() != old.ipv4() || new.ipv6() != old.ipv6() {
            let leases = db::networks::leases(&self.db, name).await?;
            if !leases.is_empty() {
                let mut users: Vec<String> = leases.into_iter().map(|l| l.instance).collect();
                users.dedup();
                return Err(NetworkError::Invalid(format!(
                    "the addresses of network \"{name}\" cannot change while instances hold \
                     leases on it ({}); remove their NICs first",
                    users.join(", ")
                )));
            }
        }
        let spec = new.bridge_spec();
        self.blocking(move |w| w.ensure_bridge(&spec)).await?;
        if let Err(e) = self.network_up(&new).await {
            // Put the old services back; the change is refused.
            if let Err(undo) = self.network_up(&old).await {
                tracing::warn!(network = %name, error = %undo, "could not restore the network's services");
            }
            return Err(e);
        }
        db::networks::update(&self.db, name, &new.row.description, &new.row.config).await?;
        tracing::info!(network = %name, "network updated");
        Ok(())
    }

    /// Delete a network no instance or profile uses: its bridge, then its row.
    pub async fn delete(&self, name: &str) -> Result<(), NetworkError> {
        let _g = self.lock.lock().await;
        self.managed(name).await?;
        let users = self.all_users().await?.remove(name).unwrap_or_default();
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                name: name.to_string(),
                users,
            });
        }
        // The bridge first: a name taken by something that is not our bridge refuses the
        // delete before the network's services are touched.
        let n = name.to_string();
        self.blocking(move |w| w.delete_bridge(&n)).await?;
        self.network_down(name).await;
        db::networks::delete(&self.db, name).await?;
        tracing::info!(network = %name, "network deleted");
        Ok(())
    }

    /// Re-create or adopt the bridge of every managed network (daemon start-up), after
    /// undoing the creates a crash interrupted and removing the service files of networks
    /// that no longer exist.
    pub async fn reconcile(&self) -> Result<(), NetworkError> {
        self.undo_interrupted_creates().await?;
        let rows = db::networks::list(&self.db).await?;
        self.remove_stale_service_dirs(&rows).await;
        for mut row in rows {
            let name = row.name.clone();
            if !row.config.contains_key(config::HWADDR_KEY) {
                // Made before the bridge kept a MAC of its own: choose it now, once.
                let mac = crate::worker::net::format_mac(&random_mac());
                row.config.insert(config::HWADDR_KEY.into(), mac);
                db::networks::update(&self.db, &name, &row.description, &row.config).await?;
            }
            let m = match managed(row) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(network = %name, error = %e, "stored network config is invalid");
                    continue;
                }
            };
            let spec = m.bridge_spec();
            match self.blocking(move |w| w.ensure_bridge(&spec)).await {
                Ok(()) => {
                    tracing::info!(network = %name, "bridge ready");
                    if let Err(e) = self.network_up(&m).await {
                        tracing::warn!(network = %name, error = %e, "could not start the network's services");
                    }
                }
                Err(e) => {
                    tracing::warn!(network = %name, error = %e, "could not set up the bridge");
                    // No bridge, no services: stop a dnsmasq a previous daemon left for it.
                    if let Some(s) = self.services.get()
                        && let Err(e) = dnsmasq::stop_stale(&s.dir.join(&name)).await
                    {
                        tracing::warn!(network = %name, error = %e, "stopping a leftover dnsmasq");
                    }
                }
            }
        }
        Ok(())
    }

    /// Write a new network's row and end its create's intent, in one transaction.
    async fn record_created(&self, row: &NetworkRow) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        db::networks::insert(&mut *tx, row).await?;
        db::intents::finish(&mut *tx, Kind::NetworkCreate, &row.name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every network create that a crash cut off before its row was written: its bridge,
    /// nftables table and dnsmasq go (they were made under this intent; the name was free
    /// on the host when the create began). One whose row got written is only finished.
    async fn undo_interrupted_creates(&self) -> Result<(), NetworkError> {
        for name in db::intents::pending(&self.db, Kind::NetworkCreate).await? {
            if db::networks::get(&self.db, &name).await?.is_some() {
                db::intents::finish(&self.db, Kind::NetworkCreate, &name).await?;
                continue;
            }
            tracing::warn!(network = %name, "undoing a network create that a crash interrupted");
            let n = name.clone();
            if let Err(e) = self.blocking(move |w| w.delete_bridge(&n)).await {
                // Not a bridge any more (someone else's interface now): left alone.
                tracing::warn!(network = %name, error = %e, "the interrupted create's bridge was not removed");
            }
            self.network_down(&name).await;
            db::intents::finish(&self.db, Kind::NetworkCreate, &name).await?;
        }
        Ok(())
    }

    /// dnsmasq directories (and a dnsmasq still serving one) of networks without a record:
    /// a network delete that a crash cut off between its services and its row is redone
    /// from the row, so what is left here belongs to no network.
    async fn remove_stale_service_dirs(&self, rows: &[NetworkRow]) {
        let Some(s) = self.services.get() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&s.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rows.iter().any(|r| r.name == name) {
                continue;
            }
            tracing::info!(network = %name, dir = %e.path().display(), "removing the dnsmasq files of a network that no longer exists");
            if let Err(err) = dnsmasq::stop_stale(&e.path()).await {
                tracing::warn!(network = %name, error = %err, "stopping a leftover dnsmasq");
            }
            let _ = tokio::fs::remove_dir_all(e.path()).await;
        }
    }

    /// On the first start with a default network: create network `name` and give the
    /// default profile an `eth0` on it. Done once (recorded); a failure is retried on the
    /// next start.
    pub async fn ensure_default(&self, name: &str) -> Result<(), NetworkError> {
        const KEY: &str = "default_network";
        if db::networks::setting(&self.db, KEY).await?.is_some() {
            return Ok(());
        }
        if db::networks::get(&self.db, name).await?.is_none() {
            self.create(NetworksPost {
                name: name.to_string(),
                description: "Default ctl network".into(),
                kind: "bridge".into(),
                config: BTreeMap::new(),
            })
            .await?;
        }
        if let Some(mut p) = db::profiles::get(&self.db, "default").await?
            && !p.devices.contains_key("eth0")
        {
            p.devices.insert(
                "eth0".into(),
                [("type", "nic"), ("network", name), ("name", "eth0")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            db::profiles::update(&self.db, &p).await?;
        }
        db::networks::set_setting(&self.db, KEY, name).await?;
        tracing::info!(network = %name, "default network ready");
        Ok(())
    }

    // ----- instance NICs -----

    /// Check the NIC devices of an instance's expanded devices: keys, values, that their
    /// network or parent bridge exists, and that static addresses fit and are free (leases
    /// of `instance` itself do not count). Nothing is changed.
    pub async fn resolve_nics(
        &self,
        instance: &str,
        expanded: &Devices,
    ) -> Result<Vec<ResolvedNic>, NetworkError> {
        let mut out = Vec::new();
        for nic in config::devices(expanded)? {
            let name = nic
                .network
                .clone()
                .or_else(|| nic.parent.clone())
                .unwrap_or_default();
            let managed_net = match db::networks::get(&self.db, &name).await? {
                Some(row) => Some(managed(row)?),
                None => None,
            };
            let target = match (managed_net, &nic.network) {
                (Some(m), _) => {
                    if let Some(ip) = nic.ipv4 {
                        let Some(subnet) = m.ipv4() else {
                            return Err(NetworkError::Invalid(format!(
                                "device \"{}\": network \"{name}\" has no IPv4 subnet for \
                                 ipv4.address {ip}",
                                nic.device
                            )));
                        };
                        let used: HashSet<Ipv4Addr> = db::networks::leases(&self.db, &name)
                            .await?
                            .into_iter()
                            .filter(|l| l.instance != instance)
                            .filter_map(|l| l.address.parse().ok())
                            .collect();
                        ipam::check_static(subnet, ip, &used).map_err(|e| {
                            NetworkError::Invalid(format!("device \"{}\": {e}", nic.device))
                        })?;
                    }
                    config::NicTarget::Network(name)
                }
                (None, Some(_)) => {
                    return Err(NetworkError::Invalid(format!(
                        "device \"{}\": network \"{name}\" not found",
                        nic.device
                    )));
                }
                (None, None) => {
                    let n = name.clone();
                    if !self.blocking(move |w| Ok(w.bridge_exists(&n))).await? {
                        return Err(NetworkError::Invalid(format!(
                            "device \"{}\": parent bridge \"{name}\" not found",
                            nic.device
                        )));
                    }
                    if nic.ipv4.is_some() {
                        return Err(NetworkError::Invalid(format!(
                            "device \"{}\": ipv4.address needs a managed network, and \
                             \"{name}\" is not one",
                            nic.device
                        )));
                    }
                    config::NicTarget::Bridge(name)
                }
            };
            out.push(ResolvedNic { nic, target });
        }
        let mut statics = HashSet::new();
        for r in &out {
            if let (config::NicTarget::Network(n), Some(ip)) = (&r.target, r.nic.ipv4)
                && !statics.insert((n.clone(), ip))
            {
                return Err(IpamError::Taken(ip).into());
            }
        }
        Ok(out)
    }

    /// Make the instance's leases match its NICs: release the ones of NICs that are gone,
    /// record static addresses, keep or pick dynamic ones. `config` holds the NICs' MACs.
    pub async fn sync_leases(
        &self,
        instance: &str,
        nics: &[ResolvedNic],
        config: &BTreeMap<String, String>,
    ) -> Result<(), NetworkError> {
        let _g = self.lock.lock().await;
        let existing = db::networks::instance_leases(&self.db, instance).await?;
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let wanted: Vec<(&ResolvedNic, &String)> = nics
            .iter()
            .filter_map(|r| match &r.target {
                config::NicTarget::Network(n) => Some((r, n)),
                config::NicTarget::Bridge(_) => None,
            })
            .collect();
        for l in &existing {
            let keep = wanted
                .iter()
                .any(|(r, n)| r.nic.device == l.device && **n == l.network);
            if !keep {
                db::networks::delete_lease(&self.db, &l.network, instance, &l.device).await?;
                changed.insert(l.network.clone());
            }
        }
        for (r, net) in wanted {
            let m = self.managed(net).await?;
            let Some(subnet) = m.ipv4() else { continue };
            let hwaddr = r
                .nic
                .hwaddr
                .map(|m| crate::worker::net::format_mac(&m))
                .or_else(|| config.get(&hwaddr_key(&r.nic.device)).cloned())
                .unwrap_or_default();
            let current = existing
                .iter()
                .find(|l| l.device == r.nic.device && l.network == *net);
            let address = match (r.nic.ipv4, current) {
                (Some(ip), _) => ip,
                (None, Some(l))
                    if !l.is_static
                        && l.address
                            .parse::<Ipv4Addr>()
                            .is_ok_and(|ip| subnet.check_host(ip).is_ok()) =>
                {
                    l.address.parse().unwrap_or(subnet.addr)
                }
                (None, _) => {
                    let used: HashSet<Ipv4Addr> = db::networks::leases(&self.db, net)
                        .await?
                        .into_iter()
                        .filter(|l| !(l.instance == instance && l.device == r.nic.device))
                        .filter_map(|l| l.address.parse().ok())
                        .collect();
                    ipam::allocate(subnet, &used)?
                }
            };
            let lease = LeaseRow {
                network: net.clone(),
                instance: instance.to_string(),
                device: r.nic.device.clone(),
                address: address.to_string(),
                hwaddr,
                is_static: r.nic.ipv4.is_some(),
            };
            if current != Some(&lease) {
                db::networks::put_lease(&self.db, &lease)
                    .await
                    .map_err(|e| match e {
                        DbError::Conflict(_) => NetworkError::Ipam(IpamError::Taken(address)),
                        e => e.into(),
                    })?;
                changed.insert(net.clone());
            }
        }
        for n in changed {
            self.leases_changed(&n).await;
        }
        Ok(())
    }

    /// The networks an instance holds leases on (to announce their release after it is
    /// deleted: the rows go with the instance's).
    pub async fn instance_networks(&self, instance: &str) -> Result<Vec<String>, NetworkError> {
        let mut n: Vec<String> = db::networks::instance_leases(&self.db, instance)
            .await?
            .into_iter()
            .map(|l| l.network)
            .collect();
        n.dedup();
        Ok(n)
    }

    /// The veth pairs and resolver files of a start. `config` holds the NICs' volatile MACs
    /// and host names; leases exist (see [`Networks::sync_leases`]). Missing bridges of
    /// managed networks are made again.
    pub async fn plan_start(
        &self,
        instance: &str,
        nics: &[ResolvedNic],
        config: &BTreeMap<String, String>,
    ) -> Result<StartPlan, NetworkError> {
        let mut plan = StartPlan::default();
        if nics.is_empty() {
            return Ok(plan);
        }
        let leases = db::networks::instance_leases(&self.db, instance).await?;
        let mut have_v4_route = false;
        let mut have_v6_route = false;
        for r in nics {
            let hwaddr = r
                .nic
                .hwaddr
                .or_else(|| {
                    config
                        .get(&hwaddr_key(&r.nic.device))
                        .and_then(|m| ipam::parse_mac(m))
                })
                .ok_or_else(|| {
                    NetworkError::Internal(format!("device \"{}\" has no MAC", r.nic.device))
                })?;
            let host_name = r
                .nic
                .host_name
                .clone()
                .or_else(|| config.get(&host_name_key(&r.nic.device)).cloned())
                .unwrap_or_else(random_host_name);
            let mut spec = NicSpec {
                device: r.nic.device.clone(),
                bridge: String::new(),
                host_name,
                name: r.nic.name.clone(),
                hwaddr,
                mtu: r.nic.mtu,
                ipv4: None,
                ipv6: None,
                gateway4: None,
                gateway6: None,
            };
            match &r.target {
                config::NicTarget::Bridge(b) => spec.bridge = b.clone(),
                config::NicTarget::Network(n) => {
                    let m = self.managed(n).await?;
                    spec.bridge = n.clone();
                    spec.mtu = spec.mtu.or(m.cfg.mtu);
                    if !self.worker.bridge_exists(n) {
                        let b = m.bridge_spec();
                        self.blocking(move |w| w.ensure_bridge(&b)).await?;
                        self.network_up(&m).await?;
                    }
                    if let Some(subnet) = m.ipv4() {
                        let lease = leases
                            .iter()
                            .find(|l| l.device == r.nic.device && l.network == *n)
                            .and_then(|l| l.address.parse::<Ipv4Addr>().ok())
                            .ok_or_else(|| {
                                NetworkError::Internal(format!(
                                    "device \"{}\" has no lease on \"{n}\"",
                                    r.nic.device
                                ))
                            })?;
                        spec.ipv4 = Some((lease, subnet.prefix));
                        if !have_v4_route {
                            spec.gateway4 = Some(subnet.addr);
                            have_v4_route = true;
                            plan.resolver.get_or_insert(ResolverSpec {
                                hostname: instance.to_string(),
                                nameserver: Some(IpAddr::V4(subnet.addr)),
                                search: m.cfg.domain.clone(),
                            });
                        }
                    }
                    if let Some(net6) = m.ipv6() {
                        spec.ipv6 = Some((net6.eui64(hwaddr), net6.prefix));
                        if !have_v6_route {
                            spec.gateway6 = Some(net6.addr);
                            have_v6_route = true;
                        }
                    }
                }
            }
            plan.nics.push(spec);
        }
        if plan.resolver.is_none() {
            plan.resolver = Some(ResolverSpec {
                hostname: instance.to_string(),
                nameserver: None,
                search: String::new(),
            });
        }
        Ok(plan)
    }
}

/// Devices of `own` over those of `profiles` named in `applied`, in order.
pub fn expand(profiles: &[db::ProfileRow], applied: &[String], own: &Devices) -> Devices {
    let layers = applied
        .iter()
        .filter_map(|name| profiles.iter().find(|p| &p.name == name))
        .map(|p| &p.devices)
        .chain(std::iter::once(own));
    config::expand_devices(layers)
}

/// An interface's addresses, Incus-shaped.
pub fn state_addresses(i: &Interface) -> Vec<NetworkStateAddress> {
    i.addresses
        .iter()
        .map(|a| NetworkStateAddress {
            family: if a.address.is_ipv4() { "inet" } else { "inet6" }.into(),
            address: a.address.to_string(),
            netmask: a.prefix.to_string(),
            scope: a.scope.into(),
        })
        .collect()
}

/// An interface's counters, Incus-shaped.
pub fn counters(i: &Interface) -> NetworkStateCounters {
    NetworkStateCounters {
        bytes_received: i.rx_bytes,
        bytes_sent: i.tx_bytes,
        packets_received: i.rx_packets,
        packets_sent: i.tx_packets,
    }
}
