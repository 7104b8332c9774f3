"""[cgroup] limits: memory and process count that hold, OOM as its own outcome, no leaks.

The v1 hierarchy (this machine: memory and pids are bound to cgroup v1) is tested for
real; the v2 file-writing logic against a fake hierarchy in a tmp dir (a fresh cgroup2
mount here offers neither memory nor pids).
"""

import errno
import json
import os
import shutil
import signal
import sys
import time

import pytest

import isolate
from isolate.kernel import cgroups
from isolate.launch import cgroup
from isolate import doctor
from conftest import cli, pids_with_cmdline, with_python

MiB = 1 << 20


def _leftovers() -> list:
    """cgroup directories of this process that still exist, in every isolate/ parent
    (but the prepared ones, fresh and unused: cgroup.pool().prepared())."""
    found = []
    prepared = set(cgroup.pool().prepared())
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified"):
        parent = os.path.join(base, cgroup.PARENT)
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            continue
        found += [os.path.join(parent, n) for n in names if n.startswith(f"{os.getpid()}-")]
    return [d for d in found if d not in prepared]


def _py(code: str, marker: str = "") -> list:
    return [sys.executable, "-c", code] + ([marker] if marker else [])


MEMORY_BOMB = """
import sys
blocks = []
while True:
    b = bytearray(4 << 20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    blocks.append(b)
    print(len(blocks) * 4, flush=True)
"""


# ---- memory -------------------------------------------------------------------------------------
def test_memory_bomb_is_oom_killed_and_reported():
    prof = with_python(cgroup={"memory_max": "64M"})
    plan = isolate.plan_for(prof)
    # (pids_max from default)
    assert plan.cgroup_mode == "v1" and dict(plan.cgroup) == {"memory_max": 64 * MiB, "pids_max": 1024}
    t = time.monotonic()
    r = isolate.run(_py(MEMORY_BOMB), profile=prof, capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t < 20
    assert r.outcome == "oom" and r.oom is True, (r.returncode, r.stderr)
    assert r.returncode == -signal.SIGKILL and not r.timed_out
    # From the inside: it got close to the limit, never past it.
    got_mb = int(r.stdout.split()[-1])
    assert 32 <= got_mb <= 64, r.stdout[-100:]
    # From the outside: the cgroup's own peak.
    assert r.memory_peak is not None and 32 * MiB <= r.memory_peak <= 64 * MiB + 4 * MiB
    assert _leftovers() == []


def test_within_the_limit_is_an_ordinary_exit():
    prof = with_python(cgroup={"memory_max": "80M", "pids_max": 64})
    r = isolate.run(_py("print(len(bytearray(8 << 20)))"), profile=prof, capture_output=True, text=True)
    assert (r.returncode, r.outcome, r.oom, r.stdout.strip()) == (0, "exited", False, str(8 * MiB))
    assert 8 * MiB <= r.memory_peak <= 80 * MiB
    # No limit: no cgroup, nothing reported.
    r = isolate.run(["true"], profile=with_python(cgroup={"memory_max": None, "pids_max": None}))
    assert (r.outcome, r.oom, r.memory_peak) == ("exited", False, None)


def test_cli_oom_exits_137_with_one_line():
    r = cli("run", "--set", "cgroup.memory_max=64M", "--", "sh", "-c", "x=a; while :; do x=$x$x; done")
    assert r.returncode == 137, (r.returncode, r.stderr)
    assert r.stderr == f"isolate: the sandbox ran out of memory (cgroup.memory_max = {64 * MiB})\n"


# ---- processes ------------------------------------------------------------------------------------
FORK_BOMB = """
import os, sys
r, w = os.pipe()
n = 0
while n < 1000:
    try:
        pid = os.fork()
    except OSError as e:
        print(n, e.errno, flush=True)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)   # stay alive until the sandbox ends
        os._exit(0)
    n += 1
else:
    print(n, 0, flush=True)
"""


def test_fork_bomb_stops_at_pids_max_and_dies_with_the_sandbox():
    marker = f"forkbomb-{os.getpid()}"
    prof = with_python(cgroup={"pids_max": 32})
    t = time.monotonic()
    r = isolate.run(_py(FORK_BOMB, marker), profile=prof, capture_output=True, text=True, timeout=30)
    assert time.monotonic() - t < 10
    forks, err = map(int, r.stdout.split())
    # 32 in all: isolate-init, the program and 30 children; the 31st fork gets EAGAIN.
    assert err == errno.EAGAIN and 1 <= forks <= 30, r.stdout
    assert pids_with_cmdline(marker) == []  # the whole sandbox was killed after
    assert _leftovers() == []


def test_shell_fork_bomb_is_contained_and_killed():
    # In a pid namespace the sandbox ends with its program: keep the program alive.
    with isolate.Popen(["sh", "-c", "b(){ b|b& }; b; sleep 30"], profile="default",
                       overrides=["cgroup.pids_max=16"], stdout=isolate.DEVNULL, stderr=isolate.DEVNULL) as p:
        time.sleep(1.0)
        procs = open(os.fsdecode(p._cgroup.procs[0])).read().split()
        assert 1 <= len(procs) <= 16
        t = time.monotonic()
        p.kill()
        p.wait(timeout=10)
        assert time.monotonic() - t < 5
    # From the outside: forks were refused, and there were never more than 16.
    assert p.cgroup_usage.pids_refused > 0
    assert p.cgroup_usage.pids_peak is None or p.cgroup_usage.pids_peak <= 16
    assert _leftovers() == []


# ---- disk -----------------------------------------------------------------------------------------
def test_disk_filler_stops_at_tmpfs_size():
    prof = with_python()
    prof["filesystem"]["tmpfs"] = [{"path": "/tmp", "size": "4M"}]
    code = """
import errno
n = 0
try:
    with open("/tmp/fill", "wb") as f:
        while True:
            f.write(b"x" * 65536)
            f.flush()
            n += 65536
except OSError as e:
    print(n, errno.errorcode[e.errno])
"""
    r = isolate.run(_py(code), profile=prof, capture_output=True, text=True, timeout=30)
    written, err = r.stdout.split()
    assert err == "ENOSPC" and 3 * MiB <= int(written) <= 4 * MiB, r.stdout


# ---- no leaks -------------------------------------------------------------------------------------
def test_no_cgroup_left_after_many_runs():
    prof = with_python(cgroup={"memory_max": "128M", "pids_max": 100})
    for i in range(50):
        r = isolate.run(["sh", "-c", "sleep 0.001 & exit $((%d %% 3))" % i], profile=prof)
        assert r.returncode == i % 3
    assert _leftovers() == []
    # A launch that fails after its cgroup was made leaves nothing either.
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run(["/nonexistent"], profile=prof)
    assert _leftovers() == []


def test_cgroup_procs_write_failure_is_a_setup_error(monkeypatch):
    real_create = cgroup.create

    def broken(*a, **kw):
        g = real_create(*a, **kw)
        g.dirs = [g.dirs[0] + "-missing"] + g.dirs  # a cgroup.procs that cannot be opened
        return g

    monkeypatch.setattr(cgroup, "create", broken)
    with pytest.raises(isolate.SandboxSetupError) as e:
        isolate.run(["true"], profile="default", overrides=["cgroup.pids_max=33"])
    assert e.value.step == "cgroup" and e.value.errno == errno.ENOENT
    assert e.value.path.endswith("-missing/cgroup.procs")
    monkeypatch.undo()
    for d in _leftovers():  # the real directory made by real_create is gone too
        pytest.fail(f"left behind: {d}")


# ---- no cgroup available --------------------------------------------------------------------------
def test_without_cgroup_fails_closed(no_memory_cgroup):
    with pytest.raises(isolate.UnsupportedError) as e:
        isolate.run(["true"], profile=with_python(cgroup={"memory_max": "256M", "fallback": "fail"}))
    assert e.value.field == "cgroup.memory_max"
    assert "cgroup.memory_max" in str(e.value) and "memory controller" in str(e.value)
    # The CLI says so in one line, exit 125.
    r = cli("run", "--set", "cgroup.memory_max=256M", "--set", "cgroup.fallback=fail", "--", "true",
            env=dict(os.environ, ISOLATE_DOCTOR_DISABLE="cgroup_memory_limit"))
    assert r.returncode == 125 and r.stderr.startswith("isolate: cgroup.memory_max: "), r.stderr
    # pids alone still has its cgroup
    assert isolate.plan_for(with_python(cgroup={"pids_max": 50, "memory_max": None})).cgroup_mode == "v1"


def test_without_cgroup_falls_back_to_rlimits(no_memory_cgroup):
    prof = with_python(cgroup={"memory_max": "512M", "pids_max": 64, "fallback": "rlimits"})
    plan = isolate.plan_for(prof)
    assert plan.cgroup_mode == "rlimits"
    assert (9, 512 * MiB, 512 * MiB) in plan.rlimits and (6, 64, 64) in plan.rlimits
    assert not [k for k, _ in doctor.requirements(plan) if k.startswith("cgroup")]
    code = "import json, resource; print(json.dumps([resource.getrlimit(resource.RLIMIT_AS), " \
           "resource.getrlimit(resource.RLIMIT_NPROC), open('/proc/self/cgroup').read()]))"
    r = isolate.run(_py(code), profile=prof, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    as_, nproc, cg = json.loads(r.stdout)
    assert as_ == [512 * MiB, 512 * MiB] and nproc == [64, 64]
    assert "isolate/" not in cg  # no cgroup was made
    # A lower rlimits.as in the profile wins over memory_max.
    prof["rlimits"] = {"as": "300M"}
    assert (9, 300 * MiB, 300 * MiB) in isolate.plan_for(prof).rlimits


def test_strict_profile_limits():
    plan = isolate.plan_for("strict")
    assert dict(plan.cgroup) == {"memory_max": 512 * MiB, "pids_max": 128}
    assert plan.cgroup_mode == "v1"
    with isolate.Popen(["sh", "-c", "grep -E ':(memory|pids):' /proc/self/cgroup; read x"], profile="strict",
                       stdin=isolate.PIPE, stdout=isolate.PIPE, text=True) as p:
        inside = p.stdout.readline() + p.stdout.readline()
        # From the host: the sandbox is in its own cgroups...
        with open(f"/proc/{p.pid}/cgroup") as f:
            outside = f.read()
        p.stdin.close()
    assert sum(1 for line in outside.splitlines()
               if line.split(":")[1] in ("memory", "pids") and "/isolate/" in line) == 2, outside
    # ...and its cgroup namespace is rooted there: no host path shows inside.
    assert len(inside.split()) == 2 and all(line.endswith(":/") for line in inside.split()), inside
    # default has limits too (see test_limits_default.py)
    assert isolate.plan_for("default").cgroup_mode == "v1"
    assert isolate.plan_for(with_python(cgroup={"memory_max": None, "pids_max": None})).cgroup_mode is None


def test_profile_validation():
    from isolate.profile import from_dict

    assert from_dict({"cgroup": {"memory_max": 1000, "memory_swap_max": "1G"}}).data["cgroup"]["memory_swap_max"] \
        == 1 << 30
    for bad, key in (({"memory_max": 0}, "cgroup.memory_max"), ({"pids_max": 0}, "cgroup.pids_max"),
                     ({"memory_swap_max": "1G"}, "cgroup.memory_swap_max"),
                     ({"memory_max": "1G", "memory_swap_max": "1M"}, "cgroup.memory_swap_max"),
                     ({"fallback": "none"}, "cgroup.fallback"), ({"cpu_max": 1}, "cgroup.cpu_max")):
        with pytest.raises(isolate.ProfileError) as e:
            from_dict({"cgroup": bad})
        assert e.value.key == key, (bad, e.value)


# ---- cgroup v2, against a fake hierarchy ----------------------------------------------------------
V2_FILES = {
    "cgroup.procs": "", "cgroup.controllers": "memory pids", "cgroup.subtree_control": "",
    "cgroup.kill": "", "memory.max": "max", "memory.swap.max": "max", "memory.oom.group": "0",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", "memory.peak": "0",
    "pids.max": "max", "pids.events": "max 0\n",
}


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    """A directory that looks like a writable cgroup v2 root with memory and pids."""
    root = tmp_path / "cg2"
    root.mkdir()
    for name, text in V2_FILES.items():
        (root / name).write_text(text)
    made = []

    def make_dir(path):  # the "kernel": a new cgroup comes with its interface files
        os.mkdir(path)
        for name, text in V2_FILES.items():
            with open(os.path.join(path, name), "w") as f:
                f.write(text)
        if "-" in os.path.basename(path):  # a launch's cgroup, not the isolate/ parent
            made.append(path)

    monkeypatch.setattr(cgroups, "_v2_candidates", lambda: [(str(root), True)])
    monkeypatch.setattr(cgroup, "_make_dir", make_dir)
    monkeypatch.setattr(cgroup, "_remove_dir", shutil.rmtree)
    yield root, made
    cgroup.pool().drain()  # cgroups prepared in this fake hierarchy go with it


def test_v2_usable_rules(tmp_path):
    d = tmp_path / "own"
    d.mkdir()
    for name, text in V2_FILES.items():
        (d / name).write_text(text)
    assert cgroups._v2_usable(str(d), False, ("memory", "pids")) is None  # empty: controllers can be enabled
    (d / "cgroup.procs").write_text("1234\n")
    assert "holds processes" in cgroups._v2_usable(str(d), False, ("memory",))
    assert cgroups._v2_usable(str(d), True, ("memory",)) is None          # the root may hold processes
    (d / "cgroup.subtree_control").write_text("memory\n")
    assert cgroups._v2_usable(str(d), False, ("memory",)) is None          # already delegated to children
    (d / "cgroup.controllers").write_text("cpu io\n")
    assert "does not offer memory" in cgroups._v2_usable(str(d), True, ("memory",))


def test_v2_cgroup_files_and_oom(fake_v2):
    root, made = fake_v2
    prof = with_python(cgroup={"memory_max": "96M", "memory_swap_max": "100M", "pids_max": 40})
    plan = isolate.plan_for(prof)
    assert plan.cgroup_mode == "v2" and dict(plan.cgroup_dirs) == {"memory": str(root), "pids": str(root)}
    with isolate.Popen(["sh", "-c", "read x; echo got $x"], profile=prof, stdin=isolate.PIPE,
                       stdout=isolate.PIPE) as p:
        d = made[-1]
        assert os.path.dirname(d) == str(root / "isolate")
        read = lambda name: open(os.path.join(d, name)).read()  # noqa: E731
        # the launch path wrote the sandbox's pid 1 into cgroup.procs before it ran
        assert read("cgroup.procs") == str(p.pid)
        assert read("memory.max") == str(96 * MiB)
        assert read("memory.swap.max") == str(4 * MiB)
        assert read("memory.oom.group") == "1"
        assert read("pids.max") == "40"
        assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
        assert (root / "isolate" / "cgroup.subtree_control").read_text() == "+memory +pids"
        # the "kernel" reports an OOM kill and a peak
        with open(os.path.join(d, "memory.events"), "w") as f:
            f.write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
        with open(os.path.join(d, "memory.peak"), "w") as f:
            f.write(str(90 * MiB))
        out, _ = p.communicate(b"x\n", timeout=10)
    assert out == b"got x\n" and p.returncode == 0
    assert p.oom is True and p.memory_peak == 90 * MiB
    assert not os.path.exists(d)
    assert not [n for n in os.listdir(root / "isolate") if n.startswith(f"{os.getpid()}-")]


def test_v2_defaults_and_oom_outcome(fake_v2, monkeypatch):
    root, made = fake_v2
    prof = with_python(cgroup={"memory_max": "97M", "pids_max": None})
    with isolate.Popen(["sh", "-c", "read x"], profile=prof, stdin=isolate.PIPE) as p:
        d = made[-1]
        assert open(os.path.join(d, "memory.swap.max")).read() == "0"  # absent = memory_max: no swap
        assert open(os.path.join(d, "pids.max")).read() == "max"        # not asked for: untouched
        p.communicate(b"\n", timeout=10)
    assert (p.returncode, p.oom, p.memory_peak) == (0, False, 0)
    # A cgroup whose OOM killer struck: Result.outcome is "oom", whatever the exit status.
    V2_FILES_OOM = dict(V2_FILES, **{"memory.events": "oom_kill 2\n", "memory.peak": str(97 * MiB)})
    monkeypatch.setattr(sys.modules[__name__], "V2_FILES", V2_FILES_OOM)
    r = isolate.run(["true"], profile=prof)
    assert (r.returncode, r.outcome, r.oom, r.memory_peak) == (0, "oom", True, 97 * MiB)
    cgroup.pool().drain()  # and those made ahead for the next launch of this kind, unused, go too
    assert made and not any(os.path.exists(d) for d in made)


# ---- prepared cgroups (CgroupPool) -----------------------------------------------------------------
# What a sandbox sees of its own cgroups: the memory and pids paths (no cgroup namespace
# here, so the host's), the limits, and the processes cgroup.procs lists.
SELF_CGROUP = r"""
m=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); p=$(grep ':pids:' /proc/self/cgroup | cut -d: -f3)
echo "$m $p $(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes) $(cat /sys/fs/cgroup/pids$p/pids.max)" \
     "$(wc -l < /sys/fs/cgroup/pids$p/cgroup.procs)"
"""


def _visible_cgroups(limits: dict) -> dict:
    return with_python(namespaces={"cgroup": False}, ro=["/sys/fs/cgroup"], cgroup=limits)


def _self_cgroup(prof, **kw):
    r = isolate.run(["sh", "-c", SELF_CGROUP + (kw.pop("then", ""))], profile=prof, capture_output=True,
                    text=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    mem, pids, limit, pids_max, nprocs = r.stdout.split()
    return mem, pids, int(limit), pids_max, int(nprocs)


def _wait_prepared(n: int = 1, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while len(cgroup.pool().prepared()) < n:
        assert time.monotonic() < deadline, "no cgroup was prepared"
        time.sleep(0.01)
    return cgroup.pool().prepared()


def test_prepared_cgroup_gives_the_sandbox_the_same_cgroup_as_a_fresh_one():
    prof = _visible_cgroups({"memory_max": "123M", "pids_max": 77})
    fresh = _self_cgroup(prof)        # the first launch of this kind: made on the spot
    _self_cgroup(prof)                # the second: the pool starts preparing this kind
    prepared = set(_wait_prepared())
    taken = cgroup.pool().stats["taken"]
    pooled = _self_cgroup(prof)
    assert cgroup.pool().stats["taken"] == taken + 1
    # The sandbox was in one of the prepared cgroups, seen from the inside, with the same limits.
    assert os.path.join("/sys/fs/cgroup/memory", pooled[0].lstrip("/")) in prepared
    assert pooled[0] == pooled[1] and fresh[0] == fresh[1]
    assert os.path.dirname(pooled[0]) == os.path.dirname(fresh[0]) == "/isolate"
    assert pooled[2:] == fresh[2:]
    assert pooled[2:4] == (123 * MiB, "77") and pooled[4] >= 2  # pid 1 (isolate-init), sh, its subshell
    assert pooled[0] != fresh[0]
    assert _leftovers() == []


def test_prepared_cgroup_is_never_shared_by_two_sandboxes():
    prof = _visible_cgroups({"memory_max": "96M", "pids_max": 50})
    for _ in range(2):
        _self_cgroup(prof)
    _wait_prepared(2)
    cmd = ["sh", "-c", SELF_CGROUP + "read x"]
    procs = [isolate.Popen(cmd, profile=prof, stdin=isolate.PIPE, stdout=isolate.PIPE, text=True) for _ in range(2)]
    try:
        seen = [p.stdout.readline().split() for p in procs]
        # Each reads its own cgroup; the other's processes are in neither's cgroup.procs.
        assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
        hosts = [[int(x) for x in open(f"/sys/fs/cgroup/pids{s[1]}/cgroup.procs").read().split()] for s in seen]
        assert procs[0].pid in hosts[0] and procs[1].pid in hosts[1]
        assert not set(hosts[0]) & set(hosts[1])
        assert seen[0][2:] == seen[1][2:] and seen[0][2:4] == [str(96 * MiB), "50"]
    finally:
        for p in procs:
            p.communicate("\n", timeout=30)
    assert [p.returncode for p in procs] == [0, 0]
    assert _leftovers() == []


def test_prepared_cgroups_leak_nothing_after_many_runs_and_failures(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    prof = with_python(cgroup={"memory_max": "128M", "pids_max": 64}, rw=[str(gone)])
    for i in range(30):
        assert isolate.run(["sh", "-c", "exit %d" % (i % 2)], profile=prof).returncode == i % 2
    _wait_prepared()
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run(["/nonexistent"], profile=prof)
    with pytest.raises(isolate.WorkingDirectoryNotFound):
        isolate.run(["true"], profile=prof, cwd="/nonexistent-dir")
    gone.rmdir()  # the plan binds it: the launch child's mount step fails
    with pytest.raises(isolate.SandboxSetupError) as e:
        isolate.run(["true"], profile=prof)
    assert e.value.step == "mount"
    assert cgroup.pool().stats["taken"] > 0
    assert _leftovers() == []
    # And the prepared ones go when the pool is drained (as at exit).
    cgroup.pool().drain()
    assert cgroup.pool().prepared() == []
    assert not [d for d in _all_of_mine()]


def _all_of_mine() -> list:
    found = []
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        parent = os.path.join(base, cgroup.PARENT)
        found += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(f"{os.getpid()}-")]
    return found


def test_prepared_cgroup_holding_a_process_is_refused():
    prof = with_python(cgroup={"memory_max": "100M", "pids_max": 60})
    for _ in range(2):
        isolate.run(["true"], profile=prof)
    _wait_prepared(cgroup.CgroupPool.SIZE)
    intruder = __import__("subprocess").Popen(["sleep", "60"])
    try:
        tampered = set()
        for d in cgroup.pool().prepared():  # every one of them now holds a process
            if d.startswith("/sys/fs/cgroup/pids/"):
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(intruder.pid))
                tampered.add(d[len("/sys/fs/cgroup/pids"):])
        refused = cgroup.pool().stats["refused"]
        # The same kind of cgroup (same limits), seen from the inside: not one of those.
        mem, pids, limit, pids_max, _ = _self_cgroup(_visible_cgroups({"memory_max": "100M", "pids_max": 60}))
        assert pids not in tampered and mem not in tampered
        assert (limit, pids_max) == (100 * MiB, "60")
        assert cgroup.pool().stats["refused"] == refused + 1
    finally:
        intruder.kill()
        intruder.wait()
    assert _leftovers() == []


def test_prepared_cgroups_are_not_used_after_fork():
    code = r"""
import json, os, sys, time
sys.path.insert(0, "tests")
import isolate
from isolate.launch import cgroup
from conftest import with_python
prof = with_python(namespaces={"cgroup": False}, cgroup={"memory_max": "90M", "pids_max": 40})
cmd = ["sh", "-c", "grep ':pids:' /proc/self/cgroup | cut -d: -f3"]
for _ in range(2):
    isolate.run(cmd, profile=prof, capture_output=True)
while len(cgroup.pool().prepared()) < cgroup.CgroupPool.SIZE:
    time.sleep(0.01)
before = cgroup.pool().prepared()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    out = [isolate.run(cmd, profile=prof, capture_output=True, text=True).stdout.strip() for _ in range(3)]
    os.write(w, json.dumps({"pid": os.getpid(), "paths": out, "prepared": cgroup.pool().prepared()}).encode())
    os.close(w)
    sys.exit(0)  # atexit runs: it must not remove the parent's prepared cgroups
os.close(w)
child = json.loads(os.read(r, 1 << 20))
os.waitpid(pid, 0)
print(json.dumps({"parent": os.getpid(), "before": before, "child": child,
                  "still_there": all(os.path.isdir(d) for d in before),
                  "parent_prepared_after": cgroup.pool().prepared()}))
"""
    import subprocess
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    child = out["child"]
    # The child made its own cgroups (named after itself), none of the parent's prepared ones.
    assert all(os.path.basename(p).startswith(f"{child['pid']}-") for p in child["paths"]), child
    assert not {os.path.join("/sys/fs/cgroup/pids", p.lstrip("/")) for p in child["paths"]} & set(out["before"])
    assert out["still_there"]
    assert sorted(out["parent_prepared_after"]) == sorted(out["before"])


def _thread_cgroups() -> str:
    with open("/proc/thread-self/cgroup") as f:
        return f.read()


def test_the_launching_thread_moves_itself_in_and_back_out():
    # v1: the launching thread writes itself into the sandbox's `tasks` around the clone
    # (no thread-group migration, no RCU grace period); the child is born in the cgroups.
    prof = _visible_cgroups({"memory_max": "80M", "pids_max": 33})
    group = cgroup.create("v1", dict(isolate.plan_for(prof).cgroup_dirs), {"memory_max": 1 << 30})
    try:
        moves = cgroup.thread_moves(group)
        assert len(moves) == len(group.dirs) and all(a >= 0 and b >= 0 for a, b in moves)
        for new, own in moves:
            os.close(new)
            os.close(own)
    finally:
        group.destroy()
    before, main_before = _thread_cgroups(), open("/proc/self/cgroup").read()
    seen = _self_cgroup(prof)
    # Inside: its own cgroups under isolate/, with the profile's limits ...
    assert os.path.dirname(seen[0]) == os.path.dirname(seen[1]) == "/isolate"
    assert seen[2:4] == (80 * MiB, "33")
    # ... and the caller's thread (and the process's main thread) are back where they were.
    assert _thread_cgroups() == before and open("/proc/self/cgroup").read() == main_before
    assert _leftovers() == []
