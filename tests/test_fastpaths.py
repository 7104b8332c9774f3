"""The fast paths keep the isolation: pooled network namespaces and warm sandboxes."""

import json
import os
import socket
import sys
import textwrap
import time

import pytest

import isolate
from isolate import net

from conftest import with_python

NETNS_OF = ["sh", "-c", "readlink /proc/self/ns/net; sleep 0.5"]


def test_pooled_namespace_is_never_shared_by_two_live_sandboxes():
    pool = net.pool()
    pool.prefill()
    time.sleep(0.5)
    for _round in range(4):
        procs = [isolate.Popen(NETNS_OF, stdout=isolate.PIPE, text=True) for _ in range(12)]
        seen = [p.communicate(timeout=30)[0].strip() for p in procs]
        assert len(set(seen)) == len(seen), seen
    assert pool.stats["reused"] > 0, pool.stats  # the pool really served these


def test_pooled_namespace_has_loopback_up_and_nothing_else():
    r = isolate.run(["sh", "-c", "cat /proc/net/dev | tail -n +3 | cut -d: -f1; cat /proc/net/tcp | wc -l"],
                    capture_output=True, text=True)
    lines = r.stdout.split()
    assert lines[0] == "lo"
    assert lines[1] == "1"  # only the header: no socket left by an earlier sandbox


def test_two_sandboxes_cannot_reach_each_others_loopback_sockets():
    server = textwrap.dedent("""
        import socket, sys
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
        print(s.getsockname()[1], flush=True)
        sys.stdin.read()
    """)
    client = "import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n" \
             "    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n"
    prof = with_python()
    with isolate.Popen([sys.executable, "-c", server], profile=prof, stdin=isolate.PIPE, stdout=isolate.PIPE,
                       text=True) as srv:
        port = srv.stdout.readline().strip()
        r = isolate.run([sys.executable, "-c", client, port], profile=prof, capture_output=True, text=True)
        assert r.stdout.strip() == "ConnectionRefusedError", r.stderr
        srv.stdin.close()


def test_a_sandbox_cannot_change_its_pooled_namespace():
    r = isolate.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; echo rc=$?"],
                    overrides=["seccomp.socket_families=[\"unix\",\"inet\",\"inet6\",\"netlink\"]"],
                    capture_output=True, text=True)
    assert "rc=0" not in r.stdout
    code = ("import ctypes, socket, struct, fcntl\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "ifr = struct.pack('16sH14s', b'lo', 0, b'')\n"
            "try:\n    fcntl.ioctl(s, 0x8914, ifr)\n    print('changed')\n"  # SIOCSIFFLAGS: lo down
            "except OSError as e:\n    print(e.errno)\n")
    r = isolate.run([sys.executable, "-c", code], profile=with_python(), capture_output=True, text=True)
    assert r.stdout.strip() == "1", r.stderr  # EPERM: no CAP_NET_ADMIN over it
    r = isolate.run(["cat", "/proc/net/dev"], capture_output=True, text=True)
    assert "lo" in r.stdout


def test_without_a_pid_namespace_the_namespace_is_not_reused():
    pool = net.pool()
    before = pool.stats["reused"]
    for _ in range(5):
        isolate.run(["true"], overrides=["namespaces.pid=false", "process.die_with_parent=false",
                                         "filesystem.view=host"])
    assert pool.stats["reused"] == before
