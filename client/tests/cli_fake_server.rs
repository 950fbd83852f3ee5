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
    read_request(stream).await.0
}

/// Read one request and return its first line and its Content-Length body.
async fn read_request(stream: &mut UnixStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (String::new(), Vec::new()),
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
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.lines().next().unwrap_or_default().to_string();
    (line, body)
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

/// A fake ctld on a temp socket; the returned directory keeps the socket alive.
fn fake_server() -> (tempfile::TempDir, UnixListener) {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("cannot create a temp dir");
    };
    let Ok(listener) = UnixListener::bind(dir.path().join("unix.socket")) else {
        panic!("cannot bind the fake socket");
    };
    (dir, listener)
}

#[tokio::test]
async fn config_set_error_names_the_key_in_one_line() {
    let (dir, listener) = fake_server();
    let message = "invalid value \"banana\" for \"limits.memory\": not a size";
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.ok()?;
        let request = read_request(&mut stream).await;
        let envelope = json!({"type": "error", "status": "", "status_code": 0, "operation": "",
                              "error_code": 400, "error": message, "metadata": null});
        respond(&mut stream, "400 Bad Request", &envelope).await;
        Some(request)
    });
    let output = ctl(dir.path())
        .args(["config", "set", "c1", "limits.memory", "banana"])
        .output()
        .await;
    let Ok(output) = output else {
        panic!("cannot run ctl");
    };
    let Some((line, body)) = server.await.ok().flatten() else {
        panic!("the fake server saw no request");
    };
    assert_eq!(line, "PATCH /1.0/instances/c1 HTTP/1.1");
    let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(sent, json!({"config": {"limits.memory": "banana"}}));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("Error: {message}\n")
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn config_edit_reads_stdin_and_waits_for_the_put() {
    let (dir, listener) = fake_server();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (mut stream, _) = listener.accept().await.ok()?;
        seen.push(read_request(&mut stream).await);
        let op = json!({"id": "op2", "class": "task", "description": "Updating instance",
                        "created_at": "", "updated_at": "", "status": "Running",
                        "status_code": 103, "may_cancel": false, "resources": {}, "err": "",
                        "location": "", "metadata": null});
        let envelope = json!({"type": "async", "status": "Operation created", "status_code": 100,
                              "operation": "/1.0/operations/op2", "error_code": 0, "error": "",
                              "metadata": op});
        respond(&mut stream, "202 Accepted", &envelope).await;
        let (mut stream, _) = listener.accept().await.ok()?;
        seen.push(read_request(&mut stream).await);
        let mut done = op;
        done["status"] = json!("Success");
        done["status_code"] = json!(200);
        let envelope = json!({"type": "sync", "status": "Success", "status_code": 200,
                              "operation": "", "error_code": 0, "error": "", "metadata": done});
        respond(&mut stream, "200 OK", &envelope).await;
        Some(seen)
    });
    let child = ctl(dir.path())
        .args(["config", "edit", "c1"])
        .stdin(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        panic!("cannot run ctl");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let yaml = "architecture: x86_64\nconfig:\n  limits.memory: 128MiB\n  limits.processes: 50\n\
                    devices: {}\nephemeral: false\nprofiles:\n- default\nstateful: false\n\
                    description: edited\n";
        let _ = stdin.write_all(yaml.as_bytes()).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
    let Ok(Ok(output)) = output else {
        panic!("ctl config edit did not finish");
    };
    let seen = server.await.ok().flatten().unwrap_or_default();

    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "PUT /1.0/instances/c1 HTTP/1.1");
    let sent: Value = serde_json::from_slice(&seen[0].1).unwrap_or_default();
    assert_eq!(
        sent,
        json!({"config": {"limits.memory": "128MiB", "limits.processes": "50"}, "devices": {},
               "ephemeral": false, "profiles": ["default"], "description": "edited"})
    );
    assert_eq!(
        seen[1].0,
        "GET /1.0/operations/op2/wait?timeout=-1 HTTP/1.1"
    );
}

#[tokio::test]
async fn config_show_and_get() {
    let (dir, listener) = fake_server();
    let server = tokio::spawn(async move {
        let instance = json!({"name": "c1", "description": "", "status": "Running",
                              "status_code": 103, "created_at": "", "type": "container",
                              "architecture": "x86_64", "ephemeral": false, "stateful": false,
                              "profiles": ["default"], "config": {"limits.memory": "64MiB"},
                              "devices": {}, "expanded_config": {}, "expanded_devices": {}});
        let mut lines = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().await.ok()?;
            lines.push(read_request_line(&mut stream).await);
            let envelope = json!({"type": "sync", "status": "Success", "status_code": 200,
                                  "operation": "", "error_code": 0, "error": "",
                                  "metadata": instance});
            respond(&mut stream, "200 OK", &envelope).await;
        }
        Some(lines)
    });
    let show = ctl(dir.path())
        .args(["config", "show", "c1"])
        .output()
        .await;
    let get = ctl(dir.path())
        .args(["config", "get", "c1", "user.unset"])
        .output()
        .await;
    let (Ok(show), Ok(get)) = (show, get) else {
        panic!("cannot run ctl");
    };
    let lines = server.await.ok().flatten().unwrap_or_default();
    assert_eq!(lines, vec!["GET /1.0/instances/c1 HTTP/1.1"; 2]);
    assert_eq!(
        String::from_utf8_lossy(&show.stdout),
        "architecture: x86_64\nconfig:\n  limits.memory: 64MiB\ndevices: {}\nephemeral: false\n\
         profiles:\n- default\nstateful: false\ndescription: ''\n"
    );
    assert_eq!((get.status.code(), get.stdout), (Some(0), b"\n".to_vec()));
}

/// Answer one request per connection with `answers` in order; return each request's first
/// line and its body.
async fn serve_in_order(
    listener: UnixListener,
    answers: Vec<(&str, Value)>,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    for (status, envelope) in answers {
        let Ok((mut stream, _)) = listener.accept().await else {
            break;
        };
        let (line, body) = read_request(&mut stream).await;
        seen.push((line, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        respond(&mut stream, status, &envelope).await;
    }
    seen
}

fn sync(metadata: Value) -> (&'static str, Value) {
    let envelope = json!({"type": "sync", "status": "Success", "status_code": 200,
                          "operation": "", "error_code": 0, "error": "", "metadata": metadata});
    ("200 OK", envelope)
}

/// The async answer of operation `id` (running) and its wait's answer (done).
fn operation_then_done(id: &str) -> [(&'static str, Value); 2] {
    let op = json!({"id": id, "class": "task", "description": "", "created_at": "",
                    "updated_at": "", "status": "Running", "status_code": 103,
                    "may_cancel": false, "resources": {"instances": ["/1.0/instances/c1"]},
                    "err": "", "location": "", "metadata": null});
    let created = json!({"type": "async", "status": "Operation created", "status_code": 100,
                         "operation": format!("/1.0/operations/{id}"), "error_code": 0,
                         "error": "", "metadata": op});
    let mut done = op;
    done["status"] = json!("Success");
    done["status_code"] = json!(200);
    [("202 Accepted", created), sync(done)]
}

#[tokio::test]
async fn storage_volume_edit_reads_stdin_and_pool_errors_are_one_line() {
    let (dir, listener) = fake_server();
    let in_use = json!({"type": "error", "status": "", "status_code": 0, "operation": "",
                        "error_code": 400, "metadata": null,
                        "error": "storage pool \"default\" is in use"});
    let mut answers = operation_then_done("op3").to_vec();
    answers.push(("400 Bad Request", in_use));
    let server = tokio::spawn(serve_in_order(listener, answers));
    let child = ctl(dir.path())
        .args(["storage", "volume", "edit", "default", "data"])
        .stdin(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        panic!("cannot run ctl");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let yaml = "name: data\ntype: custom\ndescription: edited\nconfig:\n  size: 2GiB\n";
        let _ = stdin.write_all(yaml.as_bytes()).await;
    }
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
    let Ok(Ok(edit)) = output else {
        panic!("ctl storage volume edit did not finish");
    };
    let delete = ctl(dir.path())
        .args(["storage", "delete", "default"])
        .output()
        .await;
    let Ok(delete) = delete else {
        panic!("cannot run ctl");
    };
    let seen = server.await.unwrap_or_default();

    assert_eq!(String::from_utf8_lossy(&edit.stderr), "");
    assert_eq!(edit.status.code(), Some(0));
    assert_eq!(
        seen,
        [
            (
                "PUT /1.0/storage-pools/default/volumes/custom/data HTTP/1.1".to_string(),
                json!({"description": "edited", "config": {"size": "2GiB"}})
            ),
            (
                "GET /1.0/operations/op3/wait?timeout=-1 HTTP/1.1".to_string(),
                Value::Null
            ),
            (
                "DELETE /1.0/storage-pools/default HTTP/1.1".to_string(),
                Value::Null
            ),
        ]
    );
    assert_eq!(delete.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&delete.stderr),
        "Error: storage pool \"default\" is in use\n"
    );
    assert!(delete.stdout.is_empty());
}

#[tokio::test]
async fn launch_with_a_storage_pool_sends_a_root_disk() {
    let (dir, listener) = fake_server();
    let server = tokio::spawn(serve_in_order(
        listener,
        operation_then_done("op4").to_vec(),
    ));
    let output = ctl(dir.path())
        .args([
            "launch",
            "busybox",
            "c1",
            "-s",
            "fast",
            "-d",
            "root,size=64MiB",
        ])
        .env("CTL_CONF", dir.path().join("conf"))
        .output()
        .await;
    let Ok(output) = output else {
        panic!("cannot run ctl");
    };
    let seen = server.await.unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Launching c1\n");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "POST /1.0/instances HTTP/1.1");
    assert_eq!(
        seen[0].1["devices"],
        json!({"root": {"type": "disk", "path": "/", "pool": "fast", "size": "64MiB"}})
    );
    assert_eq!(
        seen[1].0,
        "GET /1.0/operations/op4/wait?timeout=-1 HTTP/1.1"
    );
}
