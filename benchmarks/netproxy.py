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
Run: .venv/bin/python -m benchmarks.netproxy [ROUNDS] [--write]   (--write: its section of
docs/performance.md, between its markers; benchmarks.run measures it too, and
benchmarks/targets.py judges it: a proxied request <= 1.5x the direct one)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from isolate import netproxy

from . import httpserver
from .stats import fmt_ms, fmt_ratio, interleaved, median, percentile

ROUND = 10
DIRECT, TRANSPARENT, HTTP_PROXY = "direct", "proxy, transparent", "proxy, HTTP_PROXY"
PROXIED = (TRANSPARENT, HTTP_PROXY)
DELAYS_MS = (0.0, 2.0)
BEGIN, END = "<!-- netproxy:begin -->", "<!-- netproxy:end -->"

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
        clients = {DIRECT: Client({"network": {"mode": "host"}}, "localhost", port, False),
                   TRANSPARENT: Client(allow, "web.bench", port, False),
                   HTTP_PROXY: Client(allow, "web.bench", port, True)}
        samples = interleaved({k: (lambda c=c: c.ask("get", ROUND)) for k, c in clients.items()}, rounds)
        lookups = interleaved({k: (lambda c=c: c.ask("dns", ROUND))
                               for k, c in clients.items() if k != HTTP_PROXY}, max(3, rounds // 3))
        out = {}
        for k in clients:
            reqs = [r for batch in samples.extras[k] for r in batch]
            out[k] = {"connect": [r[0] for r in reqs], "first byte": [r[1] for r in reqs],
                      "request": [r[2] for r in reqs],
                      "round medians": [median([r[2] for r in batch]) for batch in samples.extras[k]]}
            if k in lookups.extras:
                out[k]["lookup"] = [r[0] for batch in lookups.extras[k] for r in batch]
        return out
    finally:
        for c in clients.values():
            c.close()
        netproxy.set_resolver(None)
        srv.kill()
        srv.wait()


@dataclasses.dataclass
class NetproxyResult:
    """measure() for each server delay (ms), the rounds, the load average around each."""

    runs: dict
    rounds: int
    load: dict           # delay -> (1-min load before, after)
    cpus: int
    seconds: float

    def ratio(self, variant: str, delay_ms: float = 0.0) -> tuple:
        """(median request / median direct request, p10, p90 of the per-round ratios of medians)."""
        res = self.runs[delay_ms]
        value = median(res[variant]["request"]) / median(res[DIRECT]["request"])
        per_round = [a / b for a, b in zip(res[variant]["round medians"], res[DIRECT]["round medians"])]
        return value, percentile(per_round, 10), percentile(per_round, 90)


def measure_all(rounds: int = 30, log=None) -> NetproxyResult:
    t0 = time.monotonic()
    runs, load = {}, {}
    for delay_ms in DELAYS_MS:
        if log:
            log(f"network allowlist: server answering after {delay_ms:g} ms")
        before = os.getloadavg()[0]
        runs[delay_ms] = measure(rounds, delay_ms / 1000)
        load[delay_ms] = (before, os.getloadavg()[0])
    return NetproxyResult(runs, rounds, load, os.cpu_count() or 1, time.monotonic() - t0)


def section(r: NetproxyResult) -> list[str]:
    """The "Network allowlist" section of docs/performance.md (between BEGIN and END)."""
    out = [BEGIN, "## Network allowlist", "",
           "`benchmarks/netproxy.py`: one allowed HTTP request (a new connection, GET of 1 KiB) from a program "
           "in a sandbox, to a server in a process of its own on 127.0.0.1 (`benchmarks/httpserver.py`): "
           "*direct* from a sandbox with the host's network, and from an allowlist sandbox through the proxy, "
           "*transparent* (the connection to the name's synthetic address captured) and through *HTTP_PROXY* "
           f"(an absolute-form GET to 127.0.0.1:3128). {r.rounds} interleaved rounds of {ROUND} requests per "
           "variant, each timed by the client; medians (ms), the ratio to direct with the p10–p90 of the "
           f"per-round ratios. Took {r.seconds:.0f} s on {r.cpus} CPUs. The design and where the time goes: "
           "docs/network.md.", ""]
    rows = []
    for delay_ms, res in r.runs.items():
        for v in (DIRECT, *PROXIED):
            ph = res[v]
            ratio = "1.00×" if v == DIRECT else (lambda x: f"{fmt_ratio(x[0])} ({fmt_ratio(x[1])}–{fmt_ratio(x[2])})")(
                r.ratio(v, delay_ms))
            rows.append([f"{delay_ms:g} ms", v, fmt_ms(median(ph["connect"])), fmt_ms(median(ph["first byte"])),
                         fmt_ms(median(ph["request"])), fmt_ms(percentile(ph["request"], 90)), ratio,
                         f"{r.load[delay_ms][0]:.1f} → {r.load[delay_ms][1]:.1f}"])
    out.append("| server answers after | variant | connect | first byte | request | p90 | × direct | load |")
    out.append("|---|---|---|---|---|---|---|---|")
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + ["", END, ""]


def write_section(r: NetproxyResult, path: Path) -> None:
    """Replace (or add) this benchmark's section of `path`."""
    text = "\n".join(section(r))
    doc = path.read_text() if path.exists() else ""
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--write"]
    rounds = int(args[0]) if args else 30
    result = measure_all(rounds)
    for delay_ms, res in result.runs.items():
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
    if "--write" in sys.argv[1:]:
        path = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
        write_section(result, path)
        print(f"wrote its section of {path}")


if __name__ == "__main__":
    main()
