"""The proxy's fast path (isolate/netproxy/_relay.c, Gate.serve): a connection that a
route covers (a decision Python made before) and whose first bytes name the route's name
exactly is served without Python; everything else is decided, refused and recorded by
Python as before. Proven from inside a sandbox (what it gets, what is refused) and by the
proxy's counters; the C readings of Host, SNI and proxy requests never say yes where the
Python ones would not."""

import json
import socket
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isolate import netproxy
from isolate.netproxy import _relay
from isolate.netproxy.proxy import sniff_name, sni, split_hostport
from netproxy_helpers import HOST_NETNS, PRELUDE, PY, http_server, make_ca, reasons

N = 6


@pytest.fixture(scope="module")
def env():
    web, web_port = http_server("web")
    other, other_port = http_server("other")
    ca_pem, ctx = make_ca(["tls.test"])
    tls, tls_port = http_server("tls", tls_context=ctx)
    netproxy.set_resolver(lambda n: ["127.0.0.1"] if n.endswith(".test") else [])
    allow = [f"web.test:{web_port}", f"tls.test:{tls_port}", f"other.test:{other_port}"]
    allow += [f"127.0.0.1:{p}" for p in (web_port, tls_port, other_port)]
    profile = {"network": {"mode": "allowlist", "allow": allow, "deny": ["bad.test"]}}
    yield dict(web=web_port, other=other_port, tls=tls_port, ca=ca_pem, profile=profile)
    netproxy.set_resolver(None)
    for s in (web, other, tls):
        s.shutdown()


def run_inside(code, profile):
    """PRELUDE + code in an allowlist sandbox: (its JSON output, violations, the proxy's counters)."""
    src = f"HOST_NETNS = {HOST_NETNS!r}\n" + PRELUDE + code + "\ndone()\n"
    p = netproxy.Popen([PY, "-c", src], profile=profile, stdout=__import__("subprocess").PIPE, text=True)
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 0, stdout
    return json.loads(stdout.strip().splitlines()[-1]), p.violations, netproxy.stats_for(p.netproxy_id)


REQ = """
def req(addr, head, body_until_eof=True):
    s = socket.create_connection(addr, timeout=10)
    s.sendall(head.encode())
    try:
        return recv_all(s).decode(errors="replace")
    except OSError as e:
        return "error: " + type(e).__name__
"""


def test_repeated_requests_take_the_fast_path_and_mismatches_are_still_refused(env):
    web, other = env["web"], env["other"]
    out, violations, counters = run_inside(REQ + f"""
addr = (socket.gethostbyname("web.test"), {web})
out["plain"] = [req(addr, f"GET /t{{i}} HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n") for i in range({N})]
out["proxied"] = [req(("127.0.0.1", 3128), f"GET http://web.test:{web}/p{{i}} HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
                  for i in range({N})]
# Spelled otherwise but the same name (as the Python proxy reads it): still allowed.
out["spelled"] = req(addr, "GET /s HTTP/1.1\\r\\nX-A: b\\r\\nhOsT :\\t WEB.Test.:{web} \\r\\nConnection: close\\r\\n\\r\\n")
# After the routes exist: another Host through web.test's address, or through the proxy.
out["fronted"] = req(addr, "GET /f HTTP/1.0\\r\\nHost: bad.test\\r\\n\\r\\n")
out["fronted_other"] = req(addr, "GET /f HTTP/1.0\\r\\nHost: other.test\\r\\n\\r\\n")
out["proxy_mismatch"] = req(("127.0.0.1", 3128), "GET http://web.test:{web}/m HTTP/1.0\\r\\nHost: bad.test\\r\\n\\r\\n")
out["proxy_denied"] = req(("127.0.0.1", 3128), "GET http://bad.test:{web}/d HTTP/1.0\\r\\nHost: bad.test\\r\\n\\r\\n")
out["proxy_port"] = req(("127.0.0.1", 3128), "GET http://web.test:{other}/o HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
# No Host at all: not the fast path's, Python allows it (as before).
out["nohost"] = req(addr, "GET /n HTTP/1.0\\r\\n\\r\\n")
""", env["profile"])
    for i, r in enumerate(out["plain"]):
        assert json.loads(r.split("\r\n\r\n", 1)[1])["path"] == f"/t{i}", r
    for i, r in enumerate(out["proxied"]):
        assert json.loads(r.split("\r\n\r\n", 1)[1])["path"] == f"/p{i}", r
    assert '"path": "/s"' in out["spelled"]
    assert '"/n"' in out["nohost"]
    for k in ("fronted", "fronted_other", "proxy_mismatch", "proxy_denied", "proxy_port"):
        assert '"server"' not in out[k], (k, out[k])
    assert out["proxy_mismatch"].startswith("HTTP/1.1 400")
    assert out["proxy_denied"].startswith("HTTP/1.1 403") and out["proxy_port"].startswith("HTTP/1.1 403")
    got = [v["reason"] for v in violations]
    assert sum(r.startswith("Host/SNI 'bad.test' differs from the name connected to") for r in got) == 1, got
    assert sum(r.startswith("Host/SNI 'other.test' differs from the name connected to") for r in got) == 1, got
    assert sum("Host 'bad.test' differs from the URL" in r for r in got) == 1, got
    assert sum(r.startswith("proxy: denied by network.deny") for r in got) == 1, got
    assert sum(r.startswith("proxy: port not allowed") for r in got) == 1, got
    # The first of each kind was decided in Python, the repeats were served by their route.
    assert counters["served_fast"] >= 2 * (N - 1), counters
    assert counters["routes"] >= 2, counters


def test_a_route_whose_server_is_gone_goes_back_to_python(env):
    """A route's connect that fails is not the fast path's to refuse: Python tries again
    and records it (nothing was sent, the client's bytes were left for it)."""
    srv, port = http_server("gone")
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["allow"] += [f"gone.test:{port}", f"127.0.0.1:{port}"]
    code = REQ + f"""
import sys
addr = (socket.gethostbyname("gone.test"), {port})
out["before"] = [req(addr, "GET /b HTTP/1.0\\r\\nHost: gone.test\\r\\n\\r\\n") for _ in range(3)]
out["proxied"] = [req(("127.0.0.1", 3128), "GET http://gone.test:{port}/p HTTP/1.0\\r\\nHost: gone.test\\r\\n\\r\\n")
                  for _ in range(3)]
print("ready", flush=True)
sys.stdin.readline()
out["after"] = req(addr, "GET /a HTTP/1.0\\r\\nHost: gone.test\\r\\n\\r\\n")
out["after_proxied"] = req(("127.0.0.1", 3128), "GET http://gone.test:{port}/q HTTP/1.0\\r\\nHost: gone.test\\r\\n\\r\\n")
"""
    src = f"HOST_NETNS = {HOST_NETNS!r}\n" + PRELUDE + code + "\ndone()\n"
    import subprocess
    p = netproxy.Popen([PY, "-c", src], profile=prof, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        srv.shutdown()
        srv.server_close()          # nothing listens on the port any more
        p.stdin.write("go\n")
        p.stdin.flush()
        stdout, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    out = json.loads(stdout.strip().splitlines()[-1])
    assert all('"/b"' in r for r in out["before"]) and all('"/p"' in r for r in out["proxied"]), out
    assert '"server"' not in out["after"] and '"server"' not in out["after_proxied"], out
    got = [v for v in p.violations if "could not connect" in v["reason"]]
    assert len(got) == 2 and all(v["name"] == "gone.test" for v in got), p.violations
    assert netproxy.stats_for(p.netproxy_id)["served_fast"] >= 4


def test_tls_sni_on_the_fast_path(env):
    out, violations, counters = run_inside(f"""
ctx = ssl.create_default_context(cadata={env['ca']!r})
def fetch(sni):
    s = socket.create_connection(("tls.test", {env['tls']}), timeout=10)
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
        t.sendall(b"GET /s HTTP/1.0\\r\\nHost: tls.test\\r\\n\\r\\n")
        return recv_all(t).decode()
    except (OSError, ssl.SSLError) as e:
        return "error " + type(e).__name__
out["right"] = [fetch("tls.test") for _ in range({N})]
out["fronted"] = fetch("bad.test")
""", env["profile"])
    assert all('"server": "tls"' in r for r in out["right"]), out
    assert out["fronted"].startswith("error")
    assert any(v["name"] == "tls.test" and "'bad.test'" in v["reason"] for v in violations), violations
    assert counters["served_fast"] >= N - 1, counters


def test_the_limits_hold_on_the_fast_path(env):
    """bytes_per_second: 96 KiB at 32 KiB/s (one second's burst) cannot arrive in under
    1.5 s, repeats (the fast path) included; the inside measures it."""
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["bytes_per_second"] = 32768
    out, _, counters = run_inside(REQ + f"""
import time
addr = (socket.gethostbyname("web.test"), {env['web']})
req(addr, "GET /warm HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
t = time.monotonic()
got = req(addr, "GET /bytes/98304 HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
out["seconds"] = time.monotonic() - t
out["len"] = len(got.split("\\r\\n\\r\\n", 1)[1])
""", prof)
    assert out["len"] == 98304
    assert out["seconds"] >= 1.5, out
    assert counters["served_fast"] >= 1, counters


# -- the C readings never allow what the Python ones would not ------------------------

WANT = "web.test"


def test_first_names_examples():
    ok = [b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n", b"GET / HTTP/1.1\r\nhost:web.test:80\r\n\r\n",
          b"POST /x HTTP/1.0\r\nA: b\r\nHOST: \tWeb.Test..\r\n\r\nbody"]
    no = [b"GET / HTTP/1.1\r\nHost: web.test\r\n",             # head not complete
          b"GET / HTTP/1.1\r\nHost: bad.test\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",
          b"GET / HTTP/1.1\r\nHost\r\n\r\n", b"GET / HTTP/1.1\r\nHost: web.test:99999\r\n\r\n",
          b"GET / HTTP/1.1\r\nHost: web.test:\r\n\r\n", b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n",
          b"GET / HTTP/1.1\r\nHost: bad.test\r\nHost: web.test\r\n\r\n", b"GET / HTTP/1.1\r\nHost: web.test\xc3\r\n\r\n",
          b"Host: web.test\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b""]
    for d in ok:
        assert _relay.first_names(d, WANT) and sniff_name(d) == WANT, d
    for d in no:
        assert not _relay.first_names(d, WANT), d


def _client_hello(name):
    ctx = ssl.create_default_context()
    inc, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outb, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outb.read()


def test_sni_reading_agrees_with_python():
    hello = _client_hello("web.test")
    assert _relay.first_names(hello, "web.test") and sni(hello) == "web.test"
    assert not _relay.first_names(hello, "bad.test")
    assert not _relay.first_names(_client_hello("bad.test"), "web.test")
    for cut in (5, 40, 60, len(hello) // 2, len(hello) - 1):   # incomplete: never yes
        assert not _relay.first_names(hello[:cut], "web.test")
    for i in range(5, len(hello)):      # any one byte changed: yes only if Python reads the same name
        d = bytearray(hello)
        d[i] ^= 0xFF
        if _relay.first_names(bytes(d), "web.test"):
            assert sni(bytes(d)) == "web.test", i


header_name = st.sampled_from(["Host", "host", "HOST", " Host", "Host ", "X-Host", "Hos", "Hostt", "\tHost", "A"])
header_value = st.sampled_from(["web.test", "WEB.test", "web.test.", "web.test:80", "web.test:0", "web.test:x",
                                "bad.test", " web.test ", "[web.test]", "web.test:65536", "", ":80", "web.tést",
                                "web.test:080", "web.test:1:2", "web.test\x0b"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_name, st.sampled_from([":", ": ", " :", ""]), header_value), max_size=4),
       st.booleans())
def test_host_reading_never_says_yes_where_python_says_otherwise(headers, complete):
    d = b"GET / HTTP/1.1\r\n" + b"".join((k + sep + v).encode("latin-1", "replace") + b"\r\n"
                                         for k, sep, v in headers)
    d += b"\r\n" if complete else b""
    if _relay.first_names(d, WANT):
        assert sniff_name(d) == WANT, d


def _python_proxy_route(head: bytes):
    """The Python proxy's reading of an absolute-form request (isolate/netproxy/proxy.py
    SandboxNet._explicit): its route key, or None when it would refuse or not route it."""
    line, _, _rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0].upper() == b"CONNECT":
        return None
    t = parts[1].decode("latin-1")
    if not t.lower().startswith("http://"):
        return None
    hostport, _, _path = t[7:].partition("/")
    host, port = split_hostport(hostport, 80)
    hint = sniff_name(head)
    if host is None or (hint and hint != host.lower()):
        return None
    return f"E{host.lower()}|{port}"


def test_proxy_request_examples():
    assert _relay.proxy_route(b"GET http://web.test:8080/a/b?c HTTP/1.1\r\nHost: web.test\r\n\r\n") == "Eweb.test|8080"
    assert _relay.proxy_route(b"GET http://Web.Test/ HTTP/1.0\r\nHost: web.test:80\r\n\r\n") == "Eweb.test|80"
    assert _relay.proxy_route(b"GET http://web.test HTTP/1.0\r\nHost: web.test\r\n\r\n") == "Eweb.test|80"
    for d in (b"CONNECT web.test:443 HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://web.test/ HTTP/1.1\r\nHost: bad.test\r\n\r\n",
              b"GET http://web.test/ HTTP/1.1\r\n\r\n",                    # no Host: left to Python
              b"GET  http://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://web.test/ HTTP/1.1 x\r\nHost: web.test\r\n\r\n",
              b"GET https://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://web.test:0/ HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://web.test:/ HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://[::1]:80/ HTTP/1.1\r\nHost: [::1]\r\n\r\n",
              b"GET http://web.test./ HTTP/1.1\r\nHost: web.test.\r\n\r\n",
              b"GET /rel HTTP/1.1\r\nHost: web.test\r\n\r\n",
              b"GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\n"):
        assert _relay.proxy_route(d) is None, d


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GET", "get", "CONNECT", "G3T", "POST"]), st.sampled_from([" ", "  "]),
       st.sampled_from(["http://", "HTTP://", "https://", "http:/", ""]),
       st.sampled_from(["web.test", "WEB.test", "web.test.", "bad.test", "[::1]", "", "web.test\xe9"]),
       st.sampled_from(["", ":80", ":8080", ":0", ":99999", ":", ":8x"]), st.sampled_from(["", "/", "/a b", "/p?q"]),
       st.lists(st.tuples(header_name, header_value), max_size=3))
def test_proxy_request_reading_agrees_with_python(method, sp, scheme, host, port, path, headers):
    head = (f"{method}{sp}{scheme}{host}{port}{path} HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1", "replace")
    c = _relay.proxy_route(head)
    if c is not None:
        assert c == _python_proxy_route(head), head


def test_the_benchmark_is_judged_and_reported():
    """benchmarks/netproxy.py feeds benchmarks/targets.py and its section of
    docs/performance.md (a tiny run: the wiring, not the speed)."""
    from benchmarks import netproxy as bench
    from benchmarks import targets

    r = bench.measure_all(rounds=1)
    got = [t for t in targets.evaluate(targets.Results(netproxy=r)) if "allowlist proxy" in t.goal]
    assert [t.goal.rsplit("— ", 1)[1] for t in got] == list(bench.PROXIED)
    assert all(t.status in (targets.MET, targets.NOT_MET) and "ms vs" in t.measured for t in got), got
    text = "\n".join(bench.section(r))
    assert text.startswith(bench.BEGIN) and text.rstrip().endswith(bench.END) and "transparent" in text
