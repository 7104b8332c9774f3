"""Warm mode: sandboxes of one profile set up ahead of time, each serving one task.

For many launches of the same kind of task (agent tool calls, fuzz inputs), the
whole launch path runs in advance, off the caller's path: namespaces, the
filesystem view, pid 1. Each ready sandbox then waits for exactly one task (argv,
environment, cwd and its fds, passed over a socket) and is used up by it: every
task still gets its own pid namespace, its own private /tmp and network namespace,
and sees or signals no other task. A background thread keeps `size` of them ready.

    with isolate.WarmPool("default", size=4) as pool:
        r = pool.run(["python3", "-c", "print(1)"], capture_output=True)
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from typing import Any, Sequence

from ..errors import ProfileError
from ..plan.plan import check_nofile
from . import net, process


class WarmPool:
    def __init__(self, profile: Any = "default", size: int = 4, overrides: Sequence[str] = (), cwd=None):
        self.plan = process.plan_for_cwd(profile, overrides, cwd)
        if not self.plan.pidns:
            raise ProfileError("warm sandboxes need namespaces.pid = true: their pid 1 receives the task",
                               key="namespaces.pid")
        if size < 1:
            raise ValueError("size must be at least 1")
        # Its pid 1 lays out each task's fds under the profile's RLIMIT_NOFILE.
        check_nofile(self.plan, self.plan.pass_fds, warm=True, file=self.plan.profile_name)
        self.size = size
        # Refilling right after a task takes its sandbox would compete with that task
        # for the CPUs; while at least `low` are ready, wait until a task has ended.
        self.low = max(1, size // 2)
        self._running = 0
        self._ready: deque = deque()
        self._lock = threading.Condition()
        self._closed = False
        self._pid = os.getpid()
        self.stats = {"prepared": 0, "served_warm": 0, "served_cold": 0}
        self._thread = threading.Thread(target=self._refill, name="isolate-warm-pool", daemon=True)
        self._thread.start()

    # ---- the pool ----------------------------------------------------------------------
    def _prepare(self) -> process.Launched:
        return process.launch_waiting(self.plan, os.fsencode(self.plan.cwd))

    def _refill(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (len(self._ready) >= self.size
                                            or (len(self._ready) >= self.low and self._running)):
                    self._lock.wait()
                if self._closed:
                    return
            try:
                slot = self._prepare()
            except Exception:  # the next take() prepares one itself and raises there
                with self._lock:
                    self._lock.wait(0.5)
                continue
            with self._lock:
                if self._closed:
                    _discard(slot)
                    return
                self._ready.append(slot)
                self.stats["prepared"] += 1
                self._lock.notify_all()

    def _take(self) -> process.Launched:
        if os.getpid() != self._pid:
            raise RuntimeError("a WarmPool cannot be used in a forked child")
        with self._lock:
            if self._closed:
                raise RuntimeError("the WarmPool is closed")
            slot = self._ready.popleft() if self._ready else None
            self._running += 1
            self._lock.notify_all()
        if slot is None:
            self.stats["served_cold"] += 1
            try:
                return self._prepare()
            except BaseException:
                self._task_done()
                raise
        self.stats["served_warm"] += 1
        return slot

    def _task_done(self) -> None:
        """A task's sandbox has been reaped: the refill may go on."""
        with self._lock:
            self._running = max(0, self._running - 1)
            self._lock.notify_all()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until `size` sandboxes are ready (a warm-up before timing, say)."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._ready) >= self.size or self._closed, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots, self._ready = list(self._ready), deque()
            self._lock.notify_all()
        for slot in slots:
            _discard(slot)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True) and os.getpid() == getattr(self, "_pid", None):
            self.close()

    # ---- tasks ---------------------------------------------------------------------------
    def Popen(self, args, **kwargs) -> process.Popen:
        """Like isolate.Popen, in a sandbox that was ready before the call."""
        for key in ("profile", "overrides"):
            if key in kwargs:
                raise TypeError(f"{key}: a WarmPool runs the profile it was made with")
        return process.Popen(args, warm=self, **kwargs)

    def run(self, args, **kwargs) -> process.Result:
        """Like isolate.run, in a sandbox that was ready before the call."""
        return process.run(args, warm=self, **kwargs)


def _discard(slot: process.Launched) -> None:
    """Kill a ready sandbox that will get no task, and reap it."""
    try:
        signal.pidfd_send_signal(slot.pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(slot.pid, 0)
    except ChildProcessError:
        pass
    for fd in (slot.pidfd, slot.status_fd):
        if fd >= 0:
            os.close(fd)
    if slot.ctl is not None:
        slot.ctl.close()
    if slot.netns >= 0:
        net.pool().give_back(slot.netns, reusable=True)
    if slot.cgroup is not None:
        slot.cgroup.finish()
    if slot.ids is not None:
        slot.ids.release()
    if slot.network is not None:
        slot.network.close()
