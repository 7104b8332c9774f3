"""isolate.agent: sandboxes that live across tool calls (Session, AsyncSession, SessionPool).

    with isolate.Session("agent", workspace=".") as s:
        s.exec("cd src && export DEBUG=1")
        r = s.exec("make test", timeout=600, yield_after=10, max_output=64_000)
        print(r.for_model())
"""

from .errors import JobNotFound, SessionClosed, SessionError
from .results import ExecResult, Truncated
from .session import Session
from .files import DirEntry, SessionPathError
from .jobs import Job, JobOutput
from .asyncio_session import AsyncJob, AsyncSession
from .pool import SessionPool

__all__ = ["Session", "AsyncSession", "AsyncJob", "SessionPool", "ExecResult", "Truncated", "Job", "JobOutput", "DirEntry", "SessionError", "SessionClosed",
           "JobNotFound", "SessionPathError"]
