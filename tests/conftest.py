import json
import os
import sys
from pathlib import Path

import pytest

import isolate

TESTS = Path(__file__).resolve().parent
PROBE = TESTS / "probe.py"
ROOT = TESTS.parent


def run_probe(profile="default", overrides=(), checks=(), **kw) -> dict:
    """Run tests/probe.py in a sandbox and return what it saw."""
    r = isolate.run([sys.executable, str(PROBE), *checks], profile=profile, overrides=list(overrides),
                    capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, (r.returncode, r.stderr)
    return json.loads(r.stdout)


def cli(*args, input=None, timeout=60, env=None):
    """Run the isolate command line in a subprocess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=ROOT, env=env)


def open_fds() -> set:
    return {int(x) for x in os.listdir("/proc/self/fd")}


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


@pytest.fixture
def probe():
    return run_probe
