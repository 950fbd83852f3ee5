//! Managed networks: what a bridge network gives its containers besides the link itself.
//!
//! - [`dnsmasq`]: DHCP (static leases) and DNS (`<name>.<domain>`) per bridge, supervised.
//! - [`nft`]: NAT and forwarding rules, one nftables table per network, and the IP
//!   forwarding sysctls.
//! - [`proxy`]: `proxy` devices, a userspace port forward from the host into a container's
//!   network namespace.

pub mod dnsmasq;
pub mod nft;
pub mod proxy;
#[cfg(test)]
mod testnet;
