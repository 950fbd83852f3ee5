//! `ctl image info|show|copy`: one image in detail (human or YAML), and copying an image
//! from a remote image server into the local store.

use std::io::{IsTerminal, Write};

use clap::Args;
use ctl_api::{Image, ImagesPost, ImagesPostSource};
use hyper::Method;

use super::Error;
use crate::Client;
use crate::output::human_size;
use crate::remotes::{Config, config_path};

/// Arguments of `ctl image copy`.
#[derive(Debug, Clone, Args)]
pub struct CopyArgs {
    /// The image on a remote: REMOTE:ALIAS or REMOTE:FINGERPRINT
    pub source: String,
    /// Where to copy it: only `local:` (the default)
    #[arg(default_value = "local:")]
    pub target: String,
    /// An alias for the copy (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// Make the copy public
    #[arg(long)]
    pub public: bool,
}

/// The image an argument names, from the local store.
pub async fn get(client: &Client, image: &str) -> Result<Image, Error> {
    let fp = super::image::resolve(client, image).await?;
    Ok(client.get(&format!("/1.0/images/{fp}")).await?)
}

/// `ctl image info`: a human summary like `incus image info`.
pub fn render_info(image: &Image) -> String {
    use std::fmt::Write as _;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let size = human_size(u64::try_from(image.size).unwrap_or_default());
    let mut s = String::new();
    for (k, v) in [
        ("Fingerprint", image.fingerprint.as_str()),
        ("Size", size.as_str()),
        ("Architecture", image.architecture.as_str()),
        ("Type", image.kind.as_str()),
        ("Public", yes_no(image.public)),
        ("Cached", yes_no(image.cached)),
        ("Created", image.created_at.as_str()),
        ("Uploaded", image.uploaded_at.as_str()),
        ("Last used", image.last_used_at.as_str()),
    ] {
        let _ = writeln!(s, "{k}: {v}");
    }
    s.push_str("Properties:\n");
    for (k, v) in &image.properties {
        let _ = writeln!(s, "    {k}: {v}");
    }
    s.push_str("Aliases:\n");
    for a in &image.aliases {
        if a.description.is_empty() {
            let _ = writeln!(s, "    - {}", a.name);
        } else {
            let _ = writeln!(s, "    - {} ({})", a.name, a.description);
        }
    }
    if let Some(src) = &image.update_source {
        let _ = writeln!(
            s,
            "Source:\n    Server: {}\n    Protocol: {}\n    Alias: {}",
            src.server, src.protocol, src.alias
        );
    }
    s
}

/// `ctl image copy REMOTE:IMAGE [local:]`: returns the fingerprint.
pub async fn copy(client: &Client, args: &CopyArgs) -> Result<String, Error> {
    if !matches!(args.target.as_str(), "local:" | "local") {
        return Err(Error::Usage(format!(
            "can only copy to local:, not {}",
            args.target
        )));
    }
    let remotes = Config::load(&config_path()).map_err(|e| Error::Usage(e.to_string()))?;
    let (remote, name) = remotes
        .image_ref(&args.source)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let Some(remote) = remote else {
        return Err(Error::Usage(format!(
            "{} is already local: name a remote image, like images:debian/12",
            args.source
        )));
    };
    let fingerprint = super::create::is_fingerprint(name);
    let request = ImagesPost {
        source: Some(ImagesPostSource {
            kind: "image".into(),
            server: remote.addr.clone(),
            protocol: remote.protocol.clone(),
            mode: "pull".into(),
            alias: if fingerprint {
                String::new()
            } else {
                name.into()
            },
            fingerprint: if fingerprint {
                name.into()
            } else {
                String::new()
            },
            ..Default::default()
        }),
        aliases: super::image_transfer::alias_list(&args.aliases),
        public: args.public,
        ..Default::default()
    };
    let body = serde_json::to_value(&request).map_err(|source| crate::Error::Decode {
        what: "copy request".into(),
        source,
    })?;
    let op = client
        .request_operation(Method::POST, "/1.0/images", Some(&body))
        .await?;
    let mut stderr = std::io::stderr();
    let tty = stderr
        .is_terminal()
        .then_some(&mut stderr as &mut dyn Write);
    let done = crate::progress::wait(client, &op.id, tty).await?;
    Ok(super::image_transfer::operation_fingerprint(&done)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_shows_the_fields_a_user_looks_for() {
        let image: Image = serde_json::from_value(json!({
            "fingerprint": "ab".repeat(32), "size": 2048, "architecture": "x86_64",
            "created_at": "2026-01-01T00:00:00Z", "uploaded_at": "2026-01-02T00:00:00Z",
            "properties": {"os": "Debian", "release": "bookworm"}, "public": true, "cached": true,
            "aliases": [{"name": "debian/12", "description": ""}], "type": "container",
            "update_source": {"server": "http://127.0.0.1:1", "protocol": "simplestreams",
                              "alias": "debian/12", "image_type": "container"}
        }))
        .expect("image parses");
        let text = render_info(&image);
        for want in [
            "Fingerprint: abab",
            "Size: 2.00KiB",
            "Public: yes",
            "Cached: yes",
            "    os: Debian",
            "    - debian/12",
            "    Server: http://127.0.0.1:1",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }
}
