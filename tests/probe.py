"""Run inside a sandbox: reports, as JSON on stdout, what the program sees of itself.

Usage: probe.py [check ...] where a check is one of the names in CHECKS below, or
`syscall:NAME` to try a syscall and report its errno (0 = allowed).
"""

import ctypes
import errno
import json
import os
import resource
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)


def _status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"error:{errno.errorcode.get(e.errno, e.errno)}"


def _cwd():
    try:
        return os.getcwd()
    except OSError as e:
        return f"error:{errno.errorcode.get(e.errno, e.errno)}"


def _interfaces():
    # /proc/net/dev is per network namespace; netlink may be denied by the filter.
    with open("/proc/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def _loopback_works():
    try:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname(), timeout=2)
        c.close()
        srv.close()
        return True
    except OSError:
        return False


def _try(fn):
    ctypes.set_errno(0)
    r = fn()
    return 0 if r >= 0 else ctypes.get_errno()


SYSCALLS = {
    # each returns 0 when the call was allowed, or the errno it failed with
    "netlink_socket": lambda: _try(lambda: libc.socket(16, 2, 0)),
    "unix_socket": lambda: _try(lambda: libc.socket(1, 1, 0)),
    "inet_socket": lambda: _try(lambda: libc.socket(2, 1, 0)),
    "unshare_user": lambda: _try(lambda: libc.unshare(0x10000000)),
    "keyctl": lambda: _try(lambda: libc.syscall(250, 0, -1, 0, 0, 0)),  # KEYCTL_GET_KEYRING_ID
    "getcwd": lambda: _try(lambda: libc.syscall(79, ctypes.create_string_buffer(4096), 4096)),
    "mount_tmpfs": lambda: _try(lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "ptrace_traceme": lambda: _try(lambda: libc.ptrace(0, 0, 0, 0)),
    "tiocsti": lambda: _try(lambda: libc.ioctl(0, 0x5412, ctypes.byref(ctypes.c_char(b"x")))),
}


def probe(checks):
    st = _status()
    rl = {}
    for name in ("CPU", "AS", "NOFILE", "NPROC", "FSIZE", "CORE", "STACK"):
        rl[name.lower()] = list(resource.getrlimit(getattr(resource, "RLIMIT_" + name)))
    out = {
        "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
        "uid_map": _read("/proc/self/uid_map").split(), "gid_map": _read("/proc/self/gid_map").split(),
        "pid": os.getpid(), "ppid": os.getppid(),
        "hostname": socket.gethostname(),
        "interfaces": _interfaces(),
        "loopback_works": _loopback_works(),
        "fds": sorted(int(x) for x in os.listdir("/proc/self/fd")),
        "rlimits": rl,
        "no_new_privs": int(st.get("NoNewPrivs", -1)),
        "cap_eff": int(st["CapEff"], 16), "cap_prm": int(st["CapPrm"], 16), "cap_bnd": int(st["CapBnd"], 16),
        "cap_amb": int(st["CapAmb"], 16),
        "seccomp": int(st.get("Seccomp", -1)),
        "env": dict(os.environ),
        "cwd": _cwd(),
        "sid": os.getsid(0), "pgid": os.getpgid(0),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }
    for c in checks:
        if c.startswith("syscall:"):
            out[c] = SYSCALLS[c.split(":", 1)[1]]()
    return out


if __name__ == "__main__":
    # The fd table is reported before anything here opens more fds of its own.
    # The listing's own directory fd is closed by the time we look at it again.
    fds = sorted(int(x) for x in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{x}"))
    result = probe(sys.argv[1:])
    result["fds"] = fds
    sys.stdout.write(json.dumps(result))
