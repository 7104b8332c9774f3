"""isolate: spawn a blank process, then opt in to what it gets.

    import isolate
    r = isolate.run(["id"], profile="default", capture_output=True)

A profile (TOML) is compiled once into a Plan; each launch is a clone-based start
from that Plan (see isolate/launch/_launch.c).
"""

from .errors import IsolateError, ProfileError, SandboxSetupError, UnsupportedError
from .launch.warm import WarmPool
from .launch.process import (DEVNULL, PIPE, STDOUT, CalledProcessError, ExecutableNotFound, ExecutablePermission,
                             Popen, Result, Rusage, TimeoutExpired, WorkingDirectoryNotFound, load_profile, plan_for,
                             run)
from .launch.compat import call, check_call, check_output, getoutput, getstatusoutput
from .launch.popen_args import IdentityError, UnknownName
SubprocessError = __import__("subprocess").SubprocessError

__all__ = [
    "run", "Popen", "WarmPool", "Result", "Rusage", "PIPE", "DEVNULL", "STDOUT", "TimeoutExpired", "CalledProcessError",
    "IsolateError", "ProfileError", "SandboxSetupError", "UnsupportedError", "ExecutableNotFound",
    "ExecutablePermission", "WorkingDirectoryNotFound", "load_profile", "plan_for",
    "call", "check_call", "check_output", "getoutput", "getstatusoutput", "SubprocessError", "IdentityError",
    "UnknownName",
]
__version__ = "0.1.0"

# Agent sessions (isolate.agent) are imported on first use: `import isolate` stays fast.
_AGENT_NAMES = ("Session", "AsyncSession", "SessionPool", "ExecResult", "Job")


def __getattr__(name):
    if name in _AGENT_NAMES:
        from . import agent  # sessions load the agent package (its C helper, audit reader), kept out of `import isolate`

        return getattr(agent, name)
    raise AttributeError(f"module 'isolate' has no attribute {name!r}")
