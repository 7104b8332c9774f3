"""isolate.asyncio: asyncio's subprocess API, every child in a sandbox, the pidfd of each
watched by the event loop (no thread per child)."""

import asyncio
import os
import signal
import threading

import pytest

import isolate
from isolate import asyncio as iasyncio


def run(coro):
    return asyncio.run(coro)


def test_exec_streams_communicate_returncode():
    async def main():
        p = await iasyncio.create_subprocess_exec("sh", "-c", "cat; echo err >&2; exit 3", stdin=iasyncio.PIPE,
                                                  stdout=iasyncio.PIPE, stderr=iasyncio.PIPE)
        assert isinstance(p, asyncio.subprocess.Process) and p.pid > 0
        out, err = await p.communicate(b"hello")
        return out, err, p.returncode

    assert run(main()) == (b"hello", b"err\n", 3)


def test_streams_line_by_line():
    async def main():
        p = await iasyncio.create_subprocess_exec("sh", "-c", "read x; echo got-$x; echo second",
                                                  stdin=iasyncio.PIPE, stdout=iasyncio.PIPE)
        p.stdin.write(b"one\n")
        await p.stdin.drain()
        first = await p.stdout.readline()
        rest = await p.stdout.read()
        return first, rest, await p.wait()

    assert run(main()) == (b"got-one\n", b"second\n", 0)


def test_shell_runs_the_profiles_shell_in_the_sandbox():
    async def main():
        p = await iasyncio.create_subprocess_shell("echo a b c | wc -w; hostname", stdout=iasyncio.PIPE)
        out, _ = await p.communicate()
        return out.split()

    words, host = run(main())
    assert words == b"3" and host != os.uname().nodename.encode()


def test_kill_and_terminate_end_the_whole_sandbox():
    async def main():
        p = await iasyncio.create_subprocess_shell("sleep 300 & echo $!; wait", stdout=iasyncio.PIPE)
        await p.stdout.readline()
        p.kill()
        rc_kill = await p.wait()
        q = await iasyncio.create_subprocess_exec("sleep", "300")
        q.terminate()
        rc_term = await q.wait()
        r = await iasyncio.create_subprocess_exec("sh", "-c", "trap 'exit 9' USR1; echo ready; "
                                                  "while :; do sleep 0.05; done", stdout=iasyncio.PIPE)
        await r.stdout.readline()
        r.send_signal(signal.SIGUSR1)
        return rc_kill, rc_term, await r.wait()

    assert run(main()) == (-signal.SIGKILL, -signal.SIGTERM, 9)


def test_isolate_keywords_and_errors_pass_through(tmp_path):
    async def main():
        p = await iasyncio.create_subprocess_exec("sh", "-c", "umask; id -u; echo $ONLY", stdout=iasyncio.PIPE,
                                                  umask=0o027, user=4321, env={"ONLY": "x"}, profile="strict")
        out, _ = await p.communicate()
        with pytest.raises(FileNotFoundError):
            await iasyncio.create_subprocess_exec("no-such-program-here")
        with pytest.raises(ValueError):
            await iasyncio.create_subprocess_exec("true", text=True)
        with pytest.raises(ValueError):
            await iasyncio.create_subprocess_shell(["not", "a", "string"])
        return out.split()

    assert run(main()) == [b"0027", b"4321", b"x"]


def test_hundreds_of_sandboxes_at_once_without_a_thread_each():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    n = 300
    try:
        async def main():
            gate, running = asyncio.Event(), []

            async def one(i):
                p = await iasyncio.create_subprocess_exec("sh", "-c", f"read x; echo {i}-$x", stdin=iasyncio.PIPE,
                                                          stdout=iasyncio.PIPE)
                running.append(p)
                await gate.wait()  # every one of them alive at the same time
                out, _ = await p.communicate(b"go\n")
                return out, p.returncode

            before = threading.active_count()
            tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
            while len(running) < n:
                await asyncio.sleep(0.05)
            alive = sum(1 for p in running if p.returncode is None)
            threads = threading.active_count() - before
            gate.set()
            return await asyncio.gather(*tasks), alive, threads

        results, alive, threads = run(main())
        assert alive == n
        assert results == [(f"{i}-go\n".encode(), 0) for i in range(n)]
        assert threads <= 2, threads  # isolate's own launcher thread at most, never one per child
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
