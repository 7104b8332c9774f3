"""The host-side proxy of one sandbox: its listeners (inside the sandbox's namespace), the
names its DNS handed out, its policy, its limits and the refusals (violations).

One thread per sandbox answers DNS (a select loop over its own sockets) and starts
workers; the sandbox's worker threads accept its TCP connections themselves (each in an
epoll of its own with EPOLLEXCLUSIVE, so one waiting worker is woken per connection),
check and relay them. SPARE_WORKERS of them always wait, started ahead of the next
connection, so a connection does not pay for starting a thread nor for a hand-over
between threads. A sandbox has at most max_connections connections open, and so at most
that many busy workers: a flood from one sandbox costs its own threads and its own
budget, not the others'.

The data path is C (_relay.c), without the GIL: a worker's loop (Gate.serve) accepts,
counts the connection against the limit, and serves it itself when a route covers it: a
decision made here before for the same synthetic address and port (or the same proxy
target), kept as long as the host's answer for the name (RESOLVE_TTL), and first bytes
that name the route's name exactly (HTTP Host, TLS SNI, the URL and Host of a proxy
request). Every other connection comes back to Python, which decides, refuses and
records as it always did; the C readings are conservative (yes only where the Python
ones say the same: tests/netproxy/test_fast_path.py), so the fast path never allows
what Python would not, and never refuses anything.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
import select
import socket
import struct
import threading
import time
from typing import Callable

from ..profile.hosts import HostRule, parse_host_entry
from . import _relay, dns, netns

SYNTHETIC = ipaddress.ip_network("198.18.0.0/15")
# The IPv6 synthetic addresses: the local-use translation prefix of RFC 8215, the IPv4
# synthetic address of the same name in the low 32 bits (64:ff9b:1::c612:1 = 198.18.0.1).
SYNTHETIC6 = ipaddress.ip_network("64:ff9b:1::/96")
MAX_VIOLATIONS = 1000
PEEK_TIMEOUT = 0.5      # seconds to wait for a client's first bytes (protocols where the server speaks first)
CONNECT_TIMEOUT = 10.0
HEAD_MAX = 16384
CLOSE_WAIT = 2.0        # seconds close() waits for the sandbox's worker threads to end
RESOLVE_TTL = 5.0       # seconds the host's answer for an allowed name is kept (per sandbox)
IDLE_WORKER = 30.0      # seconds an idle worker beyond the spare ones waits before it ends
SPARE_WORKERS = 2       # workers of a sandbox kept waiting for the next connection

# name -> list of addresses; None = the host's resolver. Settable for tests (set_resolver).
_resolver: Callable[[str], list] | None = None


def set_resolver(fn: Callable[[str], list] | None) -> None:
    """Resolve names with fn(name) -> [address, ...] instead of the host's resolver (tests;
    an empty list = the name does not exist)."""
    global _resolver
    _resolver = fn


def resolve(name: str, port: int) -> list:
    if _resolver is not None:
        return list(_resolver(name))
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(i[4][0] for i in infos))


@functools.lru_cache(maxsize=4096)
def is_internal(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        a = a.ipv4_mapped
    return (a.is_loopback or a.is_link_local or a.is_private or a.is_unspecified or a.is_multicast
            or a.is_reserved or a in SYNTHETIC or a in SYNTHETIC6)


def is_synthetic(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return a in SYNTHETIC or a in SYNTHETIC6


def synthetic6(ipv4: str) -> str:
    """The IPv6 synthetic address that goes with an IPv4 one."""
    return str(SYNTHETIC6[int(ipaddress.IPv4Address(ipv4))])


class Policy:
    """The profile's allow and deny entries; its answers are kept per question (the
    policy never changes), so a connection's check is a dict look-up."""

    def __init__(self, allow, deny):
        self.allow: list[HostRule] = [parse_host_entry(e) for e in allow]
        self.deny: list[HostRule] = [parse_host_entry(e) for e in deny]
        self._names: dict = {}
        self._ips: dict = {}

    def name_allowed(self, name: str, port: int | None) -> str | None:
        """None when allowed, else why not."""
        key = (name, port)
        if key not in self._names:
            if len(self._names) > 4096:
                self._names.clear()
            self._names[key] = self._name_allowed(name, port)
        return self._names[key]

    def _name_allowed(self, name: str, port: int | None) -> str | None:
        def m(r):
            if port is None:  # a DNS question: does any port of the name stay open?
                return r.matches_name(name, r.port or 0)
            return r.matches_name(name, port)
        # For DNS, only a deny of the whole name (no port) refuses it.
        if any(r.matches_name(name, port) if port is not None else (r.port is None and m(r)) for r in self.deny):
            return "denied by network.deny"
        if not any(m(r) for r in self.allow):
            return "name not in network.allow" if port is None or not any(
                r.matches_name(name, r.port or port) for r in self.allow) else "port not allowed for this name"
        return None

    def ip_allowed(self, ip: str, port: int) -> str | None:
        key = (ip, port)
        if key not in self._ips:
            if len(self._ips) > 4096:
                self._ips.clear()
            self._ips[key] = self._ip_allowed(ip, port)
        return self._ips[key]

    def ip_denied(self, ip: str, port: int) -> bool:
        return self.ip_allowed(ip, port) == "denied by network.deny"

    def _ip_allowed(self, ip: str, port: int) -> str | None:
        if any(r.matches_ip(ip, port) for r in self.deny):
            return "denied by network.deny"
        if not any(r.matches_ip(ip, port) for r in self.allow):
            return "address not in network.allow"
        return None


class RateLimit:
    """A token bucket shared by a sandbox's connections (bytes per second; None = no
    limit). The bucket is C's (_relay.Bucket: a mutex, no GIL), so that the relay loops,
    which run without the GIL, take from it directly."""

    def __init__(self, rate: int | None):
        self.rate = rate
        self.bucket = _relay.Bucket(rate) if rate else None

    def take(self, n: int) -> None:
        if self.bucket is not None:
            self.bucket.take(n)


_ids = itertools.count(1)


class SandboxNet:
    """Everything of one allowlist sandbox's network; start() before the launch, close() after."""

    def __init__(self, network: dict):
        self.id = f"{os.getpid()}-{next(_ids)}-{os.urandom(4).hex()}"
        self.policy = Policy(network.get("allow", ()), network.get("deny", ()))
        self.dns_mode = network.get("dns", "allowlist")
        self.max_connections = int(network.get("max_connections", 64))
        self.limit = RateLimit(network.get("bytes_per_second"))
        self.violations: list = []
        self.dropped_violations = 0
        self.names: dict[str, str] = {}       # synthetic address (IPv4 and IPv6) -> name
        self._resolved: dict = {}             # name -> (when, the host's addresses for it)
        self.addrs: dict[str, str] = {}       # name -> synthetic address
        self._next = 1
        self._lock = threading.Lock()
        self.stats = {"connections": 0, "allowed": 0, "refused": 0, "dns": 0}   # of the connections Python saw
        self._closed = threading.Event()
        # The connections open, the workers alive and waiting, and the routes the fast path
        # serves (C: the workers share them without the GIL).
        self.gate = _relay.Gate(self.max_connections, SPARE_WORKERS)
        self.fast = True                      # False: no routes, every connection decided in Python
        self._released = False                # close() is done but for the pipes the workers use
        self._threads: set = set()            # the worker threads
        self.fd = netns.make_captured_namespace()
        try:
            self.socks = netns.in_namespace(self.fd, netns.make_sockets)
        except BaseException:
            os.close(self.fd)
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._spawn_r, self._spawn_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name=f"isolate-netproxy-{self.id}", daemon=True)
        self._thread.start()

    # -- record ------------------------------------------------------------
    def refuse(self, reason: str, host: str | None = None, port: int | None = None, name: str | None = None,
               proto: str = "tcp") -> None:
        v = {"kind": "network", "proto": proto, "host": host, "port": port, "name": name, "reason": reason,
             "time": time.time()}
        with self._lock:
            self.stats["refused"] += 1
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append(v)
            else:
                self.dropped_violations += 1

    def count(self) -> int:
        """How many violations are kept so far (a mark for recorded(since=...))."""
        with self._lock:
            return len(self.violations)

    def recorded(self, since: int = 0) -> list:
        """A copy of the violations so far (after the first `since`)."""
        with self._lock:
            return [dict(v) for v in self.violations[since:]]

    def env(self) -> dict:
        return proxy_env()

    def counters(self) -> dict:
        """The connections Python decided (connections, allowed, refused, dns) and the fast
        path's: served_fast (connections served by a route without Python), open, routes."""
        c = self.gate.counts()
        with self._lock:
            out = dict(self.stats)
        out.update(served_fast=c["served_fast"], open=c["open"], routes=c["routes"])
        return out

    # -- names -------------------------------------------------------------
    def resolve(self, name: str, port: int) -> list:
        """The host's addresses for an allowed name, kept RESOLVE_TTL seconds (a client making
        many connections does not wait for the host's resolver each time; and within that
        time a name cannot be rebound to another address)."""
        now = time.monotonic()
        hit = self._resolved.get(name)
        if hit is not None and now - hit[0] < RESOLVE_TTL:
            return hit[1]
        addrs = resolve(name, port)
        if addrs:
            if len(self._resolved) > 1024:
                self._resolved.clear()
            self._resolved[name] = (now, addrs)
        return addrs

    def resolved_for(self, name: str) -> float:
        """Seconds the host's kept answer for `name` stays valid (0: none kept)."""
        hit = self._resolved.get(name)
        return 0.0 if hit is None else RESOLVE_TTL - (time.monotonic() - hit[0])

    def address_for(self, name: str) -> str:
        with self._lock:
            ip = self.addrs.get(name)
            if ip is None:
                if self._next >= SYNTHETIC.num_addresses - 1:
                    raise OSError("out of synthetic addresses")
                ip = str(SYNTHETIC[self._next])  # never re-used for another name in this sandbox
                self._next += 1
                self.addrs[name], self.names[ip], self.names[synthetic6(ip)] = ip, name, name
            return ip

    def address6_for(self, name: str) -> str:
        """The IPv6 synthetic address of a name (the one that goes with its IPv4 address)."""
        return synthetic6(self.address_for(name))

    # -- the loops ---------------------------------------------------------
    def _serve(self) -> None:
        """DNS, the UDP sink, and starting workers when the spare ones run short."""
        by_fd = {s.fileno(): (k, s) for k, s in self.socks.items() if k[0] != "tcp"}
        self._spawn_workers()
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select(list(by_fd) + [self._wake_r, self._spawn_r], [], [])
            except (OSError, ValueError):
                return
            for fd in ready:
                if fd == self._wake_r:
                    return
                if fd == self._spawn_r:
                    os.read(self._spawn_r, 4096)
                    self._spawn_workers()
                    continue
                (kind, _fam), s = by_fd[fd]
                try:
                    if kind == "dns":
                        self._dns(s)
                    else:
                        _data, anc, _flags, _src = s.recvmsg(65536, 256)
                        host, port = udp_original_dst(anc)
                        self.refuse("UDP is not carried (only DNS, answered by isolate)", host=host, port=port,
                                    name=self.names.get(host), proto="udp")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    if self._closed.is_set():
                        return

    def _spawn_workers(self) -> None:
        while True:
            with self._lock:
                if self._closed.is_set() or not self.gate.reserve_worker():
                    return
                t = threading.Thread(target=self._worker, daemon=True, name="isolate-netproxy-conn")
                self._threads.add(t)
            t.start()

    def _worker(self) -> None:
        """Accept (the TCP listeners, in an epoll of its own with EPOLLEXCLUSIVE: one idle
        worker is woken per connection), check and relay, and again; a worker beyond the
        spare ones that finds nothing to do for IDLE_WORKER seconds ends. The loop is C's
        (Gate.serve, without the GIL): it serves a connection itself when a route (a
        decision made here before, for that address and port or that proxy target) covers
        it and the client's first bytes name the route's name exactly; every other
        connection comes back here, to be decided (and refused, recorded) in Python."""
        ep = select.epoll()
        waiting = True
        try:
            for (kind, _fam), ls in self.socks.items():
                if kind == "tcp":
                    ep.register(ls.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            ep.register(self._wake_r, select.EPOLLIN)   # readable once close() has begun
            args = (ep.fileno(), self._wake_r, self._spawn_w, int(IDLE_WORKER * 1000), int(PEEK_TIMEOUT * 1000),
                    HEAD_MAX, int(CONNECT_TIMEOUT * 1000), self.limit.bucket)
            while not self._closed.is_set():
                got = self.gate.serve(*args)
                if got is None:
                    if self.gate.retire_idle():
                        waiting = False
                        return
                    continue
                if got == -1:
                    return
                fd, family, ip, port, over, first = got
                try:
                    conn = socket.socket(family, socket.SOCK_STREAM, 0, fd)
                except OSError:
                    os.close(fd)
                    self.gate.done(over)
                    continue
                try:
                    self._take(conn, ip, port, over, first)
                finally:
                    self.gate.done(over)
        except (OSError, ValueError):   # closed under it (close())
            return
        finally:
            ep.close()
            with self._lock:
                left = self.gate.worker_gone(waiting)
                self._threads.discard(threading.current_thread())
                last = left == 0 and self._released
            if last:
                self._close_pipes()

    def _take(self, conn, ip: str, port: int, over: bool, first) -> None:
        """One accepted connection (to ip:port before the capture; `first`: its first bytes
        if the fast path peeked them), refused over the limit, else decided and relayed."""
        with self._lock:
            self.stats["connections"] += 1
        if over:
            conn.close()
            return self.refuse(f"more than network.max_connections = {self.max_connections} connections open",
                               host=ip, port=port, name=self.names.get(ip))
        self._handle(conn, ip, port, first)

    def _dns(self, s) -> None:
        data, src = s.recvfrom(4096)
        self.stats["dns"] += 1
        q = dns.parse_query(data)
        if q is None:
            s.sendto(dns.formerr(data), src)
            self.refuse("unreadable DNS query", proto="dns")
            return
        why = None
        if self.dns_mode == "none":
            why = 'network.dns = "none"'
        elif not q.name:
            why = "empty name"
        else:
            why = self.policy.name_allowed(q.name, None)
        if why:
            self.refuse(f"DNS: {why}", name=q.name, proto="dns")
            s.sendto(dns.answer(q, dns.RCODE_NXDOMAIN), src)
            return
        if q.qtype == dns.QTYPE_A:
            s.sendto(dns.answer(q, 0, self.address_for(q.name)), src)
        elif q.qtype == dns.QTYPE_AAAA:
            s.sendto(dns.answer(q, 0, self.address6_for(q.name)), src)
        else:  # MX, TXT, ...: the name exists, with no such record
            s.sendto(dns.answer(q, 0), src)

    # -- one connection ----------------------------------------------------
    def _handle(self, conn, ip: str, port: int, first=None) -> None:
        try:
            self._handle_one(conn, ip, port, first)
        except Exception:   # the client's bytes or socket (or a bug): this connection ends, nothing relayed
            pass
        finally:
            conn.close()

    def _handle_one(self, conn, ip: str, port: int, first=None) -> None:
        if port == netns.PROXY_PORT and (ip.startswith("127.") or ip == "::1"):
            return self._explicit(conn)
        name = self.names.get(ip)
        first = peek(conn, first)
        if first is None:    # the client failed or left without sending
            return
        hint = sniff_name(first)
        if hint is not None and is_ip(hint):
            hint = None if hint.strip("[]") == ip else hint
        if name is None:
            if is_synthetic(ip):
                return self.refuse("address not handed out by isolate's DNS", host=ip, port=port, name=hint)
            why = self.policy.ip_allowed(ip, port)
            if why:
                return self.refuse(f"raw address: {why}", host=ip, port=port, name=hint)
            if hint and hint != ip:
                why = self.policy.name_allowed(hint, port)
                if why:
                    return self.refuse(f"Host/SNI {hint!r}: {why}", host=ip, port=port, name=hint)
            return self._relay(conn, [ip], port, b"", ip)
        if hint and hint != name:
            return self.refuse(f"Host/SNI {hint!r} differs from the name connected to ({name})", host=ip,
                               port=port, name=name)
        self._connect_name(conn, name, port, b"", route=f"T{ip}|{port}")

    def _connect_name(self, conn, name: str, port: int, send: bytes, reply: bytes = b"",
                      route: str | None = None) -> None:
        """Check name:port, resolve it on the host, drop internal addresses, relay; `route`:
        the key under which the fast path may serve the next such connections itself
        (Gate.add_route), for as long as the host's answer is kept."""
        why = self.policy.name_allowed(name, port)
        if why:
            return self.refuse(why, port=port, name=name)
        addrs = self.resolve(name, port)
        if not addrs:
            return self.refuse("the name does not resolve on the host", port=port, name=name)
        ok = []
        for a in addrs:
            if self.policy.ip_allowed(a, port) is None:
                ok.append(a)
            elif self.policy.ip_denied(a, port):
                continue
            elif not is_internal(a):
                ok.append(a)
        if not ok:
            return self.refuse(f"resolves to {', '.join(addrs)}: loopback, link-local, private or denied "
                               "(allow the address explicitly to reach it)", host=addrs[0], port=port, name=name)
        if route is not None and self.fast:
            left = self.resolved_for(name)
            if left > 0:
                self.gate.add_route(route, name, ok[:8], left)
        self._relay(conn, ok, port, send, name, reply)

    def _explicit(self, conn) -> None:
        """A client that uses HTTP(S)_PROXY: CONNECT host:port, or an absolute-form request."""
        head = read_head(conn)
        if head is None:
            return self.refuse("proxy: not an HTTP request")
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3:
            return self.refuse("proxy: bad request line")
        method, target, version = parts
        if method.upper() == b"CONNECT":
            host, port = split_hostport(target.decode("latin-1"), None)
            if host is None or port is None:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                return self.refuse(f"proxy: bad CONNECT target {target[:100]!r}")
            why = self.check_target(host, port)
            if why:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nx-proxy-error: blocked-by-allowlist\r\n\r\n")
                return self.refuse(f"CONNECT: {why}", port=port, **self.host_or_name(host))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = peek(conn)
            if first is None:
                return
            hint = sniff_name(first)
            if hint and hint != host.lower():
                return self.refuse(f"Host/SNI {hint!r} inside a CONNECT to {host} differs", port=port, name=hint)
            if is_ip(host):
                return self._relay(conn, [host], port, b"", host)
            return self._connect_name(conn, host.lower(), port, b"")
        t = target.decode("latin-1")
        if not t.lower().startswith("http://"):
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return self.refuse(f"proxy: only CONNECT and http:// requests, got {t[:100]!r}")
        hostport, slash, path = t[7:].partition("/")
        host, port = split_hostport(hostport, 80)
        hint = sniff_name(head)
        if host is None or (hint and hint != host.lower()):
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return self.refuse(f"proxy: Host {hint!r} differs from the URL's {hostport!r}", name=hint)
        why = self.check_target(host, port)
        if why:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nx-proxy-error: blocked-by-allowlist\r\n\r\n")
            return self.refuse(f"proxy: {why}", port=port, **self.host_or_name(host))
        head = method + b" /" + path.encode("latin-1") + b" " + version + b"\r\n" + rest
        if is_ip(host):
            return self._relay(conn, [host], port, head, host)
        self._connect_name(conn, host.lower(), port, head, route=f"E{host.lower()}|{port}")

    def host_or_name(self, host: str) -> dict:
        return {"host": host} if is_ip(host) else {"name": host.lower()}

    def check_target(self, host: str, port: int) -> str | None:
        if is_ip(host):
            return self.policy.ip_allowed(host, port)
        return self.policy.name_allowed(host.lower(), port)

    def _relay(self, conn, addrs, port: int, send: bytes, label: str, reply: bytes = b"") -> None:
        """Connect from the host to the first of `addrs` that answers, send `send` (bytes
        already read from the client: a proxy request's head) and relay both ways: one C
        call, without the GIL (_relay.connect_pump)."""
        if reply:
            conn.sendall(reply)
        rc = _relay.connect_pump(conn.fileno(), list(addrs), port, send, self._wake_r, self.limit.bucket,
                                 int(CONNECT_TIMEOUT * 1000))
        if rc != -1:
            with self._lock:
                self.stats["allowed"] += 1
        else:
            self.refuse(f"could not connect from the host to {', '.join(addrs)}", host=addrs[0], port=port,
                        name=None if is_ip(label) else label)

    def close(self) -> None:
        """End the proxy and the namespace (idempotent; from any thread); the violations stay."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        # The workers end at once (idle ones, and relays: both wait on the wake pipe too);
        # one still connecting or reading a head ends within its timeout.
        deadline = time.monotonic() + CLOSE_WAIT
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in self.socks.values():
            s.close()
        os.close(self.fd)
        # The pipes go with the last worker (if one is still finishing a connection).
        with self._lock:
            self._released = True
            last = self.gate.counts()["workers"] == 0
        if last:
            self._close_pipes()

    def _close_pipes(self) -> None:
        for fd in (self._wake_r, self._wake_w, self._spawn_r, self._spawn_w):
            os.close(fd)


# -- helpers -----------------------------------------------------------------

def proxy_env() -> dict:
    """The variables that point programs that use them at the proxy (the same in every sandbox)."""
    url = f"http://127.0.0.1:{netns.PROXY_PORT}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "ALL_PROXY": url, "all_proxy": url, "NO_PROXY": "", "no_proxy": "", "NODE_USE_ENV_PROXY": "1"}


def udp_original_dst(anc) -> tuple:
    for _level, _type, d in anc:
        if len(d) >= 16 and struct.unpack("=H", d[:2])[0] == socket.AF_INET:
            port, ip = struct.unpack("!2xH4s8x", d[:16])
            return socket.inet_ntop(socket.AF_INET, ip), port
        if len(d) >= 28 and struct.unpack("=H", d[:2])[0] == socket.AF_INET6:
            port, ip = struct.unpack("!2xH4x16s4x", d[:28])
            return socket.inet_ntop(socket.AF_INET6, ip), port
    return None, None


def peek(conn, first=None) -> bytes | None:
    """The client's first bytes, left in the socket (MSG_PEEK); b"" when it sends nothing
    within PEEK_TIMEOUT; None when the client failed or left without sending. `first`:
    what the fast path peeked already (False: the client failed), else None."""
    if first is False:
        return None
    fd, ms = conn.fileno(), int(PEEK_TIMEOUT * 1000)
    data = _relay.peek(fd, ms, HEAD_MAX) if first is None else first
    # A TLS ClientHello or an HTTP head may come in pieces: wait a little for the rest.
    for _ in range(20):
        if not data or b"\r\n\r\n" in data or tls_complete(data) or not looks_like_head(data):
            break
        time.sleep(0.01)
        more = _relay.peek(fd, 0, HEAD_MAX)
        if not more or len(more) == len(data):
            break
        data = more
    return data


def looks_like_head(data: bytes) -> bool:
    return data[:1] == b"\x16" or data.split(b" ", 1)[0].isalpha()


def tls_complete(data: bytes) -> bool:
    return len(data) >= 5 and data[0] == 0x16 and len(data) >= 5 + struct.unpack("!H", data[3:5])[0]


def read_head(conn) -> bytes | None:
    buf = b""
    conn.settimeout(CONNECT_TIMEOUT)
    try:
        while b"\r\n\r\n" not in buf:
            got = conn.recv(4096)
            if not got or len(buf) > HEAD_MAX:
                return None
            buf += got
    except OSError:
        return None
    finally:
        conn.settimeout(None)
    return buf


def is_ip(s: str) -> bool:
    if ":" not in s and not s.replace(".", "").isdigit():
        return False   # a name (the common case, without an exception)
    try:
        ipaddress.ip_address(s.strip("[]"))
        return True
    except ValueError:
        return False


def split_hostport(s: str, default: int | None):
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_s = s.rpartition(":") if ":" in s else (s, "", "")
    if port_s:
        if not (port_s.isascii() and port_s.isdigit()) or not 0 < int(port_s) < 65536:
            return None, None
        return host or None, int(port_s)
    return host or None, default


def sniff_name(data: bytes) -> str | None:
    """The name a client's first bytes ask for: TLS SNI, or the HTTP Host header (no port)."""
    if not data:
        return None
    if data[0] == 0x16:
        return sni(data)
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"host":
            h, _ = split_hostport(v.strip().decode("latin-1"), None)
            return h.lower().rstrip(".") if h else None
    return None


def sni(data: bytes) -> str | None:
    try:
        if data[5] != 1:  # ClientHello
            return None
        p = 9 + 2 + 32
        p += 1 + data[p]                                    # session id
        p += 2 + struct.unpack("!H", data[p:p + 2])[0]      # cipher suites
        p += 1 + data[p]                                    # compression
        end = p + 2 + struct.unpack("!H", data[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            etype, elen = struct.unpack("!HH", data[p:p + 4])
            if etype == 0:
                q = p + 4 + 2
                if data[q] == 0:
                    n = struct.unpack("!H", data[q + 1:q + 3])[0]
                    return data[q + 3:q + 3 + n].decode("ascii", "replace").lower()
            p += 4 + elen
    except (IndexError, struct.error):
        return None
    return None
