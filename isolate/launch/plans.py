"""Plans made runnable on this host, and cached: the launch side of compiling.

isolate.plan.compile turns a profile into the parts of a Plan; this module adds the
kernel objects a Plan holds, made once per Plan, not per launch: the launch child's
plan (a capsule made by _launch.make_plan), the sealed memfd of the seccomp filter
for isolate-init, the template mount namespace of a new-root view and, for a root
caller's host-id sandbox, which of its binds can be idmapped. Then it checks, failing
closed, that this kernel has everything the Plan asks for.

A Plan is cached by content (isolate.plan.compile.cache_key): the second launch of
a profile compiles nothing.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections import OrderedDict

from typing import Any, Sequence

from ..errors import ProfileError, WorkingDirectoryNotFound
from ..kernel import seccomp_notify
from ..plan import mountops
from ..plan.plan import Plan
from ..profile.cache import load_profile
from . import _launch, hostids, mounts

# The mount operations are numbered by the plan (isolate.plan.fs) and applied by the C
# launch child: both must mean the same steps.
_C_CODES = {name: getattr(_launch, name) for name in mountops.OP_NAMES.values()}
if _C_CODES != {name: code for code, name in mountops.OP_NAMES.items()} or \
        (_launch.BIND_READONLY, _launch.BIND_OPTIONAL, _launch.BIND_DEV, _launch.BIND_NOEXEC, _launch.BIND_ASIS,
         _launch.MP_THERE) != \
        (mountops.BIND_READONLY, mountops.BIND_OPTIONAL, mountops.BIND_DEV, mountops.BIND_NOEXEC, mountops.BIND_ASIS,
         mountops.MP_THERE):
    raise ImportError("isolate.launch._launch was built from another isolate: its mount operation codes differ "
                      "from isolate.plan.mountops (rebuild the extension)")

_cache: "OrderedDict[str, Plan]" = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 64
stats = {"compiled": 0, "hits": 0}


_compile_mod = None
_keys: dict = {}   # compile.quick_key(...) -> compile.cache_key(...) of the same profile and caller
KEYS_MAX = 256


def _compiler():
    global _compile_mod
    if _compile_mod is None:
        from ..plan import compile  # the compiler, its probes and views: ~10 ms, loaded by the first compile

        _compile_mod = compile
    return _compile_mod


def compile_profile(profile, cwd: str | None = None) -> Plan:
    """The Plan of `profile` for this caller; cached by content, compiled at most once."""
    compile_mod = _compiler()
    ctx = compile_mod.caller_context(cwd)
    quick = compile_mod.quick_key(profile, ctx)
    key = _keys.get(quick) if quick is not None else None
    if key is None:
        key = compile_mod.cache_key(profile, ctx)
        if quick is not None:
            if len(_keys) >= KEYS_MAX:
                _keys.clear()
            _keys[quick] = key
    with _cache_lock:
        plan = _cache.get(key)
        if plan is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return plan
    plan = _make(profile, ctx, key)
    with _cache_lock:
        stats["compiled"] += 1
        _cache[key] = plan
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return plan


def _make(profile, ctx, key: str) -> Plan:
    compile_mod = _compiler()
    parts = compile_mod.compile_parts(profile, ctx, key)
    fields = parts.fields
    ops = fields["mount_ops"]
    capsule = _launch.make_plan(ops=[op.as_tuple() for op in ops], **parts.native)
    bpf = fields["bpf"]
    # The view as a template of its own (each launch makes only its own mounts on a copy);
    # else the template of the sources; else none (the launch copies the caller's tree).
    mntns_fd, view_capsule, view_index = -1, None, ()
    if parts.view is not None:
        mntns_fd = mounts.make_template(parts.view.template_ops, pidns=True)
        if mntns_fd >= 0:
            view_capsule = _launch.make_plan(ops=[op.as_tuple() for op in parts.view.launch_ops], **parts.native)
            view_index = parts.view.index
    if mntns_fd < 0 and parts.template_ops:
        mntns_fd = mounts.make_template(parts.template_ops)
    plan = Plan(
        **fields,
        capsule=capsule,
        bpf_fd=_sealed_memfd(bpf) if (bpf and fields["use_init"]) else -1,
        mntns_fd=mntns_fd,
        view_capsule=view_capsule,
        view_index=view_index,
        idmap_binds=_idmap_binds(parts.host_binds) if fields["host_ids"] else (),
    )
    # Fail closed: whatever this plan asks of the kernel (and of its fd table) must be there.
    compile_mod.check_runnable(plan, parts, profile.name)
    return plan


_notify_fds: dict = {}   # (id(plan), watch_connect) -> sealed memfd of the notify variant
_notify_lock = threading.Lock()


def notify_bpf_fd(plan: Plan, watch_connect: bool) -> int:
    """A sealed memfd of plan.bpf's notify variant (isolate.plan.seccomp.notify), made
    once per plan and closed with it."""
    key = (id(plan), bool(watch_connect))
    fd = _notify_fds.get(key)
    if fd is None:
        with _notify_lock:
            fd = _notify_fds.get(key)
            if fd is None:
                fd = _sealed_memfd(seccomp_notify.notify_variant(plan.bpf, watch_connect))
                _notify_fds[key] = fd
                weakref.finalize(plan, _forget_notify_fd, key, fd)
    return fd


def _forget_notify_fd(key, fd: int) -> None:
    with _notify_lock:
        if _notify_fds.get(key) == fd:
            del _notify_fds[key]
    os.close(fd)


def _sealed_memfd(data: bytes) -> int:
    fd = os.memfd_create("isolate-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _idmap_binds(binds) -> tuple:
    """The binds a host-id sandbox gets as idmapped trees, and which filesystems refuse it."""
    hostids.check_free()
    return mounts.idmap_support(binds, hostids.userns_fd(hostids.BASE)) if binds else ()


# ---- plans for a call: profile + overrides + cwd, as run/Popen take them ----------
def no_nul(value, what: str) -> None:
    """ValueError like subprocess's ("embedded null byte") instead of a silently shortened string."""
    b = value if isinstance(value, bytes) else os.fsencode(value)
    if b"\0" in b:
        raise ValueError(f"embedded null byte in {what}")


def plan_for(profile: Any = "default", overrides: Sequence[str] = (), cwd: str | None = None) -> Plan:
    if isinstance(profile, Plan):
        return profile
    return compile_profile(load_profile(profile, overrides), cwd=cwd)


def plan_for_cwd(profile: Any, overrides: Sequence[str], cwd) -> Plan:
    """plan_for() with cwd= (also the profile's {cwd}, which a view may bind): a missing
    directory is reported as such (FileNotFoundError), not as the profile entry using it."""
    if cwd is None:
        return plan_for(profile, overrides)
    no_nul(cwd, "cwd")
    path = os.path.abspath(os.fsdecode(os.fspath(cwd)))  # bytes or relative, as subprocess takes them
    try:
        return plan_for(profile, overrides, cwd=path)
    except ProfileError as e:
        if not os.path.exists(path) and os.fsdecode(path) in str(e):
            raise WorkingDirectoryNotFound(os.fsdecode(path)) from None
        raise
