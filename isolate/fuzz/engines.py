"""The fuzzing engines the runner drives, unchanged: how to find them, what a target
built for each looks like, the command line of one job, how to read its stats
(execs, exec/s, corpus size) and where it leaves crash/timeout/OOM/leak artifacts.

libFuzzer is linked into the target (clang -fsanitize=fuzzer); AFL++ is afl-fuzz
(Debian's afl++) driving a target built with afl-clang-fast (forkserver) or
afl-clang-fast -fsanitize=fuzzer (persistent, libAFLDriver); honggfuzz is not packaged
in Debian 12 and is found only if installed by hand; "plain" is a binary taking one
input file (@@), run in batches by plain_driver.py inside the sandbox.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil

ENGINES = ("libfuzzer", "afl", "honggfuzz", "plain")

# libFuzzer (clang 14) exit codes.
LIBFUZZER_EXIT = {1: "crash", 77: "crash", 70: "timeout", 71: "oom", 72: "interrupted"}


class EngineError(ValueError):
    """A target, engine or argument the runner cannot use (the CLI exits 2)."""


@dataclasses.dataclass
class Stats:
    execs: int = 0
    exec_per_s: float = 0.0
    corpus_size: int = 0
    crashes: int = 0
    unique: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    name: str
    found: bool
    path: str | None
    detail: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _clang_fuzzer_runtime() -> str | None:
    hits = sorted(glob.glob("/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a"))
    return hits[-1] if hits else None


def detect() -> dict[str, EngineInfo]:
    """Which engines are usable here (isolate doctor and `isolate fuzz engines` print this)."""
    clang = shutil.which("clang") or shutil.which("clang-14")
    rt = _clang_fuzzer_runtime()
    afl = shutil.which("afl-fuzz")
    hf = shutil.which("honggfuzz")
    out = {
        "libfuzzer": EngineInfo("libfuzzer", bool(rt), rt,
                                (f"clang {clang}, runtime {rt}" if clang else f"runtime {rt} (no clang in PATH)")
                                if rt else "no libclang_rt.fuzzer (apt-get install clang-14 libclang-rt-14-dev); "
                                "a target already built with -fsanitize=fuzzer still runs"),
        "afl": EngineInfo("afl", bool(afl), afl, f"afl-fuzz {afl}" + (
            f", afl-clang-fast {shutil.which('afl-clang-fast')}" if shutil.which("afl-clang-fast") else "")
            if afl else "no afl-fuzz (apt-get install afl++)"),
        "honggfuzz": EngineInfo("honggfuzz", bool(hf), hf, f"honggfuzz {hf}" if hf else
                                "no honggfuzz (Debian 12 does not package it; build it from source)"),
        "plain": EngineInfo("plain", True, None, "built in: the target takes one input file (@@)"),
    }
    return out


def engines_report() -> list[str]:
    """Lines for a report: one per engine."""
    return [f"{e.name:10} {'yes' if e.found else 'no ':3}  {e.detail}" for e in detect().values()]


def _read_head(path: str, limit: int = 64 << 20) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def check_target(engine: str, target: str, args: list[str]) -> str:
    """The target's absolute path if `engine` can run it, else EngineError saying why."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    info = detect()[engine]
    if engine in ("afl", "honggfuzz") and not info.found:
        raise EngineError(f"--engine {engine}: not installed here ({info.detail})")
    path = os.path.abspath(target)
    if not os.path.isfile(path):
        raise EngineError(f"TARGET {target}: no such file")
    if not os.access(path, os.X_OK):
        raise EngineError(f"TARGET {target}: not executable")
    head = _read_head(path)
    if engine != "plain" and not head.startswith(b"\x7fELF"):
        raise EngineError(f"TARGET {target}: not an ELF binary, so not a {engine} fuzz target")
    if engine == "libfuzzer" and not (b"LLVMFuzzerTestOneInput" in head and b"libFuzzer" in head):
        raise EngineError(f"TARGET {target}: not a libFuzzer target (no LLVMFuzzerTestOneInput linked with "
                          "libFuzzer: build it with clang -fsanitize=fuzzer)")
    if engine == "afl" and b"__AFL_SHM_ID" not in head:
        raise EngineError(f"TARGET {target}: not an AFL++ target (no AFL instrumentation: build it with "
                          "afl-clang-fast, or afl-clang-fast -fsanitize=fuzzer for persistent mode)")
    if engine == "honggfuzz" and b"HF_ITER" not in head and b"LLVMFuzzerTestOneInput" not in head \
            and b"hfuzz" not in head:
        raise EngineError(f"TARGET {target}: not a honggfuzz target (build it with hfuzz-clang)")
    if engine == "plain" and "@@" not in args:
        raise EngineError("plain: the target's arguments must contain @@ (where the input file's path goes)")
    return path


def is_persistent(target: str) -> bool:
    """An AFL++ target in persistent mode (__AFL_LOOP or libAFLDriver)."""
    return b"##SIG_AFL_PERSISTENT##" in _read_head(target)


@dataclasses.dataclass
class JobSpec:
    """What one job runs: argv, extra environment, and where its outputs go (host paths;
    the sandbox sees them at the same paths)."""
    argv: list[str]
    env: dict[str, str]
    job_dir: str
    artifacts_glob: list[str]
    rw: list = dataclasses.field(default_factory=list)   # what the job writes besides job_dir
    ro: list = dataclasses.field(default_factory=list)   # what it reads besides the target and seeds
    stats_dir: str = ""                                  # afl-fuzz: its instance directory (fuzzer_stats)


def afl_instance(index: int, jobs: int) -> tuple[list[str], str]:
    """afl-fuzz's -M/-S options and instance name for job `index` of `jobs`: one job is
    afl-fuzz's "default" instance; with several, job 0 is the main (-M) and the others
    secondaries (-S), all syncing through one sync directory."""
    if jobs <= 1:
        return [], "default"
    name = f"job{index}"
    return (["-M", name] if index == 0 else ["-S", name]), name


def command(engine: str, target: str, args: list[str], *, seeds: str, job_dir: str, time_s: float,
            timeout_s: float, rss_limit_mb: int, driver: str | None = None, shared: str | None = None,
            index: int = 0, jobs: int = 1, seed: int | None = None) -> JobSpec:
    """The command line of one job of `engine` writing into job_dir (artifacts/, corpus/).

    `shared` is the directory every job of a run shares: libFuzzer's corpus (each job adds
    its new units there and reloads the others' with -reload=1), afl-fuzz's sync directory
    (each job writes only its own instance directory in it and reads the others'). Without
    it the job keeps its corpus in job_dir (libFuzzer) or job_dir/afl (afl-fuzz). `seed`
    fixes the engine's random seed (libFuzzer -seed, afl-fuzz -s)."""
    corpus = os.path.join(job_dir, "corpus") if shared is None or engine not in ("libfuzzer",) else shared
    artifacts = os.path.join(job_dir, "artifacts")
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    t = max(1, round(time_s))
    if engine == "libfuzzer":
        argv = [target, *args, f"-max_total_time={t}", f"-timeout={max(1, int(timeout_s))}",
                f"-rss_limit_mb={rss_limit_mb}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
                *([f"-seed={seed}"] if seed is not None else []), "-reload=1", corpus, seeds]
        # dedup_token_length: each report ends with a DEDUP_TOKEN line (top 3 frames), counted live
        # as the job's unique crashes (triage's crash states are the final word; the token needs
        # symbolized frames: ~65 ms of llvm-symbolizer per report, paid once per restart).
        env = {"ASAN_OPTIONS": "symbolize=1:detect_leaks=1:dedup_token_length=3",
               "UBSAN_OPTIONS": "print_stacktrace=1:dedup_token_length=3"}
        return JobSpec(argv, env, job_dir, [os.path.join(artifacts, p) for p in
                                            ("crash-*", "leak-*", "timeout-*", "oom-*")],
                       rw=[corpus] if corpus != os.path.join(job_dir, "corpus") else [])
    if engine == "afl":
        afl_in = seeds
        if not any(os.path.isfile(os.path.join(seeds, f)) and os.path.getsize(os.path.join(seeds, f))
                   for f in os.listdir(seeds)):
            afl_in = os.path.join(job_dir, "seeds")  # afl-fuzz refuses an empty -i
            os.makedirs(afl_in, exist_ok=True)
            with open(os.path.join(afl_in, "seed"), "wb") as f:
                f.write(b"a")
        out = shared if shared is not None else os.path.join(job_dir, "afl")
        mode, name = afl_instance(index, jobs)
        instance = os.path.join(out, name)
        os.makedirs(instance, exist_ok=True)
        argv = [shutil.which("afl-fuzz") or "afl-fuzz", "-i", afl_in, "-o", out, *mode, "-V", str(t),
                "-t", str(max(1, int(timeout_s * 1000))), "-m", "none",
                *(["-s", str(seed)] if seed is not None else []), "--", target, *args]
        env = {"AFL_NO_UI": "1", "AFL_SKIP_CPUFREQ": "1", "AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES": "1",
               "AFL_NO_AFFINITY": "1", "AFL_SKIP_CRASHES": "1", "AFL_FORKSRV_INIT_TMOUT": "10000",
               # afl-fuzz's own defaults (abort_on_error=1, symbolize=0 are required) plus leak
               # detection (LeakSanitizer at each exit, a leak is a crash) and ASan's own RSS limit,
               # so that an OOM is the sanitizer's report with its input, below the cgroup's limit.
               # (not afl-fuzz's malloc_context_size=0: LeakSanitizer reports no leak without allocation stacks)
               "ASAN_OPTIONS": "abort_on_error=1:symbolize=0:detect_leaks=1:"
                               f"allocator_may_return_null=1:detect_odr_violation=0:hard_rss_limit_mb={rss_limit_mb}:"
                               "handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0:handle_sigill=0",
               "LSAN_OPTIONS": "exitcode=23:fast_unwind_on_malloc=0:symbolize=0:print_suppressions=0"}
        if jobs > 1:
            env["AFL_SYNC_TIME"] = "1"   # minutes between syncs (afl-fuzz's default: 30)
        # A job writes only its own instance directory of a shared sync directory; it reads the others'.
        return JobSpec(argv, env, job_dir, [os.path.join(instance, d, "id:*") for d in ("crashes", "hangs")],
                       rw=[instance] if shared is not None else [], ro=[out] if shared is not None else [],
                       stats_dir=instance)
    if engine == "honggfuzz":
        argv = [shutil.which("honggfuzz") or "honggfuzz", "-i", seeds, "-o", corpus, "-W", artifacts,
                "--run_time", str(t), "-t", str(max(1, int(timeout_s))), "--rlimit_rss", str(rss_limit_mb),
                "-n", "1", "--", target, *args]
        return JobSpec(argv, {}, job_dir, [os.path.join(artifacts, "*.fuzz")])
    if engine == "plain":
        python = "/usr/bin/python3"  # the system Python: /usr is in the sandbox, a venv or pyenv may not be
        argv = [python, "-I", driver or "", "--seeds", seeds, "--corpus", corpus, "--artifacts", artifacts,
                "--time", str(t), "--timeout", str(timeout_s), "--", target, *args]
        return JobSpec(argv, {}, job_dir, [os.path.join(artifacts, p) for p in ("crash-*", "timeout-*")])
    raise EngineError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")


def artifacts(spec: JobSpec) -> list[str]:
    found = []
    for pattern in spec.artifacts_glob:
        found.extend(p for p in glob.glob(pattern) if os.path.isfile(p))
    return sorted(set(found))


# ---- stats ------------------------------------------------------------------------------

_LF_STATUS = re.compile(r"^#(\d+)\s+\w+.*?exec/s: (\d+)")
_LF_CORP = re.compile(r"corp: (\d+)/")
_LF_FINAL = re.compile(r"^stat::(number_of_executed_units|average_exec_per_sec):\s*(\d+)")
_PLAIN = re.compile(r"^#plain execs: (\d+) exec/s: ([\d.]+) corpus: (\d+) crashes: (\d+)")


def dedup_token(line: str) -> str | None:
    """The sanitizer's DEDUP_TOKEN (top frames) of a report line, if it is one."""
    return line.split(":", 1)[1].strip() if line.startswith("DEDUP_TOKEN:") else None


def parse_line(engine: str, line: str, stats: Stats) -> bool:
    """Update stats from one line of the engine's output; True if it changed them."""
    if engine == "libfuzzer":
        m = _LF_STATUS.match(line)
        if m:
            stats.execs = int(m.group(1))
            c = _LF_CORP.search(line)
            if c:
                stats.corpus_size = int(c.group(1))
            stats.exec_per_s = float(m.group(2))
            return True
        m = _LF_FINAL.match(line)
        if m:
            if m.group(1) == "number_of_executed_units":
                stats.execs = int(m.group(2))
            else:
                stats.exec_per_s = float(m.group(2))
            return True
        return False
    if engine == "plain":
        m = _PLAIN.match(line)
        if m:
            stats.execs, stats.exec_per_s = int(m.group(1)), float(m.group(2))
            stats.corpus_size, stats.crashes = int(m.group(3)), int(m.group(4))
            return True
    return False


def read_afl_stats(job_dir: str, stats: Stats, instance_dir: str | None = None) -> bool:
    """Update stats from afl-fuzz's fuzzer_stats file (in instance_dir, default
    job_dir/afl/default); True if it was there."""
    try:
        with open(os.path.join(instance_dir or os.path.join(job_dir, "afl", "default"), "fuzzer_stats")) as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    kv = {k.strip(): v.strip() for k, v in kv.items()}
    try:
        stats.execs = int(kv.get("execs_done", stats.execs))
        stats.exec_per_s = float(kv.get("execs_per_sec", stats.exec_per_s))
        stats.corpus_size = int(kv.get("corpus_count", kv.get("paths_total", stats.corpus_size)))
        stats.crashes = int(kv.get("saved_crashes", kv.get("unique_crashes", stats.crashes)))
        stats.unique = stats.crashes  # AFL++ keeps a crash only if its coverage path is new
    except ValueError:
        return False
    return True
