//! The server configuration keys (`GET/PUT/PATCH /1.0`), checked before anything changes.
//! Pure.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Where the API is served over HTTPS (`:8443`, `127.0.0.1:8443`, `[::1]:8443`; a bare
/// address takes port 8443).
pub const HTTPS_ADDRESS: &str = "core.https_address";
/// Days an unused cached image is kept (`--image-cache-expiry-days` overrides it).
pub const IMAGE_CACHE_EXPIRY: &str = "images.remote_cache_expiry";

/// Seconds without a heartbeat after which a cluster member is offline (at least 10).
pub const OFFLINE_THRESHOLD: &str = "cluster.offline_threshold";

/// Keys that belong to each member, never shared through a cluster's database (every
/// member listens on its own address).
pub const MEMBER_KEYS: &[&str] = &[HTTPS_ADDRESS];

/// The keys of `config` a cluster shares (all but [`MEMBER_KEYS`]).
pub fn global_keys(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, _)| !MEMBER_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The keys of `config` that are this member's own.
pub fn member_keys(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, _)| MEMBER_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The longest `images.remote_cache_expiry`, in days (a hundred years).
pub const MAX_EXPIRY_DAYS: u64 = 36_500;

/// The port of an address given without one, as Incus.
pub const DEFAULT_PORT: u16 = 8443;

/// A refused configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown server configuration key \"{0}\"")]
    UnknownKey(String),
    #[error("invalid value for {key}: {msg}")]
    Invalid { key: String, msg: String },
}

/// The socket address of a `core.https_address` value.
pub fn https_address(value: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |msg: &str| ConfigError::Invalid {
        key: HTTPS_ADDRESS.into(),
        msg: format!("\"{value}\": {msg}"),
    };
    let v = value.trim();
    if let Some(port) = v.strip_prefix(':').filter(|p| !p.contains(':')) {
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        // Every address, IPv4 too (a dual-stack socket).
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = v.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        return Ok(addr);
    }
    let bare = v.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    Err(invalid(
        "use an IP address with an optional port (127.0.0.1:8443, [::]:8443) or :PORT for every address",
    ))
}

/// Check a whole configuration (empty values already removed).
pub fn check(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (key, value) in config {
        match key.as_str() {
            HTTPS_ADDRESS => {
                https_address(value)?;
            }
            IMAGE_CACHE_EXPIRY => {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|d| *d <= MAX_EXPIRY_DAYS)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: key.clone(),
                        msg: format!(
                            "\"{value}\" is not a number of days from 0 to {MAX_EXPIRY_DAYS}"
                        ),
                    })?;
            }
            OFFLINE_THRESHOLD => {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (10..=86_400).contains(s))
                    .ok_or_else(|| ConfigError::Invalid {
                        key: key.clone(),
                        msg: format!("\"{value}\" is not a number of seconds from 10 to 86400"),
                    })?;
            }
            "core.trust_password" => {
                return Err(ConfigError::Invalid {
                    key: key.clone(),
                    msg: "trust passwords are not supported: issue a one-time token with \
                          `ctl config trust add NAME` instead"
                        .into(),
                });
            }
            k if k.starts_with("user.") => {}
            _ => return Err(ConfigError::UnknownKey(key.clone())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_forms_incus_takes() {
        let ok = |v: &str| https_address(v).map(|a| a.to_string());
        assert_eq!(ok(":8443"), Ok("[::]:8443".into()));
        assert_eq!(ok("127.0.0.1:9000"), Ok("127.0.0.1:9000".into()));
        assert_eq!(ok("127.0.0.1"), Ok("127.0.0.1:8443".into()));
        assert_eq!(ok("[::1]:8443"), Ok("[::1]:8443".into()));
        assert_eq!(ok("::1"), Ok("[::1]:8443".into()));
        for bad in [
            "",
            ":",
            ":0",
            ":70000",
            "example.com:8443",
            "1.2.3.4:x",
            "127.0.0.1:0",
        ] {
            assert!(https_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_checked() {
        let cfg = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(check(&cfg(HTTPS_ADDRESS, ":8443")).is_ok());
        assert!(check(&cfg(IMAGE_CACHE_EXPIRY, "3")).is_ok());
        assert!(check(&cfg("user.note", "anything")).is_ok());
        assert!(matches!(
            check(&cfg("core.nonsense", "1")),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(check(&cfg(IMAGE_CACHE_EXPIRY, "-1")).is_err());
        assert!(check(&cfg(IMAGE_CACHE_EXPIRY, "18446744073709551615")).is_err());
        assert!(check(&cfg("core.trust_password", "x")).is_err());
        assert!(check(&cfg(OFFLINE_THRESHOLD, "10")).is_ok());
        for bad in ["9", "0", "-1", "x", "86401"] {
            assert!(check(&cfg(OFFLINE_THRESHOLD, bad)).is_err(), "{bad}");
        }
        let both = BTreeMap::from([
            (HTTPS_ADDRESS.to_string(), ":8443".to_string()),
            (OFFLINE_THRESHOLD.to_string(), "12".to_string()),
        ]);
        assert_eq!(
            global_keys(&both).keys().collect::<Vec<_>>(),
            [OFFLINE_THRESHOLD]
        );
        assert_eq!(
            member_keys(&both).keys().collect::<Vec<_>>(),
            [HTTPS_ADDRESS]
        );
    }
}
