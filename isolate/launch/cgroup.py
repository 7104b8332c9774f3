"""Per-launch cgroups: memory and process-count limits that hold, and what happened.

A plan whose ``[cgroup]`` section sets a limit gets a fresh cgroup for every launch:

* cgroup v2 (preferred, where a writable directory offers the controllers, e.g. the root
  as root, or a delegated subtree): one directory ``BASE/isolate/<pid>-<n>`` with
  ``memory.max``, ``memory.swap.max``, ``memory.oom.group = 1`` (an OOM kill takes the
  whole sandbox) and ``pids.max``;
* cgroup v1 (legacy and hybrid hosts): one directory per controller,
  ``<memory hierarchy>/isolate/<pid>-<n>`` and ``<pids hierarchy>/isolate/<pid>-<n>``,
  with ``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes`` (only where swap
  accounting exists) and ``pids.max``.

The launch path (``_launch.spawn``) writes the child's pid into every ``cgroup.procs``
before the child runs anything of its own, so every process of the sandbox is inside.
After the sandbox has been reaped, ``Group.finish()`` reads the OOM evidence and the peak
memory, kills whatever is left, waits until the cgroup is empty and removes it. The
``isolate`` parent directories are created on first use and never removed (other
processes may be using them); directories left by processes that died are swept on the
first launch of the next process.

Making a cgroup (mkdir, limits written) is done ahead of time once a kind of cgroup
(version, hierarchy, limits) has been launched twice: a background thread keeps a few
fresh ones ready (CgroupPool), as net.py does for network namespaces. A prepared cgroup
is fresh (made for one launch and never used before), has its limits written and is
checked empty when taken; it serves one sandbox and is then removed like any other,
never reused (its OOM and pids counters cannot be reset). A process made by fork
never takes its parent's prepared cgroups (nor removes them).
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import itertools
import os
import signal
import threading
import time
from typing import Mapping

from ..errors import SandboxSetupError
from ..kernel.constants import controllers
from ..kernel import mounts as kmounts
from ..kernel import procfs

PARENT = "isolate"
EMPTY_TIMEOUT = 10.0  # seconds to wait for a cgroup to empty before giving up on it for now


# ---- one launch's cgroup ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Usage:
    """What the cgroup saw of the sandbox; None where this kernel does not say."""

    oom_kills: int | None        # processes the OOM killer killed in it
    memory_peak: int | None      # bytes, highest memory use
    memory_failcnt: int | None   # v1: times the limit was hit
    pids_refused: int | None     # forks refused by pids.max
    pids_peak: int | None = None  # most processes (and threads) in it at once


def _make_dir(path: str) -> None:
    os.mkdir(path, 0o755)


def _remove_dir(path: str) -> None:
    os.rmdir(path)


def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _keyed(text: str | None) -> dict[str, int]:
    """'key value' lines (memory.events, memory.oom_control, pids.events) -> dict."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _pids(d: str) -> list[int]:
    return [int(x) for x in (procfs.read(os.path.join(d, "cgroup.procs")) or "").split() if x.isdigit()]


def _read(path: str) -> str | None:
    """A small cgroup file's text, or None (procfs.read without the file object)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class Group:
    """The cgroup (v2: one directory; v1: one per controller) of one launch."""

    def __init__(self, version: str, dirs: list[str], limits: Mapping[str, int], controllers_=None):
        self.version = version
        self.dirs = list(dirs)
        self.limits = dict(limits)
        self.controllers = list(controllers_) if controllers_ is not None else None  # v1: per dir
        self._procs: tuple = (None, [])  # (the dirs list they were made from, the cgroup.procs paths)

    @property
    def procs(self) -> list[bytes]:
        """The cgroup.procs files the launch path puts the child into (made once per dirs list)."""
        made_from, procs = self._procs
        if made_from is not self.dirs:
            procs = [os.fsencode(os.path.join(d, "cgroup.procs")) for d in self.dirs]
            self._procs = (self.dirs, procs)
        return list(procs)

    def usage(self, pids: bool = True) -> Usage:
        """pids=False: only what run()'s Result reports (the OOM outcome and the memory
        peak): pids_refused and pids_peak are not read (None), nor memory_failcnt where
        the kernel reports OOM kills."""
        if self.version == "v2":
            d = self.dirs[0]
            events = _keyed(_read(os.path.join(d, "memory.events")))
            events_p = _keyed(_read(os.path.join(d, "pids.events"))) if pids and "pids_max" in self.limits else {}
            with_mem, with_pids = "memory_max" in self.limits, pids and "pids_max" in self.limits
            return Usage(events.get("oom_kill") if with_mem else None,
                         _read_int(os.path.join(d, "memory.peak")) if with_mem else None, None,
                         events_p.get("max") if with_pids else None,
                         _read_int(os.path.join(d, "pids.peak")) if with_pids else None)
        oom = peak = failcnt = refused = pids_peak = None
        for i, d in enumerate(self.dirs):
            kind = self.controllers[i] if self.controllers is not None and i < len(self.controllers) else None
            if kind == "memory" or (kind is None and os.path.exists(os.path.join(d, "memory.limit_in_bytes"))):
                oom = _keyed(_read(os.path.join(d, "memory.oom_control"))).get("oom_kill")
                peak = _read_int(os.path.join(d, "memory.max_usage_in_bytes"))
                if pids or oom is None:  # (run() looks at failcnt only where oom_kill is not reported)
                    failcnt = _read_int(os.path.join(d, "memory.failcnt"))
            elif not pids and kind == "pids":
                continue
            elif kind == "pids" or (kind is None and os.path.exists(os.path.join(d, "pids.max"))):
                refused = _keyed(_read(os.path.join(d, "pids.events"))).get("max")
                pids_peak = _read_int(os.path.join(d, "pids.peak"))
        return Usage(oom, peak, failcnt, refused, pids_peak)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (v2: cgroup.kill, where the kernel has it)."""
        for d in self.dirs:
            kill_file = os.path.join(d, "cgroup.kill")
            if self.version == "v2" and os.path.exists(kill_file):
                try:
                    _write(kill_file, 1)
                    continue
                except OSError:
                    pass
            for pid in _pids(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def destroy(self, timeout: float = EMPTY_TIMEOUT) -> bool:
        """Kill what is left, wait for the cgroup to empty, remove it. False if it would
        not empty in time (it is then retried on the next launch and at exit)."""
        left = _remove_all(self.dirs, timeout, kill=self.kill)
        with _lock:
            _live.discard(self)
            if left:
                _pending.append((self.version, left))
        return not left

    def finish(self, pids: bool = True) -> Usage:
        """After the sandbox has been reaped: what happened, then the cgroup is removed
        (pids=False: see usage())."""
        u = self.usage(pids)
        self.destroy()
        return u


def _remove_all(dirs: list[str], timeout: float, kill=None) -> list[str]:
    """rmdir each of `dirs` (busy ones are killed and retried until `timeout`); those left."""
    left = list(dirs)
    stuck: list[str] = []  # not busy but refused (e.g. EACCES): no point in waiting
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while left:
        busy = []
        for d in left:
            try:
                _remove_dir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                (busy if e.errno in (errno.EBUSY, errno.ENOTEMPTY) else stuck).append(d)
        left = busy
        if not left or time.monotonic() >= deadline:
            break
        if kill is not None:
            kill()
        else:
            for d in left:
                for pid in _pids(d):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return left + stuck


# ---- bookkeeping: names, leftovers ---------------------------------------------------------
_lock = threading.Lock()
_counter = itertools.count(1)
_live: set = set()
_pending: list = []           # (version, [dirs]) that did not empty in time
_swept: set = set()           # parent directories swept of dead processes' leftovers, per pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(parent: str) -> None:
    """Once per process and parent: remove empty leftovers of processes that died."""
    key = (os.getpid(), parent)
    if key in _swept:
        return
    _swept.add(key)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        owner, sep, n = name.partition("-")
        if not (sep and owner.isdigit() and n.isdigit()) or _alive(int(owner)):
            continue
        try:
            _remove_dir(os.path.join(parent, name))
        except OSError:
            pass  # still in use (a sandbox that outlived its caller) or not ours to remove


def _retry_pending() -> None:
    with _lock:
        pending = list(_pending)
        _pending.clear()
    for version, dirs in pending:
        left = _remove_all(dirs, 0.0)
        if left:
            with _lock:
                _pending.append((version, left))


def _ensure_parent_v2(base: str, ctrls: tuple[str, ...]) -> str:
    """BASE/isolate with `ctrls` enabled for its children (and for itself in BASE)."""
    want = " ".join(f"+{c}" for c in ctrls)
    enabled = (procfs.read(os.path.join(base, "cgroup.subtree_control")) or "").split()
    if not all(c in enabled for c in ctrls):
        _write(os.path.join(base, "cgroup.subtree_control"), want)
    parent = os.path.join(base, PARENT)
    try:
        _make_dir(parent)
    except FileExistsError:
        pass
    enabled = (procfs.read(os.path.join(parent, "cgroup.subtree_control")) or "").split()
    if not all(c in enabled for c in ctrls):
        _write(os.path.join(parent, "cgroup.subtree_control"), want)
    return parent


def _limits_v2(d: str, limits: Mapping[str, int]) -> None:
    if "memory_max" in limits:
        mem = limits["memory_max"]
        _write(os.path.join(d, "memory.max"), mem)
        swap = os.path.join(d, "memory.swap.max")
        if os.path.exists(swap):  # absent: the kernel has no swap accounting (or no swap)
            _write(swap, max(0, limits.get("memory_swap_max", mem) - mem))
        group = os.path.join(d, "memory.oom.group")
        if os.path.exists(group):
            _write(group, 1)
    if "pids_max" in limits:
        _write(os.path.join(d, "pids.max"), limits["pids_max"])


def _limits_v1(d: str, controller: str, limits: Mapping[str, int]) -> None:
    if controller == "memory":
        mem = limits["memory_max"]
        _write(os.path.join(d, "memory.limit_in_bytes"), mem)
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # swap accounting: memory + swap together
            _write(memsw, max(mem, limits.get("memory_swap_max", mem)))
    elif controller == "pids":
        _write(os.path.join(d, "pids.max"), limits["pids_max"])


def create(version: str, bases: Mapping[str, str], limits: Mapping[str, int]) -> Group:
    """A fresh cgroup for one launch, limits written. SandboxSetupError if it cannot be made.

    A prepared one (CgroupPool) when one is ready, else made now."""
    prepared = _pools.take(version, bases, limits)
    if prepared is not None:
        return prepared
    return _make(version, bases, limits)


def _make(version: str, bases: Mapping[str, str], limits: Mapping[str, int]) -> Group:
    _retry_pending()
    ctrls = controllers(limits)
    name = f"{os.getpid()}-{next(_counter)}"
    made: list[str] = []
    path = None
    try:
        if version == "v2":
            path = bases[ctrls[0]]
            parent = _ensure_parent_v2(path, ctrls)
            _sweep(parent)
            path = os.path.join(parent, name)
            _make_dir(path)
            made.append(path)
            _limits_v2(path, limits)
        elif version == "v1":
            for c in ctrls:
                path = os.path.join(bases[c], PARENT)
                if (os.getpid(), path) not in _swept:  # made once per process (and swept then)
                    try:
                        _make_dir(path)
                    except FileExistsError:
                        pass
                _sweep(path)
                path = os.path.join(path, name)
                _make_dir(path)
                made.append(path)
                _limits_v1(path, c, limits)
        else:
            raise ValueError(f"unknown cgroup version {version!r}")
    except OSError as e:
        _remove_all(made, 1.0)
        raise SandboxSetupError("cgroup", e.errno or errno.EIO, "creating the sandbox's cgroup",
                                getattr(e, "filename", None) or path) from None
    g = Group(version, made, limits, ctrls if version == "v1" else None)
    with _lock:
        _live.add(g)
    return g


# ---- placement by moving the launching thread (v1) ------------------------------------
# Writing the child's pid to cgroup.procs moves a whole thread group: the kernel then takes
# cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period (4-16 ms here
# after a pause, nothing in a tight loop). Writing one thread's id to v1 `tasks` does not.
# So the launching thread writes itself into the sandbox's `tasks`, clones (the child is
# born in the cgroups), and writes itself back into its own: _launch's cg_move.
_hierarchies: dict = {}  # (pid, controller) -> the v1 mount of that controller, or None
_own_lock = threading.Lock()


def _own_cgroups() -> str:
    """/proc/thread-self/cgroup, read now (one read for every controller of a launch)."""
    try:
        fd = os.open("/proc/thread-self/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk or (not chunks and len(chunk) < 4096):
                # (/proc/PID/cgroup is one seq_file show: its first read returns all of it,
                # up to the size asked, so a short first read is the whole file)
                chunks.append(chunk)
                return b"".join(chunks).decode(errors="replace")
            chunks.append(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)


def _own_tasks_fd(controller: str, own_cgroups: str | None = None) -> int:
    """This thread's own v1 cgroup `tasks` file of `controller`, opened now (-1: none).
    Opened per launch, not kept: the caller may be moved to another cgroup meanwhile.
    own_cgroups: this thread's /proc/thread-self/cgroup as read for this launch."""
    key = (procfs.pid(), controller)
    with _own_lock:
        if key not in _hierarchies:
            _hierarchies[key] = next((m for m in kmounts.mounts() if m.fstype == "cgroup"
                                      and controller in m.super_opts), None)
        mount = _hierarchies[key]
    if mount is None:
        return -1
    if own_cgroups is None:
        own_cgroups = _own_cgroups()
    # The path of the `tasks` file follows from the text read now (and the mount): parsed
    # once per distinct text, not at every launch.
    ckey = (own_cgroups, controller, mount)
    tasks = _own_tasks_paths.get(ckey)
    if tasks is None:
        path = None
        for line in own_cgroups.strip().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and controller in parts[1].split(","):
                path = parts[2]
        own = kmounts.join(mount, path)
        tasks = os.path.join(own, "tasks") if own is not None else ""
        if len(_own_tasks_paths) >= 256:
            _own_tasks_paths.clear()
        _own_tasks_paths[ckey] = tasks
    if not tasks:
        return -1
    try:
        return os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return -1


_own_tasks_paths: dict = {}  # (/proc/thread-self/cgroup text, controller, mount) -> its tasks file, or ""


def thread_moves(group: "Group") -> list:
    """[(fd of the sandbox cgroup's `tasks`, fd of this thread's own), ...] for every
    directory of a v1 group, or [] (then the launch writes cgroup.procs). The caller
    closes them all after the launch."""
    if group.version != "v1" or group.controllers is None:
        return []
    out = []
    own_cgroups = _own_cgroups()
    for d, c in zip(group.dirs, group.controllers):
        own = _own_tasks_fd(c, own_cgroups)
        if own < 0:
            break
        try:
            out.append((os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC), own))
        except OSError:
            os.close(own)
            break
    else:
        return out
    for new, own in out:  # all or none
        os.close(new)
        os.close(own)
    return []


def planned(version: str, bases: Mapping[str, str], limits: Mapping[str, int]) -> list:
    """What create() makes and writes, as data for the native launcher's plan cache:
    [(parent directory, [(file, value), ...], (controller, mount point, mount root) or
    None), ...], one per cgroup directory (create() names it <pid>-<n> in the parent);
    the last item (v1) says where the caller's own cgroup of that hierarchy is found.
    The files that exist only with some kernels are decided here, as create() would now."""
    ctrls = controllers(limits)
    out = []
    if version == "v2":
        parent = _ensure_parent_v2(bases[ctrls[0]], ctrls)
        writes = []
        if "memory_max" in limits:
            mem = limits["memory_max"]
            writes.append(("memory.max", mem))
            if os.path.exists(os.path.join(parent, "memory.swap.max")):
                writes.append(("memory.swap.max", max(0, limits.get("memory_swap_max", mem) - mem)))
            if os.path.exists(os.path.join(parent, "memory.oom.group")):
                writes.append(("memory.oom.group", 1))
        if "pids_max" in limits:
            writes.append(("pids.max", limits["pids_max"]))
        out.append((parent, writes, None))
    elif version == "v1":
        mounts = kmounts.mounts()
        for c in ctrls:
            parent = os.path.join(bases[c], PARENT)
            writes = []
            if c == "memory":
                mem = limits["memory_max"]
                writes.append(("memory.limit_in_bytes", mem))
                if os.path.exists(os.path.join(parent, "memory.memsw.limit_in_bytes")):
                    writes.append(("memory.memsw.limit_in_bytes", max(mem, limits.get("memory_swap_max", mem))))
            elif c == "pids":
                writes.append(("pids.max", limits["pids_max"]))
            m = next((m for m in mounts if m.fstype == "cgroup" and c in m.super_opts), None)
            out.append((parent, writes, (c, m.point, m.root) if m is not None else None))
    else:
        raise ValueError(f"unknown cgroup version {version!r}")
    return [(parent, [(f, str(v)) for f, v in writes], move) for parent, writes, move in out]


# ---- prepared cgroups ----------------------------------------------------------------------
def _empty(d: str) -> bool:
    """cgroup.procs of `d` lists no process (False when it cannot be read)."""
    try:
        fd = os.open(os.path.join(d, "cgroup.procs"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return not os.read(fd, 64).strip()
    except OSError:
        return False
    finally:
        os.close(fd)


class CgroupPool:
    """Fresh cgroups of one kind (version, hierarchy, limits), made ahead by a background
    thread; each serves one launch. Kinds start being prepared at their second launch."""

    SIZE = 8     # kept ready per kind at first
    LOW = 4      # refilled when fewer are left (or fewer than half the kind's target)
    MAX = 64     # the most kept ready per kind (the target grows by LOW when a launch finds none)

    def __init__(self):
        self._lock = threading.Lock()
        self._kinds: dict = {}       # key -> {"args": (version, bases, limits), "free": [Group], "uses": n}
        self._wake = threading.Event()
        self._making = threading.Lock()  # held while one is made and stored (drain waits for it)
        self._thread: threading.Thread | None = None
        self._pid = procfs.pid()
        self._closed = False
        self.stats = {"made": 0, "taken": 0, "missed": 0, "refused": 0}

    @staticmethod
    def _key(version, bases, limits):
        return (version, tuple(sorted(bases.items())), tuple(sorted((k, str(v)) for k, v in limits.items())))

    def take(self, version: str, bases: Mapping[str, str], limits: Mapping[str, int]) -> Group | None:
        """A prepared cgroup of this kind (checked empty), or None: the caller makes one."""
        if procfs.pid() != self._pid:  # inherited across fork: the parent's, not ours
            return None
        key = self._key(version, bases, limits)
        with self._lock:
            kind = self._kinds.get(key)
            if kind is None:
                self._kinds[key] = kind = {"args": (version, dict(bases), dict(limits)), "free": [], "uses": 0,
                                           "target": self.SIZE}
            kind["uses"] += 1
            g = kind["free"].pop() if kind["free"] else None
            self.stats["taken" if g is not None else "missed"] += 1
            if g is None and kind["uses"] > 2:  # more launches at once than prepared: keep more ready
                kind["target"] = min(self.MAX, kind["target"] + self.LOW)
            short = kind["uses"] >= 2 and len(kind["free"]) < max(self.LOW, kind["target"] // 2)
        if short:
            self._start()
        if g is not None and not all(_empty(d) for d in g.dirs):
            # Something was put into it meanwhile: never give it to a sandbox.
            self.stats["refused"] += 1
            g.destroy()
            return None
        return g

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._refill, name="isolate-cgroup-pool", daemon=True)
            self._thread.start()
        self._wake.set()

    def _refill(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if os.getpid() != self._pid or self._closed:
                        return
                    todo = [(key, k["args"]) for key, k in self._kinds.items()
                            if k["uses"] >= 2 and len(k["free"]) < k["target"]]
                if not todo:
                    break
                for key, (version, bases, limits) in todo:
                    with self._making:
                        with self._lock:
                            kind = self._kinds.get(key)
                            if self._closed or kind is None or len(kind["free"]) >= kind["target"]:
                                continue  # drained (or full) meanwhile
                        try:
                            g = _make(version, bases, limits)
                        except (SandboxSetupError, ValueError):
                            with self._lock:  # cannot be made here now: launches make their own
                                kind["uses"] = 0
                            continue
                        with self._lock:
                            kind["free"].append(g)
                            self.stats["made"] += 1

    def prepared(self) -> list[str]:
        """The directories of the cgroups that are ready now (made, not yet taken)."""
        with self._lock:
            return [d for k in self._kinds.values() for g in k["free"] for d in g.dirs]

    def drain(self) -> None:
        """Remove every prepared cgroup (and prepare no more until a kind is launched twice again)."""
        with self._making, self._lock:
            groups = [g for k in self._kinds.values() for g in k["free"]]
            self._kinds.clear()
        for g in groups:
            g.destroy()

    def close(self) -> None:
        """Drain, and prepare nothing any more (at exit)."""
        with self._lock:
            self._closed = True
        self.drain()


_pools = CgroupPool()


def pool() -> CgroupPool:
    """The process-wide pool of prepared cgroups."""
    return _pools


@atexit.register
def _at_exit() -> None:
    _pools.close()
    # Sandboxes never waited for: remove their cgroups if they have ended (a sandbox
    # that outlives us keeps its cgroup; the next process sweeps it once it is empty).
    with _lock:
        live = list(_live)
        _live.clear()
    for g in live:
        _remove_all(g.dirs, 0.0)
    _retry_pending()


def _forget_after_fork() -> None:
    global _pools, _lock
    _lock = threading.Lock()
    _live.clear()
    _pending.clear()
    _pools = CgroupPool()  # the parent's prepared cgroups stay the parent's


os.register_at_fork(after_in_child=_forget_after_fork)
