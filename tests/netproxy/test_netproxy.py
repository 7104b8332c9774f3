"""network.mode = "allowlist", proven from inside a sandbox against servers on this
machine's loopback (names mapped for the test by the proxy's resolver override)."""

import json
import socket
import time

import pytest

from isolate import netproxy
from netproxy_helpers import echo_server, http_server, inside, make_ca, reasons

TLS_NAMES = ["tls.test"]


@pytest.fixture(scope="module")
def env():
    web, web_port = http_server("web")
    other, other_port = http_server("other")
    echo, echo_port = echo_server()
    ca_pem, ctx = make_ca(TLS_NAMES)
    tls, tls_port = http_server("tls", tls_context=ctx)
    six, six_port = http_server("six", host="::1")   # the host's IPv6 loopback
    netproxy.set_resolver(lambda n: ["::1"] if n == "v6.test" else ["127.0.0.1"] if n.endswith(".test") else [])
    allow = [f"web.test:{web_port}", f"echo.test:{echo_port}", f"tls.test:{tls_port}", f"*.wild.test:{web_port}",
             f"intranet.test:{web_port}", f"bad.test:{other_port}", f"v6.test:{six_port}", f"[::1]:{six_port}"]
    # The servers are on loopback: reaching them needs their addresses allowed explicitly.
    allow += [f"127.0.0.1:{p}" for p in (web_port, echo_port, tls_port, other_port)]
    profile = {"network": {"mode": "allowlist", "allow": allow, "deny": [f"bad.test:{other_port}"]}}
    yield dict(web=web_port, other=other_port, echo=echo_port, tls=tls_port, six=six_port, ca=ca_pem,
               profile=profile)
    netproxy.set_resolver(None)
    for s in (web, other, echo, tls, six):
        s.shutdown()


GET = """
def get(host, port, path="/", via_proxy=False, hosthdr=None):
    if via_proxy:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
        req = f"GET http://{host}:{port}{path} HTTP/1.0\\r\\nHost: {hosthdr or host}\\r\\n\\r\\n"
    else:
        s = socket.create_connection((host, port), timeout=10)
        req = f"GET {path} HTTP/1.0\\r\\nHost: {hosthdr or host}\\r\\n\\r\\n"
    s.sendall(req.encode())
    try:
        return recv_all(s).decode(errors="replace")
    except OSError as e:
        return "error: " + type(e).__name__
def attempt(fn):
    try:
        return fn()
    except OSError as e:
        return "error: " + type(e).__name__ + " " + str(e)
"""


def test_allowed_http_direct_and_through_proxy(env):
    r, out = inside(GET + f"""
out["direct"] = get("web.test", {env['web']}, "/direct")
out["proxy"] = get("web.test", {env['web']}, "/proxied", via_proxy=True)
out["env"] = os.environ.get("HTTP_PROXY")
out["addr"] = socket.gethostbyname("web.test")
""", env["profile"])
    for k, path in (("direct", "/direct"), ("proxy", "/proxied")):
        body = json.loads(out[k].split("\r\n\r\n", 1)[1])
        assert body["server"] == "web" and body["path"] == path
    assert out["env"] == "http://127.0.0.1:3128"
    assert out["addr"].startswith("198.1")  # a synthetic address handed out by isolate's DNS
    assert r.violations == ()


def test_curl_noproxy_is_held_the_same(env):
    """A client that ignores the proxy variables is captured anyway: allowed works, denied is refused."""
    cmd = (f"curl -sS --noproxy '*' --max-time 10 http://web.test:{env['web']}/np; echo; "
           f"curl -sS --noproxy '*' --max-time 10 http://10.9.9.9:{env['web']}/; echo rc=$?")
    r = netproxy.run(["/bin/sh", "-c", cmd], profile=env["profile"], capture_output=True, text=True, timeout=60)
    assert '"server": "web"' in r.stdout and '"/np"' in r.stdout
    assert "rc=0" not in r.stdout
    assert any(v["host"] == "10.9.9.9" and "raw address" in v["reason"] for v in r.violations), reasons(r)


def test_plain_tcp(env):
    r, out = inside(f"""
s = socket.create_connection(("echo.test", {env['echo']}), timeout=10)
s.sendall(b"ping")
out["got"] = s.recv(100).decode()
""", env["profile"])
    assert out["got"] == "echo:ping"
    assert r.violations == ()


def test_https_with_test_ca_direct_and_connect(env):
    r, out = inside(GET + f"""
CA = {env['ca']!r}
ctx = ssl.create_default_context(cadata=CA)
def fetch(sock):
    t = ctx.wrap_socket(sock, server_hostname="tls.test")
    t.sendall(b"GET /s HTTP/1.0\\r\\nHost: tls.test\\r\\n\\r\\n")
    return recv_all(t).decode()
out["direct"] = fetch(socket.create_connection(("tls.test", {env['tls']}), timeout=10))
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT tls.test:{env['tls']} HTTP/1.1\\r\\nHost: tls.test:{env['tls']}\\r\\n\\r\\n")
out["connect_reply"] = s.recv(1000).decode()
out["connect"] = fetch(s)
""", env["profile"])
    assert '"server": "tls"' in out["direct"]
    assert out["connect_reply"].startswith("HTTP/1.1 200")
    assert '"server": "tls"' in out["connect"]
    assert r.violations == ()


def test_denied_name_port_and_deny_list(env):
    r, out = inside(GET + f"""
out["nx"] = attempt(lambda: socket.gethostbyname("nope.test"))
out["denied"] = attempt(lambda: socket.gethostbyname("bad.test"))
out["denied_conn"] = attempt(lambda: get("bad.test", {env['other']}))
out["port"] = get("web.test", {env['echo']})
out["proxy_denied"] = get("nope.test", {env['web']}, via_proxy=True)
""", env["profile"])
    assert out["nx"].startswith("error: gaierror")
    # bad.test:PORT is denied: the name still resolves (a deny with a port leaves its other
    # ports to allow), and the connection is refused.
    assert out["denied"].startswith("198.1") and '"server"' not in out["denied_conn"]
    assert out["port"] in ("", "error: ConnectionResetError")
    assert "403" in out["proxy_denied"]
    got = reasons(r)
    assert any(p == "dns" and n == "nope.test" for p, n, *_ in got), got
    assert any(p == "tcp" and n == "bad.test" and "deny" in why for p, n, _, _, why in got), got
    assert any(n == "web.test" and port == env["echo"] and "port not allowed" in why for _, n, _, port, why in got), got
    assert any(n == "nope.test" and port == env["web"] for _, n, _, port, _ in got), got


def test_wildcard_and_private_address_refused(env):
    r, out = inside(GET + f"""
out["wild"] = get("a.wild.test", {env['web']})
out["apex"] = attempt(lambda: socket.gethostbyname("wild.test"))
""", env["profile"])
    assert '"host": "a.wild.test"' in out["wild"]
    assert out["apex"].startswith("error")
    # intranet.test is allowed by name, but resolves (on the host) to 127.0.0.1, whose
    # port here is not allowed: refused, as a name that would rebind into the host's services.
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["allow"] = [a for a in prof["network"]["allow"] if not a.startswith("127.0.0.1")]
    r, out = inside(GET + f"""
out["intranet"] = get("intranet.test", {env['web']})
""", prof)
    assert '"server"' not in out["intranet"]
    assert any(v["name"] == "intranet.test" and "loopback, link-local, private" in v["reason"]
               for v in r.violations), reasons(r)


def test_raw_ip_ipv6_and_not_handed_out(env):
    r, out = inside(GET + f"""
out["raw"] = attempt(lambda: get("10.9.9.9", 80))
out["synthetic"] = attempt(lambda: get("198.18.3.3", {env['web']}))
out["v6"] = attempt(lambda: get("2001:db8::1", 443))
""", env["profile"])
    for k in ("raw", "synthetic", "v6"):
        assert '"server"' not in out[k], out
    got = reasons(r)
    assert any(h == "10.9.9.9" and "raw address" in why for _, _, h, _, why in got), got
    assert any(h == "198.18.3.3" and "not handed out" in why for _, _, h, _, why in got), got
    assert any(h == "2001:db8::1" and port == 443 for _, _, h, port, _ in got), got


def test_ipv6_synthetic_addresses(env):
    """AAAA answers for allowed names are synthetic IPv6 addresses (64:ff9b:1::/96, the
    IPv4 synthetic address in the low bits), captured and carried like IPv4: here to a
    server on the host's ::1. IPv6 literals not handed out are refused and reported."""
    r, out = inside(GET + f"""
six = [a[4][0] for a in socket.getaddrinfo("v6.test", {env['six']}, socket.AF_INET6, socket.SOCK_STREAM)]
four = socket.gethostbyname("v6.test")
out["six"], out["four"] = six, four
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(10)
s.connect((six[0], {env['six']}))
out["peer"] = s.getpeername()[0]
s.sendall(b"GET /over-six HTTP/1.0\\r\\nHost: v6.test\\r\\n\\r\\n")
out["got"] = recv_all(s).decode()
s6 = socket.create_connection((socket.getaddrinfo("web.test", {env['web']}, socket.AF_INET6)[0][4][0], {env['web']}), timeout=10)
s6.sendall(b"GET /web6 HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
out["web6"] = recv_all(s6).decode()
out["not_handed_out"] = attempt(lambda: get("64:ff9b:1::c613:99", {env['six']}))
out["raw6"] = attempt(lambda: get("2001:db8::5", {env['six']}))
out["aaaa_denied"] = attempt(lambda: socket.getaddrinfo("nope.test", 80, socket.AF_INET6))
""", env["profile"])
    assert len(out["six"]) == 1 and out["six"][0].startswith("64:ff9b:1::"), out
    # the same name's IPv4 synthetic address sits in the low 32 bits
    assert socket.inet_pton(socket.AF_INET6, out["six"][0])[12:] == socket.inet_aton(out["four"])
    assert out["peer"] == out["six"][0]      # the program sees the address it connected to
    body = json.loads(out["got"].split("\r\n\r\n", 1)[1])
    assert body == {"server": "six", "host": "v6.test", "path": "/over-six"}
    assert '"server": "web"' in out["web6"]  # an IPv4-only server reached over the sandbox's IPv6
    for k in ("not_handed_out", "raw6"):
        assert '"server"' not in out[k], out
    assert out["aaaa_denied"].startswith("error: gaierror")
    got = reasons(r)
    assert any(h == "64:ff9b:1::c613:99" and "not handed out" in why for _, _, h, _, why in got), got
    assert any(h == "2001:db8::5" and port == env["six"] and "raw address" in why for _, _, h, port, why in got), got
    assert any(p == "dns" and n == "nope.test" for p, n, *_ in got), got
    assert len(got) == 3, got


def test_curl_ipv6(env):
    cmd = (f"curl -sS -6 --noproxy '*' --max-time 10 http://v6.test:{env['six']}/curl6; echo; "
           f"curl -sS -6 --noproxy '*' --max-time 10 'http://[2001:db8::7]:{env['six']}/'; echo rc=$?")
    r = netproxy.run(["/bin/sh", "-c", cmd], profile=env["profile"], capture_output=True, text=True, timeout=60)
    assert '"server": "six"' in r.stdout and '"/curl6"' in r.stdout, (r.stdout, r.stderr)
    assert "rc=0" not in r.stdout
    assert [(v["host"], v["port"]) for v in r.violations] == [("2001:db8::7", env["six"])], reasons(r)


def test_connect_relay_and_host_mismatch(env):
    """CONNECT to a denied target is refused; an allowed CONNECT (or an allowed name's
    connection) that then asks for another Host is refused too."""
    r, out = inside(GET + f"""
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT nope.test:{env['web']} HTTP/1.1\\r\\n\\r\\n")
out["denied_connect"] = s.recv(1000).decode()
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(b"CONNECT web.test:{env['web']} HTTP/1.1\\r\\n\\r\\n")
out["ok_connect"] = s.recv(1000).decode()
s.sendall(b"GET / HTTP/1.0\\r\\nHost: bad.test\\r\\n\\r\\n")
out["inner"] = attempt(lambda: s.recv(1000).decode())
out["mismatch"] = get("web.test", {env['web']}, hosthdr="bad.test")
""", env["profile"])
    assert out["denied_connect"].startswith("HTTP/1.1 403")
    assert out["ok_connect"].startswith("HTTP/1.1 200")
    assert '"server"' not in out["inner"] and '"server"' not in out["mismatch"]
    got = reasons(r)
    assert any(n == "nope.test" and "CONNECT" in why for _, n, _, _, why in got), got
    assert sum("differs" in why for *_, why in got) == 2, got


def test_udp_and_dns_to_a_public_resolver(env):
    r, out = inside(f"""
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"hello", ("203.0.113.7", 9999))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.sendto(b"hello", ("2001:db8::7", 4433))  # QUIC-like, IPv6
def query(name, server):
    q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.settimeout(5)
    d.sendto(q, (server, 53))
    a, src = d.recvfrom(512)
    return {{"rcode": a[3] & 15, "answers": struct.unpack("!H", a[6:8])[0], "src": src[0],
             "addr": socket.inet_ntoa(a[-4:]) if a[7] else None}}
out["denied"] = query("exfil-secret.example.com", "8.8.8.8")
out["allowed"] = query("web.test", "8.8.8.8")
out["stub"] = query("web.test", "127.0.0.53")  # a host whose resolv.conf names systemd-resolved
""", env["profile"])
    assert out["denied"]["rcode"] == 3 and out["denied"]["answers"] == 0
    assert out["denied"]["src"] == "8.8.8.8"  # the reply looks like the resolver's, but isolate answered
    assert out["allowed"]["rcode"] == 0 and out["allowed"]["addr"].startswith("198.1")
    assert out["stub"]["addr"] == out["allowed"]["addr"]
    got = reasons(r)
    assert any(p == "udp" and h == "203.0.113.7" and port == 9999 for p, _, h, port, _ in got), got
    assert any(p == "udp" and h == "2001:db8::7" and port == 4433 for p, _, h, port, _ in got), got
    assert any(p == "dns" and n == "exfil-secret.example.com" for p, n, *_ in got), got


def test_dns_none(env):
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["dns"] = "none"
    r, out = inside("""
try:
    out["a"] = socket.gethostbyname("web.test")
except OSError as e:
    out["a"] = "error"
""", prof)
    assert out["a"] == "error"
    assert any(v["proto"] == "dns" and v["name"] == "web.test" for v in r.violations)


def test_flood_from_one_sandbox_does_not_stop_another(env):
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["max_connections"] = 8
    flood = netproxy.Popen(["/usr/bin/python3", "-c", f"""
import socket, time
held = []
end = time.time() + 60
while time.time() < end:
    try:
        held.append(socket.create_connection(("web.test", {env['web']}), timeout=2))
    except OSError:
        pass
    if len(held) > 400:
        for s in held: s.close()
        held = []
"""], profile=prof)
    try:
        for _ in range(600):  # until the flood is being refused
            if any("max_connections" in v["reason"] for v in flood.violations):
                break
            time.sleep(0.05)
        assert any("max_connections" in v["reason"] for v in flood.violations)
        r, out = inside(GET + f"""
out["ok"] = get("web.test", {env['web']}, "/second")
""", env["profile"])
        assert '"/second"' in out["ok"]
        assert r.violations == ()
    finally:
        flood.kill()
        flood.wait()


def test_bytes_per_second_setting_carries_data(env):
    prof = json.loads(json.dumps(env["profile"]))
    prof["network"]["bytes_per_second"] = "1M"
    r, out = inside(GET + f"""
out["ok"] = get("web.test", {env['web']}, "/limited")
""", prof)
    assert '"/limited"' in out["ok"]


def test_violations_for_by_id(env):
    p = netproxy.Popen(["/usr/bin/getent", "hosts", "nope.test"], profile=env["profile"])
    p.wait()
    got = netproxy.violations_for(p.netproxy_id)
    assert got and got == p.violations and got[0]["name"] == "nope.test"


def test_tls_sni_must_match_the_name_connected_to(env):
    """A TLS ClientHello whose SNI names another host (domain fronting through an allowed
    name's address) is refused before anything reaches the server."""
    r, out = inside(f"""
ctx = ssl.create_default_context(cadata={env['ca']!r})
def hello(sni):
    s = socket.create_connection(("tls.test", {env['tls']}), timeout=10)
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
        return "connected"
    except (OSError, ssl.SSLError) as e:
        return "error " + type(e).__name__
out["fronted"] = hello("bad.test")
out["right"] = hello("tls.test")
""", env["profile"])
    assert out["fronted"].startswith("error") and out["right"] == "connected"
    assert any(v["name"] == "tls.test" and "'bad.test'" in v["reason"] for v in r.violations), reasons(r)


def test_cli_run_reports_refusals(env, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    prof = tmp_path / "p.toml"
    prof.write_text('[network]\nmode = "allowlist"\nallow = ["pypi.org:443"]\n')
    isolate_cli = Path(sys.executable).parent / "isolate"
    r = subprocess.run([str(isolate_cli), "run", "-p", str(prof), "--", "/usr/bin/getent", "hosts", "nope.example"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2  # getent: not found
    assert "refused dns nope.example" in r.stderr


def test_cli_explain_shows_an_allowlist_profile(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    prof = tmp_path / "p.toml"
    prof.write_text('[network]\nmode = "allowlist"\nallow = ["pypi.org:443"]\n')
    r = subprocess.run([str(Path(sys.executable).parent / "isolate"), "explain", str(prof)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"mode": "allowlist"' in r.stdout and "pypi.org:443" in r.stdout
