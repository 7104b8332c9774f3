"""A caller's file descriptors must not reach the sandbox (escape battery: fds).

Whatever numbers the caller has open (every number from 3 to 1024, and 2000 and 65535,
or the highest number the hard RLIMIT_NOFILE allows, with the soft limit raised to it;
inheritable or close-on-exec), the program's table is
exactly 0, 1, 2 and the fds it was passed (`pass_fds`, `fds.pass`), at their numbers,
pointing at what the caller passed. The program reports its table from the inside:
an fstat() of every number up to PROBE_LIMIT (works without /proc) and, where it has
a /proc, the listing of /proc/self/fd; the tests assert the exact set. Covered: the
library and the CLI, with isolate-init as pid 1 and without any init (no pid namespace,
no die_with_parent), with and without pass_fds, warm sandboxes (WarmPool), and a
kernel without close_range (the fallback path).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

import isolate

from conftest import ROOT, fill_fds

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


# The caller, in a process of its own so that every number is really ours to fill
# (pytest holds low fds of its own): it closes every fd above 2, fills every number
# from 3 to 1024 and HIGH with the secret file (every other one inheritable, like
# `exec 6<file` in a shell; all of them inheritable before it execs the CLI), then
# runs the probe through the library or execs the CLI.
DRIVER = r"""
import json, os, resource, sys
p = json.loads(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
os.closerange(3, hard)
import isolate
base = os.open(p["secret"], os.O_RDONLY | os.O_CLOEXEC)
for fd in [*range(3, 1025), *p["high"]]:
    if fd != base:
        try:
            os.fstat(fd)
            continue  # isolate's own (none are expected this early)
        except OSError:
            pass
        os.dup2(base, fd, inheritable=fd % 2 == 0 or p.get("cli") is not None)
    os.fstat(fd)
if p.get("no_close_range"):
    # A kernel without close_range (before 5.9): a filter makes it fail with ENOSYS for
    # this process and everything it starts, so the launch takes its fallback path.
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    insns = [(0x20, 0, 0, 0), (0x15, 0, 1, 436), (0x06, 0, 0, 0x00050000 | 38), (0x06, 0, 0, 0x7FFF0000)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
    prog = struct.pack("=HxxxxxxQ", len(insns), ctypes.addressof(buf))
    prog_buf = ctypes.create_string_buffer(prog)
    assert libc.prctl(38, 1, 0, 0, 0) == 0
    assert libc.prctl(22, 2, prog_buf, 0, 0) == 0, ctypes.get_errno()
    libc.syscall.restype = ctypes.c_long
    assert libc.syscall(436, 100000, 100000, 0) == -1 and ctypes.get_errno() == 38
if p.get("cli") is not None:
    os.set_inheritable(base, True)
    os.execv(sys.executable, [sys.executable, "-m", "cli.main", *p["cli"]])
if p.get("warm"):
    with isolate.WarmPool(p["profile"], size=2) as pool:
        r = pool.run(p["argv"], capture_output=True, timeout=60, pass_fds=p["pass"])
        r2 = pool.run(p["argv"], capture_output=True, timeout=60)
    results = [r, r2]
else:
    results = [isolate.run(p["argv"], profile=p["profile"], capture_output=True, timeout=60, pass_fds=p["pass"])]
ids = {fd: [os.fstat(fd).st_dev, os.fstat(fd).st_ino] for fd in p["pass"]}
print(json.dumps({"runs": [[r.returncode, r.stdout.decode(), r.stderr.decode()] for r in results], "ids": ids,
                  "use_init": isolate.plan_for(p["profile"]).use_init}))
"""


def _drive(secret, **params) -> subprocess.CompletedProcess:
    params = {"secret": str(secret), "high": [*HIGH, PASS_HIGH], "argv": PROBE_ARGV, "pass": [], **params}
    return subprocess.run([sys.executable, "-c", DRIVER, json.dumps(params)], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def _report(stdout) -> dict:
    if isinstance(stdout, bytes):
        stdout = stdout.decode()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    assert lines, stdout
    return json.loads(lines[-1])


def _assert_table(data: dict, expected: set, ids=None):
    assert data["odd"] == []
    assert set(data["fds"]) == expected, sorted(set(data["fds"]) ^ expected)
    if data["proc"] is not None:
        assert set(data["proc"]) == expected
    for fd, want in (ids or {}).items():  # the very file the caller holds at that number
        assert data["ids"][str(fd)] == want, fd


def _library(secret, profile, passed=(), warm=False, use_init=None, **more):
    d = _drive(secret, profile=profile, **{"pass": list(passed)}, warm=warm, **more)
    assert d.returncode == 0, d.stderr
    out = json.loads(d.stdout.splitlines()[-1])
    if use_init is not None:
        assert out["use_init"] is use_init
    for i, (rc, stdout, stderr) in enumerate(out["runs"]):
        assert rc == 0, stderr
        p = set(passed) if i == 0 else set()
        _assert_table(_report(stdout), {0, 1, 2, *p}, {int(k): v for k, v in out["ids"].items()} if i == 0 else None)


# ---- the library ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROFILES))
def test_library_no_caller_fd_reaches_the_program(name, secret):
    _library(secret, PROFILES[name], use_init=WITH_INIT[name])


@pytest.mark.parametrize("name", list(PROFILES))
def test_library_exactly_the_passed_fds(name, secret):
    _library(secret, PROFILES[name], (4, 5, 6, 7, 700, 1024, HIGH[0], PASS_HIGH), use_init=WITH_INIT[name])


@pytest.mark.parametrize("name,warm", [("strict", False), ("default-no-init", False), ("strict", True)])
def test_without_close_range(name, warm, secret):
    """The fallback for kernels without close_range closes every number just the same."""
    passed = (4, 7, 200) if warm else (4, 7, 700, PASS_HIGH)
    _library(secret, PROFILES[name], passed, warm=warm, no_close_range=True)
    _library(secret, PROFILES[name], warm=warm, no_close_range=True)


def test_cli_without_close_range(secret):
    r = _drive(secret, no_close_range=True, cli=["run", "-p", "strict", "--", *PROBE_ARGV])
    assert r.returncode == 0, r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2})


@pytest.mark.parametrize("name", ["default", "default-no-init"])
def test_library_profile_fds_pass(name, secret):
    prof = dict(PROFILES[name]) if isinstance(PROFILES[name], dict) else {"extends": name}
    prof["fds"] = {"pass": [9, 2000]}
    d = _drive(secret, profile=prof, **{"pass": [11]})
    assert d.returncode == 0, d.stderr
    out = json.loads(d.stdout.splitlines()[-1])
    rc, stdout, stderr = out["runs"][0]
    assert rc == 0, stderr
    _assert_table(_report(stdout), {0, 1, 2, 9, 11, 2000})


# A warm sandbox lays out its task's fds in pid 1, under the profile's RLIMIT_NOFILE
# (default 1024, strict 256): passed numbers stay below it.
WARM_PASS = {"default": (3, 4, 5, 6, 7, 700, 1000), "strict": (3, 4, 5, 6, 7, 100, 240)}


@pytest.mark.parametrize("profile", ["default", "strict"])
@pytest.mark.parametrize("with_pass", [False, True])
def test_warm_pool(profile, with_pass, secret):
    """Sandboxes made while the caller holds every number, then a task with and without pass_fds."""
    _library(secret, profile, WARM_PASS[profile] if with_pass else (), warm=True)


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_warm_pool_made_before_the_caller_opened_fds(profile, secret):
    with isolate.WarmPool(profile, size=1) as pool:
        pool.run(["true"], timeout=60)
        opened = []
        try:
            opened = fill_fds(secret, 1024)
            r = pool.run(PROBE_ARGV, capture_output=True, timeout=60, pass_fds=(opened[0],))
            assert r.returncode == 0, r.stderr
            st = os.fstat(opened[0])
            _assert_table(_report(r.stdout), {0, 1, 2, opened[0]}, {opened[0]: [st.st_dev, st.st_ino]})
        finally:
            for fd in opened:
                try:
                    os.close(fd)
                except OSError:
                    pass


# ---- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "strict", "no-init"])
def test_cli_no_caller_fd_reaches_the_program(name, secret):
    extra = ["--set", "namespaces.pid=false", "--set", "process.die_with_parent=false",
             "--set", "filesystem.proc=false"] if name == "no-init" else []
    profile = "default" if name == "no-init" else name
    r = _drive(secret, cli=["run", "-p", profile, *extra, "--", *PROBE_ARGV])
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    _assert_table(_report(r.stdout), {0, 1, 2})


@pytest.mark.parametrize("name", ["strict", "no-init"])
def test_cli_fds_pass(name, secret):
    extra = ["--set", "namespaces.pid=false", "--set", "process.die_with_parent=false",
             "--set", "filesystem.proc=false"] if name == "no-init" else []
    profile = "default" if name == "no-init" else name
    r = _drive(secret, cli=["run", "-p", profile, *extra, "--set", "fds.pass=[4, 6, 2000]", "--", *PROBE_ARGV])
    assert r.returncode == 0, r.stderr
    st = os.stat(secret)
    _assert_table(_report(r.stdout), {0, 1, 2, 4, 6, 2000}, {fd: [st.st_dev, st.st_ino] for fd in (4, 6, 2000)})


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
