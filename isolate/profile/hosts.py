"""Entries of network.allow / network.deny: a host name, a wildcard, or an IP literal,
each with an optional port; parsed once here, for the schema and for the proxy.

    "pypi.org"                 the name, any port
    "pypi.org:443"             the name, port 443
    "*.example.com[:port]"     any name below example.com (not example.com itself)
    "10.1.2.3[:port]"          an IPv4 address
    "::1", "[2001:db8::1]:443" an IPv6 address (with a port: in brackets)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


@dataclasses.dataclass(frozen=True)
class HostRule:
    kind: str              # "name", "wildcard" or "ip"
    host: str              # the name (lower case), the wildcard's suffix ("example.com"), or the address
    port: int | None       # None = any port

    def matches_name(self, name: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        name = name.lower().rstrip(".")
        if self.kind == "name":
            return name == self.host
        if self.kind == "wildcard":
            return name.endswith("." + self.host)
        return False

    def matches_ip(self, ip: str, port: int) -> bool:
        if self.kind != "ip" or (self.port is not None and self.port != port):
            return False
        try:
            return ipaddress.ip_address(ip) == ipaddress.ip_address(self.host)
        except ValueError:
            return False


def is_name(s: str) -> bool:
    s = s.lower().rstrip(".")
    return 0 < len(s) <= 253 and all(_LABEL.fullmatch(p) for p in s.split("."))


def _port(s: str, entry: str) -> int:
    if not s.isdigit() or not 1 <= int(s) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535, got {s!r}")
    return int(s)


def parse_host_entry(entry: str) -> HostRule:
    """The rule an entry says; ValueError naming the entry and what is wrong."""
    if not isinstance(entry, str) or not entry:
        raise ValueError(f"{entry!r}: expected a host name, *.domain, or an IP address, each with an optional :port")
    s = entry.strip().lower()
    if s.startswith("["):  # [v6]:port or [v6]
        end = s.find("]")
        if end < 0:
            raise ValueError(f"{entry!r}: an IPv6 address in brackets needs the closing ']'")
        host, rest = s[1:end], s[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{entry!r}: after ']' only ':port' may follow")
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{entry!r}: {host!r} is not an IPv6 address") from None
        return HostRule("ip", str(ip), _port(rest[1:], entry) if rest else None)
    if s.count(":") > 1:  # a bare IPv6 address, no port
        try:
            return HostRule("ip", str(ipaddress.IPv6Address(s)), None)
        except ValueError:
            raise ValueError(f"{entry!r}: not an IPv6 address (with a port, write [ADDRESS]:PORT)") from None
    host, _, port_s = s.partition(":")
    port = _port(port_s, entry) if _ else None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return HostRule("ip", str(ipaddress.IPv4Address(host)), port)
        except ValueError:
            raise ValueError(f"{entry!r}: {host!r} is not an IPv4 address") from None
    if "/" in host:
        raise ValueError(f"{entry!r}: address ranges (CIDR) are not supported; name each address")
    if host.startswith("*."):
        if not is_name(host[2:]) or "." not in host[2:].rstrip("."):
            raise ValueError(f"{entry!r}: a wildcard is '*.' before a domain of at least two labels, "
                             "e.g. *.example.com")
        return HostRule("wildcard", host[2:].rstrip("."), port)
    if "*" in host:
        raise ValueError(f"{entry!r}: '*' is allowed only as the whole first label ('*.example.com')")
    if not is_name(host):
        raise ValueError(f"{entry!r}: {host!r} is not a host name (labels of letters, digits, '-', '_', "
                         "at most 63 characters each)")
    return HostRule("name", host.rstrip("."), port)
