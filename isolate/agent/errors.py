"""The errors of agent sessions (below every module of isolate.agent that raises them)."""

from __future__ import annotations

from ..errors import IsolateError


class SessionError(IsolateError):
    """A session could not do what was asked (see the message)."""


class SessionClosed(SessionError):
    """The session was closed (by close(), its TTL or idle timeout, or its sandbox ended)."""


class JobNotFound(SessionError, KeyError):
    """No job with that id in this session."""

    def __str__(self):
        return self.args[0] if self.args else "no such job"
