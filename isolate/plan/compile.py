"""Profile -> Plan: everything that is the same for every launch of a profile, once.

A Plan is immutable and cached (by isolate.launch.plans, which also makes the kernel
objects it holds) by the profile's content hash plus what its placeholders and id
maps resolve to for this caller (cwd, home, uid, gid): cache_key(). compile_parts()
does the compiling, one concern per module: the filesystem view (fs.py), Landlock
(landlock.py), seccomp (seccomp/), the host ids (ids.py); here the namespaces, ids,
rlimits, capabilities, network and cgroup mode, and the Plan itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import types
from typing import Mapping

from ..errors import ProfileError, UnsupportedError
from ..kernel import cgroups
from ..kernel import features as features_mod
from ..kernel.constants import (CAPABILITIES, CLONE_NEWNET, CLONE_NEWUSER, MS_PRIVATE, MS_REC, NAMESPACE_FLAGS,
                                RLIM_INFINITY, RLIMITS, controllers, last_cap)
from . import fs as fs_mod
from . import ids, landlock
from .fs import MountOp, resolve_placeholders
from .mountops import OP_PIVOT
from .plan import Plan, check_nofile, nofile_needed  # noqa: F401 - nofile_needed: also this module's API

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _map_text(entries) -> str:
    return "".join(f"{i} {o} {c}\n" for i, o, c in entries)


def _in_map(value: int, entries) -> bool:
    return any(i <= value < i + c for i, o, c in entries)


def _one_map(kind: str, ranges, want, own: int, file) -> tuple:
    """(inside id, map text, id the child switches to or -1) for kind "uid" or "gid":
    the profile's ranges (inside id 0 unless it asks for one they map), else the
    caller's own id mapped to the asked one."""
    if ranges:
        inside = 0 if want is None else want
        if not _in_map(inside, ranges):
            raise ProfileError(f"{kind} {inside} is not mapped by identity.{kind}_map", file=file, key=f"identity.{kind}")
        return inside, _map_text(ranges), inside
    inside = own if want is None else want
    return inside, f"{inside} {own} 1\n", -1


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
    inside_uid, uid_map, set_uid = _one_map("uid", uid_ranges, want_uid, euid, file)
    inside_gid, gid_map, set_gid = _one_map("gid", gid_ranges, want_gid, egid, file)
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


def caller_context(cwd: str | None = None) -> dict:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    return {"cwd": cwd or os.getcwd(), "home": home, "uid": str(os.geteuid()), "gid": str(os.getegid())}


def cache_key(profile, ctx: Mapping[str, str]) -> str:
    """What the Plan of `profile` for the caller `ctx` depends on, hashed."""
    # What doctor.features() may report differently (ISOLATE_DOCTOR_DISABLE) changes the plan.
    disabled = os.environ.get(features_mod.DISABLE_ENV, "")
    # The profile names an OCI seccomp file by path: its content is part of the plan.
    oci = None
    if profile.data["seccomp"].get("oci") is not None:
        from . import seccomp  # pyseccomp (libseccomp) and the filter compiler: ~30 ms, loaded on first use

        oci = seccomp.oci_digest(dict(profile.data["seccomp"]), ctx)
    return hashlib.sha256(repr((profile.hash, sorted(ctx.items()), disabled, oci)).encode()).hexdigest()


def quick_key(profile, ctx: Mapping[str, str]) -> tuple | None:
    """What cache_key() hashes, as a tuple to look its hash up by (no repr, no sha256 per
    launch), or None when the key needs more than that (an OCI seccomp file's content)."""
    if profile.data["seccomp"].get("oci") is not None:
        return None
    return (profile.hash, tuple(sorted(ctx.items())), os.environ.get(features_mod.DISABLE_ENV, ""))


@dataclasses.dataclass(frozen=True)
class Parts:
    """What compile_parts() makes of a profile; isolate.launch.plans turns it into a Plan."""

    fields: dict        # the Plan's fields, but for the kernel objects made at launch level
    native: dict        # keyword arguments of the launch child's plan (_launch.make_plan), but ops
    template_ops: tuple  # the ops of the view's template mount namespace (made where the caller is root), or ()
    host_binds: tuple    # a host-id sandbox's binds of host paths, to idmap: ((op index, source), ...)
    cgroup_why: str     # why no cgroup could be had, when one was asked for and cgroup_mode is None
    view: object = None  # fs.ViewTemplate: the view as a template of its own (tried first, root only), or None


def compile_parts(profile, ctx: Mapping[str, str], key: str) -> Parts:
    """Compile `profile` for the caller `ctx` (caller_context()); ProfileError or
    UnsupportedError naming the field where it asks what cannot be given."""
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
    top_cap = last_cap()
    keep_mask = 0
    for cap in keep:
        bit = CAPABILITIES[cap]
        if bit > top_cap:
            raise UnsupportedError("capabilities.keep", f"{cap} is not known to this kernel")
        keep_mask |= 1 << bit

    from . import seccomp  # pyseccomp (libseccomp) and the filter compiler: ~30 ms, loaded on first use

    # An OCI seccomp profile (seccomp.oci) is read and translated here: its
    # includes/excludes.caps need the capabilities kept, its path the placeholders.
    spec = seccomp.oci_spec(dict(plain(data["seccomp"])), caps=keep, ctx=ctx, file=file)
    try:
        bpf = seccomp.compile_filter(spec)
    except ValueError as e:  # e.g. a file whose argument rules are too complex
        if "oci_source" not in spec or isinstance(e, ProfileError):
            raise
        raise ProfileError(str(e), file=spec["oci_source"]["path"]) from None

    cwd = resolve_placeholders(proc["cwd"], ctx, "process.cwd", file)
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
        mode = data["network"]["mode"] if data["network"]["mode"] in ("netns", "allowlist") else "host"
        data = dict(data, namespaces=ns, network=dict(data["network"], mode=mode),
                    filesystem=dict(data["filesystem"], enforce="landlock"))
    elif enforce == "landlock" and not ns["user"]:
        set_uid, set_gid, inside_uid, inside_gid = _host_ids(ident, euid, egid)
    # Root's own ids mapped in would make the program host root (owner of every root-owned
    # inode the view binds in): it gets an unprivileged host id of its own per launch, and
    # the binds of a new view are idmapped to it. On the host's own tree (view = "host")
    # there is nothing to idmap: the program is that unprivileged uid on the host's files.
    # (Landlock on the host's tree maps to the static hostids.BASE instead, above.)
    host_ids = (bool(ns["user"]) and euid == 0 and not ident.get("uid_map") and not ident.get("gid_map")
                and (enforce in ("namespaces", "both") or data["filesystem"]["view"] == "host")
                and (bool(ns["mount"]) or data["filesystem"]["view"] == "host"))
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

    native = dict(
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
        last_cap=top_cap,
        bpf=bpf,
        use_init=use_init,
        die_with_parent=die,
        netns_fd=netns_fd,
        become_root=become_root,
        landlock=landlock_rules,
        launch_ids=host_ids,
    )
    env = data["env"]
    fds = data["fds"]
    fields = dict(
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
        netns_fd=netns_fd,
        host_ids=host_ids,
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
    fsd = data["filesystem"]
    template = (fsd["view"] == "new" and bool(fsd["template"]) and bool(data["namespaces"]["mount"])
                and any(op.kind == OP_PIVOT for op in ops))
    binds = tuple(fs_mod.host_binds(ops)) if host_ids else ()
    return Parts(fields, native, template_ops=tuple(fs_mod.template_ops(ops, skip={s for _, s in binds}))
                 if template else (), host_binds=binds, cgroup_why=cg_why,
                 view=fs_mod.view_template(ops, {i for i, _ in binds}) if template else None)


def check_runnable(plan: Plan, parts: Parts, file) -> None:
    """Fail closed: ProfileError or UnsupportedError naming the field when `plan` (made
    from `parts`) asks for what this kernel, this caller or its fd table cannot give."""
    check_nofile(plan, plan.pass_fds, file=file)
    features_mod.check(plan)
    if plan.cgroup and plan.cgroup_mode is None:  # the doctor saw a cgroup, but none can be used as asked
        raise UnsupportedError(f"cgroup.{next(iter(plan.cgroup))}", f"no usable cgroup here ({parts.cgroup_why})")


def _cgroup(section: Mapping, track: bool) -> tuple:
    """(limits set, mode "v2"/"v1"/"rlimits"/None, ((controller, base dir), ...), why no cgroup).

    track: without a pid namespace nothing else holds the whole process tree (a daemon
    that called setsid leaves the process group), so where a cgroup can be had, the
    sandbox gets one without limits, and killing the sandbox empties it."""
    limits = {k: section[k] for k in ("memory_max", "memory_swap_max", "pids_max") if section.get(k) is not None}
    if not limits:
        if not track:
            return limits, None, (), ""
        version, dirs, why = cgroups.find(("pids",))
        return limits, version, tuple(sorted(dirs.items())), why

    version, dirs, why = cgroups.find(controllers(limits))
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


def plain(obj):
    """Deep copy of read-only profile data into plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _mount_ops(data, ns, ctx, file) -> list:
    """The mount operations: a private / first, then the filesystem view (fs.py)."""
    if not ns["mount"]:
        if data["filesystem"]["view"] != "host" and data["filesystem"]["enforce"] in ("namespaces", "both"):
            raise ProfileError('filesystem.view = "new" needs namespaces.mount = true', file=file,
                               key="filesystem.view")
        return []
    # Our mount events must never propagate back to the host.
    ops = [MountOp(fs_mod.OP_MOUNT, None, "/", None, None, MS_REC | MS_PRIVATE, 0, "namespaces.mount")]
    if data["filesystem"]["enforce"] == "landlock":
        view = dict(data["filesystem"], view="host")
        return ops + fs_mod.mount_ops(dict(data, filesystem=view), ns, ctx, file)
    return ops + fs_mod.mount_ops(data, ns, ctx, file)


def _userns_possible(euid: int) -> bool:
    """Can this caller create user namespaces here (what the profiles are built on)."""
    return features_mod.features()["user_namespaces"].available


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
    if want is None or want == 0:
        return [(0, ids.BASE, 1)]
    return [(0, ids.BASE + 1, 1), (want, ids.BASE, 1)]


def _host_ids(ident: Mapping, euid: int, egid: int) -> tuple:
    """(set_uid, set_gid, uid, gid) of a program without a user namespace under Landlock.

    A root caller's program never stays host root (it would own every root-owned host
    inode, /dev/null included): it runs as the profile's uid/gid, else as
    hostids.BASE. landlock_fields refuses uid/gid 0 and, for others, changes."""
    def pick(want, own):
        if euid == 0:
            return ids.BASE if want is None else want
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
    BASE = ids.BASE
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
                    f"(isolate.plan.ids.BASE): a root caller's program never has host root's ownership")
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
                    f"(isolate.plan.ids.BASE, no supplementary groups), never as host root: it can read and "
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
    return landlock.compile_rules(fs, with_view=fs["enforce"] == "both",
                                  resolve=lambda p, key: fs_mod.resolve(p, ctx, key, file), file=file)


def _network(data, flags: int, euid: int, file) -> tuple:
    """(clone flags, loopback up?, fd of a network namespace to join or -1, mode)."""
    mode = data["network"]["mode"] or ("none" if data["namespaces"]["net"] else "host")
    flags &= ~CLONE_NEWNET
    if mode == "none":
        return flags | CLONE_NEWNET, True, -1, mode
    if mode == "host":
        return flags, False, -1, mode
    if mode == "allowlist":
        # The namespace and its proxy are made per launch by isolate.netproxy, which hands
        # this layer a mode = "netns" profile; launched any other way, fail closed.
        raise UnsupportedError("network.mode", '"allowlist" is launched by isolate.netproxy (netproxy.run/'
                               "Popen/WarmPool, isolate.Session, or `isolate run`): plain isolate.run and "
                               "isolate.WarmPool have no proxy to give it")
    name = data["network"]["netns"]
    path = name if name.startswith("/") else f"/run/netns/{name}"
    if euid != 0:
        raise UnsupportedError("network.netns", "joining a network namespace needs root (CAP_SYS_ADMIN)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UnsupportedError("network.netns", f"{path}: {e.strerror}") from None
    return flags, False, fd, mode
