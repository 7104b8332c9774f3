"""Network namespaces: a pool of empty ones with loopback up, refilled off the launch path.

(Joining a prepared namespace by name, network.mode = "netns", needs nothing here:
the namespace is opened at compile time. Setting one up with addresses and routes
is the user's own tools' job, `ip netns` or pyroute2.)

Creating (and later destroying) a network namespace is the most expensive part of
starting a sandbox with network mode "none". The pool makes them ahead of time in a
background thread; a launch takes one (the launching thread joins it around the
clone, see _launch.c), and it comes back to the pool only once every process that
was in it is gone: the sandbox had a pid namespace and its pid 1 has been reaped,
which the kernel does only after every other process of that namespace is dead.
Otherwise the namespace is simply closed and the kernel frees it when its last
user goes.

The sandbox cannot change a pooled namespace: it is owned by the caller's user
namespace, in which the sandbox holds no capability (no CAP_NET_ADMIN over it), so
interfaces, addresses, routes and sysctls stay as made. Only root can keep such a
pool (joining a namespace needs CAP_SYS_ADMIN over it); for other callers every
launch gets a fresh namespace from clone.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections import deque

from ..kernel import procfs
from ..kernel.constants import CLONE_NEWNET

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


SIOCSIFFLAGS = 0x8914
IFF_UP_LOOPBACK_RUNNING = 0x1 | 0x8 | 0x40


def _loopback_up() -> None:
    """Bring lo up in the calling thread's network namespace.

    One ioctl, not pyroute2: this runs in a background thread of the caller's
    process, and pyroute2's pure-Python netlink parsing would hold the GIL that the
    launching threads are waiting for."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", IFF_UP_LOOPBACK_RUNNING))


def make_namespace() -> int:
    """A new network namespace with loopback up, as an O_RDONLY fd; the calling thread
    enters it only for the time it takes to make it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _loopback_up()
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            # Never leave this thread in the new namespace.
            if _libc.setns(home, CLONE_NEWNET) < 0:
                os.abort()
    finally:
        os.close(home)


class NetnsPool:
    """Empty network namespaces, ready to be joined; one sandbox at a time each."""

    MAX = 64  # the most namespaces kept, however many sandboxes run at once

    def __init__(self, size: int = 8, low: int = 4):
        self.size, self.low = size, low
        self._in_use = 0  # taken and not given back: sandboxes running in one of ours
        self._free: deque = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = procfs.pid()
        self.stats = {"made": 0, "reused": 0, "taken": 0, "missed": 0}

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._refill, name="isolate-netns-pool", daemon=True)
            self._thread.start()

    def _refill(self) -> None:
        while True:
            with self._lock:
                need = self.size - len(self._free)
            for _ in range(max(need, 0)):
                try:
                    fd = make_namespace()
                except OSError:
                    return  # not allowed here: launches fall back to clone's own
                with self._lock:
                    self._free.append(fd)
                    self.stats["made"] += 1
            self._wake.wait()
            self._wake.clear()

    def take(self) -> int:
        """A namespace fd for one sandbox, or -1 when none is ready (clone makes one)."""
        if procfs.pid() != self._pid:  # inherited across fork: not ours to hand out
            return -1
        with self._lock:
            fd = self._free.popleft() if self._free else -1
            self.stats["taken" if fd >= 0 else "missed"] += 1
            if fd >= 0:
                self._in_use += 1
            # As many as run at once, and some: with more concurrent sandboxes than
            # namespaces, each launch would make and destroy one (the kernel serializes both).
            self.size = min(self.MAX, max(self.size, self._in_use + self.low))
            short = len(self._free) < self.low
        if short:
            self._ensure_thread()
            self._wake.set()
        return fd

    def give_back(self, fd: int, reusable: bool) -> None:
        """Return a namespace once its sandbox is gone; close it unless it is reusable."""
        with self._lock:
            self._in_use = max(0, self._in_use - 1)
            if reusable and procfs.pid() == self._pid and len(self._free) < self.size:
                self._free.append(fd)
                self.stats["reused"] += 1
                return
        os.close(fd)

    def held(self) -> set:
        """The fds of the namespaces ready now (the pool's own, not a sandbox's)."""
        with self._lock:
            return set(self._free)

    def prefill(self) -> None:
        """Start filling now (a warm-up), rather than at the first take()."""
        self._ensure_thread()
        self._wake.set()


_pool: NetnsPool | None = None
_pool_lock = threading.Lock()


def pool() -> NetnsPool | None:
    """The process-wide pool, or None where this caller may not keep one."""
    global _pool
    if os.geteuid() != 0:
        return None
    if _pool is None or _pool._pid != procfs.pid():
        with _pool_lock:
            if _pool is None or _pool._pid != procfs.pid():
                _pool = NetnsPool()
    return _pool
