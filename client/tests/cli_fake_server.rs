//! The `ctl` binary against a fake ctld on a temp socket: what a user sees on stdout, stderr
//! and in the exit code, without a real daemon.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// Read one request's head (and any Content-Length body) and return its first line.
async fn read_request_line(stream: &mut UnixStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return String::new(),
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = data.len() - head_end;
    while have < length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    head.lines().next().unwrap_or_default().to_string()
}

async fn respond(stream: &mut UnixStream, status: &str, body: &Value) {
    let body = body.to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn ctl(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ctl"));
    command
        .arg("--dir")
        .arg(dir)
        .env_remove("CTL_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn api_error_is_one_line_and_exit_1() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("cannot create a temp dir");
    };
    let Ok(listener) = UnixListener::bind(dir.path().join("unix.socket")) else {
        panic!("cannot bind the fake socket");
    };
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.ok()?;
        let line = read_request_line(&mut stream).await;
        let envelope = json!({"type": "error", "status": "", "status_code": 0, "operation": "",
                              "error_code": 404, "error": "instance \"c1\" not found",
                              "metadata": null});
        respond(&mut stream, "404 Not Found", &envelope).await;
        Some(line)
    });
    let output = ctl(dir.path()).args(["info", "c1"]).output().await;
    let Ok(output) = output else {
        panic!("cannot run ctl");
    };
    let line = server.await.ok().flatten();
    assert_eq!(line.as_deref(), Some("GET /1.0/instances/c1 HTTP/1.1"));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Error: instance \"c1\" not found\n"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn exec_exits_with_the_command_code_while_stdin_stays_open() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("cannot create a temp dir");
    };
    let Ok(listener) = UnixListener::bind(dir.path().join("unix.socket")) else {
        panic!("cannot bind the fake socket");
    };
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.ok()?;
        let line = read_request_line(&mut stream).await;
        let op = json!({"id": "op1", "class": "websocket", "description": "Executing command",
                        "created_at": "", "updated_at": "", "status": "Running",
                        "status_code": 103, "may_cancel": false, "resources": {}, "err": "",
                        "location": "",
                        "metadata": {"fds": {"0": "a", "1": "b", "2": "c", "control": "d"}}});
        let envelope = json!({"type": "async", "status": "Operation created", "status_code": 100,
                              "operation": "/1.0/operations/op1", "error_code": 0, "error": "",
                              "metadata": op});
        respond(&mut stream, "202 Accepted", &envelope).await;
        let mut sockets = Vec::new();
        for _ in 0..4 {
            let (stream, _) = listener.accept().await.ok()?;
            sockets.push(tokio_tungstenite::accept_async(stream).await.ok()?);
        }
        let [_control, _stdin, mut stdout, mut stderr] = <[_; 4]>::try_from(sockets).ok()?;
        stdout.send(Message::binary(b"hi\n".to_vec())).await.ok()?;
        stdout.send(Message::text("")).await.ok()?;
        stderr.send(Message::text("")).await.ok()?;
        let (mut stream, _) = listener.accept().await.ok()?;
        let wait = read_request_line(&mut stream).await;
        let mut done = op;
        done["status"] = json!("Success");
        done["status_code"] = json!(200);
        done["metadata"] = json!({"return": 7});
        let envelope = json!({"type": "sync", "status": "Success", "status_code": 200,
                              "operation": "", "error_code": 0, "error": "", "metadata": done});
        respond(&mut stream, "200 OK", &envelope).await;
        // Keep the websockets open until the client is gone.
        let _ = stdout.next().await;
        Some((line, wait))
    });

    let child = ctl(dir.path())
        .args(["exec", "c1", "--", "true"])
        .stdin(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        panic!("cannot run ctl");
    };
    // Hold stdin open and never write to it: ctl must not wait for its end.
    let stdin = child.stdin.take();
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
    drop(stdin);
    let Ok(Ok(output)) = output else {
        panic!("ctl exec did not return while its stdin was open");
    };
    let seen = server.await.ok().flatten();

    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "unexpected stderr"
    );
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(output.stdout, b"hi\n");
    assert_eq!(
        seen,
        Some((
            "POST /1.0/instances/c1/exec HTTP/1.1".to_string(),
            "GET /1.0/operations/op1/wait?timeout=-1 HTTP/1.1".to_string()
        ))
    );
}
