"""CPython's own subprocess and asyncio-subprocess tests, run against isolate: every test
passes but those listed, with their reasons, in tests/conformance/exclusions.py.

The tests are those of the Python running this suite (its Lib/test), run in a
subprocess by tests/conformance/runner.py with subprocess.Popen replaced by isolate.Popen
and asyncio's subprocess transport by isolate.asyncio's; each child runs in a sandbox
of the default profile that keeps the environment and shows the interpreter and /tmp."""

import json
import subprocess
import sys

import pytest

from conformance import exclusions
from conftest import ROOT


def run_suite(which: str, tmp_path) -> dict:
    try:
        __import__({"subprocess": "test.test_subprocess", "asyncio": "test.test_asyncio.test_subprocess"}[which])
    except ImportError as e:
        pytest.fail(f"this Python ({sys.executable}) has no Lib/test: {e}; install its test package")
    out = tmp_path / f"{which}.json"
    r = subprocess.run([sys.executable, "-m", "tests.conformance.runner", which, str(out)], cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=600)
    assert out.exists(), (r.returncode, r.stderr[-5000:])
    return json.loads(out.read_text())


@pytest.mark.parametrize("which", ["subprocess", "asyncio"])
def test_cpython_tests_pass_against_isolate(which, tmp_path):
    table = exclusions.SUBPROCESS if which == "subprocess" else exclusions.ASYNCIO
    assert set(table.values()) <= set(exclusions.REASONS)
    seen = run_suite(which, tmp_path)
    assert seen["ran"] > (300 if which == "subprocess" else 100), seen["ran"]
    unexpected = {t: tb for t, tb in seen["failed"].items() if exclusions.reason(table, t) is None}
    assert not unexpected, "\n\n".join(f"{t}:\n{tb}" for t, tb in unexpected.items())
    # Every entry still excludes a test that does not pass (the list cannot go stale).
    stale = [p for p in table if not any(exclusions.reason({p: "x"}, t) for t in seen["failed"])]
    assert not stale, f"exclusions that match no failing test any more: {stale}"
    print(f"{which}: Python {seen['python']}: {len(seen['passed'])} passed, {len(seen['failed'])} excluded, "
          f"{len(seen['skipped'])} skipped of {seen['ran']}")
