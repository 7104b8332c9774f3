"""Landlock: the filesystem view's entries as Landlock rules, a second wall or the only one.

The rules are compiled here once; the launch child creates the ruleset, adds the
rules on the paths of its own (finished) view and restricts itself (_launch.c,
step_landlock). With enforce = "landlock" there is no mount namespace: the paths are
the host's and every entry must keep its host path.
"""

from __future__ import annotations

import os

from ..errors import ProfileError, UnsupportedError
from ..kernel import features as features_mod
from .fs import DEV_NODES

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13        # ABI 2
TRUNCATE = 1 << 14     # ABI 3
IOCTL_DEV = 1 << 15    # ABI 5

SCOPE_ABSTRACT_UNIX_SOCKET = 1  # ABI 6
SCOPE_SIGNAL = 2                # ABI 6

READ = READ_FILE | READ_DIR
WRITE = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_SYM
         | REFER | TRUNCATE)


def handled_fs(abi: int) -> int:
    """Every filesystem right this ABI knows: all of them are denied unless a rule grants them."""
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    if abi >= 5:
        mask |= IOCTL_DEV
    return mask


def available() -> int:
    """The Landlock ABI here, 0 without it (the doctor's probe: it honours ISOLATE_DOCTOR_DISABLE)."""
    return features_mod.landlock_abi()


def compile_rules(fs: dict, *, with_view: bool, resolve, file) -> tuple:
    """(handled_fs, handled_net, scoped, attr_size, [(path, access, optional)]) for make_plan.

    with_view: the rules apply inside the new root (enforce = "both"); otherwise to the
    host's tree (enforce = "landlock"), where an entry cannot move a path elsewhere.
    """
    abi = available()
    if abi < 1:
        detail = features_mod.features()["landlock"].detail
        raise UnsupportedError("filesystem.enforce", f"Landlock is not available here ({detail})")
    mask = handled_fs(abi)
    rules: list = []

    def add(path: str, access: int, optional: bool = False):
        rules.append((os.fsencode(path), access & mask, optional))

    binds: list = []
    for key, access in (("ro", READ | EXECUTE), ("rw", READ | EXECUTE | WRITE)):
        for i, e in enumerate(fs[key]):
            where = f"filesystem.{key}[{i}]"
            src, dst = resolve(e["source"], where), resolve(e["target"], where)
            if not with_view and src != dst:
                raise ProfileError(f"Landlock alone cannot show {src} at {dst}; use enforce = \"namespaces\" "
                                   "or \"both\"", file=file, key=where)
            if not with_view and not os.path.exists(src) and not e["optional"]:
                raise ProfileError(f"{src} does not exist (mark it optional = true to skip it when missing)",
                                   file=file, key=where)
            binds.append((dst if with_view else src, access, e["optional"]))
    if not with_view and fs["hide"]:
        # On the host's tree nothing can cover a path: the rules grant each hidden
        # path's siblings instead of its parent (see _split).
        hidden = []
        for i, path in enumerate(fs["hide"]):
            path = resolve(path, f"filesystem.hide[{i}]")
            if os.path.lexists(path) and not os.path.islink(path):  # as the view: symlinks are not hidden
                hidden.append(os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)))
        binds = hide_rules(binds, hidden, file=file)
    for path, access, optional in binds:
        add(path, access, optional)
    if fs["tmpfs"]:
        if not with_view:
            raise ProfileError("a private tmpfs needs a mount namespace; Landlock alone cannot give one",
                               file=file, key="filesystem.tmpfs")
        for i, e in enumerate(fs["tmpfs"]):
            add(resolve(e["path"], f"filesystem.tmpfs[{i}]"), READ | EXECUTE | WRITE)
    if fs["proc"]:
        add("/proc", READ | WRITE_FILE)
    if fs["dev"] and with_view:
        add("/dev", READ | WRITE_FILE | IOCTL_DEV)
    elif fs["dev"]:
        # The host's /dev holds every device: only the nodes a minimal /dev has.
        for node in DEV_NODES:
            add(f"/dev/{node}", READ_FILE | WRITE_FILE | IOCTL_DEV, True)
    if with_view:
        add("/", READ_DIR)  # the new root holds only the profile's entries
        for i, path in enumerate(fs["dirs"]):
            add(resolve(path, f"filesystem.dirs[{i}]"), READ)
        for i, e in enumerate(fs["files"]):
            add(resolve(e["path"], f"filesystem.files[{i}]"), READ_FILE)
    # ABI 6: no connecting to abstract unix sockets, nor signalling, outside the sandbox.
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr_size = 24 if scoped else 8
    return (mask, 0, scoped, attr_size, rules)


def _below(path: str, hidden) -> list:
    """The hidden paths that are `path` or lie beneath it."""
    prefix = path.rstrip("/") + "/"
    return [h for h in hidden if h == path or h.startswith(prefix)]


def hide_rules(rules, hidden, *, file=None) -> list:
    """`rules` [(path, access, optional)] with every path in `hidden` (real paths) left out.

    Landlock only grants, and a rule on a directory covers everything beneath it: a rule
    whose path holds a hidden entry is replaced by rules on that directory's other
    entries (as they are now: entries made later are not granted) and so on down to
    the hidden one; see _split."""
    out = []
    for path, access, optional in rules:
        real = os.path.realpath(path)
        below = _below(real, hidden)
        if not below:
            out.append((path, access, optional))
        elif os.path.exists(real):
            out.extend(_split(real, access, below, file))
    return out


def _split(d: str, access: int, hidden, file) -> list:
    """Rules that grant `access` beneath directory `d` except for the `hidden` paths in it.

    `d` itself carries no rule that reaches a hidden entry: no write right (that would
    let a hidden file be removed or a hidden directory be filled), and READ_DIR only
    where no hidden directory lies beneath (it would let that one be listed). Symlinks
    get no rule: what they point to is granted, or not, by its own path."""
    if d in hidden:
        return []
    out = []
    if access & READ_DIR and not any(os.path.isdir(h) for h in hidden):
        out.append((d, READ_DIR, True))
    try:
        names = sorted(os.listdir(d))
    except OSError as e:
        raise ProfileError(f"cannot list {d} to hide {hidden[0]} in it: {e.strerror}", file=file,
                           key="filesystem.hide") from None
    for name in names:
        child = os.path.join(d, name)
        below = _below(child, hidden)
        if below:
            out.extend(_split(child, access, below, file))
        elif not os.path.islink(child):
            out.append((child, access, True))  # optional: it may be gone by the launch
    return out
