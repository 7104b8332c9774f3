"""What a command did (ExecResult) and what the output cap dropped (Truncated)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .violations import render


@dataclasses.dataclass(frozen=True)
class Truncated:
    """Bytes omitted from the middle of each stream by the output cap (0: nothing)."""

    stdout: int = 0
    stderr: int = 0

    def __bool__(self):
        return bool(self.stdout or self.stderr)


@dataclasses.dataclass
class ExecResult:
    """What a command did. `returncode` is as subprocess's (-N: killed by signal N),
    None while it runs (`running`, with its `job`)."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    duration: float = 0.0
    truncated: Truncated = Truncated()
    violations: list = dataclasses.field(default_factory=list)   # what the sandbox refused (dicts)
    running: bool = False
    job: Any = None
    shell_restarted: bool = False   # the shell was killed and restarted (cwd and exports kept)
    cwd: str | None = None          # the shell's working directory after the command
    error: str | None = None        # the command could not be started (returncode 126/127)

    @property
    def outcome(self) -> str:
        if self.running:
            return "running"
        if self.timed_out:
            return "timed_out"
        if self.error:
            return "not_started"
        if self.returncode is not None and self.returncode < 0:
            return "signaled"
        return "exited"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.running

    def for_model(self, max_chars: int = 20000) -> str:
        """A short text block for a model: output, outcome, what the sandbox denied."""
        parts = []
        if self.stdout:
            parts.append(self.stdout)
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr)
        if self.running:
            parts.append(f"[still running as job {self.job.id}; poll it, write to it or wait for it]")
        elif self.timed_out:
            parts.append(f"[timed out after {self.duration:.1f} s: the command and its processes were killed]")
        elif self.error:
            parts.append(f"[not started: {self.error}]")
        else:
            parts.append(f"[exit code {self.returncode}]")
        if self.truncated:
            parts.append(f"[output truncated: {self.truncated.stdout} bytes of stdout and "
                         f"{self.truncated.stderr} bytes of stderr omitted from the middle]")
        if self.violations:
            parts.append(render(self.violations))
        text = "\n".join(parts)
        if len(text) > max_chars:
            half = max_chars // 2
            text = text[:half] + f"\n[... {len(text) - max_chars} characters omitted ...]\n" + text[-half:]
        return text
