"""CPython's own subprocess and asyncio-subprocess tests, run against isolate: every test
passes but those listed, with their reasons, in tests/conformance/exclusions.py.

The tests are those of each Python that runs them (its Lib/test): the one running this
suite, and the pyenv builds of 3.12 and 3.13 on this machine, for which isolate's C
extension is built first (tests/conformance/build.py). tests/conformance/runner.py runs
them in a subprocess with subprocess.Popen replaced by isolate.Popen and asyncio's
subprocess transport by isolate.asyncio's; every child runs in a sandbox of the default
profile that keeps the environment and shows the interpreter and /tmp. All runs start
together (a module fixture) so that the whole takes about as long as the longest."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import exclusions
from conformance.build import build_for
from conftest import ROOT

PYENV = "/root/.pyenv/versions"
VERSIONS = ["3.11", "3.12", "3.13"]
SUITES = ["subprocess", "asyncio"]


def _interpreter(version: str) -> str | None:
    if sys.version.startswith(version + "."):
        return sys.executable
    found = sorted(glob.glob(f"{PYENV}/{version}.*/bin/python{version}"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every (version, suite) run, started at once: {(version, suite): (Popen, result path, python)}."""
    started = {}
    for version in VERSIONS:
        python = _interpreter(version)
        if python is None:
            continue
        base = tmp_path_factory.mktemp(f"conformance-{version}")
        path = [str(ROOT)]
        if python != sys.executable:
            path.insert(0, str(build_for(python, base / "lib")))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path),
                   ISOLATE_PROFILE_PATH=str(ROOT / "profiles"))
        for suite in SUITES:
            cwd = base / suite
            cwd.mkdir()
            out = base / f"{suite}.json"
            p = subprocess.Popen([python, "-m", "tests.conformance.runner", suite, str(out)], cwd=cwd, env=env,
                                 stdout=subprocess.DEVNULL, stderr=open(base / f"{suite}.log", "w"))
            started[(version, suite)] = (p, out, python)
    yield started
    for p, _out, _python in started.values():
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("version", VERSIONS)
def test_cpython_tests_pass_against_isolate(version, suite, runs):
    if (version, suite) not in runs:
        pytest.fail(f"no Python {version} under {PYENV}: the drop-in must pass CPython's tests on 3.11, "
                    "3.12 and 3.13, and this machine kind ships all three")
    p, out, python = runs[(version, suite)]
    p.wait(timeout=900)
    log = Path(str(out)[:-len(".json")] + ".log").read_text()
    assert out.exists(), (p.returncode, log[-5000:])
    seen = json.loads(out.read_text())
    table = exclusions.SUBPROCESS if suite == "subprocess" else exclusions.ASYNCIO
    assert set(table.values()) <= set(exclusions.REASONS)
    assert seen["ran"] > (250 if suite == "subprocess" else 100), (seen["ran"], log[-3000:])
    unexpected = {t: tb for t, tb in seen["failed"].items() if exclusions.reason(table, t) is None}
    assert not unexpected, "\n\n".join(f"{t}:\n{tb}" for t, tb in unexpected.items())
    # An entry that excludes a test which passes is no longer needed: the list stays exact.
    stale = {t: exclusions.reason(table, t) for t in seen["passed"] if exclusions.reason(table, t)}
    assert not stale, f"excluded tests that pass now: {stale}"
    print(f"\n{suite}: Python {seen['python']}: {len(seen['passed'])} passed, {len(seen['failed'])} excluded, "
          f"{len(seen['skipped'])} skipped of {seen['ran']}")
