"""What this kernel and this user allow, as data; and whether a compiled Plan can run here.

(The probes behind ``isolate doctor``; the report itself is isolate/doctor.py.)

``features()`` probes for real and cheaply (well under 100 ms in all): every probe that
must change the state of a process (unshare, no_new_privs) runs in a forked child that
reports back through a pipe and always leaves with ``os._exit()``. Everything else reads
/proc or makes a harmless system call that fails in a telling way (``clone3(NULL, 0)``
is EINVAL where clone3 exists, ENOSYS where it does not). The result is cached per
process and per effective uid; ``features(refresh=True)`` probes again.

``requirements(plan)`` lists the features a Plan needs, with the profile field that
needs each; ``check(plan)`` raises ``UnsupportedError(field, reason)`` for the first
one missing, so a launch fails closed instead of running with less isolation than
the profile asked for.

Testing aid: the environment variable ``ISOLATE_DOCTOR_DISABLE`` (comma-separated
feature keys, e.g. ``ISOLATE_DOCTOR_DISABLE=user_namespaces,landlock``) makes those
features report ``available=False`` with the detail
``"disabled by ISOLATE_DOCTOR_DISABLE"``, whatever the kernel says. It is read on
every call to ``features()``, so tests can set it without ``refresh=True``. It exists to
exercise fail-closed paths on machines that have every feature; it never grants one.

Command line: ``isolate doctor [--json]`` (isolate.doctor.main).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import socket
import threading
from typing import Iterable, Mapping

import prctl

from ..errors import UnsupportedError
from . import mounts as mounts_mod
from .constants import CLONE_NEWUSER, FLAG_NAMES, NAMESPACES, SECCOMP_ACTIONS
from . import procfs

__all__ = ["Feature", "features", "requirements", "check", "landlock_abi", "DISABLE_ENV", "FEATURE_KEYS"]

DISABLE_ENV = "ISOLATE_DOCTOR_DISABLE"
DISABLED_DETAIL = f"disabled by {DISABLE_ENV}"


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str

    def as_dict(self) -> dict:
        return {"available": self.available, "detail": self.detail}


# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

SECCOMP_GET_ACTION_AVAIL = 2
LANDLOCK_CREATE_RULESET_VERSION = 1

# Syscalls numbered >= 424 are the same on every architecture; the older ones are not.
_SYS_PIDFD_OPEN = 434
_SYS_CLONE3 = 435
_SYS_CLOSE_RANGE = 436
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "i686": 354, "i386": 354, "armv7l": 383, "riscv64": 277,
                "ppc64le": 358, "s390x": 348}.get(os.uname().machine)

FEATURE_KEYS = (
    "kernel",
    "user_namespaces", "max_user_namespaces", "apparmor_userns_restriction",
    *(f"ns_{n}" for n in NAMESPACES),
    "seccomp", "seccomp_actions", *(f"seccomp_action_{a}" for a in SECCOMP_ACTIONS),
    "landlock", "landlock_abi",
    "clone3", "pidfd", "close_range", "no_new_privs",
    "cgroup_v2", "cgroup_v1_memory", "cgroup_v1_pids", "cgroup_memory_limit", "cgroup_pids_limit",
    "overlayfs", "tmpfs", "proc",
    "audit_read",
)

# What each feature is, for error messages: "<what> not available here (<detail>)".
_WHAT = {
    "user_namespaces": "user namespaces are",
    "max_user_namespaces": "user namespaces are",
    "apparmor_userns_restriction": "unrestricted user namespaces are",
    "ns_user": "user namespaces are",
    "ns_pid": "pid namespaces are",
    "ns_net": "network namespaces are",
    "ns_mount": "mount namespaces are",
    "ns_ipc": "ipc namespaces are",
    "ns_uts": "uts namespaces are",
    "ns_cgroup": "cgroup namespaces are",
    "ns_time": "time namespaces are",
    "seccomp": "seccomp filters are",
    "seccomp_actions": "seccomp filter actions are",
    "landlock": "Landlock is",
    "landlock_abi": "Landlock is",
    "audit_read": "reading the kernel's audit records (seccomp and Landlock denials, for Session violations) is",
    "clone3": "clone3 is",
    "pidfd": "pidfds are",
    "close_range": "close_range is",
    "no_new_privs": "no_new_privs is",
    "cgroup_v2": "cgroup v2 is",
    "cgroup_v1_memory": "a writable cgroup v1 memory hierarchy is",
    "cgroup_v1_pids": "a writable cgroup v1 pids hierarchy is",
    "cgroup_memory_limit": "a writable cgroup with the memory controller is",
    "cgroup_pids_limit": "a writable cgroup with the pids controller is",
    "overlayfs": "overlayfs is",
    "tmpfs": "tmpfs is",
    "proc": "procfs is",
}
for _a in SECCOMP_ACTIONS:
    _WHAT[f"seccomp_action_{_a}"] = f"the seccomp action {_a} is"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

_libc = None


def _lib():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.unshare.restype = ctypes.c_int
        lib.unshare.argtypes = [ctypes.c_int]
        _libc = lib
    return _libc


def _syscall(nr: int, *args) -> tuple[int, int]:
    """(return value, errno) of a raw system call; every argument is passed as a long."""
    lib = _lib()
    cargs = [a if isinstance(a, (ctypes.c_void_p, ctypes._Pointer, ctypes.c_char_p)) else ctypes.c_long(a)
             for a in args]
    ctypes.set_errno(0)
    r = lib.syscall(ctypes.c_long(nr), *cargs)
    return r, (ctypes.get_errno() if r == -1 else 0)


def _errname(e: int) -> str:
    return f"{errno.errorcode.get(e, str(e))} ({os.strerror(e)})"


# --------------------------------------------------------------------------
# Probes in a forked child
# --------------------------------------------------------------------------

def _fork_start(fn) -> tuple[int, int]:
    """Fork a child that runs fn() (-> str) and writes the result to a pipe; (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns, never runs Python-level cleanup
        try:
            try:
                result = fn()
            except BaseException as e:  # noqa: BLE001 - report anything
                result = f"error {type(e).__name__}: {e}"
            os.write(w, result.encode()[:4096])
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _fork_finish(pid: int, r: int) -> str:
    chunks = []
    try:
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"error probe child killed by signal {os.WTERMSIG(status)}"
    text = b"".join(chunks).decode(errors="replace")
    return text or "error probe child reported nothing"


def _child_unshare(flags: int):
    def probe() -> str:
        lib = _lib()
        ctypes.set_errno(0)
        if lib.unshare(flags) == 0:
            return "ok"
        return f"errno {ctypes.get_errno()}"
    return probe


def _child_no_new_privs() -> str:
    try:
        prctl.set_no_new_privs(1)
    except OSError as e:
        return f"errno {e.errno}"
    r = prctl.get_no_new_privs()
    return "ok" if r == 1 else f"error PR_GET_NO_NEW_PRIVS returned {r} after setting it"


def _flag_text(flags: int) -> str:
    return "|".join(n for f, n in FLAG_NAMES.items() if flags & f) or "0"


def _outcome(call: str, result: str) -> tuple[bool, str]:
    if result == "ok":
        return True, f"{call} works"
    if result.startswith("errno "):
        return False, f"{call}: {_errname(int(result.split()[1]))}"
    return False, f"{call}: {result.removeprefix('error ')}"


# --------------------------------------------------------------------------
# The probes
# --------------------------------------------------------------------------

def _probe_all() -> dict[str, Feature]:
    euid = os.geteuid()
    found: dict[str, Feature] = {}

    def put(key: str, available: bool, detail: str) -> None:
        found[key] = Feature(key, bool(available), str(detail))

    # Start every forked probe first, so they run side by side while we read /proc.
    forks: dict[str, tuple[str, tuple[int, int]]] = {}

    def start(key: str, call: str, fn) -> None:
        try:
            forks[key] = (call, _fork_start(fn))
        except OSError as e:
            put(key, False, f"{call}: could not fork a probe: {_errname(e.errno or 0)}")

    start("user_namespaces", "unshare(CLONE_NEWUSER)", _child_unshare(CLONE_NEWUSER))
    for name, flag in NAMESPACES.items():
        flags = flag if (euid == 0 or flag == CLONE_NEWUSER) else (CLONE_NEWUSER | flag)
        start(f"ns_{name}", f"unshare({_flag_text(flags)})", _child_unshare(flags))
    start("no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS)", _child_no_new_privs)

    put("kernel", True, os.uname().release)

    # --- user namespace sysctls
    max_userns = procfs.read_int("/proc/sys/user/max_user_namespaces")
    unpriv_clone = procfs.read_int("/proc/sys/kernel/unprivileged_userns_clone")
    apparmor = procfs.read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if max_userns is None:
        put("max_user_namespaces", False, "/proc/sys/user/max_user_namespaces is missing")
    else:
        put("max_user_namespaces", max_userns > 0, str(max_userns))
    if apparmor is None:
        put("apparmor_userns_restriction", True,
            "no restriction: /proc/sys/kernel/apparmor_restrict_unprivileged_userns is absent")
    elif apparmor == 0:
        put("apparmor_userns_restriction", True, "no restriction: apparmor_restrict_unprivileged_userns=0")
    else:
        why = "root is exempt" if euid == 0 else "unprivileged user namespaces are confined"
        put("apparmor_userns_restriction", euid == 0,
            f"restricted: apparmor_restrict_unprivileged_userns={apparmor} ({why})")
    userns_sysctls = [f"max_user_namespaces={max_userns if max_userns is not None else 'absent'}",
                      f"unprivileged_userns_clone={unpriv_clone if unpriv_clone is not None else 'absent'}",
                      "apparmor_restrict_unprivileged_userns="
                      + (str(apparmor) if apparmor is not None else "absent")]

    # --- seccomp
    _seccomp(put)

    # --- landlock
    r, e = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.c_void_p(None), 0, LANDLOCK_CREATE_RULESET_VERSION)
    if r >= 1:
        put("landlock", True, f"ABI {r}")
        put("landlock_abi", True, str(r))
    else:
        if e == errno.EOPNOTSUPP:
            why = "Landlock is built in but disabled at boot (EOPNOTSUPP; add landlock to lsm=)"
        elif e == errno.ENOSYS:
            why = "landlock_create_ruleset: ENOSYS (not in this kernel, or refused by a seccomp policy)"
        else:
            why = f"landlock_create_ruleset: {_errname(e)}" if r == -1 else f"landlock_create_ruleset returned {r}"
        put("landlock", False, why)
        put("landlock_abi", False, why)

    # --- the audit log's read-only multicast group: where isolate.Session finds what the
    # filter denied (SECCOMP_FILTER_FLAG_LOG) and what Landlock refused
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 9) as sk:  # NETLINK_AUDIT
            sk.bind((0, 1))  # AUDIT_NLGRP_READLOG
        put("audit_read", True, "audit netlink multicast group (AUDIT_NLGRP_READLOG) readable")
    except OSError as ex:
        put("audit_read", False, f"audit netlink multicast group: {_errname(ex.errno or 0)} (CAP_AUDIT_READ needed)")

    # --- clone3 / pidfd / close_range
    r, e = _syscall(_SYS_CLONE3, ctypes.c_void_p(None), 0)
    if r == -1 and e == errno.EINVAL:
        put("clone3", True, "clone3(NULL, 0) -> EINVAL: present")
    elif r == -1 and e == errno.ENOSYS:
        put("clone3", False, "clone3: ENOSYS (old kernel, or refused by a seccomp policy)")
    elif r == -1:
        put("clone3", False, f"clone3(NULL, 0): {_errname(e)}")
    else:  # cannot happen with a NULL argument; never leave a child behind if it did
        if r == 0:
            os._exit(0)
        put("clone3", True, "clone3 present")
    try:
        if hasattr(os, "pidfd_open"):
            fd = os.pidfd_open(os.getpid())
        else:
            fd, e = _syscall(_SYS_PIDFD_OPEN, os.getpid(), 0)
            if fd < 0:
                raise OSError(e, os.strerror(e))
        os.close(fd)
        put("pidfd", True, "pidfd_open works")
    except OSError as ex:
        put("pidfd", False, f"pidfd_open: {_errname(ex.errno or 0)}")
    # first > last is EINVAL where close_range exists, and closes nothing.
    r, e = _syscall(_SYS_CLOSE_RANGE, 2, 1, 0)
    if r == -1 and e == errno.ENOSYS:
        put("close_range", False, "close_range: ENOSYS")
    elif r == -1 and e != errno.EINVAL:
        put("close_range", False, f"close_range: {_errname(e)}")
    else:
        put("close_range", True, "present")

    # --- cgroups and filesystems
    _cgroups(put, euid)
    fstypes = set()
    for line in (procfs.read("/proc/filesystems", strip=True) or "").splitlines():
        parts = line.split()
        if parts:
            fstypes.add(parts[-1])
    for key, fs in (("overlayfs", "overlay"), ("tmpfs", "tmpfs"), ("proc", "proc")):
        put(key, fs in fstypes, f"{fs} in /proc/filesystems" if fs in fstypes else f"{fs} not in /proc/filesystems")

    # --- collect the forked probes
    for key, (call, (pid, rfd)) in forks.items():
        ok, detail = _outcome(call, _fork_finish(pid, rfd))
        if key == "user_namespaces":
            detail = "; ".join([detail, *userns_sysctls])
        put(key, ok, detail)

    return {k: found[k] for k in FEATURE_KEYS if k in found}


def _seccomp(put) -> None:
    actions_text = procfs.read("/proc/sys/kernel/seccomp/actions_avail", strip=True)
    listed = set(actions_text.split()) if actions_text is not None else set()
    try:
        # python-prctl returns a bool; true is filter mode (2): in strict mode (1) no Python runs
        r, err = (2 if prctl.get_seccomp() else 0), 0
    except OSError as e:
        r, err = -1, e.errno or 0
    if r == -1:
        put("seccomp", False, f"prctl(PR_GET_SECCOMP): {_errname(err)} (kernel built without CONFIG_SECCOMP?)")
    elif actions_text is None:
        put("seccomp", False, "/proc/sys/kernel/seccomp/actions_avail is missing (no filter mode)")
    else:
        mode = {0: "not filtered now", 1: "in strict mode", 2: "already filtered (filters stack)"}.get(r, f"mode {r}")
        put("seccomp", True, f"filter mode available; this process is {mode}")
    if actions_text is None:
        put("seccomp_actions", False, "/proc/sys/kernel/seccomp/actions_avail is missing")
    else:
        put("seccomp_actions", bool(listed), actions_text)
    for action, value in SECCOMP_ACTIONS.items():
        key = f"seccomp_action_{action}"
        # Ask the kernel itself when we can; the sysctl says the same thing.
        asked = None
        if _SYS_SECCOMP is not None:
            v = ctypes.c_uint32(value)
            r, e = _syscall(_SYS_SECCOMP, SECCOMP_GET_ACTION_AVAIL, 0, ctypes.pointer(v))
            if r == 0:
                asked = True
            elif e == errno.EOPNOTSUPP:
                asked = False
        ok = asked if asked is not None else action in listed
        where = "SECCOMP_GET_ACTION_AVAIL" if asked is not None else "actions_avail"
        put(key, ok, f"SECCOMP_RET_{action.upper()} ({value:#x}) {'available' if ok else 'not available'}"
                     f" per {where}")


def _cgroups(put, euid: int) -> None:
    mounts = mounts_mod.mounts()
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    v2_mount = next((m for m in v2 if m.point == "/sys/fs/cgroup"), v2[0] if v2 else None)
    v2_usable: dict[str, str] = {}
    if v2_mount is None:
        put("cgroup_v2", False, "no cgroup2 mount in /proc/self/mountinfo")
        v2_note = "no cgroup v2"
    else:
        ctrls = (procfs.read(os.path.join(v2_mount.point, "cgroup.controllers"), strip=True) or "").split()
        put("cgroup_v2", True, f"{v2_mount.point} controllers: {' '.join(ctrls) or 'none'}")
        v2_note = f"v2 at {v2_mount.point} has {' '.join(ctrls) or 'no controllers'}"
        # A delegated subtree: our own cgroup (or the root), writable, with the controller.
        own = mounts_mod.join(v2_mount, mounts_mod.own_cgroup_v2_path())
        for d in dict.fromkeys(x for x in (own, v2_mount.point) if x):
            here = (procfs.read(os.path.join(d, "cgroup.controllers"), strip=True) or "").split()
            if os.access(d, os.W_OK) and os.access(os.path.join(d, "cgroup.subtree_control"), os.W_OK):
                for c in here:
                    v2_usable.setdefault(c, d)
    v1_usable: dict[str, str] = {}
    for controller in ("memory", "pids"):
        key = f"cgroup_v1_{controller}"
        m = next((m for m in mounts if m.fstype == "cgroup" and controller in m.super_opts), None)
        if m is None:
            put(key, False, f"no cgroup v1 hierarchy with the {controller} controller is mounted")
            continue
        own = mounts_mod.join(m, mounts_mod.own_cgroup_v1_path(controller))
        writable = next((d for d in dict.fromkeys(x for x in (m.point, own) if x) if os.access(d, os.W_OK)), None)
        if writable is None:
            put(key, False, f"{m.point} (not writable by uid {euid})")
        else:
            v1_usable[controller] = writable
            put(key, True, m.point if writable == m.point else f"{m.point} (own cgroup {writable} writable)")
    for controller in ("memory", "pids"):
        key = f"cgroup_{controller}_limit"
        if controller in v2_usable:
            put(key, True, f"cgroup v2 {v2_usable[controller]}")
        elif controller in v1_usable:
            put(key, True, f"cgroup v1 {v1_usable[controller]}")
        else:
            put(key, False, f"no writable cgroup with the {controller} controller ({v2_note}; "
                            f"no writable v1 {controller} hierarchy)")


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

_cache: dict[int, dict[str, Feature]] = {}
_lock = threading.Lock()


def _disabled() -> set[str]:
    return {k.strip() for k in os.environ.get(DISABLE_ENV, "").split(",") if k.strip()}


def features(refresh: bool = False) -> dict[str, Feature]:
    """Every feature key -> Feature, probed once per process and effective uid.

    Returns a new dict each call (the cache is not exposed). Keys named in
    ISOLATE_DOCTOR_DISABLE report available=False (a testing aid; see the module doc).
    """
    euid = os.geteuid()
    with _lock:
        probed = None if refresh else _cache.get(euid)
        if probed is None:
            probed = _probe_all()
            _cache[euid] = probed
    off = _disabled()
    return {k: (Feature(k, False, DISABLED_DETAIL) if k in off else f) for k, f in probed.items()}


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers, 0 if none (or disabled for testing)."""
    f = features()
    if not (f["landlock"].available and f["landlock_abi"].available):
        return 0
    return int(f["landlock_abi"].detail)


def _items(obj) -> Iterable[tuple[str, object]]:
    if obj is None:
        return ()
    if isinstance(obj, Mapping):
        return obj.items()
    if dataclasses.is_dataclass(obj):
        return ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (list, tuple)):
        return ((str(k), v) for k, v in (x if isinstance(x, (list, tuple)) and len(x) == 2 else (x, True)
                                          for x in obj))
    return ((k, v) for k, v in vars(obj).items() if not k.startswith("_")) if hasattr(obj, "__dict__") else ()


def requirements(plan) -> list[tuple[str, str]]:
    """(feature key, profile field that needs it) for everything `plan` asks of the kernel."""
    out: list[tuple[str, str]] = []
    flags = int(getattr(plan, "clone_flags", 0) or 0)
    for name, flag in NAMESPACES.items():
        if flags & flag:
            if name == "user":
                out.append(("user_namespaces", "namespaces.user"))
            out.append((f"ns_{name}", f"namespaces.{name}"))
    if getattr(plan, "bpf", None):
        out.append(("seccomp", "seccomp"))
    if getattr(plan, "no_new_privs", False):
        out.append(("no_new_privs", "process.no_new_privs"))
    if getattr(plan, "landlock_rules", None) or getattr(plan, "landlock", None):
        out.append(("landlock", "filesystem.enforce"))
    # cgroup limits: a mapping/object whose set fields name the controller (memory_max, pids_max, ...)
    seen = set()
    # ... unless the plan stands in rlimits for them (cgroup.fallback = "rlimits").
    for attr in (("cgroup", "cgroup_limits") if getattr(plan, "cgroup_mode", None) != "rlimits" else ()):
        for k, v in _items(getattr(plan, attr, None)):
            if v is None or v is False:
                continue
            for controller in ("memory", "pids"):
                if controller in str(k).lower() and controller not in seen:
                    seen.add(controller)
                    out.append((f"cgroup_{controller}_limit", f"cgroup.{k}"))
    return out


def check(plan) -> None:
    """Raise UnsupportedError(field, reason) for the first thing `plan` needs that is missing here."""
    feats = features()
    for key, field in requirements(plan):
        f = feats.get(key)
        if f is None or not f.available:
            what = _WHAT.get(key, f"{key} is")
            detail = f.detail if f is not None else "not probed"
            raise UnsupportedError(field, f"{what} not available here ({detail})")
