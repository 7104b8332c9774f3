"""What agentd started for a session (Proc), and the session's shells (Shell)."""

from __future__ import annotations

import os
import threading

from .protocol import STEP


class Proc:
    """Something agentd started for us (a shell or a command): its id and how it ended."""

    def __init__(self, id_: int):
        self.id = id_
        self.pid: int | None = None         # in the sandbox
        self.start_err: tuple | None = None  # (step, errno) when it could not start
        self.started = threading.Event()
        self.wait_status: int | None = None
        self.exited = threading.Event()
        self.evfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._evlock = threading.Lock()   # the eventfd is written and closed by different threads

    def _wake(self) -> None:
        with self._evlock:
            if self.evfd >= 0:
                os.eventfd_write(self.evfd, 1)

    def on_started(self, pid: int, err: int) -> None:
        if pid < 0:
            self.start_err = (STEP.get(-pid, "start"), err)
        else:
            self.pid = pid
        self.started.set()
        self._wake()

    def on_exit(self, status: int) -> None:
        self.wait_status = status
        self.exited.set()
        self._wake()

    def close(self) -> None:
        with self._evlock:
            fd, self.evfd = self.evfd, -1
            if fd >= 0:
                os.close(fd)


class Shell(Proc):
    def __init__(self, id_: int, slot: int, status_r: int):
        super().__init__(id_)
        self.slot = slot
        self.status_r = status_r
        self.buf = bytearray()
        self.dead = False
        self.retired = False

    def records(self):
        """Complete records so far: (id, status, pwd, exports, functions)."""
        while True:
            if self.buf.count(b"\0") < 5:
                return
            start = self.buf.find(b"\0R ")
            if start < 0:
                self.buf.clear()
                return
            if start:
                del self.buf[:start]
                continue
            parts = bytes(self.buf).split(b"\0", 5)
            if len(parts) < 6:
                return
            _, head, pwd, exports, functions, rest = parts
            self.buf[:] = rest
            try:
                _, rid, st = head.split(b" ")
                yield int(rid), int(st), os.fsdecode(pwd), exports, functions
            except ValueError:
                continue
