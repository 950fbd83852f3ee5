//! NAT and forwarding for managed networks, with nftables; and the IP forwarding sysctls.
//!
//! **One table per network**, `table inet ctl_<network>`, owned by ctld: deleting a network
//! deletes exactly its table and nothing else, and [`list_ctl_tables`] finds leaks. It holds
//!
//! - `postrouting` (nat, hook postrouting, priority srcnat): `ip saddr <subnet> ip daddr !=
//!   <subnet> masquerade` when `ipv4.nat` is on, and the same for IPv6 with `ipv6.nat`;
//! - `forward` (filter, hook forward, priority filter, policy accept): accept what enters or
//!   leaves the bridge;
//! - `input` (filter, hook input, priority filter, policy accept): accept DNS (udp/tcp 53),
//!   DHCP (udp 67) and, with IPv6, DHCPv6 (udp 547) arriving on the bridge.
//!
//! The accept rules matter on hosts whose own tables only accept listed traffic in chains
//! of the same hooks and priority; they never drop anything themselves. Port forwards are
//! not here: `proxy` devices are a userspace proxy ([`super::proxy`]), so no DNAT.
//!
//! [`apply_network`] replaces the whole table in one atomic `nft` transaction (add table,
//! delete table, add table and its contents), so applying twice equals applying once and a
//! changed configuration never leaves old rules behind. [`remove_network`] deletes the table
//! the same way (add, then delete), so removing a missing table succeeds.
//!
//! **Library choice**: the `nftables` crate (0.6, MIT/Apache-2.0, maintained by the
//! nftables-rs project): a typed model of nftables' JSON schema, applied and read through
//! `nft -j` (Debian package `nftables`). nftables has no stable kernel interface other than
//! its netlink messages (which `rustables` wraps, but under GPL-3, and with far more
//! surface) and `libnftables`' JSON API, which is exactly what `nft -j` exposes. The crate
//! builds the same documents we would otherwise write by hand, and parses `nft -j list`
//! output for [`list_ctl_tables`]. Its helpers run `nft` without capturing its stderr, so
//! an `nft` error message reaches ctld's stderr rather than [`NftError`].
//!
//! All functions here block while `nft` runs (a few milliseconds): call them from
//! `spawn_blocking` in async code.
//!
//! **Forwarding**: routing between the bridge and the host's uplink needs
//! `net.ipv4.ip_forward=1` (and `net.ipv6.conf.all.forwarding=1` for IPv6). IPv4 forwarding
//! is decided by the *input* interface, so per-interface forwarding on the bridge alone
//! would forward containers' packets out but drop the replies arriving on the uplink: the
//! global switch is needed, as LXD and Incus set it. [`enable_forwarding`] turns it on only
//! when a network needs it, and nothing ever turns it off (the host may have had it on
//! before ctld, and other software may rely on it). Before enabling IPv6 forwarding it sets
//! `accept_ra=2` on interfaces that had `accept_ra=1`, so the host keeps learning its own
//! routes from router advertisements.

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use nftables::batch::Batch;
use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem,
};
use nftables::helper::{self, NftablesError};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// Prefix of every table ctld owns.
pub const TABLE_PREFIX: &str = "ctl_";

/// Errors from nftables and the forwarding sysctls.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("invalid {what} {value:?} for nftables rules")]
    Invalid { what: &'static str, value: String },
    #[error("nftables table {table}: {source}")]
    Nft {
        table: String,
        #[source]
        source: NftablesError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one network needs from the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRules {
    /// The network's name (the table is `ctl_<network>`).
    pub network: String,
    /// Its bridge interface.
    pub bridge: String,
    /// The IPv4 subnet (any address in it, and the prefix length).
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Masquerade IPv4 traffic leaving the subnet (`ipv4.nat`).
    pub ipv4_nat: bool,
    /// The IPv6 subnet.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Masquerade IPv6 traffic leaving the subnet (`ipv6.nat`).
    pub ipv6_nat: bool,
}

/// The table that holds `network`'s rules.
pub fn table_name(network: &str) -> String {
    format!("{TABLE_PREFIX}{network}")
}

fn valid_network_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '"')
}

impl NetRules {
    fn validate(&self) -> Result<(), NftError> {
        if !valid_network_name(&self.network) {
            return Err(NftError::Invalid {
                what: "network name",
                value: self.network.clone(),
            });
        }
        if !valid_interface_name(&self.bridge) {
            return Err(NftError::Invalid {
                what: "bridge name",
                value: self.bridge.clone(),
            });
        }
        if let Some((_, p)) = self.ipv4
            && p > 32
        {
            return Err(NftError::Invalid {
                what: "IPv4 prefix length",
                value: p.to_string(),
            });
        }
        if let Some((_, p)) = self.ipv6
            && p > 128
        {
            return Err(NftError::Invalid {
                what: "IPv6 prefix length",
                value: p.to_string(),
            });
        }
        Ok(())
    }
}

/// `addr/prefix` with the host bits cleared.
fn subnet(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn prefix(addr: IpAddr, len: u8) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(
            subnet(addr, len).to_string(),
        ))),
        len: u32::from(len),
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn interface(key: MetaKey, name: &str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Meta(Meta { key })),
        Operator::EQ,
        Expression::String(Cow::Owned(name.to_string())),
    )
}

fn ports(list: &[u32]) -> Expression<'static> {
    match list {
        [one] => Expression::Number(*one),
        many => Expression::Named(NamedExpression::Set(
            many.iter()
                .map(|p| SetItem::Element(Expression::Number(*p)))
                .collect(),
        )),
    }
}

/// The nftables document that (re)creates `rules`' table: add, delete, add the table (so
/// it is replaced whether or not it existed), then its chains and rules. Pure.
pub fn ruleset(rules: &NetRules) -> Result<Nftables<'static>, NftError> {
    rules.validate()?;
    let table: Cow<'static, str> = Cow::Owned(table_name(&rules.network));
    let comment: Cow<'static, str> = Cow::Owned(format!("ctl network {}", rules.network));
    let mut batch = Batch::new();
    let t = || {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: table.clone(),
            handle: None,
        })
    };
    batch.add(t());
    batch.delete(t());
    batch.add(t());

    let chain = |name: &'static str, ty: NfChainType, hook: NfHook, prio: i32| {
        NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: table.clone(),
            name: Cow::Borrowed(name),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        })
    };
    let rule = |chain: &'static str, expr: Vec<Statement<'static>>| {
        NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: table.clone(),
            chain: Cow::Borrowed(chain),
            expr: Cow::Owned(expr),
            comment: Some(comment.clone()),
            ..Rule::default()
        })
    };

    // NAT: priority 100 is srcnat.
    let nat: Vec<(IpAddr, u8, &'static str)> = [
        rules
            .ipv4
            .filter(|_| rules.ipv4_nat)
            .map(|(a, p)| (IpAddr::V4(a), p, "ip")),
        rules
            .ipv6
            .filter(|_| rules.ipv6_nat)
            .map(|(a, p)| (IpAddr::V6(a), p, "ip6")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !nat.is_empty() {
        batch.add(chain(
            "postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            100,
        ));
        for (addr, len, proto) in nat {
            batch.add(rule(
                "postrouting",
                vec![
                    matches(payload(proto, "saddr"), Operator::EQ, prefix(addr, len)),
                    matches(payload(proto, "daddr"), Operator::NEQ, prefix(addr, len)),
                    Statement::Masquerade(None),
                ],
            ));
        }
    }

    batch.add(chain("forward", NfChainType::Filter, NfHook::Forward, 0));
    for key in [MetaKey::Iifname, MetaKey::Oifname] {
        batch.add(rule(
            "forward",
            vec![interface(key, &rules.bridge), Statement::Accept(None)],
        ));
    }

    batch.add(chain("input", NfChainType::Filter, NfHook::Input, 0));
    let mut udp = vec![53, 67];
    if rules.ipv6.is_some() {
        udp.push(547);
    }
    for (proto, list) in [("udp", udp), ("tcp", vec![53])] {
        batch.add(rule(
            "input",
            vec![
                interface(MetaKey::Iifname, &rules.bridge),
                matches(payload(proto, "dport"), Operator::EQ, ports(&list)),
                Statement::Accept(None),
            ],
        ));
    }
    Ok(batch.to_nftables())
}

/// The `nft` binary: the usual Debian path, else whatever `PATH` finds.
fn nft_program() -> PathBuf {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nft"))
}

/// Create or replace the table of `rules.network`, atomically. Call when a network is
/// created, when its configuration changes, and at daemon start-up for every network.
pub fn apply_network(rules: &NetRules) -> Result<(), NftError> {
    let doc = ruleset(rules)?;
    let nft = nft_program();
    helper::apply_ruleset_with_args(&doc, Some(&nft), helper::DEFAULT_ARGS).map_err(|source| {
        NftError::Nft {
            table: table_name(&rules.network),
            source,
        }
    })?;
    tracing::info!(network = %rules.network, nat4 = rules.ipv4_nat, nat6 = rules.ipv6_nat, "nftables rules applied");
    Ok(())
}

/// Delete the table of `network`; succeeds if there is none. Call when a network is deleted.
pub fn remove_network(network: &str) -> Result<(), NftError> {
    if !valid_network_name(network) {
        return Err(NftError::Invalid {
            what: "network name",
            value: network.to_string(),
        });
    }
    let mut batch = Batch::new();
    let t = || {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: Cow::Owned(table_name(network)),
            handle: None,
        })
    };
    batch.add(t());
    batch.delete(t());
    let nft = nft_program();
    helper::apply_ruleset_with_args(&batch.to_nftables(), Some(&nft), helper::DEFAULT_ARGS)
        .map_err(|source| NftError::Nft {
            table: table_name(network),
            source,
        })?;
    tracing::info!(network, "nftables rules removed");
    Ok(())
}

/// Names of the `inet` tables in `doc` that ctld owns (prefix [`TABLE_PREFIX`]). Pure.
pub fn ctl_tables(doc: &Nftables<'_>) -> Vec<String> {
    doc.objects
        .iter()
        .filter_map(|o| match o {
            NfObject::ListObject(NfListObject::Table(t))
                if t.family == NfFamily::INet && t.name.starts_with(TABLE_PREFIX) =>
            {
                Some(t.name.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Every table ctld owns on this host (`ctl_<network>`), for start-up cleanup of networks
/// deleted while the daemon was down and for leak checks.
pub fn list_ctl_tables() -> Result<Vec<String>, NftError> {
    let nft = nft_program();
    let doc = helper::get_current_ruleset_with_args(Some(&nft), ["list", "tables", "inet"])
        .map_err(|source| NftError::Nft {
            table: format!("{TABLE_PREFIX}*"),
            source,
        })?;
    Ok(ctl_tables(&doc))
}

/// What [`enable_forwarding`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardingChange {
    /// IPv4 forwarding was off and is now on.
    pub ipv4: bool,
    /// IPv6 forwarding was off and is now on.
    pub ipv6: bool,
}

fn read_flag(path: &Path) -> Result<String, NftError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| NftError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn write_flag(path: &Path, value: &str) -> Result<(), NftError> {
    std::fs::write(path, value).map_err(|source| NftError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Turn on IPv4 and/or IPv6 forwarding under `proc_sys_net` (`/proc/sys/net` on a real
/// host; a temp dir in tests) if it is off. Never turns anything off. Call when a network
/// with addresses of that family comes up.
pub fn enable_forwarding(
    proc_sys_net: &Path,
    ipv4: bool,
    ipv6: bool,
) -> Result<ForwardingChange, NftError> {
    let mut change = ForwardingChange::default();
    if ipv4 {
        let path = proc_sys_net.join("ipv4/ip_forward");
        if read_flag(&path)? != "1" {
            write_flag(&path, "1")?;
            change.ipv4 = true;
            tracing::info!("enabled IPv4 forwarding (net.ipv4.ip_forward=1)");
        }
    }
    if ipv6 {
        let conf = proc_sys_net.join("ipv6/conf");
        let all = conf.join("all/forwarding");
        if read_flag(&all)? != "1" {
            // With forwarding on, accept_ra=1 stops accepting router advertisements; 2
            // keeps accepting them.
            let entries = std::fs::read_dir(&conf).map_err(|source| NftError::Io {
                path: conf.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name == "all" || name == "default" || name == "lo" {
                    continue;
                }
                let accept_ra = entry.path().join("accept_ra");
                if read_flag(&accept_ra).is_ok_and(|v| v == "1") {
                    write_flag(&accept_ra, "2")?;
                }
            }
            write_flag(&all, "1")?;
            change.ipv6 = true;
            tracing::info!("enabled IPv6 forwarding (net.ipv6.conf.all.forwarding=1)");
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests;
