"""HOST:PORT arguments (`isolate mcp --http`), checked without importing any SDK."""

from __future__ import annotations


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    return host.strip("[]"), int(port)
