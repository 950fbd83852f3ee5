//! `ctl` as a remote client of a ctld over HTTPS: the server's config turns the listener on,
//! `ctl config trust add` makes a token, a second client (its own `CTL_CONF`, and a
//! `CTL_DIR` with no daemon, so nothing can go over a Unix socket) joins with it and works
//! with `REMOTE:` prefixes and `remote switch`; revocation, a spent token, an untrusted
//! client and a wrong pinned certificate each fail with a message that says what to do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ctl_tests::{Daemon, Run, bin_dir, require_root};

/// A `ctl` with its own config dir and no local daemon.
struct RemoteClient {
    conf: tempfile::TempDir,
    nowhere: tempfile::TempDir,
}

impl RemoteClient {
    fn new() -> RemoteClient {
        let dir = || {
            tempfile::Builder::new()
                .prefix("ctl-remote-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temp dir: {e}"))
        };
        RemoteClient {
            conf: dir(),
            nowhere: dir(),
        }
    }

    /// The config dir (`CTL_CONF`).
    fn conf(&self) -> PathBuf {
        self.conf.path().join("ctl")
    }

    fn ctl(&self, args: &[&str]) -> Run {
        Command::new(bin_dir().join("ctl"))
            .args(args)
            .env("CTL_CONF", self.conf())
            .env("CTL_DIR", self.nowhere.path())
            .env_remove("CTL_SOCKET")
            .stdin(Stdio::null())
            .output()
            .map(Run::from)
            .unwrap_or_else(|e| panic!("run ctl {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert_eq!(r.code, 0, "remote client: ctl {args:?} failed: {r:?}");
        r.stdout
    }
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// Turn the daemon's HTTPS listener on; returns `127.0.0.1:PORT`.
fn enable_https(d: &Daemon) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    d.ok(&["config", "set", "core.https_address", &addr]);
    assert_eq!(d.ok(&["config", "get", "core.https_address"]).trim(), addr);
    addr
}

/// `ctl config trust add NAME` on the server: the token (the output's last line).
fn token(d: &Daemon, name: &str) -> String {
    let out = d.ok(&["config", "trust", "add", name]);
    assert!(
        out.starts_with(&format!("Client {name} certificate add token:")),
        "{out}"
    );
    out.lines().last().unwrap_or_default().trim().to_string()
}

/// The fingerprint the server's trust store has for client `name`.
fn trusted_fingerprint(d: &Daemon, name: &str) -> String {
    let json = d.ok(&["config", "trust", "list", "--format", "json"]);
    let certs: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    certs
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .and_then(|c| c["fingerprint"].as_str())
        .unwrap_or_else(|| panic!("no certificate named {name} in {json}"))
        .to_string()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_client_joins_with_a_token_and_works_over_https() {
    if !require_root("a_client_joins_with_a_token_and_works_over_https") {
        return;
    }
    let d = Daemon::start();
    let addr = enable_https(&d);
    d.ok(&["launch", "busybox", "c1"]);

    let token = token(&d, "laptop");
    let tokens = d.ok(&["config", "trust", "list-tokens", "--format", "csv"]);
    assert!(tokens.contains(&format!("laptop,{token},")), "{tokens}");

    let laptop = RemoteClient::new();
    let out = laptop.ok(&["remote", "add", "r1", &token]);
    assert!(out.contains("now trusted"), "{out}");
    // The identity was made on first use, private; the server certificate is pinned.
    assert_eq!(mode(&laptop.conf()), 0o700);
    assert_eq!(mode(&laptop.conf().join("client.key")), 0o600);
    assert!(laptop.conf().join("servercerts/r1.crt").is_file());
    let remotes = laptop.ok(&["remote", "list", "--format", "csv"]);
    assert!(
        remotes.contains(&format!("r1,https://{addr},ctl,NO,tls")),
        "{remotes}"
    );
    let tokens = d.ok(&["config", "trust", "list-tokens", "--format", "csv"]);
    assert!(
        !tokens.contains("laptop"),
        "spent token still listed: {tokens}"
    );

    // The token is spent: another client cannot use it.
    let thief = RemoteClient::new();
    let r = thief.ctl(&["remote", "add", "r1", &token]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("refused the token"), "{}", r.stderr);
    assert!(!thief.conf().join("servercerts/r1.crt").exists());

    // Instances on the remote, with the prefix.
    let list = laptop.ok(&["list", "r1:", "--format", "csv"]);
    assert!(list.contains("c1,RUNNING"), "{list}");
    assert_eq!(laptop.ok(&["exec", "r1:c1", "--", "echo", "hi"]), "hi\n");
    let r = laptop.ctl(&["exec", "r1:c1", "--", "sh", "-c", "echo err >&2; exit 3"]);
    assert_eq!((r.code, r.stderr.as_str()), (3, "err\n"), "{r:?}");
    laptop.ok(&["launch", "busybox", "r1:c2"]);
    assert!(d.instances().contains(&"c2".to_string()));

    // Files both ways over TLS.
    let local = laptop.conf.path().join("hello.txt");
    std::fs::write(&local, "over tls\n").unwrap_or_else(|e| panic!("write: {e}"));
    let local_str = local.display().to_string();
    laptop.ok(&["file", "push", &local_str, "r1:c1/tmp/hello.txt"]);
    assert_eq!(
        laptop.ok(&["file", "pull", "r1:c1/tmp/hello.txt", "-"]),
        "over tls\n"
    );

    // Server config through the remote.
    assert_eq!(
        laptop
            .ok(&["config", "get", "r1:", "core.https_address"])
            .trim(),
        addr
    );

    // The default remote.
    assert_eq!(laptop.ok(&["remote", "get-default"]).trim(), "local");
    laptop.ok(&["remote", "switch", "r1"]);
    assert_eq!(laptop.ok(&["remote", "get-default"]).trim(), "r1");
    let list = laptop.ok(&["list", "--format", "csv"]);
    assert!(list.contains("c1,") && list.contains("c2,"), "{list}");
    assert!(
        laptop
            .ok(&["remote", "list", "--format", "csv"])
            .contains("r1 (current),")
    );
    laptop.ok(&["stop", "c2", "--force"]);
    laptop.ok(&["delete", "c2"]);
    assert!(!d.instances().contains(&"c2".to_string()));

    // The dashboard link names the listener.
    let link = laptop.ok(&["ui"]);
    assert_eq!(link.lines().count(), 1, "{link}");
    assert!(
        link.starts_with(&format!("https://{addr}/ui/login?token=")),
        "{link}"
    );

    // Renamed, the pinned certificate and the default follow.
    laptop.ok(&["remote", "rename", "r1", "srv"]);
    assert!(laptop.conf().join("servercerts/srv.crt").is_file());
    assert_eq!(laptop.ok(&["remote", "get-default"]).trim(), "srv");
    assert!(
        laptop
            .ok(&["list", "srv:", "--format", "csv"])
            .contains("c1,")
    );

    // Revoked: the next command is refused, saying why.
    let fingerprint = trusted_fingerprint(&d, "laptop");
    d.ok(&["config", "trust", "remove", &fingerprint[..12]]);
    let r = laptop.ctl(&["list"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("not authorized by remote \"srv\""),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("ctl config trust add"), "{}", r.stderr);
}

#[test]
fn untrusted_clients_and_wrong_certificates_get_clear_errors() {
    if !require_root("untrusted_clients_and_wrong_certificates_get_clear_errors") {
        return;
    }
    let d = Daemon::start();
    let addr = enable_https(&d);
    let url = format!("https://{addr}");
    let client = RemoteClient::new();

    // No terminal to confirm the certificate on, and no flag or token.
    let r = client.ctl(&["remote", "add", "r2", &url]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--accept-certificate"), "{}", r.stderr);

    // Accepted, but the server does not trust this client: told to get a token.
    let r = client.ctl(&["remote", "add", "r2", &url, "--accept-certificate"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("does not trust this client"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("ctl config trust add"), "{}", r.stderr);
    assert!(
        !client
            .ok(&["remote", "list", "--format", "csv"])
            .contains("r2")
    );
    assert!(!client.conf().join("servercerts/r2.crt").exists());

    // Trusted by its certificate (added on the server), the same add works.
    let cert = client.conf().join("client.crt");
    let cert_arg = cert.display().to_string();
    d.ok(&[
        "config",
        "trust",
        "add-certificate",
        &cert_arg,
        "--name",
        "desk",
    ]);
    client.ok(&["remote", "add", "r2", &url, "--accept-certificate"]);
    assert!(
        client
            .ok(&["list", "r2:", "--format", "csv"])
            .starts_with("NAME,")
    );
    let show = d.ok(&["config", "trust", "show", &trusted_fingerprint(&d, "desk")]);
    assert!(show.contains("name: desk"), "{show}");

    // A token whose fingerprint is not the server's is refused before the secret is sent.
    let token = token(&d, "other");
    let forged = forge_fingerprint(&token);
    let r = RemoteClient::new().ctl(&["remote", "add", "r3", &forged]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("certificate fingerprint mismatch"),
        "{}",
        r.stderr
    );
    d.ok(&["config", "trust", "revoke-token", "other"]);
    let r = RemoteClient::new().ctl(&["remote", "add", "r3", &token]);
    assert!(r.stderr.contains("refused the token"), "{r:?}");

    // A URL with --token: the token's fingerprint vouches for the certificate.
    let token = self::token(&d, "desk2");
    let desk2 = RemoteClient::new();
    desk2.ok(&["remote", "add", "r4", &url, "--token", &token]);
    assert_eq!(
        desk2
            .ok(&["config", "get", "r4:", "core.https_address"])
            .trim(),
        addr
    );
    let tokens = d.ok(&["config", "trust", "list-tokens", "--format", "csv"]);
    assert!(!tokens.contains("other"), "{tokens}");

    // Another certificate pinned: refused, both fingerprints named.
    let pinned = client.conf().join("servercerts/r2.crt");
    std::fs::copy(&cert, &pinned).unwrap_or_else(|e| panic!("copy: {e}"));
    let r = client.ctl(&["list", "r2:"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("is pinned"), "{}", r.stderr);
    let server_fp = server_fingerprint(&d);
    let client_fp = trusted_fingerprint(&d, "desk");
    assert!(r.stderr.contains(&server_fp), "{}", r.stderr);
    assert!(r.stderr.contains(&client_fp), "{}", r.stderr);
}

/// The server certificate's fingerprint (`GET /1.0`).
fn server_fingerprint(d: &Daemon) -> String {
    let (_, v) = d.http("GET", "/1.0", None);
    v["metadata"]["environment"]["certificate_fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The token with another server fingerprint.
fn forge_fingerprint(token: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine
        .decode(token)
        .unwrap_or_else(|e| panic!("token: {e}"));
    let mut json: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("token json: {e}"));
    json["fingerprint"] = serde_json::json!("00".repeat(32));
    engine.encode(json.to_string())
}

#[test]
fn on_a_terminal_the_certificate_is_confirmed_by_the_user() {
    if !require_root("on_a_terminal_the_certificate_is_confirmed_by_the_user") {
        return;
    }
    let d = Daemon::start();
    let addr = enable_https(&d);
    let url = format!("https://{addr}");
    // The daemon's own client config: make its identity (a refused add) and trust it.
    let r = d.ctl(&["remote", "add", "me", &url, "--accept-certificate"]);
    assert_ne!(r.code, 0, "{r:?}");
    let cert = d.path().join("client/client.crt");
    d.ok(&[
        "config",
        "trust",
        "add-certificate",
        &cert.display().to_string(),
    ]);
    let fingerprint = server_fingerprint(&d);

    let no = format!("expect:{fingerprint};;expect:ok (y/n)? ;;send:n\\n");
    let (ok, t) = d.ctl_on_pty(&no, &["remote", "add", "me", &url]);
    assert!(ok, "{t}");
    assert!(t.contains("not accepted") && t.contains("EXIT 1"), "{t}");
    assert!(!d.path().join("client/servercerts/me.crt").exists());

    let yes = format!("expect:{fingerprint};;expect:ok (y/n)? ;;send:y\\n");
    let (ok, t) = d.ctl_on_pty(&yes, &["remote", "add", "me", &url]);
    assert!(ok && t.contains("EXIT 0"), "{t}");
    assert!(
        d.ok(&["list", "me:", "--format", "csv"])
            .starts_with("NAME,"),
        "{t}"
    );

    // An interactive exec over TLS: the PTY stream, a window resize and the exit code.
    d.ok(&["launch", "busybox", "me:tty1"]);
    let script = [
        "send:stty size\\n",
        "expect:24 80",
        "resize:40x120",
        "send:stty size\\n",
        "expect:40 120",
        "send:echo over-$((6*7))\\n",
        "expect:over-42",
        "send:exit 3\\n",
    ]
    .join(";;");
    let (ok, t) = d.ctl_on_pty(&script, &["exec", "me:tty1", "--", "sh"]);
    assert!(ok, "{t}");
    assert!(t.trim_end().ends_with("EXIT 3"), "{t}");
}

/// `ctl launch IMAGE_REMOTE:IMAGE REMOTE:NAME`: the image's server and the instance's are
/// independent. Daemon `a` serves its public busybox as a simplestreams tree (as
/// images.linuxcontainers.org would), `b` is a remote ctld over HTTPS; the client tells
/// `b` to pull the image from `a` and run it.
#[test]
fn an_image_from_one_remote_launches_on_another() {
    if !require_root("an_image_from_one_remote_launches_on_another") {
        return;
    }
    let http = format!("127.0.0.1:{}", free_port());
    let a = Daemon::start_with(&["--http-address", &http]);
    a.ok(&["image", "list"]);
    a.ok(&["init", "busybox", "warm"]);
    let (s, v) = a.http("GET", "/1.0/images?recursion=1", None);
    assert_eq!(s, 200, "{v}");
    let fp = v["metadata"][0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (s, v) = a.http(
        "PATCH",
        &format!("/1.0/images/{fp}"),
        Some(r#"{"public": true}"#),
    );
    assert_eq!(s, 200, "{v}");

    let b = Daemon::start();
    let addr = enable_https(&b);
    let client = RemoteClient::new();
    client.ok(&["remote", "add", "r1", &token(&b, "laptop")]);
    client.ok(&[
        "remote",
        "add",
        "imgs",
        &format!("http://{http}"),
        "--protocol",
        "simplestreams",
    ]);
    client.ok(&["launch", "imgs:busybox", "r1:c1"]);
    assert_eq!(
        client.ok(&["exec", "r1:c1", "--", "echo", "pulled"]).trim(),
        "pulled"
    );
    // It runs on b, from an image b now has (pulled from a), and not on a.
    assert!(
        b.instances().contains(&"c1".to_string()),
        "{:?}",
        b.instances()
    );
    assert!(!a.instances().contains(&"c1".to_string()));
    let (s, img) = b.http("GET", &format!("/1.0/images/{fp}"), None);
    assert_eq!(s, 200, "b pulled the image: {img}");
    assert_eq!(
        img["metadata"]["update_source"]["server"],
        format!("http://{http}")
    );
    drop(addr);
}
