"""fds.pty / `isolate run --pty` / Popen(pty=True): a terminal of the sandbox's own.

The CLI tests run `isolate run` on a terminal this test creates (a pty whose slave is
the CLI's controlling terminal and its 0/1/2), so the CLI really has a terminal to
relay; the program inside reports what it sees as JSON, the test compares it with the
caller's side.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest

import isolate
from conftest import ROOT, cli

# The three ways the program can be started: by isolate-init as pid 1 of a pid
# namespace, by isolate-init as a subreaper without one, and by the launch child itself.
# With a pid namespace and a minimal /dev, the pty comes from the sandbox's own devpts
# instance (its /dev/pts); otherwise from the caller's (/dev/ptmx).
STARTS = {
    "init-pidns": [],
    "init-pidns-host-view": ["filesystem.view=host"],
    "init-no-pidns": ["namespaces.pid=false", "filesystem.view=host"],
    "no-init": ["namespaces.pid=false", "process.die_with_parent=false", "filesystem.view=host"],
}
OWN_DEVPTS = {"init-pidns"}
TIOCGSID = 0x5429  # the session of a terminal (on a master: of its slave)
TIOCGDEV = 0x80045432  # the device number of the terminal behind an fd (here: /dev/tty)
PTS_MAJORS = range(136, 144)  # UNIX98_PTY_SLAVE_MAJOR .. + 7

# What the program inside reports about its terminal, as one JSON line.
REPORT = textwrap.dedent(r'''
    import fcntl, json, os, struct, termios
    def size(fd):
        return list(struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2])
    tty = os.open("/dev/tty", os.O_RDWR)  # the controlling terminal: fails without one
    stat = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    r = {
        "isatty": [os.isatty(fd) for fd in (0, 1, 2)],
        "rdev": [os.fstat(fd).st_rdev for fd in (0, 1, 2)],
        "devtty_rdev": struct.unpack("I", fcntl.ioctl(tty, 0x80045432, b"\0" * 4))[0],
        "tty_nr": int(stat[4]),
        "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
        "tcpgrp": os.tcgetpgrp(0), "devtty_tcpgrp": os.tcgetpgrp(tty),
        "size": size(0), "devtty_size": size(tty),
        "ttyname": os.ttyname(0), "ttyname_rdev": os.stat(os.ttyname(0)).st_rdev,
        "devpts_dev": os.stat("/dev/pts").st_dev, "fd0_dev": os.fstat(0).st_dev,
        "devpts_entries": sorted(os.listdir("/dev/pts")),
    }
    print("REPORT" + json.dumps(r), flush=True)
''')


def _report(text: str) -> dict:
    line = next(ln for ln in text.splitlines() if ln.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


def _assert_own_terminal(r: dict, caller: tuple | None = None, own_devpts: bool | None = None) -> None:
    """The program's 0/1/2 are one pty, which is its controlling terminal, in its own session."""
    assert r["isatty"] == [True, True, True]
    assert len(set(r["rdev"])) == 1
    rdev = r["rdev"][0]
    assert os.major(rdev) in PTS_MAJORS, rdev
    assert r["devtty_rdev"] == rdev          # /dev/tty is that pty
    assert r["tty_nr"] == rdev               # and the kernel's idea of its ctty
    assert r["sid"] == r["pid"] == r["pgid"]  # a session of its own, and its leader
    assert r["tcpgrp"] == r["pgid"] == r["devtty_tcpgrp"]  # in the foreground of its terminal
    assert r["ttyname"].startswith("/dev/pts/") and r["ttyname_rdev"] == rdev  # tty(1) names it
    assert r["fd0_dev"] == r["devpts_dev"]  # it is on the /dev/pts the program sees
    if caller is not None:
        # A terminal is a devpts instance and an index in it (the same index, hence the
        # same device number, may exist in two instances).
        assert (r["fd0_dev"], rdev) != caller
    if own_devpts is not None:
        # The sandbox's own devpts instance: not the caller's, and only its own terminal in it.
        assert (r["devpts_dev"] != os.stat("/dev/pts").st_dev) == own_devpts
        if own_devpts:
            assert r["devpts_entries"] == [r["ttyname"].rsplit("/", 1)[1], "ptmx"]


# ---- a terminal for the CLI ------------------------------------------------------------
def _winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Outer:
    """`isolate ARGS...` on a fresh terminal of this test (the CLI's ctty and its 0/1/2)."""

    def __init__(self, *args, rows=24, cols=80):
        self.master, slave = os.openpty()
        _winsize(self.master, rows, cols)
        st = os.fstat(slave)
        self.ident = (st.st_dev, st.st_rdev)
        self.before = termios.tcgetattr(self.master)  # the slave's mode, as the CLI finds it
        argv = [sys.executable, "-m", "cli.main", *args]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only sets up its terminal and execs
            try:
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                os.chdir(ROOT)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(slave)
        self.pid = pid
        self.out = b""
        self.status = None

    def read_until(self, needle: bytes, timeout=60) -> bytes:
        end = time.monotonic() + timeout
        while needle not in self.out:
            left = end - time.monotonic()
            assert left > 0, f"no {needle!r} from the CLI; so far {self.out!r}"
            if not select.select([self.master], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {needle!r}; got {self.out!r}"
            self.out += chunk
        return self.out

    def write(self, data: bytes):
        os.write(self.master, data)

    def mode(self):
        return termios.tcgetattr(self.master)

    def finish(self, timeout=60) -> int:
        """Everything the CLI writes until it exits, then its exit status."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0, f"the CLI did not end; so far {self.out!r}"
            if not select.select([self.master], [], [], min(left, 0.2))[0]:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.status = status
                    # the terminal's slave is ours no more: whatever is left, then EIO
                    while select.select([self.master], [], [], 0)[0]:
                        try:
                            chunk = os.read(self.master, 65536)
                        except OSError:
                            break
                        if not chunk:
                            break
                        self.out += chunk
                    break
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                _pid, self.status = os.waitpid(self.pid, 0)
                break
            self.out += chunk
        return os.waitstatus_to_exitcode(self.status)

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        os.close(self.master)


@pytest.fixture
def outer():
    made = []

    def start(*args, **kw):
        o = Outer(*args, **kw)
        made.append(o)
        return o

    yield start
    for o in made:
        o.close()


def _py(code: str) -> list:
    return ["python3", "-c", code]


# ---- the CLI -----------------------------------------------------------------------------
@pytest.mark.parametrize("start", STARTS)
def test_cli_pty_the_program_has_a_terminal_of_its_own(outer, start):
    sets = [a for o in STARTS[start] for a in ("--set", o)]
    o = outer("run", "--pty", *sets, "--", *_py(REPORT + "input(); import sys; sys.exit(5)"), rows=37, cols=101)
    o.read_until(b"}")
    # While it runs, the caller's terminal is still the CLI's, in the CLI's session.
    sid = struct.unpack("i", fcntl.ioctl(o.master, TIOCGSID, b"\0" * 4))[0]
    assert sid == o.pid
    o.write(b"\r")
    assert o.finish() == 5
    r = _report(o.out.decode())
    _assert_own_terminal(r, caller=o.ident, own_devpts=start in OWN_DEVPTS)
    assert r["size"] == r["devtty_size"] == [37, 101]  # copied before the program started


def test_cli_pty_set_field_is_the_same_as_the_flag(outer):
    o = outer("run", "--set", "fds.pty=true", "--", *_py(REPORT))
    assert o.finish() == 0
    _assert_own_terminal(_report(o.out.decode()), caller=o.ident)


def test_cli_without_pty_the_program_gets_no_terminal_of_its_own(outer):
    # The contrast: without --pty the program's fds are the caller's terminal, but the
    # new session leaves it without a controlling terminal.
    code = "import os\ntry:\n os.open('/dev/tty', os.O_RDWR); print('CTTY')\nexcept OSError as e: print('NOCTTY', e.errno)"
    o = outer("run", "--", *_py(code))
    assert o.finish() == 0
    assert b"NOCTTY 6" in o.out  # ENXIO: no controlling terminal


def test_cli_pty_resize_reaches_the_program(outer):
    code = textwrap.dedent(r'''
        import fcntl, signal, struct, termios
        def size():
            return struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
        print("BEFORE %d %d" % size(), flush=True)
        signal.sigwait({signal.SIGWINCH})  # the kernel sends it when the pty's size changes
        print("AFTER %d %d" % size(), flush=True)
    ''')
    o = outer("run", "--pty", "--", *_py(code), rows=30, cols=90)
    o.read_until(b"BEFORE 30 90")
    _winsize(o.master, 50, 132)      # the caller's window changes (the outer terminal)
    os.kill(o.pid, signal.SIGWINCH)  # and the CLI hears of it as a terminal emulator would say
    o.read_until(b"AFTER 50 132")
    assert o.finish() == 0


def test_cli_pty_input_output_exit_status_and_drain(outer):
    code = textwrap.dedent(r'''
        import sys
        line = input("name? ")
        sys.stdout.write("x" * 200000 + "\n")
        print("got:" + line + ":END", flush=True)
        sys.exit(7)
    ''')
    o = outer("run", "--pty", "--", *_py(code))
    o.read_until(b"name? ")
    o.write(b"hello\r")  # typed on the caller's terminal; the sandbox's terminal echoes it
    assert o.finish() == 7
    assert b"hello" in o.out.split(b"name? ", 1)[1]
    assert b"got:hello:END" in o.out  # everything was drained before the CLI exited
    assert o.out.count(b"x") == 200000


def test_cli_pty_ctrl_c_reaches_the_program_through_its_terminal(outer):
    code = textwrap.dedent(r'''
        import os, signal, time
        def on_int(*_):  # may come while print() below still flushes: no print here
            os.write(1, b"SIGINT\n"); os._exit(3)
        signal.signal(signal.SIGINT, on_int)
        print("READY", flush=True)
        time.sleep(60)
    ''')
    o = outer("run", "--pty", "--", *_py(code))
    o.read_until(b"READY")
    assert not o.mode()[3] & termios.ISIG  # raw: ^C is a byte for the sandbox's terminal
    o.write(b"\x03")
    assert o.finish() == 3, o.out
    assert b"SIGINT" in o.out


def test_cli_pty_restores_the_callers_terminal(outer):
    o = outer("run", "--pty", "--", "sh", "-c", "echo READY; read x; echo done")
    o.read_until(b"READY")
    during = o.mode()
    assert not during[3] & (termios.ICANON | termios.ECHO)  # raw while it runs
    o.write(b"\r")
    assert o.finish() == 0
    assert o.mode() == o.before


def test_cli_pty_restores_the_terminal_when_a_signal_ends_it(outer):
    o = outer("run", "--pty", "--", "sh", "-c", "echo READY; exec sleep 60")
    o.read_until(b"READY")
    assert o.mode() != o.before
    os.kill(o.pid, signal.SIGTERM)  # forwarded: the program dies of it, so does the CLI's run
    assert o.finish() == 128 + signal.SIGTERM
    assert o.mode() == o.before


def test_cli_pty_restores_the_terminal_on_timeout(outer):
    o = outer("run", "--pty", "-t", "0.5", "--", "sh", "-c", "echo READY; exec sleep 60")
    assert o.finish() == 124
    assert b"timed out" in o.out
    assert o.mode() == o.before


def test_cli_pty_restores_the_terminal_while_stopped(outer):
    o = outer("run", "--pty", "--", "sh", "-c", "echo READY; read x; echo done")
    o.read_until(b"READY")
    os.kill(o.pid, signal.SIGTSTP)
    pid, status = os.waitpid(o.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    assert o.mode() == o.before  # a stopped CLI leaves the shell a usable terminal
    os.kill(o.pid, signal.SIGCONT)
    o.write(b"\r")
    assert o.finish() == 0
    assert o.mode() == o.before


def test_cli_pty_without_a_terminal_still_relays():
    # stdin a pipe, stdout a pipe: no raw mode, bytes relayed; end of input is the
    # terminal's EOF, so `cat` ends.
    r = cli("run", "--pty", "--", "sh", "-c", "read x; echo got:$x; cat; tty -s && echo ISTTY; exit 4",
            input="hello\nmore\n")
    assert r.returncode == 4, r
    assert "got:hello" in r.stdout and "ISTTY" in r.stdout
    assert r.stdout.count("more") == 2  # echoed by the terminal, then written by cat


def test_cli_pty_profile_field_conflicts_with_stdio():
    r = cli("run", "--pty", "--set", 'fds.stdout="null"', "--", "true")
    assert r.returncode == 2
    assert "fds.stdout" in r.stderr and "pty" in r.stderr and "Traceback" not in r.stderr


# ---- the library -------------------------------------------------------------------------
@pytest.mark.parametrize("start", STARTS)
def test_run_pty_capture(start):
    r = isolate.run(_py(REPORT + "import sys; print('ON-STDERR', file=sys.stderr); sys.exit(6)"),
                    overrides=STARTS[start], pty=True, pty_size=(33, 111), capture_output=True, timeout=60)
    assert r.returncode == 6
    assert r.stderr is None  # one terminal: stderr is in stdout
    text = r.stdout.decode()
    assert "ON-STDERR" in text
    rep = _report(text)
    _assert_own_terminal(rep, own_devpts=start in OWN_DEVPTS)
    assert rep["size"] == [33, 111]


def test_run_pty_strict_and_the_terminal_belongs_to_the_programs_user():
    code = REPORT + "st = os.fstat(0); print('OWNER', st.st_uid, st.st_gid, os.getuid(), os.getgid())"
    r = isolate.run(_py(code), profile="strict", pty=True, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout
    _assert_own_terminal(_report(r.stdout.decode()), own_devpts=True)
    owner = next(ln for ln in r.stdout.decode().splitlines() if ln.startswith("OWNER")).split()[1:]
    assert owner[:2] == owner[2:] == ["65534", "65534"]


@pytest.mark.parametrize("start", [*STARTS, "no-userns"])
def test_run_pty_owner_is_the_programs_user(start):
    overrides = STARTS.get(start, ["namespaces.user=false"])
    r = isolate.run(["sh", "-c", 'stat -c "%u %g" /proc/self/fd/0; id -u; id -g'],
                    overrides=overrides + ["identity.uid=1000", "identity.gid=1000"], pty=True,
                    capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout
    assert r.stdout.split() == [b"1000", b"1000", b"1000", b"1000"]


def test_run_pty_as_an_unprivileged_caller():
    # The pty of the sandbox's own devpts is opened through /proc/PID/root of its pid 1:
    # an unprivileged caller may do that too (it owns the sandbox's user namespace).
    import ctypes.util  # noqa: F401  (nobody cannot read our interpreter's lazy imports)
    import locale  # noqa: F401

    from test_core import _as_nobody

    def inside():
        r = isolate.run(["sh", "-c", "tty; id -u; stat -c %u $(tty); ls /dev/pts"], pty=True, capture_output=True,
                        cwd=str(ROOT), timeout=60)
        return {"rc": r.returncode, "out": r.stdout.decode()}

    res = _as_nobody(inside)
    assert res.get("rc") == 0, res
    assert res["out"].split() == ["/dev/pts/0", "65534", "65534", "0", "ptmx"]


def test_run_pty_from_the_profile_field():
    r = isolate.run(_py(REPORT), overrides=["fds.pty=true"], capture_output=True, timeout=60)
    assert r.returncode == 0
    _assert_own_terminal(_report(r.stdout.decode()))
    # pty=False turns the profile's pty off
    r = isolate.run(["sh", "-c", "tty -s || echo NOTTY"], overrides=["fds.pty=true"], pty=False,
                    capture_output=True, timeout=60)
    assert r.stdout == b"NOTTY\n"


def test_run_pty_input_and_text():
    r = isolate.run(["sh", "-c", "read x; echo got:$x; exit 3"], pty=True, input="hello\n", text=True,
                    capture_output=True, timeout=60)
    assert r.returncode == 3
    assert r.stdout == "hello\ngot:hello\n"  # the terminal's echo, then the program; \r\n as \n


def test_run_pty_without_capture_copies_to_fd_1(tmp_path):
    code = textwrap.dedent(f'''
        import isolate, sys
        r = isolate.run(["sh", "-c", "echo on-the-terminal"], pty=True, timeout=60)
        sys.exit(r.returncode)
    ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"on-the-terminal\r\n"


def test_run_pty_timeout():
    r = isolate.run(["sh", "-c", "echo START; exec sleep 60"], pty=True, capture_output=True, timeout=1,
                     on_timeout="result")
    assert r.timed_out and r.returncode == -signal.SIGKILL
    assert b"START" in r.stdout


def test_popen_pty_master_and_resize():
    code = textwrap.dedent(r'''
        import fcntl, signal, struct, sys, termios
        def size():
            return struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
        line = sys.stdin.readline().strip()
        print("LINE %s %d %d" % ((line,) + size()), flush=True)
        signal.sigwait({signal.SIGWINCH})
        print("AFTER %d %d" % size(), flush=True)
    ''')
    with isolate.Popen(_py(code), pty=True, pty_size=(20, 70)) as p:
        assert p.stdin is None and p.stdout is None
        master = p.pty_master
        master.write(b"ping\n")
        out = b""
        while b"LINE ping 20 70" not in out:
            out += master.read(4096)
        p.resize(44, 144)
        while b"AFTER 44 144" not in out:
            out += master.read(4096)
        assert p.wait(timeout=60) == 0
        rest, _ = p.communicate(timeout=60)  # what is left, until the terminal closes
        assert rest is not None
    assert master.closed


def test_popen_pty_communicate():
    with isolate.Popen(["cat"], pty=True) as p:
        out, err = p.communicate(b"abc\n\x04", timeout=60)
    assert p.returncode == 0 and err is None
    assert out == b"abc\r\nabc\r\n"


def test_pty_errors():
    with pytest.raises(ValueError, match="stdout"):
        isolate.Popen(["true"], pty=True, stdout=isolate.PIPE)
    with pytest.raises(ValueError, match="stdin"):
        isolate.run(["true"], pty=True, stdin=isolate.DEVNULL)
    with pytest.raises(ValueError, match="pty_size"):
        isolate.Popen(["true"], pty=True, pty_size=(1, 2, 3))
    with pytest.raises(ValueError, match="pty_size"):
        isolate.Popen(["true"], pty=True, pty_size=(70000, 80))
    with pytest.raises(ValueError, match="pty_size needs pty"):
        isolate.Popen(["true"], pty_size=(24, 80))
    with pytest.raises(isolate.ProfileError, match="fds.stdin"):
        isolate.run(["true"], overrides=["fds.pty=true", 'fds.stdin="null"'])
    with pytest.raises(isolate.ProfileError, match="fds.pty"):
        isolate.run(["true"], overrides=['fds.pty="yes"'])


def test_pty_leaks_no_fds():
    from conftest import open_fds

    import gc

    isolate.run(["true"], pty=True, capture_output=True, timeout=60)  # once per process: the plan's fds
    gc.collect()  # what earlier tests left for the collector is not ours to count
    before = open_fds()
    for _ in range(3):
        r = isolate.run(["true"], pty=True, capture_output=True, timeout=60)
        assert r.returncode == 0
    gc.collect()
    assert open_fds() - before == set()  # (fds others close meanwhile are not our business)


def test_pty_with_warm_pool_is_refused():
    with isolate.WarmPool("default", size=1) as pool:
        with pytest.raises(ValueError, match="WarmPool"):
            pool.run(["true"], pty=True)


def _gone(pid: int, within: float = 20.0) -> bool:
    """The process has ended (gone, or a zombie nobody reaped yet), waiting up to `within`."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("start", ["init-no-pidns", "no-init"])
@pytest.mark.parametrize("how", ["exit", "kill"])
def test_pty_without_pid_namespace_the_programs_group_goes_with_it(start, how):
    # With its own terminal the program leads a session of its own: ending the sandbox
    # must still take what it started (here a child that ignores the terminal's SIGHUP).
    prog = "trap '' HUP; sleep 120 & echo CHILD $!; " + ("exit 0" if how == "exit" else "exec sleep 120")
    timeout = None if how == "exit" else 2
    r = isolate.run(["sh", "-c", prog], overrides=STARTS[start], pty=True, capture_output=True, timeout=timeout,
                    on_timeout="result")
    child = int(next(ln for ln in r.stdout.decode().splitlines() if ln.startswith("CHILD")).split()[1])
    assert _gone(child), f"pid {child} outlived its sandbox"
