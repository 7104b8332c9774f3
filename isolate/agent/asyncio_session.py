"""isolate.AsyncSession: Session's methods as coroutines (`async with`).

The blocking work runs in a thread (asyncio.to_thread); callbacks are called on the
event loop: plain functions with call_soon_threadsafe, coroutine functions scheduled
as tasks and awaited before exec returns.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Mapping, Sequence

from .errors import SessionClosed
from .results import ExecResult
from .session import Session


def _on_loop(cb, loop, pending: list):
    if cb is None:
        return None
    if not callable(cb):
        raise TypeError(f"expected a callable, got {type(cb).__name__}")

    def call(text):
        def run():
            r = cb(text)
            if inspect.isawaitable(r):
                pending.append(asyncio.ensure_future(r))
        loop.call_soon_threadsafe(run)
    return call


class AsyncJob:
    """A Job whose waiting methods are coroutines."""

    def __init__(self, job):
        self.sync = job

    def __repr__(self):
        return repr(self.sync).replace("isolate Job", "isolate AsyncJob")

    id = property(lambda self: self.sync.id)
    pid = property(lambda self: self.sync.pid)
    done = property(lambda self: self.sync.done)
    returncode = property(lambda self: self.sync.returncode)
    cmd = property(lambda self: self.sync.cmd)

    def read_output(self, since=None):
        return self.sync.read_output(since)

    async def write_stdin(self, data, timeout: float | None = 10.0) -> None:
        await asyncio.to_thread(self.sync.write_stdin, data, timeout)

    async def close_stdin(self) -> None:
        self.sync.close_stdin()

    async def wait(self, timeout: float | None = None) -> ExecResult:
        return _async_result(await asyncio.to_thread(self.sync.wait, timeout))

    async def kill(self) -> ExecResult:
        return _async_result(await asyncio.to_thread(self.sync.kill))


def _async_result(r: ExecResult) -> ExecResult:
    if r.job is not None and not isinstance(r.job, AsyncJob):
        r.job = AsyncJob(r.job)
    return r


class AsyncSession:
    """isolate.Session for asyncio: `async with isolate.AsyncSession("agent") as s: await s.exec("ls")`.

    The constructor takes Session's arguments; the sandbox starts in `async with` (or
    `await s.start()`)."""

    def __init__(self, profile: Any = "agent", **kwargs):
        self._args = (profile, kwargs)
        self.sync: Session | None = None

    @classmethod
    def from_session(cls, session: Session) -> "AsyncSession":
        s = cls.__new__(cls)
        s._args = None
        s.sync = session
        return s

    async def start(self) -> "AsyncSession":
        if self.sync is None:
            profile, kwargs = self._args
            self.sync = await asyncio.to_thread(Session, profile, **kwargs)
        return self

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    def _s(self) -> Session:
        if self.sync is None:
            raise SessionClosed("the session is not started (use `async with` or `await start()`)")
        return self.sync

    @property
    def closed(self) -> bool:
        return self.sync is None or self.sync.closed

    async def close(self) -> None:
        if self.sync is not None:
            await asyncio.to_thread(self.sync.close)

    async def exec(self, cmd, *, timeout: float | None = None, yield_after: float | None = None, input=None,
                   cwd=None, env: Mapping[str, str] | None = None, max_output: int | None = None,
                   on_stdout: Callable | None = None, on_stderr: Callable | None = None,
                   yield_when_quiet: float | None = None) -> ExecResult:
        loop = asyncio.get_running_loop()
        pending: list = []
        r = await asyncio.to_thread(self._s().exec, cmd, timeout=timeout, yield_after=yield_after, input=input,
                                    yield_when_quiet=yield_when_quiet,
                                    cwd=cwd, env=env, max_output=max_output,
                                    on_stdout=_on_loop(on_stdout, loop, pending),
                                    on_stderr=_on_loop(on_stderr, loop, pending))
        await asyncio.sleep(0)   # let the callbacks queued by the thread run
        if pending:
            await asyncio.gather(*pending)
        return _async_result(r)

    async def spawn(self, cmd, *, cwd=None, env: Mapping[str, str] | None = None, max_output: int | None = None,
                    timeout: float | None = None, on_stdout: Callable | None = None,
                    on_stderr: Callable | None = None) -> AsyncJob:
        loop = asyncio.get_running_loop()
        pending: list = []
        job = await asyncio.to_thread(self._s().spawn, cmd, cwd=cwd, env=env, max_output=max_output,
                                      timeout=timeout, on_stdout=_on_loop(on_stdout, loop, pending),
                                      on_stderr=_on_loop(on_stderr, loop, pending))
        return AsyncJob(job)

    def jobs(self) -> list:
        return [AsyncJob(j) for j in self._s().jobs()]

    def job(self, job_id) -> AsyncJob:
        return AsyncJob(self._s().job(job_id))

    async def write_file(self, path, data, mode: int = 0o644) -> int:
        return await asyncio.to_thread(self._s().write_file, path, data, mode)

    async def read_file(self, path, text: bool = False, max_size: int | None = None):
        return await asyncio.to_thread(self._s().read_file, path, text, max_size)

    async def list_dir(self, path=".") -> list:
        return await asyncio.to_thread(self._s().list_dir, path)

    async def changes(self) -> list:
        return await asyncio.to_thread(self._s().changes)

    async def apply(self) -> list:
        return await asyncio.to_thread(self._s().apply)

    async def discard(self) -> None:
        await asyncio.to_thread(self._s().discard)

    async def pty(self, cmd, rows: int = 24, cols: int = 80, **kw):
        return await asyncio.to_thread(self._s().pty, cmd, rows, cols, **kw)

    @property
    def cwd(self) -> str:
        return self._s().cwd
