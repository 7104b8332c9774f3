"""`isolate run` end to end from a shell, against bubblewrap, side by side in one hyperfine run.

    .venv/bin/python -m benchmarks.cli [--runs N] [--warmup N] [--python]

Commands (all exec'd directly by hyperfine -N, from one scratch directory):
  * bwrap with strict-like flags (every namespace, nobody inside, a new root of /usr and
    the loader cache, tmpfs /tmp, /proc, /dev, cleared env, no capabilities; no seccomp
    filter and no cgroup: bwrap has neither without extra plumbing),
  * bwrap with default-like flags (the same with /etc read-only and the directory read-write,
    the caller's ids),
  * the native `isolate run -p strict -- /bin/true` and `-p default` with a cached plan,
  * with --python: the same through the Python CLI (ISOLATE_NATIVE=0), for reference.

measure() returns the numbers (milliseconds) and the ratios to the strict-like bwrap;
main() prints them as a markdown table (docs/cli-fast-path.md has one). Besides hyperfine
(all runs of one command, then the next), the same commands are also timed round-robin,
which is fairer on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NATIVE = REPO / "isolate" / "launch" / "isolate-native"

BWRAP_STRICT = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--uid", "65534", "--gid", "65534",
                "--hostname", "sandbox", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
                "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache", "--tmpfs", "/tmp", "--proc", "/proc",
                "--dev", "/dev", "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin",
                "--cap-drop", "ALL", "--", "/bin/true"]


def _bwrap_default(cwd: str) -> list:
    return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "isolate",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--symlink", "usr/bin", "/bin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
            "--tmpfs", "/tmp", "--bind", cwd, cwd, "--proc", "/proc", "--dev", "/dev", "--chdir", cwd,
            "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--cap-drop", "ALL", "--", "/bin/true"]


def _isolate_bin(scratch: Path) -> Path:
    """The native command, with the venv's isolate-py beside it (as scripts/install.sh leaves it)."""
    bindir = scratch / "bin"
    bindir.mkdir()
    exe = bindir / "isolate"
    shutil.copy(NATIVE, exe)
    (bindir / "isolate-py").symlink_to(Path(sys.executable).parent / "isolate-py")
    return exe


def measure(runs: int = 50, warmup: int = 5, python: bool = False, rounds: int = 200) -> dict:
    """{"commands": {name: {"mean_ms", "median_ms", "stddev_ms", "min_ms"}} (hyperfine),
    "ratios" / "median_ratios": {name: mean or median / that of bwrap strict-like},
    "interleaved_median_ms" / "interleaved_ratios": the same commands round-robin, `rounds`
    rounds (the Python CLI left out), "native_hit": bool}."""
    if not shutil.which("hyperfine") or not shutil.which("bwrap"):
        raise RuntimeError("benchmarks.cli needs hyperfine and bwrap (scripts/install.sh installs them)")
    with tempfile.TemporaryDirectory(prefix="isolate-bench-cli-") as tmp:
        scratch = Path(tmp)
        work = scratch / "work"
        work.mkdir()
        exe = _isolate_bin(scratch)
        env = dict(os.environ, XDG_CACHE_HOME=str(scratch / "cache"))
        env.pop("ISOLATE_NATIVE", None)
        hit = True
        for profile in ("strict", "default"):  # fill the cache: the first run is Python's
            for _ in range(2):
                r = subprocess.run([str(exe), "run", "--timing", "-p", profile, "--", "/bin/true"], cwd=work, env=env,
                                   capture_output=True, text=True)
            hit = hit and "plan: cached, native launch" in r.stderr
        cmds = {
            "bwrap strict-like": BWRAP_STRICT,
            "bwrap default-like": _bwrap_default(str(work)),
            "isolate run -p strict (native)": [str(exe), "run", "-p", "strict", "--", "/bin/true"],
            "isolate run -p default (native)": [str(exe), "run", "-p", "default", "--", "/bin/true"],
        }
        if python:
            cmds["isolate run -p strict (Python)"] = ["env", "ISOLATE_NATIVE=0", str(exe), "run", "-p", "strict",
                                                      "--", "/bin/true"]
        out = scratch / "hyperfine.json"
        argv = ["hyperfine", "-N", "-w", str(warmup), "-r", str(runs), "--export-json", str(out)]
        for name, cmd in cmds.items():
            argv += ["-n", name, subprocess.list2cmdline(cmd)]
        subprocess.run(argv, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = json.loads(out.read_text())["results"]
        rr = interleaved({n: c for n, c in cmds.items() if "Python" not in n}, str(work), env, rounds)
    commands = {}
    for r in results:
        commands[r["command"]] = {"mean_ms": r["mean"] * 1e3, "median_ms": r["median"] * 1e3,
                                  "stddev_ms": (r["stddev"] or 0) * 1e3, "min_ms": r["min"] * 1e3}
    base = commands["bwrap strict-like"]["mean_ms"]
    base_med = commands["bwrap strict-like"]["median_ms"]
    rr_base = rr["bwrap strict-like"]
    return {"commands": commands, "native_hit": hit, "runs": runs, "rounds": rounds,
            "interleaved_median_ms": rr, "interleaved_ratios": {n: v / rr_base for n, v in rr.items()},
            "ratios": {n: c["mean_ms"] / base for n, c in commands.items()},
            "median_ratios": {n: c["median_ms"] / base_med for n, c in commands.items()}}


def interleaved(cmds: dict, cwd: str, env: dict, rounds: int) -> dict:
    """Round-robin, one launch of each command per round (posix_spawn + waitpid, timed with
    perf_counter_ns): a load change on a shared machine hits every command alike.
    {name: median ms}."""
    import statistics
    import time

    times: dict = {n: [] for n in cmds}
    devnull = os.open(os.devnull, os.O_RDWR)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        for _ in range(rounds):
            for name, cmd in cmds.items():
                t = time.perf_counter_ns()
                pid = os.posix_spawn(shutil.which(cmd[0]) or cmd[0], cmd, env,
                                     file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
                os.waitpid(pid, 0)
                times[name].append((time.perf_counter_ns() - t) / 1e6)
    finally:
        os.chdir(here)
        os.close(devnull)
    return {n: statistics.median(v) for n, v in times.items()}


def table(result: dict) -> str:
    lines = ["| command | hyperfine mean | median | min | × bwrap strict-like (mean / median) "
             f"| interleaved median ({result['rounds']} rounds) | × bwrap |", "|---|---|---|---|---|---|---|"]
    rr, rq = result["interleaved_median_ms"], result["interleaved_ratios"]
    for name, c in result["commands"].items():
        inter = f"{rr[name]:.2f} ms | {rq[name]:.2f}" if name in rr else "- | -"
        lines.append(f"| {name} | {c['mean_ms']:.2f} ms ± {c['stddev_ms']:.2f} | {c['median_ms']:.2f} ms | "
                     f"{c['min_ms']:.2f} ms | {result['ratios'][name]:.2f} / {result['median_ratios'][name]:.2f} "
                     f"| {inter} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=200, help="rounds of the interleaved measurement [200]")
    ap.add_argument("--python", action="store_true", help="also the Python CLI (ISOLATE_NATIVE=0)")
    args = ap.parse_args(argv)
    result = measure(args.runs, args.warmup, args.python, args.rounds)
    print(table(result))
    if not result["native_hit"]:
        print("\nwarning: the native command did not find its cached plan", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
