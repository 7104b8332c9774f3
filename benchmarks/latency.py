"""1. Launch latency: from the call until a do-nothing child has exited.

Two programs (a static one built here, and /bin/true) through every launcher, all
interleaved in one round-robin, each as a call from this process.

The warm variants hand a task to an isolate.WarmPool made once before the timed
loop. After each warm task the runner waits, untimed, until the pool is full again
(stats.interleaved's `settle`), so every timed task finds a ready sandbox; the
pool's refill still runs while the task runs, as it does in use. The pools' stats
(served_warm / served_cold) are kept to show that they did not run dry.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time

import isolate

from . import floor, programs
from .stats import Ratio, Samples, Summary, interleaved

SUBPROCESS = "subprocess.run"
POSIX_SPAWN = "os.posix_spawn + waitpid"
MIN_DICT = "isolate: seccomp+rlimits+fds, dict profile passed each call"
MIN = "isolate: seccomp+rlimits+fds"
DEFAULT = "isolate: default (every namespace)"
DEFAULT_WARM = "isolate: default, warm (WarmPool.run)"
STRICT = "isolate: strict"
STRICT_WARM = "isolate: strict, warm (WarmPool.run)"
BWRAP = "bwrap (flags ≈ strict)"
UNSHARE = "unshare(1), every namespace"
SANDLOCK = "sandlock: Sandbox.run (Landlock + seccomp, PyPI)"
FLOORS = list(floor.CONFIGS)
VARIANTS = [SUBPROCESS, POSIX_SPAWN, MIN_DICT, MIN, DEFAULT, DEFAULT_WARM, STRICT, STRICT_WARM, BWRAP, UNSHARE, SANDLOCK,
            *FLOORS]
# Each launcher -> the floor of what it enforces (benchmarks/floor.py), measured in the same round-robin.
FLOOR_OF = {SUBPROCESS: floor.PLAIN, POSIX_SPAWN: floor.PLAIN, MIN_DICT: floor.SECCOMP_ONLY, MIN: floor.SECCOMP_ONLY,
            DEFAULT: floor.DEFAULT_FLOOR, DEFAULT_WARM: floor.DEFAULT_FLOOR,
            STRICT: floor.STRICT_FLOOR, STRICT_WARM: floor.STRICT_FLOOR}
ISOLATE_VARIANTS = [MIN_DICT, MIN, DEFAULT, DEFAULT_WARM, STRICT, STRICT_WARM]
WARM_VARIANTS = {DEFAULT_WARM: DEFAULT, STRICT_WARM: STRICT}   # warm variant -> its cold counterpart

STATIC = "static noop (gcc -static -O2)"
TRUE = "/bin/true"


@dataclasses.dataclass
class LatencyResult:
    programs: dict[str, str]                 # program label -> path
    samples: Samples                         # keys: (program label, variant)
    skipped: dict[tuple[str, str], str]      # (program label, variant) -> why
    notes: list[str]
    bwrap_argv: dict[str, list[str]]         # program label -> the exact bwrap command
    unshare_argv: list[str]
    minimal_profile: dict                    # the seccomp+rlimits+fds profile, as used
    rounds: int
    seconds: float
    pool_size: int = programs.WARM_POOL_SIZE
    # (program label, warm variant) -> WarmPool.stats before the timed loop (after the
    # check launch and the wait for a full pool) and after it
    pool_stats: dict = dataclasses.field(default_factory=dict)

    def has(self, prog: str, variant: str) -> bool:
        return (prog, variant) in self.samples.wall_ms and bool(self.samples.wall_ms[(prog, variant)])

    def summary(self, prog: str, variant: str) -> Summary:
        return self.samples.summary((prog, variant))

    def ratio(self, prog: str, variant: str, to: str = SUBPROCESS) -> Ratio:
        return self.samples.ratio((prog, variant), (prog, to))

    def floor_ratio(self, prog: str, variant: str) -> Ratio | None:
        """`variant` against the floor of what it enforces, or None when either is missing."""
        f = FLOOR_OF.get(variant)
        if f is None or not self.has(prog, variant) or not self.has(prog, f):
            return None
        return self.ratio(prog, variant, f)


def _ready(variant: str, label: str, prog: str, external: dict, profiles: dict, notes: list[str]):
    """The launcher of one (program, variant), run once to check it works; or Skip."""
    if variant in external:
        programs.probe(external[variant], variant)
        return external[variant], None
    if variant in WARM_VARIANTS:
        pool, kwargs, note = programs.warm_pool(prog, profiles[WARM_VARIANTS[variant]])
        if note and note not in notes:
            notes.append(note)
        return programs.warm_run(pool, prog, **kwargs), pool
    profile, kwargs, note = programs.prepare_isolate(prog, profiles[variant])
    if note and note not in notes:
        notes.append(note)
    return programs.isolate_run(prog, profile, **kwargs), None


def measure(rounds: int, warmup: int = 5, deadline: float | None = None, log=print) -> LatencyResult:
    t_begin = time.monotonic()
    progs = {STATIC: str(programs.build_noop()), TRUE: programs.TRUE}
    notes: list[str] = []
    minimal_dict, note = programs.minimal_profile()
    if note:
        notes.append(note)
    profiles = {
        MIN_DICT: minimal_dict,                        # validated again by every call
        MIN: isolate.load_profile(minimal_dict),       # loaded once, as a caller launching often would
        DEFAULT: "default",
        STRICT: programs.STRICT_PROFILE,
    }
    bwrap_cmds: dict[str, list[str]] = {}
    calls, skipped, pools = {}, {}, {}
    try:
        floors = floor.Floor()
    except (programs.Skip, OSError, subprocess.CalledProcessError) as e:
        floors = None
        notes.append(f"The floor (benchmarks/floor.c) could not be measured: {e}")
    for label, prog in progs.items():
        bwrap_cmds[label], bwrap_notes = programs.bwrap_argv(prog)
        notes += [n for n in bwrap_notes if n not in notes]
        external = {
            SUBPROCESS: programs.subprocess_run(prog),
            POSIX_SPAWN: programs.posix_spawn(prog),
            BWRAP: programs.external(bwrap_cmds[label]),
            UNSHARE: programs.external(programs.unshare_argv(prog)),
        }
        external[SANDLOCK] = programs.sandlock_run(prog)
        if floors is not None:
            external.update({name: floors.launcher(name, prog) for name in FLOORS})
        for variant in VARIANTS:
            try:
                calls[(label, variant)], pool = _ready(variant, label, prog, external, profiles, notes)
                if pool is not None:
                    pools[(label, variant)] = pool
            except programs.Skip as e:
                skipped[(label, variant)] = str(e)
                log(f"  latency: skipping {variant} / {label}: {e}")
    log(f"  latency: {len(calls)} variants interleaved ({len(pools)} warm pools of {programs.WARM_POOL_SIZE}), "
        f"{rounds} rounds")
    try:
        before = {k: dict(p.stats) for k, p in pools.items()}
        samples = interleaved(calls, rounds, warmup=warmup, deadline=deadline,
                              settle={k: programs.settle(p) for k, p in pools.items()})
        stats = {k: {"before": before[k], "after": dict(p.stats)} for k, p in pools.items()}
    finally:
        programs.close_pools(pools.values())
    return LatencyResult(progs, samples, skipped, notes, bwrap_cmds, programs.unshare_argv("PROG"), minimal_dict,
                         len(next(iter(samples.wall_ms.values()))), time.monotonic() - t_begin,
                         programs.WARM_POOL_SIZE, stats)
