"""isolate.doctor: the true state of this machine (root, Debian 12, kernel 6.18), no skips."""

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from isolate import doctor
from isolate.errors import UnsupportedError

ROOT = Path(__file__).resolve().parent.parent

NS = ["user", "pid", "net", "mount", "ipc", "uts", "cgroup", "time"]
ACTIONS = ["kill_process", "kill_thread", "trap", "errno", "trace", "log", "allow", "user_notif"]
ALL_KEYS = [
    "kernel", "user_namespaces", "max_user_namespaces", "apparmor_userns_restriction",
    *(f"ns_{n}" for n in NS),
    "seccomp", "seccomp_actions", *(f"seccomp_action_{a}" for a in ACTIONS),
    "landlock", "landlock_abi", "clone3", "pidfd", "close_range", "no_new_privs",
    "cgroup_v2", "cgroup_v1_memory", "cgroup_v1_pids", "cgroup_memory_limit", "cgroup_pids_limit",
    "overlayfs", "tmpfs", "proc", "audit_read",
]

CLONE_NEWUSER = 0x10000000


@pytest.fixture(autouse=True)
def _no_disable(monkeypatch):
    monkeypatch.delenv(doctor.DISABLE_ENV, raising=False)


@pytest.fixture
def feats():
    return doctor.features(refresh=True)


def test_every_key_present_and_well_formed(feats):
    assert set(feats) == set(ALL_KEYS)
    for key, f in feats.items():
        assert isinstance(f, doctor.Feature)
        assert f.name == key
        assert isinstance(f.available, bool) and isinstance(f.detail, str) and f.detail


def test_feature_is_frozen(feats):
    with pytest.raises(Exception):
        feats["kernel"].available = False


def test_kernel(feats):
    assert feats["kernel"].available and feats["kernel"].detail == os.uname().release


def test_user_namespaces(feats):
    f = feats["user_namespaces"]
    assert f.available, f.detail
    with open("/proc/sys/user/max_user_namespaces") as fh:
        value = fh.read().strip()
    assert f"max_user_namespaces={value}" in f.detail
    assert "apparmor_restrict_unprivileged_userns" in f.detail
    assert feats["max_user_namespaces"].available and feats["max_user_namespaces"].detail == value
    # No AppArmor sysctl on this kernel: missing file means no restriction.
    assert feats["apparmor_userns_restriction"].available
    assert not os.path.exists("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    assert "absent" in feats["apparmor_userns_restriction"].detail


@pytest.mark.parametrize("ns", NS)
def test_every_namespace_type(feats, ns):
    assert feats[f"ns_{ns}"].available, feats[f"ns_{ns}"].detail


def test_seccomp_and_actions(feats):
    assert feats["seccomp"].available, feats["seccomp"].detail
    with open("/proc/sys/kernel/seccomp/actions_avail") as fh:
        assert feats["seccomp_actions"].detail == fh.read().strip()
    assert feats["seccomp_actions"].available
    for a in ACTIONS:
        assert feats[f"seccomp_action_{a}"].available, a
        assert a in feats["seccomp_actions"].detail.split()


def test_landlock(feats):
    assert feats["landlock"].available, feats["landlock"].detail
    abi = int(feats["landlock_abi"].detail)
    assert abi >= 1 and feats["landlock_abi"].available
    assert feats["landlock"].detail == f"ABI {abi}"
    assert abi == 7  # this kernel (6.18)
    assert doctor.landlock_abi() == abi


def test_clone3_pidfd_close_range_nnp(feats):
    for key in ("clone3", "pidfd", "close_range", "no_new_privs"):
        assert feats[key].available, (key, feats[key].detail)


def test_cgroups(feats):
    # We are root; memory and pids are v1 hierarchies here.
    assert os.geteuid() == 0
    assert feats["cgroup_v1_memory"].available and feats["cgroup_v1_memory"].detail == "/sys/fs/cgroup/memory"
    assert feats["cgroup_v1_pids"].available and feats["cgroup_v1_pids"].detail == "/sys/fs/cgroup/pids"
    assert feats["cgroup_v2"].available
    assert feats["cgroup_v2"].detail.startswith("/sys/fs/cgroup/unified")
    assert feats["cgroup_memory_limit"].available and "/sys/fs/cgroup/memory" in feats["cgroup_memory_limit"].detail
    assert feats["cgroup_pids_limit"].available and "/sys/fs/cgroup/pids" in feats["cgroup_pids_limit"].detail


def test_filesystems(feats):
    for key in ("overlayfs", "tmpfs", "proc"):
        assert feats[key].available, key


def test_probe_is_quick_and_cached():
    t = time.perf_counter()
    first = doctor.features(refresh=True)
    assert time.perf_counter() - t < 2.0
    t = time.perf_counter()
    again = doctor.features()
    assert time.perf_counter() - t < 0.05
    assert again == first
    again["kernel"] = None  # a copy: the cache is not exposed
    assert doctor.features()["kernel"] is not None


def _children() -> set:
    """Our child processes (running or zombie), from /proc/self/task/*/children."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as fh:
            out |= {int(x) for x in fh.read().split()}
    return out


def test_probes_leave_no_children_or_fds():
    fds, kids = set(os.listdir("/proc/self/fd")), _children()
    doctor.features(refresh=True)
    assert set(os.listdir("/proc/self/fd")) <= fds
    assert _children() <= kids


def test_disable_env_turns_off_exactly_those(monkeypatch):
    monkeypatch.setenv(doctor.DISABLE_ENV, "user_namespaces,landlock")
    feats = doctor.features(refresh=True)
    off = {k for k, f in feats.items() if not f.available}
    assert off == {"user_namespaces", "landlock"}
    for k in off:
        assert feats[k].detail == "disabled by ISOLATE_DOCTOR_DISABLE"
    # Read on every call: without the variable, everything is back.
    monkeypatch.delenv(doctor.DISABLE_ENV)
    assert all(f.available for f in doctor.features().values())


def test_disable_env_in_a_subprocess():
    env = dict(os.environ, ISOLATE_DOCTOR_DISABLE=" user_namespaces , landlock,")
    code = ("import json; from isolate import doctor; "
            "print(json.dumps(sorted(k for k, f in doctor.features().items() if not f.available)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["landlock", "user_namespaces"]


def _plan(**kw):
    return types.SimpleNamespace(**kw)


def test_requirements():
    assert doctor.requirements(_plan()) == []
    req = doctor.requirements(_plan(clone_flags=CLONE_NEWUSER | 0x20000000, bpf=b"\0" * 8, landlock=True,
                                    cgroup={"memory_max": 1 << 20, "pids_max": None}))
    assert ("ns_user", "namespaces.user") in req
    assert ("ns_pid", "namespaces.pid") in req
    assert ("seccomp", "seccomp") in req
    assert ("landlock", "filesystem.enforce") in req
    assert ("cgroup_memory_limit", "cgroup.memory_max") in req
    assert not any(k == "cgroup_pids_limit" for k, _ in req)
    assert not any(k == "ns_net" for k, _ in req)


def test_check_fails_closed(monkeypatch):
    plan = _plan(clone_flags=CLONE_NEWUSER, bpf=None)
    doctor.check(plan)  # nothing disabled: passes
    monkeypatch.setenv(doctor.DISABLE_ENV, "ns_user")
    with pytest.raises(UnsupportedError) as ei:
        doctor.check(plan)
    assert ei.value.field == "namespaces.user"
    assert str(ei.value) == ("namespaces.user: user namespaces are not available here "
                             "(disabled by ISOLATE_DOCTOR_DISABLE)")
    doctor.check(_plan(clone_flags=0, bpf=None))  # needs no user namespace


def test_check_seccomp_and_landlock(monkeypatch):
    monkeypatch.setenv(doctor.DISABLE_ENV, "seccomp,landlock")
    with pytest.raises(UnsupportedError) as ei:
        doctor.check(_plan(clone_flags=0, bpf=b"\0" * 8))
    assert ei.value.field == "seccomp" and "seccomp" in ei.value.reason
    with pytest.raises(UnsupportedError) as ei:
        doctor.check(_plan(clone_flags=0, bpf=None, landlock=object()))
    assert ei.value.field == "filesystem.enforce"
    doctor.check(_plan(clone_flags=0, bpf=None, landlock=None))


def test_profiles_status(monkeypatch):
    status = doctor.profiles_status()
    assert status, "no shipped profiles listed"
    names = [n for n, _, _ in status]
    assert "default" in names
    for name, ok, reason in status:
        assert isinstance(ok, bool) and isinstance(reason, str)
        assert ok, (name, reason)  # everything is available here
    monkeypatch.setenv(doctor.DISABLE_ENV, "ns_user,ns_pid,ns_net,ns_mount,ns_ipc,ns_uts,ns_cgroup,seccomp")
    for name, ok, reason in doctor.profiles_status():
        assert not ok and "not available here" in reason, (name, reason)


def test_cli_doctor_json():
    r = subprocess.run([sys.executable, "-m", "cli.main", "doctor", "--json"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(ALL_KEYS) <= set(doc["features"])
    for key in ALL_KEYS:
        assert isinstance(doc["features"][key]["available"], bool)
        assert isinstance(doc["features"][key]["detail"], str)
    assert doc["features"]["landlock_abi"]["detail"] == "7"
    assert doc["profiles"]["default"] == {"runnable": True, "reason": ""}


def test_cli_doctor_table():
    r = subprocess.run([sys.executable, "-m", "cli.main", "doctor"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, env=dict(os.environ, ISOLATE_DOCTOR_DISABLE="landlock"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(line.split(None, 2) for line in lines if line.startswith("landlock "))
    assert row == ["landlock", "no", "disabled by ISOLATE_DOCTOR_DISABLE"]
    assert any(line.split()[:2] == ["ns_user", "yes"] for line in lines)
    assert "profiles:" in lines


def test_doctor_reports_the_host_id_range_and_any_account_inside_it(monkeypatch, capsys):
    from isolate import doctor
    from isolate.launch import hostids

    doctor.main(json_output=True)
    ids = json.loads(capsys.readouterr().out)["host_ids"]
    assert (ids["first"], ids["last"]) == (hostids.BASE, hostids.BASE + hostids.COUNT - 1)
    assert ids["conflicts"] == hostids.conflicts() == []  # this machine has no account in the range
    clash = [("/etc/passwd", "intruder", hostids.BASE + 5, hostids.BASE + 5)]
    monkeypatch.setattr(hostids, "conflicts", lambda *a, **k: clash)
    doctor.main()
    out = capsys.readouterr().out
    assert "CLASH" in out and f"/etc/passwd: intruder uses {hostids.BASE + 5}..{hostids.BASE + 5}" in out


def test_audit_read_says_whether_session_violations_can_be_read(feats):
    # Root here: the audit log's read-only multicast group is open to it (CAP_AUDIT_READ).
    from isolate.agent import violations

    f = feats["audit_read"]
    assert f.available == violations.status()["syscalls"], (f.detail, violations.status())
    assert f.available and "AUDIT_NLGRP_READLOG" in f.detail
