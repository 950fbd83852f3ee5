#!/usr/bin/env python3
"""Drive ctld's HTTPS listener over one kept-alive TLS connection (the remote-API tests).

Usage: https_probe.py HOST PORT SERVER_CERT [CLIENT_CERT CLIENT_KEY]

The server's certificate is the only one trusted (and its name checked). Reads one JSON
request per line on stdin: {"method", "path", "body"?, "headers"?}; writes one JSON line
per request: {"status", "body", "headers", "port"}, where "port" is this end's port of
the connection, so the caller can tell that every request used the same connection.
"""
import http.client
import json
import ssl
import sys


def main():
    host, port, server_cert = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(cafile=server_cert)
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    for line in sys.stdin:
        req = json.loads(line)
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
