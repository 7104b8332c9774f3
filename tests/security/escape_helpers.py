"""Shared pieces of the escape battery (tests/security/test_escape_*.py).

Every attack is a Python snippet run INSIDE a sandbox built from a shipped profile
("default" or "strict") plus this interpreter's directories (conftest.with_python).
The snippet is prefixed with PRELUDE, which

  * refuses to attack unless it really is in a sandbox: its pid, user and mount
    namespaces differ from the host's (read by the test and passed in), it has no
    capabilities at all, and its pid is small; otherwise it prints {"refused": why}
    and exits REFUSED, which run_attack() turns into a test failure, so a broken
    sandbox fails the battery without the attack ever touching the machine;
  * gives the snippet `attempt(name, fn)`, `sc(name, nr, *args)` (a raw x86-64
    syscall through libc) and `out` (a dict printed as JSON at the end).

Results are recorded as "OK" / "OK:<value>" for success or the errno name (EPERM,
ENOENT, ...) for failure, so assertions read like the errno tables in man pages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import isolate

from conftest import with_python

PROFILES = ("default", "strict")
REFUSED = 97  # the attack program found itself outside a sandbox and did nothing

# What "denied" may look like for a syscall the filter blocks: the deny list answers
# EPERM in both profiles; strict's allowlist answers ENOSYS to what it does not list.
DENIED = {"default": {"EPERM"}, "strict": {"EPERM", "ENOSYS"}}
# Writes refused by the view: read-only mount (EROFS) or Landlock / permissions (EACCES).
NO_WRITE = {"EROFS", "EACCES", "EPERM"}

SIGSYS = 31


def host_facts() -> dict:
    """What the attack program compares itself with before doing anything."""
    ns = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("pid", "user", "mnt", "net", "uts")}
    return {"ns": ns, "pid": os.getpid(), "hostname": socket.gethostname()}


PRELUDE = textwrap.dedent(r'''
    import ctypes, errno, json, os, signal, socket, sys, time
    HOST = json.loads(sys.argv[1])
    ARGS = json.loads(sys.argv[2])
    REFUSED = %(refused)d
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}

    def _refuse(why):
        print(json.dumps({"refused": why}), flush=True)
        os._exit(REFUSED)

    def _sandbox_check():
        for kind in ("pid", "user", "mnt"):
            if os.readlink("/proc/self/ns/" + kind) == HOST["ns"][kind]:
                _refuse("same %%s namespace as the host" %% kind)
        caps = {}
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.startswith("Cap"):
                    caps[k] = int(v, 16)
        if caps.get("CapEff", 1) or caps.get("CapPrm", 1) or caps.get("CapAmb", 1):
            _refuse("capabilities: %%r" %% caps)
        if os.getpid() >= 100 or os.getpid() == HOST["pid"]:
            _refuse("pid %%d is not a sandbox pid" %% os.getpid())
        if len([p for p in os.listdir("/proc") if p.isdigit()]) > 20:
            _refuse("/proc shows too many processes")

    _sandbox_check()

    def ename(e):
        return errno.errorcode.get(e, str(e))

    def attempt(name, fn):
        """out[name] = "OK" / "OK:<value>" if fn() returned, else the errno name."""
        try:
            r = fn()
            out[name] = "OK" if r is None else "OK:%%s" %% (r,)
        except OSError as e:
            out[name] = ename(e.errno)
        return out[name]

    def _arg(a):
        if isinstance(a, int):
            return ctypes.c_ulong(a & 0xffffffffffffffff)
        if isinstance(a, (bytes, str)):
            return ctypes.c_char_p(a.encode() if isinstance(a, str) else a)
        return a

    def raw(nr, *args):
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
        return r, (ctypes.get_errno() if r == -1 else 0)

    def sc(name, nr, *args):
        """A raw syscall; out[name] = "OK:<return value>" or the errno name."""
        r, e = raw(nr, *args)
        out[name] = "OK:%%d" %% r if r != -1 else ename(e)
        return out[name]

    def done():
        print(json.dumps(out), flush=True)
''' % {"refused": REFUSED})


def profile_for(name: str, ro=(), rw=(), **sections) -> dict:
    return with_python(name, ro=[str(p) for p in ro], rw=[str(p) for p in rw], **sections)


# The host's own Python, for views where this interpreter (under root's 0700 home) is out
# of the program's reach: the host's tree seen as an unprivileged host uid.
SYSTEM_PYTHON = "/usr/bin/python3"


def launch_args(body: str, args=None, python: str | None = None) -> list:
    code = PRELUDE + textwrap.dedent(body) + "\ndone()\n"
    return [python or sys.executable, "-c", code, json.dumps(host_facts()), json.dumps(args or {})]


def run_attack(profile: str, body: str, args=None, *, ro=(), rw=(), profile_dict=None, expect_rc=0,
               timeout=30, python=None, **kw):
    """Run `body` (after PRELUDE) in the sandbox; return (Result, the JSON it printed or None).

    The sandbox check must have passed (else the test fails: the sandbox is broken). With
    expect_rc set, the program's returncode must be that.
    """
    prof = profile_dict if profile_dict is not None else profile_for(profile, ro=ro, rw=rw)
    r = isolate.run(launch_args(body, args, python), profile=prof, capture_output=True, text=True, timeout=timeout, **kw)
    assert_not_refused(r)
    data = None
    for line in reversed((r.stdout or "").splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            break
    if expect_rc is not None:
        assert r.returncode == expect_rc, (r.returncode, r.stdout, r.stderr)
        assert data is not None, (r.stdout, r.stderr)
    return r, data


def assert_not_refused(r):
    assert r.returncode != REFUSED, (
        "the attack program found itself OUTSIDE a sandbox (namespaces/capabilities of the host) "
        f"and refused to attack: the sandbox is broken. stdout={r.stdout!r} stderr={r.stderr!r}")


def errname(e: int) -> str:
    return errno.errorcode[e]


# ---- the static C program for the 32-bit / x32 ABI -----------------------------------------
C_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "abi_escape.c")


def build_abi_program(directory) -> str:
    """Compile abi_escape.c statically into `directory`; returns the binary's path."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is required by the 32-bit/x32 escape tests"
    out = os.path.join(str(directory), "abi_escape")
    subprocess.run([gcc, "-static", "-no-pie", "-O1", "-o", out, C_SOURCE], check=True, capture_output=True,
                   timeout=60)
    return out


class HostSleep:
    """A `sleep` on the host (outside every sandbox), to be seen, signalled, killed."""

    def __enter__(self):
        self.proc = subprocess.Popen(["sleep", "300"])
        return self.proc

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
