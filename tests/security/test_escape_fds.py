"""A caller's file descriptors must not reach the sandbox (escape battery: fds).

Whatever numbers the caller has open (every number from 3 to 1024, and 2000 and 65535
above a raised RLIMIT_NOFILE; inheritable or close-on-exec), the program's table is
exactly 0, 1, 2 and the fds it was passed (`pass_fds`, `fds.pass`), at their numbers,
pointing at what the caller passed. The program reports its table from the inside:
an fstat() of every number up to PROBE_LIMIT (works without /proc) and, where it has
a /proc, the listing of /proc/self/fd; the tests assert the exact set. Covered: the
library and the CLI, with isolate-init as pid 1 and without any init (no pid namespace,
no die_with_parent), with and without pass_fds, and warm sandboxes (WarmPool).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

import isolate

from conftest import ROOT

# 65535, or the highest number this process may hold (the hard RLIMIT_NOFILE; raising
# it needs CAP_SYS_RESOURCE, which a container may not give even to root).
_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
HIGH = (2000, 65535 if _HARD == resource.RLIM_INFINITY or _HARD > 65535 else _HARD - 1)
# A passed fd needs room above it (below the limit) for the launch's temporaries and private fds.
PASS_HIGH = HIGH[1] - 64
PROBE_LIMIT = max(HIGH) + 5000  # above the highest number the caller holds
PYTHON = "/usr/bin/python3"  # visible in every shipped profile (/usr is)

# fstat() every number; then /proc/self/fd when there is a /proc (the listing's own
# directory fd is gone by the time each entry is checked again).
PROBE = r"""
import json, os, sys
limit = int(sys.argv[1])
fds, ids, odd = [], {}, []
for fd in range(limit):
    try:
        st = os.fstat(fd)
    except OSError as e:
        if e.errno != 9:
            odd.append([fd, e.errno])
        continue
    fds.append(fd)
    ids[fd] = [st.st_dev, st.st_ino]
proc = None
if os.path.isdir("/proc/self/fd"):
    listed = [int(x) for x in os.listdir("/proc/self/fd")]
    proc = []
    for fd in sorted(listed):
        try:
            os.fstat(fd)
            proc.append(fd)
        except OSError:
            pass
os.write(1, (json.dumps({"fds": fds, "ids": ids, "odd": odd, "proc": proc, "pid": os.getpid()}) + "\n").encode())
"""

PROBE_ARGV = [PYTHON, "-I", "-S", "-c", PROBE, str(PROBE_LIMIT)]

NO_INIT = {"extends": "default", "namespaces": {"pid": False}, "process": {"die_with_parent": False},
           "filesystem": {"proc": False}}
STRICT_NO_INIT = {"extends": "strict", "namespaces": {"pid": False}, "process": {"die_with_parent": False},
                  "filesystem": {"proc": False}}
PROFILES = {"default": "default", "strict": "strict", "default-no-init": NO_INIT, "strict-no-init": STRICT_NO_INIT}
WITH_INIT = {"default": True, "strict": True, "default-no-init": False, "strict-no-init": False}


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text("host secret\n")
    return path


def _filled(secret):
    """Fill every free fd number from 3 to 1024, and HIGH, with the secret file; every
    other one inheritable (like `exec 6<file` in a shell), the rest close-on-exec.
    Returns {fd: inheritable} of the ones opened here (others were open already)."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (old[1], old[1]))  # soft up to hard
    base = os.open(secret, os.O_RDONLY | os.O_CLOEXEC)
    opened = {}
    try:
        for fd in [*range(3, 1025), *HIGH, PASS_HIGH]:
            try:
                os.fstat(fd)
                continue  # already the test process's own: it must not leak either
            except OSError:
                pass
            inheritable = fd % 2 == 0
            os.dup2(base, fd, inheritable=inheritable)
            opened[fd] = inheritable
        for fd in [*range(3, 1025), *HIGH, PASS_HIGH]:
            os.fstat(fd)  # every number is open now
        assert any(opened.values()) and not all(opened.values())
        yield opened
    finally:
        for fd in opened:
            os.close(fd)
        os.close(base)
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture
def caller_fds(secret):
    yield from _filled(secret)


def _report(stdout) -> dict:
    if isinstance(stdout, bytes):
        stdout = stdout.decode()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, stdout
    return json.loads(lines[-1])


def _assert_table(data: dict, expected: set, secret=None, passed=()):
    assert data["odd"] == []
    assert set(data["fds"]) == expected, sorted(set(data["fds"]) ^ expected)
    if data["proc"] is not None:
        assert set(data["proc"]) == expected
    if secret is not None:
        for fd in passed:  # the very file the caller holds at that number
            st = os.fstat(fd)
            assert data["ids"][str(fd)] == [st.st_dev, st.st_ino], fd


# ---- the library ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROFILES))
def test_library_no_caller_fd_reaches_the_program(name, caller_fds):
    prof = PROFILES[name]
    assert isolate.plan_for(prof).use_init is WITH_INIT[name]
    r = isolate.run(PROBE_ARGV, profile=prof, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2})


@pytest.mark.parametrize("name", list(PROFILES))
def test_library_exactly_the_passed_fds(name, caller_fds, secret):
    passed = (5, 6, 700, 1024, HIGH[0], PASS_HIGH)
    r = isolate.run(PROBE_ARGV, profile=PROFILES[name], capture_output=True, timeout=60, pass_fds=passed)
    assert r.returncode == 0, r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2, *passed}, secret, passed)


@pytest.mark.parametrize("name", ["default", "default-no-init"])
def test_library_profile_fds_pass(name, caller_fds, secret):
    prof = dict(PROFILES[name]) if isinstance(PROFILES[name], dict) else {"extends": name}
    prof["fds"] = {"pass": [9, 2000]}
    r = isolate.run(PROBE_ARGV, profile=prof, capture_output=True, timeout=60, pass_fds=[11])
    assert r.returncode == 0, r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2, 9, 11, 2000}, secret, (9, 11, 2000))


def test_library_closed_stdin_stays_closed(caller_fds):
    """A program given no fd 0 has none: the table is what was asked, nothing fills the gap."""
    r = isolate.run(PROBE_ARGV, profile="strict", capture_output=True, timeout=60, stdin=isolate.DEVNULL)
    assert r.returncode == 0
    _assert_table(_report(r.stdout), {0, 1, 2})


# A warm sandbox lays out its task's fds in pid 1, under the profile's RLIMIT_NOFILE
# (default 1024, strict 256): passed numbers stay below it.
WARM_PASS = {"default": (4, 700, 1000), "strict": (3, 100, 240)}


@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("with_pass", [False, True])
def test_warm_pool_filled_before_the_caller_opened_fds(profile, with_pass, secret):
    passed = WARM_PASS[profile] if with_pass else ()
    with isolate.WarmPool(profile, size=1) as pool:
        pool.run(["true"], timeout=60)  # the pool is up and has refilled
        opener = _fill(secret)
        try:
            r = pool.run(PROBE_ARGV, capture_output=True, timeout=60, pass_fds=passed)
            assert r.returncode == 0, r.stderr
            _assert_table(_report(r.stdout), {0, 1, 2, *passed}, secret, passed)
        finally:
            opener()


@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("with_pass", [False, True])
def test_warm_pool_made_while_the_caller_holds_fds(profile, with_pass, caller_fds, secret):
    passed = WARM_PASS[profile][::-1] if with_pass else ()
    with isolate.WarmPool(profile, size=2) as pool:
        first = pool.run(PROBE_ARGV, capture_output=True, timeout=60, pass_fds=passed)
        second = pool.run(PROBE_ARGV, capture_output=True, timeout=60)
    for r, p in ((first, passed), (second, ())):
        assert r.returncode == 0, r.stderr
        _assert_table(_report(r.stdout), {0, 1, 2, *p}, secret, p)


def _fill(secret):
    """caller_fds, for use inside a test; returns the function that undoes it."""
    gen = _filled(secret)
    next(gen)

    def undo():
        for _ in gen:
            pass
    return undo


# ---- the command line -------------------------------------------------------------------

def _cli(args, pass_fds=(), **kw):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, pass_fds=pass_fds, **kw)


@pytest.mark.parametrize("name", ["default", "strict", "no-init"])
def test_cli_no_caller_fd_reaches_the_program(name, caller_fds):
    extra = ["--set", "namespaces.pid=false", "--set", "process.die_with_parent=false",
             "--set", "filesystem.proc=false"] if name == "no-init" else []
    profile = "default" if name == "no-init" else name
    r = _cli(["run", "-p", profile, *extra, "--", *PROBE_ARGV], pass_fds=sorted(caller_fds))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2})


def test_cli_fds_pass(caller_fds, secret):
    low = min(fd for fd in caller_fds if fd > 10)  # one this test opened (and gave the CLI)
    r = _cli(["run", "-p", "strict", "--set", f"fds.pass=[{low}, 2000]", "--", *PROBE_ARGV],
             pass_fds=sorted(caller_fds))
    assert r.returncode == 0, r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2, low, 2000}, secret, (low, 2000))


@pytest.mark.parametrize("profile", ["strict", "default"])
@pytest.mark.parametrize("fd", [3, 4, 5, 6, 7, 8, 9])
def test_cli_shell_redirect_does_not_leak(profile, fd, secret):
    """The report's reproduction: `exec N<file; isolate run -- sh -c "cat <&N"`."""
    isolate_cmd = f"{sys.executable} -m cli.main"
    script = f'exec {fd}<"$1"; {isolate_cmd} run -p {profile} -- sh -c "cat <&{fd}"'
    r = subprocess.run(["bash", "-c", script, "bash", str(secret)], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert "host secret" not in r.stdout
    assert r.returncode == 2  # sh: N: Bad file descriptor
    assert "Bad file descriptor" in r.stderr
