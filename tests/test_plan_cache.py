"""The native `isolate` command and its plan cache (docs/cli-fast-path.md).

Each test runs the native binary (a copy of isolate/launch/isolate-native, with the
venv's isolate-py beside it for what it hands to Python) with a cache directory of its
own, and checks from inside the sandbox that the native launch gives what the Python
launch gives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from isolate.launch import _launch, hostids, plancache

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "isolate" / "launch" / "isolate-native"
VENV_BIN = Path(sys.executable).parent
CACHED = "isolate: timing: plan: cached, native launch"

PROBE = ("id; hostname; grep -E ':(memory|pids):' /proc/self/cgroup; echo pid=$$; "
         # (not the view template's placeholder proc under /proc: tests/test_view_template.py)
         "grep -v 'subset=pid' /proc/self/mountinfo | cut -d' ' -f5,6 | sort; env | sort; "
         # pid 1's argv (isolate-init's fd slots and flags), what the program holds and may do
         "tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc/self/fd; umask; cat /proc/self/limits; "
         "grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status")


@pytest.fixture
def cli(tmp_path):
    """run(args, native=True, ...) -> CompletedProcess, with a private cache directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "isolate"
    shutil.copy(NATIVE, exe)
    (bindir / "isolate-py").symlink_to(VENV_BIN / "isolate-py")
    cache = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()

    def run(args, native=True, input=None, env=None, cwd=None, timeout=60):
        e = dict(os.environ, XDG_CACHE_HOME=str(cache))
        e.pop("ISOLATE_NATIVE", None)
        if not native:
            e["ISOLATE_NATIVE"] = "0"
        e.update(env or {})
        return subprocess.run([str(exe), *args], capture_output=True, text=True, input=input, env=e,
                              cwd=cwd or work, timeout=timeout)

    run.exe, run.cache, run.work = exe, cache / "isolate", work
    return run


def _strip_timing(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if "isolate: timing:" not in line)


def _entries(cli) -> list:
    return sorted(p for p in cli.cache.iterdir() if p.suffix == ".plan") if cli.cache.exists() else []


def _warm(cli, profile="strict", extra=()):
    """Fill the cache for this profile (a Python run stores it), and check the next one uses it."""
    first = cli(["run", "--timing", "-p", profile, *extra, "--", "/bin/true"])
    assert first.returncode == 0, first.stderr
    assert CACHED not in first.stderr
    second = cli(["run", "--timing", "-p", profile, *extra, "--", "/bin/true"])
    assert second.returncode == 0, second.stderr
    assert CACHED in second.stderr
    return second


@pytest.mark.parametrize("profile", ["strict", "default"])
def test_native_launch_sees_what_python_launch_sees(cli, profile):
    _warm(cli, profile)
    py = cli(["run", "-p", profile, "--", "/bin/sh", "-c", PROBE], native=False)
    nat = cli(["run", "--timing", "-p", profile, "--", "/bin/sh", "-c", PROBE])
    assert py.returncode == nat.returncode == 0, (py.stderr, nat.stderr)
    assert CACHED in nat.stderr
    assert nat.stdout == py.stdout
    # From inside: a sandbox (pid 1 is isolate-init, the shell is pid 2), its own hostname.
    assert "pid=2" in nat.stdout
    assert ("sandbox" if profile == "strict" else "isolate") in nat.stdout.splitlines()[1]


def test_plan_bytes_round_trip():
    from isolate.launch import process

    plan = process.plan_for("strict")
    data = _launch.plan_bytes(plan.capsule)
    assert _launch.plan_check(data)
    assert not _launch.plan_check(data[:-1])
    assert not _launch.plan_check(data + b"\0")


def _profiles(tmp_path, hostname="one"):
    parent = tmp_path / "parent.toml"
    parent.write_text(f'extends = "strict"\n[identity]\nhostname = "{hostname}"\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "parent.toml"\n[env]\nset = { PATH = "/usr/bin:/bin", WHO = "child" }\n')
    return parent, child


def test_stale_after_a_parent_profile_or_an_override_changes(cli, tmp_path):
    parent, child = _profiles(tmp_path)
    cmd = ["run", "--timing", "-p", str(child), "--", "/bin/sh", "-c", "hostname; echo $WHO"]
    assert CACHED not in cli(cmd).stderr
    hit = cli(cmd)
    assert CACHED in hit.stderr and hit.stdout == "one\nchild\n"
    # The parent of the extends chain changes: the entry is stale, Python compiles again.
    parent.write_text('extends = "strict"\n[identity]\nhostname = "two"\n')
    miss = cli(cmd)
    assert CACHED not in miss.stderr and miss.stdout == "two\nchild\n"
    hit = cli(cmd)
    assert CACHED in hit.stderr and hit.stdout == "two\nchild\n"
    # The child itself changes.
    child.write_text('extends = "parent.toml"\n[env]\nset = { PATH = "/usr/bin:/bin", WHO = "new" }\n')
    miss = cli(cmd)
    assert CACHED not in miss.stderr and miss.stdout == "two\nnew\n"
    # Another --set is another plan.
    over = ["run", "--timing", "-p", str(child), "--set", "identity.hostname=three", "--", "/bin/hostname"]
    first, second = cli(over), cli(over)
    assert CACHED not in first.stderr and first.stdout == "three\n"
    assert CACHED in second.stderr and second.stdout == "three\n"


def test_an_environment_variable_of_profile_loading_is_part_of_the_entry(cli, tmp_path):
    _warm(cli)
    run = cli(["run", "--timing", "-p", "strict", "--", "/bin/true"], env={"ISOLATE_DOCTOR_DISABLE": "nothing"})
    assert run.returncode == 0 and CACHED not in run.stderr


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "version", "magic", "foreign_owner",
                                    "group_writable", "empty"])
def test_a_damaged_or_foreign_entry_is_ignored_and_replaced(cli, damage):
    _warm(cli)
    (path,) = _entries(cli)
    data = bytearray(path.read_bytes())
    if damage == "corrupt":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) - 100]))
    elif damage == "version":
        data[8] += 1
        path.write_bytes(bytes(data))
    elif damage == "magic":
        data[0:8] = b"XXXXXXXX"
        path.write_bytes(bytes(data))
    elif damage == "foreign_owner":
        os.chown(path, 12345, 12345)
    elif damage == "group_writable":
        os.chmod(path, 0o620)
    elif damage == "empty":
        path.write_bytes(b"")
    run = cli(["run", "--timing", "-p", "strict", "--", "/bin/hostname"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == "sandbox\n"
    assert CACHED not in run.stderr
    # Python replaced it with a good one: the next run is native again.
    st = path.stat()
    assert st.st_uid == os.geteuid() and not st.st_mode & 0o022
    again = cli(["run", "--timing", "-p", "strict", "--", "/bin/hostname"])
    assert CACHED in again.stderr and again.stdout == "sandbox\n"


def test_two_processes_filling_the_cache_at_once(cli):
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    procs = [subprocess.Popen([str(cli.exe), "run", "-p", "strict", "--", "/bin/hostname"], env=e, cwd=cli.work,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(o == "sandbox\n" for o, _ in outs)
    assert len(_entries(cli)) == 1
    assert not [p for p in cli.cache.iterdir() if p.name.startswith(".tmp-")]
    assert CACHED in cli(["run", "--timing", "-p", "strict", "--", "/bin/true"]).stderr


def test_racing_readers_never_see_half_a_file(cli):
    _warm(cli)
    stop = threading.Event()

    def writer():  # Python runs rewriting the entry again and again
        while not stop.is_set():
            cli(["run", "-p", "strict", "--", "/bin/true"], native=False)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(15):
            r = cli(["run", "-p", "strict", "--", "/bin/hostname"])
            assert r.returncode == 0 and r.stdout == "sandbox\n", r.stderr
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("how", ["a_file_in_the_way", "not_private"])
def test_an_unusable_cache_directory_only_makes_it_slower(cli, tmp_path, how):
    if how == "a_file_in_the_way":
        cli.cache.parent.mkdir()
        cli.cache.write_text("not a directory")
    else:
        cli.cache.mkdir(parents=True)
        os.chmod(cli.cache, 0o755)
    for _ in range(2):
        r = cli(["run", "--timing", "-p", "strict", "--", "/bin/hostname"])
        assert r.returncode == 0 and r.stdout == "sandbox\n", r.stderr
        assert CACHED not in r.stderr
    if how == "not_private":
        assert not list(cli.cache.iterdir())


CASES = [
    (["--", "/nonexistent"], 127, "isolate: sandbox setup failed at step 'exec' '/nonexistent'"),
    (["--", "/bin/sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM, ""),
    (["--", "/bin/sh", "-c", "exit 7"], 7, ""),
    (["-t", "0.3", "--", "/bin/sleep", "30"], 124, "isolate: timed out after 0.3 s; the sandbox was killed"),
    (["-t", "1", "--", "/bin/sh", "-c", "sleep 30 & sleep 30"], 124, "isolate: timed out after 1.0 s"),
    (["--set", "rlimits.nofile=abc", "--", "/bin/true"], 2, "isolate: --set: rlimits.nofile: expected an integer"),
    (["-C", "/nonexistent", "--", "/bin/pwd"], 2, "isolate: -C/--cwd: /nonexistent: No such file or directory"),
    (["-e", "NOEQUALS", "--", "/bin/true"], 2, "isolate: --env: expected NAME=VALUE, got 'NOEQUALS'"),
    ([], 2, "isolate: run: no command given"),
    (["--bogus", "--", "/bin/true"], 2, "unrecognized arguments"),
]


@pytest.mark.parametrize("args,code,message", CASES)
def test_exit_codes_and_messages_are_the_same_on_both_paths(cli, args, code, message):
    _warm(cli)
    py = cli(["run", "-p", "strict", *args], native=False)
    nat = cli(["run", "-p", "strict", *args])
    assert py.returncode == nat.returncode == code, (py.stderr, nat.stderr)
    assert message in py.stderr
    assert nat.stderr == py.stderr
    assert nat.stdout == py.stdout


def test_timeouts_and_signals_are_handled_natively(cli):
    _warm(cli)
    r = cli(["run", "--timing", "-p", "strict", "-t", "0.3", "--", "/bin/sh", "-c", "sleep 30 & sleep 30"])
    assert r.returncode == 124 and CACHED in r.stderr
    assert "isolate: timed out after 0.3 s; the sandbox was killed" in r.stderr
    # A signal to the isolate command goes to the sandbox's program.
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    p = subprocess.Popen([str(cli.exe), "run", "--timing", "-p", "strict", "--", "/bin/sh", "-c",
                          "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done"],
                         env=e, cwd=cli.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3 and out == "got TERM\n" and CACHED in err


def test_env_and_stdin_natively(cli):
    _warm(cli)
    r = cli(["run", "--timing", "-p", "strict", "-e", "FOO=bar baz", "-e", "PATH=/usr/bin", "--",
             "/bin/sh", "-c", "echo \"$FOO\"; echo $PATH; cat"], input="from stdin\n")
    assert CACHED in r.stderr
    assert r.stdout == "bar baz\n/usr/bin\nfrom stdin\n"
    # The profile's keep list: default keeps TERM from the caller, clears the rest.
    _warm(cli, "default")
    probe = ["run", "-p", "default", "--", "/bin/sh", "-c", "echo ${TERM:-none} ${SECRET:-none}"]
    env = {"TERM": "vt100", "SECRET": "s3"}
    assert cli(probe, env=env).stdout == cli(probe, env=env, native=False).stdout == "vt100 none\n"
    # A program found on the sandbox's PATH.
    assert cli(["run", "-p", "strict", "--", "hostname"]).stdout == "sandbox\n"


def test_the_seccomp_filter_applies_natively(cli):
    _warm(cli)
    # Inside first (the sandbox's hostname and pid), then a namespace syscall the filter denies.
    cmd = ["run", "--timing", "-p", "strict", "--", "/bin/sh", "-c",
           "hostname; echo pid=$$; unshare -U /bin/true; echo rc=$?"]
    nat = cli(cmd)
    py = cli(cmd, native=False)
    assert CACHED in nat.stderr
    assert nat.stdout.startswith("sandbox\npid=2\n")
    assert "rc=1" in nat.stdout and "Operation not permitted" in nat.stderr
    assert nat.stdout == py.stdout


def test_cgroup_limits_apply_natively_and_nothing_leaks(cli, tmp_path):
    prof = tmp_path / "cg.toml"
    prof.write_text(textwrap.dedent("""\
        extends = "strict"
        [namespaces]
        cgroup = false
        [filesystem]
        ro = ["/usr", { source = "/bin", optional = true }, { source = "/lib", optional = true },
              { source = "/lib64", optional = true }, "/sys/fs/cgroup"]
        [cgroup]
        memory_max = "96M"
        pids_max = 40
        """))
    cmd = ["run", "--timing", "-p", str(prof), "--", "/bin/sh", "-c",
           "m=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); p=$(grep ':pids:' /proc/self/cgroup | cut -d: -f3);"
           "echo $m; echo $p; cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes /sys/fs/cgroup/pids$p/pids.max"]
    cli(cmd)
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    p = subprocess.Popen([str(cli.exe), *cmd], env=e, cwd=cli.work, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and CACHED in err, err
    lines = out.splitlines()
    assert lines[0].endswith(f"/isolate/{p.pid}-1") and lines[1].endswith(f"/isolate/{p.pid}-1")
    assert lines[2:] == [str(96 << 20), "40"]
    # Removed after the run (the very directories the program was in: other sandboxes of
    # this machine come and go beside them, so the tree is not walked).
    for c, rel in (("memory", lines[0]), ("pids", lines[1])):
        assert Path(f"/sys/fs/cgroup/{c}").is_dir()
        assert not Path(f"/sys/fs/cgroup/{c}{rel}").exists()


def test_out_of_memory_natively(cli):
    over = ["--set", "cgroup.memory_max=32M"]
    _warm(cli, extra=over)
    cmd = ["run", "--timing", "-p", "strict", *over, "--", "/bin/sh", "-c",
           "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]
    nat, py = cli(cmd), cli(cmd, native=False)
    assert CACHED in nat.stderr
    assert nat.returncode == py.returncode == 137
    assert "isolate: the sandbox ran out of memory (cgroup.memory_max = 33554432)" in nat.stderr


def test_the_host_id_lease_is_held_while_running_and_released_after(cli):
    _warm(cli)
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    p = subprocess.Popen([str(cli.exe), "run", "-p", "strict", "--", "/bin/sh", "-c",
                          "echo ready; read x"], env=e, cwd=cli.work, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    # The sandbox's processes run as a host id of the reserved range, held by an flock.
    kids = [int(x) for x in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    own_pidns = os.readlink("/proc/self/ns/pid")
    (pid1,) = [k for k in kids if os.readlink(f"/proc/{k}/ns/pid") != own_pidns]  # the sandbox's pid 1
    uid = int(next(line for line in Path(f"/proc/{pid1}/status").read_text().splitlines()
                   if line.startswith("Uid:")).split()[1])
    assert hostids.BASE + 2 <= uid < hostids.BASE + hostids.COUNT
    assert hostids.in_use(uid)
    p.communicate("x\n", timeout=30)
    assert p.returncode == 0
    assert not hostids.in_use(uid)


def _processes_of(exe: Path) -> list:
    """Pids of the processes running `exe` (a CLONE_VM helper shares its executable)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "exe") == str(exe):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("program", ["/bin/true", "/no/such/program"])
def test_nothing_of_the_native_command_is_left_behind(cli, program):
    """Neither after a run nor after a native attempt that failed (Python then ran it
    again): no process of the command (its user-namespace helper shares its fd table and
    waits for a pipe to close), no cgroup. (The lease: test_the_host_id_lease_is_held_...)"""
    _warm(cli)
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    p = subprocess.Popen([str(cli.exe), "run", "--timing", "-p", "strict", "--", program], env=e, cwd=cli.work,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == (0 if program == "/bin/true" else 127), err
    assert (CACHED in err) == (program == "/bin/true")
    for _ in range(200):  # a helper exits on its own once the pipe closes, within moments
        if not _processes_of(cli.exe):
            break
        threading.Event().wait(0.01)
    assert _processes_of(cli.exe) == []
    for c in ("memory", "pids"):
        assert not Path(f"/sys/fs/cgroup/{c}/isolate/{p.pid}-1").exists()


def test_pty_and_other_subcommands_go_to_python(cli):
    r = cli(["--help"])
    assert r.returncode == 0 and "Run programs in sandboxes" in r.stdout
    assert cli(["profiles"]).stdout == subprocess.run([str(VENV_BIN / "isolate-py"), "profiles"],
                                                      capture_output=True, text=True).stdout
    _warm(cli)
    r = cli(["run", "--timing", "-p", "strict", "--pty", "--", "/bin/true"])
    assert r.returncode == 0 and CACHED not in r.stderr


def test_plans_the_native_launcher_does_not_do_are_not_stored(cli, tmp_path):
    prof = tmp_path / "null.toml"
    prof.write_text('extends = "strict"\n[fds]\nstdin = "null"\n')
    for _ in range(2):
        r = cli(["run", "--timing", "-p", str(prof), "--", "/bin/cat"], input="not read\n")
        assert r.returncode == 0 and r.stdout == "" and CACHED not in r.stderr
    assert not _entries(cli)


def test_the_key_is_the_one_the_native_command_builds(cli):
    _warm(cli)
    key = plancache.key_bytes("strict", [], str(cli.work), os.path.realpath(cli.exe.parent))
    assert [p.name for p in _entries(cli)] == [f"{plancache.fnv64(key):016x}.plan"]



def test_stale_after_a_host_path_of_the_view_changes(cli, tmp_path):
    # The compiler copies a symlink of the view as a symlink: the entry records what it was.
    link = tmp_path / "link"
    link.symlink_to("/usr/bin")
    prof = tmp_path / "view.toml"
    prof.write_text('extends = "strict"\n[filesystem]\nro = ["/usr", { source = "/bin", optional = true }, '
                    '{ source = "/lib", optional = true }, { source = "/lib64", optional = true }, '
                    f'"{link}"]\n')
    cmd = ["run", "--timing", "-p", str(prof), "--", "/bin/readlink", str(link)]
    cli(cmd)
    hit = cli(cmd)
    assert CACHED in hit.stderr and hit.stdout == "/usr/bin\n"
    link.unlink()
    link.symlink_to("/usr/lib")
    miss = cli(cmd)
    assert CACHED not in miss.stderr and miss.stdout == "/usr/lib\n"
    assert CACHED in cli(cmd).stderr


def test_only_the_python_cli_of_a_native_command_stores(cli, tmp_path):
    # `python -m cli.main run` (no native command ran it) leaves the cache alone.
    e = dict(os.environ, XDG_CACHE_HOME=str(cli.cache.parent))
    r = subprocess.run([sys.executable, "-m", "cli.main", "run", "-p", "strict", "--", "/bin/true"], env=e,
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not _entries(cli)


@pytest.mark.parametrize("args", [
    ["-p", "strict", "/bin/pwd"],
    ["--profile=strict", "--timeout=30", "--", "/bin/pwd"],
    ["-p", "strict", "-C", "/usr/../tmp/./", "--", "/bin/pwd"],
    ["-p", "default", "-C", "sub/../sub/.", "--", "/bin/pwd"],
    ["-p", "default", "--cwd", "sub", "--", "/bin/pwd"],
    ["-p", "default", "--set=rlimits.nofile=99", "--", "/bin/sh", "-c", "pwd; ulimit -n"],
])
def test_option_forms_the_native_command_takes(cli, args):
    (cli.work / "sub").mkdir()
    first = cli(["run", "--timing", *args])
    second = cli(["run", "--timing", *args])
    py = cli(["run", *args], native=False)
    assert first.returncode == second.returncode == py.returncode == 0, (first.stderr, second.stderr)
    assert CACHED not in first.stderr and CACHED in second.stderr
    assert second.stdout == py.stdout == first.stdout


def test_the_static_programs_are_linked_with_musl_where_it_is_installed():
    """setup.py links isolate-init, isolate-agentd and the native command with musl when musl-gcc is there
    (glibc's static start-up costs 0.25 ms of cpuid on a VM: docs/cli-fast-path.md)."""
    want_musl = shutil.which("musl-gcc") is not None and os.environ.get("ISOLATE_MUSL") != "0"
    for exe in (NATIVE, NATIVE.with_name("isolate-init"), NATIVE.parent.parent / "agent" / "isolate-agentd"):
        data = exe.read_bytes()
        assert data[:4] == b"\x7fELF"
        assert (b"GLIBC" not in data) == want_musl, exe
