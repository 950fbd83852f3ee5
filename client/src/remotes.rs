//! Remotes: named image servers (and the local daemon) the client knows, kept in
//! `config.yml` under `$CTL_CONF`, else `$XDG_CONFIG_HOME/ctl`, else `~/.config/ctl`, in
//! the shape Incus' client uses (`remotes: {name: {addr, protocol, public}}`).
//!
//! `local` is always the daemon on the socket; `images` defaults to the linuxcontainers.org
//! simplestreams server. An image argument `REMOTE:NAME` names an image on a remote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    pub addr: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub public: bool,
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
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

/// The name of the local daemon's remote.
pub const LOCAL: &str = "local";

fn builtins() -> BTreeMap<String, Remote> {
    let mut m = BTreeMap::new();
    m.insert(
        LOCAL.to_string(),
        Remote {
            addr: "unix://".into(),
            protocol: "ctl".into(),
            public: false,
        },
    );
    m.insert(
        "images".to_string(),
        Remote {
            addr: "https://images.linuxcontainers.org".into(),
            protocol: "simplestreams".into(),
            public: true,
        },
    );
    m
}

/// Where the config file lives, from the environment.
pub fn config_path() -> PathBuf {
    let dir = std::env::var_os("CTL_CONF")
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
        .unwrap_or_else(|| PathBuf::from(".ctl"));
    dir.join("config.yml")
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

    /// Add a remote.
    pub fn add(&mut self, name: &str, addr: &str, protocol: &str) -> Result<(), RemoteError> {
        if name.is_empty() || name.contains(':') || name.contains('/') {
            return Err(RemoteError::Invalid(format!(
                "invalid remote name \"{name}\" (no ':' or '/')"
            )));
        }
        if name == LOCAL {
            return Err(RemoteError::BuiltIn(name.into()));
        }
        if self.remotes.contains_key(name) {
            return Err(RemoteError::Exists(name.into()));
        }
        let protocol = if protocol.is_empty() {
            "simplestreams"
        } else {
            protocol
        };
        if protocol != "simplestreams" {
            return Err(RemoteError::Invalid(format!(
                "protocol \"{protocol}\" is not supported (only \"simplestreams\")"
            )));
        }
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(RemoteError::Invalid(format!(
                "remote address \"{addr}\" must be an http:// or https:// URL"
            )));
        }
        self.remotes.insert(
            name.to_string(),
            Remote {
                addr: addr.trim_end_matches('/').to_string(),
                protocol: protocol.to_string(),
                public: true,
            },
        );
        Ok(())
    }

    /// Remove a remote.
    pub fn remove(&mut self, name: &str) -> Result<(), RemoteError> {
        if name == LOCAL {
            return Err(RemoteError::BuiltIn(name.into()));
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
}
