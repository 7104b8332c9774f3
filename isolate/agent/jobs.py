"""One command of a session (Run) and its handle once it runs in the background (Job)."""

from __future__ import annotations

import codecs
import dataclasses
import errno
import os
import select
import shlex
import signal
import threading
import time
from typing import Callable, Mapping

from .errors import SessionClosed, SessionError
from .output import HeadTail
from .procs import Proc, Shell
from .protocol import A_KILL, A_RELEASE, A_SHELL, HOLD_FD, KILL_GRACE, check_cmd, check_env, check_seconds, close_fd
from .results import ExecResult, Truncated
from .violations import collect, mark


class Run:
    """One command: its pipes, its output (capped), how it ended."""

    _rids = iter(range(1, 1 << 62))

    def __init__(self, session, cmd, *, input, cwd, env, limit: int, on_stdout, on_stderr, stdin_pipe: bool):
        self.session = session
        self.cmd = check_cmd(cmd)
        self.shell_cmd = isinstance(self.cmd, str)
        if input is not None and not isinstance(input, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"input: expected bytes or str, got {type(input).__name__}")
        self.input = bytearray(input.encode() if isinstance(input, str) else bytes(input)) \
            if input is not None else None
        if cwd is not None:
            if not isinstance(cwd, (str, bytes, os.PathLike)):
                raise TypeError(f"cwd: expected a path, got {type(cwd).__name__}")
            cwd = os.fsdecode(os.fspath(cwd))
            if "\0" in cwd or not cwd:
                raise ValueError(f"cwd: not a usable path: {cwd!r}")
        self.cwd = cwd
        if env is not None:
            check_env(env)
        self.env = dict(env) if env else None
        self.out = HeadTail(limit)
        self.err = HeadTail(limit)
        self.callbacks = (on_stdout, on_stderr)
        for name, cb in zip(("on_stdout", "on_stderr"), self.callbacks):
            if cb is not None and not callable(cb):
                raise TypeError(f"{name}: expected a callable, got {type(cb).__name__}")
        self.decoders = (codecs.getincrementaldecoder("utf-8")("replace"),
                         codecs.getincrementaldecoder("utf-8")("replace"))
        self.stdin_pipe = stdin_pipe
        self.fds = [-1, -1]       # our ends of stdout, stderr
        self.in_w = -1
        self.in_lock = threading.Lock()
        self.proc: Proc | None = None
        self.shell: Shell | None = None
        self.rid = next(Run._rids)
        self.before: set = set()
        self.killable = True
        self.returncode: int | None = None
        self.error: str | None = None
        self.timed_out = False
        self.shell_restarted = False
        self.finished = False
        self.finished_event = threading.Event()
        self.start = time.monotonic()
        self.last_output = self.start   # when the command last wrote something (yield_when_quiet)
        self.end: float | None = None
        self.job = None
        self.violations: list = []
        self.vio_mark = None

    # ---- starting -----------------------------------------------------------------------
    def _pipes(self):
        s = self.session
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        if self.stdin_pipe or self.input is not None:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(in_w, False)
        else:
            in_r, in_w = -1, -1
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        self.fds = [out_r, err_r]
        self.in_w = in_w
        if self.shell_cmd and (s.uid, s.gid) != (os.geteuid(), os.getegid()):
            # The shell reopens these through /proc/PID/fd: they must be its uid's.
            for fd in (out_w, err_w, in_r):
                if fd >= 0:
                    try:
                        os.fchown(fd, s.uid, s.gid)
                    except OSError:
                        pass
        return in_r, out_w, err_w

    def _start_shell_cmd(self) -> None:
        s = self.session
        sh = self.shell = self.proc = s.idle_shell()
        self.vio_mark = mark(s)
        if self.killable:   # what existed before: only a timeout or a job's kill() needs it
            self.before = s.sandbox_pids()
        in_r, out_w, err_w = self._pipes()
        script = os.memfd_create("isolate-cmd", os.MFD_CLOEXEC)
        try:
            data = self.cmd.encode("utf-8", "surrogateescape")
            view = memoryview(data)
            while view:
                view = view[os.write(script, view):]
            base = HOLD_FD + 4 * sh.slot
            redirs = f"</proc/$PPID/fd/{base} >/proc/$PPID/fd/{base + 1} 2>/proc/$PPID/fd/{base + 2}"
            src = f". /proc/$PPID/fd/{base + 3}"
            if self.cwd is not None or self.env:
                inner = ""
                if self.cwd is not None:
                    inner += f"cd -- {shlex.quote(self.cwd)} || exit 1; "
                for k, v in (self.env or {}).items():
                    inner += f"export {k}={shlex.quote(v)}; "
                line = f"( {inner}{src}\n) {redirs}"
            else:
                line = f"{src} {redirs}"
            line += f"; __isolate_done {self.rid} $?\n"
            s.send_ctl(A_SHELL, sh.id, sh.slot, 0, line.encode(),
                    [in_r if in_r >= 0 else s.devnull, out_w, err_w, script])
        finally:
            for fd in (in_r, out_w, err_w, script):
                close_fd(fd)

    def _start_argv(self) -> None:
        s = self.session
        self.vio_mark = mark(s)
        if self.killable:   # what existed before: only a timeout or a job's kill() needs it
            self.before = s.sandbox_pids()
        in_r, out_w, err_w = self._pipes()
        env = s.environment()
        if self.env:
            env.update(self.env)
        cwd = self.cwd if self.cwd is not None else (s.shell_pwd or s.plan.cwd)
        p = self.proc = s.new_proc()
        try:
            s.start_process(p, self.cmd, env, cwd, [in_r if in_r >= 0 else s.devnull, out_w, err_w])
        finally:
            for fd in (in_r, out_w, err_w):
                close_fd(fd)

    # ---- running --------------------------------------------------------------------------
    def execute(self, timeout, yield_after, quiet=None) -> ExecResult:
        s = self.session
        deadline = None if timeout is None else self.start + timeout
        yield_at = None if yield_after is None else self.start + yield_after
        self.killable = timeout is not None or yield_after is not None or quiet is not None
        if self.shell_cmd:
            with s.shell_lock:
                s.check_open("exec")
                self._start_shell_cmd()
                state = self.pump(deadline, yield_at, quiet)
                if state == "yield":
                    s.give_shell_away()   # the shell stays with the job; the next command gets a new one
                    return self._to_background(deadline)
        else:
            self._start_argv()
            state = self.pump(deadline, yield_at, quiet)
            if state == "yield":
                return self._to_background(deadline)
        if state == "timeout":
            self._timeout()
        return self.result()

    def background(self, timeout):
        deadline = None if timeout is None else self.start + timeout
        if self.shell_cmd:
            raise ValueError("spawn: a shell string is run as [shell, -c, cmd]")
        self._start_argv()
        self._to_background(deadline)
        self.proc.started.wait(10)   # its pid (or why it did not start) is known on return
        return self.job

    def _to_background(self, deadline) -> ExecResult:
        self.job = Job(self)
        self.session.register_job(self.job)
        t = threading.Thread(target=self._job_thread, args=(deadline,), name=f"isolate-job-{self.job.id}",
                             daemon=True)
        t.start()
        return self.result()

    def _job_thread(self, deadline) -> None:
        try:
            state = self.pump(deadline, None)
            if state == "timeout":
                self._timeout()
        except Exception:
            if not self.finished:
                self._finish(-signal.SIGKILL)
        finally:
            if self.shell is not None and self.shell is not self.session.current_shell:
                self.session.retire_shell(self.shell)

    def _timeout(self) -> None:
        """The hard timeout: the command and every process it started are killed. A shell
        command takes its shell with it (the rest of its script must not run on): the
        next command gets a new shell with the cwd, exports and functions recorded."""
        s = self.session
        self.timed_out = True
        if self.shell is not None:
            self._kill_shell()
        s.kill_tree(self)
        self.pump(time.monotonic() + KILL_GRACE, None)
        if not self.finished:
            self._finish(-signal.SIGKILL)

    def _kill_shell(self) -> None:
        # The shell only: its process group also holds earlier commands' background jobs.
        # From here, synchronously: it must be dead before its current child is, or it
        # would run the rest of the script.
        s = self.session
        host = s.host_pid(self.shell.pid) if self.shell.pid is not None else None
        if host is not None:
            try:
                os.kill(host, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            try:
                s.send_ctl(A_KILL, self.shell.id, signal.SIGKILL, 1)
            except SessionClosed:
                pass
        self.shell_restarted = True

    def pump(self, deadline, yield_at, quiet=None) -> str:
        """Move output and input until the command ends ('done') or a time is reached
        (yield_at; or `quiet` seconds without new output: 'yield')."""
        s = self.session
        ctl = s.ctl
        while not self.finished:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "timeout"
            quiet_at = None if quiet is None else self.last_output + quiet
            if yield_at is not None and now >= yield_at or quiet_at is not None and now >= quiet_at:
                return "yield"
            if s.closing:
                self._finish(-signal.SIGKILL)
                break
            limits = [t for t in (deadline, yield_at, quiet_at) if t is not None]
            wait = None if not limits else max(0.0, min(limits) - now)
            p = select.poll()
            for fd in self.fds:
                if fd >= 0:
                    p.register(fd, select.POLLIN)
            sh = self.shell
            if sh is not None and sh.status_r >= 0:
                p.register(sh.status_r, select.POLLIN)
            if self.input is not None and self.in_w >= 0:
                p.register(self.in_w, select.POLLOUT)
            try:
                p.register(ctl.fileno(), select.POLLIN)
            except (OSError, ValueError):
                pass
            evfd = self.proc.evfd if self.proc is not None else -1
            if evfd >= 0:
                p.register(evfd, select.POLLIN)
            try:
                events = p.poll(None if wait is None else wait * 1000 + 1)
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd in self.fds:
                    self._read(self.fds.index(fd))
                elif sh is not None and fd == sh.status_r:
                    self._read_status(sh)
                elif fd == self.in_w:
                    self._write_input()
                elif fd == evfd:
                    try:
                        os.eventfd_read(evfd)
                    except OSError:
                        pass
                else:
                    s.read_ctl()
            self._check_done()
        return "done"

    def _read(self, i: int) -> bool:
        """One read of stream i (0 stdout, 1 stderr) into its buffer and callback; True when
        it brought data (there may be more), False when nothing is there now or at EOF."""
        fd = self.fds[i]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            close_fd(fd)
            self.fds[i] = -1
            return False
        (self.out if i == 0 else self.err).write(data)
        self.last_output = time.monotonic()
        cb = self.callbacks[i]
        if cb is not None:
            text = self.decoders[i].decode(data)
            if text:
                cb(text)
        return True

    def _read_status(self, sh: Shell) -> None:
        try:
            data = os.read(sh.status_r, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            sh.dead = True
            close_fd(sh.status_r)
            sh.status_r = -1
            return
        sh.buf += data

    def _write_input(self) -> None:
        if not self.input:
            close_fd(self.in_w)
            self.in_w = -1
            self.input = None
            return
        try:
            n = os.write(self.in_w, self.input[:65536])
            del self.input[:n]
        except BlockingIOError:
            return
        except OSError:
            self.input.clear()
        if not self.input:
            close_fd(self.in_w)
            self.in_w = -1
            self.input = None

    def _check_done(self) -> None:
        if self.finished:
            return
        sh = self.shell
        if sh is not None:
            for rid, st, pwd, exports, functions in sh.records():
                if rid != self.rid:
                    continue
                if sh is self.session.current_shell:
                    self.session.record_shell_state(pwd, exports, functions)
                self._finish(st)
                return
            if sh.dead:
                # The shell ended (exit, exec, a fatal error): its status is the command's.
                if sh.wait_status is None and not sh.exited.wait(KILL_GRACE):
                    self.session.read_ctl()
                st = sh.wait_status
                self.shell_restarted = True
                self._finish(os.waitstatus_to_exitcode(st) if st is not None else -signal.SIGKILL)
            return
        p = self.proc
        if p is None:
            return
        if p.start_err is not None and self.error is None:
            step, err = p.start_err
            what = "cannot run" if step == "exec" else f"cannot start ({step})"
            self.error = f"{what} {self.cmd[0]!r}: {os.strerror(err)}"
            self.err.write(f"isolate: {self.error}\n".encode())
        if p.wait_status is not None:
            if self.error is not None:
                self._finish(127 if p.start_err[1] == errno.ENOENT else 126)
            else:
                self._finish(os.waitstatus_to_exitcode(p.wait_status))

    def _finish(self, returncode: int) -> None:
        s = self.session
        self.returncode = returncode
        self.end = time.monotonic()
        # What is in the pipes now was written before the command ended.
        for i in (0, 1):
            while self.fds[i] >= 0 and self._read(i):
                pass
        for i, cb in enumerate(self.callbacks):
            if cb is not None:
                tail = self.decoders[i].decode(b"", final=True)
                if tail:
                    cb(tail)
        if self.shell is not None and not s.closing:
            try:
                s.send_ctl(A_RELEASE, 0, self.shell.slot)
            except SessionClosed:
                pass
        s.drain_later(self.fds)
        self.fds = [-1, -1]
        with self.in_lock:
            close_fd(self.in_w)
            self.in_w = -1
        if self.proc is not None and not isinstance(self.proc, Shell):
            self.proc.close()
        if self.vio_mark is not None:
            try:
                self.violations = collect(s, self.vio_mark, self)
            except Exception:
                self.violations = []
        self.finished = True
        self.finished_event.set()

    def result(self) -> ExecResult:
        return ExecResult(
            returncode=self.returncode if self.finished else None,
            stdout=self.out.getvalue().decode("utf-8", "replace"),
            stderr=self.err.getvalue().decode("utf-8", "replace"),
            timed_out=self.timed_out,
            duration=(self.end if self.end is not None else time.monotonic()) - self.start,
            truncated=Truncated(self.out.omitted, self.err.omitted),
            violations=list(self.violations),
            running=not self.finished,
            job=self.job,
            shell_restarted=self.shell_restarted,
            cwd=self.session.shell_pwd if self.shell is not None else None,
            error=self.error,
        )


@dataclasses.dataclass(frozen=True)
class JobOutput:
    stdout: str
    stderr: str
    cursor: tuple      # pass as since= to get only what comes after
    running: bool


class Job:
    """A command running in the background of a session (spawn(), or exec's yield_after)."""

    _ids_lock = threading.Lock()

    def __init__(self, run: Run):
        self._run = run
        self.id = run.session.next_job_id()
        self.cmd = run.cmd
        self._cursor = (0, 0)

    def __repr__(self):
        state = "running" if not self.done else f"returncode={self.returncode}"
        return f"<isolate Job {self.id} {self.cmd!r} {state}>"

    @property
    def pid(self) -> int | None:
        """Its pid in the sandbox (for a yielded shell command: the shell's)."""
        p = self._run.proc
        if p is not None and p.pid is None and p.start_err is None:
            p.started.wait(10)
        return p.pid if p is not None else None

    @property
    def done(self) -> bool:
        return self._run.finished

    @property
    def returncode(self) -> int | None:
        return self._run.returncode if self._run.finished else None

    def read_output(self, since=None) -> JobOutput:
        """Output after `since` (a cursor from an earlier read; None: since the last read,
        0: from the start). Dropped middle parts (the output cap) show as a marker."""
        if since is None:
            since = self._cursor
        elif since == 0:
            since = (0, 0)
        try:
            so, se = (int(since[0]), int(since[1]))
        except (TypeError, ValueError, IndexError):
            raise TypeError(f"since: expected None, 0 or a cursor from read_output, got {since!r}") from None
        if so < 0 or se < 0:
            raise ValueError(f"since: offsets must be >= 0, got {since!r}")
        out, no = self._run.out.since(so)
        err, ne = self._run.err.since(se)
        self._cursor = (no, ne)
        return JobOutput(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), (no, ne),
                         not self.done)

    def write_stdin(self, data, timeout: float | None = 10.0) -> None:
        """Write to its stdin (bytes or str)."""
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_stdin: expected bytes or str, got {type(data).__name__}")
        r = self._run
        with r.in_lock:
            if r.in_w < 0 or r.input is not None:
                raise SessionError(f"job {self.id}: its stdin is closed" + (" (it has ended)" if self.done else ""))
            view = memoryview(bytes(data))
            end = None if timeout is None else time.monotonic() + timeout
            while view:
                try:
                    view = view[os.write(r.in_w, view):]
                except BlockingIOError:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"job {self.id}: its stdin is full (it does not read)") from None
                    p = select.poll()
                    p.register(r.in_w, select.POLLOUT)
                    p.poll(None if left is None else left * 1000)
                except BrokenPipeError:
                    raise SessionError(f"job {self.id}: its stdin is closed by the program") from None

    def close_stdin(self) -> None:
        r = self._run
        with r.in_lock:
            if r.input is None:
                close_fd(r.in_w)
                r.in_w = -1

    def wait(self, timeout: float | None = None) -> ExecResult:
        """Wait for it to end (at most `timeout` seconds): its ExecResult (running=True if
        it still runs)."""
        timeout = check_seconds(timeout, "timeout")
        self._run.finished_event.wait(timeout)
        return self._run.result()

    def kill(self) -> ExecResult:
        """Kill it and every process it started; its ExecResult."""
        r = self._run
        if not r.finished and not r.session.closing:
            if r.shell is not None:
                r._kill_shell()
            r.session.kill_tree(r)
            r.finished_event.wait(5)
        return r.result()

    def result(self) -> ExecResult:
        return self._run.result()

    def _session_closed(self) -> None:
        r = self._run
        if not r.finished:
            r.finished_event.wait(2)


class Drainer:
    """One thread reading and dropping what background processes write to the pipes of
    commands that have finished (so that they do not block or die of SIGPIPE)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._fds: set = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="isolate-session-drainer", daemon=True)
        self._thread.start()

    def add(self, fds) -> None:
        with self._lock:
            self._fds.update(fds)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stop(self) -> None:
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(2)

    def _loop(self) -> None:
        try:
            while not self._stop:
                p = select.poll()
                p.register(self._wake_r, select.POLLIN)
                with self._lock:
                    fds = list(self._fds)
                for fd in fds:
                    p.register(fd, select.POLLIN)
                for fd, ev in p.poll():
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        with self._lock:
                            self._fds.discard(fd)
                        close_fd(fd)
        finally:
            with self._lock:
                for fd in self._fds:
                    close_fd(fd)
                self._fds.clear()
            close_fd(self._wake_r)
            close_fd(self._wake_w)
