"""What the benchmarks launch, and the launchers they compare.

Every launcher is a zero-argument callable that starts the program, waits for it to
exit and raises if it failed, so that a broken variant can never look fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import isolate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUILD_DIR = HERE / "out"          # git-ignored
NOOP_SOURCE = HERE / "noop.c"
TRUE = "/bin/true"
STRICT_PROFILE = "strict"         # written by someone else; skipped (and said so) while it is missing

# isolate with only seccomp + rlimits + the fd table: every namespace off, no pid 1.
MINIMAL_PROFILE = {
    "extends": "default",
    "namespaces": {"user": False, "pid": False, "net": False, "mount": False, "ipc": False, "uts": False,
                   "cgroup": False},
    "process": {"die_with_parent": False},
}


class Skip(Exception):
    """This variant cannot run here; the message says why (it goes into the report)."""


def build_noop(build_dir: Path = BUILD_DIR) -> Path:
    """Compile benchmarks/noop.c with gcc -static -O2 (rebuilt when the source is newer)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    exe = build_dir / "noop-static"
    if exe.exists() and exe.stat().st_mtime >= NOOP_SOURCE.stat().st_mtime:
        return exe
    tmp = build_dir / f".noop-static.{os.getpid()}"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp), str(NOOP_SOURCE)], check=True)
    os.replace(tmp, exe)  # atomic: a concurrent run never sees half a binary
    return exe


# What the default profile sets that only makes sense with namespaces, made neutral
# again; applied one after another only if the library refuses MINIMAL_PROFILE as is.
_NEUTRAL = [
    ("identity.hostname absent (a hostname needs a UTS namespace)", {"identity": {"hostname": None}}),
    ('filesystem.view = "host" with no binds, /proc or /dev (a new root needs a mount namespace)',
     {"filesystem": {"view": "host", "enforce": "namespaces", "ro": [], "rw": [], "tmpfs": [], "dirs": [],
                     "symlinks": [], "files": [], "proc": False, "dev": False}}),
    ("network.mode absent (it then follows namespaces.net = false: the host's network)",
     {"network": {"mode": None}}),
]


def minimal_profile() -> tuple[dict, str | None]:
    """MINIMAL_PROFILE as this version of isolate accepts it, and a note if it was adjusted."""
    profile, added, first_error = dict(MINIMAL_PROFILE), [], None
    for what, patch in [(None, {})] + _NEUTRAL:
        profile.update(patch)
        if what:
            added.append(what)
        try:
            isolate.plan_for(isolate.load_profile(profile))
        except isolate.ProfileError as e:
            first_error = first_error or e
            continue
        if not added:
            return profile, None
        return profile, (f"The seccomp+rlimits+fds profile as written is refused by this version of isolate "
                         f"(`{first_error}`), so the suite also sets: " + "; ".join(added) + ".")
    raise first_error


# ---- launchers --------------------------------------------------------------------
def _check(rc: int, what: str):
    if rc != 0:
        raise RuntimeError(f"{what} exited with {rc}")


def subprocess_run(prog: str) -> Callable[[], None]:
    argv = [prog]

    def call():
        _check(subprocess.run(argv).returncode, "subprocess.run")
    return call


def posix_spawn(prog: str) -> Callable[[], None]:
    argv = [prog]

    def call():
        pid = os.posix_spawn(prog, argv, os.environ)
        _, status = os.waitpid(pid, 0)
        _check(os.waitstatus_to_exitcode(status), "posix_spawn")
    return call


def fork_exec(prog: str) -> Callable[[], None]:
    argv = [prog]

    def call():
        pid = os.fork()
        if pid == 0:  # the child: exec, or leave without running any Python cleanup
            try:
                os.execv(prog, argv)
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        _check(os.waitstatus_to_exitcode(status), "fork+execv")
    return call


def isolate_run(prog: str, profile, **kwargs) -> Callable[[], None]:
    argv = [prog]

    def call():
        isolate.run(argv, profile=profile, check=True, **kwargs)
    return call


def isolate_popen_phases(prog: str, profile, **kwargs) -> Callable[[], dict]:
    """Launch with isolate.Popen + wait; returns the launch's phase timings.

    Besides the launch path's own stamps (ms since spawn began) the dict carries
    `_popen_ms` (Popen() call, i.e. Python setup + spawn) and `_wait_ms` (from Popen
    returning until the program was reaped).
    """
    argv = [prog]
    clock = time.perf_counter_ns

    def call():
        t0 = clock()
        p = isolate.Popen(argv, profile=profile, **kwargs)
        t1 = clock()
        rc = p.wait()
        t2 = clock()
        _check(rc, "isolate.Popen")
        out = dict(p.timings)
        out["_popen_ms"] = (t1 - t0) / 1e6
        out["_wait_ms"] = (t2 - t1) / 1e6
        return out
    return call


def _try(prog: str, profile, **kwargs):
    isolate.run([prog], profile=profile, check=True, timeout=10, **kwargs)


def _bound(name: str, prog: str):
    """Profile `name` plus a read-only bind of `prog`, loaded once (bwrap gets the same)."""
    ro = list(isolate.load_profile(name).to_dict()["filesystem"]["ro"])
    return isolate.load_profile({"extends": name, "filesystem": {"ro": ro + [prog]}})


def prepare_isolate(prog: str, profile) -> tuple[object, dict, str | None]:
    """(profile, run() kwargs, note) with which `profile` runs `prog` here; or Skip, saying why.

    A profile with its own file system view may not contain the program (the static one
    lives in benchmarks/out/): then the program is bound read-only into it, as for bwrap.
    It may not contain the caller's directory either: then the launch uses cwd="/".
    """
    try:
        _try(prog, profile)
        return profile, {}, None
    except isolate.ExecutableNotFound as e:
        if not isinstance(profile, str):
            raise Skip(f"{type(e).__name__}: {e}") from None
        try:
            bound = _bound(profile, prog)
            _try(prog, bound)
        except Exception as e2:  # noqa: BLE001 - any failure means: skip, and say why
            raise Skip(f"{type(e).__name__}: {e}; with the program bound in: {type(e2).__name__}: {e2}") from None
        return bound, {}, (f"`{profile}` does not contain `{prog}`: it is run with `filesystem.ro` plus "
                           f"`\"{prog}\"`, as bwrap gets `--ro-bind` of the program.")
    except isolate.SandboxSetupError as e:
        if getattr(e, "step", None) != "chdir":
            raise Skip(f"{type(e).__name__}: {e}") from None
        try:
            _try(prog, profile, cwd="/")
        except Exception as e2:  # noqa: BLE001
            raise Skip(f"{type(e2).__name__}: {e2}") from None
        return profile, {"cwd": "/"}, (f"`{profile}` does not contain the caller's directory: `{prog}` is run "
                                       f"with cwd=\"/\".")
    except Exception as e:  # noqa: BLE001
        raise Skip(f"{type(e).__name__}: {e}") from None


# ---- warm mode --------------------------------------------------------------------
WARM_POOL_SIZE = 2   # ready sandboxes per pool; the runner refills it between tasks (see warm_pool)


class HeldRefillPool(isolate.WarmPool):
    """A WarmPool whose background refill waits while a task runs. Diagnostic only: it
    is not how WarmPool behaves, it separates the cost of the task from the cost of the
    refill that WarmPool starts as soon as a task takes a sandbox. Relies on WarmPool
    preparing each sandbox in `_prepare`, called by its refill thread `_thread`."""

    def __init__(self, *args, **kwargs):
        self._gate = threading.Event()
        self._gate.set()
        super().__init__(*args, **kwargs)

    def _prepare(self):
        if threading.current_thread() is getattr(self, "_thread", None):
            self._gate.wait()
        return super()._prepare()

    def hold(self):
        self._gate.clear()

    def release(self):
        self._gate.set()


def warm_pool(prog: str, profile, size: int = WARM_POOL_SIZE, held: bool = False):
    """(pool, run() kwargs, note): a WarmPool of `profile` that runs `prog`, full and
    checked with one task; or Skip, saying why. Made once, before any timed loop."""
    profile, kwargs, note = prepare_isolate(prog, profile)
    if held and not callable(getattr(isolate.WarmPool, "_prepare", None)):
        raise Skip("this version of WarmPool has no `_prepare` to hold its refill with")
    cls = HeldRefillPool if held else isolate.WarmPool
    pool = None
    try:
        pool = cls(profile, size=size, cwd=kwargs.get("cwd"))
        if not pool.wait_ready(timeout=30):
            raise RuntimeError(f"the pool did not fill up in 30 s: {pool.stats}")
        pool.run([prog], check=True, timeout=10, **kwargs)
        if not pool.wait_ready(timeout=30):
            raise RuntimeError(f"the pool did not refill in 30 s: {pool.stats}")
    except Exception as e:  # noqa: BLE001 - any failure means: skip, and say why
        if pool is not None:
            pool.close()
        raise Skip(f"WarmPool: {type(e).__name__}: {e}") from None
    return pool, kwargs, note


def warm_run(pool, prog: str, **kwargs) -> Callable[[], None]:
    """One task in a ready sandbox of `pool` (pool.run), waited for."""
    argv = [prog]
    held = isinstance(pool, HeldRefillPool)

    def call():
        if held:
            pool.hold()
        try:
            pool.run(argv, check=True, **kwargs)
        finally:
            if held:
                pool.release()
    return call


def warm_popen_phases(pool, prog: str, **kwargs) -> Callable[[], dict]:
    """pool.Popen + wait; returns `_popen_ms` (the handover: take a ready sandbox, send
    it the task, until its pid 1 reports the program started), `_wait_ms` and, under
    `_prepared`, the Popen's timings, which describe the sandbox's preparation (done
    earlier, in the pool's thread), not this task. A HeldRefillPool's refill is held
    from before the call until the program has been reaped."""
    argv = [prog]
    clock = time.perf_counter_ns
    held = isinstance(pool, HeldRefillPool)

    def call():
        if held:
            pool.hold()
        try:
            t0 = clock()
            p = pool.Popen(argv, **kwargs)
            t1 = clock()
            rc = p.wait()
            t2 = clock()
        finally:
            if held:
                pool.release()
        _check(rc, "WarmPool.Popen")
        return {"_warm": True, "_popen_ms": (t1 - t0) / 1e6, "_wait_ms": (t2 - t1) / 1e6,
                "_prepared": dict(p.timings)}
    return call


def settle(pool) -> Callable[[], None]:
    """Untimed, after each task: wait until the pool is full again."""
    def call():
        if not pool.wait_ready(timeout=30):
            raise RuntimeError(f"the warm pool did not refill in 30 s: {pool.stats}")
    return call


def close_pools(pools) -> None:
    for pool in pools:
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


# ---- the external tools -----------------------------------------------------------
def bwrap_argv(prog: str) -> tuple[list[str], list[str]]:
    """bwrap with flags equivalent to the strict profile, and notes on what was adapted.

    Debian 12 is merged-/usr: /lib, /lib64 and /bin are symlinks into /usr. Each
    symlink is recreated in the sandbox only if its target exists here. A program
    outside /usr (the static one, in benchmarks/out/) is bound read-only at its path.
    """
    notes = []
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for target, link in (("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/bin", "/bin")):
        if os.path.isdir("/" + target):
            argv += ["--symlink", target, link]
        else:
            notes.append(f"`--symlink {target} {link}` left out: /{target} does not exist here")
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv", "--cap-drop", "ALL"]
    real = os.path.realpath(prog)
    if not real.startswith("/usr/"):
        argv += ["--ro-bind", real, prog]
        notes.append(f"For `{prog}`: `--ro-bind {real} {prog}` added, so that the program exists in the sandbox.")
    return argv + ["--", prog], notes


def sandlock_run(prog: str) -> Callable[[], None]:
    """sandlock (PyPI), the nearest library peer: a Landlock + seccomp sandbox per call,
    reading the system directories and the program."""
    try:
        import sandlock  # the [bench] extra; a missing peer is reported as skipped
    except ImportError as e:
        def missing():
            raise FileNotFoundError(f"sandlock: {e}")
        return missing
    readable = [d for d in ("/usr", "/lib", "/lib64", "/bin", "/etc") if os.path.exists(d)]
    if not prog.startswith("/usr/"):
        readable.append(os.path.dirname(os.path.realpath(prog)))
    box = sandlock.Sandbox(fs_readable=readable)

    def call():
        r = box.run([prog])
        if not r.success or r.exit_code != 0:
            raise RuntimeError(f"sandlock: {r}")
    return call


def unshare_argv(prog: str) -> list[str]:
    return ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--net", "--mount", "--ipc", "--uts", prog]


def external(argv: list[str]) -> Callable[[], None]:
    def call():
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with {r.returncode}: {r.stderr.decode(errors='replace')[:200]}")
    return call


def probe(call: Callable[[], object], what: str):
    """Run a launcher once; Skip with the reason if it fails or the tool is missing."""
    try:
        call()
    except FileNotFoundError as e:
        raise Skip(f"{what}: not installed ({e})") from None
    except Exception as e:  # noqa: BLE001
        raise Skip(f"{what}: {type(e).__name__}: {e}") from None


def tool_version(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001
        return f"unknown ({e})"
