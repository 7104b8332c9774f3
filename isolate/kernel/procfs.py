"""Reading the small text files the kernel offers (/proc, /sys/fs/cgroup): one helper."""

from __future__ import annotations

import os

_pid = os.getpid()


def pid() -> int:
    """This process's id, as os.getpid(), without a system call on every launch: kept by
    an at-fork handler (registered when this module is imported, before the launch
    modules that ask: their own at-fork handlers see the child's id here)."""
    return _pid


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def read(path: str, strip: bool = False) -> str | None:
    """The file's text (stripped of surrounding white space if asked), or None when it
    cannot be read: absent, not permitted, or gone meanwhile."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return text.strip() if strip else text


def read_int(path: str) -> int | None:
    """The file's content as an integer, or None (unreadable, or not a number)."""
    text = read(path, strip=True)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
