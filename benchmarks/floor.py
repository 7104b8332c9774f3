"""The launch floor: raw clone+exec in each isolation configuration, measured by a small
C library built here (benchmarks/floor.c) and called through ctypes from the same
round-robin as isolate, so that every isolate figure is shown against its floor.

The configurations are cumulative, in the order the kernel work adds up:

    plain                 clone(CLONE_VM|CLONE_VFORK) + execve
    + seccomp             no_new_privs + a BPF filter (what a profile without namespaces adds)
    + namespaces          user, pid, ipc, uts, mount; the child writes its own id maps
    + pooled netns        a prepared network namespace, joined around the clone
    + minimal view        tmpfs root, read-only /usr, /proc, pivot_root
    + seccomp (default)   the default profile's filter
    + seccomp + Landlock (strict)  the strict profile's filter and a Landlock ruleset

Each isolate variant is compared with the floor of what it enforces (FLOOR_OF).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path
from typing import Callable

import isolate

from . import programs

SOURCE = programs.HERE / "floor.c"

NS, NETNS_POOL, NETNS_NEW, VIEW, SECCOMP, LANDLOCK = 1, 2, 4, 8, 16, 32
SLOT_DEFAULT, SLOT_STRICT = 0, 1


def _slot(n: int) -> int:
    return n << 8


PLAIN = "floor: clone+exec"
SECCOMP_ONLY = "floor: + seccomp (default's filter)"
NAMESPACES = "floor: + user, pid, ipc, uts, mount ns"
POOLED = "floor: + pooled netns"
VIEW_ = "floor: + minimal view (tmpfs root, ro /usr, /proc, pivot_root)"
DEFAULT_FLOOR = "floor: + default's seccomp filter"
STRICT_FLOOR = "floor: + strict's filter and Landlock"
FRESH_NETNS = "floor: strict's, with a fresh netns instead of the pool"

CONFIGS = {
    PLAIN: 0,
    SECCOMP_ONLY: SECCOMP | _slot(SLOT_DEFAULT),
    NAMESPACES: NS,
    POOLED: NS | NETNS_POOL,
    VIEW_: NS | NETNS_POOL | VIEW,
    DEFAULT_FLOOR: NS | NETNS_POOL | VIEW | SECCOMP | _slot(SLOT_DEFAULT),
    STRICT_FLOOR: NS | NETNS_POOL | VIEW | SECCOMP | LANDLOCK | _slot(SLOT_STRICT),
    FRESH_NETNS: NS | NETNS_NEW | VIEW | SECCOMP | LANDLOCK | _slot(SLOT_STRICT),
}


def build(build_dir: Path = programs.BUILD_DIR) -> Path:
    """Compile floor.c into a shared library (rebuilt when the source is newer)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    lib = build_dir / "libfloor.so"
    if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return lib
    tmp = build_dir / f".libfloor.{os.getpid()}.so"
    subprocess.run(["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)], check=True)
    os.replace(tmp, lib)  # atomic: a concurrent run never loads half a library
    return lib


class Floor:
    """The loaded library, with the default and strict profiles' filters in its slots."""

    def __init__(self, lib: Path | None = None):
        self.lib = ctypes.CDLL(str(lib or build()))
        self.lib.floor_init.restype = ctypes.c_int
        self.lib.floor_launch.argtypes = [ctypes.c_int, ctypes.c_char_p]
        self.lib.floor_launch.restype = ctypes.c_int
        self.lib.floor_run.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self.lib.floor_run.restype = ctypes.c_int
        self.lib.floor_set_filter.argtypes = [ctypes.c_uint, ctypes.c_char_p, ctypes.c_uint]
        self.lib.floor_set_filter.restype = ctypes.c_int
        rc = self.lib.floor_init()
        if rc < 0:
            raise programs.Skip(f"the floor library could not prepare itself: {os.strerror(-rc)}")
        for slot, profile in ((SLOT_DEFAULT, "default"), (SLOT_STRICT, programs.STRICT_PROFILE)):
            bpf = isolate.plan_for(profile).bpf
            if not bpf or len(bpf) % 8:
                raise programs.Skip(f"the {profile} profile has no seccomp filter to measure")
            rc = self.lib.floor_set_filter(slot, bpf, len(bpf) // 8)
            if rc < 0:
                raise programs.Skip(f"floor_set_filter({profile}): {os.strerror(-rc)}")

    def launch(self, config: str, prog: str) -> int:
        """One launch; the wait status, or OSError for the step that failed."""
        rc = self.lib.floor_launch(CONFIGS[config], os.fsencode(prog))
        if rc < 0:
            raise OSError(-rc, f"{config}: {os.strerror(-rc)}")
        return rc

    def run(self, config: str, argv: list[str]) -> int:
        """A launch with arguments (for checking what a configuration gives): the wait status."""
        arr = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
        rc = self.lib.floor_run(CONFIGS[config], arr)
        if rc < 0:
            raise OSError(-rc, f"{config}: {os.strerror(-rc)}")
        return rc

    def launcher(self, config: str, prog: str) -> Callable[[], None]:
        def call():
            status = self.launch(config, prog)
            if status != 0:
                raise RuntimeError(f"{config}: {prog} ended with wait status {status:#x}")
        return call
