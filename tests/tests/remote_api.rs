//! The API over HTTPS (`core.https_address`): client certificates and the trust store,
//! one-time tokens, revocation on the next request of an open connection, dashboard
//! sessions with their origin checks, and the real clients (LXD 5.0's `lxc`, Incus 6.0's
//! `incus`, pylxd) joining and working remotely. Everything on loopback.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use ctl_tests::clients::Cli;
use ctl_tests::{Daemon, require_root, wait_until};
use serde_json::{Value, json};

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// Serve the API on `127.0.0.1:<free port>`; the port.
fn enable_https(d: &Daemon) -> u16 {
    let port = free_port();
    let body = json!({"config": {"core.https_address": format!("127.0.0.1:{port}")}});
    let (s, v) = d.http("PATCH", "/1.0", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    port
}

/// A self-signed client certificate and key made with openssl, as a user would.
struct ClientCert {
    _dir: tempfile::TempDir,
    crt: PathBuf,
    key: PathBuf,
}

impl ClientCert {
    fn new(name: &str) -> ClientCert {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (crt, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ClientCert {
            _dir: dir,
            crt,
            key,
        }
    }

    fn pem(&self) -> String {
        std::fs::read_to_string(&self.crt).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One kept-alive TLS connection to the daemon (`tests/https_probe.py`).
struct Probe {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// One answer of a [`Probe`].
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
    headers: Value,
    port: u64,
}

impl Probe {
    fn open(d: &Daemon, port: u16, cert: Option<&ClientCert>) -> Probe {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("https_probe.py");
        let mut c = Command::new("python3");
        c.arg(script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(d.path().join("server.crt"));
        if let Some(cert) = cert {
            c.arg(&cert.crt).arg(&cert.key);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        let input = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        let output = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
        Probe {
            child,
            input,
            output,
        }
    }

    fn send(&mut self, method: &str, path: &str, body: Option<Value>, headers: Value) -> Answer {
        let mut req = json!({"method": method, "path": path, "headers": headers});
        if let Some(b) = body {
            req["body"] = b;
        }
        writeln!(self.input, "{req}").unwrap_or_else(|e| panic!("probe: {e}"));
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let text = v["body"].as_str().unwrap_or_default().to_string();
        Answer {
            status: v["status"].as_u64().unwrap_or(0) as u16,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            headers: v["headers"].clone(),
            port: v["port"].as_u64().unwrap_or(0),
        }
    }

    fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None, json!({}))
    }

    fn line(&mut self, req: Value) -> Value {
        writeln!(self.input, "{req}").unwrap_or_else(|e| panic!("probe: {e}"));
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("probe: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Open websocket `name` on a connection of its own: the handshake's status.
    fn ws_open(&mut self, name: &str, path: &str, headers: Value) -> u16 {
        let v = self.line(json!({"ws_open": name, "path": path, "headers": headers}));
        v["status"].as_u64().unwrap_or(0) as u16
    }

    /// The text frames websocket `name` got within `seconds`, and whether the server
    /// ended it.
    fn ws_read(&mut self, name: &str, seconds: f64) -> (Vec<String>, bool) {
        let v = self.line(json!({"ws_read": name, "seconds": seconds}));
        let frames = v["frames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (frames, v["closed"].as_bool().unwrap_or(false))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (padded), as Incus encodes tokens.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Ask the daemon for a token for `name` (as `ctl config trust add` does): the token
/// and its operation's id.
fn token(d: &Daemon, name: &str) -> (String, String) {
    let body = json!({"name": name, "type": "client", "token": true});
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body.to_string()));
    assert_eq!(s, 202, "{v}");
    let op = &v["metadata"];
    assert_eq!(op["class"], "token", "{v}");
    let m = &op["metadata"];
    let t = json!({
        "client_name": name,
        "fingerprint": m["fingerprint"],
        "addresses": m["addresses"],
        "secret": m["secret"],
        "expires_at": m["expiresAt"],
    });
    (
        base64(t.to_string().as_bytes()),
        op["id"].as_str().unwrap_or_default().to_string(),
    )
}

fn fingerprints(d: &Daemon) -> Vec<Value> {
    let (s, v) = d.http("GET", "/1.0/certificates?recursion=1", None);
    assert_eq!(s, 200, "{v}");
    v["metadata"].as_array().cloned().unwrap_or_default()
}

#[test]
fn certificates_decide_and_a_revoked_one_is_refused_on_its_next_request() {
    if !require_root("certificates_decide") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    let port = enable_https(&d);
    // The server certificate: made at first start, its key root's alone.
    let key_mode = std::fs::metadata(d.path().join("server.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or_default();
    assert_eq!(key_mode, 0o600);

    // No certificate, and an unknown one: `GET /1.0` (untrusted) and nothing else.
    let stranger = ClientCert::new("stranger");
    for cert in [None, Some(&stranger)] {
        let mut p = Probe::open(&d, port, cert);
        let a = p.get("/1.0");
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["metadata"]["auth"], "untrusted");
        assert_eq!(
            a.body["metadata"]["environment"]["kernel"], "",
            "no host facts"
        );
        assert_eq!(a.body["metadata"]["config"], json!({}));
        for path in [
            "/1.0/instances",
            "/1.0/certificates",
            "/1.0/operations",
            "/1.0/metrics",
        ] {
            let a = p.get(path);
            assert_eq!(a.status, 403, "{path}: {}", a.text);
            assert_eq!(a.body["error_code"], 403);
        }
        let ws = p.send(
            "GET",
            "/1.0/events",
            None,
            json!({"Connection": "Upgrade", "Upgrade": "websocket",
                   "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}),
        );
        assert_eq!(ws.status, 403, "events websocket: {}", ws.text);
        // A refused upgrade ends its connection.
        let mut p = Probe::open(&d, port, cert);
        let a = p.send(
            "POST",
            "/1.0/instances",
            Some(json!({"name": "x"})),
            json!({}),
        );
        assert_eq!(a.status, 403);
        let a = p.send("PATCH", "/1.0", Some(json!({"config": {}})), json!({}));
        assert_eq!(a.status, 403);
        // Asking for a token is an admin's request.
        let a = p.send(
            "POST",
            "/1.0/certificates",
            Some(json!({"type": "client", "token": true})),
            json!({}),
        );
        assert_eq!(a.status, 403, "{}", a.text);
    }

    // Trusted by certificate: the whole API.
    let laptop = ClientCert::new("laptop");
    let body = json!({"name": "laptop", "type": "client", "certificate": laptop.pem()});
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    let fp = fingerprints(&d)
        .iter()
        .find(|c| c["name"] == "laptop")
        .and_then(|c| c["fingerprint"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("laptop not listed"));
    assert_eq!(fp.len(), 64);
    let mut p = Probe::open(&d, port, Some(&laptop));
    let a = p.get("/1.0");
    assert_eq!(a.body["metadata"]["auth"], "trusted", "{}", a.text);
    let env = &a.body["metadata"]["environment"];
    assert_eq!(env["addresses"], json!([format!("127.0.0.1:{port}")]));
    assert!(
        env["certificate"]
            .as_str()
            .unwrap_or_default()
            .contains("BEGIN CERTIFICATE")
    );
    let a = p.get("/1.0/instances?recursion=1");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["metadata"][0]["name"], "c1");
    assert_eq!(a.body["metadata"][0]["status"], "Running");
    let a = p.send(
        "POST",
        "/1.0/instances/c1/exec",
        Some(
            json!({"command": ["echo", "over-tls"], "record-output": true,
                    "wait-for-websocket": false, "interactive": false}),
        ),
        json!({}),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let op = a.body["operation"].as_str().unwrap_or_default().to_string();
    let done = p.get(&format!("{op}/wait?timeout=30"));
    assert_eq!(
        done.body["metadata"]["metadata"]["return"], 0,
        "{}",
        done.text
    );
    let log = done.body["metadata"]["metadata"]["output"]["1"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = p.get(&log);
    assert_eq!(out.text, "over-tls\n");
    let a = p.get("/1.0/certificates?recursion=1");
    assert_eq!(a.status, 200);
    // Every answer carries the security headers.
    assert_eq!(a.headers["x-frame-options"], "DENY");
    assert_eq!(a.headers["x-content-type-options"], "nosniff");
    assert_eq!(a.headers["referrer-policy"], "no-referrer");
    assert!(
        a.headers["content-security-policy"]
            .as_str()
            .unwrap_or_default()
            .starts_with("default-src 'self'")
    );

    // Revoked while its connection stays open: the server ends that connection, so its
    // next request fails, and the next connection is refused.
    let before = p.get("/1.0/instances");
    assert_eq!(before.status, 200);
    assert!(before.port > 0);
    let (s, v) = d.http("DELETE", &format!("/1.0/certificates/{}", &fp[..12]), None);
    assert_eq!(s, 200, "{v}");
    let after = p.get("/1.0/instances");
    assert_eq!(
        after.status, 0,
        "the revoked connection was ended: {}",
        after.text
    );
    let again = p.get("/1.0/instances");
    assert_ne!(again.port, before.port, "a new connection");
    assert_eq!(again.status, 403, "{}", again.text);
    assert_eq!(p.get("/1.0").body["metadata"]["auth"], "untrusted");
    let (s, _) = d.http("GET", &format!("/1.0/certificates/{fp}"), None);
    assert_eq!(s, 404);

    // A metrics certificate reads metrics and nothing else.
    let scraper = ClientCert::new("scraper");
    let body = json!({"name": "scraper", "type": "metrics", "certificate": scraper.pem()});
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    let mut m = Probe::open(&d, port, Some(&scraper));
    let a = m.get("/1.0/metrics");
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.text.contains("ctl_cpu_seconds_total{name=\"c1\""),
        "{}",
        a.text
    );
    assert_eq!(m.get("/1.0/instances").status, 403);

    // Bad certificates are refused whole.
    for bad in [
        json!({"type": "client", "certificate": "junk"}),
        json!({"type": "server", "certificate": laptop.pem()}),
        json!({"type": "client", "certificate": scraper.pem()}),
    ] {
        let (s, v) = d.http("POST", "/1.0/certificates", Some(&bad.to_string()));
        assert!(s == 400 || s == 409, "{bad}: {s} {v}");
    }
    assert_eq!(fingerprints(&d).len(), 1, "only the scraper");
}

#[test]
fn a_token_admits_one_client_once() {
    if !require_root("a_token_admits_one_client_once") {
        return;
    }
    let d = Daemon::start();
    // No token while the server does not listen on the network.
    let body = json!({"name": "x", "type": "client", "token": true}).to_string();
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body));
    assert_eq!(s, 400, "{v}");
    let port = enable_https(&d);
    let (tok, op) = token(&d, "phone");
    let (s, v) = d.http("GET", &format!("/1.0/operations/{op}"), None);
    assert_eq!(s, 200);
    assert_eq!(v["metadata"]["status"], "Running");

    let phone = ClientCert::new("phone");
    let mut p = Probe::open(&d, port, Some(&phone));
    assert_eq!(p.get("/1.0").body["metadata"]["auth"], "untrusted");
    // A wrong token admits nobody.
    let a = p.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": "bm9wZQ=="})),
        json!({}),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let a = p.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": tok})),
        json!({}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    // Trusted at once, on the same connection, under the token's name.
    assert_eq!(p.get("/1.0").body["metadata"]["auth"], "trusted");
    assert_eq!(p.get("/1.0/instances").status, 200);
    let certs = fingerprints(&d);
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0]["name"], "phone");
    assert_eq!(certs[0]["type"], "client");
    let (_, v) = d.http("GET", &format!("/1.0/operations/{op}"), None);
    assert_eq!(v["metadata"]["status"], "Success", "the token is spent");

    // Spent: a second client with the same token is refused.
    let thief = ClientCert::new("thief");
    let mut t = Probe::open(&d, port, Some(&thief));
    let a = t.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": tok})),
        json!({}),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(t.get("/1.0/instances").status, 403);

    // A revoked token (its operation cancelled) admits nobody.
    let (tok2, op2) = token(&d, "tablet");
    let (s, v) = d.http("DELETE", &format!("/1.0/operations/{op2}"), None);
    assert_eq!(s, 200, "{v}");
    let a = t.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": tok2})),
        json!({}),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    // Without a client certificate a token is useless (and stays unspent).
    let (tok3, op3) = token(&d, "nocert");
    let mut anon = Probe::open(&d, port, None);
    let a = anon.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": tok3})),
        json!({}),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let (_, v) = d.http("GET", &format!("/1.0/operations/{op3}"), None);
    assert_eq!(v["metadata"]["status"], "Running");
    assert_eq!(fingerprints(&d).len(), 1);
}

#[test]
fn the_https_address_applies_at_once_and_survives_a_restart() {
    if !require_root("the_https_address_applies") {
        return;
    }
    let mut d = Daemon::start();
    let up = |d: &Daemon, port: u16| {
        let mut p = Probe::open(d, port, None);
        p.get("/1.0").status == 200
    };
    let port1 = enable_https(&d);
    assert!(up(&d, port1));
    let (_, v) = d.http("GET", "/1.0", None);
    assert_eq!(
        v["metadata"]["config"]["core.https_address"],
        format!("127.0.0.1:{port1}")
    );
    // Moved: the old port is closed, the new one serves, in the same request.
    let port2 = free_port();
    let body = json!({"config": {"core.https_address": format!("127.0.0.1:{port2}")}});
    let (s, v) = d.http("PUT", "/1.0", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    assert!(up(&d, port2));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port1)).is_err(),
        "old port closed"
    );
    // Refused whole, the listener untouched: bad values, unknown keys, trust passwords,
    // an address already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let taken_port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    for bad in [
        json!({"core.https_address": "nowhere:1"}),
        json!({"core.https_address": ":0"}),
        json!({"core.https_address": format!("127.0.0.1:{taken_port}")}),
        json!({"core.frobnicate": "1"}),
        json!({"core.trust_password": "hunter2"}),
    ] {
        let (s, v) = d.http("PATCH", "/1.0", Some(&json!({"config": bad}).to_string()));
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    drop(taken);
    assert!(up(&d, port2));
    let (_, v) = d.http("GET", "/1.0", None);
    assert_eq!(
        v["metadata"]["config"],
        json!({"core.https_address": format!("127.0.0.1:{port2}")})
    );
    // Kept across a restart, with the same server certificate.
    let fp = v["metadata"]["environment"]["certificate_fingerprint"].clone();
    d.restart();
    assert!(wait_until(Duration::from_secs(10), || up(&d, port2)));
    let (_, v) = d.http("GET", "/1.0", None);
    assert_eq!(v["metadata"]["environment"]["certificate_fingerprint"], fp);
    // Unset: nothing listens.
    let body = json!({"config": {"core.https_address": ""}});
    let (s, v) = d.http("PATCH", "/1.0", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port2)).is_err());
    let (_, v) = d.http("GET", "/1.0", None);
    assert_eq!(v["metadata"]["config"], json!({}));
}

#[test]
fn dashboard_sessions_ride_on_a_cookie_from_the_own_origin_only() {
    if !require_root("dashboard_sessions") {
        return;
    }
    let d = Daemon::start();
    let (s, _) = d.http("POST", "/1.0/ui/login-links", None);
    assert_eq!(s, 400, "no link while nothing listens");
    let port = enable_https(&d);
    let (s, v) = d.http("POST", "/1.0/ui/login-links", None);
    assert_eq!(s, 200, "{v}");
    let url = v["metadata"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let prefix = format!("https://127.0.0.1:{port}");
    assert!(
        url.starts_with(&format!("{prefix}/ui/login?token=")),
        "{url}"
    );
    let path = url.trim_start_matches(&prefix).to_string();

    let mut p = Probe::open(&d, port, None);
    let a = p.get(&path);
    assert_eq!(a.status, 303, "{}", a.text);
    assert_eq!(a.headers["location"], "/ui/");
    let cookie = a.headers["set-cookie"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    assert!(session.starts_with("__Host-ctl_session_"), "{cookie}");
    // Single use.
    let again = p.get(&path);
    assert_eq!(again.status, 403);
    assert!(again.headers.get("set-cookie").is_none());

    let own = prefix.clone();
    let with = |origin: Option<&str>| {
        let mut h = json!({"Cookie": session});
        if let Some(o) = origin {
            h["Origin"] = json!(o);
        }
        h
    };
    // Reads with the cookie work; without it they are refused.
    let a = p.send("GET", "/1.0/instances", None, with(None));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(p.get("/1.0/instances").status, 403, "no cookie");
    let forged = json!({"Cookie": format!("{}=0123456789abcdef", session.split('=').next().unwrap_or_default())});
    assert_eq!(p.send("GET", "/1.0/instances", None, forged).status, 403);
    // Changes and websocket upgrades: only from the own origin.
    let create = json!({"name": "c9", "source": {"type": "image", "alias": "busybox"}});
    let a = p.send("POST", "/1.0/instances", Some(create.clone()), with(None));
    assert_eq!(a.status, 403, "no origin: {}", a.text);
    let a = p.send(
        "POST",
        "/1.0/instances",
        Some(create.clone()),
        with(Some("https://evil.example")),
    );
    assert_eq!(a.status, 403, "foreign origin: {}", a.text);
    assert_eq!(a.body["error"], "cross-origin request refused");
    let mut ws = with(Some("https://evil.example"));
    ws["Connection"] = json!("Upgrade");
    ws["Upgrade"] = json!("websocket");
    ws["Sec-WebSocket-Version"] = json!("13");
    ws["Sec-WebSocket-Key"] = json!("dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(p.send("GET", "/1.0/events", None, ws).status, 403);
    assert!(d.instances().is_empty(), "nothing made by refused requests");
    // A refused upgrade ends its connection.
    let mut p = Probe::open(&d, port, None);
    let a = p.send("POST", "/1.0/instances", Some(create), with(Some(&own)));
    assert_eq!(a.status, 202, "own origin: {}", a.text);
    let op = a.body["operation"].as_str().unwrap_or_default().to_string();
    let done = p.send("GET", &format!("{op}/wait?timeout=30"), None, with(None));
    assert_eq!(done.body["metadata"]["status"], "Success", "{}", done.text);
    assert_eq!(d.instances(), vec!["c9".to_string()]);
    // Logout ends the session.
    let a = p.send("POST", "/ui/logout", None, with(Some(&own)));
    assert_eq!(a.status, 204, "{}", a.text);
    assert!(
        a.headers["set-cookie"]
            .as_str()
            .unwrap_or_default()
            .contains("Max-Age=0")
    );
    assert_eq!(
        p.send("GET", "/1.0/instances", None, with(None)).status,
        403
    );
    // Sessions cannot mint login links (only the socket's root can).
    assert_eq!(
        p.send("POST", "/1.0/ui/login-links", None, json!({}))
            .status,
        403
    );
}

#[test]
fn lxc_incus_and_pylxd_work_over_https() {
    if !require_root("lxc_incus_and_pylxd_work_over_https") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    let port = enable_https(&d);

    // LXD 5.0: join with a token, list, exec (websockets), events.
    if let Some(lxc) = Cli::lxc(&d) {
        let (tok, _) = token(&d, "lxc-client");
        lxc.ok(&["remote", "add", "r1", &tok]);
        let list = lxc.ok(&["list", "r1:", "--format", "csv", "-c", "ns"]);
        assert_eq!(list.trim(), "c1,RUNNING");
        let out = lxc.ok(&["exec", "r1:c1", "--", "sh", "-c", "echo lxc-$((6*7))"]);
        assert_eq!(out.trim(), "lxc-42");
        // Files both ways, the console log, metrics: the rest of the API over TLS.
        let local = d.path().join("pushed.txt");
        std::fs::write(&local, "over tls\n").unwrap_or_else(|e| panic!("{e}"));
        lxc.ok(&[
            "file",
            "push",
            &local.display().to_string(),
            "r1:c1/root/pushed.txt",
        ]);
        assert_eq!(
            lxc.ok(&["exec", "r1:c1", "--", "cat", "/root/pushed.txt"]),
            "over tls\n"
        );
        assert_eq!(
            lxc.ok(&["file", "pull", "r1:c1/root/pushed.txt", "-"]),
            "over tls\n"
        );
        lxc.ok(&["console", "r1:c1", "--show-log"]);
        let metrics = lxc.ok(&["query", "r1:/1.0/metrics"]);
        assert!(metrics.contains("name=\"c1\""), "{metrics}");
        let mut monitor = lxc
            .command(&["monitor", "r1:", "--type", "lifecycle", "--format", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("lxc monitor: {e}"));
        std::thread::sleep(Duration::from_millis(800));
        d.ok(&["stop", "--force", "c1"]);
        std::thread::sleep(Duration::from_millis(800));
        let _ = monitor.kill();
        let out = monitor.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let events = String::from_utf8_lossy(&out.stdout);
        assert!(
            events.contains("instance-stopped"),
            "events over TLS: {events}"
        );
        lxc.ok(&["start", "r1:c1"]);
        assert_eq!(
            lxc.ok(&["list", "r1:", "--format", "csv", "-c", "s"])
                .trim(),
            "RUNNING"
        );
    }

    // Incus 6.0: join with a token, list, exec.
    if let Some(incus) = Cli::incus(&d) {
        let (tok, _) = token(&d, "incus-client");
        incus.ok(&["remote", "add", "r2", &tok]);
        let list = incus.ok(&["list", "r2:", "--format", "csv", "-c", "ns"]);
        assert_eq!(list.trim(), "c1,RUNNING");
        let out = incus.ok(&["exec", "r2:c1", "--", "echo", "incus-over-tls"]);
        assert_eq!(out.trim(), "incus-over-tls");
        let trust = incus.ok(&["config", "trust", "list", "r2:", "--format", "csv"]);
        assert!(trust.contains("incus-client"), "{trust}");
    }

    // pylxd with a client certificate, the server's pinned.
    let cert = ClientCert::new("pylxd");
    let body = json!({"name": "pylxd", "type": "client", "certificate": cert.pem()});
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
    let script = r#"
import sys, pylxd
url, crt, key, server = sys.argv[1:5]
c = pylxd.Client(endpoint=url, cert=(crt, key), verify=server)
assert c.trusted, "not trusted"
names = [i.name for i in c.instances.all()]
assert names == ["c1"], names
r = c.instances.get("c1").execute(["sh", "-c", "echo py-$((6*7))"])
assert r.exit_code == 0 and r.stdout.strip() == "py-42", r
print("ok pylxd https")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("https://127.0.0.1:{port}"))
        .arg(&cert.crt)
        .arg(&cert.key)
        .arg(d.path().join("server.crt"))
        // requests prefers these to the session's own `verify`.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok pylxd https"),
        "pylxd: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn what_web_dashboards_check_for_is_there() {
    if !require_root("what_web_dashboards_check_for_is_there") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1", "-c", "limits.memory=64MiB"]);
    let (_, v) = d.http("GET", "/1.0", None);
    let ext = v["metadata"]["api_extensions"].clone();
    for e in [
        "instance_create_start",
        "metadata_configuration",
        "explicit_trust_token",
        "instances_state_selective_recursion",
        "certificate_token",
    ] {
        assert!(ext.as_array().is_some_and(|a| a.contains(&json!(e))), "{e}");
    }
    let (s, v) = d.http("GET", "/1.0/metadata/configuration", None);
    assert_eq!(s, 200);
    let limits = &v["metadata"]["configs"]["instance"]["resource-limits"]["keys"];
    assert!(limits.to_string().contains("limits.memory"), "{limits}");

    // Memory totals: the limit when there is one ("340 KiB of NaN KiB" before).
    let (_, v) = d.http("GET", "/1.0/instances/c1/state", None);
    assert_eq!(v["metadata"]["memory"]["total"], 64 << 20, "{v}");
    assert!(v["metadata"]["memory"]["usage"].as_i64().unwrap_or(0) > 0);

    // `recursion=2;fields=...`: the network only when asked for.
    let (s, v) = d.http(
        "GET",
        "/1.0/instances?recursion=2;fields=state.network",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v["metadata"][0]["state"]["network"]["lo"].is_object(),
        "{v}"
    );
    let (s, v) = d.http("GET", "/1.0/instances?recursion=2;fields=state.disk", None);
    assert_eq!(s, 200, "{v}");
    assert!(v["metadata"][0]["state"]["network"].is_null(), "{v}");
    assert_eq!(v["metadata"][0]["state"]["memory"]["total"], 64 << 20);
    let (s, _) = d.http("GET", "/1.0/instances?recursion=2;nonsense", None);
    assert_eq!(s, 400);

    // Project usage in Incus' capitalized keys; empty collections of features ctld lacks.
    let (_, v) = d.http("GET", "/1.0/projects/default/state", None);
    assert_eq!(v["metadata"]["resources"]["instances"]["Usage"], 1, "{v}");
    assert_eq!(v["metadata"]["resources"]["instances"]["Limit"], -1, "{v}");
    for path in [
        "/1.0/network-acls?recursion=1",
        "/1.0/network-allocations?recursion=1",
        "/1.0/storage-pools/default/buckets?recursion=1",
    ] {
        let (s, v) = d.http("GET", path, None);
        assert_eq!((s, v["metadata"].clone()), (200, json!([])), "{path}");
    }
    let (s, _) = d.http("GET", "/1.0/storage-pools/nope/buckets", None);
    assert_eq!(s, 404);
    // An instance's root volume has a state (the volumes page shows its size).
    d.ok(&[
        "exec",
        "c1",
        "--",
        "dd",
        "if=/dev/zero",
        "of=/root/f",
        "bs=1M",
        "count=3",
    ]);
    let (s, v) = d.http(
        "GET",
        "/1.0/storage-pools/default/volumes/container/c1/state",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        v["metadata"]["usage"]["used"].as_i64().unwrap_or(0) >= 3 << 20,
        "{v}"
    );
    assert_eq!(v["metadata"]["usage"]["total"], -1);
    let (s, _) = d.http(
        "GET",
        "/1.0/storage-pools/default/volumes/container/nope/state",
        None,
    );
    assert_eq!(s, 404);
    // A finished operation leaves the list after five seconds (UIs read "an operation on
    // this instance is under way" from it) and can still be read by id.
    d.ok(&["restart", "--force", "c1"]);
    let listed = |d: &Daemon| {
        let (_, v) = d.http("GET", "/1.0/operations?recursion=1", None);
        v["metadata"].to_string()
    };
    assert!(listed(&d).contains("Restarting instance"), "{}", listed(&d));
    assert!(wait_until(Duration::from_secs(8), || !listed(&d)
        .contains("Restarting instance")));
}

#[test]
fn another_dashboard_build_runs_its_own_inline_scripts_only() {
    if !require_root("another_dashboard_build_runs_its_own_inline_scripts_only") {
        return;
    }
    let ui = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = "const global = globalThis;";
    std::fs::write(
        ui.path().join("index.html"),
        format!("<html><head><script>{script}</script></head><body>other ui</body></html>"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start_with(&["--ui-dir", &ui.path().display().to_string()]);
    let port = enable_https(&d);
    let mut p = Probe::open(&d, port, None);
    let a = p.get("/ui/instances");
    assert_eq!(a.status, 200);
    assert!(a.text.contains("other ui"));
    let csp = a.headers["content-security-policy"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // sha256 of the script's text, base64: what a browser compares.
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import hashlib,base64;print(base64.b64encode(hashlib.sha256(b'{script}').digest()).decode())"
        ))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        csp.contains(&format!("script-src 'self' 'sha256-{hash}';")),
        "{csp}"
    );
    assert!(csp.contains("style-src 'self' 'unsafe-inline'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // The API keeps the strict policy.
    let a = p.get("/1.0");
    let api = a.headers["content-security-policy"]
        .as_str()
        .unwrap_or_default();
    assert!(!api.contains("unsafe") && !api.contains("sha256"), "{api}");
}

/// Add `cert` to the trust store through the socket.
fn trust(d: &Daemon, name: &str, cert: &ClientCert, restricted: bool) {
    let body = json!({"name": name, "type": "client", "certificate": cert.pem(),
                      "restricted": restricted, "projects": if restricted { json!(["default"]) } else { json!([]) }});
    let (s, v) = d.http("POST", "/1.0/certificates", Some(&body.to_string()));
    assert_eq!(s, 200, "{v}");
}

#[test]
fn a_restricted_certificate_never_sees_tokens_nor_changes_the_server() {
    if !require_root("a_restricted_certificate_never_sees_tokens") {
        return;
    }
    let d = Daemon::start();
    d.ok(&["launch", "busybox", "c1"]);
    let port = enable_https(&d);
    let ops_cert = ClientCert::new("operator");
    trust(&d, "operator", &ops_cert, true);
    let mut p = Probe::open(&d, port, Some(&ops_cert));
    assert_eq!(
        p.ws_open("events", "/1.0/events?type=operation", json!({})),
        101
    );
    let (tok, op) = token(&d, "newcomer");
    let secret = {
        let (_, v) = d.http("GET", &format!("/1.0/operations/{op}"), None);
        v["metadata"]["metadata"]["secret"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(secret.len(), 64);
    // Not in the operations it can list, read, wait for or cancel; not in its events.
    let a = p.get("/1.0/operations?recursion=1");
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.text.contains(&secret), "{}", a.text);
    assert!(!a.text.contains(&op), "{}", a.text);
    for (m, path) in [
        ("GET", format!("/1.0/operations/{op}")),
        ("GET", format!("/1.0/operations/{op}/wait?timeout=0")),
        ("DELETE", format!("/1.0/operations/{op}")),
    ] {
        let a = p.send(m, &path, None, json!({}));
        assert_eq!(a.status, 404, "{m} {path}: {}", a.text);
    }
    d.ok(&["exec", "c1", "--", "true"]);
    let (frames, _) = p.ws_read("events", 1.5);
    assert!(
        frames.iter().any(|f| f.contains("\"operation\"")),
        "it gets other operations: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.contains(&secret) || f.contains("token")),
        "{frames:?}"
    );
    // The token still works for the one it was made for.
    let (_, v) = d.http("GET", &format!("/1.0/operations/{op}"), None);
    assert_eq!(v["metadata"]["status"], "Running");
    // What a restricted certificate may not do.
    for (m, path, body) in [
        ("PATCH", "/1.0", json!({"config": {}})),
        (
            "POST",
            "/1.0/certificates",
            json!({"type": "client", "token": true}),
        ),
        ("POST", "/1.0/networks", json!({"name": "n1"})),
        ("PATCH", "/1.0/storage-pools/default", json!({})),
        ("POST", "/1.0/ui/login-links", json!({})),
    ] {
        let a = p.send(m, path, Some(body), json!({}));
        assert_eq!(a.status, 403, "{m} {path}: {}", a.text);
    }
    // What it may: its instances.
    assert_eq!(p.get("/1.0/instances").status, 200);
    drop(tok);
}

#[test]
fn revocation_logout_and_unlistening_end_open_websockets() {
    if !require_root("revocation_logout_and_unlistening_end_open_websockets") {
        return;
    }
    let d = Daemon::start();
    let port = enable_https(&d);
    let laptop = ClientCert::new("laptop");
    trust(&d, "laptop", &laptop, false);
    let mut p = Probe::open(&d, port, Some(&laptop));
    assert_eq!(p.ws_open("a", "/1.0/events", json!({})), 101);
    assert_eq!(p.ws_open("b", "/1.0/events", json!({})), 101);
    d.ok(&["init", "busybox", "c1"]);
    let (frames, closed) = p.ws_read("a", 1.0);
    assert!(!closed && !frames.is_empty(), "events flow: {frames:?}");
    // Changing the certificate's restriction ends its websockets at once.
    let fp = fingerprints(&d)[0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (s, v) = d.http(
        "PATCH",
        &format!("/1.0/certificates/{fp}"),
        Some(r#"{"restricted": true, "projects": ["default"]}"#),
    );
    assert_eq!(s, 200, "{v}");
    let (_, closed) = p.ws_read("a", 3.0);
    assert!(closed, "a restricted change ends the old connection");
    let (_, closed) = p.ws_read("b", 3.0);
    assert!(closed);
    // Removing it does too.
    assert_eq!(p.ws_open("c", "/1.0/events", json!({})), 101);
    let (s, _) = d.http("DELETE", &format!("/1.0/certificates/{fp}"), None);
    assert_eq!(s, 200);
    let (_, closed) = p.ws_read("c", 3.0);
    assert!(closed, "revocation ends an open events websocket");

    // A session's websocket ends at logout.
    let (_, v) = d.http("POST", "/1.0/ui/login-links", None);
    let url = v["metadata"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let origin = format!("https://127.0.0.1:{port}");
    let mut b = Probe::open(&d, port, None);
    let a = b.get(url.trim_start_matches(&origin));
    let cookie = a.headers["set-cookie"].as_str().unwrap_or_default();
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    let h = json!({"Cookie": session, "Origin": origin});
    assert_eq!(b.ws_open("s", "/1.0/events", h.clone()), 101);
    let a = b.send("POST", "/ui/logout", None, h);
    assert_eq!(a.status, 204);
    let (_, closed) = b.ws_read("s", 3.0);
    assert!(closed, "logout ends the session's websockets");

    // Unsetting the address ends every connection of the listener.
    let root = ClientCert::new("root");
    trust(&d, "root", &root, false);
    let mut r = Probe::open(&d, port, Some(&root));
    assert_eq!(r.ws_open("w", "/1.0/events", json!({})), 101);
    let (s, _) = d.http("PUT", "/1.0", Some(r#"{"config": {}}"#));
    assert_eq!(s, 200);
    let (_, closed) = r.ws_read("w", 3.0);
    assert!(closed, "an unset address ends its websockets");
}

#[test]
fn strangers_cannot_send_big_or_slow_bodies() {
    if !require_root("strangers_cannot_send_big_or_slow_bodies") {
        return;
    }
    let d = Daemon::start();
    let port = enable_https(&d);
    let mut p = Probe::open(&d, port, None);
    let big = "x".repeat(20_000);
    let a = p.send(
        "POST",
        "/1.0/certificates",
        Some(json!({"trust_token": big})),
        json!({}),
    );
    assert_eq!(a.status, 413, "{}", a.text);
    // A body announced and never sent: answered (408) within the limit, not held.
    let started = std::time::Instant::now();
    let mut slow = Probe::open(&d, port, None);
    let v = slow.line(
        json!({"ws_open": "slow", "path": "/1.0/certificates", "method": "POST",
                             "plain": true, "headers": {"Content-Length": "100"}}),
    );
    let waited = started.elapsed();
    assert_eq!(v["status"], 408, "{v}");
    assert!(waited < Duration::from_secs(14), "{waited:?}");
}
