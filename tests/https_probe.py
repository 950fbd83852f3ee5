#!/usr/bin/env python3
"""Drive ctld's HTTPS listener over one kept-alive TLS connection (the remote-API tests).

Usage: https_probe.py HOST PORT SERVER_CERT [CLIENT_CERT CLIENT_KEY]

The server's certificate is the only one trusted (and its name checked). Reads one JSON
request per line on stdin: {"method", "path", "body"?, "headers"?}; writes one JSON line
per request: {"status", "body", "headers", "port"}, where "port" is this end's port of
the connection, so the caller can tell that every request used the same connection.

Websockets, each on a connection of its own: {"ws_open": NAME, "path", "headers"?,
"method"?, "plain"?} answers {"status"} (101 when upgraded; "plain": no upgrade headers,
the request as it is, its body never sent); {"ws_read": NAME, "seconds"} answers {"frames": [text...],
"closed": bool}: the text frames received within that time, and whether the server ended
the connection.
"""
import http.client
import json
import socket
import ssl
import sys
import time


def ws_open(ctx, host, port, req):
    raw = socket.create_connection((host, port), timeout=30)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    headers = {"Host": f"{host}:{port}"}
    if not req.get("plain"):
        headers.update({
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        })
    headers.update(req.get("headers", {}))
    method = req.get("method", "GET")
    head = f"{method} {req['path']} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((head + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    status = int(line.split()[1]) if len(line.split()) > 1 else 0
    rest = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return sock, status, rest


def ws_read(conn, seconds):
    sock, buf = conn["sock"], conn["buf"]
    frames, closed = [], False
    deadline = time.monotonic() + seconds
    while True:
        # Whole frames in the buffer first (server frames are never masked).
        while len(buf) >= 2:
            opcode, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            if opcode == 1:
                frames.append(payload.decode("utf-8", "replace"))
            elif opcode == 8:
                closed = True
        left = deadline - time.monotonic()
        if closed or left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (OSError, ssl.SSLError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    conn["buf"] = buf
    return {"frames": frames, "closed": closed}


def main():
    host, port, server_cert = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(cafile=server_cert)
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    sockets = {}
    for line in sys.stdin:
        req = json.loads(line)
        if "ws_open" in req:
            try:
                sock, status, rest = ws_open(ctx, host, port, req)
                sockets[req["ws_open"]] = {"sock": sock, "buf": rest}
                out = {"status": status}
            except (OSError, ssl.SSLError) as e:
                out = {"status": 0, "error": str(e)}
            print(json.dumps(out), flush=True)
            continue
        if "ws_read" in req:
            print(json.dumps(ws_read(sockets[req["ws_read"]], req["seconds"])), flush=True)
            continue
        body = req.get("body")
        headers = req.get("headers", {})
        if body is not None:
            body = json.dumps(body) if not isinstance(body, str) else body
            headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(req["method"], req["path"], body=body, headers=headers)
            # Before the answer: a `Connection: close` one closes the socket.
            local = conn.sock.getsockname()[1] if conn.sock else 0
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
            out = {
                "status": resp.status,
                "body": data,
                "headers": {k.lower(): v for k, v in resp.getheaders()},
                "port": local,
            }
        except (OSError, http.client.HTTPException) as e:
            out = {"status": 0, "body": str(e), "headers": {}, "port": 0}
            conn.close()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
