"""Escape attempts through the network, from inside the default and strict profiles.

Covers: the host's loopback services (TCP and UDP on 127.0.0.1, TCP on ::1), the host's
other addresses, the host's abstract and path-named unix sockets, and socket families
the profiles do not allow.
"""

import os
import socket
import subprocess

import pytest

from escape_helpers import PROFILES, run_attack


def host_addresses():
    """The host's own non-loopback IPv4 addresses (reachable from the host itself)."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return []
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            a = parts[parts.index("inet") + 1].split("/")[0]
            if not a.startswith("127."):
                addrs.append(a)
    return addrs


@pytest.fixture
def host_services(tmp_path):
    """Listeners on the host: TCP 0.0.0.0 (so 127.0.0.1 and every host address), UDP 127.0.0.1,
    TCP ::1 if the host has IPv6, an abstract unix socket and a path-named one."""
    made = []

    def keep(s):
        made.append(s)
        s.setblocking(False)
        return s

    tcp = keep(socket.socket())
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(8)
    udp = keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    udp.bind(("127.0.0.1", 0))
    tcp6 = None
    try:
        s6 = socket.socket(socket.AF_INET6)
        s6.bind(("::1", 0))
        s6.listen(8)
        tcp6 = keep(s6)
    except OSError:
        pass
    name = f"isolate-escape-{os.getpid()}"
    abstract = keep(socket.socket(socket.AF_UNIX))
    abstract.bind("\0" + name)
    abstract.listen(8)
    path = str(tmp_path / "host.sock")
    named = keep(socket.socket(socket.AF_UNIX))
    named.bind(path)
    named.listen(8)
    try:
        yield {"tcp": tcp, "udp": udp, "tcp6": tcp6, "abstract": abstract, "named": named,
               "args": {"tcp_port": tcp.getsockname()[1], "udp_port": udp.getsockname()[1],
                        "tcp6_port": tcp6.getsockname()[1] if tcp6 else None, "abstract": name, "path": path,
                        "addresses": host_addresses()}}
    finally:
        for s in made:
            s.close()


NET_ATTACK = r"""
    def connect(family, addr, kind=socket.SOCK_STREAM):
        s = socket.socket(family, kind)
        s.settimeout(2)
        try:
            s.connect(addr)
        finally:
            s.close()
    a = ARGS
    attempt("tcp:127.0.0.1", lambda: connect(socket.AF_INET, ("127.0.0.1", a["tcp_port"])))
    attempt("tcp:localhost", lambda: connect(socket.AF_INET, ("localhost", a["tcp_port"])))
    attempt("tcp:0.0.0.0", lambda: connect(socket.AF_INET, ("0.0.0.0", a["tcp_port"])))
    if a["tcp6_port"]:
        attempt("tcp:::1", lambda: connect(socket.AF_INET6, ("::1", a["tcp6_port"])))
    for addr in a["addresses"]:
        attempt("tcp:" + addr, lambda: connect(socket.AF_INET, (addr, a["tcp_port"])))
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"escaped", ("127.0.0.1", a["udp_port"]))
        finally:
            s.close()
    attempt("udp:127.0.0.1", udp)
    attempt("unix:abstract", lambda: connect(socket.AF_UNIX, "\0" + a["abstract"]))
    attempt("unix:path", lambda: connect(socket.AF_UNIX, a["path"]))
    def dgram_abstract():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(b"escaped", "\0" + a["abstract"])
        finally:
            s.close()
    attempt("unix-dgram:abstract", dgram_abstract)
    out["proc_net_unix_has_name"] = a["abstract"] in open("/proc/net/unix").read()
    out["proc_net_tcp_has_port"] = (":%04X " % a["tcp_port"]) in open("/proc/net/tcp").read()
    out["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
    # Families other than unix/inet/inet6: netlink (routes, audit, ...), packet (raw frames).
    attempt("socket:netlink", lambda: socket.socket(16, socket.SOCK_RAW, 0).close())
    attempt("socket:packet", lambda: socket.socket(17, socket.SOCK_RAW, 0).close())
    attempt("socket:raw-inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close())
    attempt("socket:vsock", lambda: socket.socket(40, socket.SOCK_STREAM, 0).close())
"""


def nothing_arrived(services):
    for key in ("tcp", "tcp6", "abstract", "named"):
        s = services[key]
        if s is None:
            continue
        with pytest.raises(BlockingIOError):
            s.accept()
    with pytest.raises(BlockingIOError):
        services["udp"].recvfrom(100)


@pytest.mark.parametrize("profile", PROFILES)
def test_host_network_is_out_of_reach(profile, host_services):
    args = host_services["args"]
    _, seen = run_attack(profile, NET_ATTACK, args)
    unreachable = {"ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT", "EADDRNOTAVAIL", "timed out"}
    # strict has no /etc/hosts: "localhost" may not even resolve (EAI_NONAME -2 / EAI_AGAIN -3).
    assert seen["tcp:localhost"] in unreachable | {"-2", "-3"}, seen
    for key in ["tcp:127.0.0.1", "tcp:0.0.0.0"] + ["tcp:" + a for a in args["addresses"]] + (
            ["tcp:::1"] if args["tcp6_port"] else []):
        assert seen[key] in unreachable, (key, seen)
    # UDP to loopback "succeeds" (sendto has no peer to refuse it): it must land in the
    # sandbox's own loopback, never the host's (checked below).
    assert seen["udp:127.0.0.1"] in {"OK"} | unreachable, seen
    assert seen["unix:abstract"] == "ECONNREFUSED", seen      # its own network namespace
    assert seen["unix-dgram:abstract"] == "ECONNREFUSED", seen
    assert seen["unix:path"] == "ENOENT", seen                 # not in the view
    assert not seen["proc_net_unix_has_name"] and not seen["proc_net_tcp_has_port"], seen
    assert seen["interfaces"] == ["lo"], seen
    for key in ("socket:netlink", "socket:packet", "socket:vsock"):
        assert seen[key] in {"EPERM", "EAFNOSUPPORT", "EACCES"}, (key, seen)
    assert seen["socket:raw-inet"] in {"EPERM", "EACCES"}, seen  # no CAP_NET_RAW
    # Host side: not one connection or datagram reached the host's sockets.
    nothing_arrived(host_services)
