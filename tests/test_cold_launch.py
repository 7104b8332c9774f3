"""The cold launch's fast paths give the program exactly what the old paths gave it.

run()'s direct path (no subprocess.Popen), the template mount namespace joined by a
thread of the launch path itself, and prepared cgroups (tests/test_cgroup.py) are
compared here from the inside: the program reports what it sees, once through the
direct path and once through Popen + communicate, and the reports must be equal.
"""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

import isolate
from isolate.launch import _launch, cgroup, hostids, net, process
from conftest import PROBE, held_by_closer, open_fds, with_python

MiB = 1 << 20
CHECKS = ["syscall:" + n for n in ("netlink_socket", "unix_socket", "inet_socket", "unshare_user", "keyctl",
                                    "mount_tmpfs", "ptrace_traceme", "tiocsti")]
# What else the program sees: its mounts (point, options, type, source), its seccomp
# filters, its cgroups (paths without the per-launch name) and limits, its umask.
EXTRA = r"""
import json, os, re, sys
out = {}
out["mounts"] = sorted(" ".join(l.split()[4:6] + l.split(" - ")[1].split()[:1]) for l in open("/proc/self/mountinfo"))
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
out["seccomp_filters"] = status.get("Seccomp_filters", "").strip()
out["umask"] = status["Umask"].strip()
cg = [l.strip().split(":", 2) for l in open("/proc/self/cgroup")]
out["cgroups"] = sorted((c[1], re.sub(r"/\d+-\d+$", "/N", c[2])) for c in cg)
limits = {}
for ctrl, path in ((c[1], c[2]) for c in cg):
    for f in ("memory.limit_in_bytes", "pids.max"):
        p = f"/sys/fs/cgroup/{ctrl}{path}/{f}"
        if os.path.exists(p):
            limits[f] = open(p).read().strip()
out["limits"] = limits
sys.stdout.write(json.dumps(out))
"""


def _host_id(report: dict) -> dict:
    """The report with the host id of a root caller's sandbox (the lowest one free, which
    other processes' sandboxes may hold) as "ID", once checked to be one of the range."""
    for key in ("uid_map", "gid_map"):
        m = report.get(key)
        if m and len(m) == 3 and hostids.BASE <= int(m[1]) < hostids.BASE + hostids.COUNT:
            report[key] = [m[0], "ID", m[2]]
    return report


def _via_popen(cmd, prof, **kw):
    with isolate.Popen(cmd, profile=prof, stdout=isolate.PIPE, stderr=isolate.PIPE, **kw) as p:
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return _host_id(json.loads(out))


def _via_run(cmd, prof, **kw):
    r = isolate.run(cmd, profile=prof, capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    return _host_id(json.loads(r.stdout))


@pytest.fixture
def direct_only(monkeypatch):
    """isolate.run must not build a Popen (the direct path); counts the Popens made."""
    made = []
    real = process.Popen.__init__

    def init(self, *a, **kw):
        made.append(a)
        real(self, *a, **kw)

    monkeypatch.setattr(process.Popen, "__init__", init)
    return made


@pytest.mark.parametrize("name", ["default", "strict"])
def test_direct_run_shows_the_program_what_popen_shows_it(name, direct_only):
    prof = with_python(name, ro=["/sys/fs/cgroup"], namespaces={"cgroup": False})
    cmd = [sys.executable, str(PROBE), *CHECKS]
    old = _via_popen(cmd, prof)
    assert len(direct_only) == 1
    new = _via_run(cmd, prof)
    assert len(direct_only) == 1  # no Popen for run()
    assert new == old
    # What it is, not only that it is the same: pid 1 is isolate-init, its own maps, the filter.
    assert new["ppid"] == 1 and new["pid"] == 2 and new["seccomp"] == 2
    assert new["hostname"] == ("sandbox" if name == "strict" else "isolate")
    assert new["cap_eff"] == 0 and new["no_new_privs"] == 1
    assert new["fds"] == [0, 1, 2]
    extra_old = _via_popen([sys.executable, "-c", EXTRA], prof)
    extra_new = _via_run([sys.executable, "-c", EXTRA], prof)
    assert extra_new == extra_old
    assert extra_new["seccomp_filters"] == "1"
    limits = {"default": (4 << 30, 1024), "strict": (512 * MiB, 128)}[name]
    assert extra_new["limits"] == {"memory.limit_in_bytes": str(limits[0]), "pids.max": str(limits[1])}
    assert any(m.startswith("/ ro,") for m in extra_new["mounts"])


def test_direct_run_env_cwd_and_stdio_as_popen(direct_only, tmp_path):
    prof = with_python("default", rw=[str(tmp_path)])
    cmd = [sys.executable, "-c", "import json, os, sys; print(json.dumps({'env': dict(os.environ), "
           "'cwd': os.getcwd(), 'fds': sorted(os.listdir('/proc/self/fd'))}))"]
    for kw in ({}, {"env": {"A": "1", "PATH": "/usr/bin"}}, {"cwd": str(tmp_path)}):
        assert _via_run(cmd, prof, **kw) == _via_popen(cmd, prof, **kw), kw
    assert len(direct_only) == 3
    r = isolate.run(["sh", "-c", "read x; echo got $x; echo e >&2"], profile=prof, input=b"1\n",
                    stdout=isolate.PIPE, stderr=isolate.DEVNULL)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"got 1\n", None)
    r = isolate.run(["sh", "-c", "cat; echo done"], profile=prof, stdin=isolate.DEVNULL, capture_output=True)
    assert (r.stdout, r.stderr) == (b"done\n", b"")
    assert len(direct_only) == 3
    # Text mode, shell=True, pass_fds, a positional bufsize: through Popen, as before.
    r = isolate.run("echo $((1+2))", shell=True, profile=prof, capture_output=True, text=True)
    assert r.stdout == "3\n" and len(direct_only) == 4


def test_direct_run_big_input_and_output_both_ways(direct_only):
    data = os.urandom(3 * MiB)
    r = isolate.run(["sh", "-c", "cat; cat /dev/null >&2"], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == data and r.stderr == b""
    # A program that reads none of its input: no BrokenPipeError, as communicate().
    r = isolate.run(["true"], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0
    assert not direct_only


def test_direct_run_result_fields_and_errors(direct_only):
    r = isolate.run(["sh", "-c", "exit 3"])
    assert (r.returncode, r.outcome, r.timed_out, r.signal) == (3, "exited", False, None)
    assert r.rusage is not None and r.duration > 0 and r.memory_peak is not None and r.violations == ()
    assert list(r.timings)[0] == "start" and "returned" in r.timings and "mount" in r.timings
    with pytest.raises(isolate.CalledProcessError) as e:
        isolate.run(["sh", "-c", "echo out; exit 5"], capture_output=True, check=True)
    assert e.value.returncode == 5 and e.value.stdout == b"out\n"
    r = isolate.run(["sh", "-c", "kill -TERM $$"])
    assert (r.returncode, r.outcome, r.signal) == (-signal.SIGTERM, "signaled", signal.SIGTERM)
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run(["/nonexistent"])
    with pytest.raises(isolate.WorkingDirectoryNotFound):
        isolate.run(["true"], cwd="/nonexistent-dir")
    with pytest.raises(TypeError):
        isolate.run([1])
    with pytest.raises(ValueError, match="embedded null byte"):
        isolate.run(["echo", "a\0b"])
    with pytest.raises(ValueError, match="embedded null byte"):
        isolate.run(["true"], env={"A": "x\0"})
    with pytest.raises(IndexError):
        isolate.run([])
    assert not direct_only


def test_direct_run_timeout_kills_the_whole_sandbox(direct_only):
    with pytest.raises(isolate.TimeoutExpired) as e:
        isolate.run(["sh", "-c", "echo before; sleep 60 & sleep 60"], capture_output=True, timeout=0.5)
    assert e.value.stdout == b"before\n" and e.value.timeout == 0.5
    res = e.value.result
    assert res.timed_out and res.outcome == "timed_out" and res.returncode == -signal.SIGKILL
    assert res.stdout == b"before\n" and res.rusage is not None
    r = isolate.run(["sleep", "60"], timeout=0.3, on_timeout="result")
    assert r.timed_out and r.returncode == -signal.SIGKILL
    # A program that closes its output but does not exit: the wait has the deadline too.
    r = isolate.run(["sh", "-c", "exec >&- 2>&-; sleep 60"], capture_output=True, timeout=0.5,
                    on_timeout="result")
    assert r.timed_out and r.stdout == b""
    assert not direct_only


def test_direct_run_oom_outcome(direct_only):
    prof = with_python(cgroup={"memory_max": "48M", "pids_max": 50})
    bomb = "b = []\nwhile True:\n    b.append(bytearray(4 << 20)); [b[-1].__setitem__(i, 1) for i in range(0, 4 << 20, 4096)]"
    r = isolate.run([sys.executable, "-c", bomb], profile=prof, capture_output=True, timeout=60)
    assert r.outcome == "oom" and r.oom and r.returncode == -signal.SIGKILL
    assert r.memory_peak is not None and r.memory_peak <= 48 * MiB
    assert not direct_only


def test_direct_run_leaks_nothing(direct_only):
    isolate.run(["true"])
    before = open_fds()
    for i in range(20):
        isolate.run(["sh", "-c", "echo x; exit %d" % (i % 2)], capture_output=True)
        isolate.run(["sh", "-c", "echo x"], input=b"y", capture_output=True, timeout=30)
    for _ in range(3):
        with pytest.raises(isolate.ExecutableNotFound):
            isolate.run(["/nonexistent"], capture_output=True)
        isolate.run(["sleep", "10"], timeout=0.05, on_timeout="result", capture_output=True)
    assert open_fds() == before
    assert hostids.held() == frozenset()
    assert not direct_only
    # Network namespaces: only the pool's own (at most its size), none held for a sandbox.
    nets = 0
    for x in os.listdir("/proc/self/fd"):
        try:
            nets += os.readlink(f"/proc/self/fd/{x}").startswith("net:[")
        except OSError:
            pass  # the listing's own fd
    assert nets <= net.pool().size
    mine = []
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        parent = os.path.join(base, cgroup.PARENT)
        mine += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(f"{os.getpid()}-")]
    assert set(mine) <= set(cgroup.pool().prepared())


def test_template_launch_from_any_thread_keeps_the_callers_fs():
    # The template mount namespace is joined by a short-lived thread inside spawn: the
    # calling thread keeps its own root, cwd and umask, and the program gets the caller's umask.
    assert isolate.plan_for("default").mntns_fd >= 0
    seen = []

    def worker():
        old = os.umask(0o027)
        try:
            r = isolate.run(["sh", "-c", "umask"], capture_output=True)
            seen.append((r.stdout.strip(), os.getcwd(), os.readlink("/proc/thread-self/ns/mnt")))
        finally:
            os.umask(old)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(b"0027", os.getcwd(), os.readlink("/proc/self/ns/mnt"))]
    # No thread of ours stays in the template's mount namespace.
    for tid in os.listdir("/proc/self/task"):
        try:
            ns = os.readlink(f"/proc/self/task/{tid}/ns/mnt")
        except FileNotFoundError:
            continue  # a thread that has ended meanwhile
        assert ns == os.readlink("/proc/self/ns/mnt")
    # And the caller's threads share one fs_struct still: a chdir in one is seen in another.
    here = os.getcwd()
    out = []
    t = threading.Thread(target=lambda: (os.chdir("/"), out.append(1)))
    t.start()
    t.join()
    try:
        assert os.getcwd() == "/"
    finally:
        os.chdir(here)


def test_cold_launch_subprocess_conformance_of_run():
    # The same answers as subprocess.run for what both can do (a sandbox that shows the host's /usr).
    cmd = ["sh", "-c", "printf '%s' \"$1\"; printf err >&2; exit 7", "sh", "arg"]
    a = subprocess.run(cmd, capture_output=True)
    b = isolate.run(cmd, capture_output=True)
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
    with pytest.raises(subprocess.TimeoutExpired):
        isolate.run(["sleep", "5"], timeout=0.2)


def test_pools_grow_to_the_number_of_sandboxes_running_at_once():
    # More sandboxes at once than the network namespace pool's first size: the pool keeps
    # that many afterwards (no namespace made and destroyed per launch), up to its maximum;
    # each sandbox still has a namespace and a cgroup of its own.
    prof = with_python(cgroup={"memory_max": "111M", "pids_max": 99})
    n = 14
    for _ in range(2):
        isolate.run(["true"], profile=prof)
    procs = [isolate.Popen(["sh", "-c", "read x"], profile=prof, stdin=isolate.PIPE) for _ in range(n)]
    try:
        nets = {os.readlink(f"/proc/{p.pid}/ns/net") for p in procs}
        groups = {open(f"/proc/{p.pid}/cgroup").read() for p in procs}
        assert len(nets) == n and len(groups) == n
    finally:
        for p in procs:
            p.communicate(b"\n", timeout=30)
    assert [p.returncode for p in procs] == [0] * n
    pool = net.pool()
    assert n <= pool.size <= pool.MAX


# ---- the sandbox's mount namespace is torn down off the caller's path -----------------

def _ns_inode(text: str) -> int:
    return int(text.strip().split("[")[1].rstrip("]"))


def _in_process_table(ino: int) -> bool:
    for x in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{x}") == f"mnt:[{ino}]":
                return True
        except OSError:
            pass
    return False


def test_held_mount_namespace_is_the_sandboxes_own_and_goes_after_the_reap():
    # The launch path holds the namespace clone made for the sandbox (what the program
    # reports as its own), from before the program runs until it was reaped: in the
    # holding thread's own fd table, not in the process's (where every child another
    # launch clones would copy it, and the last copy's close would tear it down there).
    with isolate.Popen(["sh", "-c", "readlink /proc/self/ns/mnt; read x || true"], stdin=isolate.PIPE,
                       stdout=isolate.PIPE) as p:
        inside = _ns_inode(p.stdout.readline().decode())
        held = p._mntns
        assert held >= 2 ** 32, "a token of the holding thread, not an fd of ours"
        assert inside in held_by_closer()
        assert not _in_process_table(inside)
        assert inside != os.stat("/proc/self/ns/mnt").st_ino
        p.stdin.close()
        assert p.wait(30) == 0
    assert p._mntns == -1
    _launch.drain_deferred()
    assert _launch.deferred() == 0
    assert inside not in held_by_closer()
    assert _launch.closer_fds() and all(os.readlink(f"/proc/self/fd/{fd}").startswith("socket:[")
                                        for fd in _launch.closer_fds())
    # run()'s direct path holds it too: the slot's token is handed over when reaped.
    seen = []
    real = process.release_mntns
    process.release_mntns = lambda token: (seen.append((token, held_by_closer())), real(token))
    try:
        r = isolate.run(["sh", "-c", "readlink /proc/self/ns/mnt"], capture_output=True)
    finally:
        process.release_mntns = real
    ino = _ns_inode(r.stdout.decode())
    assert len(seen) == 1 and seen[0][0] >= 2 ** 32 and ino in seen[0][1]
    _launch.drain_deferred()
    assert ino not in held_by_closer()


def test_after_run_returns_what_the_caller_sees_is_final(tmp_path):
    # The program's writes to a read-write bind, the cgroup's removal and the host id's
    # release are done when run() returns, although the namespace is torn down later.
    prof = with_python("default", rw=[str(tmp_path)])
    for i in range(10):
        r = isolate.run(["sh", "-c", f"printf %s {i} > {tmp_path}/out; cat /proc/self/cgroup"], profile=prof,
                        capture_output=True)
        assert r.returncode == 0
        assert (tmp_path / "out").read_text() == str(i)
        assert hostids.held() == frozenset()
        for line in r.stdout.decode().split():
            _, ctrl, path = line.split(":", 2)
            if ctrl in ("memory", "pids") and path != "/":
                assert not os.path.exists(f"/sys/fs/cgroup/{ctrl}{path}")
    # The tmpfs of the sandbox's /tmp is gone with its namespace once the closing thread ran.
    _launch.drain_deferred()
    assert _launch.deferred() == 0


def test_deferred_closes_are_bounded_and_fork_safe():
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(400)]
    for fd in fds:
        _launch.defer_close(fd)   # more than the queue holds: the rest is closed at once
    assert _launch.deferred() <= 128
    _launch.drain_deferred()
    assert _launch.deferred() == 0
    assert not any(process._fd_open(fd) for fd in fds)
    with pytest.raises(ValueError):
        _launch.defer_close(-1)
    # A fork while fds are queued: the child closes its copies (none stays open in it).
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(100)]
    for fd in fds:
        _launch.defer_close(fd)
    pid = os.fork()
    if pid == 0:
        ok = _launch.deferred() == 0 and not any(process._fd_open(fd) for fd in fds)
        # And its own closing thread starts again when it needs one.
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        _launch.defer_close(fd)
        _launch.drain_deferred()
        os._exit(0 if ok and not process._fd_open(fd) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    _launch.drain_deferred()
    assert not any(process._fd_open(fd) for fd in fds)


# ---- fewer superblocks per launch, the same view -----------------------------------------
VIEW = r"""
import json, os
out = {}
mi = [l.split() for l in open("/proc/self/mountinfo")]
def entry(point):
    for f in mi:
        if f[4] == point:
            sep = f.index("-")
            return {"root": f[3], "opts": f[5].split(","), "fstype": f[sep + 1], "dev": f[2]}
out["mounts"] = {p: entry(p) for p in ("/", "/proc/acpi", "/etc/ssh", "/etc/ssl/private", "/tmp", "/dev")}
out["tmpfs_sbs"] = len({f[2] for f in mi if f[f.index("-") + 1] == "tmpfs"})
out["listing"] = {p: sorted(os.listdir(p)) for p in ("/proc/acpi", "/etc/ssh", "/etc/ssl/private")}
out["root"] = sorted(os.listdir("/"))
out["writes"] = {}
for p in ("/proc/acpi/x", "/etc/ssh/x", "/etc/ssl/private/x", "/x"):
    try:
        open(p, "w").close()
        out["writes"][p] = "ok"
    except OSError as e:
        out["writes"][p] = e.errno
print(json.dumps(out))
"""


def test_hidden_directories_and_the_root_share_the_staging_superblock_read_only():
    prof = with_python("default")
    r = isolate.run([sys.executable, "-c", VIEW], profile=prof, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    m = v["mounts"]
    # The root and the empty directories over hidden paths are one tmpfs (the staging's),
    # each a read-only bind of its own directory; /tmp and /dev are tmpfs of their own.
    assert m["/"]["fstype"] == "tmpfs" and m["/"]["root"] == "/newroot" and "ro" in m["/"]["opts"]
    for p in ("/proc/acpi", "/etc/ssh", "/etc/ssl/private"):
        e = m[p]
        if e is None:
            continue  # not on this host (acpi): nothing to hide
        # An empty directory of the root's tmpfs: the staging's (/.empty-*), or with a view
        # template one under the mount point of /tmp, which the launch's own tmpfs covers;
        # where a bind lies under /tmp (a checkout in /tmp), one under /dev/shm's mount point
        # in the template's /dev tmpfs, which the launch's /dev/shm covers.
        in_root = e["dev"] == m["/"]["dev"] and e["root"] in (
            "/.empty-555", "/.empty-755", "/newroot/tmp/.empty-555", "/newroot/tmp/.empty-755")
        in_dev = e["dev"] == m["/dev"]["dev"] and e["root"] in ("/shm/.empty-555", "/shm/.empty-755")
        assert in_root or in_dev, (p, e)
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(e["opts"]), (p, e)
        assert v["listing"][p] == []
        assert v["writes"][p + "/x"] == errno.EROFS
    assert m["/tmp"]["dev"] != m["/"]["dev"] and m["/dev"]["dev"] != m["/"]["dev"]
    assert v["writes"]["/x"] == errno.EROFS
    # Nothing of the staging is in the view: no /oldroot, /newroot or empty directories at /.
    assert not {"oldroot", "newroot", ".empty-555", ".empty-755"} & set(v["root"])
    # tmpfs superblocks: the staging (root + empties), /tmp, /dev, /dev/shm (was 3 more).
    assert v["tmpfs_sbs"] == 4


def test_kept_host_id_lock_files_still_exclude_other_holders(monkeypatch):
    # Two ids at the top of the range (other processes use it from below).
    monkeypatch.setattr(hostids, "BASE", hostids.BASE + hostids.COUNT - 2)
    monkeypatch.setattr(hostids, "COUNT", 2)
    first = hostids.allocate()
    low = first.id
    first.release()
    assert low in hostids._idle and not hostids.in_use(low)   # kept open, not locked
    # Another holder (an open file of its own, as another process has): not taken from it.
    other = os.open(hostids._lock_path(low), os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        lease = hostids.allocate()
        assert lease.id == low + 1
        lease.release()
    finally:
        os.close(other)
    # The lock file made again (the directory was removed): the kept fd locks a file nobody
    # else opens; it is not trusted, the id's lock is taken on the file at its path.
    os.unlink(hostids._lock_path(low))
    lease = hostids.allocate()
    try:
        assert lease.id == low and hostids.in_use(low)
    finally:
        lease.release()
    # A sandbox's id is held while it runs, free after, through the kept fds too.
    r = isolate.run(["true"])
    assert r.returncode == 0 and hostids.held() == frozenset() and not hostids.in_use(low)


def test_a_kept_lock_fd_the_caller_closed_is_neither_used_nor_closed(monkeypatch, tmp_path):
    # As CPython's own subprocess tests do: the caller closes numbers it does not own, and
    # opens files of its own at them. The kept fd is then not ours: not locked, not closed.
    monkeypatch.setattr(hostids, "BASE", hostids.BASE + hostids.COUNT - 2)
    monkeypatch.setattr(hostids, "COUNT", 2)
    first = hostids.allocate()
    low = first.id
    first.release()
    kept = hostids._idle[low][0]
    src = os.open(tmp_path / "callers-file", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    mine = os.dup2(src, kept, inheritable=False)  # the caller's file now has the kept fd's number
    os.close(src)
    try:
        lease = hostids.allocate()
        try:
            assert lease.id == low and hostids.in_use(low)
        finally:
            lease.release()
        os.fstat(mine)  # still the caller's file
        assert os.path.samestat(os.fstat(mine), os.stat(tmp_path / "callers-file"))
        assert not hostids.in_use(low)
    finally:
        os.close(mine)


def test_a_held_lock_fd_the_caller_closed_is_not_closed_at_release(monkeypatch, tmp_path):
    # While a sandbox runs, the caller closes the held lock fd's number and opens a file of
    # its own there: release() must leave that file alone (it is not the lock any more).
    monkeypatch.setattr(hostids, "BASE", hostids.BASE + hostids.COUNT - 2)
    monkeypatch.setattr(hostids, "COUNT", 2)
    lease = hostids.allocate()
    held = hostids._held[lease.id][0]
    src = os.open(tmp_path / "callers-file", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    mine = os.dup2(src, held, inheritable=False)  # closes the lock fd (its flock goes with it)
    os.close(src)
    try:
        lease.release()
        assert os.path.samestat(os.fstat(mine), os.stat(tmp_path / "callers-file"))
        assert lease.id not in hostids.held() and not hostids.in_use(lease.id)
        assert lease.id not in hostids._idle
    finally:
        os.close(mine)


# ---- what run()'s direct path keeps per Plan (process._fixed) and per caller ------------
def test_kept_variables_are_read_at_every_launch(monkeypatch, direct_only):
    # default keeps TERM: the program sees the caller's TERM of the moment, also when the
    # per-plan environment was made with another value (or with none).
    seen = []
    for value in ("vt100", "xterm-256color", None, "dumb"):
        if value is None:
            monkeypatch.delenv("TERM", raising=False)
        else:
            monkeypatch.setenv("TERM", value)
        r = isolate.run(["sh", "-c", 'echo "${TERM-unset}"; echo "$PATH"; echo "$LANG"'], capture_output=True)
        seen.append(r.stdout.decode().split("\n")[:3])
    assert [s[0] for s in seen] == ["vt100", "xterm-256color", "unset", "dumb"]
    assert all(s[1:] == ["/usr/local/bin:/usr/bin:/bin", "C.UTF-8"] for s in seen)
    assert not direct_only


def test_the_plans_path_is_searched_not_the_callers(monkeypatch, direct_only):
    # The program is looked up in its own environment's PATH (the profile's), whatever the
    # caller's PATH says at that moment; the per-plan exec paths follow argv[0].
    import pathlib
    import shutil
    import tempfile

    d = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp"))  # (/tmp is the sandbox's own tmpfs)
    try:
        d.chmod(0o755)
        (d / "isolate-only-here").write_text("#!/bin/sh\necho found\n")
        (d / "isolate-only-here").chmod(0o755)
        prof = with_python("default", ro=[str(d)])
        for path in (f"{d}:/usr/bin:/bin", "/nonexistent"):
            monkeypatch.setenv("PATH", path)
            with pytest.raises(isolate.ExecutableNotFound):
                isolate.run(["isolate-only-here"], profile=prof, capture_output=True)
            assert isolate.run([str(d / "isolate-only-here")], profile=prof, capture_output=True).stdout == b"found\n"
            assert isolate.run(["sh", "-c", "command -v sh"], profile=prof, capture_output=True).stdout.strip() \
                in (b"/usr/local/bin/sh", b"/usr/bin/sh", b"/bin/sh")
            assert isolate.run(["printf", "x"], profile=prof, capture_output=True).stdout == b"x"
    finally:
        shutil.rmtree(d)
    assert not direct_only


def test_env_given_and_glob_keeps_are_built_per_launch(monkeypatch, direct_only):
    r = isolate.run(["sh", "-c", "echo $A"], env={"A": "given", "PATH": "/usr/bin:/bin"}, capture_output=True)
    assert r.stdout == b"given\n"
    prof = {"extends": "default", "env": {"keep": ["ISOLATE_T_*"]}}
    for value in ("1", "2"):
        monkeypatch.setenv("ISOLATE_T_X", value)
        r = isolate.run(["sh", "-c", "echo $ISOLATE_T_X"], profile=prof, capture_output=True)
        assert r.stdout == value.encode() + b"\n"
    with pytest.raises(ValueError, match="embedded null byte"):
        isolate.run(["true"], env={"A": "x\0y"})
    assert not direct_only


def test_plan_lookup_follows_the_caller_context(tmp_path, monkeypatch):
    # The plan cache's quick key: the same profile from another cwd ({cwd} in the view)
    # and another ISOLATE_DOCTOR_DISABLE is another plan, as with the hashed key.
    from isolate.launch import plans

    a = plans.plan_for("default")
    assert plans.plan_for("default") is a
    monkeypatch.chdir(tmp_path)
    b = plans.plan_for("default")
    assert b is not a
    monkeypatch.setenv("ISOLATE_DOCTOR_DISABLE", "nothing-real")
    assert plans.plan_for("default") is not b
    monkeypatch.delenv("ISOLATE_DOCTOR_DISABLE")
    assert plans.plan_for("default") is b
    r = isolate.run(["sh", "-c", "pwd"], capture_output=True)
    assert r.stdout.strip() == os.fsencode(tmp_path)


def test_the_pid_the_pools_check_is_the_forked_childs_own():
    from isolate.kernel import procfs

    assert procfs.pid() == os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, b"%d %d" % (procfs.pid(), os.getpid()))
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 64).split()
    os.close(r)
    os.waitpid(pid, 0)
    assert data[0] == data[1] == str(pid).encode()
