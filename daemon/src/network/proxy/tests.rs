//! Proxy device tests: parsing as a table of cases; binding errors unprivileged; and
//! privileged forwarding into a network namespace made with `unshare -n`, where a busybox
//! `httpd` (TCP) or a socket the test made inside it (UDP) serves on the namespace's own
//! loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::*;
use crate::network::testnet;

fn spec(pairs: &[(&str, &str)]) -> Result<ProxySpec, ProxyError> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProxySpec::parse(&map)
}

#[test]
fn parses_addresses() {
    let ok = [
        ("tcp:0.0.0.0:8080", Protocol::Tcp, "0.0.0.0", vec![8080]),
        ("udp:127.0.0.1:53", Protocol::Udp, "127.0.0.1", vec![53]),
        ("tcp:[::1]:80", Protocol::Tcp, "::1", vec![80]),
        ("tcp:[::]:80,443", Protocol::Tcp, "::", vec![80, 443]),
        (
            "tcp:10.0.0.1:8000-8002,9000",
            Protocol::Tcp,
            "10.0.0.1",
            vec![8000, 8001, 8002, 9000],
        ),
        ("tcp:1.2.3.4:65535", Protocol::Tcp, "1.2.3.4", vec![65535]),
    ];
    for (value, protocol, ip, ports) in ok {
        let a = parse_address(value).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(a.protocol, protocol, "{value}");
        assert_eq!(a.ip, ip.parse::<IpAddr>().expect("parse"), "{value}");
        assert_eq!(a.ports, ports, "{value}");
    }
    let bad = [
        ("", "expected"),
        ("tcp", "expected"),
        ("sctp:1.2.3.4:80", "protocol must be tcp or udp"),
        ("unix:/run/x.sock", "unix sockets"),
        ("tcp:1.2.3.4", "missing port"),
        ("tcp:1.2.3.4:", "ports are numbers"),
        ("tcp:1.2.3.4:0", "ports are numbers"),
        ("tcp:1.2.3.4:65536", "ports are numbers"),
        ("tcp:1.2.3.4:http", "ports are numbers"),
        ("tcp:1.2.3.4:90-80", "reversed"),
        ("tcp:1.2.3.4:80-", "ports are numbers"),
        ("tcp:localhost:80", "not an IP address"),
        ("tcp:::1:80", "brackets"),
        ("tcp:[::1:80", "missing ]"),
        ("tcp:[::1]80", "missing port"),
        ("tcp:[1.2.3.4]:80", "only IPv6"),
        ("tcp:1.2.3.4:1-2000", "too many ports"),
    ];
    for (value, reason) in bad {
        let err = parse_address(value).expect_err(value).to_string();
        assert!(err.contains(reason), "{value}: {err}");
    }
}

#[test]
fn parses_devices() {
    let s = spec(&[
        ("type", "proxy"),
        ("listen", "tcp:0.0.0.0:8080-8081"),
        ("connect", "tcp:127.0.0.1:80"),
        ("bind", "host"),
    ])
    .expect("spec");
    assert_eq!(
        s.pairs(),
        [
            (
                "0.0.0.0:8080".parse().expect("parse"),
                "127.0.0.1:80".parse().expect("parse")
            ),
            (
                "0.0.0.0:8081".parse().expect("parse"),
                "127.0.0.1:80".parse().expect("parse")
            ),
        ]
    );
    let s = spec(&[
        ("listen", "udp:[::]:5000,5001"),
        ("connect", "udp:127.0.0.1:6000-6001"),
    ])
    .expect("spec");
    assert_eq!(
        s.pairs(),
        [
            (
                "[::]:5000".parse().expect("parse"),
                "127.0.0.1:6000".parse().expect("parse")
            ),
            (
                "[::]:5001".parse().expect("parse"),
                "127.0.0.1:6001".parse().expect("parse")
            ),
        ]
    );

    let bad: &[(&[(&str, &str)], &str)] = &[
        (&[("connect", "tcp:127.0.0.1:80")], "missing \"listen\""),
        (&[("listen", "tcp:0.0.0.0:80")], "missing \"connect\""),
        (
            &[
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "udp:127.0.0.1:80"),
            ],
            "protocols must match",
        ),
        (
            &[
                ("listen", "tcp:0.0.0.0:80-82"),
                ("connect", "tcp:127.0.0.1:80,81"),
            ],
            "2 ports for 3",
        ),
        (
            &[("listen", "tcp:0.0.0.0:80"), ("connect", "tcp:0.0.0.0:80")],
            "unspecified",
        ),
        (
            &[
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "tcp:127.0.0.1:80"),
                ("bind", "instance"),
            ],
            "bind=instance is not supported",
        ),
        (
            &[
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "tcp:127.0.0.1:80"),
                ("nat", "true"),
            ],
            "nat=true is not supported",
        ),
        (
            &[
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "tcp:127.0.0.1:80"),
                ("type", "nic"),
            ],
            "type=nic",
        ),
        (
            &[
                ("listen", "tcp:0.0.0.0:80"),
                ("connect", "tcp:127.0.0.1:80"),
                ("lisen", "x"),
            ],
            "unknown key \"lisen\"",
        ),
        (
            &[("listen", "tcp:0.0.0.0"), ("connect", "tcp:127.0.0.1:80")],
            "missing port",
        ),
    ];
    for (pairs, want) in bad {
        let err = spec(pairs).expect_err(want).to_string();
        assert!(err.contains(want), "{pairs:?}: {err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
        .port()
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error_and_nothing_stays_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port();
    let free = free_port();
    // The first port is free, the second taken: the first must not stay bound.
    let listen = format!("tcp:127.0.0.1:{free},{port}");
    let s = spec(&[("listen", &listen), ("connect", "tcp:127.0.0.1:80")]).expect("spec");
    let ns = NetNs::of_pid(std::process::id() as i32).expect("own netns");
    let err = ProxyHandle::start(&s, ns)
        .await
        .expect_err("start with a port in use");
    assert!(
        matches!(err, ProxyError::AddrInUse(a) if a.port() == port),
        "{err}"
    );
    assert!(err.to_string().contains("already in use"), "{err}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", free)).is_ok());
}

/// A process the test started inside a new network namespace, killed and reaped on drop.
struct NsProcess(Child);

impl NsProcess {
    /// `unshare -n sh -c 'ip link set lo up && exec <cmd>'`.
    fn spawn(cmd: &str) -> NsProcess {
        let child = Command::new("unshare")
            .args([
                "-n",
                "sh",
                "-c",
                &format!("ip link set lo up && exec {cmd}"),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let process = NsProcess(child);
        // Ready once it is in a namespace of its own (spawn may return before the exec
        // is complete), lo is up there (the local routing table has 127.0.0.1), and the
        // shell exec'd the command.
        let pid = process.pid();
        let ours = std::fs::read_link("/proc/self/ns/net").expect("read link");
        wait_until("the namespace's lo up", || {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let fib =
                std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            ns.is_some_and(|ns| ns != ours)
                && fib.contains("127.0.0.1")
                && !matches!(comm.trim(), "unshare" | "sh" | "ip" | "")
        });
        process
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn netns(&self) -> NetNs {
        NetNs::of_pid(self.pid()).expect("open netns")
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `/proc/<pid>/net/tcp` (the namespace's view) has a listener on `port`.
fn listening(pid: i32, port: u16) -> bool {
    let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let local = format!(":{port:04X} ");
    tcp.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|a| format!("{a} ").ends_with(&local))
            && l.split_whitespace().nth(3) == Some("0A")
    })
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn http_get(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .expect("write all");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read to string");
    body
}

fn write_index(dir: &Path, token: &str) {
    std::fs::write(dir.join("index.html"), format!("{token}\n")).expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_tcp_into_the_namespace_and_stops() {
    if !testnet::root_or_skip("proxy tcp") {
        return;
    }
    let www = tempfile::tempdir().expect("tempdir");
    let token = testnet::unique("served-from-the-namespace-");
    write_index(www.path(), &token);
    // Port 80 on the namespace's loopback: nothing on the host's loopback can answer it.
    let httpd = NsProcess::spawn(&format!(
        "busybox httpd -f -p 127.0.0.1:80 -h {}",
        www.path().display()
    ));
    let pid = httpd.pid();
    tokio::task::spawn_blocking(move || wait_until("httpd listening", || listening(pid, 80)))
        .await
        .expect("listening");

    let port = free_port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let s = spec(&[("listen", &listen), ("connect", "tcp:127.0.0.1:80")]).expect("spec");
    let proxy = ProxyHandle::start(&s, httpd.netns()).await.expect("netns");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("parse");
    assert_eq!(proxy.local_addrs(), [addr]);

    // Several connections, one after the other and concurrently.
    let bodies = tokio::task::spawn_blocking(move || {
        let mut all = vec![http_get(addr)];
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || http_get(addr)))
            .collect();
        all.extend(threads.into_iter().map(|t| t.join().expect("join")));
        all
    })
    .await
    .expect("http threads");
    for body in &bodies {
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains(&token), "{body}");
    }

    // An open connection, then stop: the port is free and the connection is closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.stop().await;
    assert!(
        std::net::TcpListener::bind(addr).is_ok(),
        "port still bound"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("connection not closed by stop");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_closes_the_client_and_the_proxy_goes_on() {
    if !testnet::root_or_skip("proxy refused") {
        return;
    }
    let sleeper = NsProcess::spawn("sleep 60");
    let port = free_port();
    let listen = format!("tcp:127.0.0.1:{port}");
    // Nothing listens on port 81 inside the namespace.
    let s = spec(&[("listen", &listen), ("connect", "tcp:127.0.0.1:81")]).expect("spec");
    let proxy = ProxyHandle::start(&s, sleeper.netns())
        .await
        .expect("netns");
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut c, &mut buf),
        )
        .await
        .expect("refused connection not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_udp_into_the_namespace() {
    if !testnet::root_or_skip("proxy udp") {
        return;
    }
    let sleeper = NsProcess::spawn("sleep 60");
    // An echo server on the namespace's loopback, on a socket made inside it.
    let target: SocketAddr = "127.0.0.1:7".parse().expect("parse");
    let fd = sleeper
        .netns()
        .socket(&target, SocketKind::Datagram)
        .expect("socket");
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, 7),
    )
    .expect("bind echo socket");
    let inner = std::net::UdpSocket::from(fd);
    inner.set_nonblocking(false).expect("set nonblocking");
    inner
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut served = 0;
        while served < 2 {
            let Ok((n, from)) = inner.recv_from(&mut buf) else {
                break;
            };
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            inner.send_to(&reply, from).expect("send to");
            served += 1;
        }
        served
    });

    let port = free_port();
    let listen = format!("udp:127.0.0.1:{port}");
    let s = spec(&[("listen", &listen), ("connect", "udp:127.0.0.1:7")]).expect("spec");
    let proxy = ProxyHandle::start(&s, sleeper.netns())
        .await
        .expect("netns");
    for msg in ["one", "two"] {
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        client.connect(("127.0.0.1", port)).await.expect("connect");
        client.send(msg.as_bytes()).await.expect("as bytes");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("no udp reply")
            .expect("expect");
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
    }
    assert_eq!(echo.join().expect("join"), 2);
    proxy.stop().await;
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
}
