"""Profile -> Plan: everything that is the same for every launch of a profile, once.

A Plan is immutable and cached by the profile's content hash plus what its
placeholders and id maps resolve to for this caller (cwd, home, uid, gid). The
second launch of a profile compiles nothing: it finds the Plan here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import threading
import types
from collections import OrderedDict
from typing import Mapping

from . import _launch
from .errors import ProfileError, UnsupportedError

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "cgroup": CLONE_NEWCGROUP,
}

RLIMITS = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "nproc": 6, "nofile": 7, "memlock": 8, "as": 9,
}
RLIMIT_NAMES = {v: k for k, v in RLIMITS.items()}
RLIM_INFINITY = 2**64 - 1

MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A compiled profile, ready to launch many times."""

    key: str                      # cache key: profile hash + caller-dependent inputs
    profile_name: str
    profile_hash: str
    clone_flags: int
    use_init: bool
    pidns: bool
    die_with_parent: bool
    uid_map: str | None
    gid_map: str | None
    inside_uid: int
    inside_gid: int
    hostname: str | None
    rlimits: tuple                # ((resource, soft, hard), ...)
    keep_caps: tuple
    cwd: str
    env_clear: bool
    env_set: tuple                # ((name, value), ...)
    env_keep: tuple               # names or globs
    stdio: tuple                  # (stdin, stdout, stderr) profile values
    pass_fds: tuple
    bpf: bytes | None
    mount_ops: tuple
    capsule: object = dataclasses.field(repr=False)
    bpf_fd: int = -1              # sealed memfd holding bpf, for the sandbox's pid 1
    netns_fd: int = -1            # network namespace joined around the clone (mode "netns")
    mntns_fd: int = -1            # template mount namespace the launcher joins around the clone
    # Root caller without identity.uid_map/gid_map: the program runs as a host uid/gid of
    # its own (hostids.allocate per launch), mapped "inside_uid S 1" / "inside_gid S 1".
    host_ids: bool = False
    idmap_binds: tuple = ()       # ((op index, host source, why it cannot be idmapped or ""), ...)
    network_mode: str = "none"
    netns_pool: bool = False       # take the namespace from net.pool() at launch
    enforcement: str = "namespaces"  # how the filesystem view is enforced
    landlock_rules: tuple = ()
    # [cgroup]: the limits set ({"memory_max": bytes, "pids_max": n}, only the set keys),
    # how they are enforced ("v2" | "v1" | "rlimits" | None = no limits) and, for
    # v2/v1, controller -> the directory whose isolate/ subdirectory holds the cgroups.
    cgroup: Mapping = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    cgroup_mode: str | None = None
    cgroup_dirs: tuple = ()
    pty: bool = False             # fds.pty: 0/1/2 are a fresh pty, the program's controlling terminal
    shell: str = "/bin/sh"        # process.shell: what Popen(shell=True) runs as SHELL -c COMMAND

    def environment(self, caller_env: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict:
        """The program's environment: cleared (or the caller's), + kept names, + set, + extra."""
        caller_env = os.environ if caller_env is None else caller_env
        env = {} if self.env_clear else dict(caller_env)
        for pattern in self.env_keep:
            for name, value in caller_env.items():
                if fnmatch.fnmatchcase(name, pattern):
                    env[name] = value
        env.update(self.env_set)
        if extra:
            env.update(extra)
        return env

    def __del__(self):
        for fd in (self.bpf_fd, self.netns_fd, self.mntns_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _resolve_placeholders(text: str, values: Mapping[str, str], key: str, file: str | None) -> str:
    try:
        return text.format_map(values)
    except (KeyError, ValueError, IndexError) as e:
        raise ProfileError(f"cannot resolve placeholders in {text!r}: {e}", file=file, key=key) from None


def _map_text(entries) -> str:
    return "".join(f"{i} {o} {c}\n" for i, o, c in entries)


def _in_map(value: int, entries) -> bool:
    return any(i <= value < i + c for i, o, c in entries)


def _id_maps(ns: Mapping, ident: Mapping, euid: int, egid: int, file):
    """uid/gid maps and the setresuid/setresgid the child must make.

    Unprivileged callers map exactly their own ids (the kernel allows nothing more);
    root may map ranges, written by the parent into /proc/PID/{uid,gid}_map.
    """
    uid_ranges = [tuple(e) for e in ident.get("uid_map") or ()]
    gid_ranges = [tuple(e) for e in ident.get("gid_map") or ()]
    want_uid, want_gid = ident.get("uid"), ident.get("gid")
    if not ns["user"]:
        if uid_ranges or gid_ranges:
            raise ProfileError("uid_map/gid_map need namespaces.user = true", file=file, key="identity.uid_map")
        set_uid = want_uid if want_uid is not None and want_uid != euid else -1
        set_gid = want_gid if want_gid is not None and want_gid != egid else -1
        if (set_uid >= 0 or set_gid >= 0) and euid != 0:
            raise UnsupportedError("identity.uid", "changing uid/gid without a user namespace needs root")
        return (None, None, False, set_uid, set_gid, euid if set_uid < 0 else set_uid,
                egid if set_gid < 0 else set_gid, False)
    if (uid_ranges or gid_ranges) and euid != 0:
        raise UnsupportedError("identity.uid_map", "mapping ranges needs root (CAP_SETUID); an unprivileged "
                               "caller can map only its own uid")
    if uid_ranges:
        inside_uid = 0 if want_uid is None else want_uid
        if not _in_map(inside_uid, uid_ranges):
            raise ProfileError(f"uid {inside_uid} is not mapped by identity.uid_map", file=file, key="identity.uid")
        uid_map, set_uid = _map_text(uid_ranges), inside_uid
    else:
        inside_uid = euid if want_uid is None else want_uid
        uid_map, set_uid = f"{inside_uid} {euid} 1\n", -1
    if gid_ranges:
        inside_gid = 0 if want_gid is None else want_gid
        if not _in_map(inside_gid, gid_ranges):
            raise ProfileError(f"gid {inside_gid} is not mapped by identity.gid_map", file=file, key="identity.gid")
        gid_map, set_gid = _map_text(gid_ranges), inside_gid
    else:
        inside_gid = egid if want_gid is None else want_gid
        gid_map, set_gid = f"{inside_gid} {egid} 1\n", -1
    deny_setgroups = euid != 0
    # Ranges that leave the caller's own ids unmapped: the child first becomes uid 0
    # of the namespace, which must then be mapped.
    become_root = bool(uid_ranges and not any(o <= euid < o + c for i, o, c in uid_ranges)) or \
        bool(gid_ranges and not any(o <= egid < o + c for i, o, c in gid_ranges))
    if become_root and not (_in_map(0, uid_ranges or [(euid, euid, 1)]) and _in_map(0, gid_ranges or [(egid, egid, 1)])):
        raise ProfileError("the maps must cover the caller's own id or inside id 0", file=file,
                           key="identity.uid_map")
    return uid_map, gid_map, deny_setgroups, set_uid, set_gid, inside_uid, inside_gid, become_root


def _rlimits(section: Mapping) -> tuple:
    out = []
    for name, value in section.items():
        if value is None:
            continue
        soft, hard = value
        soft = RLIM_INFINITY if soft == "unlimited" else int(soft)
        hard = RLIM_INFINITY if hard == "unlimited" else int(hard)
        out.append((RLIMITS[name], soft, hard))
    return tuple(out)


def _sealed_memfd(data: bytes) -> int:
    fd = os.memfd_create("isolate-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd


_cache: "OrderedDict[str, Plan]" = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 64
stats = {"compiled": 0, "hits": 0}


def caller_context(cwd: str | None = None) -> dict:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return {"cwd": cwd or os.getcwd(), "home": home, "uid": str(os.geteuid()), "gid": str(os.getegid())}


def compile_profile(profile, cwd: str | None = None) -> Plan:
    """The Plan of `profile` for this caller; cached by content, compiled at most once."""
    ctx = caller_context(cwd)
    # What doctor.features() may report differently (ISOLATE_DOCTOR_DISABLE) changes the plan.
    disabled = os.environ.get("ISOLATE_DOCTOR_DISABLE", "")
    # The profile names an OCI seccomp file by path: its content is part of the plan.
    oci = None
    if profile.data["seccomp"].get("oci") is not None:
        from . import seccomp

        oci = seccomp.oci_digest(dict(profile.data["seccomp"]), ctx)
    key = hashlib.sha256(repr((profile.hash, sorted(ctx.items()), disabled, oci)).encode()).hexdigest()
    with _cache_lock:
        plan = _cache.get(key)
        if plan is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return plan
    plan = _compile(profile, ctx, key)
    with _cache_lock:
        stats["compiled"] += 1
        _cache[key] = plan
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return plan


def _compile(profile, ctx: Mapping[str, str], key: str) -> Plan:
    data = profile.data
    file = profile.files[0] if getattr(profile, "files", None) else profile.name
    ns = data["namespaces"]
    ident = data["identity"]
    proc = data["process"]
    euid, egid = os.geteuid(), os.getegid()

    flags = 0
    for name, flag in NAMESPACE_FLAGS.items():
        if ns[name]:
            flags |= flag
    if flags & ~CLONE_NEWUSER and not ns["user"] and euid != 0:
        first = next(n for n in NAMESPACE_FLAGS if ns[n] and n != "user")
        raise UnsupportedError(f"namespaces.{first}", "a namespace without namespaces.user = true needs root")

    enforce = _enforcement(data, euid)
    if enforce == "landlock" and ns["user"] and euid == 0 and not ident.get("uid_map") and not ident.get("gid_map"):
        # On the host's tree a program mapped to host root owns every root-owned inode
        # (Landlock does not cover chmod or chown): map it to the reserved ids instead.
        ident = dict(ident, uid_map=_base_map(ident.get("uid")), gid_map=_base_map(ident.get("gid")))
    uid_map, gid_map, deny_setgroups, set_uid, set_gid, inside_uid, inside_gid, become_root = _id_maps(
        ns, ident, euid, egid, file)
    hostname = ident.get("hostname")
    if hostname is not None and not ns["uts"]:
        raise ProfileError("setting a hostname needs namespaces.uts = true", file=file, key="identity.hostname")

    keep = tuple(data["capabilities"]["keep"])
    from .profile import CAPABILITIES

    last_cap = _last_cap()
    keep_mask = 0
    for cap in keep:
        bit = CAPABILITIES[cap]
        if bit > last_cap:
            raise UnsupportedError("capabilities.keep", f"{cap} is not known to this kernel")
        keep_mask |= 1 << bit

    from . import seccomp

    # An OCI seccomp profile (seccomp.oci) is read and translated here: its
    # includes/excludes.caps need the capabilities kept, its path the placeholders.
    spec = seccomp.oci_spec(dict(_plain(data["seccomp"])), caps=keep, ctx=ctx, file=file)
    try:
        bpf = seccomp.compile_filter(spec)
    except ValueError as e:  # e.g. a file whose argument rules are too complex
        if "oci_source" not in spec or isinstance(e, ProfileError):
            raise
        raise ProfileError(str(e), file=spec["oci_source"]["path"]) from None

    cwd = _resolve_placeholders(proc["cwd"], ctx, "process.cwd", file)
    if not cwd.startswith("/"):
        raise ProfileError(f"expected an absolute path, got {cwd!r}", file=file, key="process.cwd")

    if enforce in ("landlock", "landlock-only"):
        # Landlock on the host's tree: every field is applied or the launch fails
        # closed naming it (landlock_fields says which, and how).
        for field, verdict, why in landlock_fields(data, euid, enforce):
            if verdict != "refused":
                continue
            if enforce == "landlock-only" or field in _RUNTIME_REFUSALS:
                raise UnsupportedError(field, why)
            raise ProfileError(why, file=file, key=field)
    if enforce == "landlock-only":
        # enforce = "either" where user namespaces cannot be had: no namespaces at all;
        # the filesystem is confined by Landlock alone (the profile accepted this).
        ns = {name: False for name in ns}
        flags = 0
        uid_map = gid_map = None
        deny_setgroups, become_root = False, False
        hostname = None  # refused above where the profile sets one
        set_uid, set_gid, inside_uid, inside_gid = _host_ids(ident, euid, egid)
        mode = "netns" if data["network"]["mode"] == "netns" else "host"
        data = dict(data, namespaces=ns, network=dict(data["network"], mode=mode),
                    filesystem=dict(data["filesystem"], enforce="landlock"))
    elif enforce == "landlock" and not ns["user"]:
        set_uid, set_gid, inside_uid, inside_gid = _host_ids(ident, euid, egid)
    # Root's own ids mapped in would make the program host root (owner of every root-owned
    # inode the view binds in): it gets an unprivileged host id of its own per launch, and
    # the binds of a new view are idmapped to it. (The host's own tree, view = "host" or
    # Landlock alone, has no binds to idmap: there the caller's ids stay mapped.)
    host_ids = (bool(ns["user"]) and euid == 0 and not ident.get("uid_map") and not ident.get("gid_map")
                and bool(ns["mount"]) and data["filesystem"]["view"] == "new" and enforce in ("namespaces", "both"))
    if host_ids:
        uid_map = gid_map = None
    ops = _mount_ops(data, ns, ctx, file)
    landlock_rules = _landlock(data, ctx, file)
    flags, loopback, netns_fd, net_mode = _network(data, flags, euid, file)
    rlimits = _rlimits(data["rlimits"])
    cg_limits, cg_mode, cg_dirs, cg_why = _cgroup(data["cgroup"], track=not ns["pid"])
    if cg_mode == "rlimits":
        rlimits = _rlimit_fallback(rlimits, cg_limits)
    pidns = bool(ns["pid"])
    die = bool(proc["die_with_parent"])
    use_init = pidns or die

    capsule = _launch.make_plan(
        clone_flags=flags,
        uid_map=uid_map.encode() if uid_map else None,
        gid_map=gid_map.encode() if gid_map else None,
        deny_setgroups=deny_setgroups,
        set_uid=set_uid,
        set_gid=set_gid,
        clear_groups=(euid == 0 and not (ns["user"] and deny_setgroups)),
        hostname=hostname.encode() if hostname else None,
        loopback=loopback,
        rlimits=list(rlimits),
        no_new_privs=bool(proc["no_new_privs"]),
        drop_caps=True,
        keep_caps=keep_mask,
        last_cap=last_cap,
        bpf=bpf,
        use_init=use_init,
        die_with_parent=die,
        netns_fd=netns_fd,
        ops=[op.as_tuple() for op in ops],
        become_root=become_root,
        landlock=landlock_rules,
        launch_ids=host_ids,
    )
    env = data["env"]
    fds = data["fds"]
    plan = Plan(
        key=key,
        profile_name=profile.name,
        profile_hash=profile.hash,
        clone_flags=flags,
        use_init=use_init,
        pidns=pidns,
        die_with_parent=die,
        uid_map=uid_map,
        gid_map=gid_map,
        inside_uid=inside_uid,
        inside_gid=inside_gid,
        hostname=hostname,
        rlimits=rlimits,
        keep_caps=keep,
        cwd=cwd,
        env_clear=bool(env["clear"]),
        env_set=tuple(sorted(env["set"].items())),
        env_keep=tuple(env["keep"]),
        stdio=(fds["stdin"], fds["stdout"], fds["stderr"]),
        pass_fds=tuple(fds["pass"]),
        bpf=bpf,
        mount_ops=tuple(ops),
        capsule=capsule,
        bpf_fd=_sealed_memfd(bpf) if (bpf and use_init) else -1,
        netns_fd=netns_fd,
        mntns_fd=_template(data, ops),
        host_ids=host_ids,
        idmap_binds=_idmap_binds(ops) if host_ids else (),
        network_mode=net_mode,
        # A pooled namespace belongs to the caller's user namespace, where kept
        # capabilities (CAP_NET_BIND_SERVICE, ...) would not apply: no pool then.
        netns_pool=net_mode == "none" and bool(data["network"]["pool"]) and not keep,
        enforcement=enforce,
        landlock_rules=tuple(landlock_rules[4]) if landlock_rules else (),
        cgroup=types.MappingProxyType(cg_limits),
        cgroup_mode=cg_mode,
        cgroup_dirs=cg_dirs,
        pty=bool(fds["pty"]),
        shell=proc["shell"],
    )
    check_nofile(plan, plan.pass_fds, file=profile.name)
    # Fail closed: whatever this plan asks of the kernel must be there.
    from . import doctor

    doctor.check(plan)
    if cg_limits and cg_mode is None:  # the doctor saw a cgroup, but none can be used as asked
        raise UnsupportedError(f"cgroup.{next(iter(cg_limits))}", f"no usable cgroup here ({cg_why})")
    return plan


RLIMIT_NOFILE = 7


def nofile_needed(plan: "Plan", pass_fds=(), warm: bool = False) -> int:
    """The lowest RLIMIT_NOFILE soft limit with which a launch of `plan` can start a
    program whose fd table is 0, 1, 2 and `pass_fds` (0 = no constraint).

    The limit is set in the launch child after the program's table and the private
    fds are in place (at fixed slots right after the table, PRIV_* in _launch.c);
    what has to be opened after that must get a number below it. Every new fd takes
    the lowest free number, so this replays those allocations:
      * the launch child (with Landlock): the ruleset and one O_PATH fd at a time;
      * isolate-init: its signalfd and the pipe to the program (the seccomp memfd is
        closed by then, its own binary's fd closed by its exec);
      * a warm isolate-init (the table arrives with the task, under the limit): the
        received fds, its own fds moved above the table, the table itself, the pipe.
    """
    fds = {0, 1, 2} | {int(f) for f in pass_fds}
    top = max(fds) + 1
    held: set = set()
    high = [0]

    def alloc(lowest: int = 0) -> int:
        fd = lowest
        while fd in held:
            fd += 1
        held.add(fd)
        high[0] = max(high[0], fd + 1)
        return fd

    cgroup_fd = plan.use_init and not plan.pidns and plan.die_with_parent and plan.cgroup_mode in ("v1", "v2")
    landlock = plan.enforcement != "namespaces"

    def start(table: set, first: int) -> dict:
        """The table after the launch child's fd step, and the private slots in use."""
        held.clear()
        held.update(table)
        slots = {"status": first}
        if plan.use_init:
            slots.update(init=first + 4)
            if plan.die_with_parent:
                slots["pidfd"] = first + 1
            if plan.bpf_fd >= 0:
                slots["bpf"] = first + 2
            if cgroup_fd:
                slots["cgroup"] = first + 3
        held.update(slots.values())
        return slots

    def child_and_init_start(table: set, first: int) -> dict:
        slots = start(table, first)
        if landlock:  # in the launch child, after its rlimits
            rs = alloc()
            held.discard(alloc())
            held.discard(rs)
        if plan.use_init:  # isolate-init's exec closed its binary's fd; it reads and closes the memfd
            held.discard(slots.pop("init"))
            held.discard(slots.pop("bpf", -1))
        return slots

    if not warm:
        high[0] = 0
        child_and_init_start(fds, top)
        if plan.use_init:
            alloc(), alloc(), alloc()  # signalfd, pipe2
        return high[0]
    # Warm: launched with the table 0, 1, 2 (the task socket, /dev/null); the task's
    # own table is laid out later by isolate-init, under the limit.
    slots = child_and_init_start({0, 1, 2}, 3)
    own = [slots[k] for k in ("status", "cgroup", "pidfd") if k in slots]
    own.append(alloc())  # signalfd
    received = [alloc() for _ in fds]
    for fd in own + received:  # move_up(fd, top): a copy at >= top, then the old one goes
        alloc(top)
        held.discard(fd)
    for fd in list(held):
        if fd < top:
            held.discard(fd)
    held.update(fds)
    high[0] = max(high[0], top)  # dup2 onto the table's numbers
    alloc(), alloc()  # pipe2
    return high[0]


def check_nofile(plan: "Plan", pass_fds=(), warm: bool = False, file=None, what: str = "") -> None:
    """ProfileError naming rlimits.nofile when its soft limit is below nofile_needed()."""
    soft = next((s for r, s, _h in plan.rlimits if r == RLIMIT_NOFILE), None)
    if soft is None or soft == RLIM_INFINITY or soft < 0:
        return
    need = nofile_needed(plan, pass_fds, warm)
    if soft >= need:
        return
    passed = sorted({int(f) for f in pass_fds})
    table = "0-2" + (f" and {', '.join(map(str, passed))}" if passed else "")
    init = " plus isolate-init's private fds" if plan.use_init else " plus the status pipe"
    raise ProfileError(f"{soft} is below what the launch needs: at least {need} (the program's fds {table}{init}"
                       f"{', in a warm sandbox' if warm else ''}){what}", file=file, key="rlimits.nofile")


def _cgroup(section: Mapping, track: bool) -> tuple:
    """(limits set, mode "v2"/"v1"/"rlimits"/None, ((controller, base dir), ...), why no cgroup).

    track: without a pid namespace nothing else holds the whole process tree (a daemon
    that called setsid leaves the process group), so where a cgroup can be had, the
    sandbox gets one without limits, and killing the sandbox empties it."""
    limits = {k: section[k] for k in ("memory_max", "memory_swap_max", "pids_max") if section.get(k) is not None}
    from . import cgroup

    if not limits:
        if not track:
            return limits, None, (), ""
        version, dirs, why = cgroup.find(("pids",))
        return limits, version, tuple(sorted(dirs.items())), why

    version, dirs, why = cgroup.find(cgroup.controllers(limits))
    if version is None and section["fallback"] == "rlimits":
        return limits, "rlimits", (), why
    return limits, version, tuple(sorted(dirs.items())), why


def _rlimit_fallback(rlimits: tuple, limits: Mapping) -> tuple:
    """memory_max -> RLIMIT_AS, pids_max -> RLIMIT_NPROC (the lower, where the profile sets one too)."""
    out = {r: (s, h) for r, s, h in rlimits}
    for key, res in (("memory_max", RLIMITS["as"]), ("pids_max", RLIMITS["nproc"])):
        if key in limits:
            soft, hard = out.get(res, (RLIM_INFINITY, RLIM_INFINITY))
            out[res] = (min(soft, limits[key]), min(hard, limits[key]))
    return tuple((r, s, h) for r, (s, h) in out.items())


def _plain(obj):
    """Deep copy of read-only profile data into plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


@dataclasses.dataclass(frozen=True)
class MountOp:
    """One step of building the filesystem view, applied in order by the launch child."""

    kind: int
    a: str | None = None
    b: str | None = None
    c: str | None = None
    d: bytes | None = None
    flags: int = 0
    num: int = 0
    source: str = ""  # the profile entry it came from, for error messages

    def as_tuple(self):
        enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
        return (self.kind, enc(self.a), enc(self.b), enc(self.c), self.d, self.flags, self.num)

    def describe(self) -> str:
        names = {v: k for k, v in vars(_launch).items() if k.startswith("OP_")}
        parts = [names.get(self.kind, str(self.kind))]
        parts += [repr(x) for x in (self.a, self.b, self.c) if x is not None]
        if self.flags:
            parts.append(f"flags={self.flags:#x}")
        return " ".join(parts)


def _mount_ops(data, ns, ctx, file) -> list:
    """The mount operations: a private / first, then the filesystem view (fs.py)."""
    if not ns["mount"]:
        if data["filesystem"]["view"] != "host" and data["filesystem"]["enforce"] in ("namespaces", "both"):
            raise ProfileError('filesystem.view = "new" needs namespaces.mount = true', file=file,
                               key="filesystem.view")
        return []
    from . import fs

    # Our mount events must never propagate back to the host.
    ops = [MountOp(_launch.OP_MOUNT, None, "/", None, None, MS_REC | MS_PRIVATE, 0, "namespaces.mount")]
    if data["filesystem"]["enforce"] == "landlock":
        view = dict(data["filesystem"], view="host")
        return ops + fs.mount_ops(dict(data, filesystem=view), ns, ctx, file)
    return ops + fs.mount_ops(data, ns, ctx, file)


def _userns_possible(euid: int) -> bool:
    """Can this caller create user namespaces here (what the profiles are built on)."""
    from . import doctor

    return doctor.features()["user_namespaces"].available


def _enforcement(data, euid: int) -> str:
    """namespaces | landlock | both | landlock-only (enforce = "either" without namespaces)."""
    fs = data["filesystem"]
    if fs["view"] == "host":
        return "namespaces"
    enforce = fs["enforce"]
    if enforce == "either":
        return "namespaces" if _userns_possible(euid) else "landlock-only"
    return enforce


def _base_map(want) -> list:
    """An id map whose inside id `want` (default 0) is hostids.BASE; inside 0 is always
    mapped (the launch child switches to it first), to BASE + 1 where it is not `want`."""
    from .hostids import BASE

    if want is None or want == 0:
        return [(0, BASE, 1)]
    return [(0, BASE + 1, 1), (want, BASE, 1)]


def _host_ids(ident: Mapping, euid: int, egid: int) -> tuple:
    """(set_uid, set_gid, uid, gid) of a program without a user namespace under Landlock.

    A root caller's program never stays host root (it would own every root-owned host
    inode, /dev/null included): it runs as the profile's uid/gid, else as
    hostids.BASE. landlock_fields refuses uid/gid 0 and, for others, changes."""
    from .hostids import BASE

    def pick(want, own):
        if euid == 0:
            return BASE if want is None else want
        return own if want is None else want

    uid, gid = pick(ident.get("uid"), euid), pick(ident.get("gid"), egid)
    return (uid if uid != euid else -1, gid if gid != egid else -1, uid, gid)


# Refusals that depend on the caller (root or not), not on the profile alone.
_RUNTIME_REFUSALS = {"identity.uid", "identity.gid", "capabilities.keep"}


def landlock_fields(data: Mapping, euid: int, mode: str, everything: bool = False) -> list:
    """What Landlock enforcement on the host's tree does with each profile field.

    mode "landlock-only": enforce = "either" where this caller cannot create user
    namespaces, so no namespace at all; "landlock": enforce = "landlock", with the
    namespaces the profile asks for (a mount namespace, but the host's tree in it).
    Returns [(field, verdict, how)], verdict "applied", "refused" (the launch fails
    closed naming the field), "not used" or "not covered". Fields left at values that
    ask nothing are listed only with everything=True (doctor's table)."""
    from .hostids import BASE

    fs, ident, net = data["filesystem"], data["identity"], data["network"]
    only = mode == "landlock-only"
    asked_ns = data["namespaces"]
    ns = {n: False for n in asked_ns} if only else dict(asked_ns)
    here = " (no user namespaces here: Landlock-only mode)" if only else ""
    out: list = []

    def put(field, verdict, how, when=True):
        if when or everything:
            out.append((field, verdict, how))

    if only:
        put("namespaces", "not used", "no namespace at all (enforce = \"either\" accepts that): the program "
            "shares the host's processes, network, IPC, hostname and mount table")
        from . import landlock

        abi = landlock.available()
        if abi and abi < 6 and (asked_ns["pid"] or asked_ns["net"]):
            put("namespaces.pid" if asked_ns["pid"] else "namespaces.net", "refused",
                f"without pid and network namespaces, Landlock ABI 6 must scope signals and abstract unix "
                f"sockets; this kernel has ABI {abi}")
        else:
            put("namespaces.pid", "not used", "in its place Landlock scopes signals and abstract unix sockets to "
                "the sandbox, and /proc is not granted: host processes can be neither signalled nor listed")
    else:
        put("namespaces", "applied", "as the profile says; the mount namespace shows the host's tree")
    if ns["user"]:
        for key in ("uid_map", "gid_map"):
            put(f"identity.{key}", "refused", "maps host id 0: on the host's tree the program would own every "
                "root-owned inode (Landlock does not cover chmod or chown)",
                any(o <= 0 < o + c for _i, o, c in ident[key] or ()))
        for key in ("uid", "gid"):
            if euid == 0 and not ident["uid_map"] and not ident["gid_map"]:
                put(f"identity.{key}", "applied", f"inside the user namespace, mapped to host {key} {BASE} "
                    f"(isolate.hostids.BASE): a root caller's program never has host root's ownership")
            else:
                put(f"identity.{key}", "applied", "inside the user namespace", ident[key] is not None)
    else:
        for key in ("uid_map", "gid_map"):
            put(f"identity.{key}", "refused", f"needs a user namespace{here}", bool(ident[key]))
        for key in ("uid", "gid"):
            want = ident[key]
            own = euid if key == "uid" else os.getegid()
            if euid == 0 and want is None:
                put(f"identity.{key}", "applied", f"a root caller's program runs as host {key} {BASE} "
                    f"(isolate.hostids.BASE, no supplementary groups), never as host root: it can read and "
                    f"write only what that {key} may")
            elif euid == 0 and want == 0:
                put(f"identity.{key}", "refused", f"{key} 0 without a user namespace would be host root{here}")
            elif euid == 0:
                put(f"identity.{key}", "applied", f"host {key} {want}")
            elif want is None or want == own:
                put(f"identity.{key}", "applied", f"the caller's own {key} {own}", want is not None or everything)
            else:
                put(f"identity.{key}", "refused", f"changing the {key} without a user namespace needs root{here}")
    if ident["hostname"] is not None or everything:
        if ns["uts"]:
            put("identity.hostname", "applied", "in the UTS namespace")
        else:
            put("identity.hostname", "refused", f"setting a hostname needs a UTS namespace{here}")
    if only:
        put("capabilities.keep", "refused", "without a user namespace kept capabilities would be the host's",
            bool(data["capabilities"]["keep"]))
    mode_ = net["mode"]
    if not only:
        put("network.mode", "applied", "as the profile says", mode_ is not None)
    elif mode_ == "none" or (everything and mode_ is None):
        put("network.mode", "refused", f"\"none\" needs a network namespace{here}; set network.mode = \"host\" "
            "to accept the host's network", mode_ == "none")
    elif mode_ == "netns":
        put("network.mode", "applied", "\"netns\": joins the named network namespace (root with CAP_SYS_ADMIN only)")
    if only:
        put("network.mode", "applied", ('"host" or absent: ' if everything else "") + "the host's network"
            + (" (namespaces.net is not used)" if mode_ is None else ""), mode_ in (None, "host"))
    put("filesystem.ro", "applied", "Landlock rules on the host's paths (source must equal target)",
        bool(fs["ro"]))
    put("filesystem.rw", "applied", "Landlock rules on the host's paths; writable only where the program's "
        "uid may write", bool(fs["rw"]))
    put("filesystem.hide", "applied", "the parent of a hidden path gets no rule of its own; its other entries "
        "(as they are when the profile is compiled: entries created there later are not reachable) each get "
        "the parent's rights; nothing can be created or removed in that parent, and it can be listed only if "
        "no hidden directory lies beneath it", bool(fs["hide"]))
    put("filesystem.tmpfs", "refused", "a private tmpfs needs a mount namespace with a new root; Landlock "
        "alone cannot give one", bool(fs["tmpfs"]))
    if ns["pid"] and ns["mount"]:
        put("filesystem.proc", "applied", "/proc of the sandbox's own pid namespace, over the host's",
            bool(fs["proc"]))
    else:
        put("filesystem.proc", "refused", "the host's /proc would show every host process; /proc of the "
            f"sandbox's own needs namespaces.pid and namespaces.mount{here}", bool(fs["proc"]))
    put("filesystem.dev", "applied", "the host's /dev/null, zero, full, random, urandom and tty only; no "
        "/dev/shm, /dev/pts or /dev/fd links", bool(fs["dev"]))
    for key, what in (("dirs", "directories"), ("symlinks", "symlinks"), ("files", "files")):
        put(f"filesystem.{key}", "refused", f"Landlock cannot create {what} on the host's tree; use "
            "enforce = \"namespaces\" or \"both\"", bool(fs[key]))
    put("filesystem.root_readonly", "applied", "nothing outside the rw entries is writable", everything)
    put("filesystem.root_size", "not used", "there is no new root", everything)
    put("file metadata", "not covered", "Landlock does not cover changing a file's mode, owner, times or "
        "extended attributes: the program can change those of files its host uid owns wherever it reaches "
        "(for a root caller that uid is the reserved one, which owns nothing of the host)")
    put("unix sockets", "not covered", "Landlock does not restrict connect() to a socket file: host unix "
        "sockets the program's uid may write stay reachable (abstract ones are scoped)")
    put("process/env/fds/rlimits/seccomp/cgroup", "applied", "as with namespaces", everything)
    return out


def enforcement(profile) -> tuple:
    """(how the filesystem view of `profile` is enforced for this caller, landlock_fields or [])."""
    euid = os.geteuid()
    mode = _enforcement(profile.data, euid)
    return mode, (landlock_fields(profile.data, euid, mode) if mode in ("landlock", "landlock-only") else [])


def _landlock(data, ctx, file):
    fs = data["filesystem"]
    if fs["view"] == "host" or fs["enforce"] == "namespaces":
        return None
    from . import fs as fs_mod
    from . import landlock

    return landlock.compile_rules(fs, with_view=fs["enforce"] == "both",
                                  resolve=lambda p, key: fs_mod.resolve(p, ctx, key, file), file=file)


def _idmap_binds(ops) -> tuple:
    """The binds a host-id sandbox gets as idmapped trees, and which filesystems refuse it."""
    from . import fs as fs_mod
    from . import hostids

    hostids.check_free()
    binds = fs_mod.host_binds(ops)
    return fs_mod.idmap_support(binds, hostids.userns_fd(hostids.BASE)) if binds else ()


def _template(data, ops) -> int:
    """The template mount namespace of a new-root view (root only), or -1."""
    fs = data["filesystem"]
    if fs["view"] != "new" or not fs["template"] or not data["namespaces"]["mount"]:
        return -1
    from . import fs as fs_mod

    return fs_mod.make_template(ops)


def _network(data, flags: int, euid: int, file) -> tuple:
    """(clone flags, loopback up?, fd of a network namespace to join or -1, mode)."""
    mode = data["network"]["mode"] or ("none" if data["namespaces"]["net"] else "host")
    flags &= ~CLONE_NEWNET
    if mode == "none":
        return flags | CLONE_NEWNET, True, -1, mode
    if mode == "host":
        return flags, False, -1, mode
    name = data["network"]["netns"]
    path = name if name.startswith("/") else f"/run/netns/{name}"
    if euid != 0:
        raise UnsupportedError("network.netns", "joining a network namespace needs root (CAP_SYS_ADMIN)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UnsupportedError("network.netns", f"{path}: {e.strerror}") from None
    return flags, False, fd, mode
