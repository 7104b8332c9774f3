"""The caller's side of a sandbox's own terminal (fds.pty), as sudo's use_pty does it.

The program runs on a fresh pty (see Popen(pty=True)); `isolate run` relays between
that pty's master and its own terminal: what is typed goes to the program, what the
program writes comes back, and a resize of the caller's window is copied to the pty
(the kernel then sends SIGWINCH to the program's foreground process group). The
caller's terminal is in raw mode meanwhile (the sandbox's terminal does the line
editing, echo and ^C), and is restored on every way out. The program never gets a
descriptor of the caller's terminal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty

from .process import DEFAULT_PTY_SIZE, get_winsize, set_winsize


def caller_size(fds=(0, 1, 2)) -> tuple[int, int]:
    """(rows, cols) of the first terminal among fds, else the default 24x80."""
    for fd in fds:
        size = get_winsize(fd)
        if size is not None:
            return size
    return DEFAULT_PTY_SIZE


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
