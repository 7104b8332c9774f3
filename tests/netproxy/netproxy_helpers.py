"""Servers on this machine's loopback, names mapped for the test (the proxy's resolver
override), and running a Python snippet inside an allowlist sandbox."""

import json
import os
import socketserver
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from isolate import netproxy

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # the checkout: benchmarks/ is not installed
    sys.path.insert(0, ROOT)
from benchmarks import httpserver  # noqa: E402

PY = "/usr/bin/python3"

# Read a socket to EOF, inside a sandbox (snippets use it; PRELUDE has it).
RECV_ALL = textwrap.dedent("""
    def recv_all(s):
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b
""")

# Every snippet first checks it runs in a sandbox of its own network namespace.
PRELUDE = RECV_ALL + textwrap.dedent("""
    import json, os, socket, ssl, struct, sys
    assert os.readlink("/proc/self/ns/net") != HOST_NETNS, "not in a sandbox's network namespace"
    out = {}
    def done():
        print(json.dumps(out))
""")

HOST_NETNS = os.readlink("/proc/self/ns/net")


def http_server(label="web", tls_context=None, host="127.0.0.1"):
    """The benchmark's threaded HTTP server (benchmarks/httpserver.py), in this process."""
    return httpserver.serve(label, tls_context=tls_context, host=host)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(1024)
        self.request.sendall(b"echo:" + data)


def echo_server():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def make_ca(names):
    """A test CA and a server certificate for `names`, made with the openssl CLI: (ca_pem, context)."""
    d = tempfile.mkdtemp(prefix="netproxy-ca-")
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=isolate test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", f"/CN={names[0]}")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key"))
    with open(os.path.join(d, "ca.pem")) as f:
        return f.read(), ctx


def inside(code, profile, timeout=60, popen=False):
    """Run PRELUDE + code with the system Python in an allowlist sandbox: (Result, its JSON output)."""
    src = f"HOST_NETNS = {HOST_NETNS!r}\n" + PRELUDE + textwrap.dedent(code) + "\ndone()\n"
    r = netproxy.run([PY, "-c", src], profile=profile, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r, json.loads(r.stdout.strip().splitlines()[-1])


def reasons(result):
    return [(v["proto"], v.get("name"), v.get("host"), v.get("port"), v["reason"]) for v in result.violations]
