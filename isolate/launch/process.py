"""run / Popen / Result: starting sandboxes, waiting for them, killing the whole tree.

`isolate.Popen` is `subprocess.Popen` with one difference: the child is started by
the launch path from a compiled profile. Pipes, `communicate`, `wait`, `poll`,
`send_signal`, text mode and `TimeoutExpired` are subprocess's own, so code that
uses subprocess switches by changing its import.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod
import io
import math
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import time
import weakref
from typing import Any, Mapping, Sequence

# The error types are also this module's names (isolate exports them from here).
from ..errors import (ExecutableNotFound, ExecutablePermission, SandboxSetupError,  # noqa: F401
                      WorkingDirectoryNotADirectory, WorkingDirectoryNotFound, WorkingDirectoryPermission)
from ..kernel.constants import RLIMIT_NAMES
from ..plan.plan import Plan, check_nofile
from . import _launch, cgroup, hostids, mounts, net, plans, popen_args, terminal
from .pid1 import (FLAG_CTTY, FLAG_DIE_WITH_PARENT, FLAG_PIDNS, FLAG_SECCOMP_EARLY, FLAG_SECCOMP_LOG,
                   FLAG_SECCOMP_NOTIFY, FLAG_WARM,
                   process_fds)
from ..profile.cache import load_profile  # noqa: F401 - public here too (isolate.load_profile)
from .plans import compile_profile, no_nul, plan_for, plan_for_cwd  # noqa: F401 - plan_for*: public here too

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired
CalledProcessError = subprocess.CalledProcessError

FROM_PROFILE = object()  # "as the profile says" for stdin/stdout/stderr (the default of those arguments)
_MSG = struct.Struct("=iiiiq")
assert _MSG.size == _launch.MSG_SIZE



def _check_timeout(timeout) -> None:
    if timeout is None:
        return
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        raise TypeError(f"timeout: expected a number of seconds or None, got {type(timeout).__name__}") from None
    if math.isnan(t) or t < 0 or math.isinf(t):
        raise ValueError(f"timeout: expected a finite number of seconds >= 0 (None for no timeout), got {timeout!r}")

# ---- profiles and plans -------------------------------------------------------------

# ---- results --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rusage:
    maxrss_kb: int        # peak resident set size of the sandbox's largest process
    utime: float          # user CPU seconds, whole sandbox
    stime: float          # system CPU seconds, whole sandbox

    @classmethod
    def from_os(cls, ru) -> "Rusage":
        return cls(ru.ru_maxrss, ru.ru_utime, ru.ru_stime)


@dataclasses.dataclass(frozen=True)
class Result:
    """How a sandboxed program ended."""

    args: list
    returncode: int               # as subprocess: exit code, or -N when killed by signal N
    stdout: Any
    stderr: Any
    timed_out: bool
    duration: float               # seconds from launch to exit
    rusage: Rusage | None
    timings: dict                 # launch phases, milliseconds since the launch began
    oom: bool = False             # the cgroup's OOM killer killed a process of the sandbox
    memory_peak: int | None = None  # bytes, the sandbox's peak memory (cgroup.memory_max set)
    violations: tuple = ()        # what the sandbox was refused (dicts; network.mode "allowlist": isolate.netproxy)

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    @property
    def outcome(self) -> str:
        if self.timed_out:
            return "timed_out"
        if self.oom:
            return "oom"
        if self.returncode < 0:
            return "signaled"
        return "exited"

    def check_returncode(self):
        if self.returncode:
            raise CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


def _stdio_from_profile(value: str, index: int, opened: list):
    if value == "inherit":
        return None
    if value == "null":
        return DEVNULL
    if value == "pipe":
        return PIPE
    if value.startswith("append:"):
        path, flags = value[len("append:"):], os.O_WRONLY | os.O_CREAT | os.O_APPEND
    elif index == 0:
        path, flags = value, os.O_RDONLY
    else:
        path, flags = value, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    except OSError as e:
        key = ("fds.stdin", "fds.stdout", "fds.stderr")[index]
        raise SandboxSetupError("fds", e.errno, f"{key}: cannot open", path) from None
    opened.append(fd)
    return fd


class Popen(subprocess.Popen):
    """subprocess.Popen whose child starts in a sandbox described by `profile`.

    The signature is subprocess.Popen's, in the same order, and every argument means
    what it means there, inside the sandbox; isolate's own (profile, overrides, warm,
    pty, pty_size) are keyword-only. stdin/stdout/stderr default to what the profile's
    [fds] says; pass PIPE, DEVNULL, a file or an fd to override (None: the caller's).
    `env` is exactly the program's environment, as in subprocess; the profile's [env]
    applies when env is None (its environment starts empty unless the profile keeps or
    sets names). `cwd` overrides the profile's process.cwd (a missing one is
    FileNotFoundError naming it). `shell=True` runs the profile's process.shell
    (/bin/sh) as SHELL -c ARGS. `user`/`group` are the identity inside the sandbox
    (names from the sandbox's /etc/passwd and /etc/group), which the profile's id maps
    must map; `umask` is the program's umask; `restore_signals=False` keeps the signals
    the caller ignores ignored (True: every signal at its default). close_fds=True is
    the only behaviour (pass_fds= names what is kept); start_new_session and
    process_group are accepted: every sandbox has a session and process group of its
    own. preexec_fn is refused (no Python runs in the child; see popen_args.PREEXEC_FIELDS).
    Killing (kill(), a timeout) takes the whole sandbox.

    pty=True (or fds.pty in the profile; pty=False turns it off): fd 0, 1 and 2 of the
    program are the slave of a fresh pty allocated for this sandbox, which is also its
    controlling terminal (in a session of its own); stdin/stdout/stderr may then not be
    given. The master is `pty_master`, an unbuffered binary file (read what the program
    writes, write what it should read; a read raises EIO once every process of the
    sandbox has closed the terminal). It is closed when the `with` block ends or by
    close_pty(). `pty_size=(rows, cols)` is the terminal's size before the program
    starts (default 24x80); resize() changes it later (the program gets SIGWINCH).
    communicate() then types `input` on the terminal and returns (everything the program
    wrote to it, None).

    seccomp_log=True loads the filter with SECCOMP_FILTER_FLAG_LOG: each denial becomes a
    kernel audit record (type 1326; isolate.agent.violations reads them).

    network=: a network namespace a layer above made for this one sandbox (see launch();
    isolate.netproxy's allowlist); the sandbox joins it, `violations` lists what it
    refused, and it is closed once the sandbox is reaped (or the launch failed).
    """

    def __init__(self, args, bufsize=-1, executable=None, stdin=FROM_PROFILE, stdout=FROM_PROFILE,
                 stderr=FROM_PROFILE, preexec_fn=None, close_fds=True, shell=False, cwd=None,
                 env: Mapping[str, str] | None = None, universal_newlines=None, startupinfo=None, creationflags=0,
                 restore_signals=True, start_new_session=False, pass_fds: Sequence[int] = (), *, user=None,
                 group=None, extra_groups=None, encoding=None, errors=None, text=None, umask=-1, pipesize=-1,
                 process_group=None, profile: Any = "default", overrides: Sequence[str] = (), warm=None,
                 pty: bool | None = None, pty_size: Sequence[int] | None = None, seccomp_log: bool = False,
                 network=None):
        popen_args.check_popen_args(preexec_fn, close_fds, startupinfo, creationflags)
        self._seccomp_log = bool(seccomp_log)  # denials of the filter go to the kernel's audit log
        popen_args.check_call_args(args, shell, executable, cwd, env, umask)
        if warm is not None:
            if user is not None or group is not None or extra_groups is not None:
                raise ValueError("user/group/extra_groups: not available with a WarmPool (its sandboxes are started "
                                 "before the task); set identity.uid/identity.gid in its profile")
            if not restore_signals:
                raise ValueError("restore_signals=False: not available with a WarmPool (its sandboxes are started "
                                 "before the task)")
            self.plan = warm.plan
        else:
            self.plan = popen_args.plan_with_identity(profile, overrides, cwd, user, group)
        self._groups = popen_args.extra_gids(self.plan, extra_groups) if warm is None else None
        self._umask = umask if umask >= 0 else -1
        self._keep_ignored = not restore_signals
        self.timings: dict = {}
        self._pidfd = -1
        self._status_fd = -1
        self._rusage = None
        self._start = time.monotonic()
        self._env = env                # exactly the program's environment; None: the profile's
        self._cgroup = None            # cgroup.Group of this launch, until it is removed
        self.oom = False               # after wait: the OOM killer killed a process of it
        self.memory_peak = None        # after wait: peak memory in bytes (with a memory limit)
        self.cgroup_usage = None       # after wait: cgroup.Usage (with cgroup limits)
        self._opened: list = []
        self._warm = warm
        if network is not None and warm is not None:
            raise ValueError("network=: a WarmPool's sandboxes have their network already")
        if network is not None and self.plan.network_mode != "none":
            raise ValueError(f"network=: the profile must ask for a network namespace of its own "
                             f"(network.mode = \"none\"), not {self.plan.network_mode!r}")
        self._network_for_launch = network
        self.pty_master = None         # with a pty: the master side, an unbuffered binary file
        self._pty_out: list = []       # communicate() in pty mode: output so far (kept across timeouts)
        self._pty_in = None
        self._pty_eof = False
        self._pty_last = b"\n"        # the last byte typed on the terminal (for EOF)
        use_pty = self.plan.pty if pty is None else bool(pty)
        if pty_size is not None and not use_pty:
            raise ValueError("pty_size needs pty=True (or fds.pty in the profile)")
        try:
            std = [stdin, stdout, stderr]
            if use_pty:
                self._open_pty(std, warm, pty_size)
            for i, v in enumerate(std):
                if v is FROM_PROFILE:
                    std[i] = _stdio_from_profile(self.plan.stdio[i], i, self._opened)
            self._pass = tuple(sorted(set(self.plan.pass_fds) | set(int(f) for f in pass_fds)))
            if warm is not None or set(self._pass) != set(self.plan.pass_fds):
                check_nofile(self.plan, self._pass, warm=warm is not None, file=self.plan.profile_name,
                             what=f" with pass_fds={list(self._pass)}")
            super().__init__(args, bufsize=bufsize, executable=executable, stdin=std[0], stdout=std[1],
                             stderr=std[2], close_fds=True, shell=shell, cwd=cwd, text=text, encoding=encoding,
                             errors=errors, universal_newlines=universal_newlines, pipesize=pipesize,
                             startupinfo=startupinfo, creationflags=creationflags)
        except BaseException:
            self.close_pty()
            raise
        finally:
            for fd in self._opened:
                os.close(fd)
            self._opened = []

    # ---- pty mode ---------------------------------------------------------------------
    def _open_pty(self, std: list, warm, size) -> None:
        """A fresh pty for this sandbox: its slave becomes fd 0, 1 and 2 of the program."""
        for name, v in zip(("stdin", "stdout", "stderr"), std):
            if v is not FROM_PROFILE:
                raise ValueError(f"pty: {name} is the sandbox's terminal; {name}= cannot be given with a pty")
        if warm is not None:
            raise ValueError("pty: not available with a WarmPool (its sandboxes are started before the task)")
        self._pty_size = terminal.check_size(terminal.DEFAULT_SIZE if size is None else size)
        self._ctty = True
        if self.plan.pidns:
            # pid 1 is started first and given the program once the pty exists: then the
            # pty can come from the sandbox's own devpts (see _start_on_pty).
            self._pty_late = True
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # placeholder for subprocess
            self._opened.append(devnull)
            std[:] = [devnull, devnull, devnull]
            return
        master, slave = os.openpty()  # both close-on-exec; the launch path dup3s the slave
        self._opened.append(slave)    # ours is closed once the program has its copies
        self.pty_master = open(master, "r+b", buffering=0)
        terminal.set_winsize(master, *self._pty_size)
        terminal.give(slave, self.plan)
        std[:] = [slave, slave, slave]

    def _start_on_pty(self, plan: Plan, exec_paths, argv, envp, cwd: bytes, passed) -> None:
        """Start pid 1 waiting for its task, allocate the pty, then hand pid 1 the program
        with the pty's slave as 0/1/2. The pty comes from the sandbox's own devpts
        instance when its view has one (/dev/pts of a minimal /dev: then the program
        finds it there, at /dev/pts/N, and ttyname works), else from the caller's."""
        slot = launch_waiting(plan, cwd, ctty=True, keep_ignored=self._keep_ignored, groups=self._groups,
                              network=self._network_for_launch)
        self._adopt(slot)
        self._child_created = True  # from here on, it is ours to reap
        pair = terminal.open_sandbox_pty(slot.pid) if terminal.has_own_devpts(plan) else None
        master, slave = pair if pair is not None else os.openpty()
        try:
            self.pty_master = open(master, "r+b", buffering=0)
            terminal.set_winsize(master, *self._pty_size)
            terminal.give(slave, plan)
            src, dst = _fd_table(slave, slave, slave, passed)
            slot.send_task(b"", exec_paths, argv, envp, src, dst, umask=self._umask)
        finally:
            os.close(slave)
        _await_start(slot.status_fd)

    def resize(self, rows: int, cols: int) -> None:
        """Change the size of the sandbox's terminal; the program gets SIGWINCH."""
        if self.pty_master is None or self.pty_master.closed:
            raise ValueError("resize: this Popen has no terminal (pty=True)")
        rows, cols = terminal.check_size((rows, cols))
        terminal.set_winsize(self.pty_master.fileno(), rows, cols)

    def close_pty(self) -> None:
        """Close the master side of the sandbox's terminal (once; idempotent)."""
        if self.pty_master is not None and not self.pty_master.closed:
            self.pty_master.close()

    def __exit__(self, exc_type, value, traceback):
        try:
            return super().__exit__(exc_type, value, traceback)
        finally:
            self.close_pty()

    def communicate(self, input=None, timeout=None):
        if self.pty_master is None:
            return super().communicate(input, timeout)
        return self._pty_communicate(input, timeout, sink=None), None

    def _pty_communicate(self, input, timeout, sink: int | None, source: int | None = None):
        """Type `input` on the terminal, collect (or with `sink`, write to that fd) what the
        program writes until every process of the sandbox has closed the terminal, wait.
        With `source`, what can be read from that fd is typed on the terminal too (its
        end of file becomes the terminal's EOF character)."""
        text = self.text_mode
        if self._pty_in is None:
            data = input if input is not None else b""
            if text and isinstance(data, str):
                data = data.encode(self.encoding or terminal.locale_encoding(), self.errors or "strict")
            self._pty_in = bytearray(data)
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.pty_master.fileno()
        blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)
        try:
            self._pty_relay(fd, deadline, timeout, text, sink, source)
        finally:
            os.set_blocking(fd, blocking)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.wait(remaining)
        except TimeoutExpired:
            raise TimeoutExpired(self.args, timeout, output=self._pty_output(text)) from None
        return None if sink is not None else self._pty_output(text)

    def _pty_relay(self, fd, deadline, timeout, text, sink, source):
        exited_at = None
        pending = self._pty_in
        while not self._pty_eof:
            if exited_at is None and self.poll() is not None:
                exited_at = time.monotonic()
                source = None  # nobody left to type for
            # After the program ended, the terminal closes as soon as the sandbox is gone;
            # a process that escaped it (no pid namespace, no cgroup) must not hang us.
            wait = None if exited_at is None else 1.0
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            p = select.poll()
            p.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
            if exited_at is None and self._pidfd >= 0:
                p.register(self._pidfd, select.POLLIN)
            if source is not None and len(pending) < 65536:
                p.register(source, select.POLLIN)
            events = dict(p.poll(None if wait is None else wait * 1000))
            if not events:
                if exited_at is not None and time.monotonic() - exited_at >= 1.0:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutExpired(self.args, timeout, output=self._pty_output(text))
                continue
            if source is not None and events.get(source, 0):
                try:
                    chunk = os.read(source, 65536)
                except BlockingIOError:
                    chunk = None
                except OSError:
                    chunk = b""
                if chunk:
                    pending += chunk
                elif chunk is not None:  # end of our input: the terminal's EOF, as typed
                    source = None
                    pending += terminal.eof_keys(fd, self._pty_last)
            ev = events.get(fd, 0)
            if ev & select.POLLOUT and pending:
                try:
                    n = os.write(fd, pending[:4096])
                    self._pty_last = pending[n - 1:n] if n else self._pty_last
                    del pending[:n]
                except BlockingIOError:
                    pass
                except OSError:
                    pending.clear()
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno != errno_mod.EIO:
                        raise
                    chunk = b""
                if not chunk:  # EIO: no process holds the slave any more
                    self._pty_eof = True
                elif sink is not None:
                    if sink >= 0:
                        try:
                            terminal.write_all(sink, chunk)
                        except OSError:  # our output is gone: keep draining so the program is not stuck
                            sink = -1
                else:
                    self._pty_out.append(chunk)

    def _pty_output(self, text):
        data = b"".join(self._pty_out)
        if not text:
            return data
        # As subprocess's text mode: decoded, universal newlines (a terminal writes \r\n).
        return io.TextIOWrapper(io.BytesIO(data), encoding=self.encoding or terminal.locale_encoding(),
                                errors=self.errors or "strict").read()

    # subprocess calls this with its resolved pipe ends; -1 means "inherit".
    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, *rest):
        plan = self.plan
        if isinstance(args, (str, bytes)):
            args = [args]
        elif isinstance(args, os.PathLike):
            args = [args]
        else:
            args = list(args)
        self._shell = None
        if shell:
            # As subprocess: SHELL -c ARGS..., with the profile's shell (process.shell).
            args = [plan.shell, "-c"] + args
            if executable:
                args[0] = executable
            else:
                self._shell = plan.shell
        program = os.fspath(executable if executable is not None else args[0])
        argv = [os.fsencode(a) for a in args]
        environment = plan.environment() if self._env is None else self._env
        envp = _envp(environment)
        exec_paths = self._exec_paths(os.fsencode(program), environment, given=self._env is not None)
        stats: dict = {}
        src, dst = _fd_table(p2cread, c2pwrite, errwrite, self._pass, stats)
        cwd_b = os.fsencode(os.path.abspath(os.fspath(cwd))) if cwd is not None else os.fsencode(plan.cwd)
        try:
            if getattr(self, "_pty_late", False):
                self._start_on_pty(plan, exec_paths, argv, envp, cwd_b, self._pass)
            elif self._warm is not None:
                slot = self._warm._take()
                self._adopt(slot)
                self._child_created = True  # from here on, it is ours to reap
                if slot.ids is not None:
                    _give_pipes(src, slot.ids.id)
                slot.send_task(cwd_b if cwd is not None else b"", exec_paths, argv, envp, src, dst,
                               umask=self._umask)
                _await_start(slot.status_fd)
            else:
                self._adopt(launch(plan, exec_paths, argv, envp, cwd_b, src, dst,
                                   ctty=getattr(self, "_ctty", False), umask=self._umask,
                                   keep_ignored=self._keep_ignored, groups=self._groups,
                                   seccomp_log=self._seccomp_log, network=self._network_for_launch,
                                   hold_ns=True, src_stats=stats))
                self._child_created = True
        except BaseException as e:
            self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)
            if (self._warm is not None or getattr(self, "_pty_late", False)) and self._child_created:
                self.kill()  # a warm sandbox that will not run this task: kill it and reap it
                self.wait()
            elif self._network_for_launch is not None:
                self._network_for_launch.close()   # no sandbox will use it
            if isinstance(e, _launch.ChildError):
                err = _setup_error(e.args, plan, program, cwd_b, getattr(e, "cgroup_procs", ()))
                if self._shell is not None and isinstance(err, (ExecutableNotFound, ExecutablePermission)):
                    err.detail = "process.shell: the shell of shell=True is not usable in the sandbox's view"
                raise err from None
            raise
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)

    def _adopt(self, slot: "Launched") -> None:
        self.pid = slot.pid
        self._pidfd = slot.pidfd
        self._status_fd = slot.status_fd
        self._netns = slot.netns
        self._used_clone3 = slot.used_clone3
        self.timings = slot.timings
        self._cgroup = slot.cgroup
        self._ids = slot.ids
        self._network = slot.network
        self._mntns, slot.mntns = slot.mntns, -1

    def _release_netns(self, reusable: bool) -> None:
        fd, self._netns = getattr(self, "_netns", -1), -1
        if fd >= 0:
            net.pool().give_back(fd, reusable)

    @staticmethod
    def _exec_paths(program: bytes, environment: Mapping[str, str], given: bool = False) -> list:
        if b"/" in program:
            return [program]
        if given:  # env= given: its PATH, as subprocess (os.get_exec_path)
            dirs = os.get_exec_path(environment)
        else:
            dirs = (environment.get("PATH") or os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin").split(":")
        return [os.path.join(os.fsencode(d or "."), program) for d in dirs]

    @property
    def rusage(self) -> Rusage | None:
        """After wait: the CPU time and peak RSS of the sandbox (its pid 1 and all it reaped)."""
        return self._rusage

    def _try_wait(self, wait_flags):
        try:
            pid, sts, ru = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return (self.pid, 0)
        if pid == self.pid:
            self._rusage = Rusage.from_os(ru)
        return (pid, sts)

    def _handle_exitstatus(self, sts, *args, **kwargs):
        # With a pid 1 in the sandbox, the wait status is pid 1's; the program's own
        # arrives as a record on the status pipe just before pid 1 exits.
        if self._status_fd >= 0:
            sts = _program_status(self._status_fd, sts)
            self._status_fd = -1
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        mntns, self._mntns = getattr(self, "_mntns", -1), -1
        release_mntns(mntns)  # reaped: its mount namespace is torn down in the closing thread
        # pid 1 of a pid namespace is reaped only after every process in it: the
        # network namespace is then empty and may serve the next sandbox.
        self._release_netns(reusable=self.plan.pidns)
        self.duration = time.monotonic() - self._start
        # The sandbox has ended: what its cgroup saw, then the cgroup goes.
        group, self._cgroup = self._cgroup, None
        usage = group.finish() if group is not None else None
        # Reaped (and its cgroup emptied): its host id may serve the next sandbox.
        ids, self._ids = getattr(self, "_ids", None), None
        if ids is not None:
            ids.release()
        network = getattr(self, "_network", None)
        if network is not None:   # its refusals stay readable (violations)
            network.close()
        super()._handle_exitstatus(sts, *args, **kwargs)
        if usage is not None:
            self.cgroup_usage = usage
            self.memory_peak = usage.memory_peak
            if usage.oom_kills is not None:
                self.oom = usage.oom_kills > 0
            else:  # an old v1 kernel without oom_kill: the limit was hit and SIGKILL ended it
                self.oom = bool(usage.memory_failcnt) and self.returncode == -signal.SIGKILL
        if self._warm is not None:  # last: the pool's refill then no longer competes with us
            self._warm._task_done()

    @property
    def violations(self) -> list:
        """What the sandbox's network (launch(network=): a warm allowlist sandbox of
        isolate.netproxy) refused so far, as dicts; [] for any other sandbox."""
        network = getattr(self, "_network", None)
        return network.recorded() if network is not None else []

    def send_signal(self, sig):
        """Send `sig` to the sandbox: its pid 1 forwards it to the program."""
        self.poll()
        if self.returncode is not None or self._pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        """Kill the whole sandbox: pid 1 and with it every process in it."""
        self.poll()
        if self.returncode is not None or self._pidfd < 0:
            return
        if not self.plan.pidns:
            # No pid namespace: the tree is our child's process group (it called setsid).
            groups = [self.pid]
            if getattr(self, "_ctty", False) and self.plan.use_init:
                # With a terminal of its own the program has a session and group of its own.
                groups += _children(self.pid)
            for pgrp in groups:
                try:
                    os.killpg(pgrp, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self._cgroup is not None:  # and whatever left the group is still in the cgroup
            self._cgroup.kill()
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

@dataclasses.dataclass
class Launched:
    """A sandbox the launch path has started: its pid 1 (or program) and our handles on it."""

    pid: int
    pidfd: int
    status_fd: int        # records from pid 1 (MSG_*), or -1 without one
    netns: int            # pooled network namespace it holds, or -1
    used_clone3: bool
    timings: dict
    ctl: Any = None       # warm sandboxes: the socket their task arrives on
    cgroup: Any = None    # cgroup.Group it runs in (plans with [cgroup] limits), or None
    ids: Any = None       # hostids.Lease: the host uid/gid it runs as (plan.host_ids), or None
    network: Any = None   # the network namespace a layer above made for it (launch(network=)), or None
    cgroup_usage: Any = None  # after it was reaped (run()'s direct path): cgroup.Usage, or None
    mntns: int = -1       # launch(hold_ns=True): its mount namespace, for release_mntns once reaped

    def send_task(self, cwd: bytes, exec_paths, argv, envp, src, dst, umask: int = -1, quiet: bool = False,
                  keep_ctl: bool = False, prepared: tuple | None = None) -> None:
        """Hand a warm sandbox its one task: strings and the fd table, in one message.

        quiet=True (WarmPool.run's direct path): pid 1 is not woken at the exec; it reports
        the start with the end (one write: MSG_STARTED, MSG_RUSAGE, MSG_EXITED), then stays
        until it is killed (or its status pipe's reader is closed): the caller must kill it
        before reaping it. Otherwise pid 1 reports MSG_STARTED at the exec and exits after
        its report, as on a cold launch. keep_ctl=True leaves the socket open (self.ctl):
        whoever cleans the sandbox up closes it, off the task's path. prepared: what
        task_strings(cwd, exec_paths, argv, envp) returned for them (kept by the caller)."""
        head = struct.pack(f"=II{len(dst)}i", TASK_MAGIC, len(src), *dst)
        if umask < 0:  # pid 1 was started earlier, maybe from another thread: the caller's umask now
            umask = _caller_umask()
        nexec, nargv, nenv, strings = prepared if prepared is not None else task_strings(cwd, exec_paths, argv, envp)
        payload = head + struct.pack("=IIIiI", nexec, nargv, nenv, umask, TASK_QUIET if quiet else 0) + strings
        if len(payload) > TASK_MAX:
            raise ValueError(f"the task's argv and environment exceed {TASK_MAX} bytes")
        try:
            socket.send_fds(self.ctl, [payload], src)
        finally:
            if not keep_ctl:
                self.ctl.close()
                self.ctl = None


def task_strings(cwd: bytes, exec_paths, argv, envp) -> tuple:
    """The strings of a warm task's message (Launched.send_task) and their counts."""
    return len(exec_paths), len(argv), len(envp), b"".join(s + b"\0" for s in [cwd, *exec_paths, *argv, *envp])


TASK_MAGIC = 0x544F5349
TASK_QUIET = 1  # the task's flags (_init.c)
TASK_MAX = 1 << 20


def launch(plan: Plan, exec_paths, argv, envp, cwd: bytes, src, dst, warm: bool = False,
           ctty: bool = False, umask: int = -1, keep_ignored: bool = False, groups=None,
           seccomp_log: bool = False, network=None, early_seccomp: bool = False, hold_ns: bool = False,
           src_stats: dict | None = None, seccomp_notify: str | None = None) -> Launched:
    """One start of the launch path. With warm=True, pid 1 is set up and then waits for
    its task on fd 0 (a socket returned as Launched.ctl) instead of starting a program.
    With ctty=True, fd 0 (a fresh pty) becomes the controlling terminal of the program,
    in a session of its own, before its seccomp filter is installed.

    network: a network namespace made for this one sandbox by a layer above (an object
    with .fd, the namespace, .recorded(), what it refused, and .close()), joined instead
    of a new one; it becomes Launched.network, closed once the sandbox is reaped (the
    plan must ask for a network namespace of its own: network.mode = "none").

    hold_ns: Launched.mntns is a reference to the sandbox's mount namespace, taken
    right after the clone; whoever reaps the sandbox passes it to release_mntns()
    (its teardown then runs in a thread of the launch path, not before the reap).

    src_stats: {fd: os.fstat(fd)} of fds of `src` the caller has just looked at (run()'s
    direct path, the caller's own 0, 1, 2), not looked at again.

    seccomp_notify="denials" (or "denials+connect"): pid 1 loads plans.notify_bpf_fd's
    variant of the filter (isolate.kernel.seccomp_notify: its errno returns are
    SECCOMP_RET_USER_NOTIF; "+connect" also sends every connect()) with a listener the
    program inherits and must answer (isolate-agentd's notifier does). The plan must run
    under isolate-init and have a filter."""
    first_private = max(dst + [2]) + 1
    init_fd, self_pidfd = process_fds()
    # A fresh cgroup per launch; the launch path puts the child in before it runs anything.
    # (no limits: a cgroup only to hold the tree of a sandbox without a pid namespace)
    group = cgroup.create(plan.cgroup_mode, dict(plan.cgroup_dirs), plan.cgroup or {"pids_max": "max"}) \
        if plan.cgroup_mode in ("v1", "v2") else None
    # Without a pid namespace, pid 1 empties that cgroup itself when the caller dies.
    cgroup_fd = os.open(group.procs[0], os.O_RDONLY | os.O_CLOEXEC) \
        if group is not None and plan.use_init and not plan.pidns and plan.die_with_parent else -1
    init_argv: list = []
    bpf_fd = plan.bpf_fd
    if seccomp_notify is not None:
        if not plan.use_init or bpf_fd < 0:
            raise ValueError("seccomp_notify: the plan must have a seccomp filter and run under isolate-init")
        bpf_fd = plans.notify_bpf_fd(plan, seccomp_notify == "denials+connect")
    if plan.use_init:
        # The private fds follow the program's table at fixed slots (PRIV_* in _launch.c).
        pidfd_slot = first_private + 1 if plan.die_with_parent else -1
        bpf_slot = first_private + 2 if bpf_fd >= 0 else -1
        cgroup_slot = first_private + 3 if cgroup_fd >= 0 else -1
        flags = ((FLAG_PIDNS if plan.pidns else 0) | (FLAG_DIE_WITH_PARENT if plan.die_with_parent else 0)
                 | (FLAG_WARM if warm else 0) | (FLAG_CTTY if ctty else 0)
                 | (FLAG_SECCOMP_LOG if seccomp_log else 0) | (FLAG_SECCOMP_EARLY if early_seccomp and warm else 0)
                 | (FLAG_SECCOMP_NOTIFY if seccomp_notify is not None else 0))
        init_argv = [b"isolate-init", b"%d" % first_private, b"%d" % pidfd_slot, b"%d" % bpf_slot, b"%d" % flags,
                     b"%d" % first_private, b"%d" % cgroup_slot, b"%d" % len(exec_paths), *exec_paths, *argv]
    if network is not None and plan.network_mode != "none":
        raise ValueError("network=: the plan must ask for a network namespace of its own (network.mode = \"none\")")
    pool = net.pool() if plan.netns_pool and network is None else None
    netns = pool.take() if pool is not None else -1
    lease, trees, moves = None, None, []
    view = plan.view_capsule is not None  # the template is the view: the child makes only its own mounts
    try:
        args = (plan.view_capsule if view else plan.capsule, exec_paths, argv, envp, cwd, src, dst, init_fd,
                init_argv, first_private, self_pidfd if plan.die_with_parent else -1, bpf_fd,
                netns if network is None else network.fd, group.procs if group is not None else None, cgroup_fd,
                plan.mntns_fd)
        if plan.host_ids:
            # A host uid/gid of its own for this sandbox, and its binds as trees idmapped to it.
            lease = hostids.allocate()
            trees = mounts.detached_trees(plan, hostids.userns_fd(lease.id))
            _give_pipes(src, lease.id, src_stats)
            args += (b"%d %d 1\n" % (plan.inside_uid, lease.id), b"%d %d 1\n" % (plan.inside_gid, lease.id),
                     plan.inside_uid, plan.inside_gid, [trees[i] for i in plan.view_index] if view else trees)
        else:
            args += (None, None, -1, -1, None)
        moves = cgroup.thread_moves(group) if group is not None else []
        args += (bool(ctty), int(umask), bool(keep_ignored),
                 None if groups is None else struct.pack(f"={len(groups)}I", *groups), moves or None, hold_ns)
        # (With a template mount namespace, spawn joins it in a short-lived thread of its
        # own, which copies this thread's fs_struct: the caller's umask, as subprocess.)
        if hold_ns:
            pid, pidfd, status_fd, timings, used_clone3, mntns = _launch.spawn(*args)
        else:
            (pid, pidfd, status_fd, timings, used_clone3), mntns = _launch.spawn(*args), -1
    except BaseException as e:
        if netns >= 0:
            pool.give_back(netns, reusable=False)
        if view and isinstance(e, _launch.ChildError) and e.args[0] == "mount" and \
                0 <= e.args[1] < len(plan.view_index):
            e.args = (e.args[0], plan.view_index[e.args[1]], *e.args[2:])  # the view op it comes from
        if group is not None:
            if isinstance(e, _launch.ChildError):
                e.cgroup_procs = group.procs
            group.destroy()
        if lease is not None:
            lease.release()  # spawn reaped the child of a failed setup
        raise
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
        for new, own in moves:  # both tasks files: the sandbox cgroup's and this thread's own
            os.close(new)
            os.close(own)
        for fd in trees or ():
            if fd >= 0:
                os.close(fd)  # attached in the child (or unused): our copies go
    return Launched(pid, pidfd, status_fd, netns, bool(used_clone3), _phases(timings), cgroup=group, ids=lease,
                    network=network, mntns=mntns)


def wait_teardowns() -> None:
    """Return once the mount namespaces of every sandbox reaped so far are torn down (the
    launch path's closing thread has closed them): for a caller that, right after run(),
    needs a filesystem a sandbox bound to be unused (a loop device to detach, say)."""
    _launch.drain_deferred()


def release_mntns(fd: int) -> None:
    """Drop a reference launch(hold_ns=True) took to a reaped sandbox's mount namespace:
    its teardown (every mount of the view unmounted, an RCU grace period) happens in the
    launch path's closing thread, off the caller's path (see docs/launch-path.md)."""
    if fd >= 0:
        _launch.defer_close(fd)


def _program_status(status_fd: int, sts: int) -> int:
    """The program's wait status from pid 1's records on the status pipe (read to EOF:
    pid 1 has exited), else `sts` (pid 1's own); the pipe is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(status_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(status_fd)
    data = b"".join(chunks)
    exited = [_MSG.unpack_from(data, off)[1] for off in range(0, len(data) - _MSG.size + 1, _MSG.size)
              if _MSG.unpack_from(data, off)[0] == _launch.MSG_EXITED]
    return exited[0] if len(exited) == 1 else sts  # pid 1 reports once; anything else is not its word


def _caller_umask() -> int:
    """This thread's umask, read without changing it (os.umask would, for a moment)."""
    try:
        fd = os.open("/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # Umask is on the 2nd line
        finally:
            os.close(fd)
        i = data.index(b"\nUmask:") + 7
        return int(data[i:data.index(b"\n", i)], 8)
    except (OSError, ValueError):
        pass
    return -1


_pipefs_dev = None


def _give_pipes(fds, id_: int, stats: dict | None = None) -> None:
    """Anonymous pipes of the program's fd table become owned by its host id.

    A pipe's inode belongs to its creator (root, mode 0600); the program, another id now,
    could not reopen it through /proc/self/fd (`echo > /dev/stdout`). Pipes only: files
    and terminals are host inodes, never changed."""
    global _pipefs_dev
    if _pipefs_dev is None:
        r, w = os.pipe()
        _pipefs_dev = os.fstat(r).st_dev
        os.close(r)
        os.close(w)
    for fd in fds:
        try:
            st = stats.get(fd) if stats else None
            if st is None:
                st = os.fstat(fd)
            if stat.S_ISFIFO(st.st_mode) and st.st_dev == _pipefs_dev and st.st_uid != id_:
                os.fchown(fd, id_, id_)
        except OSError:
            pass


def launch_waiting(plan: Plan, cwd: bytes, **kw) -> Launched:
    """A sandbox whose pid 1 is set up and waits for its one task (Launched.send_task), on a
    socket that is its fd 0 (Launched.ctl); its 1 and 2 are /dev/null until then."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        slot = launch(plan, [], [], [], cwd, [theirs.fileno(), devnull, devnull], [0, 1, 2], warm=True, **kw)
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
        os.close(devnull)
    slot.ctl = mine
    return slot


def _await_start(status_fd: int) -> None:
    """Wait for a warm pid 1 to report that its program started (or why not)."""
    data = os.read(status_fd, _MSG.size)
    if len(data) < _MSG.size:
        raise _launch.ChildError("init", 0, errno_mod.ECHILD, 1)
    kind, a, b, c, _t = _MSG.unpack(data)
    if kind == _launch.MSG_ERROR:
        names = {v: k for k, v in STEP_NUMBERS.items()}
        raise _launch.ChildError(names.get(a, "init"), b, c, 1)


# Mirrors enum isolate_step in _protocol.h (for records that come from pid 1).
STEP_NUMBERS = {"init": 19, "exec": 17, "seccomp": 16, "landlock": 22, "chdir": 9, "fds": 7, "setsid": 3}


def _fd_table(p2cread: int, c2pwrite: int, errwrite: int, passed, stats: dict | None = None) -> tuple[list, list]:
    """The program's fd table: 0, 1, 2 (-1 = the caller's own) and the passed fds at their numbers.
    stats: filled with fd -> os.stat_result of the caller's own 0, 1, 2 found open (for launch())."""
    src, dst = [], []
    for target, fd in ((0, p2cread), (1, c2pwrite), (2, errwrite)):
        if fd == -1:
            fd = target
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stats is not None:
                stats[fd] = st
        src.append(fd)
        dst.append(target)
    for fd in passed:
        if fd < 3:
            raise ValueError(f"pass_fds: {fd} is a standard stream; use stdin/stdout/stderr")
        if not _fd_open(fd):
            raise SandboxSetupError("fds", errno_mod.EBADF, "pass_fds: not an open fd in the caller", str(fd))
        src.append(fd)
        dst.append(fd)
    return src, dst


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _envp(environment: Mapping[str, str]) -> list:
    out = []
    for k, v in environment.items():
        k = os.fsencode(k)
        if b"\0" in k:
            raise ValueError(f"embedded null byte in the environment variable name {k!r}")
        if not k or b"=" in k:
            raise ValueError(f"illegal environment variable name {k!r}")
        v = os.fsencode(v)
        if b"\0" in v:
            raise ValueError(f"embedded null byte in the value of environment variable {os.fsdecode(k)!r}")
        out.append(k + b"=" + v)
    return out


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _phases(raw) -> dict:
    """Raw CLOCK_MONOTONIC stamps from the launch -> milliseconds since it began."""
    if not raw:
        return {}
    t0 = raw[0][1]
    return {name: (t - t0) / 1e6 for name, t in raw}


def _setup_error(args, plan: Plan, program: str, cwd: bytes, cgroup_procs=()) -> SandboxSetupError:
    step, index, err, _used_clone3 = args
    if step == "cgroup":
        path = os.fsdecode(cgroup_procs[index]) if 0 <= index < len(cgroup_procs) else None
        return SandboxSetupError("cgroup", err, "putting the sandbox into its cgroup", path)
    if step == "exec":
        cls = ExecutableNotFound if err == errno_mod.ENOENT else (
            ExecutablePermission if err == errno_mod.EACCES else SandboxSetupError)
        return cls("exec", err, "cannot run the program in the sandbox", program)
    if step == "chdir":
        if err == errno_mod.ENOENT:
            return WorkingDirectoryNotFound(os.fsdecode(cwd))
        cls = {errno_mod.ENOTDIR: WorkingDirectoryNotADirectory, errno_mod.EACCES: WorkingDirectoryPermission}.get(
            err, SandboxSetupError)
        return cls("chdir", err, "working directory", os.fsdecode(cwd))
    if step == "rlimit":
        name = RLIMIT_NAMES.get(index, str(index))
        return SandboxSetupError("rlimit", err, f"rlimits.{name}", None)
    if step == "mount" and 0 <= index < len(plan.mount_ops):
        op = plan.mount_ops[index]
        return SandboxSetupError("mount", err, f"{op.source}: {op.describe()}", op.b)
    if step == "landlock" and 0 <= index < len(plan.landlock_rules):
        path = os.fsdecode(plan.landlock_rules[index][0])
        host_uid = plan.inside_uid
        for line in (plan.uid_map or "").splitlines():  # inside outside count
            inside, outside, count = map(int, line.split())
            if inside <= plan.inside_uid < inside + count:
                host_uid = outside + plan.inside_uid - inside
        who = f" (the program runs as host uid {host_uid})" if err == errno_mod.EACCES else ""
        return SandboxSetupError("landlock", err, f"adding the Landlock rule for this path{who}", path)
    if step == "fds":
        return SandboxSetupError("fds", err, f"fd {index}", None)
    if step == "setsid" and index == 1:
        return SandboxSetupError("setsid", err, "making the sandbox's pty its controlling terminal (TIOCSCTTY)",
                                 None)
    if step == "setgroups" and index == 2:
        return SandboxSetupError("setgroups", err, "setting the supplementary groups of extra_groups=", None)
    if step == "id_maps":
        return SandboxSetupError("id_maps", err, "writing uid_map/gid_map", None)
    if step == "clone":
        return SandboxSetupError("clone", err, "creating the sandbox's namespaces", None)
    return SandboxSetupError(step, err, None, None)


def run(*popenargs, input=None, capture_output: bool = False, timeout: float | None = None, check: bool = False,
        on_timeout: str = "raise", profile: Any = "default", overrides: Sequence[str] = (), cwd=None, warm=None,
        pty: bool | None = None, pty_size: Sequence[int] | None = None, user=None, group=None, extra_groups=None,
        stdin=FROM_PROFILE, stdout=FROM_PROFILE, stderr=FROM_PROFILE, **kwargs) -> Result:
    """Run a command in a sandbox and wait for it, like subprocess.run; returns a Result
    (compatible with subprocess.CompletedProcess: args, returncode, stdout, stderr,
    check_returncode). Popen's arguments, positional ones included, pass through.

    check=True raises CalledProcessError on a non-zero returncode. A timeout kills the
    whole sandbox; then, as subprocess, TimeoutExpired is raised (with the output that
    came before it, and the Result as its `result` attribute, timed_out=True) unless
    on_timeout="result": then the Result is returned with timed_out=True, no exception.

    With a pty (pty=True or fds.pty; see Popen), `input` is typed on the sandbox's
    terminal, and what the program writes to it is Result.stdout with capture_output
    (stderr is None: it is the same terminal), else copied to the caller's fd 1.
    """
    _check_timeout(timeout)
    if on_timeout not in ("raise", "result"):
        raise ValueError(f'on_timeout: expected "raise" (as subprocess) or "result", got {on_timeout!r}')
    if not popenargs and "args" not in kwargs:
        raise TypeError("run() missing the command (args)")
    args = popenargs[0] if popenargs else kwargs["args"]
    if cwd is not None:
        no_nul(cwd, "cwd")
    if warm is not None:
        plan = warm.plan
    else:
        plan = popen_args.plan_with_identity(profile, overrides, cwd, user, group, extra_groups)
    kwargs.update(cwd=cwd, warm=warm, user=user, group=group, extra_groups=extra_groups)
    if plan.pty if pty is None else pty:
        return _run_pty(popenargs, args, plan, input=input, timeout=timeout, capture_output=capture_output,
                        stdin=stdin, stdout=stdout, stderr=stderr, check=check, on_timeout=on_timeout,
                        pty_size=pty_size, **kwargs)
    if input is not None:
        if stdin not in (FROM_PROFILE, None):
            raise ValueError("stdin and input arguments may not both be used.")
        stdin = PIPE
    if capture_output:
        if stdout not in (FROM_PROFILE, None) or stderr not in (FROM_PROFILE, None):
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = PIPE
    if _direct_ok(popenargs, kwargs, input, (stdin, stdout, stderr)):
        return _run_direct(args, plan, input, (stdin, stdout, stderr), kwargs.get("env"), kwargs["cwd"], timeout,
                           check, on_timeout)
    timed_out = False
    with Popen(*popenargs, profile=plan, stdin=stdin, stdout=stdout, stderr=stderr, pty=False, **kwargs) as p:
        try:
            out, err = p.communicate(input, timeout=timeout)
        except TimeoutExpired:
            timed_out = True
            p.kill()
            out, err = p.communicate()
        except BaseException:
            p.kill()
            raise
    return _result(args, p, out, err, timed_out, check, on_timeout, timeout)


# ---- run() without subprocess.Popen ------------------------------------------------------
# The arguments the direct path takes; anything else (text mode, shell, executable,
# pass_fds, user/group, a WarmPool, positional Popen arguments...) goes through Popen.
_DIRECT_KWARGS = frozenset({"env", "cwd", "warm", "user", "group", "extra_groups"})
_DIRECT_STD = (None, PIPE, DEVNULL)


def _direct_ok(popenargs, kwargs, input, std) -> bool:
    if len(popenargs) != 1 or not _DIRECT_KWARGS.issuperset(kwargs):
        return False
    if kwargs.get("warm") is not None or kwargs.get("user") is not None or kwargs.get("group") is not None \
            or kwargs.get("extra_groups") is not None:
        return False
    if input is not None and not isinstance(input, (bytes, bytearray, memoryview)):
        return False  # str input (text mode) and the odd types: Popen says what is wrong
    return all(v is FROM_PROFILE or any(v is d for d in _DIRECT_STD) for v in std)


def _run_direct(args, plan: Plan, input, std, env, cwd, timeout, check: bool, on_timeout: str) -> Result:
    """run() as Popen + communicate + wait would do it, in one function: the same checks,
    the same launch(), the same kill of the whole sandbox, the same Result and errors."""
    start = time.monotonic()
    argl = popen_args.check_call_args(args, False, None, None, env, -1)
    program = os.fspath(argl[0])
    argv = [os.fsencode(a) for a in argl]
    fixed = _fixed(plan) if env is None else None
    if fixed is not None:
        envp, exec_paths = fixed.envp, fixed.exec_paths(argv[0])
    else:
        environment = plan.environment() if env is None else env
        envp = _envp(environment)
        exec_paths = Popen._exec_paths(os.fsencode(program), environment, given=env is not None)
    cwd_b = os.fsencode(os.path.abspath(os.fspath(cwd))) if cwd is not None else \
        (fixed.cwd if fixed is not None else os.fsencode(plan.cwd))
    child = [-1, -1, -1]   # the program's 0, 1, 2 (-1: the caller's own)
    ours = [-1, -1, -1]    # our end of a pipe to it
    opened: list = []      # closed once the launch has its copies
    try:
        for i, v in enumerate(std):
            if v is FROM_PROFILE:
                v = _stdio_from_profile(plan.stdio[i], i, opened)
            if v is None:
                continue
            if v == PIPE:
                r, w = os.pipe()
                (child[i], ours[i]) = (r, w) if i == 0 else (w, r)
                opened.append(child[i])
            elif v == DEVNULL:
                child[i] = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                opened.append(child[i])
            else:
                child[i] = v   # a file of the profile's [fds] (in opened)
        stats: dict = {}
        src, dst = _fd_table(child[0], child[1], child[2],
                             fixed.pass_fds if fixed is not None else tuple(sorted(set(plan.pass_fds))), stats)
        try:
            slot = launch(plan, exec_paths, argv, envp, cwd_b, src, dst, hold_ns=True, src_stats=stats)
        except _launch.ChildError as e:
            raise _setup_error(e.args, plan, program, cwd_b, getattr(e, "cgroup_procs", ())) from None
    except BaseException:
        for fd in ours:
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in opened:
            os.close(fd)
    deadline = None if timeout is None else start + timeout
    outs: dict = {fd: [] for fd in ours[1:] if fd >= 0}
    timed_out = False
    stdin_fd, ours[0] = ours[0], -1  # _direct_io closes it (once: its number may be reused at once)
    try:
        try:
            timed_out = not _direct_io(stdin_fd, outs, input, deadline)
            if not timed_out:
                timed_out = not _direct_wait(slot, deadline)
        except BaseException:
            _kill_slot(slot, plan.pidns)
            raise
        if timed_out:
            _kill_slot(slot, plan.pidns)
            _direct_io(-1, outs, None, None)  # what it wrote before it was killed, to EOF
    finally:
        for fd in ours:
            if fd >= 0:
                os.close(fd)
        sts, ru = _reap(slot, plan)
    out = b"".join(outs[ours[1]]) if ours[1] >= 0 else None
    err = b"".join(outs[ours[2]]) if ours[2] >= 0 else None
    returncode = os.waitstatus_to_exitcode(sts)
    usage = slot.cgroup_usage
    oom, peak = False, None
    if usage is not None:
        peak = usage.memory_peak
        oom = usage.oom_kills > 0 if usage.oom_kills is not None else \
            bool(usage.memory_failcnt) and returncode == -signal.SIGKILL
    result = Result(args=args, returncode=returncode, stdout=out, stderr=err, timed_out=timed_out,
                    duration=time.monotonic() - start, rusage=Rusage.from_os(ru) if ru is not None else None,
                    timings=slot.timings, oom=oom, memory_peak=peak)
    if timed_out and on_timeout == "raise":
        exc = TimeoutExpired(args, timeout, output=out, stderr=err)
        exc.result = result
        raise exc
    if check and not timed_out:
        result.check_returncode()
    return result


class _Fixed:
    """What run()'s direct path derives from a Plan alone (env= not given): the program's
    environment as bytes, the working directory, the passed fds, and exec paths per
    argv[0]. A Plan is immutable; its environment depends on the caller's only through
    env.keep, so the entry is made again when one of the kept variables changed (a Plan
    whose env.keep has a pattern, or keeps the caller's whole environment, has none)."""

    __slots__ = ("plan", "kept", "envp", "path", "cwd", "pass_fds", "_paths")

    def __init__(self, plan: Plan, kept: tuple):
        self.plan = weakref.ref(plan)  # not kept alive by this entry (an evicted Plan closes its fds)
        self.kept = kept
        # (from the values looked at, not os.environ again: the entry is what `kept` says)
        environment = plan.environment({n: v for n, v in zip(plan.env_keep, kept) if v is not None})
        self.envp = _envp(environment)
        self.path = environment.get("PATH")
        self.cwd = os.fsencode(plan.cwd)
        self.pass_fds = tuple(sorted(set(plan.pass_fds)))
        self._paths: dict = {}

    def exec_paths(self, program: bytes) -> list:
        if b"/" in program:
            return [program]
        if not self.path:  # no PATH in the program's environment: the caller's is searched, as before
            return Popen._exec_paths(program, {})
        paths = self._paths.get(program)
        if paths is None:
            paths = Popen._exec_paths(program, {"PATH": self.path})
            if len(self._paths) < 64:
                self._paths[program] = paths
        return list(paths)


_fixed_cache: dict = {}   # id(plan) -> _Fixed
FIXED_MAX = 64


def _fixed(plan: Plan) -> _Fixed | None:
    """The plan's _Fixed for the caller's environment now, or None (env.keep has a pattern
    or env.clear = false: the environment is built for each launch, as before)."""
    keep = plan.env_keep
    if not plan.env_clear or any(c in p for p in keep for c in "*?["):
        return None
    environ = os.environ
    kept = tuple(environ.get(name) for name in keep) if keep else ()
    entry = _fixed_cache.get(id(plan))
    if entry is None or entry.plan() is not plan or entry.kept != kept:
        entry = _Fixed(plan, kept)
        if len(_fixed_cache) >= FIXED_MAX:
            _fixed_cache.clear()
        _fixed_cache[id(plan)] = entry
    return entry


def _direct_io(stdin_fd: int, outs: dict, input, deadline) -> bool:
    """Write `input` to stdin_fd (then close it), read every fd of `outs` to EOF; False
    if the deadline came first. As communicate(): a program that stops reading its
    input (EPIPE) is no error."""
    pending = memoryview(input).cast("B") if input is not None and stdin_fd >= 0 else None
    if stdin_fd >= 0 and not pending:
        os.close(stdin_fd)
        stdin_fd = -1
    if stdin_fd >= 0:
        os.set_blocking(stdin_fd, False)
    open_fds = {fd for fd in outs}
    try:
        while open_fds or stdin_fd >= 0:
            if len(open_fds) == 1 and stdin_fd < 0 and deadline is None:
                fd = next(iter(open_fds))  # one pipe, no deadline: plain blocking reads
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    outs[fd].append(chunk)
                return True
            p = select.poll()
            for fd in open_fds:
                p.register(fd, select.POLLIN)
            if stdin_fd >= 0:
                p.register(stdin_fd, select.POLLOUT)
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return False
            for fd, ev in p.poll(None if wait is None else wait * 1000):
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[:65536])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = None
                    if not pending:
                        os.close(stdin_fd)
                        stdin_fd = -1
                else:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        outs[fd].append(chunk)
                    else:
                        open_fds.discard(fd)
        return True
    finally:
        if stdin_fd >= 0:
            os.close(stdin_fd)


def _direct_wait(slot: "Launched", deadline) -> bool:
    """Block until pid 1 (or the program) has ended; False if the deadline came first."""
    if deadline is None:
        return True  # _reap blocks
    p = select.poll()
    p.register(slot.pidfd, select.POLLIN)
    while True:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return False
        if p.poll(wait * 1000):
            return True


def _kill_slot(slot: "Launched", pidns: bool) -> None:
    """Popen.kill() of a sandbox that nobody has reaped yet: the whole tree."""
    if not pidns:
        try:
            os.killpg(slot.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if slot.cgroup is not None:
        slot.cgroup.kill()
    try:
        signal.pidfd_send_signal(slot.pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(slot: "Launched", plan: Plan):
    """wait4 for pid 1, then what Popen does once its sandbox was reaped: the program's own
    status, the network namespace back to the pool, the cgroup's usage, the host id free."""
    ru = None
    try:
        pid, sts, ru = os.wait4(slot.pid, 0)
    except ChildProcessError:
        sts = 0
    if slot.mntns >= 0:  # pid 1 is gone: ours is the last reference, dropped in the closing thread
        release_mntns(slot.mntns)
        slot.mntns = -1
    if slot.status_fd >= 0:
        sts = _program_status(slot.status_fd, sts)
        slot.status_fd = -1
    os.close(slot.pidfd)
    if slot.netns >= 0:
        net.pool().give_back(slot.netns, reusable=plan.pidns)  # as Popen: empty once pid 1 is reaped
        slot.netns = -1
    group, slot.cgroup = slot.cgroup, None
    slot.cgroup_usage = group.finish(pids=False) if group is not None else None  # Result reports memory only
    if slot.ids is not None:
        slot.ids.release()
    return sts, ru


def _result(args, p: Popen, out, err, timed_out: bool, check: bool, on_timeout: str = "result",
            timeout=None) -> Result:
    result = Result(args=args, returncode=p.returncode,
                    stdout=out, stderr=err, timed_out=timed_out, duration=getattr(p, "duration", 0.0),
                    rusage=p._rusage, timings=p.timings, oom=p.oom, memory_peak=p.memory_peak,
                    violations=tuple(p.violations))
    if timed_out and on_timeout == "raise":
        exc = TimeoutExpired(p.args, timeout, output=out, stderr=err)
        exc.result = result
        raise exc
    if check and not timed_out:
        result.check_returncode()
    return result


def _run_pty(popenargs, args, plan: Plan, *, input, timeout, capture_output, stdin, stdout, stderr, check,
             on_timeout, pty_size, **kwargs) -> Result:
    """run() with the sandbox's own terminal: input typed on it, its output captured or copied to fd 1."""
    for name, v in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        if v is not FROM_PROFILE:
            raise ValueError(f"pty: {name} is the sandbox's terminal; {name}= cannot be given with a pty")
    timed_out = False
    sink = None if capture_output else 1
    with Popen(*popenargs, profile=plan, pty=True, pty_size=pty_size, **kwargs) as p:
        try:
            out = p._pty_communicate(input, timeout, sink=sink)
        except TimeoutExpired:
            timed_out = True
            p.kill()
            out = p._pty_communicate(None, None, sink=sink)
        except BaseException:
            p.kill()
            raise
    return _result(args, p, out, None, timed_out, check, on_timeout, timeout)


# The pieces of a launch that WarmPool.run's direct path (warm.py) shares with Popen.
MSG = _MSG
check_timeout = _check_timeout
stdio_from_profile = _stdio_from_profile
exec_paths = Popen._exec_paths
fixed_for = _fixed  # env= not given: the plan's environment and exec paths, kept (shared with run())
environment_list = _envp
fd_table = _fd_table
give_pipes = _give_pipes
setup_error = _setup_error
kill_slot = _kill_slot
# isolate.agent's Session: a sandbox it holds without subprocess.Popen.
reap_slot = _reap
ChildError = _launch.ChildError   # a failed setup step, before setup_error() names it
