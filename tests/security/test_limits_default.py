"""default's process and memory ceilings (profiles/default.toml [cgroup]).

From inside: a fork bomb stops at the pids limit (a small one set with an override,
so that the test is quick; the shipped numbers are checked separately, read from the
sandbox's own cgroup files, and as rlimits where no cgroup can be had). The host side:
the bomb's processes are gone after, and no cgroup is left behind.
"""

import os
import sys

import pytest

import isolate

from escape_helpers import profile_for, run_attack

GiB = 1 << 30
SHIPPED = {"memory_max": 4 * GiB, "pids_max": 1024}

FORK_BOMB = r"""
    r, w = os.pipe()
    n, err = 0, 0
    for _ in range(ARGS["tries"]):        # bounded: stops at the limit or after `tries` forks
        try:
            pid = os.fork()
        except OSError as e:
            err = e.errno
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)                 # stay alive until the program exits
            os._exit(0)
        n += 1
    out["forks"], out["errno"] = n, ename(err) if err else "none"
"""


def _marker_procs(marker):
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(p))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("profile", ("default", "strict"))
def test_fork_bomb_stops_at_the_pids_limit(profile):
    r, seen = run_attack(profile, FORK_BOMB, {"tries": 500, "marker": f"bomb-{os.getpid()}"},
                         overrides=["cgroup.pids_max=24"], timeout=60)
    # 24 at once: isolate-init, the program and 22 children; the next fork gets EAGAIN.
    assert seen["errno"] == "EAGAIN" and 1 <= seen["forks"] <= 22, seen
    assert _marker_procs(f"bomb-{os.getpid()}") == []   # the whole sandbox ended with it


def test_default_pids_limit_is_in_effect():
    # default without overrides: the bomb stops at 1024 (well before `tries`), not pid_max.
    with open("/proc/sys/kernel/pid_max") as f:
        assert int(f.read()) > 4096
    _, seen = run_attack("default", FORK_BOMB, {"tries": 3000}, timeout=120)
    assert seen["errno"] == "EAGAIN" and 900 <= seen["forks"] <= 1022, seen


CGROUP_FILES = r"""
    me = str(os.getpid())
    for ctl, name in (("pids", "pids.max"), ("memory", "memory.limit_in_bytes")):
        for d, _subs, files in os.walk("/sys/fs/cgroup/" + ctl):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(d + "/cgroup.procs") as f:
                    procs = f.read().split()   # pids of this pid namespace only
            except OSError:
                continue
            if me in procs:
                out[ctl] = open(d + "/" + name).read().strip()
                out[ctl + ":dir"] = d
    out["self_cgroup"] = open("/proc/self/cgroup").read()
    import resource
    out["rlimit_as"] = resource.getrlimit(resource.RLIMIT_AS)
    out["rlimit_nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)
"""


def test_default_shipped_limits_from_inside():
    plan = isolate.plan_for("default")
    assert dict(plan.cgroup) == SHIPPED and plan.cgroup_mode in ("v1", "v2")
    # The host's cgroup tree, read-only, so that the program can find its own cgroup
    # (the one whose cgroup.procs lists its pid) and read its limits.
    _, seen = run_attack("default", CGROUP_FILES, ro=["/sys/fs/cgroup"])
    assert seen["pids"] == str(SHIPPED["pids_max"]), seen
    assert seen["memory"] == str(SHIPPED["memory_max"]), seen
    assert "/isolate/" in seen["pids:dir"] and "/isolate/" in seen["memory:dir"], seen
    # ...and its cgroup namespace is rooted there.
    assert all(line.endswith(":/") for line in seen["self_cgroup"].split()), seen


def test_default_falls_back_to_rlimits_without_cgroup(no_memory_cgroup):
    plan = isolate.plan_for("default")
    assert plan.cgroup_mode == "rlimits"
    _, seen = run_attack("default", CGROUP_FILES)
    assert seen["rlimit_as"] == [SHIPPED["memory_max"]] * 2, seen
    assert seen["rlimit_nproc"] == [SHIPPED["pids_max"]] * 2, seen
    assert "pids" not in seen and "/isolate/" not in seen["self_cgroup"], seen


def test_default_memory_ceiling_ends_a_memory_bomb():
    # A small ceiling via override (the shipped 4G is read above): the bomb is OOM-killed
    # and reported as such, the host untouched.
    bomb = "b = []\nwhile True: b.append(bytearray(8 << 20))"
    r = isolate.run([sys.executable, "-c", bomb], profile=profile_for("default"),
                    overrides=["cgroup.memory_max=48M"], capture_output=True, timeout=60)
    assert r.outcome == "oom" and r.oom, (r.returncode, r.stderr)
    assert r.memory_peak is not None and r.memory_peak <= 52 << 20
