"""The plan cache on disk: what the native `isolate` command (_cli.c) launches without Python.

`isolate run` in Python, once it has launched a plan, stores it here (store()); the next
`isolate run` with the same arguments, in the same directory, finds it and launches it
natively. One file per (build, caller, profile argument, --set list, directory), in
``$XDG_CACHE_HOME/isolate`` or ``~/.cache/isolate`` (mode 0700, the caller's own; root's
too). The format is _plancache.h: a header (magic, version, length, checksum), the key
itself, everything the plan was made from, to be checked on each use (each profile file
of the `extends` chain by content, names looked up earlier on the profile path as absent,
the environment variables that steer loading, isolate's own sources and binaries by stat,
the kernel's boot id and the sysctls the compiler's probes read), then the launch data:
the C plan (_launch.plan_bytes), isolate-init's path, the environment rules, the cgroup
directories and their limit files, the binds to idmap.

Files are written to a temporary name and renamed into place: a reader sees the old file
or the new one, never half of one. The native reader refuses any file that is not a
regular file of the caller's, or is writable by group or others, or fails any check; the
next Python run replaces it.

Plans using what the native launcher does not implement (a pty, a network namespace to
join or the allowlist, pass_fds, stdio other than inherit, Landlock without namespaces,
an OCI seccomp file) are not stored: they always run in Python.
"""

from __future__ import annotations

import os
import stat as stat_mod
import struct
import sys
import tempfile
from pathlib import Path

from ..plan import fs as fs_mod
from ..plan.plan import Plan
from ..profile import loader
from ..profile.cache import load_profile
from . import _launch, cgroup, pid1

MAGIC = b"ISOLPLN\0"
HEADER = struct.Struct("=8sIIQ")
(KEY, DEP_FILE, DEP_STAT, DEP_ABSENT, DEP_ENV, DEP_TYPE) = (1, 2, 3, 4, 5, 6)
(PLAN, LAUNCH, INIT_PATH, CWD, ENV_KEEP, ENV_SET, CGROUP, OOM_TEXT, IDMAP) = range(10, 19)
LAUNCH_STRUCT = struct.Struct("=16i")
assert LAUNCH_STRUCT.size == _launch.PC_LAUNCH_SIZE and HEADER.size == 24

# What loading a profile reads of the environment (loader.profile_dirs, caller_context, features).
ENV_DEPS = ("HOME", "ISOLATE_PROFILE_PATH", "ISOLATE_DOCTOR_DISABLE")
# What the compiler's kernel probes read that can change without a reboot.
KERNEL_FILES = ("/proc/sys/kernel/random/boot_id", "/proc/sys/user/max_user_namespaces",
                "/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
                "/proc/sys/kernel/cap_last_cap")
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/subuid", "/etc/subgid")  # hostids.conflicts
_PKG = Path(__file__).resolve().parents[1]


def cache_dir() -> str | None:
    x = os.environ.get("XDG_CACHE_HOME", "")
    if x.startswith("/"):
        return os.path.join(x, "isolate")
    home = os.environ.get("HOME", "")
    return os.path.join(home, ".cache", "isolate") if home.startswith("/") else None


def fnv64(data: bytes) -> int:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def checksum(data: bytes) -> int:
    """The header's checksum (_plancache.h pc_sum): FNV-1a 64's step over 8-byte words of
    this machine's byte order, the length in the seed, the tail zero-padded."""
    n = len(data)
    h = 1469598103934665603 ^ n
    whole = n - n % 8
    for w in memoryview(data[:whole]).cast("Q"):
        h = ((h ^ w) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    tail = int.from_bytes(data[whole:] + bytes(8 - (n - whole)), sys.byteorder)
    return ((h ^ tail) * 1099511628211) & 0xFFFFFFFFFFFFFFFF


def key_bytes(profile_arg: str, overrides, cwd: str, launcher_dir: str) -> bytes:
    """The canonical key, exactly as _cli.c builds it (launcher_dir: the directory of the
    native command, resolved; each install has entries of its own)."""
    parts = ["isolate-plan", _launch.BUILD_ID, launcher_dir, str(os.geteuid()), str(os.getegid()), profile_arg,
             str(len(overrides)), *overrides, cwd]
    return b"".join(os.fsencode(p) + b"\0" for p in parts)


def entry_path(key: bytes) -> str | None:
    d = cache_dir()
    return None if d is None else os.path.join(d, f"{fnv64(key):016x}.plan")


def not_native(plan: Plan, profile) -> str | None:
    """Why the native launcher must not launch `plan` (None: it may)."""
    if plan.pty:
        return "fds.pty"
    if plan.netns_fd >= 0 or plan.network_mode not in ("none", "host"):
        return f"network.mode = {plan.network_mode!r}"
    if plan.pass_fds:
        return "fds.pass"
    if tuple(plan.stdio) != ("inherit", "inherit", "inherit"):
        return "fds.stdin/stdout/stderr"
    if plan.enforcement not in ("namespaces", "both"):
        return f"filesystem enforced by {plan.enforcement}"
    if plan.cgroup_mode not in (None, "v1", "v2", "rlimits"):
        return f"cgroup mode {plan.cgroup_mode!r}"
    if profile.data["seccomp"].get("oci") is not None:
        return "seccomp.oci"
    if not profile.files:
        return "a profile without files"
    return None


def _rec(tag: int, data: bytes) -> bytes:
    return struct.pack("=II", tag, len(data)) + data


def _z(s) -> bytes:
    return os.fsencode(s) + b"\0"


def _stat_rec(path: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _rec(DEP_ABSENT, _z(path))
    return _rec(DEP_STAT, struct.pack("=QQQq", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) + _z(path))


def _file_rec(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return _rec(DEP_ABSENT, _z(path))
    return _rec(DEP_FILE, _z(path) + content + b"\0")


def _sources() -> list:
    """isolate's own files a plan depends on: the Python of the layers that make it, the binaries."""
    out = [str(_PKG / "__init__.py"), str(_PKG / "errors.py"), os.path.abspath(_launch.__file__), pid1.INIT_PATH]
    for sub in ("kernel", "profile", "plan", "plan/seccomp", "launch", "netproxy"):
        d = _PKG / sub
        out += sorted(str(p) for p in d.glob("*.py"))
    cli = _PKG.parent / "cli" / "main.py"
    if cli.exists():
        out.append(str(cli))
    return out


def _host_paths(plan: Plan) -> list:
    """The host paths the view was compiled from: what fs.py looked at (bind sources, the
    symlinks it copies, the paths it hides) and the Landlock rules' paths."""
    out = {}
    for op in plan.mount_ops:
        for p in (op.a, op.b):
            p = os.fsdecode(p) if isinstance(p, bytes) else p
            for prefix in (fs_mod.OLD, fs_mod.NEW):
                if isinstance(p, str) and p.startswith(prefix + "/"):
                    out[p[len(prefix):]] = None
    for rule in plan.landlock_rules:
        out[os.fsdecode(rule[0])] = None
    return list(out)


def _type_rec(path: str) -> bytes:
    try:
        st = os.lstat(path)
    except OSError:
        return _rec(DEP_TYPE, struct.pack("=I", 0) + _z(path) + _z(""))
    target = os.readlink(path) if stat_mod.S_ISLNK(st.st_mode) else ""
    return _rec(DEP_TYPE, struct.pack("=I", stat_mod.S_IFMT(st.st_mode)) + _z(path) + _z(target))


def _absent_names(files) -> list:
    """Names looked up on the profile path before the file found: they must stay absent."""
    out = []
    dirs = loader.profile_dirs()
    for f in files:
        f = Path(f)
        cands = []
        for d in dirs:
            c = d / f"{f.stem}.toml"
            try:
                if c.is_file():
                    if c.resolve() != f:
                        cands = []  # found elsewhere first: this file was named by path
                    break
            except OSError:
                pass
            cands.append(str(c))
        else:
            cands = []  # not on the profile path: named by path
        out += cands
    return out


def entry(key: bytes, profile, plan: Plan) -> bytes:
    """The bytes of a cache file for `plan` (made from `profile`), checked by _cli.c."""
    recs = [_rec(KEY, key)]
    for name in ENV_DEPS:
        v = os.environ.get(name)
        recs.append(_rec(DEP_ENV, struct.pack("=I", v is not None) + _z(name) + _z(v or "")))
    recs += [_file_rec(str(f)) for f in profile.files]
    recs += [_rec(DEP_ABSENT, _z(p)) for p in _absent_names(profile.files)]
    recs += [_file_rec(p) for p in KERNEL_FILES]
    recs += [_stat_rec(p) for p in _sources()]
    if plan.host_ids:
        recs += [_stat_rec(p) for p in ACCOUNT_FILES]
    recs += [_type_rec(p) for p in _host_paths(plan)]
    recs.append(_rec(PLAN, _launch.plan_bytes(plan.capsule)))
    version = {"v1": 1, "v2": 2}.get(plan.cgroup_mode or "", 0)
    recs.append(_rec(LAUNCH, LAUNCH_STRUCT.pack(int(plan.use_init), int(plan.pidns), int(plan.die_with_parent),
                                                int(plan.host_ids), plan.inside_uid, plan.inside_gid, version,
                                                int(plan.env_clear), len(plan.mount_ops), *([0] * 7))))
    recs.append(_rec(INIT_PATH, _z(pid1.INIT_PATH)))
    recs.append(_rec(CWD, _z(plan.cwd)))
    recs += [_rec(ENV_KEEP, _z(k)) for k in plan.env_keep]
    recs += [_rec(ENV_SET, _z(k) + _z(v)) for k, v in plan.env_set]
    if version:
        for parent, writes, move in cgroup.planned(plan.cgroup_mode, dict(plan.cgroup_dirs),
                                                   plan.cgroup or {"pids_max": "max"}):
            ctrl, point, root = move or ("", "", "")
            recs.append(_rec(CGROUP, _z(parent) + _z(ctrl) + _z(point) + _z(root)
                             + b"".join(_z(f) + _z(v) for f, v in writes)))
        if "memory_max" in (plan.cgroup or {}):
            recs.append(_rec(OOM_TEXT, _z(str(plan.cgroup.get("memory_max")))))
    for i, src, why in plan.idmap_binds:
        recs.append(_rec(IDMAP, struct.pack("=ii", i, 1 if why else 0) + _z(src)))
    body = b"".join(recs)
    return HEADER.pack(MAGIC, _launch.PC_VERSION, HEADER.size + len(body), checksum(body)) + body


def _own_dir(d: str) -> bool:
    """The cache directory: made 0700 if missing; used only if it is the caller's and private."""
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return False
    return stat_mod.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


MAX_ENTRIES = 512  # more, and the oldest go (one file per profile argument, --set list and directory)


def launcher_dir(argv0: str) -> str | None:
    """The directory of the native command that ran us, if we are its isolate-py."""
    if os.path.basename(argv0) != "isolate-py":
        return None
    return os.path.realpath(os.path.dirname(os.path.abspath(argv0)))


def _prune(d: str) -> None:
    try:
        names = [n for n in os.listdir(d) if n.endswith(".plan")]
        if len(names) <= MAX_ENTRIES:
            return
        by_age = sorted(names, key=lambda n: os.stat(os.path.join(d, n)).st_mtime_ns)
        for n in by_age[:len(names) - MAX_ENTRIES]:
            os.unlink(os.path.join(d, n))
    except OSError:
        pass


def store(profile_arg: str, overrides, cwd_arg, profile, plan: Plan, argv0: str) -> str | None:
    """Store `plan` for the native launcher; its path, or None where it is not stored
    (not run by a native command, not native-launchable, no usable cache directory, any
    error: the CLI just stays slower)."""
    try:
        launcher = launcher_dir(argv0)
        if launcher is None or not_native(plan, profile):
            return None
        cwd = os.path.abspath(cwd_arg) if cwd_arg is not None else os.getcwd()
        key = key_bytes(profile_arg, list(overrides), cwd, launcher)
        path = entry_path(key)
        if path is None or not _own_dir(os.path.dirname(path)):
            return None
        data = entry(key, profile, plan)
        # The files just read must be the ones the plan was compiled from (load_profile
        # reloads a profile whose files changed since).
        if load_profile(profile_arg, list(overrides)).hash != plan.profile_hash:
            return None
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
            _prune(os.path.dirname(path))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path
    except Exception:  # a cache that cannot be written is only slower
        return None
