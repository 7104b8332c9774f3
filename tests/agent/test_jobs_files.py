"""Soft timeouts and background jobs; the file API."""

import os

import pytest

import isolate
from isolate.agent import JobNotFound, SessionError, SessionPathError

from agent_helpers import session  # noqa: F401 (fixture)


def test_soft_timeout_returns_and_the_job_continues(session):
    r = session.exec("echo start; sleep 1; read line; echo got:$line; echo end", yield_after=0.3)
    assert r.running and r.returncode is None and r.outcome == "running" and r.stdout == "start\n"
    job = r.job
    assert session.job(job.id) is job and job in session.jobs()   # re-attached by id
    # The shell is busy with the job: the next command gets a shell of its own, same state.
    assert session.exec("echo meanwhile; pwd").stdout.startswith("meanwhile\n")
    # exec's stdin is /dev/null unless input= is given: `read` got EOF, the job goes on.
    final = job.wait(30)
    assert final.returncode == 0 and final.stdout == "start\ngot:\nend\n" and not final.running
    assert job.done and job.returncode == 0


def test_soft_timeout_on_an_argv_command(session):
    r = session.exec(["sh", "-c", "echo a; sleep 0.5; echo b"], yield_after=0.1)
    assert r.running
    assert r.job.wait(30).stdout == "a\nb\n"


def test_yield_when_quiet_returns_at_a_stall_not_while_output_flows(session):
    # Output every 0.05 s for ~1 s: never 0.4 s of silence, so the command completes.
    r = session.exec("for i in $(seq 20); do echo $i; sleep 0.05; done", yield_when_quiet=0.4)
    assert not r.running and r.returncode == 0 and r.stdout.split() == [str(i) for i in range(1, 21)]
    # A prompt, then nothing (waiting): exec returns soon after the silence began.
    r = session.exec("echo 'Continue? [y/N]'; sleep 3; echo after", yield_when_quiet=0.3)
    assert r.running and r.returncode is None and r.stdout == "Continue? [y/N]\n"
    assert r.duration < 2.5   # well before the command's own end (3 s)
    assert r.job.wait(30).stdout == "Continue? [y/N]\nafter\n"
    # Both soft limits: the earlier one wins (here yield_after, output keeps flowing).
    r = session.exec(["sh", "-c", "while :; do echo x; sleep 0.05; done"], yield_after=0.5, yield_when_quiet=5)
    assert r.running and r.job.kill().returncode is not None


def test_spawn_write_read_wait(session):
    job = session.spawn(["sh", "-c", "while read x; do echo got:$x; done; echo bye >&2"])
    assert job.pid and job.pid > 1 and job.returncode is None
    job.write_stdin("one\n")
    job.write_stdin(b"two\n")
    first = ""
    for _ in range(200):
        first += job.read_output().stdout
        if first.count("\n") >= 2:
            break
        job.wait(0.05)
    assert first == "got:one\ngot:two\n"
    job.close_stdin()
    r = job.wait(30)
    assert r.returncode == 0 and r.stderr == "bye\n"
    again = job.read_output(since=0)
    assert again.stdout == "got:one\ngot:two\n" and not again.running
    with pytest.raises(SessionError, match="stdin is closed"):
        job.write_stdin("late")


def test_a_job_survives_other_commands_and_can_be_killed(session):
    job = session.spawn("sleep 300 & sleep 301; echo never")
    assert session.exec("echo other").stdout == "other\n"
    assert session.exec(["true"]).returncode == 0
    assert not job.done
    r = job.kill()
    assert r.returncode is not None and "never" not in r.stdout
    names = session.exec("ps -eo comm").stdout.split()
    assert "sleep" not in names


def test_spawn_string_uses_session_state(session):
    session.exec("cd /tmp && export V=42")
    r = session.spawn("echo $PWD $V").wait(30)
    assert r.stdout == "/tmp 42\n"


def test_unknown_job_id(session):
    with pytest.raises(JobNotFound, match="no such job"):
        session.job(99)
    with pytest.raises(JobNotFound):
        session.job("x")


def test_files_roundtrip_without_a_program(session):
    before = session.exec("ps -eo pid= | wc -l").stdout
    assert session.write_file("/tmp/deep/er/f.txt", "hello") == 5
    assert session.read_file("/tmp/deep/er/f.txt") == b"hello"
    assert session.read_file("/tmp/deep/er/f.txt", text=True) == "hello"
    names = [(e.name, e.type, e.size) for e in session.list_dir("/tmp/deep/er")]
    assert names == [("f.txt", "file", 5)]
    r = session.exec("cat /tmp/deep/er/f.txt; echo; stat -c '%u %a' /tmp/deep/er/f.txt /tmp/deep")
    assert r.stdout.splitlines() == ["hello", "0 644", "0 755"]  # the sandbox's own uid
    session.exec("cd /tmp/deep")
    assert session.read_file("er/f.txt") == b"hello"             # relative to the shell's cwd
    assert session.exec("ps -eo pid= | wc -l").stdout == before


def test_files_in_the_workspace_reach_the_host(session, tmp_path):
    session.write_file(str(tmp_path / "w.txt"), b"\x00\x01")
    assert (tmp_path / "w.txt").read_bytes() == b"\x00\x01"


def test_symlinks_cannot_leave_the_session(session, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside-of-session")   # not in the sandbox's view
    (outside / "secret").write_text("host secret")
    session.exec(f"ln -s {outside}/secret /tmp/link; ln -s ../../../../../../{outside} /tmp/up")
    with pytest.raises(FileNotFoundError, match="in the session"):
        session.read_file("/tmp/link")
    with pytest.raises(FileNotFoundError):
        session.read_file("/tmp/up/secret")
    with pytest.raises(FileNotFoundError):
        session.write_file("/tmp/up/secret", "x")
    assert (outside / "secret").read_text() == "host secret"
    with pytest.raises(SessionPathError, match="outside the session"):
        session.read_file("../../../../../../../etc/passwd")
    # A magic link in the sandbox's /proc does not lead to the host either.
    with pytest.raises(OSError):
        session.read_file("/proc/self/root/etc/hostname")


def test_read_only_system_and_size_cap(session):
    with pytest.raises(OSError) as e:
        session.write_file("/usr/evil", "x")
    assert e.value.errno in (30, 13)   # EROFS / EACCES
    session.write_file("/tmp/big", b"x" * 5000)
    with pytest.raises(SessionPathError, match="max_size"):
        session.read_file("/tmp/big", max_size=100)
    with pytest.raises(IsADirectoryError):
        session.read_file("/tmp")
    with pytest.raises(SessionPathError, match="null byte"):
        session.read_file("/tmp/a\0b")


def test_pty_interactive_program(session):
    with session.pty(["python3", "-i", "-q"], rows=30, cols=100) as t:
        assert t.pid > 1
        t.write("import os, shutil, sys\n")
        t.write("print('tty', os.isatty(0), shutil.get_terminal_size())\n")
        out = t.read_until("lines=30)")
        assert b"tty True os.terminal_size(columns=100, lines=30)" in out
        t.resize(40, 120)
        t.write("print('size', os.get_terminal_size())\n")
        assert b"columns=120, lines=40" in t.read_until("lines=40")
        t.write("exit(3)\n")
        assert t.wait(30) == 3
    with pytest.raises(ValueError, match="rows"):
        session.pty(["sh"], rows=0, cols=80)
