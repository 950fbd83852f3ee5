//! Address arithmetic and allocation, pure: CIDR parsing, overlap, free subnets, the next
//! free address of a subnet, MACs and ULA prefixes. Randomness comes in as bytes, so every
//! choice here is reproducible in a test.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Allocation errors (all the client's: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR \"{0}\": expected ADDRESS/PREFIX")]
    BadCidr(String),
    #[error("\"{0}\" is not an IPv4 address")]
    BadAddress(String),
    #[error("address {address} is not inside {subnet}")]
    OutsideSubnet { address: Ipv4Addr, subnet: String },
    #[error("address {address} is reserved on {subnet} (network, gateway or broadcast)")]
    Reserved { address: Ipv4Addr, subnet: String },
    #[error("address {0} is already in use")]
    Taken(Ipv4Addr),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("no free private /24 found that collides with no host route or network")]
    NoFreeSubnet,
}

/// An IPv4 address with its prefix length: the gateway (host) address of a network, as
/// `ipv4.address` writes it (`10.0.3.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parse `A.B.C.D/N` (N in 1..=30 for a network that can hold hosts, unless `any`).
    pub fn parse(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies inside this subnet.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Ipv4Cidr) -> bool {
        let common = Ipv4Cidr {
            addr: self.addr,
            prefix: self.prefix.min(other.prefix),
        };
        common.contains(other.addr)
    }

    /// Whether `ip` may be given to a host: inside, not the network, broadcast or gateway.
    pub fn check_host(self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.contains(ip) {
            return Err(IpamError::OutsideSubnet {
                address: ip,
                subnet: self.subnet_string(),
            });
        }
        if ip == self.addr || (self.prefix < 31 && (ip == self.network() || ip == self.broadcast()))
        {
            return Err(IpamError::Reserved {
                address: ip,
                subnet: self.subnet_string(),
            });
        }
        Ok(())
    }

    /// `10.0.3.0/24`.
    pub fn subnet_string(self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv6 address with its prefix length (`fd42:1:2:3::1/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Cidr {
    /// Parse `ADDR/N`.
    pub fn parse(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::BadCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 128 {
            return Err(bad());
        }
        Ok(Ipv6Cidr { addr, prefix })
    }

    fn mask(self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        }
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Ipv6Cidr) -> bool {
        let prefix = self.prefix.min(other.prefix);
        let m = Ipv6Cidr {
            addr: self.addr,
            prefix,
        }
        .mask();
        u128::from(self.addr) & m == u128::from(other.addr) & m
    }

    /// The address of the host with MAC `mac` in this (/64) prefix, by modified EUI-64 as
    /// SLAAC would pick it.
    pub fn eui64(self, mac: [u8; 6]) -> Ipv6Addr {
        let iid = [
            mac[0] ^ 0x02,
            mac[1],
            mac[2],
            0xff,
            0xfe,
            mac[3],
            mac[4],
            mac[5],
        ];
        let net = u128::from(self.addr) & self.mask();
        Ipv6Addr::from(net | u128::from(u64::from_be_bytes(iid)))
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The first candidate `10.X.Y.1/24` (from `candidates`, pairs of random bytes) that
/// overlaps none of `taken`.
pub fn pick_subnet(
    taken: &[Ipv4Cidr],
    candidates: impl IntoIterator<Item = (u8, u8)>,
) -> Result<Ipv4Cidr, IpamError> {
    candidates
        .into_iter()
        .map(|(x, y)| Ipv4Cidr {
            addr: Ipv4Addr::new(10, x, y, 1),
            prefix: 24,
        })
        .find(|c| !taken.iter().any(|t| t.overlaps(*c)))
        .ok_or(IpamError::NoFreeSubnet)
}

/// The lowest free host address of `net` (after its gateway), skipping `used`.
pub fn allocate(net: Ipv4Cidr, used: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
    let first = u32::from(net.network()).saturating_add(1);
    let last = u32::from(net.broadcast()).saturating_sub(1);
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != net.addr && !used.contains(ip))
        .ok_or_else(|| IpamError::Exhausted(net.subnet_string()))
}

/// Check a static address for `net`: a host address, not held by another NIC.
pub fn check_static(
    net: Ipv4Cidr,
    ip: Ipv4Addr,
    used: &HashSet<Ipv4Addr>,
) -> Result<(), IpamError> {
    net.check_host(ip)?;
    if used.contains(&ip) {
        return Err(IpamError::Taken(ip));
    }
    Ok(())
}

/// A unique local /64 (`fdXX:XXXX:XXXX::1/64`) from 5 random bytes.
pub fn ula(random: [u8; 5]) -> Ipv6Cidr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&random);
    b[15] = 1;
    Ipv6Cidr {
        addr: Ipv6Addr::from(b),
        prefix: 64,
    }
}

/// A MAC in the `00:16:3e` range Incus and Xen use, from 3 random bytes.
pub fn mac(random: [u8; 3]) -> [u8; 6] {
    [0x00, 0x16, 0x3e, random[0], random[1], random[2]]
}

/// Parse `aa:bb:cc:dd:ee:ff`; a unicast address only.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (out[0] & 1 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cidr_arithmetic() {
        let c = cidr("10.1.2.1/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert_eq!(c.subnet_string(), "10.1.2.0/24");
        for bad in ["10.1.2.1", "10.1.2.1/33", "x/24", "10.1.2/24", "10.1.2.1/"] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let cases = [
            ("10.0.0.1/24", "10.0.0.200/24", true),
            ("10.0.0.1/24", "10.0.1.1/24", false),
            ("10.0.0.1/16", "10.0.77.1/24", true),
            ("10.0.0.1/24", "10.0.0.0/8", true),
            ("192.168.1.1/24", "10.0.0.1/8", false),
            ("10.0.0.5/32", "10.0.0.1/24", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(cidr(a).overlaps(cidr(b)), want, "{a} vs {b}");
            assert_eq!(cidr(b).overlaps(cidr(a)), want, "{b} vs {a}");
        }
    }

    #[test]
    fn subnet_choice_avoids_what_is_taken() {
        let taken = [cidr("10.1.1.0/24"), cidr("10.2.0.0/16")];
        let got = pick_subnet(&taken, [(1, 1), (2, 9), (3, 4)]);
        assert_eq!(got, Ok(cidr("10.3.4.1/24")));
        assert_eq!(pick_subnet(&taken, [(1, 1)]), Err(IpamError::NoFreeSubnet));
        // A host route inside 10/8 as a whole blocks everything.
        assert!(pick_subnet(&[cidr("10.0.0.0/8")], [(5, 5)]).is_err());
    }

    #[test]
    fn allocation_takes_the_lowest_free_host() {
        let net = cidr("10.5.0.1/24");
        let mut used = HashSet::new();
        assert_eq!(allocate(net, &used), Ok(Ipv4Addr::new(10, 5, 0, 2)));
        used.insert(Ipv4Addr::new(10, 5, 0, 2));
        used.insert(Ipv4Addr::new(10, 5, 0, 3));
        assert_eq!(allocate(net, &used), Ok(Ipv4Addr::new(10, 5, 0, 4)));
        // A gateway in the middle is skipped.
        let mid = cidr("10.6.0.2/30");
        assert_eq!(
            allocate(mid, &HashSet::new()),
            Ok(Ipv4Addr::new(10, 6, 0, 1))
        );
        let full: HashSet<_> = [Ipv4Addr::new(10, 6, 0, 1)].into();
        assert!(matches!(allocate(mid, &full), Err(IpamError::Exhausted(_))));
    }

    #[test]
    fn static_addresses_are_checked() {
        let net = cidr("10.7.0.1/24");
        let used: HashSet<_> = [Ipv4Addr::new(10, 7, 0, 9)].into();
        assert_eq!(
            check_static(net, Ipv4Addr::new(10, 7, 0, 50), &used),
            Ok(())
        );
        assert!(matches!(
            check_static(net, Ipv4Addr::new(10, 8, 0, 5), &used),
            Err(IpamError::OutsideSubnet { .. })
        ));
        assert_eq!(
            check_static(net, Ipv4Addr::new(10, 7, 0, 9), &used),
            Err(IpamError::Taken(Ipv4Addr::new(10, 7, 0, 9)))
        );
        for reserved in [[10, 7, 0, 0], [10, 7, 0, 1], [10, 7, 0, 255]] {
            assert!(matches!(
                check_static(net, Ipv4Addr::from(reserved), &used),
                Err(IpamError::Reserved { .. })
            ));
        }
    }

    #[test]
    fn ipv6_helpers() {
        let u = ula([1, 2, 3, 4, 5]);
        assert_eq!(u.to_string(), "fd01:203:405::1/64");
        let mac = [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56];
        assert_eq!(
            u.eui64(mac).to_string(),
            "fd01:203:405:0:216:3eff:fe12:3456"
        );
        let a = Ipv6Cidr::parse("fd00:1::1/64").unwrap_or_else(|e| panic!("{e}"));
        let b = Ipv6Cidr::parse("fd00:1::/48").unwrap_or_else(|e| panic!("{e}"));
        let c = Ipv6Cidr::parse("fd00:2::1/64").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.overlaps(b) && b.overlaps(a) && !a.overlaps(c));
    }

    #[test]
    fn macs() {
        assert_eq!(mac([1, 2, 3]), [0x00, 0x16, 0x3e, 1, 2, 3]);
        assert_eq!(
            parse_mac("00:16:3E:0a:0b:0c"),
            Some([0, 0x16, 0x3e, 0x0a, 0x0b, 0x0c])
        );
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(parse_mac("00:16:3e:0a:0b"), None);
        assert_eq!(parse_mac("00:16:3e:0a:0b:zz"), None);
    }
}

/// Properties of address allocation over arbitrary networks and used sets.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn allocated_addresses_are_free_host_addresses_of_the_network(
            addr in any::<u32>(),
            prefix in 22u8..=30,
            used_offsets in prop::collection::hash_set(0u32..1024, 0..64),
        ) {
            let net = Ipv4Cidr { addr: Ipv4Addr::from(addr), prefix };
            let base = u32::from(net.network());
            let used: HashSet<Ipv4Addr> =
                used_offsets.iter().map(|o| Ipv4Addr::from(base.wrapping_add(*o))).collect();
            match allocate(net, &used) {
                Ok(ip) => {
                    prop_assert!(net.contains(ip));
                    prop_assert!(ip != net.addr && ip != net.network() && ip != net.broadcast());
                    prop_assert!(!used.contains(&ip));
                    prop_assert!(net.check_host(ip).is_ok());
                    prop_assert!(check_static(net, ip, &used).is_ok());
                    // The lowest such address.
                    for lower in (base + 1)..u32::from(ip) {
                        let l = Ipv4Addr::from(lower);
                        prop_assert!(l == net.addr || used.contains(&l));
                    }
                }
                Err(IpamError::Exhausted(_)) => {
                    for host in (base + 1)..u32::from(net.broadcast()) {
                        let h = Ipv4Addr::from(host);
                        prop_assert!(h == net.addr || used.contains(&h));
                    }
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn a_cidr_reads_back_as_written(addr in any::<u32>(), prefix in 0u8..=32) {
            let c = Ipv4Cidr { addr: Ipv4Addr::from(addr), prefix };
            prop_assert_eq!(Ipv4Cidr::parse(&c.to_string()).ok(), Some(c));
        }

        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(s in "[0-9./a-f:]{0,24}") {
            let _ = Ipv4Cidr::parse(&s);
            let _ = Ipv6Cidr::parse(&s);
            let _ = parse_mac(&s);
        }

        #[test]
        fn a_picked_subnet_overlaps_nothing_taken(
            taken in prop::collection::vec((any::<u32>(), 8u8..=30), 0..16),
            candidates in prop::collection::vec((any::<u8>(), any::<u8>()), 0..32),
        ) {
            let taken: Vec<Ipv4Cidr> = taken
                .into_iter()
                .map(|(a, p)| Ipv4Cidr { addr: Ipv4Addr::from(a), prefix: p })
                .collect();
            if let Ok(c) = pick_subnet(&taken, candidates) {
                prop_assert!(taken.iter().all(|t| !t.overlaps(c)));
                prop_assert_eq!(c.prefix, 24);
            }
        }
    }
}
