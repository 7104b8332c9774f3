"""The command line against its peers, end to end, with hyperfine.

    .venv/bin/python -m benchmarks.cli [--passes N] [--runs N] [--rounds N] [--python]

`isolate run -p strict|default -- /bin/true` (the native command, with a plan cached by
an untimed first call, in a cache directory of the run's own) against bwrap with flags
equivalent to each profile, unshare(1), firejail, `python3 -I -S -c pass` (what any
Python front costs), the program itself and, with --python, isolate's Python CLI.

hyperfine cannot interleave commands, so the hyperfine part is made of passes, each
timing every command in a rotated order; a ratio is the median over the passes of the
two medians of the same pass. The same commands are also timed round-robin (one launch
of each per round, posix_spawn + waitpid), which a load change hits alike.

bwrap has no seccomp filter, no cgroup and no Landlock in these commands (it has none of
them without extra plumbing); isolate's profiles have all three where they say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .stats import median, percentile

TRUE = "/bin/true"
ISOLATE_STRICT = "isolate run -p strict"
ISOLATE_DEFAULT = "isolate run -p default"
ISOLATE_PYTHON = "isolate run -p strict, Python CLI (ISOLATE_NATIVE=0)"
BWRAP_STRICT = "bwrap (flags ≈ strict)"
BWRAP_DEFAULT = "bwrap (flags ≈ default)"
UNSHARE = "unshare(1), every namespace"
FIREJAIL = "firejail (flags ≈ strict)"
PYTHON = "python3 -I -S -c pass"
BARE = "the program itself"
# isolate's command -> the peer it is judged against
PAIRS = {ISOLATE_STRICT: BWRAP_STRICT, ISOLATE_DEFAULT: BWRAP_DEFAULT}
NATIVE_HIT = "plan: cached, native launch"   # what `isolate run --timing` says on the fast path


def isolate_exe() -> str:
    exe = Path(sys.executable).with_name("isolate")
    return str(exe) if exe.exists() else (shutil.which("isolate") or "isolate")


def _merged_usr_links() -> list[str]:
    out = []
    for target, link in (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/sbin", "/sbin")):
        if os.path.isdir("/" + target):
            out += ["--symlink", target, link]
    return out


def bwrap_strict_argv(prog: str) -> list[str]:
    """Every namespace, nobody inside, hostname sandbox, a new root of /usr and the loader
    cache, tmpfs /tmp, /proc, /dev, cleared env, no capabilities."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--uid", "65534", "--gid", "65534",
            "--hostname", "sandbox", "--ro-bind", "/usr", "/usr", *_merged_usr_links()]
    if os.path.exists("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return argv + ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp", "--clearenv",
                   "--setenv", "PATH", "/usr/bin:/bin", "--cap-drop", "ALL", "--", prog]


def bwrap_default_argv(prog: str, cwd: str) -> list[str]:
    """What the default profile gives: /usr and /etc read-only with its secrets hidden, the
    working directory read-write, a private /tmp, /proc, /dev, the caller's ids."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "isolate",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", *_merged_usr_links()]
    for secret in ("/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers", "/etc/ssl/private"):
        if os.path.exists(secret):
            argv += ["--tmpfs", secret] if os.path.isdir(secret) else ["--ro-bind", "/dev/null", secret]
    return argv + ["--tmpfs", "/tmp", "--bind", cwd, cwd, "--proc", "/proc", "--dev", "/dev", "--chdir", cwd,
                   "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--cap-drop", "ALL", "--", prog]


def unshare_argv(prog: str) -> list[str]:
    return ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--net", "--mount", "--ipc", "--uts", prog]


def firejail_argv(prog: str) -> list[str]:
    return ["firejail", "--quiet", "--noprofile", "--net=none", "--private", "--private-dev", "--private-tmp",
            "--caps.drop=all", "--nonewprivs", "--seccomp", "--", prog]


def commands(prog: str = TRUE, cwd: str | None = None, python: bool = False) -> dict[str, list[str]]:
    iso = isolate_exe()
    cmds = {
        ISOLATE_STRICT: [iso, "run", "-p", "strict", "--", prog],
        ISOLATE_DEFAULT: [iso, "run", "-p", "default", "--", prog],
        BWRAP_STRICT: bwrap_strict_argv(prog),
        BWRAP_DEFAULT: bwrap_default_argv(prog, cwd or os.getcwd()),
        UNSHARE: unshare_argv(prog),
        FIREJAIL: firejail_argv(prog),
        PYTHON: [os.path.realpath(sys.executable), "-I", "-S", "-c", "pass"],
        BARE: [prog],
    }
    if python:
        cmds[ISOLATE_PYTHON] = ["env", "ISOLATE_NATIVE=0", iso, "run", "-p", "strict", "--", prog]
    return cmds


@dataclasses.dataclass
class CliResult:
    prog: str
    argv: dict[str, list[str]]
    times_ms: dict[str, list[float]]            # hyperfine: every run of every pass
    pass_medians: dict[str, list[float]]        # hyperfine: per pass
    rr_ms: dict[str, list[float]]               # round-robin
    skipped: dict[str, str]
    native_hit: dict[str, bool]                 # isolate command -> its --timing said NATIVE_HIT
    passes: int
    runs: int
    rounds: int
    version: str

    def has(self, name: str) -> bool:
        return bool(self.times_ms.get(name))

    def median(self, name: str) -> float:
        return median(self.times_ms[name])

    def p(self, name: str, q: float) -> float:
        return percentile(self.times_ms[name], q)

    def ratio(self, a: str, b: str) -> tuple[float, float, float]:
        """hyperfine: median over passes of a/b, with the lowest and highest pass."""
        per = [x / y for x, y in zip(self.pass_medians[a], self.pass_medians[b])]
        return median(per), min(per), max(per)

    def rr_ratio(self, a: str, b: str) -> float | None:
        if not self.rr_ms.get(a) or not self.rr_ms.get(b):
            return None
        return median(self.rr_ms[a]) / median(self.rr_ms[b])


def usable(argv: list[str], env=None, cwd=None) -> str | None:
    """None when the command runs and exits 0 here, else why not."""
    if not shutil.which(argv[0]):
        return f"{argv[0]} is not installed"
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, env=env, cwd=cwd)
    if r.returncode != 0:
        return f"exit status {r.returncode}: {r.stderr.decode(errors='replace').strip()[:200]}"
    return None


def round_robin(cmds: dict, env: dict, cwd: str, rounds: int) -> dict[str, list[float]]:
    """One launch of each command per round, posix_spawn + waitpid, timed with perf_counter_ns.
    The order is shuffled each round (seeded): what a command leaves to the kernel's workers
    after it has returned (a network namespace's cleanup, a cgroup's release) runs during
    the next command, and a fixed order (or a rotated one: the same neighbours) would make
    one command pay for its predecessor's every round."""
    times: dict = {n: [] for n in cmds}
    devnull = os.open(os.devnull, os.O_RDWR)
    exes = {n: shutil.which(c[0]) or c[0] for n, c in cmds.items()}
    names = list(cmds)
    order = random.Random(13)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        for _ in range(rounds):
            order.shuffle(names)
            for name in names:
                cmd = cmds[name]
                t = time.perf_counter_ns()
                pid = os.posix_spawn(exes[name], cmd, env, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1),
                                                                         (os.POSIX_SPAWN_DUP2, devnull, 2)])
                _, status = os.waitpid(pid, 0)
                times[name].append((time.perf_counter_ns() - t) / 1e6)
                if status != 0:
                    raise RuntimeError(f"{name} failed in the round-robin (wait status {status:#x})")
    finally:
        os.chdir(here)
        os.close(devnull)
    return times


def measure(prog: str = TRUE, passes: int = 3, runs: int = 30, warmup: int = 3, rounds: int = 100,
            python: bool = False, log=print) -> CliResult:
    with tempfile.TemporaryDirectory(prefix="isolate-bench-cli-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "cache"))  # a plan cache of this run's own
        env.pop("ISOLATE_NATIVE", None)
        argv = commands(prog, str(work), python)
        skipped, hit = {}, {}
        for name, cmd in list(argv.items()):
            why = usable(cmd, env, work)  # for isolate: the untimed first call, which stores the plan
            if why:
                skipped[name] = why
                log(f"  cli: skipping {name}: {why}")
                del argv[name]
        for name in (ISOLATE_STRICT, ISOLATE_DEFAULT):
            if name in argv:
                cmd = argv[name]
                r = subprocess.run([*cmd[:2], "--timing", *cmd[2:]], capture_output=True, text=True, env=env,
                                   cwd=work)
                hit[name] = NATIVE_HIT in r.stderr
                if not hit[name]:
                    log(f"  cli: {name} did not take the native path: {r.stderr.strip()[:200]}")
        names = list(argv)
        times = {n: [] for n in names}
        pass_medians = {n: [] for n in names}
        for p in range(passes):
            order = names[p % len(names):] + names[:p % len(names)]
            out = Path(tmp) / f"pass{p}.json"
            cmd = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                   "--export-json", str(out), *[subprocess.list2cmdline(argv[n]) for n in order]]
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=work)
            if r.returncode != 0:
                raise RuntimeError(f"hyperfine failed: {r.stderr.strip()[-500:]}")
            for n, res in zip(order, json.loads(out.read_text())["results"]):
                ms = [t * 1000 for t in res["times"]]
                times[n] += ms
                pass_medians[n].append(median(ms))
            log(f"  cli: hyperfine pass {p + 1}/{passes} done")
        rr = round_robin({n: c for n, c in argv.items() if n != ISOLATE_PYTHON}, env, str(work), rounds) \
            if rounds else {}
    version = subprocess.run(["hyperfine", "--version"], capture_output=True, text=True).stdout.strip()
    return CliResult(prog, argv, times, pass_medians, rr, skipped, hit, passes, runs, rounds, version)


def table(r: CliResult) -> list[str]:
    """Markdown rows: hyperfine medians, ratios to the strict-like bwrap, and the round-robin."""
    base = BWRAP_STRICT if r.has(BWRAP_STRICT) else None
    lines = [f"| command | median ms | p10 | p90 | × {BWRAP_STRICT} (passes) | round-robin median ms | × |",
             "|---|---|---|---|---|---|---|"]
    for name in r.times_ms:
        cell = "–"
        if base is not None:
            v, lo, hi = r.ratio(name, base)
            cell = f"{v:.2f}× ({lo:.2f}–{hi:.2f})"
        rr = f"{median(r.rr_ms[name]):.3g}" if r.rr_ms.get(name) else "–"
        rq = r.rr_ratio(name, base) if base else None
        lines.append(f"| {name} | {r.median(name):.3g} | {r.p(name, 10):.3g} | {r.p(name, 90):.3g} | {cell} | {rr} | "
                     + (f"{rq:.2f}×" if rq is not None else "–") + " |")
    lines += [f"| {name} | – | – | – | skipped: {why} | – | – |" for name, why in r.skipped.items()]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30, help="hyperfine runs per command and pass [30]")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=100, help="rounds of the round-robin [100]")
    ap.add_argument("--python", action="store_true", help="also the Python CLI (ISOLATE_NATIVE=0)")
    args = ap.parse_args(argv)
    r = measure(passes=args.passes, runs=args.runs, warmup=args.warmup, rounds=args.rounds, python=args.python,
                log=lambda m: print(m, file=sys.stderr))
    print("\n".join(table(r)))
    for a, b in PAIRS.items():
        if r.has(a) and r.has(b):
            v, lo, hi = r.ratio(a, b)
            print(f"{a} / {b}: {v:.2f}× (passes {lo:.2f}–{hi:.2f}); round-robin {r.rr_ratio(a, b) or 0:.2f}×")
    if not all(r.native_hit.values()):
        print("warning: an isolate command did not take the native path", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
