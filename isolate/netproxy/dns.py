"""The DNS responder's wire format: one question in, one answer (A or AAAA) or none out."""

from __future__ import annotations

import socket
import struct

QTYPE_A = 1
QTYPE_AAAA = 28
RCODE_NXDOMAIN = 3
RCODE_FORMERR = 1


class Query:
    def __init__(self, ident: int, flags: int, name: str, qtype: int, question: bytes):
        self.ident, self.flags, self.name, self.qtype, self.question = ident, flags, name, qtype, question


def parse_query(data: bytes) -> Query | None:
    """The first question of a query, or None when it is not one we can read."""
    if len(data) < 12:
        return None
    ident, flags, qd = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qd < 1:
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(data):
            return None
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(data):
            return None
        labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack("!HH", data[pos:pos + 4])
    return Query(ident, flags, ".".join(labels).lower(), qtype, data[12:pos + 4])


def answer(q: Query, rcode: int = 0, address: str | None = None, ttl: int = 1) -> bytes:
    """The reply to q: rcode, and one A (an IPv4 `address`) or AAAA (IPv6) record, or none."""
    flags = 0x8000 | (q.flags & 0x0100) | 0x0080 | rcode  # response, RD copied, RA
    an = 1 if address else 0
    out = struct.pack("!HHHHHH", q.ident, flags, 1, an, 0, 0) + q.question
    if address:
        if ":" in address:
            out += struct.pack("!HHHIH", 0xC00C, QTYPE_AAAA, 1, ttl, 16) + socket.inet_pton(socket.AF_INET6, address)
        else:
            out += struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, ttl, 4) + socket.inet_aton(address)
    return out


def formerr(data: bytes) -> bytes:
    ident = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
    return struct.pack("!HHHHHH", ident, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
