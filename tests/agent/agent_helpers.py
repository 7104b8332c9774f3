import os
import sys

import pytest

import isolate


@pytest.fixture
def session(tmp_path):
    with isolate.Session("agent", workspace=tmp_path) as s:
        yield s


def _sandbox_pids(s) -> list:
    from isolate.agent.session import _tree

    return _tree(s.pid)


def names_in(s) -> list:
    """Command names of the processes in the sandbox, seen from the host."""
    out = []
    for pid in _sandbox_pids(s):
        try:
            with open(f"/proc/{pid}/comm") as f:
                out.append(f.read().strip())
        except OSError:
            pass
    return out
