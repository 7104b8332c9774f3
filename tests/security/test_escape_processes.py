"""Escape attempts against processes, from inside the default and strict profiles.

Covers: seeing and signalling host processes, kill(-1, SIGKILL), and the sandbox's pid 1
(isolate-init), which runs WITHOUT the program's seccomp filter and holds the status
pipe to the caller: the program must not be able to take it over or speak for it.
"""

import os
import signal
import struct

import pytest

from isolate.launch import _launch

from escape_helpers import PROFILES, HostSleep, run_attack

pytestmark = pytest.mark.parametrize("profile", PROFILES)


# ---- 4. host processes ------------------------------------------------------------------------------
def test_host_processes_are_invisible_and_unsignalable(profile):
    with HostSleep() as host:
        me = os.getpid()
        _, seen = run_attack(profile, """
            targets = {"host_sleep": ARGS["sleep"], "host_test": ARGS["test"]}
            out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            for name, pid in targets.items():
                out["visible:" + name] = pid in out["pids"]
                attempt("stat:" + name, lambda: os.stat("/proc/%d" % pid) and None)
                attempt("kill0:" + name, lambda: os.kill(pid, 0))
                attempt("kill9:" + name, lambda: os.kill(pid, signal.SIGKILL))
                attempt("killpg:" + name, lambda: os.killpg(pid, signal.SIGKILL))
                attempt("pidfd_open:" + name, lambda: os.close(os.pidfd_open(pid)))
                sc("tgkill:" + name, 234, pid, pid, signal.SIGKILL)
                sc("tkill:" + name, 200, pid, signal.SIGKILL)
                attempt("getpgid:" + name, lambda: os.getpgid(pid))
            out["ppid"] = os.getppid()
        """, {"sleep": host.pid, "test": me})
        assert seen["pids"] == [1, 2], seen
        assert seen["ppid"] == 1, seen   # its parent is the sandbox's pid 1, not us
        for name in ("host_sleep", "host_test"):
            assert not seen["visible:" + name], seen
            assert seen["stat:" + name] == "ENOENT", seen
            for op in ("kill0", "kill9", "killpg", "pidfd_open", "tgkill", "tkill", "getpgid"):
                assert seen[f"{op}:{name}"] == "ESRCH", (op, name, seen)
        # Host side: still alive.
        assert host.poll() is None
        os.kill(host.pid, 0)


# ---- 15. kill(-1, SIGKILL) ----------------------------------------------------------------------------------
def test_kill_minus_one_kills_only_the_sandbox(profile):
    with HostSleep() as host, HostSleep() as other:
        # `other` is in a session of its own, in case kill(-1) were ever resolved by sessions.
        _, seen = run_attack(profile, """
            kids = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                kids.append(pid)
            # pid 1 of the namespace ignores signals from inside it.
            attempt("kill:1", lambda: os.kill(1, signal.SIGKILL))
            time.sleep(0.1)
            attempt("pid1-alive", lambda: os.kill(1, 0))
            attempt("kill:-1", lambda: os.kill(-1, signal.SIGKILL))
            out["kids"] = [os.waitpid(k, 0)[1] for k in kids]
            out["pids_left"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            print(json.dumps(out), flush=True)
            # Now from a child, which takes this process too: the whole sandbox ends.
            if os.fork() == 0:
                os.kill(-1, signal.SIGKILL)
                os._exit(0)
            time.sleep(10)
            out.clear()
            out["survived"] = True
        """, expect_rc=None)
        assert seen["kill:1"] == "OK" and seen["pid1-alive"] == "OK", seen
        assert seen["kill:-1"] == "OK", seen
        assert seen["kids"] == [signal.SIGKILL] * 3, seen       # its own children died
        assert seen["pids_left"] == [1, 2], seen
        assert "survived" not in seen
        # Host side: the host's processes (and this test) live on.
        assert host.poll() is None and other.poll() is None
        os.kill(host.pid, 0)
        os.kill(os.getpid(), 0)


def test_kill_minus_one_result(profile):
    """The program killed by its own child's kill(-1): reported as SIGKILL, nothing else."""
    r, _ = run_attack(profile, """
        if os.fork() == 0:
            os.kill(-1, signal.SIGKILL)
            os._exit(0)
        time.sleep(10)
    """, expect_rc=None)
    assert r.returncode == -signal.SIGKILL and r.signal == signal.SIGKILL, (r.returncode, r.stderr)


# ---- 16. pid 1 (isolate-init): code injection, status forgery ------------------------------------------------
def pid1_payload(ran: str, escaped: str) -> bytes:
    """x86-64 code for pid 1: mkdir(ran); if unshare(CLONE_NEWUSER) == 0: mkdir(escaped); exit_group(0).

    `ran` shows the code ran in pid 1 at all; `escaped` that pid 1 made a call the program's
    filter denies (a new user namespace: every capability in it, and the 32-bit ABI,
    io_uring, bpf, ... are all unfiltered there)."""
    code, fixups = bytearray(), []

    def lea_rdi(label):
        code.extend(b"\x48\x8d\x3d")
        fixups.append((len(code), label))
        code.extend(b"\0\0\0\0")

    def mov_esi(v):
        code.extend(b"\xbe" + struct.pack("<I", v))

    def mov_edi(v):
        code.extend(b"\xbf" + struct.pack("<I", v))

    def mov_eax(v):
        code.extend(b"\xb8" + struct.pack("<I", v))

    def syscall():
        code.extend(b"\x0f\x05")

    lea_rdi("ran"); mov_esi(0o755); mov_eax(83); syscall()                   # mkdir(ran, 0755)
    mov_edi(0x10000000); mov_eax(272); syscall()                             # unshare(CLONE_NEWUSER)
    code.extend(b"\x85\xc0")                                                 # test eax, eax
    code.extend(b"\x75\x13")                                                 # jnz +19 (to exit)
    start = len(code)
    lea_rdi("escaped"); mov_esi(0o755); mov_eax(83); syscall()               # mkdir(escaped, 0755)
    assert len(code) - start == 0x13
    code.extend(b"\x31\xff"); mov_eax(231); syscall()                        # exit_group(0)
    labels = {"ran": len(code)}
    code.extend(ran.encode() + b"\0")
    labels["escaped"] = len(code)
    code.extend(escaped.encode() + b"\0")
    for at, label in fixups:
        struct.pack_into("<i", code, at, labels[label] - (at + 4))
    return bytes(code)


def test_pid1_cannot_be_taken_over(profile, tmp_path):
    """The program writes code into pid 1 through /proc/1/mem and wakes it with SIGUSR1."""
    rw = tmp_path / "rw"
    rw.mkdir()
    ran, escaped = rw / "pid1-ran", rw / "pid1-unshare-succeeded"
    r, seen = run_attack(profile, """
        payload = bytes.fromhex(ARGS["payload"])
        pc = None
        for _ in range(200):        # wait until pid 1 sits in its main poll()
            try:
                fields = open("/proc/1/syscall").read().split()
            except OSError as e:
                out["syscall"] = ename(e.errno)
                break
            if fields[0] in ("7", "271"):
                pc = int(fields[-1], 16)
                break
            time.sleep(0.01)
        def inject():
            with open("/proc/1/mem", "r+b", buffering=0) as f:
                f.seek(pc)
                return f.write(payload)
        if pc is not None:
            attempt("inject", inject)
            if out["inject"].startswith("OK"):
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # pid 1 forwards it to us
                os.kill(1, signal.SIGUSR1)                     # wakes pid 1 from poll()
                time.sleep(2)                                  # (pid 1 exiting ends us before that)
    """, {"payload": pid1_payload(str(ran), str(escaped)).hex()}, rw=[rw], expect_rc=None)
    took_over = [p.name for p in (ran, escaped) if p.exists()]
    assert not took_over, (
        f"pid 1 ran the program's code ({took_over}); "
        f"{'and made a call the seccomp filter denies the program (unshare(CLONE_NEWUSER))' if escaped.exists() else ''}"
        f" stdout={r.stdout!r} returncode={r.returncode}")


def test_program_cannot_forge_its_exit_status(profile):
    """pid 1's status pipe reports the program's wait status: the program must not write to it."""
    r, _ = run_attack(profile, """
        import struct
        argv = open("/proc/1/cmdline", "rb").read().split(b"\\0")
        status_fd = int(argv[1])                  # isolate-init STATUS_FD ...
        def forge():
            fd = os.open("/proc/1/fd/%d" % status_fd, os.O_WRONLY)
            rec = struct.pack("=iiiiq", ARGS["MSG_EXITED"], 0, 0, 0, 0)  # "exited with status 0"
            return sum(os.write(fd, rec) for _ in range(8))
        attempt("forge", forge)
        print(json.dumps(out), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)      # what really happens: killed by SIGKILL
    """, {"MSG_EXITED": _launch.MSG_EXITED}, expect_rc=None)
    assert r.returncode == -signal.SIGKILL, (
        f"the caller was told returncode={r.returncode} for a program killed by SIGKILL "
        f"(forged through /proc/1/fd): {r.stdout!r}")
