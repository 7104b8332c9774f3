"""SessionPool: sessions of one profile started ahead of time, handed out without waiting.

    with isolate.SessionPool("agent", size=8, workspace=".") as pool:
        s = pool.acquire()          # a ready Session (its shell already started)
        s.exec("make test")
        s.close()                   # or pool.release(s): closed either way, a fresh one is made

A session is never handed out twice: each has its own sandbox, /tmp, processes and
network. A background thread keeps `size` of them ready.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from .. import netproxy
from ..launch.plans import plan_for
from .session import Session, SessionClosed


class SessionPool:
    def __init__(self, profile: Any = "agent", size: int = 4, **session_kwargs):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected a whole number >= 1, got {size!r}")
        self.profile = profile
        self.size = size
        self._kwargs = dict(session_kwargs)
        self._overrides = tuple(self._kwargs.pop("overrides", ()))
        ws = self._kwargs.get("workspace")
        # network.mode = "allowlist": each session has a namespace and proxy of its own, so
        # its plan is made per session; any other profile is compiled once here.
        self._plan = None if netproxy.is_allowlist(profile, self._overrides) else \
            plan_for(profile, self._overrides, cwd=None if ws is None else str(ws))
        self._ready: deque = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.stats = {"prepared": 0, "served_ready": 0, "served_cold": 0}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._refill, name="isolate-session-pool", daemon=True)
        self._thread.start()

    def _new(self) -> Session:
        s = Session(self.profile, overrides=() if self._plan is not None else self._overrides, _plan=self._plan,
                    **self._kwargs)
        try:
            s.exec("true")      # the shell is up: the first command does not wait for it
        except BaseException:
            s.close()
            raise
        return s

    def _refill(self) -> None:
        while True:
            with self._cv:
                while not self._closed and len(self._ready) >= self.size:
                    self._cv.wait()
                if self._closed:
                    return
            try:
                s = self._new()
            except Exception as e:   # acquire() starts one itself and raises there
                self._error = e
                time.sleep(0.5)
                continue
            with self._cv:
                if self._closed:
                    s.close()
                    return
                self._ready.append(s)
                self.stats["prepared"] += 1
                self._cv.notify_all()

    def acquire(self, wait: float | None = None) -> Session:
        """A ready session (or, if none is ready and `wait` is not given, one started now)."""
        with self._cv:
            if self._closed:
                raise SessionClosed("the session pool is closed")
            deadline = None if wait is None else time.monotonic() + wait
            while not self._ready and deadline is not None and time.monotonic() < deadline:
                self._cv.wait(deadline - time.monotonic())
            while self._ready:
                s = self._ready.popleft()
                self._cv.notify_all()
                if not s.closed:
                    self.stats["served_ready"] += 1
                    return s
        self.stats["served_cold"] += 1
        return self._new()

    def release(self, session: Session) -> None:
        """Give a session back: it is closed (a used sandbox is never handed out again)."""
        session.close()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._cv.notify_all()
        for s in ready:
            s.close()
        self._thread.join(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
