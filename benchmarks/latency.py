"""1. Launch latency: from the call until a do-nothing child has exited.

Two programs (a static one built here, and /bin/true) through every launcher, all
interleaved in one round-robin, each as a call from this process.
"""

from __future__ import annotations

import dataclasses
import time

import isolate

from . import programs
from .stats import Ratio, Samples, Summary, interleaved

SUBPROCESS = "subprocess.run"
POSIX_SPAWN = "os.posix_spawn + waitpid"
MIN_DICT = "isolate: seccomp+rlimits+fds, dict profile passed each call"
MIN = "isolate: seccomp+rlimits+fds"
DEFAULT = "isolate: default (every namespace)"
STRICT = "isolate: strict"
BWRAP = "bwrap (flags ≈ strict)"
UNSHARE = "unshare(1), every namespace"
VARIANTS = [SUBPROCESS, POSIX_SPAWN, MIN_DICT, MIN, DEFAULT, STRICT, BWRAP, UNSHARE]
ISOLATE_VARIANTS = [MIN_DICT, MIN, DEFAULT, STRICT]

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

    def has(self, prog: str, variant: str) -> bool:
        return (prog, variant) in self.samples.wall_ms and bool(self.samples.wall_ms[(prog, variant)])

    def summary(self, prog: str, variant: str) -> Summary:
        return self.samples.summary((prog, variant))

    def ratio(self, prog: str, variant: str, to: str = SUBPROCESS) -> Ratio:
        return self.samples.ratio((prog, variant), (prog, to))


def _ready(variant: str, label: str, prog: str, external: dict, profiles: dict, notes: list[str]):
    """The launcher of one (program, variant), run once to check it works; or Skip."""
    if variant in external:
        programs.probe(external[variant], variant)
        return external[variant]
    profile, kwargs, note = programs.prepare_isolate(prog, profiles[variant])
    if note and note not in notes:
        notes.append(note)
    return programs.isolate_run(prog, profile, **kwargs)


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
    calls, skipped = {}, {}
    for label, prog in progs.items():
        bwrap_cmds[label], bwrap_notes = programs.bwrap_argv(prog)
        notes += [n for n in bwrap_notes if n not in notes]
        external = {
            SUBPROCESS: programs.subprocess_run(prog),
            POSIX_SPAWN: programs.posix_spawn(prog),
            BWRAP: programs.external(bwrap_cmds[label]),
            UNSHARE: programs.external(programs.unshare_argv(prog)),
        }
        for variant in VARIANTS:
            try:
                calls[(label, variant)] = _ready(variant, label, prog, external, profiles, notes)
            except programs.Skip as e:
                skipped[(label, variant)] = str(e)
                log(f"  latency: skipping {variant} / {label}: {e}")
    log(f"  latency: {len(calls)} variants interleaved, {rounds} rounds")
    samples = interleaved(calls, rounds, warmup=warmup, deadline=deadline)
    return LatencyResult(progs, samples, skipped, notes, bwrap_cmds, programs.unshare_argv("PROG"), minimal_dict,
                         len(next(iter(samples.wall_ms.values()))), time.monotonic() - t_begin)
