import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import isolate
from isolate import doctor
from isolate.launch import _launch, hostids

TESTS = Path(__file__).resolve().parent
PROBE = TESTS / "probe.py"
ROOT = TESTS.parent


# Where this interpreter lives, so that a profile can make it visible in a new root.
PYTHON_DIRS = sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)})


def with_python(profile="default", ro=(), rw=(), **sections) -> dict:
    """`profile` plus read-only binds of this Python (and `ro`), `rw` binds, other sections."""
    base = isolate.load_profile(profile)
    fs = base.to_dict()["filesystem"]
    # The checkout too (our venv and probe.py live there) in case {cwd} is elsewhere.
    fs["ro"] = list(fs["ro"]) + [d for d in PYTHON_DIRS if not d.startswith(str(ROOT))] + [str(ROOT)] + list(ro)
    fs["rw"] = list(fs["rw"]) + list(rw)
    out = {"extends": profile, "filesystem": fs}
    for name, value in sections.items():
        out[name] = value
    return out


# The host's own Python: on the host's tree (filesystem.view = "host") a root caller's
# program is an unprivileged host uid, which cannot reach this interpreter under /root.
SYSTEM_PYTHON = "/usr/bin/python3"


def run_probe(profile="default", overrides=(), checks=(), python=None, **kw) -> dict:
    """Run tests/probe.py in a sandbox (with this Python visible) and return what it saw."""
    if isinstance(profile, str):
        profile = with_python(profile)
    r = isolate.run([python or sys.executable, str(PROBE), *checks], profile=profile, overrides=list(overrides),
                    capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, (r.returncode, r.stderr)
    return json.loads(r.stdout)


def cli(*args, input=None, timeout=60, env=None):
    """Run the isolate command line in a subprocess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=ROOT, env=env)


def open_fds() -> set:
    """Our open fds, less the prepared network namespaces the pool keeps on purpose (and the
    user namespaces and lock files hostids keeps per host id). The mount namespaces of
    reaped sandboxes that the launch path's closing thread has not closed yet are waited for
    first (_launch.drain_deferred: they are closed within moments, see docs/launch-path.md);
    the socket of the thread that holds them is the launch path's own."""
    _launch.drain_deferred()
    out = set()
    holder = set(_launch.closer_fds())  # the holding thread's socket (its namespaces are not in this table)
    for x in os.listdir("/proc/self/fd"):
        if int(x) in holder:
            continue
        try:
            if os.readlink(f"/proc/self/fd/{x}").startswith(("net:[", "user:[", hostids.LOCK_DIR + "/")):
                continue  # (and the host ids' lock files it keeps open to flock them again)
        except OSError:
            continue
        out.add(int(x))
    return out


def fill_fds(path: str, upto: int) -> list:
    """Open `path` at every free number from 3 to `upto` and return those fds.

    Only by taking the lowest free number (os.open), never by dup2 onto a number: the
    library's threads (the namespace pools, a warm pool's refill) open fds at any moment,
    and a dup2 onto a number one of them just took would close theirs."""
    mine = []
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if fd > upto:
            os.close(fd)
            return mine
        mine.append(fd)


def zombies_of(pid: int) -> list:
    """Children of `pid` that are zombies."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(p))
    return out


def pids_with_cmdline(marker: str) -> list:
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if marker.encode() in f.read().replace(b"\0", b" "):
                    found.append(int(p))
        except OSError:
            continue
    return found


def launch_many(count: int, threads: int, launch, join_timeout: float = 600) -> tuple[list, list]:
    """Run `launch()` `count` times from `threads` threads; returns (what went wrong, the threads).

    `launch` returns None when all went well, or what to report; exceptions are reported too."""
    errors: list = []
    counter = iter(range(count))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                problem = launch()
            except BaseException as e:  # reported by the test, never lost in a thread
                problem = e
            if problem is not None:
                with lock:
                    errors.append(problem)

    ts = [threading.Thread(target=worker, name=f"launcher-{n}", daemon=True) for n in range(threads)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + join_timeout
    for t in ts:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    return errors, ts


@pytest.fixture
def probe():
    return run_probe


@pytest.fixture
def no_memory_cgroup(monkeypatch):
    """This process's doctor sees no usable memory cgroup (ISOLATE_DOCTOR_DISABLE)."""
    monkeypatch.setenv(doctor.DISABLE_ENV, "cgroup_memory_limit")
    doctor.features(refresh=True)
    yield
    monkeypatch.delenv(doctor.DISABLE_ENV)
    doctor.features(refresh=True)


def held_by_closer() -> set:
    """The mount namespaces (their inode numbers) in the launch path's holding thread's own
    fd table (not the process's: _launch.c hold_main)."""
    tid = _launch.closer_tid()
    out = set()
    for x in os.listdir(f"/proc/self/task/{tid}/fd") if tid else ():
        try:
            link = os.readlink(f"/proc/self/task/{tid}/fd/{x}")
        except OSError:
            continue
        if link.startswith("mnt:["):
            out.add(int(link[5:-1]))
    return out


@contextlib.contextmanager
def given_back(pool):
    """The pids of pid 1 of the sandboxes `pool` is given back while the block runs (a spy
    on WarmPool._give_back)."""
    taken = []
    orig = pool._give_back

    def spy(slot):
        taken.append(slot.pid)
        orig(slot)

    pool._give_back = spy
    try:
        yield taken
    finally:
        del pool._give_back
