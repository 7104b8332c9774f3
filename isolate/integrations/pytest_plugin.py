"""The pytest plugin of isolate, installed with the package (entry point `pytest11`).

- The `sandbox` fixture: an `isolate.Session` per test, closed after it. Its profile is
  the test's `@pytest.mark.isolate_profile("strict")` marker, else `--isolate-profile`,
  else `agent`; its workspace is the test's `tmp_path`.
- `pytest --isolate-profile P`: for the whole run, `subprocess.Popen` is isolate's
  Popen with profile P, so every subprocess the tested code starts through the
  subprocess module (run, call, check_output, Popen) runs in a sandbox of P.
  Restored when the run ends.

pytest loads this module in every run of every project where the package is installed:
it does not load isolate's sessions (isolate.agent) unless a test asks for `sandbox`.
"""

from __future__ import annotations

import subprocess

import pytest

import isolate

DEFAULT_PROFILE = "agent"
_STASH_POPEN = pytest.StashKey[object]()


def pytest_addoption(parser):
    group = parser.getgroup("isolate", "isolate sandboxes")
    group.addoption("--isolate-profile", dest="isolate_profile", default=None, metavar="PROFILE",
                    help="run the subprocesses the tests start (subprocess.Popen/run/...) in isolate "
                         "sandboxes of PROFILE (a name or a .toml path); also the default profile of "
                         "the `sandbox` fixture")


def sandboxed_popen(profile):
    """A subclass of isolate.Popen whose default profile is `profile` (what replaces
    subprocess.Popen under --isolate-profile)."""
    isolate.load_profile(profile)  # a bad profile fails the run here, not in the first test

    class SandboxedPopen(isolate.Popen):
        __doc__ = f"subprocess.Popen, started in an isolate sandbox of profile {profile!r}."

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("profile", profile)
            super().__init__(*args, **kwargs)

    SandboxedPopen.__name__ = SandboxedPopen.__qualname__ = "Popen"
    return SandboxedPopen


def pytest_configure(config):
    config.addinivalue_line("markers", "isolate_profile(name): the isolate profile of the `sandbox` fixture")
    profile = config.getoption("isolate_profile")
    if profile:
        try:
            replacement = sandboxed_popen(profile)
        except Exception as e:  # a bad profile: a usage error of the run (exit 4), said in one line
            raise pytest.UsageError(f"--isolate-profile {profile}: {e}") from None
        config.stash[_STASH_POPEN] = subprocess.Popen
        subprocess.Popen = replacement


def pytest_unconfigure(config):
    original = config.stash.get(_STASH_POPEN, None)
    if original is not None:
        subprocess.Popen = original
        del config.stash[_STASH_POPEN]


def pytest_report_header(config):
    profile = config.getoption("isolate_profile")
    if profile:
        return f"isolate: subprocesses run in sandboxes of profile {profile!r}"
    return None


@pytest.fixture
def sandbox(request, tmp_path):
    """An isolate.Session for this test (profile: the isolate_profile marker, else
    --isolate-profile, else "agent"; workspace: tmp_path), closed after it."""
    marker = request.node.get_closest_marker("isolate_profile")
    if marker is not None:
        if len(marker.args) != 1 or marker.kwargs:
            raise pytest.UsageError("@pytest.mark.isolate_profile takes one argument, the profile's name or path")
        profile = marker.args[0]
    else:
        profile = request.config.getoption("isolate_profile") or DEFAULT_PROFILE
    session = isolate.Session(profile, workspace=str(tmp_path))
    try:
        yield session
    finally:
        session.close()
