"""isolate.Session: one sandbox that lives across many commands.

The sandbox's program is `isolate-agentd` (pid 2, under isolate-init), a small static
C program that starts the session's processes when asked over a socket (fd 0) and
reports when they end. Closing that socket (close(), or the caller dying: then
isolate-init kills the sandbox itself) ends agentd, and isolate-init then takes every
other process of the sandbox with it.

Commands:
- an argv list is started by agentd directly (fork + execvpe, in a session and
  process group of its own), with fresh pipes for its stdin, stdout and stderr;
- a string is run by the session's persistent shell (bash, else sh), so that cd,
  export, functions and variables persist. For each command the caller makes fresh
  pipes and a memfd holding the command's text and hands them to agentd, which holds
  them at fixed fd numbers; the shell then runs
      . /proc/$PPID/fd/S </proc/$PPID/fd/I >/proc/$PPID/fd/O 2>/proc/$PPID/fd/E
  and reports, on its own stdout (a pipe only the caller reads), the exit status, its
  $PWD and `export -p`: stdout and stderr of each command are its own, never mixed
  with the next command's.

Timeouts: `timeout` is hard. When it expires, every process of the sandbox that did
not exist when the command started (and is not another job's or shell's) is killed,
found from the host through /proc/PID/task/*/children, so a tree that detached into
a session of its own dies too. If the shell itself is busy (a builtin loop: `while :;
do :; done`) it does not report within a grace period; it is then killed and a new
shell is started with the working directory and exported variables the old one
reported after its last command (functions and unexported variables are lost; the
result says so: `shell_restarted`). `yield_after` is soft: `exec` returns with
`running=True` and a Job; the command goes on. The shell it runs in stays with the
job; the next string command gets a new shell restored in the same way.
"""

from __future__ import annotations

import codecs
import errno
import itertools
import os
import select
import shlex
import signal
import socket
import struct
import threading
import time
import weakref
from typing import Any, Callable, Mapping, Sequence

from ..errors import ProfileError
from ..launch import plans
from ..launch.plans import plan_for
from ..plan.plan import Plan, check_nofile
from ..profile.cache import load_profile
from ..launch.process import ChildError, environment_list, fd_table, kill_slot, launch, reap_slot, setup_error
from .. import netproxy
from . import output as output_mod
from .errors import JobNotFound, SessionClosed, SessionError
from .files import DEFAULT_READ_MAX, Files, SessionPathError, openat2
from .jobs import Drainer, Run
from .overlay import Overlay
from .procs import Proc, Shell
from .protocol import (A_KILL, A_RUN, A_SHELL, AGENTD, MAX_SLOTS, MSG, R_DENIED, R_EXIT, R_HELLO, R_NET, R_STARTED,
                       KILL_GRACE, RUN_SHELL, START_TIMEOUT, check_env, check_seconds, close_fd)
from .pty import start_pty
from .results import ExecResult, Truncated  # Truncated: re-exported, importable from here as before
from . import denials
from . import violations as viol
from .violations import RULE_LABELS, network_event, reader, same_event, syscall_name


_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


def _tree(root: int) -> list:
    """Host pids of `root` and all its descendants (from /proc, as the host sees them)."""
    out, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    todo.extend(int(x) for x in f.read().split())
            except (OSError, ValueError):
                pass
    return out


def _inside_pid(host_pid: int) -> int | None:
    try:
        with open(f"/proc/{host_pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


_start_cache: dict = {}   # id(plan) -> (weakref to the plan, at, argv without "net", argv with it, cwd)


def _start_args(plan, net: bool, notify: bool) -> tuple:
    """What a session's launch derives from its Plan alone (immutable), made once per plan:
    the fd number of agentd's binary (the first above the profile's passed fds, checked
    against rlimits.nofile as Popen(pass_fds=) would), agentd's argv, the working directory,
    and in notify mode (denials.py) the fd of the filter's program (the next number; None
    where rlimits.nofile leaves no room for it: the session then runs without notify)."""
    entry = _start_cache.get(id(plan))
    if entry is None or entry[0]() is not plan:
        at = max((2,) + tuple(plan.pass_fds)) + 1
        check_nofile(plan, tuple(plan.pass_fds) + (at,), file=plan.profile_name,
                     what=f" with agentd's fd {at} (a session)")
        try:
            check_nofile(plan, tuple(plan.pass_fds) + (at, at + 1))
            bpf_at = at + 1
        except ProfileError:
            bpf_at = None
        argv = [b"/proc/self/fd/%d" % at, b"%d" % at]
        if len(_start_cache) >= 64:
            _start_cache.clear()
        entry = _start_cache[id(plan)] = (weakref.ref(plan), at, argv, os.fsencode(plan.cwd), bpf_at)
    _ref, at, argv, cwd, bpf_at = entry
    if notify and bpf_at is not None:
        return at, argv + [b"notify:%d:%d" % (bpf_at, 1 if net else 0)], cwd, bpf_at
    return at, argv + [b"net"] if net else list(argv), cwd, None


class _Sandbox:
    """The session's sandbox as launched (process.launch, no subprocess.Popen around it):
    pid, poll(), wait(timeout), kill() as Popen's, and what Popen does once it is reaped
    (process.reap_slot: the program's status, the cgroup, the host id, the namespaces)."""

    def __init__(self, slot, plan):
        self.slot, self.plan, self.pid = slot, plan, slot.pid
        self.returncode = None
        self._lock = threading.Lock()
        self._poller = select.poll()   # pid 1's pidfd: readable once it has exited
        self._poller.register(slot.pidfd, select.POLLIN)

    def _ended(self, timeout: float) -> bool:
        """pid 1 has exited (or was reaped) within `timeout` seconds. The pidfd is polled
        under the lock (a reap in another thread closes it), at most 50 ms at a time."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.returncode is not None or self.slot.pidfd < 0:
                    return True
                left = deadline - time.monotonic()
                if self._poller.poll(max(0.0, min(left, 0.05)) * 1000):
                    return True
            if left <= 0.05:
                return False

    def _reap(self) -> None:
        with self._lock:
            if self.returncode is None:
                sts, _ru = reap_slot(self.slot, self.plan)
                self.slot.pidfd = -1   # (closed by reap_slot)
                self.returncode = os.waitstatus_to_exitcode(sts)

    def poll(self):
        if self.returncode is None:
            with self._lock:   # (every check_open of the session asks: one poll(2), no more)
                ended = self.slot.pidfd < 0 or bool(self._poller.poll(0))
            if ended:
                self._reap()
        return self.returncode

    def wait(self, timeout: float):
        if self.returncode is None:
            if not self._ended(timeout):
                raise TimeoutError(f"the session's sandbox (pid {self.pid}) did not end within {timeout} s")
            self._reap()
        return self.returncode

    def kill(self) -> None:
        with self._lock:
            if self.returncode is None and self.slot.pidfd >= 0:
                kill_slot(self.slot, self.plan.pidns)


class Session:
    """One sandbox from `profile`, serving many commands until close().

        with isolate.Session("agent") as s:
            s.exec("cd /tmp && export A=1")
            r = s.exec("pwd; echo $A")          # /tmp, 1
            r = s.exec(["ls", "-l"], timeout=5)

    ttl: seconds after which the session closes itself; idle_timeout: seconds without a
    call after which it does. The sandbox ends with the caller process too.
    workspace=DIR makes DIR the profile's {cwd} (the shipped `agent` profile binds it
    read-write at the same path and starts there); overlay=True mounts it as an
    overlay instead (see changes/apply/discard).
    """

    def __init__(self, profile: Any = "agent", *, overrides: Sequence[str] = (), workspace=None,
                 overlay: bool = False, env: Mapping[str, str] | None = None, ttl: float | None = None,
                 idle_timeout: float | None = None, max_output: int | None = None, shell: str | None = None,
                 violations: bool = True, _plan=None):
        self._ttl = check_seconds(ttl, "ttl")
        self._idle = check_seconds(idle_timeout, "idle_timeout")
        self._max_output = output_mod.check_max_output(max_output)
        if env is not None:
            check_env(env)
        self._closed = False
        self._torn_down = threading.Event()
        self._seccomp_log = bool(violations)
        self._watch_net = bool(violations)
        self._net_events: list = []           # agentd's reports: connect() watched, R_DENIED
        self._events_dropped = 0              # reports beyond MAX_EVENTS (counted, not kept)
        self._merge_floor = 0                 # a report merges only into one at or above this
        self._notify = False                  # the filter's refusals come from agentd (denials.py)
        self._close_reason = "closed"
        self._lock = threading.RLock()        # session state
        self._send_lock = threading.Lock()    # the control socket
        self._shell_lock = threading.Lock()   # one string command at a time per shell
        self._ids = itertools.count(1)
        self._procs: dict = {}                # agentd id -> Proc
        self._jobs: dict = {}                 # job id -> Job
        self._job_ids = itertools.count(1)
        self._shell: Shell | None = None
        self._shells: list = []
        self._all_shells: list = []          # retired ones too, until their eventfd is closed
        self._slots = set(range(MAX_SLOTS))
        self._pwd: str | None = None
        self._exports: bytes | None = None
        self._exports_env: dict | None = None
        self._functions: bytes = b""
        self._last_used = time.monotonic()
        self._drainer = None
        self._overlay = None
        self.workspace = os.path.abspath(os.fspath(workspace)) if workspace is not None else None
        if overlay and workspace is None:
            raise ValueError("overlay=True needs workspace=DIR")
        if self.workspace is not None and not os.path.isdir(self.workspace):
            raise FileNotFoundError(errno.ENOENT, "workspace: not a directory", self.workspace)
        if overlay:
            self._overlay = Overlay(self.workspace)
        self._net = None          # network.mode = "allowlist": the session's proxy (isolate.netproxy)
        if _plan is not None:
            self.plan = _plan
        else:
            # Loaded once (its files looked at once): netproxy and the plan take the Profile.
            loaded = profile if isinstance(profile, Plan) else load_profile(profile, overrides)
            launch_profile, launch_overrides, self._net = netproxy.prepare(loaded, ())
            try:
                self.plan = plan_for(launch_profile, launch_overrides, cwd=self.workspace)
            except BaseException:
                if self._net is not None:
                    self._net.close()
                raise
        self._base_env = self.plan.environment(extra=env)
        self._env_given = env is not None
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._popen = None
        self._ctl = None
        self._root_fd = -1
        self._agent_pid = self._agent_pid_inside = self._uid = self._gid = self._files = None
        self._hello_done = False
        self._hello_lock = threading.Lock()
        self._start_error: str | None = None
        try:
            self._start()
            if self._overlay is not None:
                self._overlay.attach(self)
        except BaseException:
            self._teardown()
            raise
        self._watchdog = None
        if self._ttl is not None or self._idle is not None:
            self._deadline = None if self._ttl is None else time.monotonic() + self._ttl
            self._watchdog = threading.Thread(target=self._watch, name="isolate-session-watchdog", daemon=True)
            self._watchdog.start()
        self._shell_path = shell
        self._want_shell = True

    # ---- start and stop -----------------------------------------------------------------
    def _start(self) -> None:
        t0 = time.monotonic()
        agent_fd = os.open(AGENTD, os.O_PATH | os.O_CLOEXEC)   # agentd is run from it (fd 3 in the sandbox)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # agentd's hello comes with its host pid
        try:
            plan = self.plan
            # (an allowlist session's proxy reports its own refusals: no connect() watch)
            watch = self._watch_net and plan.network_mode == "none" and self._net is None
            at, argv, cwd, bpf_at = _start_args(plan, watch, self._seccomp_log and denials.usable(plan))
            self._notify = bpf_at is not None
            # The program's fd table: 0 the control socket, 1 and 2 /dev/null, the profile's
            # own passed fds, agentd's binary at `at`, in notify mode the filter's program.
            src, dst = fd_table(theirs.fileno(), self._devnull, self._devnull, plan.pass_fds)
            src.append(agent_fd)
            dst.append(at)
            if self._notify:
                src.append(plans.notify_bpf_fd(plan, watch))
                dst.append(bpf_at)
            if self._seccomp_log:
                reader()   # listening before the first command runs (kills, Landlock's paths)
            try:
                slot = launch(plan, argv[:1], argv, environment_list(self._base_env), cwd, src, dst,
                              seccomp_log=self._seccomp_log and not self._notify, network=self._net, hold_ns=True,
                              seccomp_notify=("denials+connect" if watch else "denials") if self._notify else None)
            except ChildError as e:
                err = setup_error(e.args, plan, os.fsdecode(argv[0]), cwd, getattr(e, "cgroup_procs", ()))
                if err.step != "exec":
                    raise err from None
                raise SessionError(
                    f"profile {plan.profile_name!r} cannot hold a session: its sandbox cannot run the "
                    f"session's program (isolate-agentd, executed from an fd through /proc/self/fd: the profile "
                    f"needs filesystem.proc = true, and Landlock must not enforce the view): {err}") from None
            self._popen = _Sandbox(slot, plan)
        finally:
            theirs.close()
            os.close(agent_fd)
        self._ctl = mine
        mine.setblocking(False)
        self.pid = self._popen.pid
        self.start_time = time.monotonic() - t0
        # Ready: agentd has been exec'd (the launch returns once pid 1 reported that exec),
        # and the control socket holds what is sent until agentd reads it. Its hello (its
        # pid, with the host pid, uid and gid the kernel attaches) is read when first
        # needed: before the first message to agentd (check_open, send_ctl) or the first
        # look at agent_pid, uid, gid or files. If agentd ended instead, that first call
        # raises the start error (SessionError) and the session is closed.

    def _await_hello(self) -> None:
        """Read agentd's hello, once (see _start); a SessionError if it never came."""
        if self._hello_done:
            return
        with self._hello_lock:
            if self._start_error is not None:
                raise SessionError(self._start_error)
            if self._hello_done or self._closed:
                return   # (closed before its hello was needed: the caller reports that)
            try:
                self._read_hello()
            except SessionError as e:
                if self._closed:   # closed meanwhile by another thread (close(), TTL): not a start error
                    raise SessionClosed(f"the session is closed ({self._close_reason})") from None
                self._start_error = str(e)
                self._close_reason = f"its sandbox did not start: {e}"
                self.close()
                raise
            self._hello_done = True

    def _read_hello(self) -> None:
        mine = self._ctl
        creds = None
        data = b""
        if mine is not None:
            wait = select.poll()
            wait.register(mine.fileno(), select.POLLIN)
            try:
                if wait.poll(START_TIMEOUT * 1000):
                    data, anc, _flags, _addr = mine.recvmsg(64, socket.CMSG_SPACE(_UCRED.size))
                    # The kernel attached agentd's pid, uid and gid, as this process sees them (SO_PASSCRED).
                    for level, kind, value in anc:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(value) >= _UCRED.size:
                            creds = _UCRED.unpack_from(value)
            except OSError:
                data = b""
        if len(data) < MSG.size or MSG.unpack_from(data)[0] != R_HELLO:
            try:
                rc = self._popen.wait(1)   # it ended (EOF): its status is at most a moment away
            except Exception:
                rc = self._popen.poll()
            raise SessionError(f"the session's sandbox did not start (its program ended with {rc}); "
                               f"does the profile give it /proc?")
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
        self._agent_pid_inside = MSG.unpack_from(data)[2]
        if creds is not None and creds[0] > 0 and _inside_pid(creds[0]) == self._agent_pid_inside:
            self._agent_pid, self._uid, self._gid = creds
        else:
            kids = _tree(self._popen.pid)
            self._agent_pid = next((p for p in kids[1:] if _inside_pid(p) == self._agent_pid_inside), None)
            if self._agent_pid is None:
                raise SessionError("the session's sandbox started, but its program cannot be found from the host")
            st = os.stat(f"/proc/{self._agent_pid}")
            self._uid, self._gid = st.st_uid, st.st_gid
        try:
            self._root_fd = os.open(f"/proc/{self._agent_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SessionError(f"the session's sandbox ended right after its start ({os.strerror(e.errno)})") from None
        self._files = Files(self._root_fd, self._uid, self._gid, lambda: self._pwd or self.plan.cwd)

    # agentd's pid (host and sandbox), the sandbox's host uid and gid, and file access
    # through its root: known from agentd's hello (read here if it was not yet).
    @property
    def agent_pid(self) -> int:
        self._await_hello()
        return self._agent_pid

    @property
    def agent_pid_inside(self) -> int:
        self._await_hello()
        return self._agent_pid_inside

    @property
    def uid(self) -> int:
        self._await_hello()
        return self._uid

    @property
    def gid(self) -> int:
        self._await_hello()
        return self._gid

    @property
    def files(self) -> Files:
        self._await_hello()
        return self._files

    def _watch(self) -> None:
        while not self._closed:
            now = time.monotonic()
            waits = []
            if self._deadline is not None:
                if now >= self._deadline:
                    self._close_reason = "its TTL expired"
                    self.close()
                    return
                waits.append(self._deadline - now)
            if self._idle is not None:
                idle_end = self._last_used + self._idle
                if now >= idle_end and not any(not j.done for j in list(self._jobs.values())):
                    self._close_reason = "it was idle for longer than idle_timeout"
                    self.close()
                    return
                waits.append(max(0.01, idle_end - now))
            time.sleep(min(waits + [1.0]))

    def close(self) -> None:
        """End the sandbox and everything in it; returns once it is gone (also when
        another thread, the TTL or the idle timeout, is closing it). Idempotent."""
        with self._lock:
            if self._closed:
                self._torn_down.wait(30)
                return
            self._closed = True
        self._teardown()

    def _teardown(self) -> None:
        self._closed = True
        try:
            self._teardown_steps()
        finally:
            self._torn_down.set()

    def _teardown_steps(self) -> None:
        if self._ctl is not None:
            try:
                self._ctl.close()
            except OSError:
                pass
        if self._popen is not None:
            self._popen.kill()
            try:
                self._popen.wait(10)
            except Exception:
                pass
        for p in list(self._procs.values()):
            if isinstance(p, Shell):
                close_fd(p.status_r)
                p.status_r = -1
            if p.wait_status is None:
                p.on_exit(signal.SIGKILL)
        for job in list(self._jobs.values()):
            job._session_closed()
        for p in list(self._procs.values()) + self._shells + self._all_shells:
            p.close()
        self._procs.clear()
        if self._drainer is not None:
            self._drainer.stop()
        if self._root_fd >= 0:
            close_fd(self._root_fd)
            self._root_fd = -1
        close_fd(self._devnull)
        self._devnull = -1
        if self._overlay is not None:
            self._overlay.session_ended()
        if getattr(self, "_net", None) is not None:
            self._net.close()   # its violations stay readable (netproxy.violations_for)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        if not self._closed and self._popen is not None and self._popen.poll() is not None:
            self._close_reason = "its sandbox ended"
            self.close()
        return self._closed

    @property
    def seccomp_log(self) -> bool:
        """The filter's denials go to the audit log (violations=True): commands report them."""
        return self._seccomp_log

    @property
    def network(self):
        """network.mode = "allowlist": the session's host-side proxy (isolate.netproxy.SandboxNet:
        its refusals are each command's network violations), else None."""
        return self._net

    @property
    def netproxy_id(self) -> str | None:
        """The id of the session's proxy for isolate.netproxy.violations_for, or None."""
        return self._net.id if self._net is not None else None

    @property
    def net_events(self) -> list:
        """The network attempts agentd reported so far, oldest first (the session's own list:
        read_ctl() appends to it)."""
        return self._net_events

    def check_open(self, what: str) -> None:
        if not self._hello_done:
            self._await_hello()
        if self.closed:
            raise SessionClosed(f"{what}: the session is closed ({self._close_reason})")
        self._last_used = time.monotonic()

    # ---- what the session's commands (jobs.Run, jobs.Job, pty.Pty) use of it -------------
    @property
    def closing(self) -> bool:
        """close() has begun (unlike `closed`, this looks at nothing else)."""
        return self._closed

    @property
    def ctl(self) -> socket.socket:
        """The control socket to agentd (non-blocking; read it with read_ctl)."""
        return self._ctl

    @property
    def devnull(self) -> int:
        """An fd of /dev/null, for a command's stdin when it gets no input."""
        return self._devnull

    @property
    def shell_lock(self) -> threading.Lock:
        """Held while a string command runs in the session's shell (one at a time)."""
        return self._shell_lock

    @property
    def current_shell(self) -> Shell | None:
        """The shell the next string command runs in (None: a new one is started)."""
        return self._shell

    def give_shell_away(self) -> None:
        """The current shell stays with a job that went to the background."""
        self._shell = None

    @property
    def shell_pwd(self) -> str | None:
        """The shell's working directory as of its last command (None: not known yet)."""
        return self._pwd

    def record_shell_state(self, pwd: str, exports: bytes, functions: bytes) -> None:
        """What the current shell reported after a command: cwd, `export -p`, functions."""
        self._pwd = pwd
        self._functions = functions
        if exports != self._exports:
            self._exports = exports
            self._exports_env = None

    def next_job_id(self) -> int:
        return next(self._job_ids)

    # ---- the control socket ----------------------------------------------------------
    def send_ctl(self, kind: int, id_: int, a: int = 0, b: int = 0, data: bytes = b"", fds=()) -> None:
        if not self._hello_done:
            self._await_hello()
        msg = MSG.pack(kind, id_, a, b) + data
        with self._send_lock:
            if self._ctl is None or self._closed:
                raise SessionClosed("the session is closed")
            try:
                if fds:
                    socket.send_fds(self._ctl, [msg], list(fds))
                else:
                    self._ctl.send(msg)
            except BlockingIOError:
                self._ctl.setblocking(True)
                try:
                    if fds:
                        socket.send_fds(self._ctl, [msg], list(fds))
                    else:
                        self._ctl.send(msg)
                finally:
                    self._ctl.setblocking(False)
            except OSError as e:
                raise SessionClosed(f"the session's sandbox is gone ({os.strerror(e.errno)})") from None

    def read_ctl(self) -> bool:
        """Dispatch what agentd sent; False when it is gone."""
        if not self._hello_done:
            self._await_hello()
        while True:
            try:
                data = self._ctl.recv(128)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._agent_gone()
                return False
            if len(data) < MSG.size:
                continue
            kind, id_, a, b = MSG.unpack_from(data)
            if kind == R_NET:
                try:
                    self._add_event(network_event(self, id_, a, b, data[MSG.size:]))
                except ValueError:
                    pass
                continue
            if kind == R_DENIED:
                if len(data) >= MSG.size + denials.PAYLOAD.size:
                    self._add_event(denials.event(syscall_name, id_, a, b, data[MSG.size:], RULE_LABELS))
                continue
            p = self._procs.get(id_)
            if p is None:
                continue
            if kind == R_STARTED:
                p.on_started(a, b)
            elif kind == R_EXIT:
                self._procs.pop(id_, None)
                p.on_exit(a)

    def _add_event(self, ev: dict) -> None:
        # A program repeating a refused call (a loop) costs one entry, with a count; past
        # MAX_EVENTS different ones are counted only.
        last = self._net_events[-1] if len(self._net_events) > self._merge_floor else None
        if last is not None and same_event(last, ev):
            last["count"] = last.get("count", 1) + 1
        elif len(self._net_events) < viol.MAX_EVENTS:
            self._net_events.append(ev)
        else:
            self._events_dropped += 1

    def events_mark(self) -> tuple[int, int]:
        """Where a command's window of agentd's reports starts: (kept, dropped) so far;
        reports from here on are not merged into earlier ones."""
        self._merge_floor = len(self._net_events)
        return self._merge_floor, self._events_dropped

    @property
    def events_dropped(self) -> int:
        """agentd's reports not kept (past MAX_EVENTS), so far."""
        return self._events_dropped

    @property
    def notify(self) -> bool:
        """True when the filter's refusals are reported by agentd with their arguments."""
        return self._notify

    def _agent_gone(self) -> None:
        for p in list(self._procs.values()):
            if p.wait_status is None:
                p.on_exit(signal.SIGKILL)

    def new_proc(self, cls=Proc, *args) -> Proc:
        p = cls(next(self._ids), *args)
        self._procs[p.id] = p
        return p

    # ---- state -------------------------------------------------------------------------
    @property
    def cwd(self) -> str:
        """The shell's working directory (as of its last command)."""
        return self._pwd or self.plan.cwd

    def environment(self) -> dict:
        """The environment commands get: the profile's, plus what the shell exported."""
        if self._exports is None:
            return dict(self._base_env)
        if self._exports_env is None:
            self._exports_env = _parse_exports(self._exports)
        return dict(self._exports_env)

    # ---- shells ------------------------------------------------------------------------
    def shell_path(self) -> str:
        if self._shell_path:
            return self._shell_path
        self._await_hello()   # (the sandbox's root)
        for cand in ("/bin/bash", "/usr/bin/bash"):
            try:
                os.close(_openat_root(self._root_fd, cand))
                return cand
            except OSError:
                pass
        return "/bin/sh"

    def _start_shell(self) -> Shell:
        if not self._slots:
            raise SessionError("too many shells busy with jobs in this session")
        slot = min(self._slots)
        self._slots.discard(slot)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        sh = self.new_proc(Shell, slot, status_r)
        path = self.shell_path()
        sh.bash = path.endswith("bash")
        argv = [path, "--noprofile", "--norc"] if sh.bash else [path]
        try:
            self.start_process(sh, argv, dict(self._base_env), self._pwd or self.plan.cwd,
                          [self._devnull, status_w, self._devnull], RUN_SHELL)
        finally:
            os.close(status_w)
        done = ("__isolate_done() { printf '\\0R %s %s\\0%s\\0' \"$1\" \"$2\" \"$PWD\"; export -p; "
                "printf '\\0'; " + ("declare -f; " if sh.bash else "") + "printf '\\0'; }\n")
        if sh.bash:
            done += "readonly -f __isolate_done\n"
        text = done
        if self._pwd is not None:
            text += f"cd -- {shlex.quote(self._pwd)} 2>/dev/null\n"
        if self._exports is not None:
            text += "{\n" + os.fsdecode(self._exports) + "\n} 2>/dev/null\n"
        if self._functions:
            text += "{\n" + os.fsdecode(self._functions) + "\n} 2>/dev/null\n"
        self.send_ctl(A_SHELL, sh.id, slot, 0, text.encode())
        self._shells.append(sh)
        return sh

    def retire_shell(self, sh: Shell) -> None:
        sh.retired = True
        if sh in self._shells:
            self._shells.remove(sh)
        if sh.wait_status is None and not self._closed:
            try:
                # The shell only: background jobs of its commands (its process group) live on.
                self.send_ctl(A_KILL, sh.id, signal.SIGKILL, 1)
            except SessionClosed:
                pass
        close_fd(sh.status_r)
        sh.status_r = -1
        self._slots.add(sh.slot)
        if sh.exited.is_set():
            sh.close()
        else:
            self._all_shells.append(sh)

    def idle_shell(self) -> Shell:
        sh = self._shell
        if sh is None or sh.dead or sh.retired:
            if sh is not None and not sh.retired:
                self.retire_shell(sh)
            sh = self._shell = self._start_shell()
        return sh

    def start_process(self, p: Proc, argv, env: Mapping[str, str], cwd: str, fds, flags: int = 0) -> None:
        strings = [os.fsencode(cwd)] + [os.fsencode(a) for a in argv] + [b""] + \
            [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
        self.send_ctl(A_RUN, p.id, flags, 0, b"\0".join(strings) + b"\0", fds)

    # ---- processes of the sandbox, for killing a command's tree ------------------------
    def sandbox_pids(self) -> set:
        """Host pids of every process of the sandbox now (isolate-init and its descendants)."""
        return set(_tree(self._popen.pid))

    def host_pid(self, inside: int) -> int | None:
        """The host pid of a child of agentd, from its pid in the sandbox."""
        for pid in _tree(self.agent_pid)[1:]:
            if _inside_pid(pid) == inside:
                return pid
        return None

    def _protected(self, exclude) -> set:
        """Host pids that a timeout of `exclude` must not kill: pid 1, agentd, the shells,
        and the trees of the other jobs."""
        keep = {self._popen.pid, self.agent_pid}
        inside = {}
        for pid in _tree(self.agent_pid)[1:]:
            ip = _inside_pid(pid)
            if ip is not None:
                inside.setdefault(ip, pid)
        for p in list(self._procs.values()) + self._shells:
            if p is exclude or p.pid is None:
                continue
            hp = inside.get(p.pid)
            if hp is None:
                continue
            if isinstance(p, Shell):
                if exclude is not None and getattr(exclude, "shell", None) is p:
                    keep.add(hp)   # the shell of the command: itself survives
                else:
                    keep.update(_tree(hp))
            else:
                keep.update(_tree(hp))
        return keep

    def kill_tree(self, run) -> None:
        """Kill everything the command started: its own tree, and whatever appeared in
        the sandbox since it started that belongs to nobody else."""
        if run.proc is not None and not isinstance(run.proc, Shell) and run.proc.wait_status is None:
            try:
                self.send_ctl(A_KILL, run.proc.id, signal.SIGKILL)
            except SessionClosed:
                return
        killed: set = set()
        empty = 0
        for _ in range(20):
            keep = self._protected(run.proc if not isinstance(run.proc, Shell) else run)
            victims = [p for p in self.sandbox_pids() if p not in keep and p not in run.before]
            if not victims:
                # The children of a shell killed a moment ago are being handed to pid 1: a
                # walk of the tree in that instant can miss them. Two empty walks in a row.
                empty += 1
                if empty == 2:
                    break
                time.sleep(0.002)
                continue
            empty = 0
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except (ProcessLookupError, PermissionError):
                    pass
        # SIGKILL is asynchronous: the command has timed out only once its tree is gone
        # (dead and reaped by the sandbox's pid 1), so that the caller sees nothing of it.
        deadline = time.monotonic() + KILL_GRACE
        while killed and time.monotonic() < deadline:
            killed = {pid for pid in killed if os.path.exists(f"/proc/{pid}")}
            if killed:
                time.sleep(0.002)

    # ---- commands ------------------------------------------------------------------------
    def exec(self, cmd, *, timeout: float | None = None, yield_after: float | None = None, input=None,
             cwd=None, env: Mapping[str, str] | None = None, max_output: int | None = None,
             on_stdout: Callable | None = None, on_stderr: Callable | None = None,
             yield_when_quiet: float | None = None) -> ExecResult:
        """Run `cmd` (a shell string for the session's shell, or an argv list) and return
        what it did. See the module's documentation for timeouts and yield_after;
        yield_when_quiet is soft too: it returns (running=True, a job) once the command
        has written nothing new for that many seconds (a prompt waiting for input, a
        stalled download), whichever of the two comes first."""
        timeout = check_seconds(timeout, "timeout")
        yield_after = check_seconds(yield_after, "yield_after")
        quiet = check_seconds(yield_when_quiet, "yield_when_quiet")
        limit = self._max_output if max_output is None else output_mod.check_max_output(max_output)
        self.check_open("exec")
        run = Run(self, cmd, input=input, cwd=cwd, env=env, limit=limit, on_stdout=on_stdout,
                  on_stderr=on_stderr, stdin_pipe=False)
        return run.execute(timeout, yield_after, quiet)

    def spawn(self, cmd, *, cwd=None, env: Mapping[str, str] | None = None, max_output: int | None = None,
              timeout: float | None = None, on_stdout: Callable | None = None,
              on_stderr: Callable | None = None):
        """Start `cmd` in the background and return its Job (stdin stays open for
        write_stdin until close_stdin). A string runs in `sh -c` (bash) with the session's
        current directory and exported variables; it does not change the shell's state."""
        timeout = check_seconds(timeout, "timeout")
        limit = self._max_output if max_output is None else output_mod.check_max_output(max_output)
        self.check_open("spawn")
        if isinstance(cmd, (str, bytes)):
            cmd = [self.shell_path(), "-c", os.fsdecode(cmd)]
        run = Run(self, cmd, input=None, cwd=cwd, env=env, limit=limit, on_stdout=on_stdout,
                  on_stderr=on_stderr, stdin_pipe=True)
        return run.background(timeout)

    def jobs(self) -> list:
        """The session's jobs (spawned or yielded), running or finished, oldest first."""
        self.check_open("jobs")
        return list(self._jobs.values())

    def job(self, job_id):
        """Re-attach to a job by its id (Job.id)."""
        self.check_open("job")
        try:
            return self._jobs[int(job_id)]
        except (KeyError, ValueError, TypeError):
            raise JobNotFound(f"job {job_id!r}: no such job in this session "
                              f"(jobs: {sorted(self._jobs) or 'none'})") from None

    def register_job(self, job) -> None:
        self._jobs[job.id] = job

    # ---- files ---------------------------------------------------------------------------
    def write_file(self, path, data, mode: int = 0o644) -> int:
        """Write `data` (bytes or str) to `path` in the session, creating its parents."""
        self.check_open("write_file")
        return self.files.write_file(path, data, mode)

    def read_file(self, path, text: bool = False, max_size: int | None = None):
        """The content of `path` in the session (bytes, or str with text=True); at most
        max_size bytes (default 100 MiB), else SessionPathError."""
        self.check_open("read_file")
        return self.files.read_file(path, text=text, max_size=DEFAULT_READ_MAX if max_size is None else max_size)

    def list_dir(self, path=".") -> list:
        """Entries of a directory in the session: DirEntry(name, type, size, mode), by name."""
        self.check_open("list_dir")
        return self.files.list_dir(path)

    # ---- the overlay workspace -------------------------------------------------------------
    def _need_overlay(self, what):
        self.check_open(what)
        if self._overlay is None:
            raise SessionError(f"{what}: this session has no overlay workspace (Session(..., workspace=DIR, "
                               f"overlay=True))")
        return self._overlay

    def changes(self) -> list:
        """What commands changed in the overlay workspace: Change(kind "A"|"M"|"D", path)."""
        return self._need_overlay("changes").changes()

    def apply(self) -> list:
        """Write the overlay's changes to the host directory; returns them. The overlay
        then starts over (the shell is restarted, with its state)."""
        ov = self._need_overlay("apply")
        with self._shell_lock:
            changes = ov.apply()
            self._fresh_shell()
        return changes

    def discard(self) -> None:
        """Drop the overlay's changes: the workspace is the host directory again."""
        ov = self._need_overlay("discard")
        with self._shell_lock:
            ov.discard()
            self._fresh_shell()

    def _fresh_shell(self) -> None:
        # Its working directory may be in the old overlay: the next command gets a new shell.
        if self._shell is not None:
            self.retire_shell(self._shell)
            self._shell = None

    # ---- pty ------------------------------------------------------------------------------
    def pty(self, cmd, rows: int = 24, cols: int = 80, *, cwd=None, env: Mapping[str, str] | None = None):
        """An interactive program on a terminal of its own in the session: a Pty with
        write, read, resize, wait and kill."""
        self.check_open("pty")
        return start_pty(self, cmd, rows, cols, cwd=cwd, env=env)

    def drain_later(self, fds) -> None:
        """Read and drop what background processes still write to a finished command's pipes."""
        fds = [fd for fd in fds if fd >= 0]
        if not fds:
            return
        if self._closed:
            for fd in fds:
                close_fd(fd)
            return
        if self._drainer is None:
            self._drainer = Drainer()
        self._drainer.add(fds)


def _openat_root(root_fd: int, path: str) -> int:
    return openat2(root_fd, path, os.O_PATH)


def _parse_exports(text: bytes) -> dict:
    """`export -p` (bash's `declare -x NAME="value"`, sh's `export NAME='value'`) -> dict."""
    env = {}
    try:
        words = shlex.split(os.fsdecode(text), posix=True)
    except ValueError:
        return env
    for w in words:
        if w in ("declare", "export") or w.startswith("-"):
            continue
        if "=" in w:
            k, v = w.split("=", 1)
            env[k] = v.replace("\\$", "$").replace("\\`", "`")
    return env
