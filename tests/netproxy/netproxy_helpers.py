"""Servers on this machine's loopback, names mapped for the test (the proxy's resolver
override), and running a Python snippet inside an allowlist sandbox."""

import http.server
import json
import os
import socketserver
import ssl
import subprocess
import tempfile
import textwrap
import threading

from isolate import netproxy

PY = "/usr/bin/python3"

# Every snippet first checks it runs in a sandbox of its own network namespace.
PRELUDE = textwrap.dedent("""
    import json, os, socket, ssl, struct, sys
    assert os.readlink("/proc/self/ns/net") != HOST_NETNS, "not in a sandbox's network namespace"
    out = {}
    def done():
        print(json.dumps(out))
""")

HOST_NETNS = os.readlink("/proc/self/ns/net")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = json.dumps({"server": self.server.label, "host": self.headers.get("Host"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class _Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def http_server(label="web", tls_context=None):
    srv = _Threaded(("127.0.0.1", 0), _Handler)
    srv.label = label
    if tls_context is not None:
        srv.socket = tls_context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


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
