"""isolate.Session from the inside: state that persists, separate streams, timeouts, caps."""

import os
import signal
import time

import pytest

import isolate
from isolate.agent import ExecResult, SessionClosed

from agent_helpers import names_in, session  # noqa: F401 (fixture)


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import isolate, sys; print('isolate.agent' in sys.modules); isolate.Session; print('isolate.agent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_shell_state_persists(session, tmp_path):
    r = session.exec("mkdir -p sub && cd sub && export GREETING=hello && COUNT=3 && f() { echo fn:$1; }")
    assert r.returncode == 0, r
    r = session.exec('pwd; echo "$GREETING $COUNT"; f x; echo data > file.txt')
    assert r.stdout.splitlines() == [str(tmp_path / "sub"), "hello 3", "fn:x"]
    assert r.cwd == str(tmp_path / "sub")
    assert (tmp_path / "sub" / "file.txt").read_text() == "data\n"   # the workspace is the host's dir
    # An argv list runs directly, in the shell's directory with its exported variables.
    r = session.exec(["sh", "-c", 'echo "$PWD $GREETING ${COUNT:-unset}"; cat file.txt'])
    assert r.stdout == f"{tmp_path / 'sub'} hello unset\ndata\n"


def test_streams_and_exit_codes_are_per_command(session):
    r = session.exec("echo out; echo err >&2; exit_code() { return 7; }; exit_code")
    assert (r.stdout, r.stderr, r.returncode, r.outcome) == ("out\n", "err\n", 7, "exited")
    r = session.exec("echo second")
    assert (r.stdout, r.stderr, r.returncode) == ("second\n", "", 0)
    r = session.exec(["sh", "-c", "echo a; echo b >&2; exit 3"])
    assert (r.stdout, r.stderr, r.returncode) == ("a\n", "b\n", 3)
    r = session.exec(["sh", "-c", "kill -TERM $$"])
    assert (r.returncode, r.outcome) == (-signal.SIGTERM, "signaled")


def test_input_and_call_cwd_env(session):
    assert session.exec("cat; echo", input=b"typed").stdout == "typed\n"
    assert session.exec(["cat"], input="x" * 200000).stdout == "x" * 200000
    r = session.exec("pwd; echo $ONLY_HERE", cwd="/tmp", env={"ONLY_HERE": "yes"})
    assert r.stdout == "/tmp\nyes\n"
    # cwd=/env= apply to that command only.
    r = session.exec("pwd; echo ${ONLY_HERE:-unset}")
    assert r.stdout.splitlines()[1] == "unset" and r.stdout.splitlines()[0] != "/tmp"
    assert session.exec(["pwd"], cwd="/tmp").stdout == "/tmp\n"


def test_missing_program_is_a_result(session):
    r = session.exec(["no-such-program-here"])
    assert r.returncode == 127 and r.outcome == "not_started" and "No such file" in r.stderr
    r = session.exec("no-such-program-here")
    assert r.returncode == 127 and "not found" in r.stderr


def test_exit_in_the_shell_restarts_it_with_its_state(session):
    session.exec("cd /tmp && export KEEP=1 && g() { echo g; }")
    r = session.exec("exit 5")
    assert r.returncode == 5 and r.shell_restarted
    r = session.exec("pwd; echo $KEEP; g")
    assert r.stdout == "/tmp\n1\ng\n"


def test_background_server_answers_on_loopback_across_calls(session):
    # It logs every request on stderr: the exec's pipes are drained after it returns.
    r = session.exec("cd /tmp && python3 -m http.server 8765 --bind 127.0.0.1 & echo started")
    assert r.stdout == "started\n" and r.returncode == 0
    probe = ("import time, urllib.request\n"
             "for i in range(100):\n"
             "    try:\n"
             "        print(urllib.request.urlopen('http://127.0.0.1:8765/').status); break\n"
             "    except OSError: time.sleep(0.1)\n")
    for _ in range(3):
        r = session.exec(["python3", "-c", probe], timeout=60)
        assert r.stdout == "200\n", r
    assert "python3" in names_in(session)


def test_hard_timeout_kills_the_tree_and_keeps_the_session(session):
    r = session.exec("echo before; (sleep 300; echo) & setsid sleep 301 & echo $! > /tmp/bg; sleep 302; echo after",
                     timeout=1)
    assert r.timed_out and r.outcome == "timed_out"
    assert r.stdout == "before\n"           # partial output, and the rest did not run
    assert not [n for n in names_in(session) if n == "sleep"]
    r = session.exec("kill -0 $(cat /tmp/bg) 2>/dev/null && echo alive || echo gone")
    assert r.stdout == "gone\n"
    assert session.exec(["echo", "ok"]).stdout == "ok\n"
    r = session.exec(["sh", "-c", "sleep 300 & sleep 300"], timeout=0.5)
    assert r.timed_out and not [n for n in names_in(session) if n == "sleep"]


def test_timeout_spares_earlier_background_jobs(session):
    session.exec("sleep 600 & echo $! > /tmp/keep")
    r = session.exec("sleep 300", timeout=0.5)
    assert r.timed_out
    assert session.exec("kill -0 $(cat /tmp/keep) && echo alive").stdout == "alive\n"


def test_builtin_loop_restarts_the_shell_and_restores_its_state(session):
    session.exec("cd /tmp && export KEEP=yes && h() { echo h-$KEEP; }")
    r = session.exec("echo looping; while :; do :; done", timeout=0.5)
    assert r.timed_out and r.shell_restarted and r.stdout == "looping\n"
    r = session.exec("pwd; echo $KEEP; h")
    assert r.stdout == "/tmp\nyes\nh-yes\n" and not r.shell_restarted


def test_output_caps_keep_head_and_tail_with_exact_counts(session):
    r = session.exec("printf 'H%.0s' $(seq 60); head -c 10000 /dev/zero | tr '\\0' m; printf 'T%.0s' $(seq 60)",
                     max_output=100)
    total = 60 + 10000 + 60
    assert r.truncated.stdout == total - 100 and r.truncated.stderr == 0 and r.truncated
    assert r.stdout == "H" * 50 + f"\n[... {total - 100} bytes omitted ...]\n" + "m" * 0 + "T" * 50
    r = session.exec(["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' e >&2; echo small"], max_output=1000)
    assert r.truncated.stderr == 4000 and r.stdout == "small\n" and r.stderr.startswith("e" * 500 + "\n[... 4000")
    r = session.exec("echo fits", max_output=100)
    assert not r.truncated and r.stdout == "fits\n"


def test_huge_output_is_not_buffered(session):
    r = session.exec("head -c 200000000 /dev/zero", max_output=1000, timeout=120)
    assert r.returncode == 0 and r.truncated.stdout == 200000000 - 1000 and len(r.stdout) < 1100


def test_streaming_callbacks(session):
    got = []
    r = session.exec("echo one; sleep 0.2; echo two; echo e >&2", on_stdout=got.append,
                     on_stderr=lambda t: got.append("ERR:" + t))
    assert "".join(x for x in got if not x.startswith("ERR:")) == "one\ntwo\n"
    assert "ERR:e\n" in got and r.stdout == "one\ntwo\n"


def test_for_model_text(session):
    r = session.exec("echo hi; exit 2")
    text = r.for_model()
    assert "hi" in text and "[exit code 2]" in text
    r = session.exec("sleep 30", timeout=0.2)
    assert "timed out" in r.for_model()


def test_the_session_starts_in_the_workspace_with_a_private_home(session, tmp_path):
    r = session.exec("pwd; echo $HOME; touch ~/x && ls -A ~; hostname")
    assert r.stdout.splitlines() == [str(tmp_path), "/home/agent", "x", "agent"]
