"""The caller's side of a sandbox's own terminal (fds.pty), as sudo's use_pty does it.

The program runs on a fresh pty (see Popen(pty=True)); `isolate run` relays between
that pty's master and its own terminal: what is typed goes to the program, what the
program writes comes back, and a resize of the caller's window is copied to the pty
(the kernel then sends SIGWINCH to the program's foreground process group). The
caller's terminal is in raw mode meanwhile (the sandbox's terminal does the line
editing, echo and ^C), and is restored on every way out. The program never gets a
descriptor of the caller's terminal.

Also here: allocating that pty (from the sandbox's own devpts instance when it has
one) and the small terminal helpers isolate.launch.process uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import locale
import os
import signal
import stat
import struct
import termios
import tty

from ..plan.mountops import OP_MOUNT

DEFAULT_SIZE = (24, 80)
TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441  # asm-generic/ioctls.h (not in the termios module)


# ---- allocating the sandbox's terminal ---------------------------------------------------
def has_own_devpts(plan) -> bool:
    """The plan's view mounts a devpts instance of the sandbox's own at /dev/pts (filesystem.dev)."""
    return any(op.kind == OP_MOUNT and op.c == "devpts" and op.b == "/newroot/dev/pts"
               for op in plan.mount_ops)


def open_sandbox_pty(pid: int) -> tuple[int, int] | None:
    """(master, slave) of a new pty of the sandbox's own devpts instance, opened through
    the root of its pid 1 (which waits for its task: nothing of the program runs yet),
    or None when that cannot be had."""
    try:
        master = os.open(f"/proc/{pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(master)
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 5 or os.minor(st.st_rdev) != 2:
            raise OSError("not a ptmx")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlock, then the slave without a path
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        return None
    return master, slave


def _outside_id(mapping: str | None, inside: int) -> int | None:
    for line in (mapping or "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            first, outside, count = (int(x) for x in parts)
            if first <= inside < first + count:
                return outside + inside - first
    return None


def give(slave: int, plan) -> None:
    """The terminal belongs to the program's user, as a login's does (tools such as
    screen check it). The caller owns it already unless it is root and the sandbox's
    user is another host id; then root hands it over."""
    if os.geteuid() != 0:
        return
    # Without a user namespace (no map) the ids inside are host ids.
    uid = plan.inside_uid if plan.uid_map is None else _outside_id(plan.uid_map, plan.inside_uid)
    gid = plan.inside_gid if plan.gid_map is None else _outside_id(plan.gid_map, plan.inside_gid)
    try:
        os.fchown(slave, -1 if uid is None else uid, -1 if gid is None else gid)
    except OSError:
        pass


# ---- small terminal helpers ----------------------------------------------------------------
def check_size(size) -> tuple[int, int]:
    try:
        rows, cols = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"pty_size: expected (rows, cols), got {size!r}") from None
    if not (0 <= rows <= 0xFFFF and 0 <= cols <= 0xFFFF):
        raise ValueError(f"pty_size: rows and cols must be 0..65535, got {size!r}")
    return rows, cols


def get_winsize(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on fd, or None when it is not a terminal."""
    try:
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def eof_keys(master: int, last: bytes) -> bytes:
    """What to type for end of file: the terminal's EOF character when it reads lines
    (twice after a partial line: the first ends the line), else nothing."""
    try:
        attrs = termios.tcgetattr(master)
    except termios.error:
        return b""
    if not attrs[3] & termios.ICANON:
        return b""
    eof = attrs[6][termios.VEOF]
    eof = eof if isinstance(eof, bytes) else bytes([eof])
    return eof if last in (b"\n", b"") else eof * 2


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def locale_encoding() -> str:
    return locale.getpreferredencoding(False)


# ---- the caller's side -------------------------------------------------------------------


def caller_size(fds=(0, 1, 2)) -> tuple[int, int]:
    """(rows, cols) of the first terminal among fds, else the default 24x80."""
    for fd in fds:
        size = get_winsize(fd)
        if size is not None:
            return size
    return DEFAULT_SIZE


def _terminal(fds=(0, 1, 2)) -> int | None:
    for fd in fds:
        if os.isatty(fd):
            return fd
    return None


@contextlib.contextmanager
def raw_mode(fd: int):
    """The terminal on fd in raw mode for the block; its mode restored however it ends
    (and around a stop: SIGTSTP restores it, SIGCONT makes it raw again)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)

    def restore():
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def on_tstp(_sig, _frame):
        restore()
        os.kill(os.getpid(), signal.SIGSTOP)  # returns once we are continued
        with contextlib.suppress(termios.error, OSError):
            tty.setraw(fd, termios.TCSADRAIN)

    old_tstp = signal.signal(signal.SIGTSTP, on_tstp)
    try:
        tty.setraw(fd, termios.TCSADRAIN)
        yield
    finally:
        restore()
        signal.signal(signal.SIGTSTP, old_tstp)


def relay(p, timeout: float | None = None, stdin: int = 0, stdout: int = 1) -> None:
    """Relay between the caller's stdin/stdout and the sandbox's terminal until every
    process of the sandbox has closed it and the program has been waited for.
    Raises TimeoutExpired after `timeout` seconds (the caller kills the sandbox)."""
    if p.pty_master is None:
        raise ValueError("relay: this Popen has no terminal (pty=True)")
    term = _terminal()
    master = p.pty_master.fileno()

    def on_winch(_sig, _frame):
        if term is not None and not p.pty_master.closed:
            size = get_winsize(term)
            if size is not None:
                with contextlib.suppress(OSError):
                    set_winsize(master, *size)

    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    try:
        on_winch(signal.SIGWINCH, None)  # a resize while the sandbox was being set up
        with raw_mode(stdin):
            p._pty_communicate(None, timeout, sink=stdout, source=stdin)
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
