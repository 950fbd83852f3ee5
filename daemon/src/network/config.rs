//! Validation of network config, NIC and proxy devices, pure: which keys exist, what their values
//! mean, and the parsed forms the service acts on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::ipam::{Ipv4Cidr, Ipv6Cidr, parse_mac};
use super::proxy::{ProxySpec, parse_address};

/// Config and device errors (all the client's: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown network config key \"{0}\"")]
    UnknownKey(String),
    #[error("invalid value \"{value}\" for \"{key}\": {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("invalid network name \"{name}\": {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("network type \"{0}\" is not supported (only \"bridge\")")]
    BadType(String),
    #[error("device \"{device}\": {reason}")]
    Device { device: String, reason: String },
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Network config keys ctl knows (besides `user.*`).
pub const NETWORK_KEYS: &[&str] = &[
    "ipv4.address",
    "ipv4.nat",
    "ipv4.dhcp",
    "ipv6.address",
    "ipv6.nat",
    "dns.domain",
    "bridge.mtu",
    "bridge.hwaddr",
    HWADDR_KEY,
];

/// The bridge's MAC, chosen once when the network is made and kept (a Linux bridge would
/// otherwise take the lowest of its ports' MACs, and change it as containers come and go).
pub const HWADDR_KEY: &str = "volatile.bridge.hwaddr";

/// Default `dns.domain`.
pub const DEFAULT_DOMAIN: &str = "ctl";

/// A network (and bridge) name: an interface name of at most 15 bytes of letters, digits,
/// `-`, `_` and `.`, not starting with a digit, `-` or `.`.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let err = |reason| ConfigError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > 15 {
        return Err(err("longer than 15 characters (an interface name)"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        // No '.': the name is also an nftables table's suffix.
        return Err(err("only letters, digits, '-' and '_' are allowed"));
    }
    if name.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err(err("it must start with a letter or '_'"));
    }
    Ok(())
}

/// What `ipv4.address` / `ipv6.address` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressChoice<T> {
    /// Let ctl pick a free subnet.
    Auto,
    None,
    Cidr(T),
}

/// A network config checked key by key; `auto` is still unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub ipv4: AddressChoice<Ipv4Cidr>,
    pub ipv6: AddressChoice<Ipv6Cidr>,
    pub nat: bool,
    pub dhcp: bool,
    pub domain: String,
    pub mtu: Option<u32>,
    /// `bridge.hwaddr` if set, else `volatile.bridge.hwaddr` (none before it is chosen).
    pub hwaddr: Option<[u8; 6]>,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

/// Check a network config and parse it. Missing keys take their defaults (`ipv4.address`
/// `auto`, `ipv6.address` `none`, NAT and DHCP on, domain `ctl`).
pub fn parse(config: &BTreeMap<String, String>) -> Result<BridgeConfig, ConfigError> {
    for key in config.keys() {
        if !NETWORK_KEYS.contains(&key.as_str()) && !key.starts_with("user.") {
            return Err(ConfigError::UnknownKey(key.clone()));
        }
    }
    let get = |k: &str| config.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let ipv4 = match get("ipv4.address") {
        None | Some("auto") => AddressChoice::Auto,
        Some("none") => AddressChoice::None,
        Some(v) => {
            let c = Ipv4Cidr::parse(v).map_err(|e| bad("ipv4.address", v, e.to_string()))?;
            if !(8..=30).contains(&c.prefix) {
                return Err(bad(
                    "ipv4.address",
                    v,
                    "the prefix must be between 8 and 30",
                ));
            }
            if c.addr == c.network() || c.addr == c.broadcast() {
                return Err(bad(
                    "ipv4.address",
                    v,
                    "the gateway must be a host address of the subnet (e.g. 10.0.3.1/24)",
                ));
            }
            AddressChoice::Cidr(c)
        }
    };
    let ipv6 = match get("ipv6.address") {
        None | Some("none") => AddressChoice::None,
        Some("auto") => AddressChoice::Auto,
        Some(v) => {
            let c = Ipv6Cidr::parse(v).map_err(|e| bad("ipv6.address", v, e.to_string()))?;
            if c.prefix != 64 {
                return Err(bad("ipv6.address", v, "only /64 subnets are supported"));
            }
            AddressChoice::Cidr(c)
        }
    };
    let nat = get("ipv4.nat")
        .map(|v| parse_bool("ipv4.nat", v))
        .transpose()?
        .unwrap_or(true);
    if let Some(v) = get("ipv6.nat") {
        parse_bool("ipv6.nat", v)?;
    }
    let dhcp = get("ipv4.dhcp")
        .map(|v| parse_bool("ipv4.dhcp", v))
        .transpose()?
        .unwrap_or(true);
    let domain = match get("dns.domain") {
        None => DEFAULT_DOMAIN.to_string(),
        Some(v) => {
            let ok = v.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
            if !ok || v.len() > 253 {
                return Err(bad("dns.domain", v, "not a DNS domain name"));
            }
            v.to_string()
        }
    };
    let mtu = get("bridge.mtu")
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|m| (1280..=65520).contains(m))
                .ok_or_else(|| bad("bridge.mtu", v, "expected a number from 1280 to 65520"))
        })
        .transpose()?;
    let mac = |key: &str| {
        get(key)
            .map(|v| {
                super::ipam::parse_mac(v)
                    .ok_or_else(|| bad(key, v, "expected a unicast MAC (aa:bb:cc:dd:ee:ff)"))
            })
            .transpose()
    };
    let hwaddr = match mac("bridge.hwaddr")? {
        Some(m) => Some(m),
        None => mac(HWADDR_KEY)?,
    };
    Ok(BridgeConfig {
        ipv4,
        ipv6,
        nat,
        dhcp,
        domain,
        mtu,
        hwaddr,
    })
}

/// Where a NIC attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicTarget {
    /// A managed network (`network=NAME`, or `nictype=bridged parent=NAME` naming one).
    Network(String),
    /// An existing host bridge ctl does not manage (`nictype=bridged parent=BRIDGE`).
    Bridge(String),
}

/// A NIC device, checked key by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDevice {
    /// The device's name in `devices`.
    pub device: String,
    /// `network=` or `parent=`; which of the two [`NicTarget`]s it is depends on whether a
    /// managed network has that name.
    pub network: Option<String>,
    pub parent: Option<String>,
    /// The interface name inside the container (`name`, default the device name).
    pub name: String,
    pub hwaddr: Option<[u8; 6]>,
    pub ipv4: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub host_name: Option<String>,
}

/// Keys a NIC device may have.
pub const NIC_KEYS: &[&str] = &[
    "type",
    "network",
    "nictype",
    "parent",
    "name",
    "hwaddr",
    "ipv4.address",
    "mtu",
    "host_name",
];

/// An interface name check (for `name` and `host_name`).
fn interface_name(device: &str, key: &str, v: &str) -> Result<(), ConfigError> {
    validate_name(v).map_err(|e| ConfigError::Device {
        device: device.to_string(),
        reason: format!("{key}: {e}"),
    })
}

/// Check one NIC device's keys and values (whether its network exists is the service's
/// question).
pub fn nic_device(
    device: &str,
    config: &BTreeMap<String, String>,
) -> Result<NicDevice, ConfigError> {
    let err = |reason: String| ConfigError::Device {
        device: device.to_string(),
        reason,
    };
    for key in config.keys() {
        if !NIC_KEYS.contains(&key.as_str()) && !key.starts_with("user.") {
            return Err(err(format!("unknown nic key \"{key}\"")));
        }
    }
    let get = |k: &str| config.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let network = get("network").map(str::to_string);
    let parent = get("parent").map(str::to_string);
    match (get("nictype"), &network, &parent) {
        (None, Some(_), None) => {}
        (Some("bridged"), None, Some(_)) => {}
        (None | Some("bridged"), Some(_), Some(_)) => {
            return Err(err(
                "\"network\" and \"parent\" cannot be used together".into()
            ));
        }
        (Some(t), _, _) if t != "bridged" => {
            return Err(err(format!(
                "nictype \"{t}\" is not supported (use \"network\" or nictype \"bridged\")"
            )));
        }
        (Some(_), Some(_), None) => {
            return Err(err("\"network\" cannot be combined with \"nictype\"".into()));
        }
        _ => {
            return Err(err(
                "a nic needs \"network\" or \"nictype: bridged\" with \"parent\"".into(),
            ));
        }
    }
    let name = get("name").unwrap_or(device).to_string();
    interface_name(device, "name", &name)?;
    let host_name = get("host_name").map(str::to_string);
    if let Some(h) = &host_name {
        interface_name(device, "host_name", h)?;
    }
    let hwaddr = get("hwaddr")
        .map(|v| parse_mac(v).ok_or_else(|| err(format!("hwaddr \"{v}\" is not a unicast MAC"))))
        .transpose()?;
    let ipv4 = get("ipv4.address")
        .map(|v| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| err(format!("ipv4.address \"{v}\" is not an IPv4 address")))
        })
        .transpose()?;
    let mtu = get("mtu")
        .map(|v| {
            v.parse::<u32>()
                .ok()
                .filter(|m| (1280..=65520).contains(m))
                .ok_or_else(|| err(format!("mtu \"{v}\": expected a number from 1280 to 65520")))
        })
        .transpose()?;
    Ok(NicDevice {
        device: device.to_string(),
        network,
        parent,
        name,
        hwaddr,
        ipv4,
        mtu,
        host_name,
    })
}

/// Check one `proxy` device ([`super::proxy::ProxySpec::parse`]); the error names the
/// device and, for a bad address, the key (`listen` or `connect`).
pub fn proxy_device(
    device: &str,
    config: &BTreeMap<String, String>,
) -> Result<ProxySpec, ConfigError> {
    let err = |reason: String| ConfigError::Device {
        device: device.to_string(),
        reason,
    };
    for key in ["listen", "connect"] {
        if let Some(v) = config.get(key) {
            parse_address(v).map_err(|e| err(format!("{key}: {e}")))?;
        }
    }
    ProxySpec::parse(config).map_err(|e| err(e.to_string()))
}

/// The `proxy` devices of an (expanded) device map, checked, by device name.
pub fn proxy_devices(
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<BTreeMap<String, ProxySpec>, ConfigError> {
    devices
        .iter()
        .filter(|(_, d)| d.get("type").map(String::as_str) == Some("proxy"))
        .map(|(name, d)| Ok((name.clone(), proxy_device(name, d)?)))
        .collect()
}

/// Check every device of a map: `nic` devices key by key, `proxy` devices by their spec,
/// `disk` devices by [`crate::instance::disks`], any other type refused. Returns the NICs,
/// sorted by device name.
pub fn devices(
    devices: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<NicDevice>, ConfigError> {
    let mut nics = Vec::new();
    for (name, dev) in devices {
        match dev.get("type").map(String::as_str) {
            Some("nic") => nics.push(nic_device(name, dev)?),
            Some("proxy") => {
                proxy_device(name, dev)?;
            }
            Some("none" | "disk") => {}
            Some(t) => {
                return Err(ConfigError::Device {
                    device: name.clone(),
                    reason: format!("device type \"{t}\" is not supported"),
                });
            }
            None => {
                return Err(ConfigError::Device {
                    device: name.clone(),
                    reason: "missing \"type\"".into(),
                });
            }
        }
    }
    crate::instance::disks::parse_all(devices).map_err(|e| ConfigError::Device {
        device: e.device,
        reason: e.reason,
    })?;
    let mut seen = std::collections::HashSet::new();
    for n in &nics {
        if !seen.insert(n.name.as_str()) {
            return Err(ConfigError::Device {
                device: n.device.clone(),
                reason: format!("interface name \"{}\" is used by another nic", n.name),
            });
        }
    }
    Ok(nics)
}

/// Instance devices as Incus expands them: the profiles' devices in order, each overlaid by
/// the next, then the instance's own (a device of the same name replaces the whole entry; a
/// `type: none` entry removes it).
pub fn expand_devices<'a>(
    layers: impl IntoIterator<Item = &'a BTreeMap<String, BTreeMap<String, String>>>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for layer in layers {
        for (k, v) in layer {
            out.insert(k.clone(), v.clone());
        }
    }
    out.retain(|_, v| v.get("type").map(String::as_str) != Some("none"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_bridge_mac_comes_from_bridge_hwaddr_then_the_volatile_key() {
        let m = |pairs: &[(&str, &str)]| parse(&map(pairs)).map(|c| c.hwaddr);
        assert_eq!(m(&[]), Ok(None));
        let kept = [0x00, 0x16, 0x3e, 1, 2, 3];
        assert_eq!(m(&[(HWADDR_KEY, "00:16:3e:01:02:03")]), Ok(Some(kept)));
        assert_eq!(
            m(&[
                (HWADDR_KEY, "00:16:3e:01:02:03"),
                ("bridge.hwaddr", "02:00:00:00:00:0a")
            ]),
            Ok(Some([2, 0, 0, 0, 0, 10])),
            "the user's key wins"
        );
        for bad in ["01:00:5e:00:00:01", "00:16:3e:01:02", "zz:16:3e:01:02:03"] {
            assert!(m(&[("bridge.hwaddr", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_names() {
        for ok in ["ctlbr0", "n1", "_x", "ab-c_d", "abcdefghijklmno"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "0br",
            "-x",
            ".x",
            "a.b",
            "a/b",
            "a b",
            "abcdefghijklmnop",
            "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_config_defaults_and_values() {
        let c = parse(&BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ipv4, AddressChoice::Auto);
        assert_eq!(c.ipv6, AddressChoice::None);
        assert!(c.nat && c.dhcp);
        assert_eq!(c.domain, "ctl");
        let c = parse(&map(&[
            ("ipv4.address", "10.99.0.1/24"),
            ("ipv4.nat", "false"),
            ("ipv6.address", "fd42::1/64"),
            ("dns.domain", "lab.example"),
            ("bridge.mtu", "1400"),
            ("user.note", "x"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.ipv4,
            AddressChoice::Cidr(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 99, 0, 1),
                prefix: 24
            })
        );
        assert!(!c.nat);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.domain, "lab.example");
    }

    #[test]
    fn network_config_refusals() {
        let cases: &[(&str, &str)] = &[
            ("ipv4.address", "10.0.0.0/24"),
            ("ipv4.address", "10.0.0.255/24"),
            ("ipv4.address", "10.0.0.1/31"),
            ("ipv4.address", "10.0.0.1"),
            ("ipv6.address", "fd00::1/48"),
            ("ipv4.nat", "maybe"),
            ("bridge.mtu", "100"),
            ("dns.domain", "bad_domain"),
            ("dns.domain", "a..b"),
            ("bogus.key", "1"),
        ];
        for (k, v) in cases {
            assert!(parse(&map(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn nic_devices() {
        let d = nic_device(
            "eth0",
            &map(&[
                ("type", "nic"),
                ("network", "ctlbr0"),
                ("ipv4.address", "10.0.0.5"),
                ("hwaddr", "00:16:3e:01:02:03"),
                ("mtu", "1400"),
                ("host_name", "vethX"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.name, "eth0");
        assert_eq!(d.network.as_deref(), Some("ctlbr0"));
        assert_eq!(d.ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));
        let b = nic_device(
            "net1",
            &map(&[
                ("type", "nic"),
                ("nictype", "bridged"),
                ("parent", "br0"),
                ("name", "eth1"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (b.parent.as_deref(), b.name.as_str()),
            (Some("br0"), "eth1")
        );
        let bad: &[&[(&str, &str)]] = &[
            &[("type", "nic")],
            &[("type", "nic"), ("nictype", "macvlan"), ("parent", "eth0")],
            &[("type", "nic"), ("network", "n"), ("parent", "br0")],
            &[("type", "nic"), ("nictype", "bridged")],
            &[
                ("type", "nic"),
                ("network", "n"),
                ("ipv4.address", "10.0.0"),
            ],
            &[
                ("type", "nic"),
                ("network", "n"),
                ("hwaddr", "01:00:00:00:00:00"),
            ],
            &[("type", "nic"), ("network", "n"), ("mtu", "9")],
            &[
                ("type", "nic"),
                ("network", "n"),
                ("host_name", "waytoolongname123"),
            ],
            &[("type", "nic"), ("network", "n"), ("color", "red")],
        ];
        for b in bad {
            assert!(nic_device("eth0", &map(b)).is_err(), "{b:?}");
        }
    }

    #[test]
    fn device_maps() {
        let mut devs = BTreeMap::new();
        devs.insert(
            "eth0".to_string(),
            map(&[("type", "nic"), ("network", "a")]),
        );
        assert_eq!(devices(&devs).map(|n| n.len()), Ok(1));
        devs.insert(
            "eth1".to_string(),
            map(&[("type", "nic"), ("network", "b"), ("name", "eth0")]),
        );
        assert!(devices(&devs).is_err(), "two nics named eth0 inside");
        devs.remove("eth1");
        devs.insert("root".to_string(), map(&[("type", "disk"), ("path", "/")]));
        assert_eq!(devices(&devs).map(|n| n.len()), Ok(1), "the root disk");
        devs.insert("data".to_string(), map(&[("type", "disk"), ("path", "/d")]));
        assert!(devices(&devs).is_err(), "a disk without source");
        devs.remove("data");
        devs.insert("gpu".to_string(), map(&[("type", "gpu")]));
        assert!(devices(&devs).is_err(), "unknown device type");
        devs.remove("gpu");
        devs.insert("root".to_string(), map(&[("path", "/")]));
        assert!(devices(&devs).is_err(), "no type");
    }

    #[test]
    fn proxy_devices_are_checked_and_errors_name_device_and_key() {
        let ok = proxy_device(
            "web",
            &map(&[
                ("type", "proxy"),
                ("listen", "tcp:0.0.0.0:8080"),
                ("connect", "tcp:127.0.0.1:80"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.listen.ports, [8080]);
        // (config, words the message must contain)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[
                    ("listen", "tcp:0.0.0.0:99999"),
                    ("connect", "tcp:127.0.0.1:80"),
                ],
                &["\"web\"", "listen", "99999"],
            ),
            (
                &[
                    ("listen", "tcp:0.0.0.0:80"),
                    ("connect", "tcp:localhost:80"),
                ],
                &["\"web\"", "connect", "localhost"],
            ),
            (&[("listen", "tcp:0.0.0.0:80")], &["\"web\"", "connect"]),
            (
                &[
                    ("listen", "tcp:0.0.0.0:80"),
                    ("connect", "tcp:127.0.0.1:80"),
                    ("bind", "instance"),
                ],
                &["\"web\"", "bind"],
            ),
            (
                &[
                    ("listen", "tcp:0.0.0.0:80"),
                    ("connect", "tcp:127.0.0.1:80"),
                    ("colour", "red"),
                ],
                &["\"web\"", "colour"],
            ),
            (
                &[
                    ("listen", "udp:0.0.0.0:80"),
                    ("connect", "tcp:127.0.0.1:80"),
                ],
                &["\"web\"", "listen", "connect"],
            ),
        ];
        for (pairs, words) in cases {
            let mut cfg = map(pairs);
            cfg.insert("type".into(), "proxy".into());
            let e = proxy_device("web", &cfg).expect_err("must be refused");
            let msg = e.to_string();
            for w in *words {
                assert!(msg.contains(w), "{pairs:?}: {msg} lacks {w}");
            }
            let devs = BTreeMap::from([("web".to_string(), cfg)]);
            assert!(devices(&devs).is_err(), "{pairs:?}");
            assert!(proxy_devices(&devs).is_err(), "{pairs:?}");
        }
        let devs = BTreeMap::from([
            (
                "web".to_string(),
                map(&[
                    ("type", "proxy"),
                    ("listen", "tcp:127.0.0.1:8080"),
                    ("connect", "tcp:127.0.0.1:80"),
                ]),
            ),
            (
                "eth0".to_string(),
                map(&[("type", "nic"), ("network", "a")]),
            ),
        ]);
        assert_eq!(devices(&devs).map(|n| n.len()), Ok(1));
        let proxies = proxy_devices(&devs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proxies.keys().collect::<Vec<_>>(), ["web"]);
    }

    #[test]
    fn expansion_overlays_in_order() {
        let profile: BTreeMap<String, BTreeMap<String, String>> = [
            (
                "eth0".to_string(),
                map(&[("type", "nic"), ("network", "ctlbr0")]),
            ),
            (
                "eth1".to_string(),
                map(&[("type", "nic"), ("network", "other")]),
            ),
        ]
        .into();
        let own: BTreeMap<String, BTreeMap<String, String>> = [
            (
                "eth0".to_string(),
                map(&[("type", "nic"), ("network", "mine")]),
            ),
            ("eth1".to_string(), map(&[("type", "none")])),
        ]
        .into();
        let e = expand_devices([&profile, &own]);
        assert_eq!(e.len(), 1);
        assert_eq!(e["eth0"]["network"], "mine");
    }
}
