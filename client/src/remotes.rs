//! Remotes: the servers the client knows, kept in `config.yml` in the config dir
//! (`$CTL_CONF`, else `$XDG_CONFIG_HOME/ctl`, else `~/.config/ctl`), in the shape Incus'
//! client uses (`remotes: {name: {addr, protocol, auth_type, public}}`, `default-remote`).
//!
//! Two kinds: image servers (`protocol: simplestreams`; an image argument `REMOTE:NAME`
//! names an image on one) and ctld servers (`protocol: ctl`, `addr: https://HOST:PORT`,
//! `auth_type: tls`; `incus` is read as a synonym), reached over HTTPS with the client's
//! certificate (`client.crt`, `client.key`) and the server certificate pinned when the
//! remote was added (`servercerts/NAME.crt`). `local` is always the daemon on the Unix
//! socket and the default remote unless `ctl remote switch` chose another; `images` is the
//! linuxcontainers.org simplestreams server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::{Identity, TlsError};
use crate::transport::HttpsTarget;

/// The protocol of ctld servers in `config.yml`.
pub const CTL_PROTOCOL: &str = "ctl";
/// The protocol of image servers.
pub const SIMPLESTREAMS: &str = "simplestreams";
/// The port a ctld server listens on when its address names none (as Incus' 8443).
pub const DEFAULT_PORT: u16 = 8443;

/// One remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub addr: String,
    #[serde(default)]
    pub protocol: String,
    /// `tls` for ctld servers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default)]
    pub public: bool,
}

impl Remote {
    /// Whether this remote is a ctld (or Incus-protocol) server, not an image server.
    pub fn is_server(&self) -> bool {
        matches!(self.protocol.as_str(), CTL_PROTOCOL | "incus" | "lxd")
    }

    /// A ctld server at `https://HOST:PORT`.
    pub fn server(addr: &str) -> Remote {
        Remote {
            addr: addr.to_string(),
            protocol: CTL_PROTOCOL.into(),
            auth_type: "tls".into(),
            public: false,
        }
    }
}

/// The client configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(
        rename = "default-remote",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub default_remote: String,
    #[serde(default)]
    pub remotes: BTreeMap<String, Remote>,
}

/// Remote errors.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote \"{0}\" not found (see `ctl remote list`)")]
    Unknown(String),
    #[error("remote \"{0}\" exists already")]
    Exists(String),
    #[error("remote \"{0}\" is built in and cannot be changed")]
    BuiltIn(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("remote \"{0}\" is an image server, not a ctld server")]
    NotServer(String),
    #[error("remote \"{0}\" is a ctld server, not an image server")]
    NotImageServer(String),
    #[error("remote \"{0}\" is the default remote (`ctl remote switch` to another first)")]
    IsDefault(String),
    #[error("remote \"{remote}\"")]
    Tls {
        remote: String,
        #[source]
        source: TlsError,
    },
}

/// The name of the local daemon's remote.
pub const LOCAL: &str = "local";

fn builtins() -> BTreeMap<String, Remote> {
    let mut m = BTreeMap::new();
    m.insert(
        LOCAL.to_string(),
        Remote {
            addr: "unix://".into(),
            protocol: CTL_PROTOCOL.into(),
            auth_type: "file access".into(),
            public: false,
        },
    );
    m.insert(
        "images".to_string(),
        Remote {
            addr: "https://images.linuxcontainers.org".into(),
            protocol: SIMPLESTREAMS.into(),
            auth_type: String::new(),
            public: true,
        },
    );
    m
}

/// The config dir, from the environment.
pub fn config_dir() -> PathBuf {
    std::env::var_os("CTL_CONF")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("ctl"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config/ctl"))
        })
        .unwrap_or_else(|| PathBuf::from(".ctl"))
}

/// Where the config file lives, from the environment.
pub fn config_path() -> PathBuf {
    config_dir().join("config.yml")
}

/// The pinned certificate of server remote `name` in config dir `dir`.
pub fn server_cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("servercerts").join(format!("{name}.crt"))
}

/// `HOST:PORT` of a server URL `https://HOST[:PORT][/]` (port 8443 when it names none).
pub fn host_port(url: &str) -> Result<String, RemoteError> {
    let invalid = || {
        RemoteError::Invalid(format!(
            "server address \"{url}\" must look like https://HOST[:PORT]"
        ))
    };
    let rest = url
        .strip_prefix("https://")
        .unwrap_or(url)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) || rest.contains("://") {
        return Err(invalid());
    }
    let has_port = match rest.rfind(']') {
        // [v6] or [v6]:port
        Some(end) => rest[end..].contains(':'),
        None => match rest.matches(':').count() {
            0 => false,
            1 => true,
            // A bare IPv6 address.
            _ => return Ok(format!("[{rest}]:{DEFAULT_PORT}")),
        },
    };
    if !has_port {
        return Ok(format!("{rest}:{DEFAULT_PORT}"));
    }
    let port = rest.rsplit(':').next().unwrap_or_default();
    if port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    Ok(rest.to_string())
}

/// Split an argument into its remote and the rest: `r1:c1` is (`r1`, `c1`), `r1:` is
/// (`r1`, ``), `c1` is (None, `c1`). Instance names never contain `:`.
pub fn split_remote(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once(':') {
        Some((remote, rest)) => (Some(remote), rest),
        None => (None, arg),
    }
}

/// A remote name: not empty, no `:`, `/` or whitespace.
fn check_name(name: &str) -> Result<(), RemoteError> {
    if name.is_empty() || name.contains([':', '/']) || name.contains(char::is_whitespace) {
        return Err(RemoteError::Invalid(format!(
            "invalid remote name \"{name}\" (no ':', '/' or spaces)"
        )));
    }
    Ok(())
}

impl Config {
    /// Read `path` (a missing file is the default configuration).
    pub fn load(path: &Path) -> Result<Config, RemoteError> {
        let mut cfg = match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text).map_err(|e| RemoteError::File {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => {
                return Err(RemoteError::File {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                });
            }
        };
        for (name, r) in builtins() {
            cfg.remotes.entry(name).or_insert(r);
        }
        Ok(cfg)
    }

    /// Write to `path` (atomically: a temp file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), RemoteError> {
        let err = |msg: String| RemoteError::File {
            path: path.to_path_buf(),
            msg,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_yaml_ng::to_string(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("yml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| err(e.to_string()))
    }

    /// Add an image server.
    pub fn add(&mut self, name: &str, addr: &str, protocol: &str) -> Result<(), RemoteError> {
        let protocol = if protocol.is_empty() {
            SIMPLESTREAMS
        } else {
            protocol
        };
        if protocol != SIMPLESTREAMS {
            return Err(RemoteError::Invalid(format!(
                "protocol \"{protocol}\" is not an image server protocol (only \"simplestreams\")"
            )));
        }
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(RemoteError::Invalid(format!(
                "remote address \"{addr}\" must be an http:// or https:// URL"
            )));
        }
        let remote = Remote {
            addr: addr.trim_end_matches('/').to_string(),
            protocol: protocol.to_string(),
            auth_type: String::new(),
            public: true,
        };
        self.insert(name, remote)
    }

    /// Add `remote` as `name` (a new name, not `local`).
    pub fn insert(&mut self, name: &str, remote: Remote) -> Result<(), RemoteError> {
        self.check_new(name)?;
        self.remotes.insert(name.to_string(), remote);
        Ok(())
    }

    /// Whether `name` can be added: valid, not `local`, not taken.
    pub fn check_new(&self, name: &str) -> Result<(), RemoteError> {
        check_name(name)?;
        if name == LOCAL {
            return Err(RemoteError::BuiltIn(name.into()));
        }
        if self.remotes.contains_key(name) {
            return Err(RemoteError::Exists(name.into()));
        }
        Ok(())
    }

    /// The remote unprefixed names address: `default-remote`, else `local`.
    pub fn default_name(&self) -> &str {
        if self.default_remote.is_empty() {
            LOCAL
        } else {
            &self.default_remote
        }
    }

    /// Make `name` the default remote (it must be `local` or a ctld server).
    pub fn switch(&mut self, name: &str) -> Result<(), RemoteError> {
        let remote = self.get(name)?;
        if !remote.is_server() {
            return Err(RemoteError::NotServer(name.into()));
        }
        self.default_remote = if name == LOCAL {
            String::new()
        } else {
            name.to_string()
        };
        Ok(())
    }

    /// Rename remote `old` to `new` (the default follows).
    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), RemoteError> {
        if old == LOCAL {
            return Err(RemoteError::BuiltIn(old.into()));
        }
        self.get(old)?;
        self.check_new(new)?;
        if let Some(remote) = self.remotes.remove(old) {
            self.remotes.insert(new.to_string(), remote);
        }
        if self.default_remote == old {
            self.default_remote = new.to_string();
        }
        Ok(())
    }

    /// The remote called `name`.
    pub fn get(&self, name: &str) -> Result<&Remote, RemoteError> {
        self.remotes
            .get(name)
            .ok_or_else(|| RemoteError::Unknown(name.into()))
    }

    /// How to reach ctld server remote `name` over HTTPS: its address, the client's identity
    /// (made on first use) in config dir `dir` and its pinned certificate.
    pub fn https_target(&self, name: &str, dir: &Path) -> Result<HttpsTarget, RemoteError> {
        let remote = self.get(name)?;
        if !remote.is_server() || name == LOCAL {
            return Err(RemoteError::NotServer(name.into()));
        }
        let addr = host_port(&remote.addr)?;
        let tls = |source| RemoteError::Tls {
            remote: name.to_string(),
            source,
        };
        let identity = Identity::load_or_create(dir).map_err(tls)?;
        let pinned = crate::tls::read_cert(&server_cert_path(dir, name)).map_err(tls)?;
        let config = crate::tls::pinned_config(&identity, pinned).map_err(tls)?;
        Ok(HttpsTarget {
            remote: name.to_string(),
            addr,
            config,
        })
    }

    /// Remove a remote.
    pub fn remove(&mut self, name: &str) -> Result<(), RemoteError> {
        if name == LOCAL {
            return Err(RemoteError::BuiltIn(name.into()));
        }
        if self.default_remote == name {
            return Err(RemoteError::IsDefault(name.into()));
        }
        self.remotes
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| RemoteError::Unknown(name.into()))
    }

    /// Split an image argument into its remote (`None` for the local daemon) and the
    /// image name. `NAME` and `local:NAME` are local; `REMOTE:NAME` must name a remote.
    pub fn image_ref<'a>(
        &'a self,
        arg: &'a str,
    ) -> Result<(Option<&'a Remote>, &'a str), RemoteError> {
        let Some((remote, name)) = arg.split_once(':') else {
            return Ok((None, arg));
        };
        if remote == LOCAL {
            return Ok((None, name));
        }
        match self.remotes.get(remote) {
            Some(r) if r.is_server() => Err(RemoteError::NotImageServer(remote.into())),
            Some(r) => Ok((Some(r), name)),
            None => Err(RemoteError::Unknown(remote.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_save_load_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/config.yml");
        let mut cfg = Config::load(&path).expect("default");
        assert!(cfg.remotes.contains_key("local"));
        assert_eq!(cfg.remotes["images"].protocol, "simplestreams");
        cfg.add("mine", "http://127.0.0.1:8443/", "simplestreams")
            .expect("add");
        assert!(matches!(
            cfg.add("mine", "http://x", ""),
            Err(RemoteError::Exists(_))
        ));
        assert!(matches!(
            cfg.add("bad", "http://x", "incus"),
            Err(RemoteError::Invalid(_))
        ));
        assert!(matches!(
            cfg.add("a:b", "http://x", ""),
            Err(RemoteError::Invalid(_))
        ));
        assert!(matches!(
            cfg.add("ftp", "ftp://x", ""),
            Err(RemoteError::Invalid(_))
        ));
        cfg.save(&path).expect("save");
        let back = Config::load(&path).expect("load");
        assert_eq!(back.remotes["mine"].addr, "http://127.0.0.1:8443");
        let (r, name) = back.image_ref("mine:debian/12").expect("ref");
        assert_eq!(
            (r.map(|r| r.addr.as_str()), name),
            (Some("http://127.0.0.1:8443"), "debian/12")
        );
        assert_eq!(
            back.image_ref("local:busybox").expect("ref"),
            (None, "busybox")
        );
        assert_eq!(back.image_ref("busybox").expect("ref"), (None, "busybox"));
        assert!(matches!(
            back.image_ref("nope:x"),
            Err(RemoteError::Unknown(_))
        ));
        let mut back = back;
        back.remove("mine").expect("remove");
        assert!(matches!(back.remove("local"), Err(RemoteError::BuiltIn(_))));
        assert!(matches!(back.remove("mine"), Err(RemoteError::Unknown(_))));
    }

    #[test]
    fn server_addresses() {
        let hp = |u: &str| host_port(u).ok();
        assert_eq!(
            hp("https://127.0.0.1:8443").as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(hp("https://127.0.0.1").as_deref(), Some("127.0.0.1:8443"));
        assert_eq!(
            hp("https://host.example/").as_deref(),
            Some("host.example:8443")
        );
        assert_eq!(
            hp("host.example:9443").as_deref(),
            Some("host.example:9443")
        );
        assert_eq!(hp("https://[::1]:9443").as_deref(), Some("[::1]:9443"));
        assert_eq!(hp("https://[::1]").as_deref(), Some("[::1]:8443"));
        assert_eq!(hp("::1").as_deref(), Some("[::1]:8443"));
        assert!(hp("https://h:port").is_none());
        assert!(hp("https://h/path").is_none());
        assert!(hp("http://h").is_none());
        assert!(hp("").is_none());
    }

    #[test]
    fn remote_prefixes() {
        assert_eq!(split_remote("r1:c1"), (Some("r1"), "c1"));
        assert_eq!(split_remote("r1:"), (Some("r1"), ""));
        assert_eq!(split_remote("c1"), (None, "c1"));
        assert_eq!(split_remote("r1:c1/snap0"), (Some("r1"), "c1/snap0"));
        assert_eq!(
            split_remote("images:debian/12"),
            (Some("images"), "debian/12")
        );
    }

    #[test]
    fn servers_default_rename_and_the_file_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yml");
        let mut cfg = Config::load(&path).expect("default");
        assert_eq!(cfg.default_name(), "local");
        cfg.insert("r1", Remote::server("https://127.0.0.1:8443"))
            .expect("insert");
        assert!(matches!(
            cfg.insert("r1", Remote::server("https://x")),
            Err(RemoteError::Exists(_))
        ));
        assert!(matches!(
            cfg.insert("local", Remote::server("https://x")),
            Err(RemoteError::BuiltIn(_))
        ));
        assert!(matches!(
            cfg.switch("images"),
            Err(RemoteError::NotServer(_))
        ));
        assert!(matches!(cfg.switch("nope"), Err(RemoteError::Unknown(_))));
        cfg.switch("r1").expect("switch");
        assert_eq!(cfg.default_name(), "r1");
        assert!(matches!(cfg.remove("r1"), Err(RemoteError::IsDefault(_))));
        cfg.rename("r1", "r2").expect("rename");
        assert_eq!(cfg.default_name(), "r2");
        assert!(matches!(
            cfg.rename("local", "x"),
            Err(RemoteError::BuiltIn(_))
        ));
        // A ctld server is no image source.
        assert!(matches!(
            cfg.image_ref("r2:debian/12"),
            Err(RemoteError::NotImageServer(_))
        ));
        cfg.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        assert_eq!(yaml["default-remote"].as_str(), Some("r2"));
        assert_eq!(
            yaml["remotes"]["r2"]["addr"].as_str(),
            Some("https://127.0.0.1:8443")
        );
        assert_eq!(yaml["remotes"]["r2"]["protocol"].as_str(), Some("ctl"));
        assert_eq!(yaml["remotes"]["r2"]["auth_type"].as_str(), Some("tls"));
        assert_eq!(yaml["remotes"]["r2"]["public"].as_bool(), Some(false));
        let mut back = Config::load(&path).expect("load");
        assert_eq!(back, cfg);
        back.switch("local").expect("switch back");
        assert_eq!(back.default_remote, "");
        back.remove("r2").expect("remove");
        // Incus' protocol name is read as a ctld server too.
        let incus: Remote = serde_yaml_ng::from_str(
            "addr: https://h:8443\nprotocol: incus\nauth_type: tls\npublic: false\n",
        )
        .expect("incus remote");
        assert!(incus.is_server());
        assert_eq!(
            server_cert_path(Path::new("/c"), "r1"),
            PathBuf::from("/c/servercerts/r1.crt")
        );
    }
}
