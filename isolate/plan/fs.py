"""The filesystem view: profile [filesystem] -> an ordered list of mount operations.

The launch child applies them in order with raw system calls (see OP_* in
_launch.c); nothing here runs per launch, and nothing reads /proc/self/mountinfo.

The new root is built the way that keeps every host path reachable while it is
assembled:

    mount a small tmpfs on STAGE; mkdir STAGE/newroot STAGE/oldroot
    mount the root tmpfs on STAGE/newroot
    pivot_root(STAGE, STAGE/oldroot)   -> /newroot is the view, /oldroot the host
    binds from /oldroot/SRC to /newroot/DST, tmpfs, /proc, /dev; dirs, symlinks, files
    pivot_root into /newroot; detach the staging tmpfs, and with it /oldroot
    remount the new root read-only
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Mapping

from ..errors import ProfileError
from ..kernel.constants import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC

from .mountops import (BIND_ASIS, BIND_DEV, BIND_NOEXEC, BIND_OPTIONAL, BIND_READONLY, MP_THERE, OP_BIND, OP_CHMOD,
                       OP_MKDIR, OP_MOUNT, OP_NAMES, OP_PIVOT, OP_REMOUNT, OP_SYMLINK, OP_UMOUNT, OP_WRITE)

STAGE = "/tmp"           # any host directory; the staging tmpfs hides it only in our namespace
NEW = "/newroot"
OLD = "/oldroot"
# Empty directories of the staging tmpfs (at / once it is the root) that hide a path of a
# new view: a read-only, noexec bind of one instead of an empty tmpfs per hidden
# directory. A tmpfs is a superblock of its own, made (~15 us) and, when its namespace
# goes, torn down (~60 us) by every launch; a bind shares the staging's. Nothing else
# of the staging tmpfs is reachable through them, and it is detached at the end.
EMPTY = {0o555: "/.empty-555", 0o755: "/.empty-755"}
# OP_BIND's num: its source is a directory / not one (as the plan saw it): the launch
# creates the mount point without looking the source up. 0 (optional binds): it looks.
MP_DIR, MP_FILE = 1, 2

# What a minimal /dev holds: bound from the host's device nodes.
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# /proc entries that reach beyond the sandbox: read-only, or masked: a file by
# binding /dev/null over it, a directory by an empty read-only tmpfs. At least what
# runc/Docker mask by default, plus the host-wide memory and scheduler views.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug",
               "scsi", "kallsyms", "kmsg", "kpageflags", "kpagecount", "kpagecgroup", "slabinfo",
               "vmallocinfo", "pagetypeinfo")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))


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
        parts = [OP_NAMES.get(self.kind, str(self.kind))]
        parts += [repr(x) for x in (self.a, self.b, self.c) if x is not None]
        if self.flags:
            parts.append(f"flags={self.flags:#x}")
        return " ".join(parts)



def _op(kind, a=None, b=None, c=None, d=None, flags=0, num=0, source=""):
    return MountOp(kind, a, b, c, d, flags, num, source)


def resolve_placeholders(text: str, values: Mapping[str, str], key: str, file: str | None) -> str:
    try:
        return text.format_map(values)
    except (KeyError, ValueError, IndexError) as e:
        raise ProfileError(f"cannot resolve placeholders in {text!r}: {e}", file=file, key=key) from None


def resolve(path: str, ctx: Mapping[str, str], key: str, file) -> str:
    out = os.path.normpath(resolve_placeholders(path, ctx, key, file))
    if not out.startswith("/"):
        raise ProfileError(f"expected an absolute path, got {out!r}", file=file, key=key)
    return "/" if out == "//" else out


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


class _Builder:
    def __init__(self):
        self.ops: list = []
        self.made: set = {"/"}

    def add(self, *args, **kw):
        self.ops.append(_op(*args, **kw))

    def parents(self, target: str, source: str):
        """mkdir -p the parents of `target` inside the new root."""
        parts = target.strip("/").split("/")[:-1]
        path = ""
        for part in parts:
            path += "/" + part
            if path not in self.made:
                self.made.add(path)
                self.add(OP_MKDIR, None, NEW + path, num=0o755, source=source)

    def mkdir(self, target: str, source: str, mode: int = 0o755):
        self.parents(target, source)
        if target not in self.made:
            self.made.add(target)
            self.add(OP_MKDIR, None, NEW + target, num=mode, source=source)


def mount_ops(data, ns, ctx, file) -> list:
    """Mount operations for the profile's filesystem view (after the private remount of /)."""
    fs = data["filesystem"]
    if fs["view"] == "host":
        if ns["pid"]:
            # The host's tree, but /proc of our own pid namespace.
            b = _Builder()
            _proc(b, "", "/dev/null", "namespaces.pid")
            return b.ops
        return []
    if fs["proc"] and not ns["pid"]:
        raise ProfileError("/proc of the host's pid namespace would show every host process; "
                           "set namespaces.pid = true", file=file, key="filesystem.proc")

    b = _Builder()
    root_size = fs["root_size"]
    # The new root is a directory of the staging tmpfs, bound onto itself (pivot_root
    # needs a mount): one superblock for both, not two (see EMPTY).
    b.add(OP_MOUNT, "tmpfs", STAGE, "tmpfs", f"mode=0755,size={root_size}".encode(), MS_NOSUID | MS_NODEV,
          source="filesystem.root_size")
    b.add(OP_MKDIR, None, STAGE + NEW, num=0o755, source="filesystem (staging)")
    b.add(OP_MKDIR, None, STAGE + OLD, num=0o755, source="filesystem (staging)")
    empties_at = len(b.ops)  # the empty directories of the staging go here, as far as needed
    b.add(OP_BIND, STAGE + NEW, STAGE + NEW, source="filesystem (the new root)")
    b.add(OP_PIVOT, OLD.lstrip("/"), STAGE, source="filesystem (staging)")

    # Mounts in order of target depth, so a parent is in place before what goes on it;
    # entries of equal depth keep the profile's order (see the sort below).
    mounts = []
    for key, readonly in (("ro", True), ("rw", False)):
        for i, e in enumerate(fs[key]):
            where = f"filesystem.{key}[{i}]"
            src = resolve(e["source"], ctx, where, file)
            dst = resolve(e["target"], ctx, where, file)
            mounts.append((_depth(dst), len(mounts), "bind", where, src, dst, readonly, e["optional"]))
    for i, e in enumerate(fs["tmpfs"]):
        where = f"filesystem.tmpfs[{i}]"
        mounts.append((_depth(resolve(e["path"], ctx, where, file)), len(mounts), "tmpfs", where,
                       None, resolve(e["path"], ctx, where, file), e["size"], e["mode"]))
    binds = [(m[5], m[4]) for m in mounts if m[2] == "bind"]  # (target, source)
    for i, path in enumerate(fs["hide"]):
        where = f"filesystem.hide[{i}]"
        path = resolve(path, ctx, where, file)
        host = _host_path(path, binds)
        if host is not None and os.path.lexists(host) and not os.path.islink(host):
            mounts.append((_depth(path), len(mounts), "hide", where, None, path, os.path.isdir(host), None))
    if fs["proc"]:
        mounts.append((1, len(mounts), "proc", "filesystem.proc", None, "/proc", None, None))
    if fs["dev"]:
        mounts.append((1, len(mounts), "dev", "filesystem.dev", None, "/dev", None, None))
    # At equal depth, fresh filesystems first, binds on top, hides over those: running
    # from /tmp, the read-write bind of {cwd} must show the caller's /tmp, not vanish
    # under the new tmpfs; and a hidden path must stay hidden.
    rank = {"bind": 1, "hide": 2}
    mounts.sort(key=lambda m: (m[0], rank.get(m[2], 0), m[1]))

    for _depth_, _n, kind, where, src, dst, x, y in mounts:
        if kind == "bind":
            _bind(b, where, src, dst, readonly=x, optional=y, file=file)
        elif kind == "tmpfs":
            b.mkdir(dst, where)
            b.add(OP_MOUNT, "tmpfs", NEW + dst, "tmpfs", f"mode={y:o},size={x}".encode(),
                  MS_NOSUID | MS_NODEV, source=where)
        elif kind == "hide":
            if x:  # a directory: an empty, read-only directory over it
                b.add(OP_BIND, EMPTY[0o755], NEW + dst, flags=BIND_READONLY | BIND_NOEXEC, num=MP_DIR,
                      source=where)
            else:  # a file: the empty /dev/null over it, read-only
                b.add(OP_BIND, OLD + "/dev/null", NEW + dst, flags=BIND_READONLY, num=MP_FILE, source=where)
        elif kind == "proc":
            b.mkdir("/proc", where)
            _proc(b, NEW, OLD + "/dev/null", where, empty=EMPTY[0o555])
        elif kind == "dev":
            _dev(b, where)

    for i, path in enumerate(fs["dirs"]):
        where = f"filesystem.dirs[{i}]"
        b.mkdir(resolve(path, ctx, where, file), where)
    for i, e in enumerate(fs["symlinks"]):
        where = f"filesystem.symlinks[{i}]"
        path = resolve(e["path"], ctx, where, file)
        b.parents(path, where)
        b.add(OP_SYMLINK, e["target"], NEW + path, source=where)
    for i, e in enumerate(fs["files"]):
        where = f"filesystem.files[{i}]"
        path = resolve(e["path"], ctx, where, file)
        b.parents(path, where)
        b.add(OP_WRITE, None, NEW + path, None, os.fsencode(e["content"]), num=e["mode"], source=where)

    used = [mode for mode, path in EMPTY.items() if any(op.kind == OP_BIND and op.a == path for op in b.ops)]
    b.ops[empties_at:empties_at] = [_op(OP_MKDIR, None, STAGE + EMPTY[mode], num=mode, source="filesystem (staging)")
                                    for mode in used]
    # One detach, after the last pivot_root, takes the staging tmpfs and the host's tree
    # under it at /oldroot together: each detach waits for an RCU grace period (~60 us).
    b.add(OP_PIVOT, None, NEW, source="filesystem (pivot_root; detach the staging and the host's tree)")
    if fs["root_readonly"]:
        b.add(OP_REMOUNT, None, "/", flags=MS_RDONLY | MS_NOSUID | MS_NODEV,
              source="filesystem.root_readonly")
    return b.ops


def _host_path(path: str, binds) -> str | None:
    """The host path that `path` inside the view shows, through the deepest bind above it."""
    best = None
    for target, source in binds:
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[0]):
                best = (target, source)
    if best is None:
        return None
    return best[1] + path[len(best[0]):] if best[0] != "/" else best[1].rstrip("/") + path


def _bind(b: _Builder, where: str, src: str, dst: str, *, readonly: bool, optional: bool, file) -> None:
    if os.path.islink(src):
        # A host symlink (/bin -> usr/bin on merged-/usr systems) is reproduced as
        # the same symlink; what it points to must be in the view by its own entry.
        b.parents(dst, where)
        b.made.add(dst)
        b.add(OP_SYMLINK, os.readlink(src), NEW + dst, source=where)
        return
    if not os.path.exists(src):
        if optional:
            return
        raise ProfileError(f"bind source {src} does not exist (mark it optional = true to skip it when missing)",
                           file=file, key=where)
    if src == "/" and not readonly:
        raise ProfileError("resolves to / : refusing to bind the whole host read-write", file=file, key=where)
    b.parents(dst, where)
    b.made.add(dst)
    flags = BIND_READONLY if readonly else 0
    if optional:
        flags |= BIND_OPTIONAL
    kind = 0 if optional else (MP_DIR if os.path.isdir(src) else MP_FILE)
    b.add(OP_BIND, OLD + src, NEW + dst, flags=flags, num=kind, source=where)


def _proc(b: _Builder, root: str, devnull: str, where: str, empty: str | None = None) -> None:
    """/proc of the sandbox's pid namespace, with what reaches the host made read-only or hidden
    (a directory: by a read-only bind of `empty`, an empty directory, else an empty tmpfs)."""
    b.add(OP_MOUNT, "proc", root + "/proc", "proc", None, MS_NOSUID | MS_NODEV | MS_NOEXEC, source=where)
    # Only what this kernel has (the host's /proc is the same kernel's): a bind per
    # entry that does not exist would cost two failed lookups in every launch.
    for name in (n for n in PROC_READONLY if os.path.lexists(f"/proc/{n}")):
        path = f"{root}/proc/{name}"
        b.add(OP_BIND, path, path, flags=BIND_READONLY | BIND_OPTIONAL,
              source=f"{where} (read-only /proc/{name})")
    for name in (n for n in PROC_MASKED if os.path.lexists(f"/proc/{n}")):
        if os.path.isdir(f"/proc/{name}") and empty is not None:
            b.add(OP_BIND, empty, f"{root}/proc/{name}", flags=BIND_READONLY | BIND_NOEXEC, num=MP_DIR,
                  source=f"{where} (hide /proc/{name})")
        elif os.path.isdir(f"/proc/{name}"):
            b.add(OP_MOUNT, "tmpfs", f"{root}/proc/{name}", "tmpfs", b"mode=0555,size=4k",
                  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, source=f"{where} (hide /proc/{name})")
        else:
            b.add(OP_BIND, devnull, f"{root}/proc/{name}",
                  flags=BIND_READONLY | BIND_OPTIONAL | BIND_DEV, num=MP_FILE,   # (the entry is its mount point)
                  source=f"{where} (hide /proc/{name})")


def _dev(b: _Builder, where: str) -> None:
    b.mkdir("/dev", where)
    b.add(OP_MOUNT, "tmpfs", NEW + "/dev", "tmpfs", b"mode=0755,size=64k", MS_NOSUID | MS_NOEXEC,
          source=where)
    # Read-only binds: a device node stays writable (it is a special file), but its
    # host inode's mode, owner, times and xattrs cannot be changed through them.
    for node in DEV_NODES:
        b.add(OP_BIND, OLD + "/dev/" + node, NEW + "/dev/" + node,
              flags=BIND_DEV | BIND_READONLY, num=MP_FILE, source=where)
    for name, target in DEV_LINKS:
        b.add(OP_SYMLINK, target, NEW + "/dev/" + name, source=where)
    b.add(OP_MKDIR, None, NEW + "/dev/shm", num=0o1777, source=where)
    b.add(OP_MOUNT, "tmpfs", NEW + "/dev/shm", "tmpfs", b"mode=1777,size=64m",
          MS_NOSUID | MS_NODEV, source=where + " (shm)")
    b.add(OP_MKDIR, None, NEW + "/dev/pts", num=0o755, source=where)
    b.add(OP_MOUNT, "devpts", NEW + "/dev/pts", "devpts", b"newinstance,ptmxmode=0666,mode=620",
          MS_NOSUID | MS_NOEXEC, source=where + " (pts)")
    b.add(OP_REMOUNT, None, NEW + "/dev", flags=MS_RDONLY | MS_NOSUID | MS_NOEXEC, source=where)


# ---- binds of a sandbox with a host id of its own (root callers) ---------------------
#
# The sandbox runs as a host uid/gid S of its own (hostids), not as the root caller.
# Each bind of a host directory or file is then a tree the parent clones with
# open_tree and idmaps through a user namespace mapping 0 <-> S: what root owns on
# the host appears owned by the sandbox, and what it creates lands owned by root. The
# child attaches the trees (move_mount): no host path above a bind needs to be
# searchable by S. Device nodes are never idmapped.

def host_binds(ops) -> list:
    """[(op index, host source path), ...]: the binds of host paths in `ops` to idmap."""
    out = []
    for i, op in enumerate(ops):
        if op.kind != OP_BIND or op.flags & BIND_DEV or not op.a.startswith(OLD + "/"):
            continue
        src = op.a[len(OLD):]
        try:
            mode = os.stat(src).st_mode
        except OSError:
            mode = 0
        if mode and not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            continue  # a device node (the /dev/null over a hidden file): a plain bind
        out.append((i, src))
    return out


# ---- a template mount namespace: the cold launch's mount table, made small ----------
#
# CLONE_NEWNS copies the mount namespace of the thread that clones, and the view then
# detaches that copy: both cost work per mount of the caller's table. A template is a
# namespace, made once per plan, whose tree holds only what the view binds from, at
# the same paths. A launcher thread joins it around the clone (see _launch.c), so a
# launch copies and detaches a handful of mounts, however many the host has. Root
# only (joining a mount namespace needs CAP_SYS_ADMIN and CAP_SYS_CHROOT).

def template_ops(ops, skip=()) -> list:
    """Mount operations that build a template for a view's operations `ops`. `skip`: sources
    the launch never binds from the template (a host-id sandbox's idmapped trees, which the
    caller opens in its own namespace): every mount of the template is copied by each clone."""
    sources = {op.a[len(OLD):] for op in ops if op.kind == OP_BIND and op.a.startswith(OLD + "/")} - set(skip)
    if any(op.kind == OP_MOUNT and op.c == "proc" for op in ops):
        # The kernel lets a user namespace mount a new proc only where a full one is
        # already visible in the mount namespace: the host's, as in the caller's.
        sources.add("/proc")
    sources = sorted(sources, key=lambda p: (_depth(p), p))
    b = _Builder()
    b.add(OP_MOUNT, None, "/", None, None, MS_REC | MS_PRIVATE, source="template")
    b.add(OP_MOUNT, "tmpfs", STAGE, "tmpfs", b"mode=0755,size=1m", MS_NOSUID | MS_NODEV, source="template")
    b.add(OP_MKDIR, None, STAGE + NEW, num=0o755, source="template")
    b.add(OP_MKDIR, None, STAGE + OLD, num=0o755, source="template")
    b.add(OP_MOUNT, "tmpfs", STAGE + NEW, "tmpfs", b"mode=0755,size=1m", 0, source="template")
    b.add(OP_PIVOT, OLD.lstrip("/"), STAGE, source="template")
    for src in sources:
        b.parents(src, "template")
        b.made.add(src)
        # Host flags kept as they are (no nodev added): each launch's own bind sets its own.
        b.add(OP_BIND, OLD + src, NEW + src, flags=BIND_DEV | BIND_OPTIONAL,
              source=f"template: {src}")
    b.mkdir(STAGE, "template")
    b.add(OP_UMOUNT, None, OLD, source="template")
    b.add(OP_PIVOT, None, NEW, source="template")
    return b.ops


# ---- a view template: the view itself, made once per plan ----------------------------
#
# The template above still leaves each launch to build the whole view (~60 mount
# operations) and to detach the tree it was cloned from, which waits for an RCU grace
# period. A view template is a mount namespace, made once per plan, whose root IS the
# view: everything of it that is the same for every launch (the read-only root with its
# directories, symlinks and files, /dev and its device binds, the binds of host paths
# that are not idmapped per launch, the hidden paths). A launch clones it (the copy, in
# the sandbox's user namespace, has every mount locked: it cannot be unmounted, nor its
# flags cleared) and makes only what must be its own: the writable tmpfs mounts, /proc of
# its pid namespace with its masks, /dev/pts, and the idmapped trees of a host-id
# sandbox. No host tree is in the copy, so nothing is detached. The template has a
# placeholder at /proc, a proc of the template maker's own (then empty) pid namespace
# with subset=pid (no host-wide entries, no process): the kernel lets a user namespace
# mount a proc only where one is already fully visible in its mount namespace; the
# sandbox's own /proc goes on top of it.

@dataclasses.dataclass(frozen=True)
class ViewTemplate:
    template_ops: tuple  # the ops that build the template (the view, less what each launch makes)
    launch_ops: tuple    # what each launch makes, on the template's copy (view paths, no /newroot)
    index: tuple         # per launch op, the index of the view op it comes from


def _under(path: str, top: str) -> bool:
    return path == top or top == "/" or path.startswith(top.rstrip("/") + "/")


def _view_path(p: str | None) -> str | None:
    if p is None:
        return None
    return "/" if p == NEW else p[len(NEW):] if p.startswith(NEW + "/") else None


def view_template(ops, live_binds=()) -> ViewTemplate | None:
    """The view `ops` (mount_ops of a new view) split into a view template and the ops of
    each launch, or None where the view cannot be shared (a writable root, or something
    of the template that a per-launch mount would have to cover or hold). `live_binds`:
    indexes of binds each launch attaches itself (a host-id sandbox's idmapped trees)."""
    pivots = [i for i, op in enumerate(ops) if op.kind == OP_PIVOT]
    if len(pivots) != 2 or ops[pivots[0]].a is None or ops[pivots[1]].a is not None:
        return None
    first, last = pivots
    tail = ops[last + 1:]
    if not any(op.kind == OP_REMOUNT and op.b == "/" and op.flags & MS_RDONLY for op in tail) or \
            any(op.kind != OP_REMOUNT for op in tail):
        return None  # a writable root would be shared by every sandbox of the plan
    remounted_ro = {op.b for op in ops[first:last] if op.kind == OP_REMOUNT and op.flags & MS_RDONLY}
    has_devnull = any(op.kind == OP_BIND and op.b == NEW + "/dev/null" and op.flags & BIND_READONLY
                      and op.flags & BIND_DEV and not op.flags & BIND_NOEXEC for op in ops[first:last])
    template, launch, index = list(ops[:first + 1]), [], []
    empties: set = set()
    live: list = []  # view paths of the mounts each launch makes, in order
    live_proc: list = []  # of them, the proc mounts
    for i in range(first + 1, last):
        op = ops[i]
        path = _view_path(op.b)
        if path is None:
            return None
        under = any(_under(path, t) for t in live)
        # An entry of the launch's own /proc (a mask): its mount point is the entry itself,
        # there (optional: a bind onto an entry this kernel lacks is skipped, ENOENT).
        in_proc = any(_under(path, t) for t in live_proc)
        mount_kind = op.kind in (OP_MOUNT, OP_BIND)
        if not under and mount_kind and any(_under(t, path) for t in live):
            return None  # a template mount over one each launch makes: it would end up under it
        if op.kind == OP_MOUNT:
            if op.c == "tmpfs" and not under and op.b in remounted_ro:
                template.append(op)  # read-only once built (/dev): the same for every launch
                continue
            if op.c not in ("tmpfs", "proc", "devpts"):
                return None
            launch_op = dataclasses.replace(op, b=path)
            if op.c == "proc" and not under:
                # The placeholder that lets the launch mount its own (see above).
                template.append(dataclasses.replace(op, d=b"subset=pid,hidepid=invisible",
                                                    source=op.source + " (the view template's placeholder)"))
        elif op.kind == OP_BIND:
            src = op.a or ""
            if i in live_binds:
                # An idmapped tree of this launch; its mount point is the template's.
                if under:
                    launch_op = dataclasses.replace(op, b=path)
                else:
                    host = src[len(OLD):]
                    try:
                        is_dir = os.path.isdir(host) if os.path.lexists(host) else None
                    except OSError:
                        is_dir = None
                    if is_dir is None:
                        return None  # an optional source not there now: its type is not known
                    template.append(_op(OP_MKDIR, None, op.b, num=0o755, source=op.source) if is_dir else
                                    _op(OP_WRITE, None, op.b, None, b"", num=0o644, source=op.source))
                    launch_op = dataclasses.replace(op, b=path, num=MP_THERE)
            elif not under:
                template.append(op)
                continue
            elif src.startswith(NEW + "/") or src == NEW:
                launch_op = dataclasses.replace(op, a=_view_path(src), b=path)  # a /proc entry onto itself
            elif src == OLD + "/dev/null" and has_devnull and op.flags & BIND_READONLY:
                # The view's own /dev/null (read-only, nosuid, devices allowed): a bind keeps its
                # flags, which are those asked for where devices are allowed (else nodev is added).
                asis = BIND_ASIS if op.flags & BIND_DEV and not op.flags & BIND_NOEXEC else 0
                launch_op = dataclasses.replace(op, a="/dev/null", b=path, flags=op.flags | asis,
                                                num=MP_THERE if in_proc and op.flags & BIND_OPTIONAL else op.num)
            elif src in EMPTY.values():
                # An empty directory of the staging, which each launch no longer has: one of the
                # template's, under the mount point of a tmpfs the launch mounts last (below).
                launch_op = dataclasses.replace(op, a="\0" + src, b=path, num=MP_THERE if in_proc else op.num)
                empties.add(src)
            else:
                return None  # a host path under a mount of each launch
        elif op.kind in (OP_MKDIR, OP_SYMLINK, OP_WRITE, OP_CHMOD, OP_REMOUNT):
            if not under and not (op.kind == OP_REMOUNT and path in live):
                if op.kind in (OP_MKDIR, OP_WRITE, OP_CHMOD) and (op.num >> 6) & 0o5 & ~op.num:
                    # The template's files are host root's, not the sandbox's (whose ids its
                    # user namespace maps): one that only its owner may read (a file of mode
                    # 0600) would no longer be readable by the program.
                    return None
                template.append(op)
                continue
            launch_op = dataclasses.replace(op, b=path)
        else:
            return None
        launch.append(launch_op)
        index.append(i)
        if launch_op.kind in (OP_MOUNT, OP_BIND):
            live.append(path)
            if launch_op.kind == OP_MOUNT and launch_op.c == "proc":
                live_proc.append(path)
    if empties:
        # The empty directories go under a writable tmpfs of the launch that nothing else of
        # the launch is under or over (/tmp): made read-only in the template's root, bound
        # by the launch before that tmpfs covers them; nothing of them is reachable after.
        cover = next((k for k, op in enumerate(launch) if op.kind == OP_MOUNT and op.c == "tmpfs"
                      and not op.flags & MS_RDONLY and op.b != "/"
                      and not any(k2 != k and (_under(o.b, op.b) or _under(op.b, o.b)) for k2, o in enumerate(launch)
                                  if o.kind in (OP_MOUNT, OP_BIND))
                      and not any(_under(o.b, op.b) for o in launch[k + 1:])), None)
        if cover is None:
            return None
        top = launch[cover].b.rstrip("/")
        # Right after the template makes that mount point (before anything above it, such as
        # /dev, is made read-only).
        at = next((j + 1 for j, op in enumerate(template) if op.kind == OP_MKDIR and op.b == NEW + top), len(template))
        template[at:at] = [_op(OP_MKDIR, None, NEW + top + src, num=next(m for m, p in EMPTY.items() if p == src),
                               source="filesystem (view template)") for src in sorted(empties)]
        launch = [dataclasses.replace(op, a=top + op.a[1:]) if op.a and op.a.startswith("\0") else op
                  for op in launch]
        launch.append(launch.pop(cover))
        index.append(index.pop(cover))
    template += ops[last:]
    return ViewTemplate(tuple(template), tuple(launch), tuple(index))
