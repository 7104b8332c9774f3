"""Triage: every crash, timeout, OOM and leak input replayed in fresh sandboxes.

Each input is run `runs` times, each time in a new sandbox (a cold isolate.run of the replay
profile, or with WARM_REPLAYS the one task of a sandbox of a WarmPool; REPLAY_WORKERS at once),
with the sanitizers told to symbolize and to report in a form reports.parse reads. The
reports give a ClusterFuzz crash type, frames and state; inputs with the same state are one
crash. An input that never crashes again is kept, marked unreproducible (its state comes
from the engine's own report when one lies beside it, `<input>.log` or `<input>.report.txt`,
else from its artifact name). Results go to OUT/crashes/<state-id>/ (smallest input,
report.txt, crash.json), OUT/crashes.sqlite3 (store.Store) and OUT/summary.json.

    crashes = triage("./fuzz_x", [], ["crash-1", "crash-2"], "out", engine="libfuzzer")
    write_summary("out", crashes, {"execs": 0, "exec_per_s": 0, "corpus_size": 0, "wall_s": 0})
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import threading

from ..errors import IsolateError
from ..launch.plans import plan_for_cwd
from ..launch.process import DEVNULL, PIPE, Popen, load_profile, run
from ..launch.warm import WarmPool
from . import reports, shim
from .store import Store

ENGINES = ("libfuzzer", "afl", "honggfuzz", "plain")
# Who replays a libFuzzer target's input: "auto" = the replay shim (shim.py: no libFuzzer
# start, ~1/4 of the CPU) where the target can take it, else libFuzzer's own main;
# "libfuzzer" = always libFuzzer's main. Other engines' targets run as they are.
REPLAYERS = ("auto", "libfuzzer")
SHIM, LIBFUZZER_MAIN, TARGET = "shim", "libfuzzer", "target"   # the replayer a result names
SHIM_FILE = "isolate-replay.so"   # the shim's copy in OUT/.triage (the sandbox sees it read-only)
MINIMIZE_ENGINES = ("libfuzzer",)
CGROUP_OVERHEAD_MB = 1024  # cgroup memory = the engine's RSS limit + this (ClusterFuzz: MEMORY_OVERHEAD)
MINIMIZE_RUNS = 5000
SYMBOLIZERS = ("llvm-symbolizer", "llvm-symbolizer-14", "/usr/lib/llvm-14/bin/llvm-symbolizer")
STAGE = ".triage"
# Where a replay's sandbox comes from: False (the default), a cold isolate.run of the replay
# profile per replay; True, a WarmPool of it (prepared while earlier replays run: the launch
# off the replay's path). Both give each replay one fresh sandbox. Side by side
# (benchmarks/triage.py) the cold launch used 0.3-0.6 ms less CPU per replay in most runs
# (no zygote hand-over, no pool thread), which is what decides the rate once the CPUs are
# busy; its launch on the replay's path wants more replays in flight.
WARM_REPLAYS = False
# Replays at once: two per CPU (at least 4), so that while some replays' sandboxes are being
# launched or torn down the others keep the CPUs busy (a replay is mostly the target's start:
# ~6 ms of CPU for an ASan + libFuzzer binary through the shim, ~3.5 ms for its sandbox).
# The warm pool, when used, holds as many ready sandboxes.
REPLAY_WORKERS = max(4, 2 * (os.cpu_count() or 1))

# Until the runner ships profiles/fuzz.toml: "default" with what fuzzing needs. ptrace is
# allowed (default's deny list minus @debug: LeakSanitizer stops the world with it), no
# network (default's own net namespace with loopback only), nothing of the caller's cwd,
# no RLIMIT_AS fallback (ASan reserves terabytes of shadow: no cgroup fails closed), and a
# cgroup memory limit set per triage above the engine's RSS limit.
_DEFAULT_DENY_EXCEPT = ("@debug",)


class TriageError(IsolateError):
    """Bad input to triage (target, inputs, OUT, engine): nothing was started."""


def fuzz_profile() -> dict:
    """The fuzz profile used when none is given: extends "default" (see above)."""
    default = load_profile("default")
    deny = [d for d in default.get("seccomp.deny") if d not in _DEFAULT_DENY_EXCEPT]
    return {"extends": "default", "seccomp": {"deny": deny}, "filesystem": {"rw": []},
            "cgroup": {"fallback": "fail"}, "process": {"cwd": "/tmp"}}


def symbolizer() -> str:
    for name in SYMBOLIZERS:
        path = shutil.which(name)
        if path:
            return os.path.realpath(path)
    raise TriageError("llvm-symbolizer not found (install llvm, e.g. Debian's llvm-14): sanitizer reports "
                      "would have no function names to deduplicate on")


def sanitizer_env(symbolizer_path: str | None, rss_limit_mb: int | None = None) -> dict:
    """ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS of a replay (ClusterFuzz's, reduced). With
    symbolizer_path None the sanitizers print module+offset frames, which Symbolizer turns
    into names afterwards (one llvm-symbolizer for every replay instead of one per replay).
    rss_limit_mb: ASan's own RSS limit (hard_rss_limit_mb), for targets without libFuzzer's
    -rss_limit_mb, so that an OOM is ASan's report rather than the cgroup's kill."""
    sym = f"symbolize=1:external_symbolizer_path={symbolizer_path}" if symbolizer_path else "symbolize=0"
    # color=never: the report goes to a pipe anyway; "auto" asks isatty() for every shadow byte printed.
    common = f"{sym}:print_summary=1:dedup_token_length=3:color=never"
    rss = f":hard_rss_limit_mb={rss_limit_mb}" if rss_limit_mb else ""
    return {
        "ASAN_OPTIONS": f"{common}:detect_leaks=1:abort_on_error=0:handle_abort=1:handle_segv=1:handle_sigbus=1:"
                        "handle_sigfpe=1:handle_sigill=1:allocator_may_return_null=0:detect_odr_violation=0:"
                        f"alloc_dealloc_mismatch=0:fast_unwind_on_fatal=0{rss}",
        "UBSAN_OPTIONS": f"{common}:halt_on_error=1:print_stacktrace=1:silence_unsigned_overflow=1",
        "LSAN_OPTIONS": f"{common}:exitcode=77",
        "MSAN_OPTIONS": f"{common}:halt_on_error=1",
    }


def replay_profile(base, ro: list, rw: list, env: dict, memory_mb: int) -> dict:
    """`base` (a profile name, path, dict or Profile; None = fuzz_profile()) with the target's
    and the inputs' directories read-only, `rw` read-write, the sanitizer environment and the
    cgroup memory limit."""
    p = load_profile(fuzz_profile() if base is None else base)
    d = p.to_dict()
    d.pop("extends", None)
    fs = d.setdefault("filesystem", {})
    fs["ro"] = list(fs.get("ro") or []) + sorted(set(ro))
    fs["rw"] = list(fs.get("rw") or []) + sorted(set(rw))
    d.setdefault("env", {}).setdefault("set", {}).update(env)
    d.setdefault("cgroup", {})["memory_max"] = f"{memory_mb}M"
    return d


def _check(target: str, inputs, out_dir: str, engine: str, runs: int, timeout: float, rss_limit_mb: int,
           minimize: bool, profile=None, replayer: str = "auto"):
    if engine not in ENGINES:
        raise TriageError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if replayer not in REPLAYERS:
        raise TriageError(f"replayer: expected one of {', '.join(REPLAYERS)}, got {replayer!r}")
    if minimize and engine not in MINIMIZE_ENGINES:
        raise TriageError(f"--minimize: engine {engine!r} has no crash minimizer here (only "
                          f"{', '.join(MINIMIZE_ENGINES)})")
    if not isinstance(runs, int) or runs < 1:
        raise TriageError(f"runs: expected an integer >= 1, got {runs!r}")
    if not (timeout > 0):
        raise TriageError(f"timeout: expected seconds > 0, got {timeout!r}")
    if not isinstance(rss_limit_mb, int) or rss_limit_mb < 1:
        raise TriageError(f"rss_limit_mb: expected an integer >= 1, got {rss_limit_mb!r}")
    if not os.path.isfile(target):
        raise TriageError(f"target {target!r}: no such file")
    if not os.access(target, os.X_OK):
        raise TriageError(f"target {target!r}: not executable")
    if not inputs:
        raise TriageError("no input files to triage")
    for f in inputs:
        if not os.path.isfile(f):
            raise TriageError(f"input {f!r}: no such file")
        if not os.access(f, os.R_OK):
            raise TriageError(f"input {f!r}: not readable")
    symbolizer()
    if profile is not None:
        load_profile(profile)  # a bad profile is a ProfileError now, before OUT exists
    probe = out_dir
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise TriageError(f"OUT {out_dir!r}: not a writable directory ({probe!r})")


def _command(target: str, target_args, path: str, engine: str, timeout: float, rss_limit_mb: int):
    """(argv, stdin path or None) that runs `path` once."""
    if engine == "libfuzzer":
        return [target, *target_args, f"-timeout={max(1, math.ceil(timeout))}", f"-rss_limit_mb={rss_limit_mb}",
                path], None
    if any("@@" in a for a in target_args):
        return [target, *(a.replace("@@", path) for a in target_args)], None
    return [target, *target_args], path


def _kind_from_name(path: str) -> str:
    """The type an engine gave an artifact by its name (libFuzzer crash-/timeout-/oom-/leak-,
    AFL++ crashes/ and hangs/)."""
    name, parent = os.path.basename(path), os.path.basename(os.path.dirname(path))
    if name.startswith("timeout-") or parent == "hangs":
        return "Timeout"
    if name.startswith("oom-"):
        return "Out-of-memory"
    if name.startswith("leak-"):
        return "Memory leak"
    return "Unknown-crash"


_RAW_FRAME = re.compile(r"^(\s*)#(\d+)\s+(0x[0-9a-fA-F]+)\s+(?:in\s+\S*\s*)?\(([^()+]+)\+(0x[0-9a-fA-F]+)\)"
                        r"(\s*\(BuildId: [0-9a-fA-F]+\))?\s*$")
_BARE_FRAME = re.compile(r"^(\s*)#(\d+)\s+(0x[0-9a-fA-F]+)\s*$")   # shim replays: stack_trace_format "#%n %p"
_MODULE_MAP = re.compile(r"^" + re.escape(shim.MODULE_LINE) + r"0x([0-9a-f]+)((?: 0x[0-9a-f]+-0x[0-9a-f]+)+) (.+)$")


def module_maps(lines) -> list:
    """The shim's module maps in `lines`, last first: each a list of (start, end, base, path)."""
    maps, block, prev = [], None, False
    for line in lines:
        m = line.startswith(shim.MODULE_LINE) and _MODULE_MAP.match(line)
        if not m:
            prev = False
            continue
        if not prev:
            block = []
            maps.append(block)
        prev = True
        base = int(m.group(1), 16)
        for rng in m.group(2).split():
            a, _, b = rng.partition("-")
            block.append((int(a, 16), int(b, 16), base, m.group(3)))
    return maps[::-1]


def locate(maps, pc: int):
    """(path, offset) of address pc in the latest module map that has it (ASan's
    module+offset: offset from the object's load bias), else None."""
    for block in maps:
        for start, end, base, path in block:
            if start <= pc < end:
                return path, pc - base
    return None


class Symbolizer:
    """One llvm-symbolizer, itself in a sandbox (it parses the target's debug information,
    which is as untrusted as the target), for every replay of a triage: frames printed as
    (module+offset) get their function and source line, each address looked up once."""

    def __init__(self, path: str, profile):
        self.proc = Popen([path, "--inlines", "--demangle", "--functions=linkage"], profile=profile, stdin=PIPE,
                          stdout=PIPE, stderr=DEVNULL, cwd="/tmp", text=True, bufsize=1)
        self.lock = threading.Lock()
        self.cache: dict = {}

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()

    def lookup(self, module: str, offset: str) -> list:
        """[(function, "file:line:col")] for module+offset, inlined frames first; [] unknown."""
        key = (module, offset)
        with self.lock:
            if key in self.cache:
                return self.cache[key]
            out = []
            if self.proc.poll() is None and "\n" not in module and '"' not in module:
                self.proc.stdin.write(f'"{module}" {offset}\n')
                self.proc.stdin.flush()
                lines = []
                while True:
                    line = self.proc.stdout.readline()
                    if not line or line == "\n":
                        break
                    lines.append(line.rstrip("\n"))
                for fn, loc in zip(lines[0::2], lines[1::2]):
                    if fn != "??":
                        out.append((fn, loc if not loc.startswith("??") else None))
            self.cache[key] = out
            return out

    def symbolize(self, text: str) -> str:
        """`text` with each (module+offset) frame replaced by its symbolized frames. A shim
        replay's bare frames (`#N 0xPC`) are located with its module maps first (as ASan
        would print them: `(module+offset)`, or `(<unknown module>)`); the map lines go."""
        lines = text.splitlines()
        if shim.MODULE_LINE in text:
            maps = None
            fixed = []
            for line in lines:
                if line.startswith(shim.MODULE_LINE) and _MODULE_MAP.match(line):
                    continue
                b = _BARE_FRAME.match(line) if "#" in line else None
                if b:
                    indent, n, pc = b.groups()
                    if maps is None:
                        maps = module_maps(lines)
                    where = locate(maps, int(pc, 16))
                    line = (f"{indent}#{n} {pc}  ({where[0]}+0x{where[1]:x})" if where else
                            f"{indent}#{n} {pc}  (<unknown module>)")
                fixed.append(line)
            lines = fixed
        out, renumber = [], None
        for line in lines:
            m = _RAW_FRAME.match(line)
            if not m:
                if renumber is not None and not line.strip():
                    renumber = None
                out.append(line)
                continue
            indent, n, pc, module, offset, build = m.groups()
            if int(n) == 0:
                renumber = 0
            elif renumber is None:
                renumber = int(n)
            found = self.lookup(module, offset)
            for fn, loc in found or [(None, None)]:
                where = f" {loc}" if loc else f" ({module}+{offset})"
                out.append(f"{indent}#{renumber} {pc} in {fn}{where}" if fn else
                           f"{indent}#{renumber} {pc}  ({module}+{offset}){build or ''}")
                renumber += 1
        return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def shim_asan_options(asan_options: str, rss_limit_mb: int) -> str:
    """ASAN_OPTIONS of a shim replay: libFuzzer's -rss_limit_mb and -malloc_limit_mb are
    ASan's soft RSS limit (the next malloc past it reports with its stack, as libFuzzer's
    memory profile names the allocating frames), max_allocation_size_mb (one allocation over
    the limit: allocation-size-too-big) and, for memory that grows without malloc, the hard
    RSS limit halfway to the sandbox's cgroup limit."""
    return (f"{asan_options}:soft_rss_limit_mb={rss_limit_mb}:max_allocation_size_mb={rss_limit_mb}:"
            f"hard_rss_limit_mb={rss_limit_mb + CGROUP_OVERHEAD_MB // 2}")


def shim_environment(env: dict, shim_path: str, spec, rss_limit_mb: int) -> dict:
    """`env` (a replay's environment) for a shim replay: the preload and ISOLATE_REPLAY,
    libFuzzer's limits as ASan's (shim_asan_options), and bare frame addresses with the
    shim's module map instead of ASan's module-list refresh (shim.RAW_FRAME_OPTIONS)."""
    env = dict(env, LD_PRELOAD=shim_path, **{shim.ENV_NAME: spec.env_value})
    env["ASAN_OPTIONS"] = shim_asan_options(env.get("ASAN_OPTIONS", ""), rss_limit_mb)
    for name in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"):
        env[name] = f"{env.get(name, '')}:{shim.RAW_FRAME_OPTIONS}"
    return env


class _Replayer:
    def __init__(self, target, target_args, engine, timeout, rss_limit_mb, profile, stage, replayer="auto"):
        self.target, self.args, self.engine = target, list(target_args), engine
        self.timeout, self.rss = timeout, rss_limit_mb
        self.env = sanitizer_env(None, None if engine == "libfuzzer" else rss_limit_mb)
        self.base, self.stage = profile, stage
        self.profile = self.profile_for([])
        # The replay shim for a libFuzzer target that can take it (else why not, in shim_reason).
        self.spec = None
        self.shim_reason = ""
        self.envs: dict = {}
        if engine == "libfuzzer":
            if replayer == "libfuzzer":
                self.shim_reason = "replayer='libfuzzer' was asked for"
            elif shim.unsupported_args(target_args):
                self.shim_reason = (f"target arguments the replay shim does not handle like libFuzzer: "
                                    f"{' '.join(shim.unsupported_args(target_args))}")
            elif any(c in stage for c in " :\t\n"):
                self.shim_reason = f"OUT's path {stage!r} has a character LD_PRELOAD splits on"
            else:
                spec = shim.target_spec(target, max(1, math.ceil(timeout)))
                if spec.ok:
                    self.spec = spec
                    self.shim_path = os.path.join(stage, SHIM_FILE)
                    _install(shim.PATH, self.shim_path)
                else:
                    self.shim_reason = spec.reason
        self.pool = None
        self.pool_lock = threading.Lock()
        self.warm_replays = WARM_REPLAYS
        if self.warm_replays:
            self.warm()   # its sandboxes are prepared while the symbolizer starts and the inputs are staged
        try:
            self.symbolizer = Symbolizer(symbolizer(), self.profile)
        except BaseException:
            if self.pool is not None:
                self.pool.close()
            raise

    def close(self):
        if self.pool is not None:
            self.pool.close()
        self.symbolizer.close()

    def warm(self) -> WarmPool:
        """The pool of fresh replay sandboxes (each serves one replay)."""
        with self.pool_lock:
            if self.pool is None:
                self.pool = WarmPool(self.profile, size=REPLAY_WORKERS, cwd="/tmp")
            return self.pool

    def profile_for(self, rw):
        # A Profile, loaded once: a dict would be hashed and looked up again on every replay.
        return load_profile(replay_profile(self.base, [os.path.dirname(self.target), self.stage], rw, self.env,
                                           self.rss + CGROUP_OVERHEAD_MB))

    def env_for(self, use_shim: bool):
        """The environment of a replay (the profile's, plus the shim's for a shim replay)."""
        env = self.envs.get(use_shim)
        if env is None:
            env = (self.warm().plan if self.warm_replays else plan_for_cwd(self.profile, (), "/tmp")).environment()
            if use_shim:
                env = shim_environment(env, self.shim_path, self.spec, self.rss)
            self.envs[use_shim] = env
        return env

    def replay(self, path: str, use_shim: bool | None = None):
        """(Report, replayer) of one replay of `path` in a fresh sandbox: by the shim when
        this target takes it (and use_shim is not False), else by libFuzzer's main (or the
        target itself, for other engines). A shim replay whose output lacks the shim's
        first line (the shim did not run, e.g. the preload failed) is done again by
        libFuzzer's main."""
        if use_shim is None:
            use_shim = self.spec is not None
        if use_shim and self.spec is not None:
            rep = self.once(path, use_shim=True)
            if shim.MARKER in rep.text:
                return rep, SHIM
        return self.once(path), (LIBFUZZER_MAIN if self.engine == "libfuzzer" else TARGET)

    def once(self, path: str, profile=None, use_shim: bool = False):
        argv, stdin = _command(self.target, self.args, path, self.engine, self.timeout, self.rss)
        # The engine's own timeout comes first (libFuzzer reports it with a stack); the
        # sandbox's is the backstop, and the only one for engines without it.
        limit = self.timeout + 15 if self.engine == "libfuzzer" else self.timeout
        fin = open(stdin, "rb") if stdin else None
        extra = {"stdin": fin} if fin else {"stdin": DEVNULL}
        try:
            if use_shim and profile is None:
                extra["env"] = self.env_for(True)
            if profile is None and self.warm_replays:   # a fresh sandbox of the replay profile, prepared ahead
                r = self.warm().run(argv, capture_output=True, timeout=limit, on_timeout="result", cwd="/tmp",
                                    **extra)
            elif profile is None:   # a fresh sandbox of the replay profile, launched now
                r = run(argv, profile=self.profile, capture_output=True, timeout=limit, on_timeout="result",
                        cwd="/tmp", **extra)
            else:
                r = run(argv, profile=profile, capture_output=True, timeout=limit, on_timeout="result",
                        cwd="/tmp", **extra)
        finally:
            if fin:
                fin.close()
        text = (r.stderr or b"").decode("utf-8", "replace") + (r.stdout or b"").decode("utf-8", "replace")[-4096:]
        text = self.symbolizer.symbolize(text)
        rep = reports.parse(text, returncode=r.returncode, timed_out=r.timed_out, oom=r.oom)
        if rep.crashed and r.oom:
            rep.sanitizer = rep.sanitizer or "cgroup"
        return rep


def _stage(paths, stage: str) -> list:
    """Copy each input into OUT/.triage/<sha1> (the sandbox sees that directory read-only)."""
    out = []
    for p in paths:
        data = open(p, "rb").read()
        sha = hashlib.sha1(data).hexdigest()
        dst = os.path.join(stage, sha)
        if not os.path.exists(dst):
            tmp = f"{dst}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, dst)
        out.append({"path": os.path.abspath(p), "sha1": sha, "size": len(data), "staged": dst})
    return out


def _engine_log(path: str):
    for suffix in (".report.txt", ".log"):
        if os.path.isfile(path + suffix):
            rep = reports.parse(open(path + suffix, errors="replace").read())
            if rep.crashed:
                return rep
    return None


def triage(target: str, target_args: list, inputs: list, out_dir: str, *, engine: str, runs: int = 3,
           timeout: float = 25.0, rss_limit_mb: int = 2048, profile=None, minimize: bool = False,
           replayer: str = "auto") -> list:
    """Replay, classify, deduplicate and record `inputs`; returns one dict per crash state
    (see the module docstring and docs/fuzzing-triage.md). `replayer` (libFuzzer targets):
    "auto" replays with the shim where the target takes it, "libfuzzer" always with
    libFuzzer's main. Raises TriageError on bad input before anything runs."""
    _check(target, inputs, out_dir, engine, runs, timeout, rss_limit_mb, minimize, profile, replayer)
    target = os.path.realpath(target)
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.realpath(out_dir)
    stage = os.path.join(out_dir, STAGE)
    os.makedirs(stage, exist_ok=True)
    rp = _Replayer(target, target_args, engine, timeout, rss_limit_mb, profile, stage, replayer)
    try:
        return _triage(rp, target_args, inputs, out_dir, stage, runs, minimize)
    finally:
        rp.close()


def _triage(rp, target_args, inputs, out_dir, stage, runs, minimize):
    staged = list({s["sha1"]: s for s in _stage(inputs, stage)}.values())
    by_sha = collections.defaultdict(list)
    for s in _stage(inputs, stage):
        by_sha[s["sha1"]].append(s["path"])

    with concurrent.futures.ThreadPoolExecutor(REPLAY_WORKERS) as pool:
        futures = {(s["sha1"], i): pool.submit(rp.replay, s["staged"]) for s in staged for i in range(runs)}
        results = {k: f.result() for k, f in futures.items()}
        # Every input is an engine's crash artifact: one that no shim replay crashed is
        # replayed again, `runs` times, by libFuzzer's own main, whose verdict stands.
        again = [s for s in staged if all(results[(s["sha1"], i)][1] == SHIM and
                                          not results[(s["sha1"], i)][0].crashed for i in range(runs))]
        futures = {(s["sha1"], i): pool.submit(rp.replay, s["staged"], False) for s in again for i in range(runs)}
        results.update({k: f.result() for k, f in futures.items()})

    per_input = []
    for s in staged:
        reps = [results[(s["sha1"], i)][0] for i in range(runs)]
        used = sorted({results[(s["sha1"], i)][1] for i in range(runs)})
        s["replayer"] = used[0] if len(used) == 1 else "+".join(used)
        crashed = [r for r in reps if r.crashed]
        if crashed:
            state = collections.Counter(r.state for r in crashed).most_common(1)[0][0]
            rep = next(r for r in crashed if r.state == state)
            reproduced = sum(r.state == state for r in crashed)
        else:
            rep = _engine_log(s["path"]) or reports.Report(_kind_from_name(s["path"]), text=reps[-1].text)
            if not rep.frames:
                rep.frames = [reports.Frame(0, f"unreproducible:{s['sha1'][:12]}")]
            reproduced = 0
        per_input.append((s, rep, reproduced))

    groups = collections.OrderedDict()
    for s, rep, reproduced in per_input:
        groups.setdefault(rep.state_id, []).append((s, rep, reproduced))

    crashes = []
    with Store(out_dir) as store:
        for sid, members in groups.items():
            members.sort(key=lambda m: (m[2] == 0, m[0]["size"], m[0]["sha1"]))
            s, rep, _ = members[0]
            crash_dir = os.path.join(out_dir, "crashes", sid)
            os.makedirs(crash_dir, exist_ok=True)
            smallest = min((m[0] for m in members), key=lambda x: (x["size"], x["sha1"]))
            data = open(smallest["staged"], "rb").read()
            report_text = rep.text
            minimized = None
            if minimize and rep.type not in ("Timeout", "Out-of-memory") and members[0][2] > 0:
                minimized = _minimize(rp, smallest, rep, runs, crash_dir)
                if minimized is not None:
                    data, report_text = minimized
            _write(os.path.join(crash_dir, "input"), data)
            _write(os.path.join(crash_dir, "report.txt"), report_text.encode())
            reproduced = sum(m[2] for m in members)
            crash = {
                "state_id": sid, "state": rep.state, "type": rep.type, "frames": [f.to_json() for f in rep.frames
                                                                                  [:reports.STATE_FRAMES]],
                "security": rep.security, "sanitizer": rep.sanitizer,
                "reproducible": reproduced > 0, "reproduced": reproduced, "runs": runs * len(members),
                "inputs": sorted({p for m in members for p in by_sha[m[0]["sha1"]]}),
                "inputs_detail": [{"path": m[0]["path"], "sha1": m[0]["sha1"], "size": m[0]["size"],
                                   "reproduced": m[2], "runs": runs, "replayer": m[0]["replayer"]}
                                  for m in members],
                "replayer": s["replayer"],
                "input": os.path.relpath(os.path.join(crash_dir, "input"), out_dir), "input_size": len(data),
                "report": os.path.relpath(os.path.join(crash_dir, "report.txt"), out_dir),
                "minimized": minimized is not None,
            }
            if rp.shim_reason and rp.engine == "libfuzzer":
                crash["replayer_note"] = f"no replay shim: {rp.shim_reason}"
            seen = store.record(crash)
            crash.update(known=seen["known"], first_seen=seen["first_seen"], total_reproduced=seen["reproduced"],
                         total_runs=seen["runs"])
            _write(os.path.join(crash_dir, "crash.json"), (json.dumps(_public(crash), indent=2) + "\n").encode())
            crashes.append(crash)
    return crashes


def _minimize(rp: _Replayer, inp: dict, rep, runs: int, crash_dir: str):
    """libFuzzer -minimize_crash=1 in a sandbox; kept only when the result replays to the
    same state. Returns (data, report text) or None."""
    work = os.path.join(rp.stage, f"min-{rep.state_id}")
    os.makedirs(work, exist_ok=True)
    result = os.path.join(work, "minimized")
    argv = [rp.target, *rp.args, "-minimize_crash=1", f"-runs={MINIMIZE_RUNS}", f"-exact_artifact_path={result}",
            f"-timeout={max(1, math.ceil(rp.timeout))}", f"-rss_limit_mb={rp.rss}", "-max_total_time=60",
            inp["staged"]]
    run(argv, profile=rp.profile_for([work]), capture_output=True, timeout=120, on_timeout="result", cwd="/tmp")
    if not os.path.isfile(result):
        return None
    data = open(result, "rb").read()
    if len(data) >= inp["size"]:
        return None
    staged = _stage([result], rp.stage)[0]
    again = [rp.replay(staged["staged"])[0] for _ in range(runs)]
    same = [r for r in again if r.state == rep.state]
    if not same:
        return None
    return data, same[0].text


def _install(src: str, dst: str):
    """Copy `src` to `dst` unless an identical copy is there (atomically: concurrent triages
    of one OUT may install it at once)."""
    data = open(src, "rb").read()
    try:
        if open(dst, "rb").read() == data:
            return
    except OSError:
        pass
    tmp = f"{dst}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


def _write(path: str, data: bytes):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


_SUMMARY_FIELDS = ("state_id", "state", "type", "frames", "security", "reproducible", "reproduced", "runs",
                   "inputs", "first_seen", "input", "input_size", "known")


def _public(crash: dict) -> dict:
    return {k: crash[k] for k in _SUMMARY_FIELDS + ("report", "minimized", "sanitizer", "replayer", "replayer_note")
            if k in crash}


def write_summary(out_dir: str, crashes: list, jobs_totals: dict) -> dict:
    """OUT/summary.json: every crash of OUT (this triage's and earlier ones', from the
    SQLite file; reproduced/runs over all triages) and the job totals. Returns it."""
    out_dir = os.path.realpath(out_dir)
    this = {c["state_id"]: c for c in crashes}
    with Store(out_dir) as store:
        rows = store.crashes()
    listed = []
    for row in rows:
        item = {k: row[k] for k in _SUMMARY_FIELDS if k in row}
        if row["state_id"] in this:
            item["known"] = this[row["state_id"]].get("known", False)
            item["new"] = not item["known"]
            item["replayer"] = this[row["state_id"]].get("replayer")
        else:
            item["known"], item["new"] = True, False
        listed.append(item)
    summary = {
        "crashes": listed,
        "unique": len(listed),
        "this_run": {"crashes": len(crashes), "new": sum(not c.get("known") for c in crashes),
                     "unreproducible": sum(not c["reproducible"] for c in crashes)},
        "totals": dict(jobs_totals),
    }
    _write(os.path.join(out_dir, "summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    return summary
