"""isolate.kernel.seccomp_notify: the notify variant decides every call as the plain
filter does (errno returns only become USER_NOTIF, keeping the errno), and the BPF
evaluator agrees with the kernel."""

import ctypes
import errno
import os
import struct

import pytest

from isolate.kernel import seccomp_notify as sn
from isolate.kernel.syscalls import CLONE_NAMESPACE_FLAGS, IOCTLS, SOCKET_FAMILIES
from isolate.launch import plans

ARGS = ([()] + [(f, 3, 0) for f in sorted(set(SOCKET_FAMILIES.values()))] + [(0, r) for r in IOCTLS.values()]
        + [(flag,) for flag in CLONE_NAMESPACE_FLAGS.values()] + [(0, 0o4755), (0, 0o755, 0o2755)])


def _mapped(ret: int) -> int:
    return sn.RET_USER_NOTIF | (ret & sn.RET_DATA) if ret & sn.RET_ACTION == sn.RET_ERRNO else ret


@pytest.mark.parametrize("name", ["default", "strict", "agent"])
def test_the_variant_decides_every_call_as_the_filter(name):
    bpf = plans.plan_for(name).bpf
    plain, watched = sn.notify_variant(bpf), sn.notify_variant(bpf, watch_connect=True)
    seen = set()
    for nr in range(0, 470):
        for args in ARGS if nr in (16, 41, 53, 56, 90, 91, 268, 272, 308) else [()]:
            want = sn.evaluate(bpf, nr, args)
            seen.add(want & sn.RET_ACTION)
            assert sn.evaluate(plain, nr, args) == _mapped(want), (nr, args)
            assert sn.evaluate(watched, nr, args, start=sn.CONNECT_PREFIX) == _mapped(want)
            assert sn.evaluate(watched, nr, args) == (sn.RET_USER_NOTIF if nr == 42 else _mapped(want))
    assert sn.RET_ERRNO in seen and sn.RET_ALLOW in seen
    # another arch's call is never taken for connect() by the prefix
    assert sn.evaluate(watched, 42, arch=0x40000003) == _mapped(sn.evaluate(bpf, 42, arch=0x40000003))


def test_a_program_returning_the_accumulator_is_refused():
    ret_a = struct.pack("=HBBI", 0x16, 0, 0, 0)
    with pytest.raises(ValueError, match="accumulator"):
        sn.notify_variant(ret_a)
    with pytest.raises(ValueError, match="whole number"):
        sn.instructions(b"\0" * 9)


def test_the_evaluator_agrees_with_the_kernel():
    # A forked child loads the plain filter (no notify) and reports each call's errno.
    bpf = plans.plan_for("agent").bpf
    calls = [(41, (16, 3, 0)), (41, (2, 1, 0)), (272, (0x10000000,)), (435, (0, 0)), (39, ()), (101, (0, 0, 0, 0))]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
            buf = ctypes.create_string_buffer(bpf, len(bpf))

            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
            prog = Prog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
            if libc.syscall(317, 1, 0, ctypes.byref(prog)) != 0:
                os._exit(3)
            out = []
            for nr, args in calls:
                ctypes.set_errno(0)
                res = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
                out.append(0 if res >= 0 else ctypes.get_errno())
            os.write(w, struct.pack(f"={len(out)}i", *out))
        finally:
            os._exit(0)
    os.close(w)
    got = struct.unpack(f"={len(calls)}i", os.read(r, 1024))
    os.close(r)
    os.waitpid(pid, 0)
    want = []
    for nr, args in calls:
        ret = sn.evaluate(bpf, nr, args)
        want.append(ret & sn.RET_DATA if ret & sn.RET_ACTION == sn.RET_ERRNO else 0)
    assert list(got) == want
    assert want[0] == errno.EPERM and want[1] == 0 and want[3] == errno.ENOSYS
