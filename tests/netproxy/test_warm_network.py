"""netproxy.WarmPool: warm sandboxes of an allowlist profile, each with a captured namespace
and a proxy of its own; and callers that are not root are refused with a clear error."""

import json
import os

import pytest

import isolate
from isolate import netproxy
from netproxy_helpers import HOST_NETNS, RECV_ALL, http_server

SNIPPET = """
import json, os, socket, sys
assert os.readlink("/proc/self/ns/net") != {netns!r}, "not in a sandbox's network namespace"
out = {{"ns": os.readlink("/proc/self/ns/net"), "proxy": os.environ.get("HTTP_PROXY")}}
s = socket.create_connection(("web.test", {port}), timeout=10)
s.sendall(b"GET /warm-" + sys.argv[1].encode() + b" HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
out["got"] = recv_all(s).decode()
for name in sys.argv[2:]:
    try:
        socket.gethostbyname(name)
    except OSError:
        pass
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def web():
    srv, port = http_server("warm")
    netproxy.set_resolver(lambda n: ["127.0.0.1"] if n.endswith(".test") else [])
    yield port
    netproxy.set_resolver(None)
    srv.shutdown()


def test_warm_pool_with_an_allowlist_profile(web):
    prof = {"network": {"mode": "allowlist", "allow": [f"web.test:{web}", f"127.0.0.1:{web}"]}}
    code = RECV_ALL + SNIPPET.format(netns=HOST_NETNS, port=web)
    with netproxy.WarmPool(prof, size=2) as pool:
        assert pool.wait_ready(30)
        results = [pool.run(["/usr/bin/python3", "-c", code, str(i), f"denied{i}.test"], capture_output=True,
                            text=True, timeout=60) for i in range(3)]
        assert pool.stats["served_warm"] >= 1
    seen = set()
    for i, r in enumerate(results):
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        body = json.loads(out["got"].split("\r\n\r\n", 1)[1])
        assert body == {"server": "warm", "host": "web.test", "path": f"/warm-{i}"}
        assert out["proxy"] == "http://127.0.0.1:3128"
        # each task's own refusals only: its own namespace and proxy
        assert {v["name"] for v in r.violations} == {f"denied{i}.test"}, r.violations
        seen.add(out["ns"])
    assert len(seen) == 3   # a network namespace per task


def test_warm_pool_other_profiles_as_isolate_warmpool():
    with netproxy.WarmPool("default", size=1) as pool:
        r = pool.run(["/bin/true"])
        assert r.returncode == 0 and r.violations == ()


def test_plain_warm_pool_refuses_an_allowlist_profile():
    with pytest.raises(isolate.UnsupportedError, match="netproxy.*WarmPool"):
        isolate.WarmPool({"network": {"mode": "allowlist", "allow": ["pypi.org"]}}, size=1)


def test_not_root_is_refused_clearly():
    """Fail closed: a caller that is not root gets an UnsupportedError naming network.mode."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                netproxy.run(["/bin/true"], profile={"network": {"mode": "allowlist", "allow": ["pypi.org"]}})
                out = "ran"
            except isolate.UnsupportedError as e:
                out = f"{type(e).__name__}: {e}"
        except BaseException as e:
            out = repr(e)
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    assert got.startswith("UnsupportedError: network.mode: \"allowlist\" needs root"), got


def test_popen_network_argument_needs_a_namespace_of_its_own():
    with pytest.raises(ValueError, match=r"network=: the profile must ask for a network namespace of its own"):
        isolate.Popen(["/bin/true"], profile={"network": {"mode": "host"}}, network=object())
