"""What the session's modules share below them: isolate-agentd's wire protocol (message
kinds, the fixed fd numbers, timings) and the small checks and helpers every command
path uses. It imports nothing of isolate.agent."""

from __future__ import annotations

import math
import os
import struct
from typing import Mapping

AGENTD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolate-agentd")
A_RUN, A_SHELL, A_RELEASE, A_KILL = 1, 2, 3, 4
R_HELLO, R_STARTED, R_EXIT, R_NET, R_DENIED = 16, 17, 18, 19, 20
RUN_SHELL = 1
HOLD_FD = 10
MAX_SLOTS = 64
MSG = struct.Struct("=IIii")
KILL_GRACE = 0.5          # seconds a shell has to report after its command's tree was killed
START_TIMEOUT = 10.0
STEP = {1: "setsid", 2: "fds", 3: "chdir", 4: "signals", 5: "exec"}


def close_fd(fd: int) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def check_seconds(value, what: str, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what}: expected a number of seconds or None, got {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(f"{what}: expected a finite number of seconds >= 0 (None for none), got {value!r}")
    return float(value)


def check_env(env) -> None:
    if not isinstance(env, Mapping):
        raise TypeError(f"env: expected a mapping of names to values, got {type(env).__name__}")
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"env: names and values must be str, got {k!r}: {v!r}")
        if not k or "=" in k or "\0" in k:
            raise ValueError(f"env: illegal variable name {k!r}")
        if "\0" in v:
            raise ValueError(f"env[{k!r}]: embedded null byte")
        if not all(c.isalnum() or c == "_" for c in k) or k[0].isdigit():
            raise ValueError(f"env: {k!r} is not a shell variable name")


def check_cmd(cmd):
    if isinstance(cmd, bytes):
        cmd = os.fsdecode(cmd)
    if isinstance(cmd, str):
        if "\0" in cmd:
            raise ValueError("cmd: embedded null byte in the command")
        return cmd
    if isinstance(cmd, os.PathLike):
        cmd = [cmd]
    if not isinstance(cmd, (list, tuple)):
        raise TypeError(f"cmd: expected a shell string or an argv list, got {type(cmd).__name__}")
    if not cmd:
        raise ValueError("cmd: an empty argv list names no program")
    out = []
    for i, a in enumerate(cmd):
        if not isinstance(a, (str, bytes, os.PathLike)):
            raise TypeError(f"cmd[{i}]: expected str, got {type(a).__name__}")
        a = os.fsdecode(os.fspath(a))
        if "\0" in a:
            raise ValueError(f"cmd[{i}]: embedded null byte")
        out.append(a)
    return out
