//! Managed networks: what a bridge network gives its containers besides the link itself.
//!
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

pub mod dnsmasq;
pub mod nft;
pub mod proxy;
#[cfg(test)]
mod testnet;
