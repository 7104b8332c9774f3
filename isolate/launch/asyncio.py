"""asyncio's subprocess API with every child in a sandbox.

    from isolate import asyncio as isolate_asyncio
    proc = await isolate_asyncio.create_subprocess_exec("id", "-u", stdout=isolate_asyncio.PIPE,
                                                        profile="strict")
    out, _ = await proc.communicate()

create_subprocess_exec / create_subprocess_shell take asyncio's arguments (and
isolate.Popen's: profile=, overrides=, user=, umask=, ...) and return asyncio's own
`asyncio.subprocess.Process` (stdin/stdout/stderr streams, wait, communicate,
send_signal, terminate, kill, returncode, pid). The child is an isolate.Popen; the event
loop watches its pidfd (loop.add_reader): no thread and no child watcher per child,
so one loop runs hundreds of sandboxes at once. kill() takes the whole sandbox.
stdin/stdout/stderr left out are what the profile's [fds] says (None: the caller's).
"""

from __future__ import annotations

import asyncio as _asyncio
import subprocess as _subprocess
from asyncio import base_subprocess as _base_subprocess
from asyncio import streams as _streams
from asyncio.subprocess import Process, SubprocessStreamProtocol

from . import process as _process

__all__ = ["create_subprocess_exec", "create_subprocess_shell", "Process", "PIPE", "STDOUT", "DEVNULL"]

PIPE = _subprocess.PIPE
STDOUT = _subprocess.STDOUT
DEVNULL = _subprocess.DEVNULL
FROM_PROFILE = _process.FROM_PROFILE


class _SandboxTransport(_base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport around an isolate.Popen; its exit is seen through
    the pidfd of the sandbox, registered with the loop's selector."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = _process.Popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                                    universal_newlines=False, bufsize=bufsize, **kwargs)
        self._watched = -1

    def _watch(self) -> None:
        fd = self._proc._pidfd
        if fd < 0:  # already reaped (cannot happen before the first poll, but be exact)
            self._loop.call_soon(self._process_exited, self._proc.returncode)
            return
        self._watched = fd
        self._loop.add_reader(fd, self._pidfd_ready)

    def _pidfd_ready(self) -> None:
        # pid 1 of the sandbox has exited: reap it (the pidfd is closed by that).
        fd, self._watched = self._watched, -1
        if fd >= 0:
            self._loop.remove_reader(fd)
        returncode = self._proc.poll()
        if returncode is None:  # not reaped after all: watch again
            self._watch()
            return
        self._process_exited(returncode)

    def close(self):
        super().close()  # kills a sandbox still running (the whole sandbox)

    def _unwatch(self) -> None:
        fd, self._watched = getattr(self, "_watched", -1), -1
        if fd >= 0:
            self._loop.remove_reader(fd)


async def start_transport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
    """A subprocess transport whose child is an isolate sandbox (kwargs: isolate.Popen's),
    started and watched by `loop`; what asyncio's loop._make_subprocess_transport returns."""
    waiter = loop.create_future()
    transp = _SandboxTransport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter=waiter, **kwargs)
    transp._watch()
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp


async def _make_transport(loop, protocol_factory, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
    protocol = protocol_factory()
    return await start_transport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize, **kwargs), protocol


def _check(universal_newlines, bufsize, text, encoding, errors) -> None:
    # As loop.subprocess_exec/subprocess_shell: streams are bytes.
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


async def create_subprocess_exec(program, *args, stdin=FROM_PROFILE, stdout=FROM_PROFILE, stderr=FROM_PROFILE,
                                 limit=_streams._DEFAULT_LIMIT, universal_newlines=False, shell=False, bufsize=0,
                                 encoding=None, errors=None, text=None, **kwds) -> Process:
    """asyncio.create_subprocess_exec with the child in a sandbox (isolate.Popen's
    keywords: profile=, overrides=, cwd=, env=, user=, umask=, pass_fds= ...)."""
    if shell:
        raise ValueError("shell must be False")
    _check(universal_newlines, bufsize, text, encoding, errors)
    loop = _asyncio.get_running_loop()
    transport, protocol = await _make_transport(
        loop, lambda: SubprocessStreamProtocol(limit=limit, loop=loop), (program,) + args, False,
        stdin, stdout, stderr, bufsize, **kwds)
    return Process(transport, protocol, loop)


async def create_subprocess_shell(cmd, stdin=FROM_PROFILE, stdout=FROM_PROFILE, stderr=FROM_PROFILE,
                                  limit=_streams._DEFAULT_LIMIT, universal_newlines=False, shell=True, bufsize=0,
                                  encoding=None, errors=None, text=None, **kwds) -> Process:
    """asyncio.create_subprocess_shell with the child in a sandbox: `cmd` runs as
    SHELL -c cmd, SHELL being the profile's process.shell (/bin/sh)."""
    if not isinstance(cmd, (bytes, str)):
        raise ValueError("cmd must be a string")
    if not shell:
        raise ValueError("shell must be True")
    _check(universal_newlines, bufsize, text, encoding, errors)
    loop = _asyncio.get_running_loop()
    transport, protocol = await _make_transport(
        loop, lambda: SubprocessStreamProtocol(limit=limit, loop=loop), cmd, True,
        stdin, stdout, stderr, bufsize, **kwds)
    return Process(transport, protocol, loop)
