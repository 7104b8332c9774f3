"""Output caps: the head and the tail of a stream, and how many bytes in between were dropped.

A `HeadTail` keeps at most `limit` bytes of a stream however much is written to it:
the first `limit // 2` bytes and the last `limit - limit // 2`. What was dropped in
between is counted (`omitted`) and rendered as one marker line, so that a model
reading the text knows that, and where, output is missing.
"""

from __future__ import annotations

import math

DEFAULT_MAX_OUTPUT = 1 << 20   # bytes kept per stream and command unless max_output= says otherwise


def marker(omitted: int) -> bytes:
    return b"\n[... %d bytes omitted ...]\n" % omitted


def check_max_output(value) -> int:
    """max_output= as a number of bytes (None: the default); a clear error otherwise."""
    if value is None:
        return DEFAULT_MAX_OUTPUT
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_output: expected a number of bytes or None, got {type(value).__name__}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value) or value != int(value)):
        raise ValueError(f"max_output: expected a whole number of bytes >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"max_output: expected a whole number of bytes >= 0, got {value!r}")
    return int(value)


class HeadTail:
    """At most `limit` bytes of a stream: its head and its tail, with the count dropped between."""

    __slots__ = ("limit", "head_max", "tail_max", "head", "tail", "total")

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT):
        self.limit = limit
        self.head_max = limit // 2
        self.tail_max = limit - self.head_max
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0          # bytes the stream produced

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
            if not data:
                return
        if self.tail_max <= 0:
            return
        if len(data) >= self.tail_max:
            self.tail[:] = data[-self.tail_max:]
        else:
            self.tail += data
            extra = len(self.tail) - self.tail_max
            if extra > 0:
                del self.tail[:extra]

    @property
    def omitted(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def getvalue(self) -> bytes:
        """Head, the marker (only if something was dropped), tail."""
        if self.omitted:
            return bytes(self.head) + marker(self.omitted) + bytes(self.tail)
        return bytes(self.head) + bytes(self.tail)

    def since(self, offset: int) -> tuple[bytes, int]:
        """What the stream produced from byte `offset` on (absolute), as far as it is kept;
        (data, next offset). A part that was dropped is the marker."""
        if offset < 0:
            raise ValueError(f"since: expected an offset >= 0, got {offset}")
        offset = min(offset, self.total)
        out = b""
        head_len = len(self.head)
        if offset < head_len:
            out += bytes(self.head[offset:])
            offset = head_len
        tail_start = self.total - len(self.tail)
        if offset < tail_start:
            out += marker(tail_start - offset)
            offset = tail_start
        out += bytes(self.tail[offset - tail_start:])
        return out, self.total
