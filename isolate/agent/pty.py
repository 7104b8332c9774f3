"""Session.pty(): an interactive program on a terminal of its own, inside the session.

The terminal is a fresh pty; its slave is the program's fd 0, 1 and 2 (started by
isolate-agentd in a session of its own). The profile's filter denies TIOCSCTTY, so
the terminal is not its controlling terminal: resize() sets the size and sends
SIGWINCH to the program's process group itself.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import termios
import time

from .errors import SessionClosed, SessionError
from .protocol import A_KILL, check_cmd, check_env, check_seconds, close_fd


def _size(rows, cols):
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
            raise ValueError(f"pty: {name} must be a whole number from 1 to 65535, got {v!r}")
    return rows, cols


class Pty:
    def __init__(self, session, proc, master: int, cmd):
        self._session = session
        self._proc = proc
        self.master = master
        self.cmd = cmd

    @property
    def pid(self):
        return self._proc.pid

    @property
    def returncode(self):
        st = self._proc.wait_status
        return None if st is None else os.waitstatus_to_exitcode(st)

    def write(self, data) -> None:
        if isinstance(data, str):
            data = data.encode()
        if self.master < 0:
            raise SessionError("pty: closed")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                select.select([], [self.master], [], 1.0)

    def read(self, timeout: float | None = 1.0, max_bytes: int = 65536) -> bytes:
        """What the program wrote to its terminal (waits up to `timeout` for something;
        b"" at the end or when nothing came)."""
        timeout = check_seconds(timeout, "timeout")
        if self.master < 0:
            return b""
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, max_bytes)
        except OSError:   # EIO: every process has closed the terminal
            return b""

    def read_until(self, marker, timeout: float = 10.0) -> bytes:
        if isinstance(marker, str):
            marker = marker.encode()
        end = time.monotonic() + timeout
        out = b""
        while marker not in out and time.monotonic() < end:
            chunk = self.read(max(0.0, end - time.monotonic()))
            if not chunk and self.returncode is not None:
                break
            out += chunk
        return out

    def resize(self, rows: int, cols: int) -> None:
        rows, cols = _size(rows, cols)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            self._session.send_ctl(A_KILL, self._proc.id, signal.SIGWINCH)
        except SessionClosed:
            pass

    def wait(self, timeout: float | None = None):
        timeout = check_seconds(timeout, "timeout")
        end = None if timeout is None else time.monotonic() + timeout
        while not self._proc.exited.is_set():
            if self._session.closing:
                break
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            r, _, _ = select.select([self._session.ctl, self._proc.evfd], [], [], left)
            if self._session.ctl in r:
                self._session.read_ctl()
            if self._proc.evfd in r:
                try:
                    os.eventfd_read(self._proc.evfd)
                except OSError:
                    pass
        return self.returncode

    def kill(self) -> None:
        if self._proc.wait_status is None and not self._session.closing:
            self._session.send_ctl(A_KILL, self._proc.id, signal.SIGKILL)
        self.wait(5)

    def close(self) -> None:
        self.kill()
        close_fd(self.master)
        self.master = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_pty(session, cmd, rows, cols, cwd=None, env=None) -> Pty:
    rows, cols = _size(rows, cols)
    cmd = check_cmd(cmd)
    if isinstance(cmd, str):
        cmd = [session.shell_path(), "-c", cmd]
    if env is not None:
        check_env(env)
    master, slave = os.openpty()
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if (session.uid, session.gid) != (os.geteuid(), os.getegid()):
            os.fchown(slave, session.uid, session.gid)
        full_env = session.environment()
        full_env.setdefault("TERM", "xterm-256color")
        if env:
            full_env.update(env)
        p = session.new_proc()
        session.start_process(p, cmd, full_env, cwd or session.shell_pwd or session.plan.cwd, [slave, slave, slave])
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    pty = Pty(session, p, master, cmd)
    end = time.monotonic() + 10
    while not p.started.is_set() and time.monotonic() < end:
        r, _, _ = select.select([session.ctl], [], [], 0.1)
        if r:
            session.read_ctl()
    if p.start_err is not None:
        close_fd(master)
        step, err = p.start_err
        raise SessionError(f"pty: cannot run {cmd[0]!r}: {os.strerror(err)}")
    return pty
