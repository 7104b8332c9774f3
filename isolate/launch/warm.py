"""Warm mode: sandboxes of one profile set up ahead of time, each serving one task.

For many launches of the same kind of task (agent tool calls, fuzz inputs), the
whole launch path runs in advance, off the caller's path: namespaces, the
filesystem view, pid 1. Each ready sandbox then waits for exactly one task (argv,
environment, cwd and its fds, passed over a socket) and is used up by it: every
task still gets its own pid namespace, its own private /tmp and network namespace,
and sees or signals no other task. A background thread keeps `size` of them ready.
In each, isolate-init has already forked the program's process (a zygote waiting
before execve, its seccomp filter loaded where that changes nothing): a task costs
the hand-over and the exec. See docs/warm-path.md.

    with isolate.WarmPool("default", size=4) as pool:
        r = pool.run(["python3", "-c", "print(1)"], capture_output=True)
"""

from __future__ import annotations

import errno
import locale
import os
import platform
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Sequence

from ..errors import ExecutableNotFound, ExecutablePermission, ProfileError
from ..plan.plan import check_nofile
from . import _launch, cgroup, net, popen_args, process
from .pid1 import MSG_RUSAGE

# run()'s arguments that its direct path takes; with any other (or a pty) run goes
# through Popen (process.run), which has every one of them.
_DIRECT = frozenset({"input", "capture_output", "timeout", "check", "on_timeout", "cwd", "env", "stdin", "stdout",
                     "stderr", "text", "encoding", "errors", "universal_newlines", "pass_fds", "umask", "shell",
                     "executable"})
_STEP_NAMES = {v: k for k, v in process.STEP_NUMBERS.items()}
# While tasks run, the refill thread looks for the ones that ended after this long, doubling
# up to _IDLE_MAX (a direct task gives its sandbox back without waking it). The first look
# comes after a short task's end, not in the middle of its hand-over (which needs the GIL).
_IDLE_MIN, _IDLE_MAX = 0.005, 0.1
_ALERT = 1.0  # ... for this long after the last take; then it sleeps until a take wakes it


# pid 1's usual report of a quiet task's end, in one write: MSG_STARTED, MSG_RUSAGE, MSG_EXITED.
_REPORT = struct.Struct("=" + "iiiiq" * 3)
assert _REPORT.size == 3 * process.MSG.size
_EXITED_KIND = struct.pack("=i", _launch.MSG_EXITED)


class WarmPool:
    def __init__(self, profile: Any = "default", size: int = 4, overrides: Sequence[str] = (), cwd=None):
        self.plan = process.plan_for_cwd(profile, overrides, cwd)
        if not self.plan.pidns:
            raise ProfileError("warm sandboxes need namespaces.pid = true: their pid 1 receives the task",
                               key="namespaces.pid")
        if size < 1:
            raise ValueError("size must be at least 1")
        # Its pid 1 lays out each task's fds under the profile's RLIMIT_NOFILE.
        check_nofile(self.plan, self.plan.pass_fds, warm=True, file=self.plan.profile_name)
        self.size = size
        # Its zygotes load the seccomp filter before their task where that changes nothing.
        self.early_seccomp = zygote_may_filter_early(self.plan)
        # Refilling right after a task takes its sandbox would compete with that task
        # for the CPUs; while at least `low` are ready, wait until a task has ended.
        self.low = max(1, size // 2)
        self._running = 0
        self._idle = _IDLE_MIN  # how long the refill thread waits before it looks for ended tasks again
        self._last_task = 0.0   # time.monotonic() of the last take
        self._asleep = False    # the refill thread waits until woken (no task for _ALERT seconds)
        self._ready: deque = deque()
        self._used: deque = deque()  # direct tasks' reaped sandboxes, for the refill thread to clean up
        self._lock = threading.Condition()
        self._closed = False
        self._pid = os.getpid()
        self._forks = _forks[0]  # this process's count of forks (no getpid per task)
        self._passed = tuple(sorted(set(self.plan.pass_fds)))
        self._inherit_all = self.plan.stdio == ("inherit", "inherit", "inherit")
        self._prepared: dict = {}  # run(args) alone: tuple(args) -> (its _Fixed, program, task strings)
        self._status = threading.local()     # each calling thread's status file (caller_umask)
        self._status_fds = weakref.WeakSet()  # the same, closed by close()
        self.stats = {"prepared": 0, "served_warm": 0, "served_cold": 0}
        # run()'s direct path: the last environment's C strings, and exec paths by program
        # and PATH (the same inputs give the same lists: any change of them is a new entry).
        self._envp_cache: tuple = ((), [])
        self._paths_cache: dict = {}
        self._thread = threading.Thread(target=self._refill, name="isolate-warm-pool", daemon=True)
        self._thread.start()

    # ---- the pool ----------------------------------------------------------------------
    def _prepare(self) -> process.Launched:
        slot = process.launch_waiting(self.plan, os.fsencode(self.plan.cwd), early_seccomp=self.early_seccomp)
        try:
            slot.counter_fds = _open_counters(slot.cgroup)  # read by run()'s direct path
        except BaseException:
            _discard(slot)
            raise
        return slot

    def _refill(self) -> None:
        while True:
            self._clean_used()
            with self._lock:
                while not self._closed and not self._used and (len(self._ready) >= self.size
                                                               or (len(self._ready) >= self.low and self._running)):
                    # A direct task gives its sandbox back without waking us (that wake-up, an
                    # IPI to this thread's idle CPU, was the caller's to pay): while tasks run,
                    # or ran lately, look again soon, then less often. Idle for longer, sleep
                    # until woken: the next take wakes us.
                    if self._running or time.monotonic() - self._last_task < _ALERT:
                        if not self._lock.wait(self._idle):
                            self._idle = min(self._idle * 2, _IDLE_MAX)
                    else:
                        self._asleep = True
                        self._lock.wait()
                        self._asleep = False
                if self._used:
                    self._idle = _IDLE_MIN
                if self._closed:
                    return
                if self._used:
                    continue
            try:
                slot = self._prepare()
            except Exception:  # the next take() prepares one itself and raises there
                with self._lock:
                    self._lock.wait(0.5)
                continue
            with self._lock:
                if self._closed:
                    _discard(slot)
                    return
                self._ready.append(slot)
                self.stats["prepared"] += 1
                self._lock.notify_all()

    def _take(self, direct: bool = False) -> process.Launched:
        """A ready sandbox (or one prepared now). Only run()'s direct path (direct=True)
        reads its memory counters through the fds opened ahead; other paths close them."""
        if _forks[0] != self._forks:
            raise RuntimeError("a WarmPool cannot be used in a forked child")
        with self._lock:
            if self._closed:
                raise RuntimeError("the WarmPool is closed")
            slot = self._ready.popleft() if self._ready else None
            self._running += 1
            self._idle = _IDLE_MIN  # the refill thread looks for its end soon (see _refill)
            self._last_task = time.monotonic()
            if self._asleep:  # idle for a while: it would not look (see _refill)
                self._lock.notify_all()
            # The refill thread waits while `low` are ready and a task runs: waking it now
            # for nothing would cost this task a wake-up and a hand-over of the GIL.
            if len(self._ready) < self.low:
                self._lock.notify_all()
        if slot is None:
            self.stats["served_cold"] += 1
            try:
                slot = self._prepare()
            except BaseException:
                self._task_done()
                raise
        else:
            self.stats["served_warm"] += 1
        if not direct:
            _close_counters(slot)
        return slot

    def _task_done(self) -> None:
        """A task's sandbox has been reaped: the refill may go on."""
        with self._lock:
            self._running = max(0, self._running - 1)
            self._lock.notify_all()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until `size` sandboxes are ready (a warm-up before timing, say)."""
        with self._lock:
            self._lock.notify_all()  # a sandbox given back silently is cleaned up now, not at the next look
            return self._lock.wait_for(lambda: len(self._ready) >= self.size or self._closed, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            slots, self._ready = list(self._ready), deque()
            self._lock.notify_all()
        for slot in slots:
            _discard(slot)
        self._clean_used()
        for kept in list(self._status_fds):
            kept.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True) and os.getpid() == getattr(self, "_pid", None):
            self.close()

    # ---- tasks ---------------------------------------------------------------------------
    def Popen(self, args, **kwargs) -> process.Popen:
        """Like isolate.Popen, in a sandbox that was ready before the call."""
        for key in ("profile", "overrides"):
            if key in kwargs:
                raise TypeError(f"{key}: a WarmPool runs the profile it was made with")
        return process.Popen(args, warm=self, **kwargs)

    def run(self, *popenargs, **kwargs) -> process.Result:
        """Like isolate.run, in a sandbox that was ready before the call.

        The sandbox's program process is already forked and waiting (isolate-init's
        zygote): the task is handed over in one message and the program exec'd. With
        run()'s usual arguments this takes a direct path (no subprocess.Popen: one poll
        loop over the pipes, pid 1's status pipe and its pidfd, until pid 1 reports the
        program's end; reaping and cleaning up are the refill thread's); with any other,
        the path of isolate.run(warm=pool). Both behave the same (docs/warm-path.md)."""
        if len(popenargs) == 1 and not kwargs and not self.plan.pty:
            args = popenargs[0]
            if type(args) is list:
                try:
                    prepared = self._prepared.get(tuple(args))
                except TypeError:  # an unhashable argument: the checks say what is wrong with it
                    prepared = None
                # (only lists of exact str were kept: an object merely equal to one is no hit)
                if prepared is not None and prepared[0] is process.fixed_for(self.plan) \
                        and all(type(a) is str for a in args):
                    return self._run_direct(args, prepared=prepared)
            return self._run_direct(args)
        if len(popenargs) == 1 and "args" not in kwargs and _DIRECT.issuperset(kwargs) and not self.plan.pty:
            return self._run_direct(popenargs[0], **kwargs)
        return process.run(*popenargs, warm=self, **kwargs)

    def _run_direct(self, args, *, input=None, capture_output=False, timeout=None, check=False, on_timeout="raise",
                    cwd=None, env=None, stdin=process.FROM_PROFILE, stdout=process.FROM_PROFILE,
                    stderr=process.FROM_PROFILE, text=None, encoding=None, errors=None, universal_newlines=None,
                    pass_fds=(), umask=-1, shell=False, executable=None, prepared=None) -> process.Result:
        plan = self.plan
        if prepared is not None:
            # run(args) alone, with args seen before (checked then, and the same strings now):
            # the task's strings as kept, the plan's fd table.
            program, task = prepared[1], prepared[2]
            text_mode, shell_prog, passed, cwd_b = False, None, self._passed, b""
        else:
            program, task, text_mode, shell_prog, passed, cwd_b = self._task_args(
                args, input, capture_output, timeout, on_timeout, cwd, env, stdin, stdout, stderr, text, encoding,
                errors, universal_newlines, pass_fds, umask, shell, executable)
            if input is not None:
                stdin = process.PIPE
            if capture_output:
                stdout = stderr = process.PIPE

        # The fd table: the child's ends (ours to close once handed over) and our ends.
        mine = [-1, -1, -1]      # p2cwrite, c2pread, errread
        child = [-1, -1, -1]
        made: list = []          # fds opened here for the child
        try:
            if not (self._inherit_all and stdin is stdout is stderr is process.FROM_PROFILE):
                self._stdio(stdin, stdout, stderr, mine, child, made)
            stats: dict = {}  # the caller's own 0, 1, 2 as fd_table found them (give_pipes needs no fstat again)
            src, dst = process.fd_table(child[0], child[1], child[2], passed, stats)
        except BaseException:
            for fd in made + [m for m in mine if m >= 0]:
                os.close(fd)
            raise
        return self._run_task(args, task, src, dst, stats, mine, made, input, timeout, check, on_timeout, umask,
                              text_mode, encoding, errors, program, cwd_b, shell_prog)

    def _task_args(self, args, input, capture_output, timeout, on_timeout, cwd, env, stdin, stdout, stderr, text,
                   encoding, errors, universal_newlines, pass_fds, umask, shell, executable):
        """run()'s arguments checked (as run() and Popen check them, in their order) and the
        task's strings: (program, task_strings, text mode, the shell, passed fds, cwd)."""
        plan = self.plan
        # The checks of run() and Popen, in their order, before anything is taken.
        process.check_timeout(timeout)
        if on_timeout not in ("raise", "result"):
            raise ValueError(f'on_timeout: expected "raise" (as subprocess) or "result", got {on_timeout!r}')
        argl = popen_args.check_call_args(args, shell, executable, cwd, env, umask)
        if input is not None:
            if stdin not in (process.FROM_PROFILE, None):
                raise ValueError("stdin and input arguments may not both be used.")
        if capture_output:
            if stdout not in (process.FROM_PROFILE, None) or stderr not in (process.FROM_PROFILE, None):
                raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        if universal_newlines is not None and text is not None and bool(universal_newlines) != bool(text):
            raise subprocess.SubprocessError("Cannot disambiguate when both text and universal_newlines are "
                                             "supplied but different. Pass one or the other.")
        text_mode = bool(encoding or errors or text or universal_newlines)
        shell_prog = None
        if shell:
            argl = [plan.shell, "-c"] + argl
            if executable:
                argl[0] = executable
            else:
                shell_prog = plan.shell
        program = os.fspath(executable if executable is not None else argl[0])
        argv = [os.fsencode(a) for a in argl]
        program_b = os.fsencode(program)
        fixed = process.fixed_for(plan) if env is None else None
        if fixed is not None:  # the plan's environment and exec paths, kept as run()'s direct path keeps them
            envp, paths = fixed.envp, fixed.exec_paths(program_b)
        else:
            environment = plan.environment() if env is None else env
            envp = self._envp(environment)
            paths = self._exec_paths(program_b, environment, env is not None)
        if pass_fds:
            passed = tuple(sorted(set(plan.pass_fds) | set(int(f) for f in pass_fds)))
            if set(passed) != set(plan.pass_fds):
                check_nofile(plan, passed, warm=True, file=plan.profile_name, what=f" with pass_fds={list(passed)}")
        else:
            passed = self._passed
        cwd_b = os.fsencode(os.path.abspath(os.fspath(cwd))) if cwd is not None else b""
        task = process.task_strings(cwd_b, paths, argv, envp)
        # run(args) alone may take these strings again for the same args: kept when nothing
        # else went into them (the exec paths from the plan's PATH, not this process's).
        if fixed is not None and cwd is None and not shell and executable is None and type(args) is list \
                and (b"/" in program_b or fixed.path) and all(type(a) is str for a in args):
            if len(self._prepared) >= 64:
                self._prepared.clear()
            self._prepared[tuple(args)] = (fixed, program, task)
        return program, task, text_mode, shell_prog, passed, cwd_b

    def _stdio(self, stdin, stdout, stderr, mine: list, child: list, made: list) -> None:
        """The program's 0, 1, 2 from run()'s stdin/stdout/stderr (or the profile's): the
        child's ends into `child` (and `made`, ours to close once handed over), ours into `mine`."""
        plan = self.plan
        for i, v in enumerate((stdin, stdout, stderr)):
            if v is process.FROM_PROFILE:
                v = process.stdio_from_profile(plan.stdio[i], i, made)
            if v is None:
                continue
            if v == process.PIPE:
                r, w = os.pipe()
                mine[i], child[i] = (w, r) if i == 0 else (r, w)
                made.append(child[i])
            elif v == process.DEVNULL:
                child[i] = os.open(os.devnull, (os.O_RDONLY if i == 0 else os.O_WRONLY) | os.O_CLOEXEC)
                made.append(child[i])
            elif v == process.STDOUT and i == 2:
                child[2] = child[1] if child[1] != -1 else sys.__stdout__.fileno()
            elif isinstance(v, int):
                child[i] = v
            else:
                child[i] = v.fileno()

    def _run_task(self, args, task, src, dst, stats, mine, made, input, timeout, check, on_timeout, umask, text_mode,
                  encoding, errors, program, cwd_b, shell_prog) -> process.Result:
        """Hand the task to a ready sandbox and wait for its end (the fd table laid out)."""
        start = time.monotonic()
        slot = self._take(direct=True)
        reaped = ended = False
        try:
            try:
                try:
                    if slot.ids is not None:
                        process.give_pipes(src, slot.ids.id, stats)
                    # The socket stays open until the sandbox is cleaned up (off the task's path).
                    slot.send_task(b"", (), (), (), src, dst, quiet=True, keep_ctl=True, prepared=task,
                                   umask=umask if umask >= 0 else caller_umask(self._status, self._status_fds))
                finally:
                    for fd in made:
                        os.close(fd)
                if text_mode:
                    encoding = encoding or ("utf-8" if sys.flags.utf8_mode else locale.getencoding())
                    errors = errors or "strict"
                    if isinstance(input, str):
                        input = input.encode(encoding, errors)
                try:
                    # (Not one blocking read of the status pipe even with nothing else to wait
                    # for: pid 1's write wakes a reader synchronously, onto pid 1's CPU, which
                    # measured ~0.15 ms slower per task than poll's wake-up on the caller's own.)
                    timed_out, outs, status, ended = _communicate(slot, mine, input, timeout)
                except BaseException:
                    _kill(slot)
                    raise
                sts, rusage = 0, None
                if not ended:
                    # pid 1 was killed (a timeout) or died without its report: reap it here.
                    _pid, sts, ru = os.wait4(slot.pid, 0)
                    reaped = True
                    rusage = process.Rusage.from_os(ru)
                # What its cgroup saw; removing the cgroup (and the rest) is the refill thread's.
                usage = _memory_usage(slot.cgroup, slot.counter_fds) if slot.cgroup is not None else None
            finally:
                for i, fd in enumerate(mine):
                    if fd >= 0:
                        os.close(fd)
                if not reaped and not ended:
                    _kill(slot)
                slot.reaped = reaped
        except BaseException:
            self._give_back(slot)
            raise
        try:
            return self._task_result(args, slot, status, outs, mine, sts, rusage, usage, timed_out, start, program,
                                     cwd_b, shell_prog, text_mode, encoding, errors, check, on_timeout, timeout)
        finally:
            # Last: the refill thread that cleans it up then no longer competes with the caller.
            self._give_back(slot)

    def _envp(self, environment) -> list:
        """process.environment_list(environment), kept for the next task with the same
        environment (the same names and values in the same order)."""
        items = tuple(environment.items())
        cached_items, cached = self._envp_cache
        if items == cached_items:
            return cached
        envp = process.environment_list(environment)
        self._envp_cache = (items, envp)
        return envp

    def _exec_paths(self, program: bytes, environment, given: bool) -> list:
        """process.exec_paths, kept by everything it reads: the program, and the PATH of
        `environment` (given) or of `environment`, then of this process (not given)."""
        if b"/" in program:
            return [program]
        key = (program, given, environment.get("PATH"),
               environment.get(b"PATH") if given else os.environ.get("PATH"))
        try:
            paths = self._paths_cache.get(key)
        except TypeError:  # a PATH that is no string: process.exec_paths says what is wrong
            return process.exec_paths(program, environment, given=given)
        if paths is None:
            paths = process.exec_paths(program, environment, given=given)
            if len(self._paths_cache) >= 64:
                self._paths_cache.clear()
            self._paths_cache[key] = paths
        return list(paths)

    def _give_back(self, slot: process.Launched) -> None:
        """A direct task's sandbox, to be reaped and cleaned up by the refill thread."""
        with self._lock:
            self._used.append(slot)
            # The refill thread finds it within _IDLE_MIN.._IDLE_MAX (it looks while tasks
            # run); woken now only when the pool runs low or is closed.
            if len(self._ready) < self.low or self._closed:
                self._lock.notify_all()
            closed = self._closed
        if closed:  # no refill thread any more
            self._clean_used()

    def _task_result(self, args, slot, status, outs, mine, sts, rusage, usage, timed_out, start, program, cwd_b,
                     shell_prog, text_mode, encoding, errors, check, on_timeout, timeout) -> process.Result:
        plan = self.plan
        # What pid 1 said: why the program did not start, or how it ended. Its usual word
        # is exactly (started, rusage, exited), in one write.
        if len(status) == _REPORT.size and rusage is None:
            k1, _pid, _, _, _, k2, maxrss, us, uus, st, k3, exit_sts, _, _, _ = _REPORT.unpack(status)
            if k1 == _launch.MSG_STARTED and k2 == MSG_RUSAGE and k3 == _launch.MSG_EXITED:
                sts = exit_sts
                rusage = process.Rusage(maxrss, us + uus / 1e6, st / 1e6)
                return self._make_result(args, slot, outs, mine, sts, rusage, usage, timed_out, start, text_mode,
                                         encoding, errors, check, on_timeout, timeout)
        msgs = [process.MSG.unpack_from(status, off) for off in range(0, len(status) - process.MSG.size + 1,
                                                                          process.MSG.size)]
        for kind, a, b, c, _t in msgs:
            if kind == _launch.MSG_ERROR:
                err = process.setup_error((_STEP_NAMES.get(a, "init"), b, c, 1), plan, program,
                                          cwd_b or os.fsencode(plan.cwd))
                if shell_prog is not None and isinstance(err, (ExecutableNotFound, ExecutablePermission)):
                    err.detail = "process.shell: the shell of shell=True is not usable in the sandbox's view"
                raise err from None
        if not timed_out and not any(m[0] == _launch.MSG_STARTED for m in msgs):
            raise process.setup_error(("init", 0, errno.ECHILD, 1), plan, program, cwd_b or os.fsencode(plan.cwd))
        exited = [m[1] for m in msgs if m[0] == _launch.MSG_EXITED]
        if len(exited) == 1:  # pid 1 reports once; anything else is not its word
            sts = exited[0]
        for kind, a, b, c, t in msgs:
            if kind == MSG_RUSAGE and rusage is None:
                rusage = process.Rusage(a, b + c / 1e6, t / 1e6)
        return self._make_result(args, slot, outs, mine, sts, rusage, usage, timed_out, start, text_mode, encoding,
                                 errors, check, on_timeout, timeout)

    def _make_result(self, args, slot, outs, mine, sts, rusage, usage, timed_out, start, text_mode, encoding, errors,
                     check, on_timeout, timeout) -> process.Result:
        if mine[1] < 0 and mine[2] < 0:
            out = err = None
        else:
            out, err = (None if mine[i] < 0 else b"".join(outs[i]) for i in (1, 2))
        if text_mode:
            out, err = (None if d is None else d.decode(encoding, errors).replace("\r\n", "\n").replace("\r", "\n")
                        for d in (out, err))
        oom, peak = False, None
        if usage is not None:
            peak = usage.memory_peak
            if usage.oom_kills is not None:
                oom = usage.oom_kills > 0
            else:
                oom = bool(usage.memory_failcnt) and os.waitstatus_to_exitcode(sts) == -signal.SIGKILL
        result = process.Result(args=args, returncode=os.waitstatus_to_exitcode(sts), stdout=out, stderr=err,
                                timed_out=timed_out, duration=time.monotonic() - start, rusage=rusage,
                                timings=slot.timings, oom=oom, memory_peak=peak,
                                violations=tuple(slot.network.recorded()) if slot.network is not None else ())
        if timed_out and on_timeout == "raise":
            exc = process.TimeoutExpired(args, timeout, output=out, stderr=err)
            exc.result = result
            raise exc
        if check and not timed_out:
            result.check_returncode()
        return result

    def _clean_used(self) -> None:
        """Give back what the reaped sandboxes of direct tasks held (off the caller's path)."""
        while True:
            with self._lock:
                if not self._used:
                    return
                slot = self._used.popleft()
            try:
                _close_counters(slot)
                if slot.ctl is not None:  # kept open by the task (send_task(keep_ctl=True))
                    slot.ctl.close()
                    slot.ctl = None
                if not getattr(slot, "reaped", True):
                    # pid 1 of a quiet task has reported and waits to be killed: its exit (the
                    # namespaces' teardown) happens here, off the caller's path.
                    try:
                        signal.pidfd_send_signal(slot.pidfd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    try:
                        os.waitpid(slot.pid, 0)
                    except ChildProcessError:
                        pass
                for fd in (slot.pidfd, slot.status_fd):
                    if fd >= 0:
                        os.close(fd)
                slot.pidfd = slot.status_fd = -1
                if slot.netns >= 0:
                    # pid 1 of a pid namespace is reaped after every process in it: it is empty.
                    net.pool().give_back(slot.netns, reusable=self.plan.pidns)
                group, slot.cgroup = slot.cgroup, None
                if group is not None:
                    group.destroy()
                ids, slot.ids = slot.ids, None
                if ids is not None:
                    ids.release()  # reaped, its cgroup emptied: the id may serve the next sandbox
                if slot.network is not None:  # its refusals stay readable (Result.violations has them)
                    slot.network.close()
            finally:
                self._task_done()


# Forks of this process: a pool made before a fork is not usable in the child (its
# sandboxes, their pid 1 and the refill thread are the parent's).
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


class _StatusFd:
    """One thread's /proc/thread-self/status, kept open by a pool (caller_umask)."""

    __slots__ = ("fd", "forks", "key", "tid", "__weakref__")

    def __init__(self, fd: int):
        self.fd, self.forks = fd, _forks[0]
        self.tid = threading.get_native_id()  # the thread that opened it, the only one that reads it
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)

    def close(self) -> None:
        """Close it if that number is still this file (the caller may have closed it and
        opened its own there); never in a forked child (it is the parent's thread's)."""
        try:
            if self.forks == _forks[0]:
                self.forks = -1
                st = os.fstat(self.fd)
                if (st.st_dev, st.st_ino) == self.key:
                    os.close(self.fd)
        except Exception:  # noqa: BLE001 - closed already, or the interpreter is shutting down
            pass

    __del__ = close  # its thread has ended (threading.local dropped it)


def _umask_of(data: bytes, tid: int | None) -> int:
    """The Umask line of a /proc/<tid>/status text (-1: not there; tid given: -1 unless it
    is the status of that thread)."""
    i = data.find(b"\nUmask:\t")
    if i < 0 or not data.startswith(b"Name:"):
        return -1
    if tid is not None and data.find(b"\nPid:\t%d\n" % tid) < 0:
        return -1
    j = data.find(b"\n", i + 8)
    return int(data[i + 8:j], 8) if j > 0 else -1


def caller_umask(local: threading.local, kept_fds: weakref.WeakSet) -> int:
    """This thread's umask now, read without changing it (os.umask would, for a moment, for
    every thread): one pread of this thread's /proc/thread-self/status, kept open in
    `local` (and in `kept_fds`, for its owner to close). A kept fd is used only while it
    still reads as this very thread's status (its number may have been closed and reused
    by the caller); otherwise it is forgotten, not closed, and opened again. -1 if it
    cannot be read (send_task then reads it its own way)."""
    kept = getattr(local, "kept", None)
    if kept is not None and kept.forks == _forks[0]:
        try:
            mask = _umask_of(os.pread(kept.fd, 256, 0), kept.tid)
            if mask >= 0:
                return mask
        except (OSError, ValueError):
            pass
        kept.forks = -1  # not ours any more: never closed by us
    local.kept = None
    try:
        fd = os.open("/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        mask = _umask_of(os.read(fd, 256), None)
    except (OSError, ValueError):
        mask = -1
    if mask < 0:
        os.close(fd)
        return -1
    local.kept = _StatusFd(fd)
    kept_fds.add(local.kept)
    return mask


def _kill(slot: process.Launched) -> None:
    """Kill a task's whole sandbox (pid 1 of its pid namespace, and its cgroup): as Popen.kill()."""
    process.kill_slot(slot, pidns=True)  # a WarmPool's plans always have a pid namespace


def _communicate(slot: process.Launched, mine: list, input, timeout):
    """Write `input`, read the output pipes and pid 1's status pipe in one poll loop,
    until pid 1 has reported the program's end (it has killed every other process of
    the sandbox by then) and the output pipes are at EOF, or until pid 1 is gone. On
    the timeout the sandbox is killed and the rest read. Returns (timed_out,
    [_, stdout chunks, stderr chunks], status bytes, ended: pid 1 reported the end)."""
    outs: list = [None, [], []]
    status: list = []
    poller = select.poll()
    readers = {slot.status_fd: status}
    for i in (1, 2):
        if mine[i] >= 0:
            readers[mine[i]] = outs[i]
    for fd in readers:
        poller.register(fd, select.POLLIN)
    # pid 1 gone (its pidfd readable) is the end: every process of its pid namespace is
    # gone too, and what they wrote is in the pipes. EOF is not waited for: a launch
    # under way in another thread holds copies of our pipes until its exec.
    poller.register(slot.pidfd, select.POLLIN)
    wfd, view = mine[0], None
    if wfd >= 0:
        if input:
            view = memoryview(input).cast("B")
            os.set_blocking(wfd, False)
            poller.register(wfd, select.POLLOUT)
        else:
            os.close(wfd)
            mine[0] = wfd = -1
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    while True:
        if deadline is None:
            events = poller.poll()
        else:
            left = deadline - time.monotonic()
            events = poller.poll(max(0, int(left * 1000) + 1)) if left > 0 else []
            if not events and time.monotonic() >= deadline:
                timed_out, deadline = True, None
                _kill(slot)
                if wfd >= 0:
                    poller.unregister(wfd)
                    os.close(wfd)
                    mine[0] = wfd = -1
                continue
        for fd, ev in events:
            if fd == slot.pidfd:
                for rfd, chunks in readers.items():
                    os.set_blocking(rfd, False)
                    try:
                        while data := os.read(rfd, 65536):
                            chunks.append(data)
                    except BlockingIOError:
                        pass
                if wfd >= 0:
                    os.close(wfd)
                    mine[0] = wfd = -1
                data = b"".join(status)
                return timed_out, outs, data, not timed_out and _ended(data)
            if fd == wfd:
                done = bool(ev & (select.POLLERR | select.POLLHUP))
                if not done:
                    try:
                        n = os.write(fd, view[:65536])
                        view = view[n:]
                        done = not view
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:
                        done = True
                if done:
                    poller.unregister(fd)
                    os.close(fd)
                    mine[0] = wfd = -1
                continue
            data = os.read(fd, 65536)
            if data:
                readers[fd].append(data)
            else:
                poller.unregister(fd)
                del readers[fd]
        # The end reported, the outputs at EOF: done (pid 1 is exiting; reaped later).
        if not timed_out and len(readers) <= 1 and slot.status_fd in readers and _ended(b"".join(status)):
            if wfd >= 0:
                os.close(wfd)
                mine[0] = wfd = -1
            return timed_out, outs, b"".join(status), True


# ---- may the zygote load the filter before its task? ---------------------------------------
# What the zygote calls after loading it early (x86_64 numbers; _init.c, receive_task and
# the program's process up to execve), with the arguments that a filter could look at.
# Pointer arguments are any value (a filter cannot follow them); fds a few of each.
_P = 0x7FFD0000
_FDS = (0, 1, 2, 3, 4, 7, 10, 64, 255, 1023, 65535)
_ZYGOTE_CALLS = (
    [(47, (0, _P, 0x40000000))] +                               # recvmsg(0, &mh, MSG_CMSG_CLOEXEC)
    [(72, (fd, 1030, b)) for fd in _FDS for b in (3, 64, 65536)] +  # fcntl(fd, F_DUPFD_CLOEXEC, base)
    [(3, (fd,)) for fd in _FDS] +                              # close
    [(33, (a, b)) for a in _FDS for b in _FDS] +               # dup2
    [(436, (lo, hi, 0)) for lo in (0, 3) for hi in _FDS] +     # close_range(lo, hi, 0)
    [(436, (fd, 0xFFFFFFFF, 4)) for fd in _FDS] +              # close_range(first, ~0, CLOSE_RANGE_CLOEXEC)
    [(80, (_P,))] + [(95, (m,)) for m in range(0o1000)] +      # chdir(cwd), umask(mask)
    [(14, (2, _P, 0, 8)), (59, (_P, _P, _P))] +                # rt_sigprocmask(SIG_SETMASK), execve
    [(1, (fd, _P, 24)) for fd in _FDS] +                       # write(start pipe, record, 24): a failure
    [(1, (fd, _P, 8)) for fd in _FDS] +                        # write(watch eventfd, 1, 8): not a quiet task
    [(231, (127,)), (228, (1, _P))] +                          # exit_group(127), clock_gettime (no vDSO)
    [(314, (0, _P, 0))])                                       # sched_setattr: the caller's slice back
_AUDIT_ARCH_X86_64 = 0xC000003E
_ALLOW, _LOG = 0x7FFF0000, 0x7FFC0000


def _bpf_action(insns, nr: int, args) -> int | None:
    """The action of a classic BPF seccomp program for one call (None: an instruction
    this reading does not know, or a jump out of the program)."""
    data = struct.pack("=iIQ6Q", nr, _AUDIT_ARCH_X86_64, 0, *(list(args) + [0] * (6 - len(args))))
    a = x = 0
    mem = [0] * 16
    pc = 0
    m32 = 0xFFFFFFFF
    for _ in range(len(insns) + 1):
        if not 0 <= pc < len(insns):
            return None
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if code == 0x20:                                  # ld [k]
            if k % 4 or k + 4 > len(data):
                return None
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x00:                                # ld #k
            a = k
        elif code == 0x01:                                # ldx #k
            x = k
        elif code in (0x60, 0x61):                        # ld/ldx M[k]
            if k >= 16:
                return None
            a, x = (mem[k], x) if code == 0x60 else (a, mem[k])
        elif code in (0x02, 0x03):                        # st/stx M[k]
            if k >= 16:
                return None
            mem[k] = a if code == 0x02 else x
        elif cls == 0x04:                                 # alu
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00: a = (a + src) & m32
            elif op == 0x10: a = (a - src) & m32
            elif op == 0x20: a = (a * src) & m32
            elif op == 0x30 and src: a = a // src
            elif op == 0x40: a |= src
            elif op == 0x50: a &= src
            elif op == 0x60: a = (a << src) & m32 if src < 32 else 0
            elif op == 0x70: a = a >> src if src < 32 else 0
            elif op == 0x80: a = (-a) & m32
            elif op == 0x90 and src: a = a % src
            elif op == 0xA0: a ^= src
            else:
                return None
        elif cls == 0x05:                                 # jmp
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}.get(op)
            if cond is None:
                return None
            pc += jt if cond else jf
        elif code == 0x06:                                # ret #k
            return k
        elif code == 0x16:                                # ret a
            return a
        elif code == 0x07:                                # tax
            x = a
        elif code == 0x87:                                # txa
            a = x
        else:
            return None
    return None


def zygote_may_filter_early(plan) -> bool:
    """True when the plan's filter allows every call isolate-init's zygote makes between
    loading it and the program's execve: the zygote may then load it before its task
    (off the task's path). Any doubt (another architecture, an instruction not known
    here, one call refused or logged only) keeps it where a cold launch loads it."""
    if plan.bpf is None or plan.pty or platform.machine() != "x86_64" or len(plan.bpf) % 8:
        return False
    insns = [struct.unpack_from("=HBBI", plan.bpf, off) for off in range(0, len(plan.bpf), 8)]
    return all(_bpf_action(insns, nr, args) == _ALLOW for nr, args in _ZYGOTE_CALLS)


def _ended(status: bytes) -> bool:
    """pid 1's status records include its report of the program's end."""
    if len(status) == _REPORT.size and status[48:52] == _EXITED_KIND:  # the usual report, in one write
        return True
    size = process.MSG.size
    return any(process.MSG.unpack_from(status, off)[0] == _launch.MSG_EXITED
               for off in range(0, len(status) - size + 1, size))


def _open_counters(group) -> tuple:
    """The memory counters a Result needs of a task's cgroup (OOM kills, peak memory),
    opened while the sandbox is prepared: the task reads each with one pread. () when
    the cgroup has no memory limit or a counter cannot be opened (then the task reads
    them by name, as before)."""
    if group is None or "memory_max" not in group.limits:
        return ()
    if group.version == "v2":
        names = [(group.dirs[0], ("memory.events", "memory.peak"))]
    else:
        names = [(d, ("memory.oom_control", "memory.max_usage_in_bytes", "memory.failcnt")) for d in group.dirs]
    for d, files in names:
        fds: list = []
        try:
            for name in files:
                fds.append(os.open(os.path.join(d, name), os.O_RDONLY | os.O_CLOEXEC))
            return tuple(fds)
        except OSError:
            _close_all(fds)
    return ()


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _close_counters(slot: process.Launched) -> None:
    fds, slot.counter_fds = getattr(slot, "counter_fds", ()), ()
    _close_all(fds)


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _keyed_int(data: bytes, key: bytes) -> int | None:
    """The value of `key` in a flat-keyed cgroup file ("name value" lines), or None."""
    i = 0 if data.startswith(key + b" ") else data.find(b"\n" + key + b" ") + 1
    if i == 0 and not data.startswith(key + b" "):
        return None
    j = data.find(b"\n", i)
    return int(data[i + len(key) + 1:j if j >= 0 else len(data)])


def _memory_usage(group, fds: tuple = ()) -> cgroup.Usage | None:
    """What a Result needs of the task's cgroup (OOM kills, peak memory), in the fewest
    reads: one pread each of the counters opened ahead (`fds`, _open_counters), or by name."""
    if "memory_max" not in group.limits:
        return cgroup.Usage(None, None, None, None, None)
    try:
        if group.version == "v2":
            d = group.dirs[0]
            if fds:
                events_b, peak_b = os.pread(fds[0], 4096, 0), os.pread(fds[1], 4096, 0)
            else:
                events_b, peak_b = _read_small(os.path.join(d, "memory.events")), _read_small(os.path.join(d, "memory.peak"))
            oom = _keyed_int(events_b, b"oom_kill")
            return cgroup.Usage(0 if oom is None else oom, int(peak_b), None, None, None)
        for d in ([None] if fds else group.dirs):
            try:
                ctl = os.pread(fds[0], 4096, 0) if fds else _read_small(os.path.join(d, "memory.oom_control"))
            except FileNotFoundError:
                continue
            oom = _keyed_int(ctl, b"oom_kill")
            # failcnt only stands in for oom_kill on a kernel without it (see Popen)
            failcnt = None if oom is not None else int(
                os.pread(fds[2], 4096, 0) if fds else _read_small(os.path.join(d, "memory.failcnt")))
            peak = int(os.pread(fds[1], 4096, 0) if fds else _read_small(os.path.join(d, "memory.max_usage_in_bytes")))
            return cgroup.Usage(oom, peak, failcnt, None, None)
    except (OSError, ValueError):
        pass
    return group.usage()  # anything unexpected: the cgroup module's own reading


def _discard(slot: process.Launched) -> None:
    """Kill a ready sandbox that will get no task, and reap it."""
    _close_counters(slot)
    try:
        signal.pidfd_send_signal(slot.pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(slot.pid, 0)
    except ChildProcessError:
        pass
    for fd in (slot.pidfd, slot.status_fd):
        if fd >= 0:
            os.close(fd)
    if slot.ctl is not None:
        slot.ctl.close()
    if slot.netns >= 0:
        net.pool().give_back(slot.netns, reusable=True)
    if slot.cgroup is not None:
        slot.cgroup.finish()
    if slot.ids is not None:
        slot.ids.release()
    if slot.network is not None:
        slot.network.close()
