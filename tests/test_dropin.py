"""isolate.Popen/run/call/check_output/getoutput as subprocess's drop-in: every argument
of subprocess.Popen, proved from inside the sandbox (the program reports what it sees)."""

import errno
import inspect
import os
import signal
import stat
import subprocess
import sys

import pytest

import isolate
from isolate.launch import popen_args as compat

from conftest import ROOT, with_python

EUID = os.geteuid()


def out(*args, **kw) -> str:
    return isolate.check_output(*args, text=True, **kw)


# ---- the signature --------------------------------------------------------------------
def test_popen_takes_subprocess_signature_in_the_same_order():
    ours = list(inspect.signature(isolate.Popen.__init__).parameters.values())[1:]
    theirs = list(inspect.signature(subprocess.Popen.__init__).parameters.values())[1:]
    positional = [p.name for p in theirs if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD] == positional
    assert {p.name for p in theirs} <= {p.name for p in ours}
    own = {"profile", "overrides", "warm", "pty", "pty_size"}
    assert all(p.kind is p.KEYWORD_ONLY for p in ours if p.name in own)


def test_positional_arguments_in_subprocess_order():
    # Popen(args, bufsize, executable, stdin, stdout, stderr)
    with isolate.Popen(["cat"], 0, None, isolate.PIPE, isolate.PIPE, None) as p:
        o, _ = p.communicate(b"positional")
    assert o == b"positional" and p.returncode == 0


def test_result_is_compatible_with_completed_process():
    r = isolate.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True, text=True)
    c = subprocess.CompletedProcess(r.args, r.returncode, r.stdout, r.stderr)
    assert (r.args, r.returncode, r.stdout, r.stderr) == (c.args, c.returncode, c.stdout, c.stderr)
    assert r.args == ["sh", "-c", "echo out; echo err >&2; exit 3"] and (r.stdout, r.stderr) == ("out\n", "err\n")
    with pytest.raises(subprocess.CalledProcessError) as e:
        r.check_returncode()
    assert e.value.returncode == 3 and e.value.stdout == "out\n"
    with pytest.raises(subprocess.CalledProcessError):
        isolate.run(["false"], check=True)


# ---- shell=True -----------------------------------------------------------------------
def test_shell_runs_pipelines_with_the_profiles_shell():
    assert out("echo a b c | wc -w; echo $0", shell=True).split() == ["3", "/bin/sh"]
    # As subprocess: a list gives the shell its $0, $1...
    assert out(["echo $0-$1", "zero", "one"], shell=True) == "zero-one\n"
    assert isolate.call("exit 7", shell=True) == 7


def test_shell_is_the_profile_field(tmp_path):
    assert out("echo ${BASH_VERSION:-none}", shell=True, overrides=["process.shell=/bin/bash"]).strip() != "none"
    assert out("echo ${BASH_VERSION:-none}", shell=True).strip() == "none"  # /bin/sh is dash here
    with pytest.raises(FileNotFoundError) as e:
        isolate.run("true", shell=True, overrides=["process.shell=/nonexistent/sh"])
    assert isinstance(e.value, isolate.ExecutableNotFound)
    assert e.value.filename == "/nonexistent/sh" and "process.shell" in str(e.value)
    with pytest.raises(isolate.ProfileError) as e:
        isolate.plan_for("default", ["process.shell=sh"])
    assert e.value.key == "process.shell"


def test_shell_refuses_path_like_args():
    import pathlib

    with pytest.raises(TypeError):
        isolate.Popen(pathlib.Path("/bin/true"), shell=True)


def test_getoutput_and_getstatusoutput():
    assert isolate.getoutput("echo one; echo two >&2") == "one\ntwo"
    assert isolate.getstatusoutput("echo x; exit 5") == (5, "x")
    assert isolate.getstatusoutput("true") == (0, "")


# ---- env: exactly the environment -------------------------------------------------------
def test_env_is_exactly_the_environment():
    env = out(["/usr/bin/env"], env={"ONLY": "this", "B": "2"}, overrides=['env.set.PROFILE="x"'])
    assert sorted(env.splitlines()) == ["B=2", "ONLY=this"]
    assert out(["/usr/bin/env"], env={}) == ""
    # env=None: the profile's [env]
    env = out(["/usr/bin/env"], overrides=['env.set.PROFILE="x"'])
    assert "PROFILE=x" in env.splitlines()


def test_env_path_is_used_to_find_the_program():
    # As subprocess: env's PATH (os.get_exec_path(env)) finds the program.
    assert out(["true"], env={"PATH": "/usr/bin"}) == ""
    with pytest.raises(FileNotFoundError):
        isolate.run(["true"], env={"PATH": "/nonexistent"})


def test_env_nul_is_a_value_error():
    with pytest.raises(ValueError, match="null byte"):
        isolate.Popen(["true"], env={"A": "x\0y"})
    with pytest.raises(ValueError, match="null byte"):
        isolate.Popen(["echo", "a\0b"])


# ---- umask ----------------------------------------------------------------------------
def test_umask_of_created_files(tmp_path):
    r = isolate.run(["sh", "-c", f"umask; touch {tmp_path}/f; mkdir {tmp_path}/d"], cwd=tmp_path, umask=0o027,
                    capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0027"
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o750
    # Without umask= the caller's umask, as subprocess.
    old = os.umask(0o002)
    try:
        assert out(["sh", "-c", "umask"]).strip() == "0002"
    finally:
        os.umask(old)


def test_umask_with_a_pty_and_a_warm_pool():
    r = isolate.run(["sh", "-c", "umask"], pty=True, capture_output=True, umask=0o077)
    assert r.stdout.strip() == b"0077"
    with isolate.WarmPool("default", size=1) as pool:
        r = pool.run(["sh", "-c", "umask"], capture_output=True, text=True, umask=0o007)
    assert r.stdout.strip() == "0007"


# ---- user / group ------------------------------------------------------------------------
def test_user_and_group_ids_inside():
    assert out(["sh", "-c", "id -u; id -g"], user=1234, group=4321).split() == ["1234", "4321"]
    assert out(["sh", "-c", "id -u; id -g"], user=1234).split()[0] == "1234"


def test_user_names_come_from_the_sandboxs_own_passwd():
    files = [{"path": "/etc/passwd", "content": "box:x:4242:4343::/:/bin/sh\n", "mode": 0o644},
             {"path": "/etc/group", "content": "boxers:x:4343:\n", "mode": 0o644}]
    profile = {"extends": "strict", "filesystem": {"files": files}}
    assert out(["sh", "-c", "id -u; id -g"], profile=profile, user="box", group="boxers").split() == ["4242", "4343"]
    # The host's names are not the sandbox's.
    with pytest.raises(KeyError) as e:
        isolate.run(["true"], profile=profile, user="root")
    assert isinstance(e.value, isolate.UnknownName) and "/etc/passwd" in str(e.value)
    assert out(["id", "-u"], user="nobody").strip() == "65534"


def test_user_group_bad_values():
    with pytest.raises(TypeError):
        isolate.Popen(["true"], user=1.5)
    with pytest.raises(ValueError):
        isolate.Popen(["true"], group=-1)
    with pytest.raises(KeyError):
        isolate.Popen(["true"], group="no-such-group-here")


def test_user_must_be_mapped_by_the_profiles_maps():
    if EUID != 0:
        pytest.fail("this machine runs the suite as root")
    profile = {"extends": "default", "identity": {"uid_map": [[0, 300000, 10]], "gid_map": [[0, 300000, 10]]}}
    assert out(["id", "-u"], profile=profile, user=5).strip() == "5"
    with pytest.raises(PermissionError) as e:
        isolate.Popen(["true"], profile=profile, user=50)
    assert isinstance(e.value, isolate.IdentityError) and "identity.uid_map" in str(e.value)
    assert str(e.value).startswith("user:")


def test_extra_groups_inside():
    if EUID != 0:
        pytest.fail("this machine runs the suite as root")
    # With id maps of ranges: any mapped gid, by number or by the sandbox's own name.
    files = [{"path": "/etc/group", "content": "staff:x:7:\nwheel:x:8:\n", "mode": 0o644}]
    profile = {"extends": "strict", "filesystem": {"files": files},
               "identity": {"uid": 1, "gid": 5, "uid_map": [[0, 300000, 100]], "gid_map": [[0, 300000, 100]]}}
    assert sorted(out(["id", "-G"], profile=profile, group=5, extra_groups=[7, "wheel", 42]).split()) == \
        ["42", "5", "7", "8"]
    assert out(["id", "-G"], profile=profile, group=5, extra_groups=[]).split() == ["5"]
    # Without extra_groups: none but the primary one (the launch path clears the caller's).
    assert out(["id", "-G"], profile=profile, group=5).split() == ["5"]
    with pytest.raises(PermissionError) as e:
        isolate.Popen(["true"], profile=profile, extra_groups=[500])
    assert isinstance(e.value, isolate.IdentityError) and "gid 500" in str(e.value)
    # root's default sandbox maps only its own gid: that one may be listed, no other.
    assert out(["id", "-G"], group=4321, extra_groups=[4321]).split() == ["4321"]
    with pytest.raises(PermissionError, match="extra_groups"):
        isolate.Popen(["true"], extra_groups=[1])
    with pytest.raises(ValueError):
        isolate.Popen(["true"], extra_groups=[-1])
    with pytest.raises(ValueError):
        isolate.Popen(["true"], extra_groups=[2**64])
    with pytest.raises(TypeError):
        isolate.Popen(["true"], extra_groups="staff")


def test_user_on_a_plan_must_match_it():
    plan = isolate.plan_for("default")
    with pytest.raises(ValueError, match="Plan"):
        isolate.Popen(["true"], profile=plan, user=plan.inside_uid + 1)
    assert isolate.call(["true"], profile=plan, user=plan.inside_uid) == 0


# ---- the refusals and the accepted no-ops ----------------------------------------------
def test_preexec_fn_is_refused_naming_the_profile_fields():
    with pytest.raises(ValueError) as e:
        isolate.Popen(["true"], preexec_fn=os.setsid)
    for field in ("rlimits", "process.cwd", "identity.uid", "seccomp"):
        assert field in str(e.value)


def test_close_fds_false_is_refused_pointing_to_pass_fds():
    with pytest.raises(ValueError, match="pass_fds"):
        isolate.Popen(["true"], close_fds=False)
    assert isolate.call(["true"], close_fds=True) == 0


def test_start_new_session_and_process_group_are_what_every_sandbox_has():
    # The program's session and process group are the sandbox's (its pid 1 or itself),
    # never the caller's.
    code = "read -r l < /proc/self/stat; set -- ${l##*) }; echo $3 $4"
    for kw in ({}, {"start_new_session": True}, {"process_group": 0}):
        pgrp, sid = out(["sh", "-c", code], **kw).split()
        assert os.path.exists(f"/proc/{os.getpid()}")
        assert int(sid) in (1, 2) and int(pgrp) in (1, 2), (kw, pgrp, sid)  # pid 1 of its pid namespace
    code2 = "read -r l < /proc/self/stat; set -- ${l##*) }; echo $4"
    sid = int(out(["sh", "-c", code2], start_new_session=True, overrides=["namespaces.pid=false",
                                                                             "process.die_with_parent=false",
                                                                             "filesystem.view=host"]))
    assert sid != os.getsid(0)


def test_restore_signals():
    def sigign(**kw) -> int:
        status = out(["cat", "/proc/self/status"], **kw)
        return int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)

    pipe = 1 << (signal.SIGPIPE - 1)
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python ignores it
    assert sigign() & pipe == 0 and sigign(restore_signals=True) & pipe == 0
    assert sigign(restore_signals=False) & pipe


def test_startupinfo_and_creationflags_are_refused_as_by_subprocess():
    with pytest.raises(ValueError):
        isolate.Popen(["true"], startupinfo=object())
    with pytest.raises(ValueError):
        isolate.Popen(["true"], creationflags=1)


# ---- errors are subprocess's types ------------------------------------------------------
def test_missing_program_and_cwd_are_file_not_found_with_filename(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        isolate.Popen(["no-such-program-here"])
    assert e.value.filename == "no-such-program-here" and e.value.errno == errno.ENOENT
    assert isinstance(e.value, isolate.ExecutableNotFound)
    missing = tmp_path / "gone"
    with pytest.raises(FileNotFoundError) as e:
        isolate.Popen(["true"], cwd=missing)
    assert e.value.filename == str(missing) and isinstance(e.value, isolate.WorkingDirectoryNotFound)


def test_cwd_not_a_directory_is_not_a_directory_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(NotADirectoryError) as e:
        isolate.Popen(["true"], cwd=f)
    assert isinstance(e.value, isolate.SandboxSetupError) and e.value.filename == str(f)


def test_not_executable_is_permission_error(tmp_path):
    f = tmp_path / "prog"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    with pytest.raises(PermissionError) as e:
        isolate.Popen([str(f)], cwd=tmp_path)
    assert isinstance(e.value, isolate.ExecutablePermission)


def test_bytes_and_relative_cwd(tmp_path):
    assert out(["pwd"], cwd=os.fsencode(tmp_path)).strip() == str(tmp_path)
    old = os.getcwd()
    os.chdir(tmp_path.parent)
    try:
        assert out(["pwd"], cwd=tmp_path.name, profile="default").strip() == str(tmp_path)
    finally:
        os.chdir(old)


# ---- run's timeout rule, call, check_call, check_output ----------------------------------
def test_run_timeout_raises_as_subprocess_with_the_result_attached():
    with pytest.raises(subprocess.TimeoutExpired) as e:
        isolate.run(["sh", "-c", "echo started; exec sleep 60"], capture_output=True, text=True, timeout=1)
    assert e.value.output == "started\n" and e.value.timeout == 1
    r = e.value.result
    assert r.timed_out and r.outcome == "timed_out" and r.returncode == -signal.SIGKILL
    r = isolate.run(["sleep", "60"], timeout=0.5, on_timeout="result")
    assert r.timed_out and r.signal == signal.SIGKILL
    with pytest.raises(ValueError, match="on_timeout"):
        isolate.run(["true"], on_timeout="ignore")


def test_call_check_call_check_output():
    assert isolate.call(["sh", "-c", "exit 4"]) == 4
    assert isolate.check_call(["true"]) == 0
    with pytest.raises(subprocess.CalledProcessError) as e:
        isolate.check_call(["sh", "-c", "exit 2"])
    assert e.value.returncode == 2 and e.value.cmd == ["sh", "-c", "exit 2"]
    assert isolate.check_output(["echo", "hi"]) == b"hi\n"
    assert isolate.check_output(["cat"], input=b"in") == b"in"
    assert isolate.check_output(["cat"], input=None) == b""
    with pytest.raises(subprocess.CalledProcessError) as e:
        isolate.check_output(["sh", "-c", "echo partial; exit 1"])
    assert e.value.output == b"partial\n"
    with pytest.raises(subprocess.TimeoutExpired):
        isolate.check_output(["sleep", "60"], timeout=0.5)
    with pytest.raises(ValueError):
        isolate.check_output(["true"], stdout=isolate.PIPE)


def test_python_program_sees_the_arguments(tmp_path):
    # The way subprocess-using code is written: sys.executable -c, env copied and changed.
    env = dict(os.environ, DROPIN="1")
    r = isolate.run([sys.executable, "-c", "import os, sys; print(os.environ['DROPIN'], os.getcwd(), "
                     "oct(os.umask(0)))"], profile=with_python(), env=env, cwd=tmp_path, umask=0o022,
                    capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["1", str(tmp_path), "0o22"]
