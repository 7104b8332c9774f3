"""The captured network namespace of one sandbox, made from the host before the program starts.

It has only lo, but `local default dev lo` (and the same for IPv6) makes every address
local, so a connect() to any address is routed into the namespace itself instead of
failing, and loops back through lo. In prerouting, TPROXY hands every TCP packet not to
loopback to the proxy's listener (127.0.0.1/::1 port PROXY_PORT, IP_TRANSPARENT): the
accepted socket's own address is the destination the program asked for, and TCP is not
tracked (notrack: no conntrack entry, no NAT, per packet). nftables' nat output chain
REDIRECTs every UDP datagram to port 53 to the DNS responder (conntrack gives the reply
the address the program asked); every other UDP datagram is taken by TPROXY in
prerouting to a sink that records its original destination. The listeners are sockets
that isolate's host process creates inside the namespace (a thread joins it only for
that) and keeps: nothing of isolate runs inside the sandbox, and the sandbox, which
holds no capability over this namespace (it is owned by the host's user namespace),
cannot change the routes or the rules.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading

from ..errors import UnsupportedError
from ..kernel.constants import CLONE_NEWNET
from ..launch import net

PROXY_PORT = 3128
DNS_PORT = 53
SINK_PORT = 9
IP_TRANSPARENT, IP_RECVORIGDSTADDR = 19, 20
IPV6_TRANSPARENT, IPV6_RECVORIGDSTADDR = 75, 74

_libc = ctypes.CDLL(None, use_errno=True)

NFT_RULES = f"""
table inet isolate {{
  chain notrack_out {{
    type filter hook output priority raw; policy accept;
    meta l4proto tcp notrack
  }}
  chain notrack_in {{
    type filter hook prerouting priority raw; policy accept;
    meta l4proto tcp notrack
  }}
  chain capture {{
    type nat hook output priority -100; policy accept;
    udp dport 53 redirect to :{DNS_PORT}
  }}
  chain capture_tcp {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp ip daddr != 127.0.0.0/8 tproxy ip to 127.0.0.1:{PROXY_PORT}
    meta l4proto tcp ip6 daddr != ::1 tproxy ip6 to [::1]:{PROXY_PORT}
  }}
  chain sink_udp {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto != udp return
    ct direction reply return
    meta l4proto udp udp dport != 53 ip daddr != 127.0.0.0/8 tproxy ip to 127.0.0.1:{SINK_PORT}
    meta l4proto udp udp dport != 53 ip6 daddr != ::1 tproxy ip6 to [::1]:{SINK_PORT}
  }}
  chain drop_other {{
    type filter hook output priority 0; policy accept;
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
    meta l4proto {{ icmp, ipv6-icmp, sctp, udplite }} drop
  }}
}}
"""

SETUP = "ip route add local default dev lo && ip -6 route add local default dev lo && nft -f -"


class NetnsSetupError(OSError):
    pass


def make_captured_namespace() -> int:
    """A new network namespace with the capture in place, as an fd (fail closed: raises)."""
    if os.geteuid() != 0:
        raise UnsupportedError("network.mode", '"allowlist" needs root: the sandbox\'s captured namespace is set '
                                              "up from the host (nsenter, ip, nft) and joined with setns "
                                              "(CAP_SYS_ADMIN over it); callers that are not root are refused")
    fd = net.make_namespace()
    try:
        r = subprocess.run(["nsenter", f"--net=/proc/self/fd/{fd}", "sh", "-c", SETUP], input=NFT_RULES.encode(),
                           pass_fds=(fd,), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        os.close(fd)
        raise NetnsSetupError(0, f"network.mode = \"allowlist\": cannot set up the capture: {e}") from None
    if r.returncode != 0:
        os.close(fd)
        raise NetnsSetupError(0, "network.mode = \"allowlist\": cannot set up the capture (needs root, iproute2 "
                                 f"and nftables): {r.stderr.decode(errors='replace').strip()}")
    return fd


def in_namespace(fd: int, fn):
    """fn() run in a thread that has joined the namespace `fd` (and ends there)."""
    out: dict = {}

    def body():
        try:
            if _libc.setns(fd, CLONE_NEWNET) < 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns: {os.strerror(e)}")
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=body, name="isolate-netproxy-setns")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def make_sockets() -> dict:
    """The listeners, made in the calling thread's namespace: TCP proxy, DNS, sink (v4 and v6)."""
    socks = {}
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            t.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            t.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # inherited by each accepted connection
        t.bind((host, PROXY_PORT))
        t.listen(128)
        t.setblocking(False)
        socks[("tcp", fam)] = t
        for kind, port in (("dns", DNS_PORT), ("sink", SINK_PORT)):
            u = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # On the address REDIRECT delivers to, so that replies leave from it and match
            # the query's conntrack entry (un-NATed back to the address the program asked).
            if kind == "sink":  # TPROXY delivers to it; the original destination comes with each datagram
                if fam == socket.AF_INET:
                    u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                    u.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
                else:
                    u.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                    u.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
            u.bind(("127.0.0.1" if fam == socket.AF_INET else "::1", port))
            u.setblocking(False)
            socks[(kind, fam)] = u
    return socks
