"""The benchmarks' own launchers work here and give what they claim: a broken or weaker
variant must never look fast."""

import os
import shutil

import pytest

from benchmarks import cli, floor, programs


@pytest.fixture(scope="module")
def floors():
    return floor.Floor()


def _sh(floors, config, script):
    status = floors.run(config, ["/bin/sh", "-c", script])
    assert os.WIFEXITED(status), status
    return os.WEXITSTATUS(status)


@pytest.mark.parametrize("config", list(floor.CONFIGS))
def test_every_floor_configuration_runs_the_programs(floors, config, tmp_path):
    assert floors.launch(config, "/bin/true") == 0
    assert floors.launch(config, str(programs.build_noop())) == 0
    # also a program below /tmp, where the floor's new root is mounted (a fresh clone in /tmp)
    below_tmp = tmp_path / "noop"
    shutil.copy(programs.build_noop(), below_tmp)
    assert str(below_tmp).startswith("/tmp/")
    assert floors.launch(config, str(below_tmp)) == 0


def test_a_floor_launch_reports_the_failing_step(floors):
    with pytest.raises(OSError) as e:
        floors.launch(floor.PLAIN, "/nonexistent/program")
    assert e.value.errno == 2


def test_the_namespaces_are_new(floors):
    mine = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "pid", "ipc", "uts", "mnt", "net")}
    # pid 1 of its own pid namespace; each of the five namespaces differs from the caller's
    checks = " && ".join(f'[ "$(readlink /proc/self/ns/{ns})" != "{v}" ]' for ns, v in mine.items()
                         if ns != "net")
    assert _sh(floors, floor.NAMESPACES, f'[ $$ = 1 ] && {checks} && [ "$(readlink /proc/self/ns/net)" = '
                                         f'"{mine["net"]}" ]') == 0
    assert _sh(floors, floor.POOLED, f'[ "$(readlink /proc/self/ns/net)" != "{mine["net"]}" ]') == 0
    # the pooled namespace is the same every launch; the caller's thread is back in its own
    a = floors.run(floor.POOLED, ["/bin/sh", "-c", "exit 0"])
    assert a == 0 and os.readlink("/proc/self/ns/net") == mine["net"]


def test_the_floor_view_is_the_minimal_one(floors):
    here = os.getcwd()
    assert _sh(floors, floor.VIEW_, f'test -x /usr/bin/true && ! test -e "{here}" && ! test -e /etc/passwd '
                                    f'&& test -d /proc/self && ! touch /usr/x 2>/dev/null') == 0


def test_the_floor_filters_and_landlock_are_applied(floors):
    # the deny list of default refuses unshare; strict's Landlock leaves only /usr (and the program)
    # (no redirections: the floor's view has no /dev)
    assert _sh(floors, floor.DEFAULT_FLOOR, "unshare -U true") != 0
    assert _sh(floors, floor.VIEW_, "unshare -U true") == 0
    assert _sh(floors, floor.STRICT_FLOOR, "ls /") != 0
    assert _sh(floors, floor.VIEW_, "ls /") == 0
    assert _sh(floors, floor.STRICT_FLOOR, "ls /usr") == 0


def test_every_cli_peer_runs_here(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    for name, argv in cli.commands("/bin/true", str(tmp_path), python=True).items():
        assert cli.usable(argv, env, tmp_path) is None, name


def test_the_cli_benchmark_measures_the_native_path(tmp_path):
    r = cli.measure(passes=1, runs=2, warmup=0, rounds=1, log=lambda m: None)
    assert not r.skipped
    assert r.native_hit == {cli.ISOLATE_STRICT: True, cli.ISOLATE_DEFAULT: True}
    assert all(len(r.times_ms[n]) == 2 for n in r.argv) and all(len(v) == 1 for v in r.rr_ms.values())
