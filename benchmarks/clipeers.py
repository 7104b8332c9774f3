"""The command line against its peers, end to end, with hyperfine.

`isolate run -p strict|default -- PROG` against bwrap with flags equivalent to each
profile, unshare(1), firejail, `python3 -I -S -c pass` (what any Python front costs)
and PROG itself. hyperfine cannot interleave commands, so the run is made of passes,
each timing every command once in a rotated order; a ratio is the median over the
passes of (median of A in the pass / median of B in the same pass).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import programs
from .stats import median, percentile

ISOLATE_STRICT = "isolate run -p strict"
ISOLATE_DEFAULT = "isolate run -p default"
BWRAP_STRICT = "bwrap (flags ≈ strict)"
BWRAP_DEFAULT = "bwrap (flags ≈ default)"
UNSHARE = "unshare(1), every namespace"
FIREJAIL = "firejail (flags ≈ strict)"
PYTHON = "python3 -I -S -c pass"
BARE = "the program itself"
# isolate's command -> the peer it is judged against
PAIRS = {ISOLATE_STRICT: BWRAP_STRICT, ISOLATE_DEFAULT: BWRAP_DEFAULT}


def isolate_exe() -> str:
    exe = Path(sys.executable).with_name("isolate")
    return str(exe) if exe.exists() else (shutil.which("isolate") or "isolate")


def bwrap_default_argv(prog: str) -> list[str]:
    """bwrap with what the default profile gives: /usr and /etc read-only (its secrets
    hidden), the working directory read-write, a private /tmp, /proc, /dev."""
    argv, _ = programs.bwrap_argv(prog)
    head, tail = argv[:argv.index("--clearenv")], argv[argv.index("--clearenv"):]
    head += ["--ro-bind", "/etc", "/etc"]
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers", "/etc/ssl/private"):
        if os.path.exists(secret):
            head += ["--tmpfs", secret] if os.path.isdir(secret) else ["--ro-bind", "/dev/null", secret]
    cwd = os.getcwd()
    head += ["--bind", cwd, cwd, "--chdir", cwd]
    return head + tail


def firejail_argv(prog: str) -> list[str]:
    return ["firejail", "--quiet", "--noprofile", "--net=none", "--private", "--private-dev", "--private-tmp",
            "--caps.drop=all", "--nonewprivs", "--seccomp", "--", prog]


def commands(prog: str) -> dict[str, list[str]]:
    iso = isolate_exe()
    bw_strict, _ = programs.bwrap_argv(prog)
    return {
        ISOLATE_STRICT: [iso, "run", "-p", "strict", "--", prog],
        ISOLATE_DEFAULT: [iso, "run", "-p", "default", "--", prog],
        BWRAP_STRICT: bw_strict,
        BWRAP_DEFAULT: bwrap_default_argv(prog),
        UNSHARE: programs.unshare_argv(prog),
        FIREJAIL: firejail_argv(prog),
        PYTHON: [os.path.realpath(sys.executable), "-I", "-S", "-c", "pass"],
        BARE: [prog],
    }


@dataclasses.dataclass
class CliResult:
    prog: str
    argv: dict[str, list[str]]
    times_ms: dict[str, list[float]]            # every run of every pass
    pass_medians: dict[str, list[float]]        # per pass
    skipped: dict[str, str]
    passes: int
    runs: int
    version: str

    def has(self, name: str) -> bool:
        return bool(self.times_ms.get(name))

    def median(self, name: str) -> float:
        return median(self.times_ms[name])

    def ratio(self, a: str, b: str) -> tuple[float, float, float]:
        """median over passes of a/b, with the lowest and highest pass."""
        per = [x / y for x, y in zip(self.pass_medians[a], self.pass_medians[b])]
        return median(per), min(per), max(per)

    def p(self, name: str, q: float) -> float:
        return percentile(self.times_ms[name], q)


def usable(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return f"{argv[0]} is not installed"
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        return f"exit status {r.returncode}: {r.stderr.decode(errors='replace').strip()[:200]}"
    return None


def measure(prog: str = programs.TRUE, passes: int = 3, runs: int = 30, warmup: int = 3, log=print) -> CliResult:
    argv = commands(prog)
    skipped = {}
    for name, cmd in list(argv.items()):
        why = usable(cmd)  # also fills isolate's plan cache, as a first call would
        if why:
            skipped[name] = why
            log(f"  cli: skipping {name}: {why}")
            del argv[name]
    names = list(argv)
    times = {n: [] for n in names}
    pass_medians = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(passes):
            order = names[p % len(names):] + names[:p % len(names)]
            out = Path(tmp) / f"pass{p}.json"
            cmd = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                   "--export-json", str(out), *[subprocess.list2cmdline(argv[n]) for n in order]]
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"hyperfine failed: {r.stderr.strip()[-500:]}")
            data = json.loads(out.read_text())
            for n, res in zip(order, data["results"]):
                ms = [t * 1000 for t in res["times"]]
                times[n] += ms
                pass_medians[n].append(median(ms))
            log(f"  cli: pass {p + 1}/{passes} done")
    version = subprocess.run(["hyperfine", "--version"], capture_output=True, text=True).stdout.strip()
    return CliResult(prog, argv, times, pass_medians, skipped, passes, runs, version)


def main() -> int:
    r = measure()
    for n in r.times_ms:
        print(f"{r.median(n):8.2f} ms  {n}")
    for a, b in PAIRS.items():
        if r.has(a) and r.has(b):
            v, lo, hi = r.ratio(a, b)
            print(f"{a} / {b}: {v:.2f}x (passes {lo:.2f}-{hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
