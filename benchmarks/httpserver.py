"""A small threaded HTTP server on this machine, for the network-allowlist benchmark and
its tests (tests/netproxy imports it): one piece of code for both.

GET /bytes/N answers N bytes of "x"; any other path a JSON body naming the server's
label, the request's Host and path. `delay` seconds are waited before answering (a
stand-in for a server that is not on loopback). In-process (serve()) or as a process of
its own (`python -m benchmarks.httpserver [--delay-ms D] [--host H]` prints its port),
so that a benchmark's server does not share the proxy's interpreter lock.
"""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.path.startswith("/bytes/") and self.path[7:].isdigit():
            body = b"x" * int(self.path[7:])
        else:
            body = json.dumps({"server": self.server.label, "host": self.headers.get("Host"),
                               "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, label="web", delay=0.0):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.label, self.delay = label, delay
        super().__init__(addr, Handler)


def serve(label: str = "web", tls_context=None, host: str = "127.0.0.1", delay: float = 0.0):
    """A server in a thread of this process: (server, port); server.shutdown() ends it."""
    srv = Server((host, 0), label, delay)
    if tls_context is not None:
        srv.socket = tls_context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def serve_process(delay: float = 0.0, host: str = "127.0.0.1"):
    """A server in a process of its own: (Popen, port); kill() the Popen to end it."""
    root = str(Path(__file__).resolve().parent.parent)
    p = subprocess.Popen([sys.executable, "-m", "benchmarks.httpserver", "--delay-ms", str(delay * 1000),
                          "--host", host], stdout=subprocess.PIPE, text=True, cwd=root)
    line = p.stdout.readline()
    if not line.strip().isdigit():
        p.kill()
        raise RuntimeError(f"benchmarks.httpserver did not start: {line!r}")
    return p, int(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    srv = Server((a.host, 0), "web", a.delay_ms / 1000)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
