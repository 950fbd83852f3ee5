#!/usr/bin/env python3
"""A static HTTP server for the simplestreams tests, on loopback only.

Serves ROOT with `Range: bytes=N-` support, logs every GET (path and Range) to LOG, and
can serve HTTPS (`--tls CERT KEY`) redirect (`--redirect PATH=URL`), and misbehave on purpose: `--cut PATH=BYTES` closes the connection after BYTES bytes of
the first GET of PATH (to test resuming). Prints its port on stdout once listening.
"""
import argparse
import http.server
import os
import sys
import threading

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("log")
parser.add_argument("--cut", action="append", default=[])
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
parser.add_argument("--redirect", action="append", default=[])
args = parser.parse_args()

cuts = {}
for c in args.cut:
    path, n = c.rsplit("=", 1)
    cuts[path] = int(n)
redirects = dict(r.split("=", 1) for r in args.redirect)
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        rng = self.headers.get("Range", "")
        with lock:
            with open(args.log, "a") as f:
                f.write(f"GET {self.path} range={rng}\n")
            cut = cuts.pop(self.path, None)
        if self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        full = os.path.realpath(os.path.join(args.root, self.path.lstrip("/")))
        if not full.startswith(os.path.realpath(args.root) + "/") or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(full)
        start = 0
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(full, "rb") as f:
            f.seek(start)
            data = f.read()
        if cut is not None:
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if args.tls:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls[0], args.tls[1])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
