"""Bad input is refused before anything runs, with an error that names what was wrong.

NUL bytes (C strings would silently cut the command short), timeouts that are not a
finite number of seconds, a working directory that is not there, an RLIMIT_NOFILE too
low for the launch itself, an endless `extends` chain; and `explain` / `doctor`, which
must say what `run` will really do for the caller at hand (root or not).
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isolate
from isolate.plan import compile as compile_mod

from conftest import ROOT, cli, fill_fds

NO_INIT = ["--set", "namespaces.pid=false", "--set", "process.die_with_parent=false",
           "--set", "filesystem.proc=false"]


def one_line(r, exit_code: int) -> str:
    """The CLI failed with `exit_code` and said why on exactly one line, no traceback."""
    assert r.returncode == exit_code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("isolate: ")]
    assert len(lines) == 1, r.stderr
    assert "RAN" not in r.stdout, "the command ran"
    return lines[0]


@pytest.fixture
def marker(tmp_path):
    """A path that a command which should never run would create."""
    path = tmp_path / "ran"
    yield path
    assert not path.exists(), "the command ran"


# ---- NUL bytes -------------------------------------------------------------------------------

_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(data=st.data())
def test_nul_anywhere_in_an_argument_runs_nothing(data):
    with tempfile.TemporaryDirectory() as d:
        target = os.path.join(d, "ran")
        script = f"touch {target}; echo ran"
        args = ["sh", "-c", script]
        which = data.draw(st.integers(0, len(args) - 1))
        pos = data.draw(st.integers(0, len(args[which])))
        args[which] = args[which][:pos] + "\0" + args[which][pos:]
        as_bytes = data.draw(st.booleans())
        argv = [os.fsencode(a) for a in args] if as_bytes else args
        with pytest.raises(ValueError, match="embedded null byte") as e:
            isolate.run(argv, capture_output=True, cwd=d)
        assert f"args[{which}]" in str(e.value)
        assert os.listdir(d) == []


@_settings
@given(name_pos=st.integers(0, 3), value_pos=st.integers(0, 5), in_name=st.booleans())
def test_nul_in_an_environment_name_or_value_runs_nothing(name_pos, value_pos, in_name):
    with tempfile.TemporaryDirectory() as d:
        name, value = "NAME", "value"
        if in_name:
            name = name[:name_pos] + "\0" + name[name_pos:]
        else:
            value = value[:value_pos] + "\0" + value[value_pos:]
        with pytest.raises(ValueError, match="embedded null byte"):
            isolate.run(["sh", "-c", f"touch {d}/ran"], env={name: value}, cwd=d)
        assert os.listdir(d) == []


def test_nul_in_cwd_or_executable_runs_nothing(tmp_path, marker):
    with pytest.raises(ValueError, match="embedded null byte in cwd"):
        isolate.run(["sh", "-c", f"touch {marker}"], cwd=f"{tmp_path}\0/elsewhere")
    with pytest.raises(ValueError, match="embedded null byte in executable"):
        isolate.run(["sh", "-c", f"touch {marker}"], executable="/bin/sh\0x", cwd=tmp_path)
    with pytest.raises(ValueError, match="embedded null byte in args"):
        with isolate.Popen(["/bin/sh\0x", "-c", f"touch {marker}"], cwd=tmp_path):
            pass


def test_nul_in_a_warm_task_runs_nothing(tmp_path, marker):
    with isolate.WarmPool("default", size=1, cwd=tmp_path) as pool:
        for kw in ({"env": {"A": "1\0"}}, {"cwd": f"{tmp_path}\0"}):
            with pytest.raises(ValueError, match="embedded null byte"):
                pool.run(["sh", "-c", f"touch {marker}"], **kw)
        with pytest.raises(ValueError, match="embedded null byte"):
            pool.run(["sh", "-c", f"touch {marker}\0; true"])
        assert pool.run(["true"]).returncode == 0  # the pool still works


@pytest.mark.parametrize("where", ["value", "name"])
def test_nul_in_profile_env_set(where, tmp_path, marker):
    name, value = ("A", "x\0y") if where == "value" else ("A\0B", "x")
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["sh", "-c", f"touch {marker}"], profile={"extends": "default", "env": {"set": {name: value}}},
                    cwd=tmp_path)
    assert "env.set" in str(e.value) and "NUL" in str(e.value)
    # The same from a TOML file (\u0000 is a valid TOML escape) and from --set: exit 2.
    toml_name = "A\\u0000B" if where == "name" else "A"
    toml_value = "x\\u0000y" if where == "value" else "x"
    path = tmp_path / "p.toml"
    path.write_text(f'extends = "default"\n[env.set]\n"{toml_name}" = "{toml_value}"\n')
    line = one_line(cli("run", "-p", str(path), "--", "sh", "-c", "echo RAN"), 2)
    assert str(path) in line and "env.set" in line
    if where == "value":  # (--set has no quoted dotted keys: a name is tried from the file only)
        line = one_line(cli("run", "--set", f'env.set.A="{toml_value}"', "--", "sh", "-c", "echo RAN"), 2)
        assert "env.set.A" in line and "NUL" in line


def test_nul_in_profile_cwd():
    line = one_line(cli("run", "--set", 'process.cwd="/tmp\\u0000x"', "--", "sh", "-c", "echo RAN"), 2)
    assert "process.cwd" in line and "NUL" in line


# ---- timeouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "-inf", "NaN", "Infinity"])
def test_cli_timeout_must_be_finite_and_not_negative(value):
    r = cli("run", f"--timeout={value}", "--", "sh", "-c", "echo RAN")
    line = one_line(r, 2)
    assert line.startswith("isolate: -t/--timeout: expected a finite number of seconds >= 0, got ")
    if value in ("-1", "nan"):  # the short option too
        assert one_line(cli("run", "-t", value, "--", "sh", "-c", "echo RAN"), 2) == line


def test_cli_timeout_zero_times_out_at_once():
    r = cli("run", "-t", "0", "--", "sleep", "30")
    assert one_line(r, 124) == "isolate: timed out after 0.0 s; the sandbox was killed"


@pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_library_timeout_must_be_finite_and_not_negative(value, tmp_path, marker):
    with pytest.raises(ValueError, match="^timeout: "):
        isolate.run(["sh", "-c", f"touch {marker}"], timeout=value, cwd=tmp_path)
    with isolate.WarmPool("default", size=1, cwd=tmp_path) as pool:
        with pytest.raises(ValueError, match="^timeout: "):
            pool.run(["sh", "-c", f"touch {marker}"], timeout=value)


def test_library_timeout_zero_is_an_immediate_timeout():
    r = isolate.run(["sleep", "30"], timeout=0, on_timeout="result")
    assert r.timed_out and r.outcome == "timed_out"


# ---- the working directory -------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["default", "strict"])
def test_cli_missing_cwd(profile):
    r = cli("run", "-p", profile, "-C", "/nonexistent", "--", "sh", "-c", "echo RAN")
    assert one_line(r, 2) == "isolate: -C/--cwd: /nonexistent: No such file or directory"
    r = cli("run", "-p", profile, "-C", "/etc/passwd", "--", "sh", "-c", "echo RAN")
    assert one_line(r, 2) == "isolate: -C/--cwd: /etc/passwd: Not a directory"


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_library_missing_cwd_is_file_not_found(profile, tmp_path, marker):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as e:
        isolate.run(["sh", "-c", f"touch {marker}"], profile=profile, cwd=missing)
    assert isinstance(e.value, isolate.WorkingDirectoryNotFound) and isinstance(e.value, isolate.IsolateError)
    assert e.value.filename == missing and missing in str(e.value)


def test_warm_missing_cwd_is_file_not_found(tmp_path, marker):
    missing = str(tmp_path / "nope")
    with pytest.raises(isolate.WorkingDirectoryNotFound) as e:
        isolate.WarmPool("default", size=1, cwd=missing)
    assert e.value.filename == missing and isinstance(e.value, FileNotFoundError)
    with pytest.raises(ValueError, match="embedded null byte in cwd"):
        isolate.WarmPool("default", size=1, cwd=f"{tmp_path}\0x")
    with isolate.WarmPool("default", size=1, cwd=tmp_path) as pool:
        with pytest.raises(isolate.WorkingDirectoryNotFound) as e:
            pool.run(["sh", "-c", f"touch {marker}"], cwd=missing)
    assert e.value.filename == missing


# ---- rlimits.nofile below what the launch needs ------------------------------------------------

# name -> (profile, overrides)
PROFILES = {"default": ("default", []), "strict": ("strict", []), "no-init": ("default", NO_INIT[1::2]),
            "strict-no-init": ("strict", NO_INIT[1::2])}


@pytest.mark.parametrize("name", list(PROFILES))
def test_nofile_minimum_is_exact(name):
    """Below the minimum: a ProfileError naming rlimits.nofile and the minimum, nothing runs.
    At the minimum: the launch works (the number is what the launch really needs)."""
    prof, over = PROFILES[name]
    cli_args = ["-p", prof] + [a for o in over for a in ("--set", o)]
    plan = isolate.plan_for(prof, over)
    need = compile_mod.nofile_needed(plan)
    assert need >= 0
    if need > 1:
        with pytest.raises(isolate.ProfileError) as e:
            isolate.plan_for(prof, over + [f"rlimits.nofile={need - 1}"])
        assert e.value.key == "rlimits.nofile" and f"at least {need}" in str(e.value)
        line = one_line(cli("run", *cli_args, "--set", f"rlimits.nofile={need - 1}", "--", "sh", "-c",
                            "echo RAN"), 2)
        assert "rlimits.nofile" in line and f"{need - 1} is below what the launch needs: at least {need}" in line
    # /bin/true is dynamically linked: the loader itself needs one more fd of its own.
    r = cli("run", *cli_args, "--set", f"rlimits.nofile={max(need, 4)}", "--", "true")
    assert r.returncode == 0, r.stderr


def test_nofile_counts_the_profiles_pass_fds():
    plan = isolate.plan_for("default")
    base = compile_mod.nofile_needed(plan)
    # The launch lays the table out before the limit applies: a lone high fd leaves room
    # below it (isolate-init's fds take the lowest free numbers); a full block does not.
    assert compile_mod.nofile_needed(plan, [40]) <= base
    block = list(range(3, 13))
    need = compile_mod.nofile_needed(plan, block)
    assert need > base
    with pytest.raises(isolate.ProfileError) as e:
        isolate.plan_for("default", [f"fds.pass={block}", f"rlimits.nofile={need - 1}"])
    assert e.value.key == "rlimits.nofile" and f"at least {need}" in str(e.value) and "3, 4, 5" in str(e.value)
    isolate.plan_for("default", [f"fds.pass={block}", f"rlimits.nofile={need}"])


@pytest.fixture
def fd_block():
    """Every number from 3 to 12 open (ours or the test process's own), like a caller passing them."""
    mine = fill_fds(os.devnull, 12)
    yield list(range(3, 13))
    for fd in mine:
        os.close(fd)


def test_nofile_checked_for_extra_pass_fds_before_anything_starts(tmp_path, marker, fd_block):
    plan = isolate.plan_for("default", cwd=str(tmp_path))
    need = compile_mod.nofile_needed(plan, fd_block)
    assert need > compile_mod.nofile_needed(plan)
    with pytest.raises(isolate.ProfileError) as e:
        isolate.run(["sh", "-c", f"touch {marker}"], pass_fds=fd_block, cwd=tmp_path,
                    overrides=[f"rlimits.nofile={need - 1}"])
    assert e.value.key == "rlimits.nofile" and f"at least {need}" in str(e.value) and "pass_fds" in str(e.value)
    r = isolate.run(["/usr/bin/test", "-e", "/proc/self/fd/12"], pass_fds=fd_block, cwd=tmp_path,
                    overrides=[f"rlimits.nofile={need}"])
    assert r.returncode == 0


def test_nofile_in_warm_sandboxes(marker):
    plan = isolate.plan_for("strict")
    need = compile_mod.nofile_needed(plan, warm=True)
    with pytest.raises(isolate.ProfileError) as e:
        isolate.WarmPool("strict", size=1, overrides=[f"rlimits.nofile={need - 1}"])
    assert e.value.key == "rlimits.nofile" and f"at least {need}" in str(e.value)
    with isolate.WarmPool("strict", size=1, overrides=[f"rlimits.nofile={need}"]) as pool:
        assert pool.run(["/usr/bin/true"]).returncode == 0
    # strict's own 256: a task's fd at 250 would be laid out by pid 1 above the limit.
    # (The lowest free number from 250: a dup2 onto 250 would close whatever fd of the
    # library's own is there.)
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 250)
    os.close(fd)
    try:
        with isolate.WarmPool("strict", size=1) as pool:
            with pytest.raises(isolate.ProfileError) as e:
                pool.run(["sh", "-c", f"touch {marker}"], pass_fds=[high])
            assert e.value.key == "rlimits.nofile" and f"pass_fds=[{high}]" in str(e.value)
            assert pool.run(["true"]).returncode == 0
    finally:
        os.close(high)


# ---- extends ---------------------------------------------------------------------------------

def _chain(tmp_path, n: int):
    for i in range(n):
        nxt = f'"./p{i + 1}.toml"' if i < n - 1 else '"default"'
        (tmp_path / f"p{i}.toml").write_text(f"extends = {nxt}\n")
    return tmp_path / "p0.toml"


def test_deep_extends_names_the_key_and_the_file(tmp_path):
    top = _chain(tmp_path, 200)
    with pytest.raises(isolate.ProfileError) as e:
        isolate.load_profile(str(top))
    assert e.value.key == "extends" and "nested too deeply" in str(e.value)
    assert e.value.file and e.value.file.endswith(".toml") and str(top) in str(e.value)
    line = one_line(cli("run", "-p", str(top), "--", "sh", "-c", "echo RAN"), 2)
    assert ": extends: nested too deeply" in line
    line = one_line(cli("explain", str(top)), 2)
    assert ": extends: nested too deeply" in line
    # A chain well inside the limit loads.
    (tmp_path / "ok").mkdir()
    ok = _chain(tmp_path / "ok", 30)
    assert isolate.load_profile(str(ok)).data["namespaces"]["pid"] is True


# ---- explain refuses what run refuses --------------------------------------------------------------

@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_explain_runs_the_preflight(json_flag):
    # A ProfileError at compile time (the nofile minimum): 2, like run.
    args = ["--set", "rlimits.nofile=3"]
    run_line = one_line(cli("run", *args, "--", "sh", "-c", "echo RAN"), 2)
    assert one_line(cli("explain", "default", *args, *json_flag), 2) == run_line
    # What this kernel cannot give (doctor's check): the code run uses for UnsupportedError.
    env = dict(os.environ, ISOLATE_DOCTOR_DISABLE="landlock")
    r = subprocess.run([sys.executable, "-m", "cli.main", "run", "-p", "strict", "--", "sh", "-c", "echo RAN"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    run_line = one_line(r, 125)
    assert "filesystem.enforce" in run_line and "Landlock" in run_line
    r = subprocess.run([sys.executable, "-m", "cli.main", "explain", "strict", *json_flag], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=60)
    assert one_line(r, 125) == run_line
    # Nothing of a plan is printed for a launch that is refused; without --json, how the
    # view would be enforced for this caller comes first (it says why it is refused).
    assert "## plan" not in r.stdout and "## resolved profile" not in r.stdout
    assert r.stdout == "" if json_flag else r.stdout.lstrip().startswith("## enforcement")
    # And a profile run accepts, explain accepts.
    assert cli("explain", "strict", *json_flag).returncode == 0


# ---- explain and doctor tell the truth to an unprivileged caller ----------------------------------

def _cli_as_nobody(*args) -> tuple[int, str, str]:
    """`isolate ARGS` in a forked child that dropped to uid/gid 65534 (like tests/test_core.py)."""
    import prctl

    import cli.main as cli_main
    from isolate.launch import cgroup, net  # noqa: F401 - imported before the drop
    from isolate import doctor
    from isolate.plan import seccomp
    from isolate.plan import fs, landlock

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            prctl.set_dumpable(True)
            out, err = io.StringIO(), io.StringIO()
            sys.stdout, sys.stderr = out, err
            code = cli_main.main(list(args))
            payload = {"rc": code, "out": out.getvalue(), "err": err.getvalue()}
        except BaseException as e:  # noqa: BLE001
            payload = {"rc": -1, "out": "", "err": repr(e)}
        os.write(w, json.dumps(payload).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = json.loads(f.read() or b"{}")
    os.waitpid(pid, 0)
    return data["rc"], data["out"], data["err"]


def test_explain_network_as_nobody_and_as_root():
    rc, out, err = _cli_as_nobody("explain", "default")
    assert rc == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("network:"))
    assert "pool of prepared" in line and "needs root" in line and "from the pool" not in line
    assert line == "network: none (a new namespace for each launch: the pool of prepared ones needs root)"
    r = cli("explain", "default")
    assert "network: none (from the pool of prepared namespaces)" in r.stdout.splitlines()


def test_doctor_says_strict_falls_back_to_rlimits_as_nobody():
    rc, out, err = _cli_as_nobody("doctor")
    assert rc == 0, err
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("strict "))
    assert "runnable" in line and "not runnable" not in line
    assert "cgroup.memory_max" in line and "rlimits" in line and "no usable cgroup" in line
    rc, out, err = _cli_as_nobody("explain", "strict")
    line = next(ln for ln in out.splitlines() if ln.startswith("cgroup:"))
    assert line.startswith("cgroup: rlimits (") and "no usable cgroup here" in line
    rc, out, err = _cli_as_nobody("doctor", "--json")
    assert "rlimits" in json.loads(out)["profiles"]["strict"]["reason"]
    # As root, with cgroups here, there is nothing to add.
    doc = json.loads(cli("doctor", "--json").stdout)
    assert doc["profiles"]["strict"] == {"runnable": True, "reason": ""}
