"""isolate-init, the sandbox's pid 1 (_init.c): where its binary is, the flags it takes,
and the two fds every launch hands it (its binary, to exec; a pidfd of this process,
to die with it), opened once per process."""

from __future__ import annotations

import os
import threading

from ..errors import SandboxSetupError
from ..kernel import procfs

INIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolate-init")
FLAG_PIDNS, FLAG_DIE_WITH_PARENT = 1, 2
FLAG_WARM = 4  # fd 0 is the task socket: wait for a task instead of starting a program
FLAG_CTTY = 8  # fd 0 is a fresh pty: the program makes it its controlling terminal (_init.c)
FLAG_SECCOMP_LOG = 16  # the filter is loaded with SECCOMP_FILTER_FLAG_LOG (_init.c)
FLAG_SECCOMP_EARLY = 32  # warm: the zygote loads the filter before its task (warm.py checks it may)
FLAG_SECCOMP_NOTIFY = 128  # the filter is loaded with a listener the program inherits (_init.c)
# With a pid namespace, just before MSG_EXITED: a = maxrss KiB, b = utime s, c = utime us, t = stime us
MSG_RUSAGE = 5

_proc_lock = threading.Lock()
_proc_fds: dict = {}


def process_fds() -> tuple[int, int]:
    """(O_PATH fd of isolate-init, pidfd of this process), opened once per process."""
    pid = procfs.pid()
    fds = _proc_fds.get(pid)
    if fds is None:
        with _proc_lock:
            fds = _proc_fds.get(pid)
            if fds is None:
                try:
                    init_fd = os.open(INIT_PATH, os.O_PATH | os.O_CLOEXEC)
                except OSError as e:
                    raise SandboxSetupError("exec_init", e.errno, "isolate-init is missing: reinstall isolate",
                                            INIT_PATH) from None
                self_fd = os.pidfd_open(pid)
                _proc_fds.clear()
                _proc_fds[pid] = fds = (init_fd, self_fd)
    return fds


def _forget_after_fork():
    # The child of a fork must not use its parent's pidfd: it is not that process.
    _proc_fds.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
