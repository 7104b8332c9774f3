"""The pytest plugin (isolate.integrations.pytest_plugin), run through pytester: the
inner test runs check from the inside that they are in a sandbox."""

import subprocess

pytest_plugins = ["pytester"]


def test_the_plugin_is_installed_through_its_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert eps.get("isolate") == "isolate.integrations.pytest_plugin"


def test_sandbox_fixture_is_a_session_per_test_in_tmp_path(pytester):
    pytester.makepyfile("""
        import os

        def test_one(sandbox, tmp_path):
            r = sandbox.exec("hostname; cd sub 2>/dev/null || mkdir sub; pwd")
            assert r.ok, r.for_model()
            assert r.stdout.splitlines() == ["agent", str(tmp_path)]
            sandbox.exec("export KEPT=yes && cd sub && echo hi > f")
            assert sandbox.exec("echo $KEPT; pwd").stdout.split() == ["yes", str(tmp_path / "sub")]
            assert (tmp_path / "sub" / "f").read_text() == "hi\\n"
            assert sandbox.read_file(str(tmp_path / "sub" / "f"), text=True) == "hi\\n"

        def test_two_gets_a_fresh_session(sandbox):
            assert sandbox.exec("echo ${KEPT:-unset}").stdout == "unset\\n"
            assert sandbox.exec("ps -e -o pid= | wc -l").stdout.strip() != ""

        def test_the_session_is_closed_after_the_test(request, sandbox):
            request.config.stash_session = sandbox

        def test_check_closed(request):
            assert request.config.stash_session.closed
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


MARKED = 'extends = "agent"\n[identity]\nhostname = "marked"\n'


def test_marker_chooses_the_profile(pytester):
    path = pytester.path / "marked.toml"
    path.write_text(MARKED)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.isolate_profile({str(path)!r})
        def test_marked(sandbox):
            r = sandbox.exec(["hostname"])
            assert r.stdout.strip() == "marked", r.for_model()

        def test_default_is_agent(sandbox):
            assert sandbox.exec(["hostname"]).stdout.strip() == "agent"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_isolate_profile_option_sandboxes_the_tested_codes_subprocesses(pytester):
    pytester.makepyfile("""
        import os
        import socket
        import subprocess

        import isolate

        def test_run_is_sandboxed():
            assert issubclass(subprocess.Popen, isolate.Popen)
            out = subprocess.run(["sh", "-c", "hostname; echo $$"], capture_output=True, text=True, check=True)
            name, pid = out.stdout.split()
            assert name == "sandbox" != socket.gethostname()
            assert int(pid) < 10 < os.getpid()          # its own pid namespace

        def test_check_output_and_popen_too():
            assert subprocess.check_output(["id", "-u"], text=True).strip() == "65534"
            with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
                assert p.communicate(b"x")[0] == b"x"
            assert not os.path.exists("/etc/shadow") or \\
                subprocess.run(["cat", "/etc/shadow"], capture_output=True).returncode != 0
    """)
    before = subprocess.Popen
    result = pytester.runpytest("-p", "no:cacheprovider", "--isolate-profile", "strict")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["isolate: subprocesses run in sandboxes of profile 'strict'"])
    assert subprocess.Popen is before       # restored when the inner run ended


def test_the_fixture_defaults_to_the_option(pytester):
    path = pytester.path / "marked.toml"
    path.write_text(MARKED)
    pytester.makepyfile("""
        def test_fixture(sandbox):
            assert sandbox.exec(["hostname"]).stdout.strip() == "marked"
    """)
    pytester.runpytest("-p", "no:cacheprovider", "--isolate-profile", str(path)).assert_outcomes(passed=1)


def test_without_the_option_subprocesses_are_not_touched(pytester):
    pytester.makepyfile("""
        import subprocess

        def test_plain():
            assert subprocess.Popen.__module__ == "subprocess"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_bad_profile_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--isolate-profile", "no-such-profile")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--isolate-profile no-such-profile:*"])


def test_a_bad_marker_is_an_error(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.isolate_profile()
        def test_x(sandbox):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*isolate_profile takes one argument*"])
