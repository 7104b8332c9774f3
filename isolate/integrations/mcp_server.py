"""`isolate mcp`: an MCP server whose tools run in isolate sessions.

Tools are shaped like codex's unified exec, so a client that knows those knows these:

- `exec_command {cmd, workdir?, yield_time_ms?, max_output_tokens?, tty?}`: run `cmd`.
  Without a tty it runs in the session's persistent shell (a `cd` or `export` holds in
  the next call); with `tty=true` it gets a terminal of its own (for interactive
  programs). If it still runs after `yield_time_ms` (clamped to 250..30000, default
  10000), the answer has a `session_id` and the command goes on.
- `write_stdin {session_id, chars?, yield_time_ms?, max_output_tokens?}`: type `chars`
  into a running command (a tty one; "" only polls) and return what it wrote since.
- `read_file {path}`, `write_file {path, content}`, `list_dir {path?}`.

Each MCP client session gets its own isolate Session (created on its first tool call,
closed when the client session goes away, at its idle timeout, or with the server).
What the sandbox refused (violations) is in the tool result's text.

`ToolBox` holds one client's state and does the work without knowing MCP; `build_server`
wraps it in the official `mcp` SDK (FastMCP, mcp>=1.20,<2).
"""

from __future__ import annotations

import threading
import time
import weakref

import anyio
from mcp.server.fastmcp import Context, FastMCP

import isolate
from isolate.agent import violations as violations_mod
from isolate.integrations.hostport import parse_hostport

DEFAULT_YIELD_MS = 10_000
WRITE_YIELD_MS = 250
MIN_YIELD_MS, MAX_YIELD_MS = 250, 30_000
MAX_POLL_MS = 300_000
DEFAULT_MAX_TOKENS = 10_000
BYTES_PER_TOKEN = 4          # codex's estimate, used for max_output_tokens
MAX_LIVE = 64                # live processes per client session, as codex


class ToolError(Exception):
    """A bad tool call: its text goes back to the model as an error result."""


def _clamp_yield(ms, default: int, high: int = MAX_YIELD_MS) -> float:
    if ms is None:
        ms = default
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms != ms:
        raise ToolError(f"yield_time_ms: expected a number of milliseconds, got {ms!r}")
    return min(max(float(ms), MIN_YIELD_MS), high) / 1000.0


def _max_bytes(tokens) -> int:
    if tokens is None:
        tokens = DEFAULT_MAX_TOKENS
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
        raise ToolError(f"max_output_tokens: expected a positive integer, got {tokens!r}")
    return max(256, tokens * BYTES_PER_TOKEN)


def _head_tail(text: str, limit: int) -> tuple[str, int]:
    """At most `limit` bytes of `text`: its head and tail, the number of bytes dropped."""
    data = text.encode()
    if len(data) <= limit:
        return text, 0
    half = limit // 2
    dropped = len(data) - 2 * half
    return (data[:half].decode("utf-8", "replace") + f"\n[... {dropped} bytes omitted ...]\n"
            + data[-half:].decode("utf-8", "replace")), dropped


def render(*, wall: float, output: str, max_bytes: int, exit_code=None, session_id=None, timed_out=False,
           violations=(), note: str | None = None) -> str:
    """The text of an exec_command/write_stdin answer (codex's layout, plus isolate's lines)."""
    original = len(output.encode())
    output, dropped = _head_tail(output, max_bytes)
    lines = [f"Wall time: {wall:.4f} seconds"]
    if session_id is not None:
        lines.append(f"Process running with session ID {session_id}")
    elif timed_out:
        lines.append("Process timed out and was killed with everything it started")
    else:
        lines.append(f"Process exited with code {exit_code}")
    lines.append(f"Original token count: {(original + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN}")
    if dropped:
        lines.append(f"Output truncated: {dropped} bytes omitted from the middle")
    if violations:
        lines.append(violations_mod.render(list(violations)))
    if note:
        lines.append(note)
    lines.append("Output:")
    lines.append(output)
    return "\n".join(lines)


class _Live:
    """A command that yielded: a session Job (no tty) or a Pty."""

    def __init__(self, job=None, pty=None):
        self.job = job
        self.pty = pty


class ToolBox:
    """One MCP client's sandbox: an isolate Session, started on first use."""

    def __init__(self, profile="agent", *, workspace=None, idle_timeout: float | None = 3600, overrides=()):
        self.profile = profile
        self.workspace = workspace
        self.idle_timeout = idle_timeout
        self.overrides = tuple(overrides)
        self._session = None
        self._lock = threading.Lock()
        self._live: dict[int, _Live] = {}
        self._next_id = 1000

    @property
    def session(self):
        with self._lock:
            if self._session is None or self._session.closed:
                self._session = isolate.Session(self.profile, workspace=self.workspace, overrides=self.overrides,
                                                idle_timeout=self.idle_timeout)
            return self._session

    def close(self) -> None:
        with self._lock:
            s, self._session = self._session, None
            for live in self._live.values():
                if live.pty is not None:
                    try:
                        live.pty.close()
                    except Exception:
                        pass
            self._live.clear()
        if s is not None:
            s.close()

    def _add_live(self, live: _Live) -> int:
        running = [k for k, v in self._live.items() if not self._done(v)]
        if len(running) >= MAX_LIVE:
            raise ToolError(f"too many running commands ({MAX_LIVE}): end some (write_stdin to them, or kill them "
                            f"with chars='\\u0003' for a tty) before starting more")
        sid = self._next_id
        self._next_id += 1
        self._live[sid] = live
        return sid

    @staticmethod
    def _done(live: _Live) -> bool:
        return live.job.done if live.job is not None else live.pty.returncode is not None

    # ---- exec_command ------------------------------------------------------------------
    def exec_command(self, cmd: str, workdir: str | None = None, yield_time_ms=None, max_output_tokens=None,
                     tty: bool = False) -> str:
        if not isinstance(cmd, str) or not cmd.strip():
            raise ToolError("cmd: expected a non-empty shell command")
        wait = _clamp_yield(yield_time_ms, DEFAULT_YIELD_MS)
        limit = _max_bytes(max_output_tokens)
        s = self.session
        if tty:
            return self._exec_tty(s, cmd, workdir, wait, limit)
        start = time.monotonic()
        r = s.exec(cmd, cwd=workdir, yield_after=wait, max_output=max(limit, 1 << 20))
        wall = time.monotonic() - start
        output = r.stdout + r.stderr
        if r.running:
            sid = self._add_live(_Live(job=r.job))
            r.job.read_output()          # what is returned here is not returned again
            return render(wall=wall, output=output, max_bytes=limit, session_id=sid, violations=r.violations)
        note = f"[not started: {r.error}]" if r.error else None
        return render(wall=wall, output=output, max_bytes=limit, exit_code=r.returncode, timed_out=r.timed_out,
                      violations=r.violations, note=note)

    def _exec_tty(self, s, cmd, workdir, wait, limit) -> str:
        start = time.monotonic()
        pty = s.pty(cmd, cwd=workdir)
        out = self._read_pty(pty, start + wait)
        wall = time.monotonic() - start
        if pty.returncode is None:
            sid = self._add_live(_Live(pty=pty))
            return render(wall=wall, output=out, max_bytes=limit, session_id=sid)
        code = pty.returncode
        pty.close()
        return render(wall=wall, output=out, max_bytes=limit, exit_code=code)

    @staticmethod
    def _read_pty(pty, deadline: float) -> str:
        chunks = []
        while True:
            left = deadline - time.monotonic()
            chunk = pty.read(max(0.0, min(left, 0.25)))
            if chunk:
                chunks.append(chunk)
                continue
            if pty.wait(0.02) is not None:      # (wait also reads the session's exit reports)
                chunks.append(pty.read(0.05))   # what was left in the terminal
                break
            if left <= 0:
                break
        return b"".join(chunks).decode("utf-8", "replace")

    # ---- write_stdin --------------------------------------------------------------------
    def write_stdin(self, session_id, chars: str = "", yield_time_ms=None, max_output_tokens=None) -> str:
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise ToolError(f"session_id: expected the integer an exec_command answer gave, got {session_id!r}")
        if not isinstance(chars, str):
            raise ToolError("chars: expected a string")
        live = self._live.get(session_id)
        if live is None:
            running = sorted(self._live) or "none"
            raise ToolError(f"session_id {session_id}: no such running command in this session (running: {running})")
        # codex: a write waits briefly, a poll ("") waits longer.
        wait = _clamp_yield(yield_time_ms, WRITE_YIELD_MS if chars else 5000, MAX_YIELD_MS if chars else MAX_POLL_MS)
        limit = _max_bytes(max_output_tokens)
        start = time.monotonic()
        if live.pty is not None:
            if chars:
                live.pty.write(chars)
            out = self._read_pty(live.pty, start + wait)
            wall = time.monotonic() - start
            if live.pty.returncode is None:
                return render(wall=wall, output=out, max_bytes=limit, session_id=session_id)
            code = live.pty.returncode
            live.pty.close()
            del self._live[session_id]
            return render(wall=wall, output=out, max_bytes=limit, exit_code=code)
        job = live.job
        if chars:
            raise ToolError(f"session_id {session_id}: this command was started without a tty, its stdin is "
                            f"/dev/null; poll it with chars=\"\", or start it again with tty=true to type into it")
        r = job.wait(wait)
        got = job.read_output()
        wall = time.monotonic() - start
        output = got.stdout + got.stderr
        if r.running:
            return render(wall=wall, output=output, max_bytes=limit, session_id=session_id)
        del self._live[session_id]
        return render(wall=wall, output=output, max_bytes=limit, exit_code=r.returncode, timed_out=r.timed_out,
                      violations=r.violations)

    # ---- files --------------------------------------------------------------------------
    def read_file(self, path: str) -> str:
        return self.session.read_file(path, text=True)

    def write_file(self, path: str, content: str) -> str:
        n = self.session.write_file(path, content)
        return f"wrote {n if isinstance(n, int) else len(content.encode())} bytes to {path}"

    def list_dir(self, path: str = ".") -> str:
        entries = self.session.list_dir(path)
        if not entries:
            return f"{path}: empty"
        return "\n".join(f"{e.type:7} {e.size:>10}  {e.name}{'/' if e.type == 'dir' else ''}" for e in entries)


def _error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


def build_server(profile="agent", *, workspace=None, overrides=(), idle_timeout: float | None = 3600,
                 host: str = "127.0.0.1", port: int = 8000) -> FastMCP:
    """The FastMCP server: one ToolBox (isolate Session) per MCP client session."""
    isolate.load_profile(profile)   # a bad profile fails here, not in the first tool call
    boxes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    all_boxes: list[ToolBox] = []
    lock = threading.Lock()

    server = FastMCP("isolate", host=host, port=port, log_level="WARNING",
                     instructions="Run shell commands and edit files in an isolate sandbox (no network, only "
                                  "the workspace writable). A `cd` or `export` persists between exec_command calls.")
    server.toolboxes = all_boxes   # for tests and shutdown

    def box_for(ctx: Context) -> ToolBox:
        key = ctx.session
        with lock:
            box = boxes.get(key)
            if box is None:
                box = ToolBox(profile, workspace=workspace, overrides=overrides, idle_timeout=idle_timeout)
                boxes[key] = box
                all_boxes.append(box)
                weakref.finalize(key, box.close)   # the client session is gone: so is its sandbox
            return box

    async def call(ctx: Context, method: str, *args) -> str:
        box = box_for(ctx)
        try:
            return await anyio.to_thread.run_sync(lambda: getattr(box, method)(*args))
        except ToolError:
            raise
        except (isolate.IsolateError, OSError, ValueError, TypeError, TimeoutError) as e:
            raise ToolError(f"{method}: {_error_text(e)}") from None

    @server.tool(description="Run a shell command in the sandbox. Returns its output and exit code, or a "
                             "session_id if it still runs after yield_time_ms (then poll or type into it with "
                             "write_stdin). Without tty it runs in a persistent shell (cd/export persist).")
    async def exec_command(ctx: Context, cmd: str, workdir: str | None = None, yield_time_ms: int = DEFAULT_YIELD_MS,
                           max_output_tokens: int = DEFAULT_MAX_TOKENS, tty: bool = False) -> str:
        return await call(ctx, "exec_command", cmd, workdir, yield_time_ms, max_output_tokens, tty)

    @server.tool(description="Write chars to a running command's terminal (exec_command with tty=true) and "
                             "return its new output; chars=\"\" polls any running command.")
    async def write_stdin(ctx: Context, session_id: int, chars: str = "", yield_time_ms: int | None = None,
                          max_output_tokens: int = DEFAULT_MAX_TOKENS) -> str:
        return await call(ctx, "write_stdin", session_id, chars, yield_time_ms, max_output_tokens)

    @server.tool(description="Read a text file in the sandbox.")
    async def read_file(ctx: Context, path: str) -> str:
        return await call(ctx, "read_file", path)

    @server.tool(description="Write a text file in the sandbox (parent directories are created).")
    async def write_file(ctx: Context, path: str, content: str) -> str:
        return await call(ctx, "write_file", path, content)

    @server.tool(description="List a directory in the sandbox: type, size and name of each entry.")
    async def list_dir(ctx: Context, path: str = ".") -> str:
        return await call(ctx, "list_dir", path)

    return server


def serve(profile="agent", *, workspace=None, overrides=(), http: str | None = None,
          idle_timeout: float | None = 3600) -> None:
    """Serve over stdio, or over streamable HTTP at `http` ("HOST:PORT", path /mcp)."""
    host, port = "127.0.0.1", 8000
    if http:
        host, port = parse_hostport(http)
    server = build_server(profile, workspace=workspace, overrides=overrides, idle_timeout=idle_timeout,
                          host=host, port=port)
    try:
        server.run("streamable-http" if http else "stdio")
    finally:
        for box in server.toolboxes:
            box.close()
