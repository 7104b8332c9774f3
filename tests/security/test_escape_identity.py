"""Escape battery: the program's host identity (run by root).

A root caller's sandbox must not be host root: it runs as a host uid/gid of its own from
the range isolate reserves (isolate.hostids), different for every sandbox running at
once, released when it is reaped. Host inodes it reaches through the view (the /dev
nodes, read-only binds) keep their mode, owner, times and xattrs; what it writes through
a read-write bind lands on the host owned by the caller.
"""

from __future__ import annotations

import grp
import json
import os
import pathlib
import pwd
import shutil
import stat
import tempfile

import pytest

import isolate
from isolate.launch import hostids

from escape_helpers import (DENIED, PROFILES, SYSTEM_PYTHON, assert_not_refused, launch_args, profile_for,
                            run_attack)

assert os.geteuid() == 0, "the identity battery is about root callers: run the suite as root"

# The program reports, then waits for a line on stdin: the test reads its host side meanwhile.
WAIT_BODY = r'''
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}), flush=True)
sys.stdin.readline()
'''


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _host_ids(pid: int) -> dict:
    """Uid/Gid/Groups lines of /proc/PID/status, read from the host."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in value.split()]
    return out


class Running:
    """A sandbox whose program waits: its host pids and ids can be read meanwhile."""

    def __init__(self, profile: str, **kw):
        prof = profile_for(profile)
        self.p = isolate.Popen(launch_args(WAIT_BODY), profile=prof, stdin=isolate.PIPE, stdout=isolate.PIPE,
                               stderr=isolate.PIPE, text=True, **kw)
        line = self.p.stdout.readline()
        if not line.startswith("{"):
            self.p.kill()
            out, err = self.p.communicate()
            raise AssertionError((line, out, err, self.p.returncode))
        self.inside = json.loads(line)
        self.pids = [self.p.pid] + _children(self.p.pid)  # pid 1 (isolate-init) and the program

    def host_id(self) -> int:
        ids = {}
        for pid in self.pids:
            st = _host_ids(pid)
            assert len(set(st["Uid"])) == 1 and len(set(st["Gid"])) == 1, (pid, st)  # real = effective = saved = fs
            assert st["Groups"] == [], (pid, st)
            ids[pid] = (st["Uid"][0], st["Gid"][0])
        assert len(set(ids.values())) == 1, ids
        uid, gid = next(iter(ids.values()))
        assert uid == gid
        return uid

    def finish(self):
        out, err = self.p.communicate("go\n", timeout=30)
        assert self.p.returncode == 0, (self.p.returncode, out, err)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_program_is_an_unprivileged_host_id_no_account_has(profile):
    assert len(PROFILES) == 2
    s = Running(profile)
    try:
        host = s.host_id()
        assert len(s.pids) == 2, s.pids  # the program itself was read too, not only pid 1
        assert host != 0 and hostids.BASE <= host < hostids.BASE + hostids.COUNT, host
        with pytest.raises(KeyError):
            pwd.getpwuid(host)
        with pytest.raises(KeyError):
            grp.getgrgid(host)
        assert hostids.in_use(host)  # its lock is held while it runs
        # Inside, the ids the profile asks for: root in default, nobody in strict.
        want = 0 if profile == "default" else 65534
        assert (s.inside["uid"], s.inside["gid"]) == (want, want)
    finally:
        s.finish()
    assert not hostids.in_use(host)
    assert host not in hostids.held()


@pytest.mark.parametrize("profile", PROFILES)
def test_two_sandboxes_running_at_once_are_different_host_ids(profile):
    a = Running(profile)
    try:
        b = Running(profile)
        try:
            assert a.host_id() != b.host_id()
            assert {a.host_id(), b.host_id()} <= hostids.held()
        finally:
            b.finish()
    finally:
        a.finish()


CHANGE_BODY = r'''
for path in ARGS["paths"]:
    attempt("chmod:" + path, lambda: os.chmod(path, 0))
    attempt("chmod-suid:" + path, lambda: os.chmod(path, 0o4777))
    attempt("chown:" + path, lambda: os.chown(path, os.getuid(), os.getgid()))
    attempt("chown-root:" + path, lambda: os.chown(path, 0, 0))
    attempt("touch:" + path, lambda: os.utime(path))
    attempt("utime:" + path, lambda: os.utime(path, (0, 0)))
    attempt("setxattr-user:" + path, lambda: os.setxattr(path, "user.isolate", b"x"))
    attempt("setxattr-trusted:" + path, lambda: os.setxattr(path, "trusted.isolate", b"x"))
    attempt("setxattr-security:" + path, lambda: os.setxattr(path, "security.isolate", b"x"))
'''
REFUSED_CHANGE = {"EPERM", "EROFS", "EACCES"}


def _inode(path) -> tuple:
    st = os.stat(path)
    try:
        xattrs = sorted(os.listxattr(path))
    except OSError:
        xattrs = None
    # Not mtime: a write to a terminal through any other process updates it; every change
    # attempted here (mode, owner, times, xattrs) would update ctime.
    return (st.st_mode, st.st_uid, st.st_gid, st.st_ctime_ns, xattrs)


@pytest.mark.parametrize("profile", PROFILES)
def test_host_inodes_in_the_view_cannot_be_changed(profile, tmp_path):
    # A root-owned file under a root-only (0700) directory, bound read-only.
    secret = tmp_path / "root-owned"
    secret.write_text("host\n")
    os.chmod(secret, 0o644)
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700 and os.stat(secret).st_uid == 0
    paths = ["/dev/null", "/dev/zero", "/dev/tty", str(secret)]
    before = {p: _inode(p) for p in paths}
    _r, seen = run_attack(profile, CHANGE_BODY, {"paths": paths}, ro=[secret])
    after = {p: _inode(p) for p in paths}
    for key, value in seen.items():
        assert value in REFUSED_CHANGE | DENIED[profile], (key, value, seen)
    assert after == before
    assert secret.read_text() == "host\n"


CREATE_BODY = r'''
d = ARGS["dir"]
with open(os.path.join(d, "made-inside"), "w") as f:
    f.write("new\n")
st = os.stat(os.path.join(d, "made-inside"))
out["created_owner"] = [st.st_uid, st.st_gid]
out["me"] = [os.getuid(), os.getgid()]
attempt("append-root-file", lambda: open(os.path.join(d, "root-file"), "a").write("more\n"))
st = os.stat(os.path.join(d, "root-file"))
out["root_file_owner"] = [st.st_uid, st.st_gid]
attempt("read-root-only", lambda: open(os.path.join(d, "root-only"), "r").read().strip())
'''


@pytest.mark.parametrize("profile", PROFILES)
def test_rw_bind_files_land_owned_by_the_caller(profile, tmp_path):
    work = tmp_path / "work"  # under pytest's root-only 0700 directory
    work.mkdir()
    (work / "root-file").write_text("host\n")
    os.chmod(work / "root-file", 0o644)
    (work / "root-only").write_text("secret\n")
    os.chmod(work / "root-only", 0o600)
    # default binds {cwd} read-write; strict binds nothing writable, so it gets one.
    rw = [work] if profile == "strict" else []
    _r, seen = run_attack(profile, CREATE_BODY, {"dir": str(work)}, rw=rw, cwd=str(work))
    # Inside: the program owns what it made, and root's files show as its own.
    assert seen["created_owner"] == seen["me"], seen
    assert seen["root_file_owner"] == seen["me"], seen
    assert seen["append-root-file"] == "OK:5", seen  # 5 bytes written
    assert seen["read-root-only"] == "OK:secret", seen
    # On the host: owned by the caller (root), not by the sandbox's host id.
    st = os.stat(work / "made-inside")
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert (work / "made-inside").read_text() == "new\n"
    st = os.stat(work / "root-file")
    assert (st.st_uid, st.st_gid) == (0, 0) and (work / "root-file").read_text() == "host\nmore\n"


def test_ids_are_released_after_many_sequential_launches(monkeypatch):
    # A range of two at the top of the reserved one (other processes use it from below):
    # sequential launches must keep finding a free id there.
    monkeypatch.setattr(hostids, "BASE", hostids.BASE + hostids.COUNT - 2)
    monkeypatch.setattr(hostids, "COUNT", 2)
    prof = profile_for("default")
    for _ in range(40):
        r = isolate.run(["true"], profile=prof, timeout=30)
        assert r.returncode == 0
    assert hostids.held() == frozenset()
    assert not hostids.in_use(hostids.BASE) and not hostids.in_use(hostids.BASE + 1)
    # With both ids held, a third sandbox cannot get one: a clear error, not host root.
    a, b = hostids.allocate(), hostids.allocate()
    try:
        with pytest.raises(isolate.UnsupportedError) as e:
            isolate.run(["true"], profile=prof, timeout=30)
        assert "host ids" in str(e.value)
    finally:
        a.release()
        b.release()
    assert isolate.run(["true"], profile=prof, timeout=30).returncode == 0


def test_a_failed_launch_releases_its_id(tmp_path):
    before = hostids.held()
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run([str(tmp_path / "no-such-program")], profile=profile_for("default"))
    assert hostids.held() == before


def test_warm_sandboxes_hold_an_id_each_until_reaped():
    with isolate.WarmPool(profile_for("default"), size=2) as pool:
        assert pool.wait_ready(30)
        assert len(hostids.held()) >= 2
        r = pool.run(launch_args("out['uid'] = os.getuid()"), capture_output=True, text=True, timeout=30)
        assert_not_refused(r)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[-1])["uid"] == 0
    # A sandbox the refill thread was preparing at close() is discarded by that thread.
    import time

    deadline = time.monotonic() + 20
    while hostids.held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hostids.held() == frozenset()


def test_a_filesystem_that_refuses_idmapping_is_bound_plain_and_explain_says_so():
    # sysfs cannot be idmapped: its bind stays a plain one (root's files show as nobody there).
    prof = profile_for("default", ro=["/sys/class"])
    plan = isolate.plan_for(prof)
    why = {src: reason for _i, src, reason in plan.idmap_binds}
    assert why["/sys/class"] and not why["/usr"], why
    r = isolate.run(["sh", "-c", "ls /sys/class >/dev/null && stat -c %u /sys/class /usr"], profile=prof,
                    capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["65534", "0"]  # sysfs: host root, not mapped; /usr: idmapped to the program
    from conftest import cli

    out = cli("explain", "default", "--set", 'filesystem.ro=["/usr", "/sys/class"]').stdout
    assert "'/oldroot/usr' '/newroot/usr' flags=0x1  [idmapped" in out
    assert "'/oldroot/sys/class' '/newroot/sys/class' flags=0x1  [plain bind, files appear as nobody" in out
    assert "uid_map: '0 S 1'" in out


def _mounts_under(path: str) -> list:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


@pytest.mark.parametrize("template", [True, False])
def test_idmapped_binds_of_a_shared_host_mount_propagate_nothing_back(tmp_path, template):
    # The trees the parent clones are made private: the hide tmpfs the child mounts on
    # one must not appear on the host through the peer group of a shared host mount.
    import subprocess

    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        (shared / "hidden").mkdir()
        (shared / "hidden" / "f").write_text("x")
        before = _mounts_under(str(tmp_path))
        prof = profile_for("default", ro=[shared])
        prof["filesystem"]["hide"] = [str(shared / "hidden")]
        prof["filesystem"]["template"] = template
        r = isolate.run(["sh", "-c", f"ls {shared}/hidden; stat -c %u {shared}"], profile=prof, capture_output=True,
                        text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0"]  # hidden is empty; the root-owned tmpfs appears as the program's
        assert _mounts_under(str(tmp_path)) == before
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_without_a_template_namespace_the_same_identity(profile, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    rw = [work] if profile == "strict" else []
    prof = profile_for(profile, rw=rw)
    prof["filesystem"]["template"] = False
    assert isolate.plan_for(prof, cwd=str(work)).mntns_fd == -1
    r = isolate.run(["sh", "-c", "echo hi > made; cat /proc/self/uid_map"], profile=prof, cwd=str(work),
                    capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    inside, host, count = r.stdout.split()
    assert int(inside) == (0 if profile == "default" else 65534) and count == "1"
    assert hostids.BASE <= int(host) < hostids.BASE + hostids.COUNT
    st = os.stat(work / "made")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_host_account_inside_the_range_stops_compilation(tmp_path, monkeypatch):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"root:x:0:0::/root:/bin/sh\nclash:x:{hostids.BASE + 7}:100::/:/bin/false\n")
    subuid = tmp_path / "subuid"
    subuid.write_text(f"someone:{hostids.BASE - 10}:100\n")
    files = (str(passwd), str(subuid))
    found = hostids.conflicts(files)
    assert [(n, lo, hi) for _f, n, lo, hi in found] == [("clash", hostids.BASE + 7, hostids.BASE + 7),
                                                        ("someone", hostids.BASE - 10, hostids.BASE + 89)]
    assert hostids.conflicts() == []  # this machine's accounts leave the range free
    monkeypatch.setattr(hostids, "ACCOUNT_FILES", files)
    monkeypatch.setattr(hostids, "conflicts", lambda files=files, _c=hostids.conflicts: _c(files))
    with pytest.raises(isolate.UnsupportedError) as e:
        isolate.run(["true"], profile=profile_for("default", identity={"hostname": "clash-check"}))
    assert "clash" in str(e.value) and "identity" in str(e.value)


HOST_VIEW_BODY = CHANGE_BODY + r'''
out["ids"] = [os.getuid(), os.getgid(), os.getgroups()]
attempt("write-root-dir", lambda: open(ARGS["root_dir"] + "/planted", "w").write("x"))
open(ARGS["open_dir"] + "/made", "w").write("x")
'''
OWNER_ONLY = ("chmod", "chmod-suid", "chown", "chown-root", "utime", "setxattr-user", "setxattr-trusted",
              "setxattr-security")


@pytest.fixture
def open_tmp():
    """A directory the program's host id can reach (pytest's own tmp_path is root's 0700)."""
    d = tempfile.mkdtemp(prefix="isolate-identity-", dir="/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def test_on_the_hosts_tree_the_program_is_an_unprivileged_host_id(open_tmp):
    # filesystem.view = "host": nothing is bound (so nothing is idmapped), and the program
    # must still not be host root: it is a host id of its own on the host's files, so it
    # may do to them what any unprivileged host user may, and no more.
    tmp_path = open_tmp
    root_dir = tmp_path / "root-owned-dir"
    root_dir.mkdir(mode=0o755)
    target = root_dir / "file"
    target.write_text("host\n")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    paths = ["/dev/null", str(target)]
    before = {p: _inode(p)[:3] + _inode(p)[4:] for p in paths}  # mode, owner, xattrs (touch of 0666 is anyone's)
    prof = profile_for("default")
    prof["filesystem"] = {"view": "host"}
    _r, seen = run_attack("default", HOST_VIEW_BODY, {"paths": paths, "root_dir": str(root_dir),
                                                       "open_dir": str(open_dir)},
                          profile_dict=prof, python=SYSTEM_PYTHON)
    assert seen["ids"] == [0, 0, []], seen  # root of its own user namespace, without capabilities
    for key, value in seen.items():
        if key.split(":")[0] in OWNER_ONLY or key == "write-root-dir":
            assert value in REFUSED_CHANGE | DENIED["default"], (key, value, seen)
    assert {p: _inode(p)[:3] + _inode(p)[4:] for p in paths} == before
    assert not (root_dir / "planted").exists()
    # What it made on the host belongs to a reserved host id, not to root.
    owner = os.stat(open_dir / "made").st_uid
    assert owner != 0 and hostids.BASE <= owner < hostids.BASE + hostids.COUNT, owner
