"""`isolate mcp` with the official MCP SDK's own clients: stdio and streamable HTTP.
The tools' answers are checked from the inside (hostname, pid namespace, no network)."""

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import closing

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

ISOLATE = os.path.join(os.path.dirname(sys.executable), "isolate")
TOOLS = {"exec_command", "write_stdin", "read_file", "write_file", "list_dir"}


def text(result) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


def session_id(answer: str) -> int:
    m = re.search(r"Process running with session ID (\d+)", answer)
    assert m, answer
    return int(m.group(1))


async def round_trip(s: ClientSession, workspace: str) -> None:
    await s.initialize()
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert TOOLS <= set(tools)
    assert {"cmd", "workdir", "yield_time_ms", "max_output_tokens", "tty"} <= set(
        tools["exec_command"].inputSchema["properties"])
    assert {"session_id", "chars", "yield_time_ms"} <= set(tools["write_stdin"].inputSchema["properties"])

    r = await s.call_tool("exec_command", {"cmd": "hostname; echo $$; cd sub 2>/dev/null || mkdir sub && cd sub; "
                                                  "export KEPT=1"})
    assert not r.isError, text(r)
    out = text(r)
    assert "Process exited with code 0" in out
    name, pid = out.split("Output:\n", 1)[1].split()
    assert name == "agent" != socket.gethostname() and int(pid) < 100
    r = await s.call_tool("exec_command", {"cmd": "echo $KEPT; pwd"})
    assert text(r).split("Output:\n", 1)[1].split() == ["1", os.path.join(workspace, "sub")]

    # workdir applies to that one command
    r = await s.call_tool("exec_command", {"cmd": "pwd", "workdir": "/tmp"})
    assert text(r).rstrip().endswith("/tmp")

    # a soft yield, then polls until it ends
    r = await s.call_tool("exec_command", {"cmd": "echo first; sleep 1.5; echo second", "yield_time_ms": 250})
    sid = session_id(text(r))
    assert "first" in text(r)
    for _ in range(20):
        r = await s.call_tool("write_stdin", {"session_id": sid, "chars": "", "yield_time_ms": 2000})
        if "Process exited with code 0" in text(r):
            break
    assert "second" in text(r) and "first" not in text(r), text(r)

    # a tty: type into it
    r = await s.call_tool("exec_command", {"cmd": "read line; echo got:$line", "tty": True, "yield_time_ms": 300})
    sid = session_id(text(r))
    r = await s.call_tool("write_stdin", {"session_id": sid, "chars": "hello\n", "yield_time_ms": 3000})
    assert "got:hello" in text(r) and "Process exited with code 0" in text(r), text(r)
    r = await s.call_tool("write_stdin", {"session_id": sid, "chars": ""})
    assert r.isError and "no such running command" in text(r)

    # what the sandbox refused is in the answer
    r = await s.call_tool("exec_command", {"cmd": "(exec 3<>/dev/tcp/1.2.3.4/443) && echo connected"})
    assert "the sandbox denied: connect to 1.2.3.4:443" in text(r), text(r)
    assert "connected" not in text(r)

    # output caps
    r = await s.call_tool("exec_command", {"cmd": "head -c 100000 /dev/zero | tr '\\0' x", "max_output_tokens": 100})
    assert "Output truncated:" in text(r) and "bytes omitted" in text(r)
    assert len(text(r)) < 2000

    # files
    # a relative path is relative to the shell's directory (sub)
    r = await s.call_tool("write_file", {"path": "notes.txt", "content": "line 1\n"})
    assert not r.isError, text(r)
    assert open(os.path.join(workspace, "sub", "notes.txt")).read() == "line 1\n"
    r = await s.call_tool("read_file", {"path": os.path.join(workspace, "sub", "notes.txt")})
    assert text(r) == "line 1\n"
    r = await s.call_tool("list_dir", {"path": os.path.join(workspace, "sub")})
    assert "notes.txt" in text(r)
    r = await s.call_tool("read_file", {"path": "/etc/../../no/such"})
    assert r.isError and "read_file" in text(r)
    r = await s.call_tool("write_file", {"path": "/usr/evil", "content": "x"})
    assert r.isError
    assert not os.path.exists("/usr/evil")


def test_stdio_round_trip(tmp_path):
    params = StdioServerParameters(command=ISOLATE, args=["mcp", "--workspace", str(tmp_path)], cwd=str(tmp_path))

    async def main():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await round_trip(s, str(tmp_path))

    asyncio.run(asyncio.wait_for(main(), 120))


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    port = _free_port()
    p = subprocess.Popen([ISOLATE, "mcp", "--http", f"127.0.0.1:{port}", "--workspace", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            assert p.poll() is None, p.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_streamable_http_round_trip_and_a_session_per_client(http_server, tmp_path):
    async def main():
        async with streamable_http_client(http_server) as (read, write, _):
            async with ClientSession(read, write) as s:
                await round_trip(s, str(tmp_path))
                # a second client at the same time: its own isolate session
                async with streamable_http_client(http_server) as (read2, write2, _):
                    async with ClientSession(read2, write2) as s2:
                        await s2.initialize()
                        r = await s2.call_tool("exec_command", {"cmd": "echo ${KEPT:-unset}; pwd"})
                        assert text(r).split("Output:\n", 1)[1].split() == ["unset", str(tmp_path)]
                r = await s.call_tool("exec_command", {"cmd": "echo $KEPT"})
                assert text(r).split("Output:\n", 1)[1].split() == ["1"]

    asyncio.run(asyncio.wait_for(main(), 120))


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--http", "nope"], ["--http", "127.0.0.1:0"], ["--profile", "no-such-profile"],
                 ["--workspace", str(tmp_path / "missing")], ["--idle-timeout", "-1"]):
        r = subprocess.run([ISOLATE, "mcp", *args], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("isolate: ") or "usage:" in r.stderr, r.stderr
