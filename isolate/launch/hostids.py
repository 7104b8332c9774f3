"""Host ids reserved for sandboxed programs started by root.

When the caller is root and the profile does not map ids itself, the program must not
be host root (it would own every root-owned host inode the view binds in). It runs as
an unprivileged host uid/gid from this range instead. No host account may use it:
a plan that needs these ids refuses to compile while /etc/passwd, /etc/group or
/etc/sub{u,g}id uses one (conflicts()), and `isolate doctor` reports such a clash.

The range sits in 0x70000000-0x7fffffff, which systemd's uid conventions leave unused
(below 2^31, so no signedness trouble; above the container ranges nspawn hands out;
outside systemd's "foreign" range 0x7ffe0000-0x7ffeffff).
"""

from __future__ import annotations

import fcntl
import os
import threading

from ..errors import SandboxSetupError, UnsupportedError
from ..kernel import procfs
# The range (BASE, COUNT, SHARED) is the plan's: a Landlock-mode plan maps to BASE itself.
from ..plan.ids import BASE, COUNT, SHARED
from . import _launch

LOCK_DIR = "/run/isolate/ids"   # one lock file per id; flock-ed by the process whose sandbox has it

_lock = threading.Lock()
_held: dict = {}      # id -> (fd, st_dev, st_ino) of its lock file (this process holds the flock)
# id -> fd of its lock file, open but not locked by us: the next allocation tries the
# flock on it (one system call) instead of opening the file again (an id held by another
# process's sandbox is tried at every launch). After the flock, the fd is checked to still
# be the file at the id's path. Dropped in a forked child (its copies share the parent's
# open files, and with them the parent's locks). Kept as (fd, st_dev, st_ino): a caller
# may close any number (CPython's own subprocess tests close 0, 1 and 2), so a kept fd is
# used, or closed, only while it is still that file; otherwise it is no longer ours.
_idle: dict = {}
IDLE_MAX = 64
_userns: dict = {}    # id -> fd of a user namespace mapping 0 <-> id (uid and gid), for idmapped binds


class Lease:
    """One host uid/gid (the same number) held for one running sandbox."""

    __slots__ = ("id", "_released")

    def __init__(self, id_: int):
        self.id = id_
        self._released = False

    def release(self) -> None:
        """The sandbox has been reaped: the id may go to the next one (idempotent)."""
        if self._released:
            return
        self._released = True
        release(self.id)

    def __repr__(self):
        return f"Lease({self.id}{', released' if self._released else ''})"


ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")
_conflicts_cache: dict = {}


def conflicts(files=ACCOUNT_FILES) -> list:
    """[(file, name, first id, last id), ...]: host accounts or subordinate ranges inside the range.

    A sandbox running as an id some account has would own that account's files; a
    plan that needs host ids refuses to compile while this is not empty. Re-read only
    when one of the files changed."""
    sig = []
    for path in files:
        try:
            st = os.stat(path)
            sig.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((path, None, None))
    sig = tuple(sig)
    hit = _conflicts_cache.get(files)
    if hit is not None and hit[0] == sig:
        return hit[1]
    found = []
    last = BASE + COUNT - 1
    for path, *_ in sig:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(":")
            try:
                if path.endswith(("/subuid", "/subgid")):  # name:first:count
                    lo = int(parts[1])
                    hi = lo + int(parts[2]) - 1
                else:  # name:x:id:...
                    lo = hi = int(parts[2])
            except (IndexError, ValueError):
                continue
            if lo <= last and hi >= BASE:
                found.append((path, parts[0], lo, hi))
    _conflicts_cache[files] = (sig, found)
    return found


def check_free() -> None:
    """UnsupportedError when a host account uses an id of the range (see conflicts)."""
    found = conflicts()
    if found:
        path, name, lo, hi = found[0]
        ids = str(lo) if lo == hi else f"{lo}-{hi}"
        raise UnsupportedError("identity", f"{path}: {name!r} uses host id {ids}, inside the range reserved for "
                               f"sandboxes ({BASE}..{BASE + COUNT - 1}); the program would own its files")


def _lock_path(id_: int) -> str:
    return f"{LOCK_DIR}/{id_}"


_lock_dir_made = None  # (pid, LOCK_DIR) once this process has made sure the directory is there


def _make_lock_dir() -> None:
    global _lock_dir_made
    try:
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    except OSError as e:
        raise SandboxSetupError("identity", e.errno, "reserving a host id for the sandbox", LOCK_DIR) from None
    _lock_dir_made = (procfs.pid(), LOCK_DIR)


def allocate() -> Lease:
    """The lowest id of the range that no sandbox (of any process) is running as.

    Held by an flock on LOCK_DIR/<id>, taken on an fd of this process and dropped when
    the sandbox is reaped (release) or this process dies; within the process, a set."""
    if _lock_dir_made != (procfs.pid(), LOCK_DIR):
        _make_lock_dir()
    with _lock:
        for id_ in range(BASE, BASE + COUNT):
            if id_ in _held or id_ in SHARED:
                continue
            kept = _idle.pop(id_, None)
            fd = _still_ours(kept)
            if fd is not None:
                if _lock_idle(id_, fd):
                    _held[id_] = kept
                    return Lease(id_)
                if id_ in _idle:
                    continue  # held by another process's sandbox: tried again next time
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                try:
                    fd = os.open(_lock_path(id_), flags, 0o600)
                except FileNotFoundError:  # the directory was removed since: make it again
                    _make_lock_dir()
                    fd = os.open(_lock_path(id_), flags, 0o600)
            except OSError as e:
                raise SandboxSetupError("identity", e.errno, "reserving a host id for the sandbox",
                                        _lock_path(id_)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if len(_idle) < IDLE_MAX:
                    _keep_idle(id_, fd)
                else:
                    os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            _held[id_] = _kept(fd)
            return Lease(id_)
    raise UnsupportedError("identity", f"all {COUNT} host ids reserved for sandboxes ({BASE}..{BASE + COUNT - 1}) "
                           "are in use")


def _kept(fd: int) -> tuple:
    st = os.fstat(fd)
    return (fd, st.st_dev, st.st_ino)


def _keep_idle(id_: int, fd: int) -> None:
    _idle[id_] = _kept(fd)


def _still_ours(kept) -> int | None:
    """The fd of an _idle entry if it is still the lock file it was kept as, else None
    (the caller closed that number, maybe reopened it: not ours to use or close)."""
    if kept is None:
        return None
    fd, dev, ino = kept
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return fd if (st.st_dev, st.st_ino) == (dev, ino) else None


def _lock_idle(id_: int, fd: int) -> bool:
    """flock an idle lock fd of `id_` (checked by _still_ours): True if it is ours now
    (and still the file at its path); False if another process holds it (the fd stays
    idle) or it was stale (closed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _keep_idle(id_, fd)
        return False
    except OSError:
        os.close(fd)
        return False
    try:
        st, mine = os.stat(_lock_path(id_), follow_symlinks=False), os.fstat(fd)
        same = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
    except OSError:
        same = False
    if not same:  # the lock directory was made again since: this lock excludes nobody
        os.close(fd)
    return same


USERNS_CACHE = 64      # user namespaces kept for ids not in use (more while more sandboxes run)


def release(id_: int) -> None:
    with _lock:
        fd = _still_ours(_held.pop(id_, None))  # the caller may have closed that number meanwhile
        userns = _userns.pop(id_, None) if len(_userns) > USERNS_CACHE else None
        if fd is not None and len(_idle) < IDLE_MAX:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)  # free for any process; the fd stays for our next launch
                _keep_idle(id_, fd)
                fd = None
            except OSError:
                pass
    if fd is not None:
        os.close(fd)  # drops the flock
    if userns is not None:
        os.close(userns)


def in_use(id_: int) -> bool:
    """Is `id_` held by a sandbox of any process (a fresh flock attempt fails)."""
    try:
        fd = os.open(_lock_path(id_), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def held() -> frozenset:
    """The ids this process's sandboxes hold now."""
    with _lock:
        return frozenset(_held)


def userns_fd(id_: int) -> int:
    """A user namespace whose maps are "0 id 1" (uid and gid), made once per id.

    Binds idmapped through it show host inodes owned by 0 (the root caller) as owned
    by the sandbox's id, and files the sandbox creates land on disk owned by 0."""
    fd = _userns.get(id_)
    if fd is None:
        with _lock:
            fd = _userns.get(id_)
            if fd is None:
                line = f"0 {id_} 1\n".encode()
                fd = _userns[id_] = _launch.make_userns(line, line)
    return fd


def _after_fork_in_child():
    # The locks are shared with the parent (flock belongs to the open file): its
    # sandboxes still hold them. This process holds none of its own.
    global _lock
    _lock = threading.Lock()
    _held.clear()
    for kept in _idle.values():  # shared with the parent's open files: never locked from here
        fd = _still_ours(kept)
        if fd is not None:
            os.close(fd)
    _idle.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
