"""Where this process can make cgroups with given controllers (v2 preferred, else v1).

What isolate.launch.cgroup makes per launch, in the directory find() names here."""

from __future__ import annotations

import os

from . import features as features_mod
from . import mounts as mounts_mod
from . import procfs

FEATURE_OF = {"memory": "cgroup_memory_limit", "pids": "cgroup_pids_limit"}


# ---- where cgroups can be made -------------------------------------------------------


def _v2_candidates() -> list[tuple[str, bool]]:
    """(directory, is the hierarchy's root) of cgroup v2 directories to try, best first:
    our own cgroup (a delegated subtree), then the root of the hierarchy."""
    mounts = [m for m in mounts_mod.mounts() if m.fstype == "cgroup2"]
    mounts.sort(key=lambda m: m.point != "/sys/fs/cgroup")
    own_path = mounts_mod.own_cgroup_v2_path()
    out: list[tuple[str, bool]] = []
    for m in mounts:
        own = mounts_mod.join(m, own_path)
        for d, is_root in ((own, own == m.point and m.root == "/"), (m.point, m.root == "/")):
            if d and all(d != x for x, _ in out):
                out.append((d, is_root))
    return out


def _v2_usable(d: str, is_root: bool, ctrls: tuple[str, ...]) -> str | None:
    """None when children of `d` can get `ctrls`, else why not."""
    sub = os.path.join(d, "cgroup.subtree_control")
    if not (os.access(d, os.W_OK) and os.access(sub, os.W_OK)):
        return f"{d} is not writable"
    offered = (procfs.read(os.path.join(d, "cgroup.controllers")) or "").split()
    missing = [c for c in ctrls if c not in offered]
    if missing:
        return f"{d} does not offer {' '.join(missing)}"
    enabled = (procfs.read(sub) or "").split()
    if all(c in enabled for c in ctrls) or is_root:
        return None
    # Enabling a controller for the children of a cgroup that holds processes is EBUSY
    # (no internal processes), and our own cgroup holds at least us.
    if (procfs.read(os.path.join(d, "cgroup.procs")) or "").split():
        return f"{d} holds processes, so its children cannot get {' '.join(ctrls)}"
    return None


def _v1_dirs(ctrls: tuple[str, ...]) -> tuple[dict[str, str] | None, str]:
    mounts = mounts_mod.mounts()
    out = {}
    for c in ctrls:
        m = next((m for m in mounts if m.fstype == "cgroup" and c in m.super_opts), None)
        if m is None:
            return None, f"no cgroup v1 {c} hierarchy"
        own = mounts_mod.join(m, mounts_mod.own_cgroup_v1_path(c))
        d = next((d for d in dict.fromkeys(x for x in (m.point, own) if x) if os.access(d, os.W_OK)), None)
        if d is None:
            return None, f"{m.point} is not writable"
        out[c] = d
    return out, ""


def find(ctrls: tuple[str, ...]) -> tuple[str | None, dict[str, str], str]:
    """(version "v2"/"v1" or None, controller -> base directory, why none) for `ctrls`.

    v2 when one writable directory offers every controller, else v1 when every
    controller has a writable v1 hierarchy. Features that isolate.kernel.features reports as
    missing (or ISOLATE_DOCTOR_DISABLE disables) are never used.
    """
    feats = features_mod.features()
    for c in ctrls:
        f = feats.get(FEATURE_OF[c])
        if f is None or not f.available:
            return None, {}, f"no writable cgroup with the {c} controller ({f.detail if f else 'not probed'})"
    why = []
    for d, is_root in _v2_candidates():
        reason = _v2_usable(d, is_root, ctrls)
        if reason is None:
            return "v2", {c: d for c in ctrls}, ""
        why.append(f"v2: {reason}")
    dirs, reason = _v1_dirs(ctrls)
    if dirs is not None:
        return "v1", dirs, ""
    why.append(f"v1: {reason}")
    return None, {}, "; ".join(why)
