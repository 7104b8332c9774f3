"""AsyncSession and SessionPool."""

import asyncio

import pytest

import isolate
from isolate.agent import AsyncJob, SessionClosed


def test_async_session(tmp_path):
    async def main():
        chunks, achunks = [], []

        async def acb(text):
            achunks.append(text)

        async with isolate.AsyncSession("agent", workspace=tmp_path) as s:
            r = await s.exec("cd /tmp && export X=1 && echo hi", on_stdout=chunks.append)
            assert r.stdout == "hi\n" and chunks == ["hi\n"]
            r = await s.exec("pwd; echo $X; echo e >&2", on_stderr=acb)
            assert r.stdout == "/tmp\n1\n" and achunks == ["e\n"]
            # Two commands at once: the event loop is not blocked.
            a, b = await asyncio.gather(s.exec(["sh", "-c", "sleep 0.3; echo a"]), s.exec(["echo", "b"]))
            assert (a.stdout, b.stdout) == ("a\n", "b\n")
            r = await s.exec("sleep 0.5; echo late", yield_after=0.1)
            assert r.running and isinstance(r.job, AsyncJob)
            assert (await r.job.wait(30)).stdout == "late\n"
            job = await s.spawn(["cat"])
            await job.write_stdin("x\n")
            await job.close_stdin()
            assert (await job.wait(30)).stdout == "x\n"
            assert s.job(job.id).id == job.id and len(s.jobs()) == 2
            await s.write_file("/tmp/f", "data")
            assert await s.read_file("/tmp/f", text=True) == "data"
            assert "f" in [e.name for e in await s.list_dir("/tmp")]
        assert s.closed
        with pytest.raises(SessionClosed):
            await s.exec("true")

    asyncio.run(main())


def test_session_pool_hands_out_ready_independent_sessions(tmp_path):
    with isolate.SessionPool("agent", size=2, workspace=tmp_path) as pool:
        a = pool.acquire(wait=60)
        b = pool.acquire(wait=60)
        assert pool.stats["served_ready"] == 2
        assert a.pid != b.pid
        a.exec("echo a > /tmp/who")
        assert b.exec("cat /tmp/who 2>/dev/null || echo none").stdout == "none\n"
        assert a.exec("cat /tmp/who").stdout == "a\n"
        pool.release(a)
        b.close()
        assert a.closed and b.closed
        c = pool.acquire(wait=60)
        assert c.exec("echo ok").stdout == "ok\n"
        c.close()
    with pytest.raises(SessionClosed):
        pool.acquire()
    with pytest.raises(ValueError, match="size"):
        isolate.SessionPool("agent", size=0)
