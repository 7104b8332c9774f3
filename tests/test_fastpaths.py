"""The fast paths keep the isolation: pooled network namespaces and warm sandboxes."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import isolate
from isolate.launch import net

from conftest import ROOT, with_python

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


# ---- warm sandboxes ---------------------------------------------------------------------------
TASK = textwrap.dedent("""
    import json, os, socket, sys
    role = sys.argv[1]
    out = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
           "netns": os.readlink("/proc/self/ns/net"), "pidns": os.readlink("/proc/self/ns/pid")}
    if role == "a":
        open("/tmp/marker-a", "w").write("a")
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
        out["port"] = s.getsockname()[1]
        print(json.dumps(out), flush=True)
        sys.stdin.read()
    else:
        port = int(sys.argv[2])
        out["sees_marker"] = os.path.exists("/tmp/marker-a")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2)
            out["connect"] = "ok"
        except OSError as e:
            out["connect"] = type(e).__name__
        try:
            os.kill(int(sys.argv[3]), 0)
            out["signal"] = "ok"
        except OSError as e:
            out["signal"] = type(e).__name__
        print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def warm_pool():
    with isolate.WarmPool(with_python(), size=2) as pool:
        assert pool.wait_ready(30)
        yield pool


def test_warm_tasks_run_at_once_see_nothing_of_each_other(warm_pool):
    with warm_pool.Popen([sys.executable, "-c", TASK, "a"], stdin=isolate.PIPE, stdout=isolate.PIPE,
                         text=True) as a:
        seen_a = json.loads(a.stdout.readline())
        # a's host pid, which b must not be able to reach.
        host_pid_of_a = a.pid
        r = warm_pool.run([sys.executable, "-c", TASK, "b", str(seen_a["port"]), str(host_pid_of_a)],
                          capture_output=True, text=True)
        a.stdin.close()
    seen_b = json.loads(r.stdout)
    assert seen_a["pids"] == [1, 2] and seen_b["pids"] == [1, 2]
    assert seen_a["pidns"] != seen_b["pidns"] and seen_a["netns"] != seen_b["netns"]
    assert seen_b["sees_marker"] is False
    assert seen_b["connect"] == "ConnectionRefusedError"
    assert seen_b["signal"] == "ProcessLookupError"
    assert warm_pool.stats["served_warm"] >= 2


def test_each_warm_task_gets_a_fresh_sandbox(warm_pool):
    r1 = warm_pool.run(["sh", "-c", "echo one > /tmp/left-behind; echo $$"], capture_output=True, text=True)
    r2 = warm_pool.run(["sh", "-c", "cat /tmp/left-behind 2>&1; echo $$"], capture_output=True, text=True)
    assert r1.stdout.strip() == "2"
    assert "No such file" in r2.stdout and r2.stdout.split()[-1] == "2"


def test_warm_task_semantics_match_cold_ones(warm_pool, tmp_path):
    r = warm_pool.run(["sh", "-c", "cat; echo err >&2; pwd; exit 7"], input=b"in\n", capture_output=True,
                      cwd=str(ROOT))
    assert (r.returncode, r.stdout, r.stderr) == (7, b"in\n" + str(ROOT).encode() + b"\n", b"err\n")
    r = warm_pool.run(["sh", "-c", "kill -TERM $$"])
    assert r.signal == 15
    r = warm_pool.run(["sleep", "30"], timeout=0.5, on_timeout="result")
    assert r.timed_out
    with pytest.raises(isolate.ExecutableNotFound):
        warm_pool.run(["no-such-program-xyz"])
    rfd, wfd = os.pipe()
    try:
        warm_pool.run(["sh", "-c", f"echo via-pass-fd > /proc/self/fd/{wfd}"], pass_fds=[wfd])
        os.close(wfd)
        wfd = -1
        assert os.read(rfd, 100) == b"via-pass-fd\n"
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


def test_closing_a_warm_pool_leaves_nothing():
    # In a process of its own, so that no other pool's fds come and go meanwhile.
    code = textwrap.dedent("""
        import json, os, sys, time
        sys.path.insert(0, "tests")
        import isolate
        from conftest import open_fds, with_python, zombies_of
        isolate.run(["true"])  # the netns pool and per-process fds exist from here on
        profile = with_python()
        isolate.plan_for(profile)  # a cached plan keeps its seccomp memfd, on purpose
        before = open_fds()
        pool = isolate.WarmPool(profile, size=3)
        assert pool.wait_ready(30)
        pids = [s.pid for s in list(pool._ready)]
        pool.run(["true"])
        pool.close()
        time.sleep(0.2)
        print(json.dumps({"alive": [p for p in pids if os.path.exists(f"/proc/{p}")],
                          "fds": sorted(open_fds() ^ before), "zombies": zombies_of(os.getpid())}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"alive": [], "fds": [], "zombies": []}


def test_warm_pool_needs_a_pid_namespace():
    with pytest.raises(isolate.ProfileError):
        isolate.WarmPool("default", overrides=["namespaces.pid=false", "filesystem.view=host"])


# ---- the template mount namespace ------------------------------------------------------------------
def _mount_points(overrides):
    # (not a view template's placeholder proc under /proc, which only a template launch has:
    # tests/test_view_template.py checks it)
    r = isolate.run(["sh", "-c", "grep -v subset=pid /proc/self/mountinfo | cut -d' ' -f5"], overrides=overrides,
                    capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.split())


def test_template_gives_the_same_view_as_a_copy_of_the_callers_namespace():
    assert isolate.plan_for("default").mntns_fd >= 0
    assert isolate.plan_for("default", ["filesystem.template=false"]).mntns_fd == -1
    assert _mount_points([]) == _mount_points(["filesystem.template=false"])


def test_template_launches_from_a_caller_with_many_mounts():
    # A caller whose own mount namespace holds 300 extra mounts: the sandbox sees none of
    # them, with or without the template, and the launch works from the launcher threads.
    code = textwrap.dedent("""
        import ctypes, json, os, sys
        sys.path.insert(0, "tests")
        libc = ctypes.CDLL(None, use_errno=True)
        base = "/tmp/isolate-many-mounts"
        os.makedirs(base, exist_ok=True)
        for i in range(300):
            d = f"{base}/{i}"
            os.makedirs(d, exist_ok=True)
            assert libc.mount(b"none", d.encode(), b"tmpfs", 0, b"size=4k") == 0
        import isolate
        out = {}
        for name, ov in (("template", []), ("copy", ["filesystem.template=false"])):
            r = isolate.run(["sh", "-c", "grep -v subset=pid /proc/self/mountinfo | cut -d' ' -f5"],
                            overrides=ov, capture_output=True, text=True)
            out[name] = sorted(r.stdout.split())
        out["has_template"] = isolate.plan_for("default").mntns_fd >= 0
        print(json.dumps(out))
    """)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["has_template"]
    assert out["template"] == out["copy"]
    assert not any("isolate-many-mounts" in p for p in out["template"])
