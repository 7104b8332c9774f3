"""An agent Session with network.mode = "allowlist": each command's refusals are in its
ExecResult.violations (and rendered for the model); what was allowed is not listed."""

import json

import pytest

import isolate
from isolate import netproxy
from netproxy_helpers import HOST_NETNS, RECV_ALL, echo_server, http_server


@pytest.fixture(scope="module")
def servers():
    web, web_port = http_server("web")
    echo, echo_port = echo_server()
    netproxy.set_resolver(lambda n: ["127.0.0.1"] if n.endswith(".test") else [])
    yield web_port, echo_port
    netproxy.set_resolver(None)
    web.shutdown()
    echo.shutdown()


def net(result):
    return [v for v in result.violations if v["kind"] == "network"]


def _profile(web_port):
    return {"extends": "agent",
            "network": {"mode": "allowlist", "allow": [f"web.test:{web_port}", f"127.0.0.1:{web_port}"],
                        "deny": ["bad.test"]}}


GET = """
import json, os, socket, sys
assert os.readlink("/proc/self/ns/net") != {netns!r}, "not in a sandbox's network namespace"
def get(host, port):
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(f"GET /s HTTP/1.0\\r\\nHost: {{host}}\\r\\n\\r\\n".encode())
        return recv_all(s).decode(errors="replace")
    except OSError as e:
        return "error: " + type(e).__name__
print(json.dumps({{a: get(a, int(p)) for a, p in (x.split(":") for x in sys.argv[1:])}}))
"""


def test_session_command_lists_its_network_refusals(servers, tmp_path):
    web_port, echo_port = servers
    code = RECV_ALL + GET.format(netns=HOST_NETNS)
    (tmp_path / "get.py").write_text(code)
    with isolate.Session(_profile(web_port), workspace=tmp_path) as s:
        assert s.netproxy_id is not None
        # allowed: reaches the server, nothing listed
        r = s.exec(["python3", "get.py", f"web.test:{web_port}"])
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert '"server": "web"' in out["web.test"]
        # (glibc's getaddrinfo, given an IPv4 and an IPv6 address, sorts them and probes a
        # netlink socket for that, which the default profile's socket_families refuses: a
        # syscall violation, not a network one; see docs/network.md)
        assert net(r) == [] and "connect to" not in r.for_model() and "DNS lookup" not in r.for_model()
        # a denied name (DNS), a port not allowed for an allowed name, a raw address
        r = s.exec(["python3", "get.py", "bad.test:80", f"web.test:{echo_port}", "10.9.9.9:80"])
        out = json.loads(r.stdout)
        assert all('"server"' not in v for v in out.values()), out
        got = [(v["proto"], v.get("name"), v.get("host"), v.get("port"), v["reason"]) for v in net(r)]
        assert ("dns", "bad.test", None, None, "DNS: denied by network.deny") in got, got
        assert any(p == "tcp" and n == "web.test" and port == echo_port and "port not allowed" in why
                   for p, n, _, port, why in got), got
        assert any(p == "tcp" and h == "10.9.9.9" and port == 80 and "raw address" in why
                   for p, _, h, port, why in got), got
        text = r.for_model()
        assert "DNS lookup of bad.test (DNS: denied by network.deny)" in text, text
        assert f"connect to web.test:{echo_port} (port not allowed for this name)" in text, text
        assert "connect to 10.9.9.9:80 (raw address: address not in network.allow)" in text, text
        # the next command starts clean: earlier refusals are not listed again
        r = s.exec(f"python3 get.py web.test:{web_port}")   # through the session's shell
        assert '"server": "web"' in json.loads(r.stdout)["web.test"] and net(r) == []
        # all of the session's refusals, by id
        assert len(netproxy.violations_for(s.netproxy_id)) >= 3


def test_session_pool_with_an_allowlist_profile(servers, tmp_path):
    web_port, _ = servers
    (tmp_path / "get.py").write_text(RECV_ALL + GET.format(netns=HOST_NETNS))
    with isolate.SessionPool(_profile(web_port), size=1, workspace=tmp_path) as pool:
        a, b = pool.acquire(), pool.acquire()
        try:
            assert a.netproxy_id != b.netproxy_id   # a namespace and proxy each
            r = a.exec(["python3", "get.py", "nope.test:80"])
            assert [v["name"] for v in net(r)] == ["nope.test"]
            r = b.exec(["python3", "get.py", f"web.test:{web_port}"])
            assert '"server": "web"' in json.loads(r.stdout)["web.test"] and net(r) == []
        finally:
            a.close()
            b.close()
