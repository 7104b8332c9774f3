"""The cost of network.mode = "allowlist": one allowed HTTP request through the proxy
versus the same request made directly, side by side.

A local HTTP server on 127.0.0.1; the same Python client loop (a new connection per
request, GET, read to the end) runs
  - "direct": on the host, to 127.0.0.1:PORT;
  - "through the proxy": inside an allowlist sandbox, to web.bench:PORT (a name handed
    out by isolate's DNS; the connection is captured, matched and relayed by the host-
    side proxy), with and without the HTTP_PROXY variable used (transparent / explicit).
Each client times every request itself (perf_counter around connect..last byte), so the
sandbox's start-up is not counted. Run: .venv/bin/python -m benchmarks.netproxy [N]
"""

from __future__ import annotations

import http.server
import json
import socketserver
import statistics
import subprocess
import sys
import threading
import time

from isolate import netproxy

CLIENT = r"""
import json, socket, sys, time
host, port, n, proxy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
out = []
for i in range(n + 20):
    t = time.perf_counter()
    if proxy:
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(f"GET http://{host}:{port}/ HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    else:
        s = socket.create_connection((host, port))
        s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
    if i >= 20:
        out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"""


DELAY = [0.0]  # seconds the server waits before answering (a stand-in for a server that is not on loopback)


class _H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if DELAY[0]:
            time.sleep(DELAY[0])
        body = b"x" * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class _S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def measure(n: int = 300) -> dict:
    srv = _S(("127.0.0.1", 0), _H)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    netproxy.set_resolver(lambda name: ["127.0.0.1"] if name == "web.bench" else [])
    profile = {"network": {"mode": "allowlist", "allow": [f"web.bench:{port}", f"127.0.0.1:{port}"]}}
    py = "/usr/bin/python3"
    try:
        direct = json.loads(subprocess.run([py, "-c", CLIENT, "127.0.0.1", str(port), str(n), "0"],
                                           capture_output=True, text=True, check=True).stdout)
        res = {"direct (host)": direct}
        for label, proxy in (("proxy, transparent", "0"), ("proxy, HTTP_PROXY", "1")):
            r = netproxy.run([py, "-c", CLIENT, "web.bench", str(port), str(n), proxy], profile=profile,
                             capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            res[label] = json.loads(r.stdout)
    finally:
        netproxy.set_resolver(None)
        srv.shutdown()
    return res


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for delay_ms in (0.0, 2.0):
        DELAY[0] = delay_ms / 1000
        res = measure(n)
        base = statistics.median(res["direct (host)"])
        print(f"server on loopback, answering after {delay_ms:g} ms; {n} requests, each a new connection, GET 1 KiB")
        print(f"  {'':<28}{'median ms':>10}{'p90 ms':>10}{'x direct':>10}")
        for label, samples in res.items():
            med = statistics.median(samples)
            p90 = statistics.quantiles(samples, n=10)[-1]
            print(f"  {label:<28}{med:>10.3f}{p90:>10.3f}{med / base:>10.2f}")


if __name__ == "__main__":
    main()
