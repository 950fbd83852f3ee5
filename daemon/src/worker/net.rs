//! Every netlink conversation of ctld: bridges, veth pairs, addresses, routes and interface
//! state, over rtnetlink (pinned, used through its re-exports and only here).
//!
//! A netlink socket talks to the network namespace of the thread that created it. Each
//! operation therefore runs on a short-lived dedicated thread with a single-threaded
//! runtime: it opens the host socket first and, for work inside a container, then `setns`es
//! that thread (never a runtime worker of the daemon) into the container's netns and opens a
//! second socket there. The veth peer is created directly inside the container's netns
//! (`IFLA_NET_NS_PID`), already named and with its MAC (it can only be brought up once the
//! pair exists, from inside): moving it afterwards costs
//! ~17 ms, and deleting a veth ~18 ms, so veths are never deleted: they die with the netns.

use super::netns::NetNs;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use serde::{Deserialize, Serialize};

/// Netlink errors, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("interface \"{0}\" not found")]
    NoSuchLink(String),
    /// A network's name is taken on the host by an interface that is not a bridge: it is
    /// never adopted, changed or deleted.
    #[error("interface \"{0}\" exists on the host and is not a bridge: not touching it")]
    NotABridge(String),
    #[error("the netlink thread panicked")]
    Thread,
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

fn io_op(op: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Io { op, source }
}

/// A bridge as ctld wants it: created (or adopted), up, with exactly these global addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub mtu: Option<u32>,
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Set explicitly, so the kernel never changes it as ports come and go.
    pub hwaddr: Option<[u8; 6]>,
}

/// One NIC of a container: a veth pair, host end on `bridge`, peer `name` inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The instance's device name (`eth0` in `devices`).
    pub device: String,
    pub bridge: String,
    /// The host end (≤ 15 bytes).
    pub host_name: String,
    /// The interface name inside the container.
    pub name: String,
    pub hwaddr: [u8; 6],
    pub mtu: Option<u32>,
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Default routes via these gateways (only one NIC of a container carries them).
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix: u8,
    /// `global`, `link`, `local`...
    pub scope: &'static str,
}

/// What netlink says about one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub hwaddr: String,
    pub up: bool,
    pub loopback: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub addresses: Vec<InterfaceAddress>,
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Run `f` with a netlink handle on the host and, when `netns` is given, a second one inside
/// that network namespace, on a dedicated thread. The namespace comes as a descriptor the
/// caller opened and checked (see [`NetNs::of_process`]), never as a PID that could have
/// been reused meanwhile.
fn with_netlink<T, F, Fut>(netns: Option<&NetNs>, host_too: bool, f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(Option<Handle>, Option<Handle>) -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(io_op("start the netlink runtime"))?;
            rt.block_on(async move {
                let host = if host_too {
                    let (conn, handle, _) =
                        rtnetlink::new_connection().map_err(io_op("open a netlink socket"))?;
                    tokio::spawn(conn);
                    Some(handle)
                } else {
                    None
                };
                let inner = match netns {
                    None => None,
                    Some(ns) => {
                        // This thread only: it ends with this call.
                        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| NetError::Io {
                                op: "enter the container's netns".into(),
                                source: e.into(),
                            },
                        )?;
                        let (conn, handle, _) = rtnetlink::new_connection()
                            .map_err(io_op("open a netlink socket in the container"))?;
                        tokio::spawn(conn);
                        Some(handle)
                    }
                };
                f(host, inner).await
            })
        })
        .join()
        .map_err(|_| NetError::Thread)?
    })
}

fn handle(h: Option<Handle>) -> Result<Handle, NetError> {
    h.ok_or(NetError::Thread)
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-errno))
}

/// The index of interface `name`, if it exists.
async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("look up {name}"))(e)),
    }
}

/// Global addresses of interface `index` (link-local ones are the kernel's).
async fn global_addresses(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, NetError> {
    let mut out = Vec::new();
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(m) = addrs.try_next().await.map_err(nl("list addresses"))? {
        if m.header.scope != AddressScope::Universe {
            continue;
        }
        if let Some(a) = address_of(&m.attributes) {
            out.push((a, m.header.prefix_len));
        }
    }
    Ok(out)
}

fn address_of(attrs: &[AddressAttribute]) -> Option<IpAddr> {
    let local = attrs.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        attrs.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

async fn add_address(h: &Handle, index: u32, ip: IpAddr, prefix: u8) -> Result<(), NetError> {
    let mut req = h.address().add(index, ip, prefix);
    if ip.is_ipv6() {
        // No duplicate address detection: the address is usable at once, and ctl owns the
        // subnet.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        r => r.map_err(nl(format!("add address {ip}/{prefix}"))),
    }
}

/// Create the bridge (or adopt the existing one), set its MTU, bring it up and give it
/// exactly the addresses of `spec`.
pub fn ensure_bridge(spec: &BridgeSpec) -> Result<(), NetError> {
    with_netlink(None, true, |host, _| async move {
        let h = handle(host)?;
        let index = match link_index(&h, &spec.name).await? {
            Some(_) if !is_bridge(&spec.name) => {
                return Err(NetError::NotABridge(spec.name.clone()));
            }
            Some(i) => i,
            None => {
                match h
                    .link()
                    .add(LinkBridge::new(&spec.name).build())
                    .execute()
                    .await
                {
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    r => r.map_err(nl(format!("create bridge {}", spec.name)))?,
                }
                link_index(&h, &spec.name)
                    .await?
                    .ok_or_else(|| NetError::NoSuchLink(spec.name.clone()))?
            }
        };
        let mut set = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = spec.mtu {
            set = set.mtu(mtu);
        }
        if let Some(mac) = spec.hwaddr {
            set = set.address(mac.to_vec());
        }
        h.link()
            .set(set.build())
            .execute()
            .await
            .map_err(nl(format!("set up bridge {}", spec.name)))?;
        let want: Vec<(IpAddr, u8)> = spec
            .ipv4
            .map(|(a, p)| (IpAddr::V4(a), p))
            .into_iter()
            .chain(spec.ipv6.map(|(a, p)| (IpAddr::V6(a), p)))
            .collect();
        let have = global_addresses(&h, index).await?;
        for (ip, prefix) in &have {
            if !want.contains(&(*ip, *prefix)) {
                let mut msgs = h
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .set_address_filter(*ip)
                    .execute();
                while let Some(m) = msgs.try_next().await.map_err(nl("list addresses"))? {
                    h.address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(nl(format!("remove address {ip}/{prefix}")))?;
                }
            }
        }
        for (ip, prefix) in want {
            if !have.contains(&(ip, prefix)) {
                add_address(&h, index, ip, prefix).await?;
            }
        }
        Ok(())
    })
}

/// Delete bridge `name`; nothing to do if it does not exist.
pub fn delete_bridge(name: &str) -> Result<(), NetError> {
    with_netlink(None, true, |host, _| async move {
        let h = handle(host)?;
        let Some(index) = link_index(&h, name).await? else {
            return Ok(());
        };
        if !is_bridge(name) {
            return Err(NetError::NotABridge(name.to_string()));
        }
        match h.link().del(index).execute().await {
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            r => r.map_err(nl(format!("delete bridge {name}"))),
        }
    })
}

/// Every IPv4 subnet the host routes or has an address in (default routes left out), so a
/// new network can avoid them.
pub fn host_ipv4_subnets() -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
    with_netlink(None, true, |host, _| async move {
        let h = handle(host)?;
        let mut out = Vec::new();
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = routes.try_next().await.map_err(nl("list routes"))? {
            let prefix = r.header.destination_prefix_length;
            if prefix == 0 {
                continue;
            }
            let dest = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = dest {
                out.push((ip, prefix));
            }
        }
        let mut addrs = h.address().get().execute();
        while let Some(m) = addrs.try_next().await.map_err(nl("list addresses"))? {
            if let Some(IpAddr::V4(ip)) = address_of(&m.attributes) {
                out.push((ip, m.header.prefix_len));
            }
        }
        Ok(out)
    })
}

/// Create every NIC of the container whose network namespace is `ns`: the veth pair with
/// its peer made inside that namespace (named, MAC set, up), the host end enslaved to its
/// bridge and up; then inside: the addresses and the default routes. On failure the caller kills
/// the init: whatever was made here goes with its netns.
pub fn setup_nics(ns: &NetNs, nics: &[NicSpec]) -> Result<(), NetError> {
    use std::os::fd::{AsFd, AsRawFd};
    // The peer is created straight into the namespace, named by its descriptor.
    let ns_fd = ns.as_fd().as_raw_fd();
    with_netlink(Some(ns), true, |host, inner| async move {
        let h = handle(host)?;
        let c = handle(inner)?;
        for nic in nics {
            let bridge = link_index(&h, &nic.bridge)
                .await?
                .ok_or_else(|| NetError::NoSuchLink(nic.bridge.clone()))?;
            // Not up yet: a veth cannot open before its pair is linked (ENOTCONN).
            let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(nic.name.clone())
                .address(nic.hwaddr.to_vec())
                .setns_by_fd(ns_fd);
            let mut veth = LinkVeth::new(&nic.host_name, &nic.name)
                .controller(bridge)
                .up();
            if let Some(mtu) = nic.mtu {
                peer = peer.mtu(mtu);
                veth = veth.mtu(mtu);
            }
            let msg: LinkMessage = veth
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .build();
            h.link().add(msg).execute().await.map_err(nl(format!(
                "create veth {} (peer {} in the container)",
                nic.host_name, nic.name
            )))?;
        }
        for nic in nics {
            let index = link_index(&c, &nic.name)
                .await?
                .ok_or_else(|| NetError::NoSuchLink(nic.name.clone()))?;
            c.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl(format!("bring up {}", nic.name)))?;
            if let Some((ip, prefix)) = nic.ipv4 {
                add_address(&c, index, IpAddr::V4(ip), prefix).await?;
            }
            if let Some((ip, prefix)) = nic.ipv6 {
                add_address(&c, index, IpAddr::V6(ip), prefix).await?;
            }
            if let Some(gw) = nic.gateway4 {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                c.route()
                    .add(route)
                    .execute()
                    .await
                    .map_err(nl(format!("default route via {gw}")))?;
            }
            if let Some(gw) = nic.gateway6 {
                let route = RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(gw)
                    .output_interface(index)
                    .build();
                c.route()
                    .add(route)
                    .execute()
                    .await
                    .map_err(nl(format!("default route via {gw}")))?;
            }
        }
        Ok(())
    })
}

/// Remove interfaces `names` from the network namespace `ns` (NIC hot-unplug); the veth
/// peer on the host goes with each. A name that is not there is fine.
pub fn remove_nics(ns: &NetNs, names: &[String]) -> Result<(), NetError> {
    with_netlink(Some(ns), false, |_, inner| async move {
        let c = handle(inner)?;
        for name in names {
            let Some(index) = link_index(&c, name).await? else {
                continue;
            };
            match c.link().del(index).execute().await {
                Err(e) if is_errno(&e, libc::ENODEV) => {}
                r => r.map_err(nl(format!("remove {name} from the container")))?,
            }
        }
        Ok(())
    })
}

/// The interfaces of the network namespace `ns` (`None`: the host's), optionally only
/// the one named `only`.
pub fn interfaces(ns: Option<&NetNs>, only: Option<&str>) -> Result<Vec<Interface>, NetError> {
    with_netlink(ns, ns.is_none(), |host, inner| async move {
        dump_interfaces(&handle(inner.or(host))?, only).await
    })
}

/// The interfaces of many containers' network namespaces at once, for listings: one
/// thread and one runtime visit each namespace in turn, instead of a thread per container.
/// A container that went away (`None`) gets an empty list.
pub fn interfaces_of_many(namespaces: Vec<Option<NetNs>>) -> Vec<Vec<Interface>> {
    let visit = move || -> Vec<Vec<Interface>> {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return vec![Vec::new(); namespaces.len()];
        };
        rt.block_on(async move {
            let mut out = Vec::with_capacity(namespaces.len());
            for ns in namespaces {
                let found = async {
                    let ns = ns.ok_or(NetError::Thread)?;
                    // This thread only: it ends with this call.
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                        NetError::Io {
                            op: "enter a container's netns".into(),
                            source: e.into(),
                        }
                    })?;
                    let (conn, h, _) = rtnetlink::new_connection()
                        .map_err(io_op("open a netlink socket in the container"))?;
                    let conn = tokio::spawn(conn);
                    let found = dump_interfaces(&h, None).await;
                    drop(h);
                    conn.abort();
                    found
                }
                .await;
                out.push(found.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "listing a container's interfaces failed");
                    Vec::new()
                }));
            }
            out
        })
    };
    std::thread::scope(|s| s.spawn(visit).join().unwrap_or_default())
}

/// Links (or only `only`) with their addresses, through `h`.
async fn dump_interfaces(h: &Handle, only: Option<&str>) -> Result<Vec<Interface>, NetError> {
    let mut out: Vec<Interface> = Vec::new();
    let mut links = h.link().get();
    if let Some(name) = only {
        links = links.match_name(name.to_string());
    }
    let mut links = links.execute();
    loop {
        let next = match links.try_next().await {
            Err(e) if only.is_some() && is_errno(&e, libc::ENODEV) => None,
            r => r.map_err(nl("list interfaces"))?,
        };
        let Some(m) = next else { break };
        out.push(interface_of(&m));
    }
    if out.is_empty() {
        return Ok(out);
    }
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await.map_err(nl("list addresses"))? {
        let Some(iface) = out.iter_mut().find(|i| i.index == m.header.index) else {
            continue;
        };
        if let Some(address) = address_of(&m.attributes) {
            iface.addresses.push(InterfaceAddress {
                address,
                prefix: m.header.prefix_len,
                scope: match m.header.scope {
                    AddressScope::Universe => "global",
                    AddressScope::Link => "link",
                    AddressScope::Host => "local",
                    AddressScope::Site => "site",
                    _ => "unknown",
                },
            });
        }
    }
    Ok(out)
}

fn interface_of(m: &LinkMessage) -> Interface {
    // Up is the administrative flag, as LXD and Incus report it: a bridge without ports is
    // "up" (its carrier is not).
    let mut i = Interface {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.link_layer_type == LinkLayerType::Loopback,
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => i.name = n.clone(),
            LinkAttribute::Mtu(v) => i.mtu = *v,
            LinkAttribute::Address(mac) => i.hwaddr = format_mac(mac),
            LinkAttribute::Stats64(s) => {
                i.rx_bytes = s.rx_bytes;
                i.tx_bytes = s.tx_bytes;
                i.rx_packets = s.rx_packets;
                i.tx_packets = s.tx_packets;
            }
            _ => {}
        }
    }
    i
}

/// The name resolution files a container gets when its image has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSpec {
    /// Added to `/etc/hosts` when no line names it.
    pub hostname: String,
    /// `nameserver` of a written `/etc/resolv.conf` (none: the file is left alone).
    pub nameserver: Option<IpAddr>,
    /// `search` domain of a written `/etc/resolv.conf`.
    pub search: String,
}

/// Write `/etc/resolv.conf` when the image has none (or an empty one) and add the hostname
/// to `/etc/hosts` when it is missing, inside the container's root (paths resolved inside
/// it, never following anything out).
pub fn write_resolver(root: &super::files::RootDir, spec: &ResolverSpec) -> Result<(), NetError> {
    use super::files::{self, FileContent, InnerPath, WriteOptions};
    use std::io::{Read, Write};
    let file_err = |op: &str| {
        let op = op.to_string();
        move |e: files::FileError| NetError::Io {
            op: op.clone(),
            source: io::Error::other(e.to_string()),
        }
    };
    // The content of a regular file, `Some("")` when missing, `None` for anything else. The
    // container owns these files: one larger than a resolver file can be (or not text) is
    // left alone, never read whole.
    const MAX: u64 = 64 * 1024;
    let current = |path: &InnerPath| -> Result<Option<String>, NetError> {
        match files::read(root, path) {
            Ok((_, FileContent::File(f))) => {
                let mut bytes = Vec::new();
                f.take(MAX + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io_op(format!("read {}", path.as_str())))?;
                if bytes.len() as u64 > MAX {
                    tracing::info!(
                        path = path.as_str(),
                        "larger than a resolver file: left alone"
                    );
                    return Ok(None);
                }
                Ok(String::from_utf8(bytes).ok())
            }
            Ok(_) => Ok(None),
            Err(files::FileError::NotFound { .. }) => Ok(Some(String::new())),
            Err(e) => Err(file_err("read")(e)),
        }
    };
    let write = |path: &InnerPath, text: &str, append: bool| -> Result<(), NetError> {
        let opts = WriteOptions {
            create: files::Perms {
                mode: Some(0o644),
                ..Default::default()
            },
            append,
            ..Default::default()
        };
        let mut f = files::open_for_write(root, path, &opts)
            .map_err(file_err(&format!("write {}", path.as_str())))?;
        f.write_all(text.as_bytes())
            .map_err(io_op(format!("write {}", path.as_str())))
    };
    let bad = |e: files::FileError| file_err("path")(e);
    if let Some(ns) = spec.nameserver {
        let path = InnerPath::parse("/etc/resolv.conf").map_err(bad)?;
        if current(&path)?.is_some_and(|t| t.trim().is_empty()) {
            let mut text = format!("nameserver {ns}\n");
            if !spec.search.is_empty() {
                text.push_str(&format!("search {}\n", spec.search));
            }
            write(&path, &text, false)?;
        }
    }
    let hosts = InnerPath::parse("/etc/hosts").map_err(bad)?;
    if let Some(text) = current(&hosts)? {
        let named = text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split_whitespace().skip(1).any(|n| n == spec.hostname)
        });
        if !named {
            let mut add = String::new();
            if !text.is_empty() && !text.ends_with('\n') {
                add.push('\n');
            }
            add.push_str(&format!("127.0.1.1\t{}\n", spec.hostname));
            write(&hosts, &add, true)?;
        }
    }
    Ok(())
}

/// Whether interface `name` exists on the host and is a bridge.
pub fn is_bridge(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && name != "."
        && name != ".."
        && std::path::Path::new("/sys/class/net")
            .join(name)
            .join("bridge")
            .is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_format_like_ip_link() {
        assert_eq!(
            format_mac(&[0x00, 0x16, 0x3e, 0x0a, 0xff, 0x01]),
            "00:16:3e:0a:ff:01"
        );
    }

    #[test]
    fn resolver_files_are_filled_in_once_and_never_overwritten()
    -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let etc = tmp.path().join("etc");
        std::fs::create_dir(&etc)?;
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost")?;
        let root = super::super::files::RootDir::open(tmp.path())?;
        let spec = ResolverSpec {
            hostname: "c1".into(),
            nameserver: Some("10.0.3.1".parse()?),
            search: "ctl".into(),
        };
        write_resolver(&root, &spec)?;
        write_resolver(&root, &spec)?;
        assert_eq!(
            std::fs::read_to_string(etc.join("resolv.conf"))?,
            "nameserver 10.0.3.1\nsearch ctl\n"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("hosts"))?,
            "127.0.0.1 localhost\n127.0.1.1\tc1\n"
        );
        // An image's own resolver config stays as it is, a symlink too.
        std::fs::write(etc.join("resolv.conf"), "nameserver 192.0.2.53\n")?;
        write_resolver(&root, &spec)?;
        assert_eq!(
            std::fs::read_to_string(etc.join("resolv.conf"))?,
            "nameserver 192.0.2.53\n"
        );
        std::fs::remove_file(etc.join("resolv.conf"))?;
        std::os::unix::fs::symlink("../run/resolv.conf", etc.join("resolv.conf"))?;
        write_resolver(&root, &spec)?;
        assert!(!tmp.path().join("run").exists());
        // A huge (sparse) hosts file is left alone, not read into memory.
        let big = std::fs::File::create(etc.join("hosts"))?;
        big.set_len(1 << 34)?;
        write_resolver(&root, &spec)?;
        assert_eq!(std::fs::metadata(etc.join("hosts"))?.len(), 1 << 34);
        Ok(())
    }

    #[test]
    fn bridge_check_refuses_paths() {
        assert!(!is_bridge("../../etc"));
        assert!(!is_bridge(""));
        assert!(!is_bridge("lo"));
    }
}
