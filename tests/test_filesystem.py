"""The filesystem view and network modes, proved from inside the sandbox."""

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import isolate

from conftest import ROOT, cli, with_python

# A small program that tries things and reports errno names; runs under any profile
# that has this Python in its view.
TRY = textwrap.dedent("""
    import errno, json, os, socket, sys
    out = {}
    def attempt(name, fn):
        try:
            r = fn()
            out[name] = "ok" if r is None else r
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
    for i, arg in enumerate(sys.argv[1:]):
        kind, _, rest = arg.partition(":")
        if kind == "read":
            attempt(arg, lambda: open(rest).read() and None)
        elif kind == "write":
            attempt(arg, lambda: open(rest, "w").write("from-sandbox") and None)
        elif kind == "list":
            attempt(arg, lambda: sorted(os.listdir(rest)))
        elif kind == "fill":
            path, size = rest.rsplit(",", 1)
            def fill():
                n = 0
                with open(path, "wb") as f:
                    try:
                        while n < int(size) * 2:
                            f.write(b"x" * 65536); f.flush(); n += 65536
                    except OSError as e:
                        return [errno.errorcode[e.errno], n]
                return ["no-error", n]
            attempt(arg, fill)
        elif kind == "connect":
            host, port = rest.rsplit(",", 1)
            attempt(arg, lambda: socket.create_connection((host, int(port)), timeout=2).close())
        elif kind == "abstract":
            def conn():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(2)
                s.connect("\\0" + rest)
            attempt(arg, conn)
    print(json.dumps(out))
""")


def attempt(profile, *actions, python=sys.executable, **kw):
    r = isolate.run([python, "-c", TRY, *actions], profile=profile, capture_output=True, text=True,
                    timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def host_dir(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    (d / "existing.txt").write_text("host content")
    return d


# ---- the view ---------------------------------------------------------------------------
def _component_under(parent: str, paths) -> set:
    """The first path component below `parent` of each of `paths` (the binds that pass through it)."""
    out = set()
    for p in paths:
        if p.startswith(parent.rstrip("/") + "/"):
            out.add(p[len(parent.rstrip("/")) + 1:].split("/")[0])
    return out


def test_root_holds_only_the_profiles_entries():
    from conftest import PYTHON_DIRS

    binds = [str(ROOT), os.getcwd(), *PYTHON_DIRS]  # what with_python() and {cwd} add to the view
    seen = attempt(with_python(), "list:/", "list:/dev", "list:/tmp")
    top = set(seen["list:/"])
    assert {"usr", "etc", "proc", "dev", "tmp"} <= top
    assert not top & ({"home", "var", "run", "sys", "boot", "srv", "mnt"} - _component_under("/", binds))
    assert set(seen["list:/dev"]) == {"null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "fd",
                                      "stdin", "stdout", "stderr", "ptmx"}
    # A private /tmp, not the host's: at most the way to a bind that lives under /tmp.
    assert set(seen["list:/tmp"]) == _component_under("/tmp", binds)


def test_proc_shows_only_the_sandboxs_processes():
    seen = attempt(with_python(), "list:/proc")
    pids = sorted(int(p) for p in seen["list:/proc"] if p.isdigit())
    assert pids == [1, 2]


def test_proc_sys_is_read_only():
    seen = attempt(with_python(), "write:/proc/sys/kernel/hostname", "write:/proc/sys/vm/drop_caches")
    assert seen["write:/proc/sys/kernel/hostname"] == "EROFS"
    assert seen["write:/proc/sys/vm/drop_caches"] == "EROFS"


def test_host_file_outside_the_view_does_not_exist(host_dir):
    seen = attempt(with_python(), f"read:{host_dir}/existing.txt", "read:/root/.bashrc", "list:/home")
    assert seen[f"read:{host_dir}/existing.txt"] == "ENOENT"
    assert seen["read:/root/.bashrc"] == "ENOENT"
    assert seen["list:/home"] == "ENOENT"


def test_read_only_bind_refuses_writes(host_dir):
    prof = with_python(ro=[str(host_dir)])
    seen = attempt(prof, f"read:{host_dir}/existing.txt", f"write:{host_dir}/existing.txt", f"write:{host_dir}/new",
                   "write:/usr/isolate-test", "write:/etc/isolate-test")
    assert seen[f"read:{host_dir}/existing.txt"] == "ok"
    for key in (f"write:{host_dir}/existing.txt", f"write:{host_dir}/new", "write:/usr/isolate-test",
                "write:/etc/isolate-test"):
        assert seen[key] == "EROFS", key
    assert (host_dir / "existing.txt").read_text() == "host content"
    assert not (host_dir / "new").exists()


def test_read_write_bind_writes_reach_the_host(host_dir):
    seen = attempt(with_python(rw=[str(host_dir)]), f"write:{host_dir}/new")
    assert seen[f"write:{host_dir}/new"] == "ok"
    assert (host_dir / "new").read_text() == "from-sandbox"


def test_bind_to_another_target(host_dir):
    prof = with_python()
    prof["filesystem"]["ro"].append({"source": str(host_dir), "target": "/data"})
    seen = attempt(prof, "read:/data/existing.txt", "list:/data")
    assert seen["list:/data"] == ["existing.txt"]


def test_tmpfs_stops_at_its_size():
    prof = with_python()
    prof["filesystem"]["tmpfs"] = [{"path": "/tmp", "size": "1M"}, {"path": "/scratch", "size": "2M"}]
    seen = attempt(prof, "fill:/tmp/f,1048576", "fill:/scratch/f,2097152")
    err, written = seen["fill:/tmp/f,1048576"]
    assert err == "ENOSPC" and written <= 1 << 20
    err, written = seen["fill:/scratch/f,2097152"]
    assert err == "ENOSPC" and (1 << 20) < written <= 2 << 20


def test_dirs_symlinks_and_files():
    prof = with_python()
    prof["filesystem"].update({
        "dirs": ["/work-here"],
        "symlinks": [{"path": "/link-to-usr", "target": "usr"}],
        "files": [{"path": "/hello.txt", "content": "hello\n"}],
    })
    r = isolate.run(["sh", "-c", "test -d /work-here && readlink /link-to-usr && cat /hello.txt && ls /link-to-usr/bin/sh"],
                    profile=prof, capture_output=True, text=True)
    assert r.stdout.split() == ["usr", "hello", "/link-to-usr/bin/sh"], r.stderr


_MODES_CHILD = """
import json, os, sys
import isolate
os.umask(0o077)   # a caller's strict umask must not shape the view (only the program's own files)
prof = json.loads(sys.argv[1])
r = isolate.run(["sh", "-c", "stat -c '%a %n' /hello.txt /work-here /dev/shm /tmp; umask"], profile=prof,
                capture_output=True, text=True)
print(r.stdout, end=""); sys.stderr.write(r.stderr); sys.exit(r.returncode)
"""


def test_the_views_modes_do_not_depend_on_the_callers_umask():
    prof = with_python()
    prof["filesystem"].update({"dirs": ["/work-here"], "files": [{"path": "/hello.txt", "content": "hi\n"}]})
    r = subprocess.run([sys.executable, "-c", _MODES_CHILD, json.dumps(prof)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    # the profile's modes (files 0644, dirs 0755, /dev/shm and /tmp sticky and world-writable) ...
    assert lines[:4] == ["644 /hello.txt", "755 /work-here", "1777 /dev/shm", "1777 /tmp"], r.stdout
    # ... and the program still runs with the caller's umask, as under subprocess
    assert lines[4] == "0077", r.stdout


def test_placeholders_are_resolved(tmp_path):
    prof = with_python()
    prof["filesystem"]["rw"] = ["{cwd}"]
    prof["filesystem"]["dirs"] = ["/home/u{uid}"]
    r = isolate.run(["sh", "-c", "pwd; ls /home"], profile=prof, cwd=str(tmp_path), capture_output=True, text=True)
    assert r.stdout.split() == [str(tmp_path), f"u{os.geteuid()}"]


def test_mounts_do_not_leak_to_the_host():
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    isolate.run(["true"])
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before


# ---- errors name the entry ----------------------------------------------------------------------
def test_missing_required_bind_is_a_profile_error_naming_it(tmp_path):
    prof = with_python(ro=[str(tmp_path / "missing")])
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], profile=prof)
    assert "filesystem.ro[" in str(e.value) and str(tmp_path / "missing") in str(e.value)


def test_missing_optional_bind_is_skipped(tmp_path):
    prof = with_python()
    prof["filesystem"]["ro"].append({"source": str(tmp_path / "missing"), "optional": True})
    assert isolate.run(["true"], profile=prof).returncode == 0


def test_target_under_a_read_only_mount_names_the_entry():
    prof = with_python()
    prof["filesystem"]["files"] = [{"path": "/usr/new-file", "content": "x"}]
    with pytest.raises(isolate.SandboxSetupError) as e:
        isolate.run(["true"], profile=prof)
    assert e.value.step == "mount" and e.value.errno == errno.EROFS
    assert "filesystem.files[0]" in str(e.value) and "/usr/new-file" in str(e.value)


@pytest.mark.parametrize("override, key", [
    ('filesystem.ro=["relative/path"]', "filesystem.ro[0]"),
    ('filesystem.tmpfs=[{path="/tmp", size="lots"}]', "filesystem.tmpfs[0].size"),
    ('filesystem.view="sideways"', "filesystem.view"),
    ('filesystem.ro=["/usr/../etc"]', "filesystem.ro[0]"),
])
def test_bad_entries_are_profile_errors(override, key):
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], overrides=[override])
    assert key in str(e.value)
    r = cli("run", "--set", override, "--", "true")
    assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr


def test_binding_the_whole_host_read_write_is_refused():
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], cwd="/")
    assert "filesystem.rw[0]" in str(e.value)


# ---- network --------------------------------------------------------------------------------------
@pytest.fixture
def host_listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def host_abstract_socket():
    name = f"isolate-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(8)
    yield name
    s.close()


def test_none_network_has_only_loopback_and_no_way_to_the_host(host_listener, host_abstract_socket):
    prof = with_python()
    r = isolate.run(["cat", "/proc/net/dev"], profile=prof, capture_output=True, text=True)
    interfaces = [line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]
    seen = attempt(prof, f"connect:127.0.0.1,{host_listener}", f"abstract:{host_abstract_socket}")
    assert seen[f"connect:127.0.0.1,{host_listener}"] in ("ECONNREFUSED", "ENETUNREACH")
    assert seen[f"abstract:{host_abstract_socket}"] == "ECONNREFUSED"


def test_host_network_reaches_the_host(host_listener, host_abstract_socket):
    prof = with_python(network={"mode": "host"})
    seen = attempt(prof, f"connect:127.0.0.1,{host_listener}", f"abstract:{host_abstract_socket}")
    assert seen[f"connect:127.0.0.1,{host_listener}"] == "ok"
    assert seen[f"abstract:{host_abstract_socket}"] == "ok"


def test_join_a_named_network_namespace():
    name = f"isolate-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "iso0", "type", "veth", "peer", "name",
                        "iso1"], check=True)
        prof = with_python(network={"mode": "netns", "netns": name})
        r = isolate.run(["cat", "/proc/net/dev"], profile=prof, capture_output=True, text=True)
        interfaces = sorted(line.split(":")[0].strip() for line in r.stdout.splitlines()[2:])
        assert interfaces == ["iso0", "iso1", "lo"], r.stderr
        # The caller's thread is back in its own namespace afterwards.
        with open("/proc/net/dev") as f:
            assert "iso0" not in f.read()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_missing_named_netns_fails_closed():
    with pytest.raises(isolate.UnsupportedError) as e:
        isolate.run(["true"], profile=with_python(network={"mode": "netns", "netns": "no-such-netns"}))
    assert "network.netns" in str(e.value) and "no-such-netns" in str(e.value)


# ---- Landlock ---------------------------------------------------------------------------------------
# On the host's tree a root caller's program runs as hostids.BASE: it runs the system's
# Python (ours may live under /root) and uses directories that uid may reach.
SYSTEM_PYTHON = "/usr/bin/python3"


def landlock_profile(**fs):
    prof = {"extends": "default", "filesystem": isolate.load_profile("default").to_dict()["filesystem"]}
    prof["filesystem"]["enforce"] = "landlock"
    prof["filesystem"]["tmpfs"] = []
    prof["filesystem"]["rw"] = []
    prof["filesystem"].update(fs)
    return prof


@pytest.fixture
def open_dir(tmp_path_factory):
    """host_dir, somewhere the reserved uid may reach and write."""
    import shutil
    import tempfile

    from isolate.launch import hostids

    d = tempfile.mkdtemp(prefix="isolate-landlock-", dir="/tmp")
    os.chmod(d, 0o755)
    shared = os.path.join(d, "shared")
    os.mkdir(shared)
    with open(os.path.join(shared, "existing.txt"), "w") as f:
        f.write("host content")
    for path in (shared, os.path.join(shared, "existing.txt")):
        os.chown(path, hostids.BASE, hostids.BASE)
    yield __import__("pathlib").Path(shared)
    shutil.rmtree(d)


def test_landlock_alone_confines_reads_and_writes(open_dir):
    host_dir = open_dir  # the program's uid owns existing.txt: only Landlock stops the write
    prof = landlock_profile(ro=landlock_profile()["filesystem"]["ro"] + [str(host_dir)])
    r = isolate.run(["cat", "/proc/self/mountinfo"], profile=prof, capture_output=True, text=True)
    assert "/newroot" not in r.stdout and len(r.stdout.splitlines()) > 5  # the host's tree, no view
    seen = attempt(prof, "read:/root/.bashrc", f"read:{host_dir}/existing.txt", f"write:{host_dir}/existing.txt",
                   "write:/usr/isolate-test", python=SYSTEM_PYTHON)
    assert seen["read:/root/.bashrc"] == "EACCES"
    assert seen[f"read:{host_dir}/existing.txt"] == "ok"
    assert seen[f"write:{host_dir}/existing.txt"] == "EACCES"
    assert seen["write:/usr/isolate-test"] == "EACCES"
    assert (host_dir / "existing.txt").read_text() == "host content"


def test_landlock_alone_read_write_bind(open_dir):
    host_dir = open_dir
    seen = attempt(landlock_profile(rw=[str(host_dir)]), f"write:{host_dir}/new", python=SYSTEM_PYTHON)
    assert seen[f"write:{host_dir}/new"] == "ok"
    assert (host_dir / "new").read_text() == "from-sandbox"
    from isolate.launch import hostids

    assert (host_dir / "new").stat().st_uid == hostids.BASE  # not host root: the reserved uid


def test_landlock_scopes_abstract_sockets_even_on_the_hosts_network(host_abstract_socket):
    prof = landlock_profile()
    prof["network"] = {"mode": "host"}
    seen = attempt(prof, f"abstract:{host_abstract_socket}", python=SYSTEM_PYTHON)
    assert seen[f"abstract:{host_abstract_socket}"] == "EPERM"


def test_landlock_alone_cannot_give_a_private_tmpfs():
    prof = landlock_profile(tmpfs=["/tmp"])
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], profile=prof)
    assert "filesystem.tmpfs" in str(e.value)


def test_both_walls_at_once(host_dir):
    prof = with_python(ro=[str(host_dir)])
    prof["filesystem"]["enforce"] = "both"
    seen = attempt(prof, f"read:{host_dir}/existing.txt", f"write:{host_dir}/existing.txt", "write:/tmp/ok",
                   "read:/root/.bashrc")
    assert seen[f"read:{host_dir}/existing.txt"] == "ok"
    assert seen[f"write:{host_dir}/existing.txt"] in ("EROFS", "EACCES")
    assert seen["write:/tmp/ok"] == "ok"
    assert seen["read:/root/.bashrc"] == "ENOENT"
    r = isolate.run(["cat", "/proc/self/status"], profile=prof, capture_output=True, text=True)
    assert r.returncode == 0


def test_landlock_required_but_missing_fails_closed(monkeypatch):
    monkeypatch.setenv("ISOLATE_DOCTOR_DISABLE", "landlock")
    with pytest.raises(isolate.UnsupportedError) as e:
        isolate.run(["true"], profile=landlock_profile(root_size="17M"))
    assert "filesystem.enforce" in str(e.value) and "Landlock" in str(e.value)


def test_either_falls_back_to_landlock_without_namespaces(monkeypatch, open_dir):
    # Simulate a machine where the caller may not create namespaces at all (the real
    # kernel refusal: tests/security/test_landlock_only.py).
    host_dir = open_dir
    monkeypatch.setenv("ISOLATE_DOCTOR_DISABLE", "user_namespaces")
    from isolate import doctor
    from isolate.launch import hostids

    doctor.features(refresh=True)
    try:
        # What Landlock alone cannot give is refused by name (default has a hostname, /proc, /tmp).
        prof = landlock_profile(enforce="either", ro=landlock_profile()["filesystem"]["ro"] + [str(host_dir)])
        with pytest.raises(isolate.UnsupportedError) as e:
            isolate.run(["true"], profile=prof)
        assert e.value.field == "identity.hostname"
        prof = {"filesystem": dict(prof["filesystem"], proc=False), "network": {"mode": "host"}}
        r = isolate.run(["sh", "-c", "echo $$; id -u"], profile=prof, capture_output=True, text=True)
        pid, uid = r.stdout.split()
        assert int(pid) > 2 and int(uid) == hostids.BASE  # no namespaces; root runs as the reserved uid
        seen = attempt(prof, "read:/root/.bashrc", f"read:{host_dir}/existing.txt", "read:/etc/shadow",
                       python=SYSTEM_PYTHON)
        assert seen["read:/root/.bashrc"] == "EACCES" and seen[f"read:{host_dir}/existing.txt"] == "ok"
        assert seen["read:/etc/shadow"] == "EACCES"
    finally:
        monkeypatch.delenv("ISOLATE_DOCTOR_DISABLE")
        doctor.features(refresh=True)


# ---- shipped profiles ---------------------------------------------------------------------------
def test_strict_profile_from_the_inside():
    r = isolate.run(["sh", "-c", "id -u; hostname; ls /; ls /etc; pwd; echo x > /tmp/x && cat /tmp/x; "
                     "touch /usr/x 2>&1; ulimit -n; grep Seccomp: /proc/self/status"],
                    profile="strict", capture_output=True, text=True)
    out = r.stdout.splitlines()
    assert out[0] == "65534" and out[1] == "sandbox"
    assert "home" not in out and "root" not in out
    assert "shadow" not in r.stdout and "passwd" in out
    assert "/tmp" in out and "x" in out
    assert any("Read-only" in line or "Permission denied" in line for line in out)
    assert "256" in out and "Seccomp:\t2" in out


def test_strict_allowlist_denies_what_is_not_listed():
    # ptrace is not on the allowlist (and is denied explicitly): EPERM; syslog too.
    code = ("import ctypes, os; l=ctypes.CDLL(None, use_errno=True); "
            "r=l.ptrace(0,0,0,0); print(r, ctypes.get_errno()); "
            "r=l.syscall(103, 3, None, 0); print(r, ctypes.get_errno())")
    r = isolate.run(["python3", "-c", code], profile="strict", capture_output=True, text=True)
    lines = r.stdout.split("\n")
    assert lines[0] == f"-1 {errno.EPERM}" and lines[1] == f"-1 {errno.EPERM}", r.stderr


def test_default_profile_explain_lists_the_view():
    r = cli("explain", "default")
    assert r.returncode == 0 and "OP_PIVOT" in r.stdout and "/newroot/usr" in r.stdout


def test_running_from_tmp_shows_the_callers_tmp(tmp_path):
    # {cwd} = /tmp is bound read-write on top of the private tmpfs at the same place.
    marker = f"isolate-marker-{os.getpid()}"
    open(f"/tmp/{marker}", "w").close()
    try:
        r = isolate.run(["sh", "-c", f"pwd; ls /tmp | grep -x {marker}"], cwd="/tmp", capture_output=True, text=True)
        assert r.stdout.split() == ["/tmp", marker], r.stderr
        r = isolate.run(["sh", "-c", f"ls /tmp | grep -x {marker} || echo private"], capture_output=True, text=True)
        assert r.stdout.strip() == "private"
    finally:
        os.unlink(f"/tmp/{marker}")


def test_a_hidden_path_stays_hidden_under_a_bind_of_the_same_depth(host_dir):
    prof = with_python(ro=[str(host_dir)])
    prof["filesystem"]["hide"] = [str(host_dir)]
    r = isolate.run(["ls", "-A", str(host_dir)], profile=prof, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
