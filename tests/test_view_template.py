"""A cold launch from a view template (isolate.plan.fs.view_template): a mount namespace
made once per plan whose root is the view itself; each launch copies it and makes only
its own mounts. Checked from the inside: what the program sees of its mounts, that no
host tree is in its namespace, what two sandboxes of one plan share (only the read-only
template), and from the template itself: its placeholder /proc shows nothing.
"""

import ctypes
import errno
import json
import os
import sys
import time

import pytest

import isolate
from isolate.launch import plans
from isolate.plan import fs
from isolate.plan.mountops import OP_BIND, OP_PIVOT
from conftest import with_python

CLONE_NEWNS = 0x00020000

MOUNTS = r"""
import json, os, sys
mi = []
for l in open("/proc/self/mountinfo"):
    f = l.split()
    sep = f.index("-")
    mi.append({"id": f[0], "parent": f[1], "dev": f[2], "root": f[3], "point": f[4], "opts": f[5].split(","),
               "fstype": f[sep + 1], "source": f[sep + 2], "super": f[sep + 3].split(","), "tags": f[6:sep]})
out = {"mounts": mi, "mntns": os.readlink("/proc/self/ns/mnt"), "root": sorted(os.listdir("/")),
       "proc1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode(),
       "self": os.readlink("/proc/self"), "pid": os.getpid()}
writes = {}
for p in sys.argv[1:]:
    try:
        with open(p, "w") as fh:
            fh.write("x")
        writes[p] = "ok"
    except OSError as e:
        writes[p] = e.errno
out["writes"] = writes
out["tmp"] = sorted(os.listdir("/tmp"))
print(json.dumps(out))
"""


def _plan(prof):
    return plans.plan_for(prof)


def _report(prof, *paths, **kw):
    r = isolate.run([sys.executable, "-c", MOUNTS, *paths], profile=prof, capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _host_root() -> dict:
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == "/":
            sep = f.index("-")
            return {"dev": f[2], "fstype": f[sep + 1], "source": f[sep + 2]}
    raise AssertionError("no / in our mountinfo")


@pytest.mark.parametrize("name", ["default", "strict"])
def test_the_shipped_views_launch_from_a_view_template(name):
    plan = _plan(with_python(name))
    assert plan.mntns_fd >= 0 and plan.view_capsule is not None
    v = fs.view_template(plan.mount_ops, {i for i, _s, _w in plan.idmap_binds})
    # Each launch: no pivot_root (so no detach of any tree), no bind from the host's tree
    # but the idmapped trees it attaches (their fds), nothing under /newroot.
    assert not any(op.kind == OP_PIVOT for op in v.launch_ops)
    idmapped = {i for i, _s, _w in plan.idmap_binds}
    for i, op in zip(v.index, v.launch_ops):
        assert not (op.b or "").startswith(fs.NEW), op
        if op.kind == OP_BIND and (op.a or "").startswith(fs.OLD + "/"):
            assert i in idmapped, op
    assert len(v.launch_ops) < len(plan.mount_ops) / 2


@pytest.mark.parametrize("name", ["default", "strict"])
def test_no_host_tree_is_in_the_sandboxes_mount_namespace(name):
    prof = with_python(name)
    plan = _plan(prof)
    rep = _report(prof)
    mounts = rep["mounts"]
    points = [m["point"] for m in mounts]
    # The root is the template's read-only tmpfs; nothing of a staging or an old root.
    root = [m for m in mounts if m["point"] == "/"]
    assert len(root) == 1 and root[0]["fstype"] == "tmpfs" and "ro" in root[0]["opts"], root
    assert not any(p.startswith(("/oldroot", "/newroot")) for p in points), points
    assert not {"oldroot", "newroot", ".empty-555", ".empty-755"} & set(rep["root"])
    # No mount of the host's root filesystem at its own root: only binds of directories and
    # files below it (/usr, /etc, the checkout...).
    host = _host_root()
    for m in mounts:
        if m["dev"] == host["dev"]:
            assert m["root"] != "/", m
    # Every mount hangs off the root: nothing detached or outside it is listed.
    ids = {m["id"] for m in mounts}
    assert all(m["parent"] in ids for m in mounts if m["point"] != "/"), mounts
    # Every mount private: no peer group or master shared with the template, another
    # sandbox or the host (the template was built under a private /; copies stay private).
    assert all(not m["tags"] for m in mounts), [m for m in mounts if m["tags"]]
    # Its own mount namespace: not the caller's, not the template's.
    template_ns = os.readlink(f"/proc/self/fd/{plan.mntns_fd}")
    assert rep["mntns"] not in (os.readlink("/proc/self/ns/mnt"), template_ns)
    # /proc is the sandbox's own pid namespace's (pid 1 is isolate-init), on top of the
    # template's placeholder, a proc with subset=pid only.
    procs = [m for m in mounts if m["fstype"] == "proc"]
    top = [m for m in procs if m["point"] == "/proc" and "subset=pid" not in m["super"]]
    under = [m for m in procs if "subset=pid" in m["super"]]
    assert len(top) == 1 and len(under) == 1, procs
    assert top[0]["parent"] == under[0]["id"] and under[0]["point"] == "/proc"
    assert rep["proc1"].endswith("isolate-init") and rep["self"] == str(rep["pid"])
    # The masks of /proc are in place (read-only, on the sandbox's own proc).
    keys = [m for m in mounts if m["point"] == "/proc/keys"]
    if os.path.exists("/proc/keys"):
        assert len(keys) == 1 and "ro" in keys[0]["opts"] and keys[0]["parent"] == top[0]["id"], keys


def test_the_template_holds_only_the_view_and_its_placeholder_proc_shows_nothing():
    """From the template itself (a forked child joins it): its root is the view, its /proc
    the placeholder (subset=pid, of a pid namespace that is empty now), no host tree."""
    plan = _plan(with_python("strict"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            ours = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)  # our pid in the host's proc
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(plan.mntns_fd, CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            with open(os.open("mountinfo", os.O_RDONLY, dir_fd=ours)) as fh:
                mi = fh.read()
            out = {"proc": sorted(os.listdir("/proc")), "root": sorted(os.listdir("/")), "mountinfo": mi}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, json.dumps({"error": repr(e)}).encode())
            os._exit(1)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    assert os.waitpid(pid, 0)[1] == 0, data
    out = json.loads(data)
    assert set(out["proc"]) <= {"self", "thread-self"}, out["proc"]  # no process, no host-wide entry
    assert {"usr", "etc", "dev", "proc", "tmp"} <= set(out["root"]) and "oldroot" not in out["root"]
    host = _host_root()
    for line in out["mountinfo"].splitlines():
        f = line.split()
        assert not (f[2] == host["dev"] and f[3] == "/"), line
        assert not f[4].startswith(("/oldroot", "/newroot")), line


def _bind_points_under_tmp(prof) -> set:
    """The names in /tmp that the profile's binds need as mount points (a checkout in /tmp)."""
    out = set()
    for b in prof["filesystem"]["ro"] + prof["filesystem"]["rw"]:
        target = b if isinstance(b, str) else b.get("target") or b.get("source")
        parts = os.path.normpath(target).split("/")
        if len(parts) > 2 and parts[1] == "tmp":
            out.add(parts[2])
    return out


def test_two_sandboxes_of_a_plan_share_only_the_read_only_template():
    prof = with_python("strict")
    paths = ("/x", "/etc/passwd", "/dev/x", "/tmp/mine")
    cmd = [sys.executable, "-c", MOUNTS + "\nimport time; time.sleep(0.5)\n", *paths]
    procs = [isolate.Popen(cmd, profile=prof, stdout=isolate.PIPE, stderr=isolate.PIPE) for _ in range(2)]
    outs = []
    for p in procs:
        o, e = p.communicate(timeout=60)
        assert p.returncode == 0, e
        outs.append(json.loads(o))
    a, b = outs
    for rep in outs:
        w = rep["writes"]
        assert w["/x"] == errno.EROFS and w["/etc/passwd"] == errno.EROFS and w["/dev/x"] == errno.EROFS, w
        # its own /tmp: nothing of the other's there (only the mount points of binds the
        # profile puts under /tmp, as this checkout's when it lives in /tmp)
        assert w["/tmp/mine"] == "ok" and sorted(rep["tmp"]) == sorted({"mine"} | _bind_points_under_tmp(prof))
    def dev(rep, point):  # of the mount on top at `point` (at /proc: not the placeholder under it)
        return [m["dev"] for m in rep["mounts"] if m["point"] == point and "subset=pid" not in m["super"]][-1]
    assert dev(a, "/") == dev(b, "/") and dev(a, "/dev") == dev(b, "/dev")   # the template's, read-only
    for point in ("/tmp", "/dev/shm", "/dev/pts", "/proc"):
        assert dev(a, point) != dev(b, point), point                          # each its own
    assert a["mntns"] != b["mntns"]


def test_a_writable_root_is_not_shared(tmp_path):
    prof = with_python("strict", filesystem={**with_python("strict")["filesystem"], "root_readonly": False})
    plan = _plan(prof)
    assert plan.view_capsule is None and plan.mntns_fd >= 0  # the template of the sources, as before
    rep = _report(prof, "/x")
    root = [m for m in rep["mounts"] if m["point"] == "/"]
    assert len(root) == 1 and "rw" in root[0]["opts"]            # its own, writable (by its owner)
    assert rep["writes"]["/x"] == errno.EACCES                    # nobody is not that owner
    assert not any(m["point"].startswith(("/oldroot", "/newroot")) for m in rep["mounts"])


def test_a_bind_under_a_tmpfs_of_the_launch(tmp_path):
    """A host directory bound under a tmpfs each launch makes: an idmapped tree of the launch
    (root caller), attached on its own tmpfs; without one, no view template."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    base = with_python("strict")
    fsd = dict(base["filesystem"])
    fsd["tmpfs"] = list(fsd["tmpfs"]) + [{"path": "/data", "size": "1M"}]
    fsd["ro"] = list(fsd["ro"]) + [{"source": str(src), "target": "/data/in"}]
    prof = {**base, "filesystem": fsd}
    plan = _plan(prof)
    r = isolate.run([sys.executable, "-c", "import os; print(open('/data/in/f').read()); open('/data/w', 'w')"],
                    profile=prof, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"hello\n", r.stderr
    if plan.host_ids:
        assert plan.view_capsule is not None
    # Without the launch's own tree for that bind, the template would have to hold a host
    # path under a mount of each launch: no view template then.
    assert fs.view_template(plan.mount_ops, ()) is None


def test_a_bind_source_gone_after_compile_names_its_entry(tmp_path):
    src = tmp_path / "gone"
    src.mkdir()
    base = with_python("strict")
    fsd = dict(base["filesystem"])
    fsd["ro"] = list(fsd["ro"]) + [{"source": str(src), "target": "/data"}]
    prof = {**base, "filesystem": fsd}
    plan = _plan(prof)
    assert plan.view_capsule is not None
    entry = f"filesystem.ro[{len(fsd['ro']) - 1}]"
    os.rmdir(src)
    with pytest.raises(isolate.SandboxSetupError) as e:
        isolate.run([sys.executable, "-c", "pass"], profile=prof, capture_output=True, timeout=60)
    assert e.value.step == "mount" and entry in str(e.value), str(e.value)


def test_run_from_under_tmp_hides_with_another_cover(tmp_path):
    """From a directory under /tmp, `default` binds it under the launch's /tmp: the empty
    directories that hide /etc/ssh... go under /dev/shm's mount point then."""
    (tmp_path / "mine").write_text("here")
    prof = with_python("default")
    plan = plans.plan_for_cwd(prof, (), str(tmp_path))
    assert plan.view_capsule is not None
    code = ("import json, os; print(json.dumps({'cwd': os.listdir('.'), 'ssh': os.listdir('/etc/ssh'),"
            " 'shm': os.listdir('/dev/shm'), 'mi': [l.split()[3:5] for l in open('/proc/self/mountinfo')]}))")
    r = isolate.run([sys.executable, "-c", code], profile=prof, cwd=str(tmp_path), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "mine" in out["cwd"] and out["shm"] == []
    if os.path.isdir("/etc/ssh"):
        assert out["ssh"] == [] and ["/shm/.empty-755", "/etc/ssh"] in out["mi"], out["mi"]


def test_a_file_only_its_owner_may_read_keeps_the_old_path(tmp_path):
    """The template's files belong to host root, not to the sandbox: a file of mode 0600
    (readable by its owner, the program, before) makes the plan keep the old path."""
    base = with_python("strict")
    prof = {**base, "filesystem": {**base["filesystem"],
                                   "files": list(base["filesystem"]["files"]) + [
                                       {"path": "/etc/secret", "content": "s3cret\n", "mode": 0o600}]}}
    plan = _plan(prof)
    assert plan.view_capsule is None and plan.mntns_fd >= 0
    r = isolate.run([sys.executable, "-c", "print(open('/etc/secret').read(), end='')"], profile=prof,
                    capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"s3cret\n", r.stderr
    # A readable one (0644) is in the template, read-only, and readable.
    prof2 = {**base, "filesystem": {**base["filesystem"],
                                    "files": list(base["filesystem"]["files"]) + [
                                        {"path": "/etc/motd", "content": "hi\n", "mode": 0o644}]}}
    assert _plan(prof2).view_capsule is not None
    r = isolate.run([sys.executable, "-c", "print(open('/etc/motd').read(), end='')"], profile=prof2,
                    capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"hi\n", r.stderr
