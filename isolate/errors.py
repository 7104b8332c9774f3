"""The exceptions isolate raises, one type per kind of outcome."""

from __future__ import annotations

import errno as errno_mod
import os


class IsolateError(Exception):
    """Base of every error isolate raises on purpose."""


class ProfileError(IsolateError, ValueError):
    """A profile is malformed: names the file, the dotted key and what was expected."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        super().__init__(message)

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join(parts + [self.message])


class SandboxSetupError(IsolateError, OSError):
    """The sandbox could not be set up: names the step, the path and the reason."""

    def __init__(self, step: str, errno_: int, detail: str | None = None, path: str | None = None):
        self.step = step
        self.path = path
        self.detail = detail
        reason = os.strerror(errno_) if errno_ else "failed"
        OSError.__init__(self, errno_, reason)
        self.filename = path

    def __str__(self) -> str:
        where = f" {self.path!r}" if self.path else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"sandbox setup failed at step '{self.step}'{where}: {self.strerror}{extra}"


class UnsupportedError(SandboxSetupError):
    """The profile asks for something this kernel or this user cannot give (fail closed)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        SandboxSetupError.__init__(self, "preflight", 0, detail=None, path=None)

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ExecutableNotFound(SandboxSetupError, FileNotFoundError):
    """The program does not exist in the sandbox (subprocess raises FileNotFoundError here too)."""


class ExecutablePermission(SandboxSetupError, PermissionError):
    """The program exists but may not be executed."""


class WorkingDirectoryNotFound(SandboxSetupError, FileNotFoundError):
    """The working directory (cwd=) does not exist (subprocess raises FileNotFoundError here too)."""

    def __init__(self, path: str, errno_: int = errno_mod.ENOENT):
        SandboxSetupError.__init__(self, "chdir", errno_, "working directory", path)


class WorkingDirectoryNotADirectory(SandboxSetupError, NotADirectoryError):
    """cwd= is not a directory in the sandbox (subprocess raises NotADirectoryError)."""


class WorkingDirectoryPermission(SandboxSetupError, PermissionError):
    """cwd= may not be entered in the sandbox (subprocess raises PermissionError)."""
