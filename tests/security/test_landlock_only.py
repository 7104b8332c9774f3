"""Landlock-only mode: every profile field is applied or the launch fails closed.

A machine without user namespaces is emulated the way Docker's default seccomp profile
makes one: isolate runs under a real seccomp filter that denies CLONE_NEWUSER (unshare
and clone with the flag get EPERM, clone3, whose flags a filter cannot read, ENOSYS),
so the kernel itself refuses. enforce = "either" then falls back to Landlock alone,
with no namespace at all. The tests run as root, the case that matters most: without
a user namespace the program would otherwise be host root (without capabilities, but
owning every root-owned inode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import isolate
from isolate.launch import hostids

from conftest import ROOT

# Installs the filter, then execs the rest of argv (a Python that calls isolate).
NO_USERNS = textwrap.dedent("""
    import errno, os, sys
    import pyseccomp as s
    CLONE_NEWUSER = 0x10000000
    f = s.SyscallFilter(s.ALLOW)
    for name in ("unshare", "clone"):
        f.add_rule(s.ERRNO(errno.EPERM), name, s.Arg(0, s.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(s.ERRNO(errno.ENOSYS), "clone3")
    f.load()
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])
""")

# What the program reports from the inside. Refuses to try anything unless it is
# not root (the one attack here, chmod of /dev/null, would otherwise succeed).
INSIDE = textwrap.dedent("""
    import errno, json, os, socket, sys
    out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
           "hostname": socket.gethostname(), "pid": os.getpid()}
    if 0 in (os.getuid(), os.geteuid(), os.getgid()):
        print(json.dumps({"refused": "running as root"})); sys.exit(97)
    def attempt(name, fn):
        try:
            r = fn()
            out[name] = "ok" if r is None else r
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
    attempt("read /etc/shadow", lambda: open("/etc/shadow").read() and None)
    attempt("read /etc/passwd", lambda: "root:" in open("/etc/passwd").read())
    attempt("list /etc/ssh", lambda: os.listdir("/etc/ssh"))
    attempt("read /etc/ssh/sshd_config", lambda: open("/etc/ssh/sshd_config").read() and None)
    attempt("list /etc", lambda: os.listdir("/etc"))
    attempt("write /etc/isolate-test", lambda: open("/etc/isolate-test", "w").close())
    attempt("list /proc", lambda: len(os.listdir("/proc")))
    attempt("read /dev/null", lambda: open("/dev/null").read())
    attempt("chmod /dev/null", lambda: os.chmod("/dev/null", 0o666))
    attempt("list /dev", lambda: os.listdir("/dev"))
    print(json.dumps(out))
""")

# The program's Python: the system's, which an unprivileged host uid can run (the
# tests' own interpreter may live under /root).
PYTHON = "/usr/bin/python3"

# A profile written for enforce = "either": what Landlock can give (ro, rw, hide, dev),
# and host networking accepted explicitly.
BASE_PROFILE = {
    "filesystem": {
        "view": "new",
        "enforce": "either",
        "ro": ["/usr", "/etc", *({"source": p, "optional": True} for p in ("/bin", "/sbin", "/lib", "/lib64"))],
        "hide": ["/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers"],
        "dev": True,
    },
    "network": {"mode": "host"},
    "env": {"set": {"PATH": "/usr/bin:/bin"}},
}


def profile(**changes) -> dict:
    prof = json.loads(json.dumps(BASE_PROFILE))
    for section, values in changes.items():
        prof.setdefault(section, {}).update(values)
    return prof


def without_userns(code: str, *args, timeout=60) -> subprocess.CompletedProcess:
    """Run Python `code` (with isolate importable) under the filter that denies CLONE_NEWUSER."""
    return subprocess.run([sys.executable, "-c", NO_USERNS, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def cli_without_userns(*args) -> subprocess.CompletedProcess:
    return without_userns("import sys; from cli.main import main; sys.exit(main(sys.argv[1:]))", *args)


# Under the filter: runs a program (argv 2, with the Python in argv 3 and arguments after) in the
# profile given as JSON (argv 1) and reports the plan's enforcement and what the program saw.
LAUNCH = textwrap.dedent("""
    import json, sys, isolate
    from isolate import doctor
    prof = json.loads(sys.argv[1])
    out = {"userns": doctor.features()["user_namespaces"].available}
    try:
        p = isolate.Popen([sys.argv[3], "-c", sys.argv[2], *sys.argv[4:]], profile=prof, stdout=isolate.PIPE,
                          stderr=isolate.PIPE, text=True)
    except isolate.IsolateError as e:
        out["error"] = [type(e).__name__, str(e)]
        print(json.dumps(out)); sys.exit(0)
    out["enforcement"] = p.plan.enforcement
    stdout, stderr = p.communicate(timeout=60)
    out["rc"], out["stderr"] = p.returncode, stderr
    out["inside"] = json.loads(stdout.splitlines()[-1]) if stdout.strip() else None
    print(json.dumps(out))
""")

# The host's view of a running sandboxed program: it prints its pid and waits.
HOST_SIDE = textwrap.dedent("""
    import json, sys, isolate
    p = isolate.Popen(["sh", "-c", "echo $$; exec sleep 30"], profile=json.loads(sys.argv[1]),
                      stdout=isolate.PIPE, text=True)
    p.stdout.readline()  # it runs (the pid it prints may be one of its own pid namespace)
    # p.pid is the sandbox's first process (isolate-init, or the program); every process
    # of the sandbox, as the host sees it.
    pids, out = [p.pid], {}
    while pids:
        pid = pids.pop()
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        out[pid] = {k: status[k].split() for k in ("Uid", "Gid", "Groups", "CapEff", "NoNewPrivs")}
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    p.kill(); p.wait()
    print(json.dumps(list(out.values())))
""")


def launch(prof) -> dict:
    r = without_userns(LAUNCH, json.dumps(prof), INSIDE, PYTHON)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_filter_really_denies_user_namespaces():
    code = ("import ctypes, errno, json; l = ctypes.CDLL(None, use_errno=True); "
            "u = l.unshare(0x10000000), ctypes.get_errno(); "
            "c3 = l.syscall(435, None, 0), ctypes.get_errno(); print(json.dumps([u, c3]))")
    r = without_userns(code)
    assert json.loads(r.stdout) == [[-1, 1], [-1, 38]], r.stderr  # EPERM, ENOSYS


def test_hide_is_enforced_and_root_runs_as_base():
    out = launch(profile())
    assert out["userns"] is False and out["enforcement"] == "landlock-only", out
    seen = out["inside"]
    assert seen is not None and out["rc"] == 0, out
    # Not host root: the reserved ids, no supplementary groups.
    assert (seen["uid"], seen["euid"], seen["gid"], seen["groups"]) == (hostids.BASE, hostids.BASE, hostids.BASE, [])
    # Hidden: the file, and the directory (neither listed nor read); the rest of /etc reads.
    assert seen["read /etc/shadow"] == "EACCES"
    assert seen["read /etc/passwd"] is True
    assert seen["list /etc/ssh"] == "EACCES"
    if os.path.exists("/etc/ssh/sshd_config"):
        assert seen["read /etc/ssh/sshd_config"] == "EACCES"
    # /etc holds a hidden directory: it cannot be listed (its own rule would reach /etc/ssh).
    assert seen["list /etc"] == "EACCES"
    assert seen["write /etc/isolate-test"] == "EACCES" and not os.path.exists("/etc/isolate-test")
    # No /proc (proc = false): Landlock grants none of it.
    assert seen["list /proc"] == "EACCES"
    # dev = true: the device nodes only, and host root's /dev/null is not ours to chmod.
    assert seen["read /dev/null"] == ""
    assert seen["chmod /dev/null"] == "EPERM"
    assert seen["list /dev"] == "EACCES"
    assert oct(os.stat("/dev/null").st_mode & 0o7777) == "0o666"


def test_hide_of_a_file_only_leaves_its_directory_listable():
    out = launch(profile(filesystem={"hide": ["/etc/shadow", "/etc/gshadow"]}))
    seen = out["inside"]
    assert seen["read /etc/shadow"] == "EACCES" and seen["read /etc/passwd"] is True
    assert "passwd" in seen["list /etc"] and "shadow" in seen["list /etc"]  # the name shows, as in the view
    assert isinstance(seen["list /etc/ssh"], list)  # not hidden now


def test_the_host_sees_base_ids():
    r = without_userns(HOST_SIDE, json.dumps(profile()))
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert len(seen) == 2  # isolate-init and the program
    for status in seen:
        assert status["Uid"] == [str(hostids.BASE)] * 4 and status["Gid"] == [str(hostids.BASE)] * 4
        assert status["Groups"] == [] and status["CapEff"] == ["0000000000000000"] and status["NoNewPrivs"] == ["1"]


@pytest.mark.parametrize("changes, field", [
    ({"filesystem": {"proc": True}}, "filesystem.proc"),
    ({"filesystem": {"tmpfs": [{"path": "/tmp"}]}}, "filesystem.tmpfs"),
    ({"filesystem": {"files": [{"path": "/etc/x", "content": "x"}]}}, "filesystem.files"),
    ({"filesystem": {"dirs": ["/x"]}}, "filesystem.dirs"),
    ({"filesystem": {"symlinks": [{"path": "/x", "target": "/usr"}]}}, "filesystem.symlinks"),
    ({"identity": {"hostname": "box"}}, "identity.hostname"),
    ({"identity": {"uid": 0}}, "identity.uid"),
    ({"identity": {"gid": 0}}, "identity.gid"),
    ({"identity": {"uid_map": [[0, 100000, 65536]]}}, "identity.uid_map"),
    ({"network": {"mode": "none"}}, "network.mode"),
    ({"capabilities": {"keep": ["CAP_NET_BIND_SERVICE"]}}, "capabilities.keep"),
])
def test_what_landlock_cannot_give_fails_closed(changes, field):
    out = launch(profile(**changes))
    assert out.get("error") and out["error"][0] == "UnsupportedError", out
    assert out["error"][1].startswith(field + ":"), out


def test_cli_run_refuses_naming_the_field(tmp_path):
    (tmp_path / "p.toml").write_text(_toml(profile(filesystem={"proc": True})))
    r = cli_without_userns("run", "-p", str(tmp_path / "p.toml"), "--", "cat", "/proc/1/cmdline")
    assert r.returncode == 125 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("isolate: filesystem.proc: ") and len(r.stderr.splitlines()) == 1, r.stderr


def test_explicit_ids_are_applied_as_host_ids():
    out = launch(profile(identity={"uid": 65534, "gid": 65534}))
    seen = out["inside"]
    assert (seen["uid"], seen["gid"], seen["groups"]) == (65534, 65534, []) and seen["read /etc/shadow"] == "EACCES"


def test_explain_and_doctor_say_so(tmp_path):
    (tmp_path / "p.toml").write_text(_toml(profile(filesystem={"proc": True})))
    r = cli_without_userns("explain", str(tmp_path / "p.toml"))
    assert r.returncode == 125, r.stderr
    assert "for uid 0: landlock-only" in r.stdout
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  filesystem.")
             or line.startswith("  identity.")}
    assert "refused" in lines["filesystem.proc"] and "applied" in lines["filesystem.hide"]
    assert f"host uid {hostids.BASE}" in lines["identity.uid"]
    assert "the launch is refused (fail closed): filesystem.proc" in r.stdout
    assert r.stderr.startswith("isolate: filesystem.proc:")

    (tmp_path / "ok.toml").write_text(_toml(profile()))
    r = cli_without_userns("explain", str(tmp_path / "ok.toml"))
    assert r.returncode == 0, r.stderr
    assert "for uid 0: landlock-only" in r.stdout and "filesystem enforced by: landlock-only" in r.stdout
    assert "refused" not in r.stdout.split("## enforcement")[1].split("## plan")[0]

    r = cli_without_userns("doctor")
    assert r.returncode == 0, r.stderr
    assert 'enforce = "either" here: landlock-only' in r.stdout
    table = r.stdout.split("field by field")[1].split("\n\n")[0]  # up to the next section
    rows = {}
    for line in table.splitlines()[1:]:
        parts = line.split(None, 2)
        rows.setdefault(parts[0], []).append(parts[1])
    assert rows["filesystem.hide"] == ["applied"] and rows["filesystem.proc"] == ["refused"]
    assert rows["identity.hostname"] == ["refused"] and rows["identity.uid"] == ["applied"]
    assert f"host uid {hostids.BASE}" in table
    r = cli_without_userns("doctor", "--json")
    doc = json.loads(r.stdout)["enforcement"]
    assert doc["either"] == "landlock-only" and doc["uid"] == 0
    assert {"field": "filesystem.tmpfs", "verdict": "refused"}.items() <= next(
        x for x in doc["landlock_only"] if x["field"] == "filesystem.tmpfs").items()


# ---- enforce = "landlock" with namespaces: the same guarantees ------------------------------------------
def landlock_profile(**changes) -> dict:
    prof = profile(**changes)
    prof["filesystem"]["enforce"] = "landlock"
    prof["namespaces"] = {"user": True, "pid": True, "mount": True, "uts": True, **prof.get("namespaces", {})}
    return prof


def run_inside(prof) -> dict:
    r = isolate.run([PYTHON, "-c", INSIDE], profile=prof, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_landlock_with_namespaces_hides_too():
    seen = run_inside(landlock_profile(identity={"uid": 1000, "gid": 1000}))
    assert seen["read /etc/shadow"] == "EACCES" and seen["read /etc/passwd"] is True
    assert seen["list /etc/ssh"] == "EACCES" and seen["write /etc/isolate-test"] == "EACCES"
    # Mapped to the reserved uid, not to host root: root's inodes are not the program's.
    assert seen["chmod /dev/null"] == "EPERM" and seen["list /dev"] == "EACCES"
    assert seen["uid"] == 1000


def test_landlock_with_namespaces_the_host_sees_base_ids():
    r = subprocess.run([sys.executable, "-c", HOST_SIDE, json.dumps(landlock_profile())], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert len(seen) == 2
    for status in seen:
        assert status["Uid"] == [str(hostids.BASE)] * 4 and status["Gid"] == [str(hostids.BASE)] * 4


def test_landlock_with_namespaces_gives_its_own_proc_and_hostname():
    prof = landlock_profile(filesystem={"proc": True}, identity={"hostname": "box", "uid": 1000, "gid": 1000})
    r = isolate.run(["sh", "-c", "hostname; ls /proc | grep -c '^[0-9]'; cat /proc/1/comm"], profile=prof,
                    capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    name, count, init = r.stdout.split()
    assert name == "box" and int(count) <= 4 and init in ("isolate-init", "sh"), r.stdout


def test_landlock_without_a_pid_namespace_refuses_proc():
    prof = landlock_profile(filesystem={"proc": True}, namespaces={"pid": False})
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], profile=prof)
    assert e.value.key == "filesystem.proc" and "every host process" in str(e.value)


@pytest.mark.parametrize("key, value", [("files", [{"path": "/etc/x", "content": "x"}]), ("dirs", ["/x"]),
                                        ("symlinks", [{"path": "/x", "target": "/usr"}])])
def test_landlock_refuses_what_it_cannot_create(key, value):
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], profile=landlock_profile(filesystem={key: value}))
    assert e.value.key == f"filesystem.{key}"


def test_landlock_root_without_a_user_namespace_runs_as_base():
    prof = landlock_profile(namespaces={"user": False})
    seen = run_inside(prof)
    assert (seen["uid"], seen["gid"], seen["groups"]) == (hostids.BASE, hostids.BASE, [])
    assert seen["read /etc/shadow"] == "EACCES" and seen["chmod /dev/null"] == "EPERM"


def _toml(prof: dict) -> str:
    """A profile dict as TOML (the few shapes used here)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, str)):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in sec.items()) for name, sec in prof.items())


# ---- hide under Landlock: the rules themselves, and a hidden file in a read-write directory -----------
def test_hide_rules_grant_the_siblings_and_never_the_hidden(tmp_path):
    from isolate.plan import landlock as ll

    (tmp_path / "etc" / "ssh").mkdir(parents=True)
    (tmp_path / "etc" / "ssh" / "key").write_text("k")
    (tmp_path / "etc" / "shadow").write_text("s")
    (tmp_path / "etc" / "passwd").write_text("p")
    (tmp_path / "etc" / "link").symlink_to("/")
    (tmp_path / "usr").mkdir()
    root, etc = str(tmp_path), str(tmp_path / "etc")
    rw = ll.READ | ll.EXECUTE | ll.WRITE
    # A hidden file: its directory keeps READ_DIR only, each sibling the full rights; the symlink none.
    rules = ll.hide_rules([(root, rw, False)], [etc + "/shadow"])
    assert (etc, ll.READ_DIR, True) in rules and (etc + "/passwd", rw, True) in rules
    assert (etc + "/ssh", rw, True) in rules and (root + "/usr", rw, True) in rules
    assert [r for r in rules if r[0] == root] == [(root, ll.READ_DIR, True)]
    assert not any(p in (etc + "/shadow", etc + "/link") for p, _, _ in rules)
    # A hidden directory: no READ_DIR on anything above it (it would be inherited).
    rules = ll.hide_rules([(root, rw, False)], [etc + "/ssh"])
    assert {p for p, _, _ in rules} == {etc + "/passwd", etc + "/shadow", root + "/usr"}
    # A rule that is the hidden path goes; rules elsewhere, or inside, stay as they are.
    assert ll.hide_rules([(etc + "/shadow", rw, False), (root + "/usr", ll.READ, False)], [etc + "/shadow"]) == [
        (root + "/usr", ll.READ, False)]
    assert ll.hide_rules([(etc + "/ssh/key", ll.READ, False)], [etc + "/ssh"]) == [(etc + "/ssh/key", ll.READ, False)]


RW_INSIDE = textwrap.dedent("""
    import errno, json, os, sys
    d = sys.argv[1]
    out = {"uid": os.getuid()}
    if os.getuid() == 0:
        print(json.dumps({"refused": "root"})); sys.exit(97)
    def attempt(name, fn):
        try:
            r = fn(); out[name] = "ok" if r is None else r
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
    attempt("read secret", lambda: open(d + "/secret").read() and None)
    attempt("unlink secret", lambda: os.unlink(d + "/secret"))
    attempt("rename secret", lambda: os.rename(d + "/secret", d + "/sub/moved"))
    attempt("write public", lambda: open(d + "/public", "w").write("x") and None)
    attempt("write sub/new", lambda: open(d + "/sub/new", "w").write("x") and None)
    attempt("create new", lambda: open(d + "/new", "w").close())
    attempt("list", lambda: sorted(os.listdir(d)))
    print(json.dumps(out))
""")


def test_hidden_file_in_a_read_write_directory(tmp_path):
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="isolate-hide-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        os.mkdir(f"{d}/sub")
        for name in ("secret", "public"):
            with open(f"{d}/{name}", "w") as f:
                f.write(name)
        for path in (d, f"{d}/sub", f"{d}/secret", f"{d}/public"):
            os.chown(path, hostids.BASE, hostids.BASE)  # only Landlock stands in the way
        os.chmod(f"{d}/secret", 0o600)
        prof = profile(filesystem={"rw": [d], "hide": [f"{d}/secret"]})
        r = without_userns(LAUNCH, json.dumps(prof), RW_INSIDE, PYTHON, d)
        out = json.loads(r.stdout)
        assert out["enforcement"] == "landlock-only", out
        seen = out["inside"]
        assert seen["uid"] == hostids.BASE
        assert seen["read secret"] == "EACCES" and seen["unlink secret"] == "EACCES"
        assert seen["rename secret"] in ("EACCES", "EXDEV")
        assert seen["write public"] == "ok" and seen["write sub/new"] == "ok"
        # The parent itself carries no write right (it would reach the hidden file): nothing new there.
        assert seen["create new"] == "EACCES"
        assert seen["list"] == ["public", "secret", "sub"]
        with open(f"{d}/secret") as f:
            assert f.read() == "secret"
    finally:
        shutil.rmtree(d)


def test_without_signal_scoping_landlock_only_is_refused(monkeypatch):
    # Landlock ABI < 6 cannot scope signals and abstract sockets: without pid and network
    # namespaces nothing would then keep the program from the host's processes.
    from isolate.plan import compile as compile_mod
    from isolate.plan import landlock as ll

    monkeypatch.setattr(ll, "available", lambda: 5)
    data = isolate.load_profile(profile()).data
    fields = compile_mod.landlock_fields(data, 0, "landlock-only")
    assert ("namespaces.pid", "refused") in [(f, v) for f, v, _ in fields]
    monkeypatch.setattr(ll, "available", lambda: 6)
    fields = compile_mod.landlock_fields(data, 0, "landlock-only")
    assert [v for f, v, _ in fields if v == "refused"] == []


def test_explain_for_landlock_with_namespaces(tmp_path):
    (tmp_path / "p.toml").write_text(_toml(landlock_profile()))
    r = subprocess.run([sys.executable, "-m", "cli.main", "explain", str(tmp_path / "p.toml")], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    section = r.stdout.split("## enforcement")[1].split("## plan")[0]
    assert "for uid 0: landlock:" in section and f"mapped to host uid {hostids.BASE}" in section
    assert f"uid_map: '0 {hostids.BASE} 1\\n'" in r.stdout


def test_landlock_refuses_maps_to_host_root():
    prof = landlock_profile(identity={"uid_map": [[0, 0, 1]], "gid_map": [[0, 0, 1]]})
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["true"], profile=prof)
    assert e.value.key == "identity.uid_map" and "root-owned" in str(e.value)
    # A map onto an unprivileged range is the profile's own choice, and is applied.
    prof = landlock_profile(identity={"uid_map": [[0, hostids.BASE + 7, 1]], "gid_map": [[0, hostids.BASE + 7, 1]]},
                            filesystem={"proc": True})
    r = isolate.run(["sh", "-c", "cat /proc/self/uid_map"], profile=prof, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["0", str(hostids.BASE + 7), "1"], r.stderr
