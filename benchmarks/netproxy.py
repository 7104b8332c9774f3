"""The cost of network.mode = "allowlist": one allowed HTTP request through the proxy
versus the same request made directly, side by side.

Like with like: the server (benchmarks/httpserver.py, GET of 1 KiB) runs in a process of
its own on 127.0.0.1, and the same client program runs in three sandboxes that live for
the whole run:
  - "direct": a sandbox with the host's network, to 127.0.0.1:PORT;
  - "proxy, transparent": an allowlist sandbox, to web.bench:PORT (a name handed out by
    isolate's DNS; the connection is captured, matched and relayed by the host-side
    proxy in this process);
  - "proxy, HTTP_PROXY": the same, through 127.0.0.1:3128 (absolute-form GET).
Each client resolves its name once, then times every request itself (perf_counter:
connect, first byte of the answer, last byte; a new connection each), so the sandbox's
start-up is not counted; rounds of ROUND requests go to the three in turn (interleaved),
and the figures are medians. The name lookup is timed on its own (isolate's DNS
responder for web.bench; /etc/hosts for localhost in the direct sandbox).
Run: .venv/bin/python -m benchmarks.netproxy [ROUNDS]
"""

from __future__ import annotations

import json
import subprocess
import sys

from isolate import netproxy

from . import httpserver
from .stats import interleaved, median, percentile

ROUND = 10

CLIENT = r"""
import json, socket, sys, time
host, port, proxy = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
pc = time.perf_counter
addr = ("127.0.0.1", 3128) if proxy else socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
req = (f"GET http://{host}:{port}/bytes/1024 HTTP/1.0\r\nHost: {host}\r\n\r\n" if proxy
       else f"GET /bytes/1024 HTTP/1.0\r\nHost: {host}\r\n\r\n").encode()
for line in sys.stdin:
    what, n = line.split()
    out = []
    for _ in range(int(n)):
        t0 = pc()
        if what == "dns":
            socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            out.append([(pc() - t0) * 1e3])
            continue
        s = socket.create_connection(addr)
        t1 = pc()
        s.sendall(req)
        first = None
        while True:
            d = s.recv(65536)
            if first is None:
                first = pc()
            if not d:
                break
        t2 = pc()
        s.close()
        out.append([(t1 - t0) * 1e3, (first - t0) * 1e3, (t2 - t0) * 1e3])
    print(json.dumps(out), flush=True)
"""

PY = "/usr/bin/python3"


class Client:
    def __init__(self, profile, host: str, port: int, proxy: bool):
        self.p = netproxy.Popen([PY, "-c", CLIENT, host, str(port), "1" if proxy else "0"], profile=profile,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, bufsize=1)

    def ask(self, what: str, n: int) -> list:
        self.p.stdin.write(f"{what} {n}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark client ended ({self.p.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(30)


def measure(rounds: int = 30, delay: float = 0.0) -> dict:
    """{variant: {"connect"|"first byte"|"request"|"lookup": [ms, ...]}}."""
    srv, port = httpserver.serve_process(delay)
    netproxy.set_resolver(lambda name: ["127.0.0.1"] if name == "web.bench" else [])
    allow = {"network": {"mode": "allowlist", "allow": [f"web.bench:{port}", f"127.0.0.1:{port}"]}}
    clients = {}
    try:
        clients = {"direct": Client({"network": {"mode": "host"}}, "localhost", port, False),
                   "proxy, transparent": Client(allow, "web.bench", port, False),
                   "proxy, HTTP_PROXY": Client(allow, "web.bench", port, True)}
        samples = interleaved({k: (lambda c=c: c.ask("get", ROUND)) for k, c in clients.items()}, rounds)
        lookups = interleaved({k: (lambda c=c: c.ask("dns", ROUND))
                               for k, c in clients.items() if k != "proxy, HTTP_PROXY"}, max(3, rounds // 3))
        out = {}
        for k in clients:
            reqs = [r for batch in samples.extras[k] for r in batch]
            out[k] = {"connect": [r[0] for r in reqs], "first byte": [r[1] for r in reqs],
                      "request": [r[2] for r in reqs]}
            if k in lookups.extras:
                out[k]["lookup"] = [r[0] for batch in lookups.extras[k] for r in batch]
        return out
    finally:
        for c in clients.values():
            c.close()
        netproxy.set_resolver(None)
        srv.kill()
        srv.wait()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for delay_ms in (0.0, 2.0):
        res = measure(rounds, delay_ms / 1000)
        base = median(res["direct"]["request"])
        print(f"server in its own process on loopback, answering after {delay_ms:g} ms; {rounds} rounds of "
              f"{ROUND} requests per variant, interleaved, each request a new connection, GET 1 KiB")
        print(f"  {'':<22}{'connect':>9}{'1st byte':>10}{'request':>9}{'p90':>8}{'x direct':>10}{'lookup':>9}")
        for label, ph in res.items():
            med = median(ph["request"])
            look = f"{median(ph['lookup']):>9.3f}" if "lookup" in ph else f"{'-':>9}"
            print(f"  {label:<22}{median(ph['connect']):>9.3f}{median(ph['first byte']):>10.3f}{med:>9.3f}"
                  f"{percentile(ph['request'], 90):>8.3f}{med / base:>10.2f}{look}")
        print("  (ms, medians; lookup: getaddrinfo of the client's name: isolate's DNS for web.bench, "
              "/etc/hosts for localhost)")


if __name__ == "__main__":
    main()
