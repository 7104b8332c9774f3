"""This process's mounts (/proc/self/mountinfo) and cgroups (/proc/self/cgroup)."""

from __future__ import annotations

import dataclasses
import os

from . import procfs


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class Mount:
    root: str
    point: str
    fstype: str
    super_opts: tuple


def mounts() -> list[Mount]:
    out = []
    text = procfs.read("/proc/self/mountinfo", strip=True) or ""
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            out.append(Mount(_unescape(fields[3]), _unescape(fields[4]), fields[sep + 1],
                             tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else ()))
        except (ValueError, IndexError):
            continue
    return out


def own_cgroup_v2_path() -> str | None:
    for line in (procfs.read("/proc/self/cgroup", strip=True) or "").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def own_cgroup_v1_path(controller: str) -> str | None:
    for line in (procfs.read("/proc/self/cgroup", strip=True) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2]
    return None


def join(mount: Mount, path: str | None) -> str | None:
    """Directory of cgroup `path` (as in /proc/self/cgroup) under `mount`, if it is visible there."""
    if path is None:
        return None
    root = mount.root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None
    rel = path[len(root):].lstrip("/")
    return os.path.join(mount.point, rel) if rel else mount.point
