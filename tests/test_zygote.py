"""Warm tasks through isolate-init's zygote (the program's process forked before its task)
are not weaker than cold launches of the same profile: the program reports what it sees,
and it must see the same as on a cold launch. Both ways of a WarmPool are checked: the
direct path of WarmPool.run and the Popen path (WarmPool.Popen)."""

import json
import os
import select
import subprocess
import sys
import textwrap

import pytest

import isolate

from conftest import PROBE, ROOT, with_python

CHECKS = ["syscall:unshare_user", "syscall:keyctl", "syscall:mount_tmpfs", "syscall:ptrace_traceme",
          "syscall:netlink_socket", "syscall:inet_socket"]
MOUNTS_AND_UMASK = ("import os; print(sorted(l.split()[4] for l in open('/proc/self/mountinfo')));"
                    "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Umask')][0])")


@pytest.fixture(scope="module")
def strict():
    profile = isolate.load_profile(with_python("strict"))
    with isolate.WarmPool(profile, size=2) as pool:
        assert pool.wait_ready(30)
        yield profile, pool


def _cold(profile, argv, **kw):
    return isolate.run(argv, profile=profile, capture_output=True, text=True, timeout=60, **kw)


def _popen(pool, argv, **kw):
    with pool.Popen(argv, stdout=isolate.PIPE, stderr=isolate.PIPE, text=True, **kw) as p:
        out, err = p.communicate(timeout=60)
    return p.returncode, out, err


def _seen(out):
    seen = json.loads(out)
    assert seen["ppid"] == 1
    # Each sandbox of root's has a host uid/gid of its own: only the outside id differs.
    for key in ("uid_map", "gid_map"):
        inside, outside, count = seen[key]
        assert int(outside) > 0 and count == "1"
        seen[key] = [inside, count]
    return seen


def test_a_warm_task_sees_what_a_cold_launch_sees(strict):
    profile, pool = strict
    argv = [sys.executable, str(PROBE), *CHECKS]
    cold = _cold(profile, argv)
    assert cold.returncode == 0, cold.stderr
    warm = pool.run(argv, capture_output=True, text=True, timeout=60)
    assert warm.returncode == 0, warm.stderr
    rc, out, err = _popen(pool, argv)
    assert rc == 0, err
    a, b, c = _seen(cold.stdout), _seen(warm.stdout), _seen(out)
    assert a == b == c
    # And what they see is the strict sandbox: not the caller's ids, a pid namespace of
    # its own, the filter loaded (mode 2) and refusing, exactly 0, 1, 2 open.
    assert (a["uid"], a["gid"], a["pid"], a["pids"], a["hostname"]) == (65534, 65534, 2, [1, 2], "sandbox")
    assert a["seccomp"] == 2 and a["no_new_privs"] == 1 and a["cap_eff"] == 0
    assert all(a[c] != 0 for c in CHECKS if c != "syscall:inet_socket"), a
    assert a["fds"] == [0, 1, 2]
    assert a["rlimits"]["nofile"] == [256, 256] and a["rlimits"]["core"] == [0, 0]
    assert a["cwd"] == "/tmp" and a["env"]["HOME"] == "/tmp"


def test_mounts_umask_fds_env_and_cwd_follow_the_task_as_on_a_cold_launch(strict):
    profile, pool = strict
    argv = [sys.executable, "-c", MOUNTS_AND_UMASK]
    cold = _cold(profile, argv)
    warm = pool.run(argv, capture_output=True, text=True)
    popen = _popen(pool, argv)
    assert cold.returncode == warm.returncode == popen[0] == 0, (cold.stderr, warm.stderr, popen[2])
    assert cold.stdout == warm.stdout == popen[1]
    # The caller's umask at the time of the task (not when the sandbox was made), in a
    # process of its own: a umask of 027 here would also reach what this process's later
    # launches write into their views (the [filesystem] files of a template).
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, "tests")
        import isolate
        from conftest import with_python
        profile = isolate.load_profile(with_python("strict"))
        argv = [sys.executable, "-c", {MOUNTS_AND_UMASK!r}]
        with isolate.WarmPool(profile, size=1) as pool:
            assert pool.wait_ready(30)
            os.umask(0o027)
            cold = isolate.run(argv, profile=profile, capture_output=True, text=True)
            warm = pool.run(argv, capture_output=True, text=True)
        assert cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
        print(repr((cold.stdout, warm.stdout)))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cold_out, warm_out = eval(r.stdout)
    assert cold_out == warm_out and cold_out.splitlines()[1] == "0027"
    # umask=, env=, cwd= and pass_fds= of the task.
    r, w = os.pipe()
    try:
        argv = [sys.executable, str(PROBE)]
        kw = dict(umask=0o077, env={"PATH": "/usr/bin", "ONLY": "this"}, cwd="/usr", pass_fds=[w])
        cold = _cold(profile, argv, **kw)
        warm = pool.run(argv, capture_output=True, text=True, **kw)
        assert cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
        a, b = _seen(cold.stdout), _seen(warm.stdout)
        assert a == b
        assert a["fds"] == [0, 1, 2, w] and {k: v for k, v in a["env"].items() if k != "LC_CTYPE"} == {"PATH": "/usr/bin", "ONLY": "this"} and a["cwd"] == "/usr"
    finally:
        os.close(r)
        os.close(w)
    cold = _cold(profile, ["sh", "-c", "umask"], umask=0o077)
    warm = pool.run(["sh", "-c", "umask"], capture_output=True, text=True, umask=0o077)
    assert cold.stdout == warm.stdout == "0077\n"


def test_a_warm_task_sees_nothing_of_the_task_before(strict):
    _profile, pool = strict
    first = pool.run(["sh", "-c", "echo left > /tmp/left; sleep 30 & echo $$"], capture_output=True, text=True,
                     timeout=30)
    assert first.stdout.strip() == "2"
    second = pool.run(["sh", "-c", "cat /proc/[0-9]*/comm | tr '\\n' ' '; echo; cat /tmp/left 2>&1; echo $$"],
                      capture_output=True, text=True, timeout=30)
    comms, missing, pid = second.stdout.splitlines()
    # pid 1, sh and its cat: no sleep of the task before, no file of it.
    assert "sleep" not in comms.split() and "isolate-init" in comms.split(), comms
    assert "No such file" in missing and pid == "2"


def test_errors_are_the_cold_launchs_exceptions(strict):
    profile, pool = strict
    for argv, kw in ((["no-such-program-xyz"], {}), (["/tmp"], {}), (["true"], {"cwd": "/no/such/dir"})):
        with pytest.raises(isolate.SandboxSetupError) as cold:
            isolate.run(argv, profile=profile, **kw)
        with pytest.raises(isolate.SandboxSetupError) as warm:
            pool.run(argv, **kw)
        with pytest.raises(isolate.SandboxSetupError) as popen:
            pool.Popen(argv, **kw)
        assert type(cold.value) is type(warm.value) is type(popen.value), (cold.value, warm.value, popen.value)
        assert str(cold.value) == str(warm.value) == str(popen.value)
        assert argv[0] in str(warm.value) or "/no/such/dir" in str(warm.value)
    with pytest.raises(isolate.ExecutableNotFound):
        pool.run(["no-such-program-xyz"], shell=False)
    # The pool goes on serving.
    assert pool.run(["true"]).returncode == 0


def test_a_timeout_kills_the_whole_tree(strict):
    _profile, pool = strict
    r, w = os.pipe()
    try:
        # A background process that would write after 5 s, and holds the pipe until then.
        with pytest.raises(isolate.TimeoutExpired) as e:
            pool.run(["sh", "-c", "echo started; (sleep 5; echo late >&%d) & sleep 30" % w], pass_fds=[w],
                     capture_output=True, text=True, timeout=1)
        os.close(w)
        w = -1
        assert e.value.result.timed_out and e.value.result.outcome == "timed_out"
        assert e.value.result.returncode == -9 and e.value.stdout == "started\n" == e.value.result.stdout
        # Every process that held the pipe is dead: EOF now, not in 5 s.
        ready, _, _ = select.select([r], [], [], 3)
        assert ready and os.read(r, 100) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    res = pool.run(["sleep", "30"], timeout=0.3, on_timeout="result")
    assert res.timed_out and res.returncode == -9


def test_run_keeps_every_behaviour_of_isolate_run(strict):
    profile, pool = strict
    r = pool.run(["sh", "-c", "cat; echo err >&2; exit 3"], input="typed\n", capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr, r.outcome, r.violations) == (3, "typed\n", "err\n", "exited", ())
    assert r.rusage is not None and r.rusage.maxrss_kb > 0 and r.duration > 0
    with pytest.raises(isolate.CalledProcessError) as e:
        pool.run(["sh", "-c", "echo out; exit 4"], capture_output=True, check=True)
    assert (e.value.returncode, e.value.stdout) == (4, b"out\n")
    r = pool.run(["sh", "-c", "kill -TERM $$"])
    assert (r.signal, r.outcome) == (15, "signaled")
    big = os.urandom(1 << 20)
    r = pool.run(["cat"], input=big, capture_output=True)
    assert r.stdout == big and r.stderr == b""
    r = pool.run("echo $0 $HOME", shell=True, capture_output=True, text=True)
    assert r.stdout == "/bin/sh /tmp\n"
    r = pool.run(["sh", "-c", "echo x >&2"], stdout=isolate.PIPE, stderr=isolate.STDOUT)
    assert r.stdout == b"x\n" and r.stderr is None
    r = pool.run(["sh", "-c", "cat"], stdin=isolate.DEVNULL, stdout=isolate.PIPE)
    assert r.stdout == b""
    # Arguments the direct path leaves to Popen still work (bufsize here).
    r = pool.run(["echo", "via-popen"], capture_output=True, bufsize=0)
    assert r.stdout == b"via-popen\n"
    # Bad input: the same errors as isolate.run.
    with pytest.raises(ValueError, match="on_timeout"):
        pool.run(["true"], on_timeout="maybe")
    with pytest.raises(ValueError, match="timeout"):
        pool.run(["true"], timeout=-1)
    with pytest.raises(ValueError, match="args"):
        pool.run(["a\0b"])
    with pytest.raises(ValueError, match="stdin and input"):
        pool.run(["true"], input=b"", stdin=isolate.PIPE)
    with pytest.raises(ValueError, match="capture_output"):
        pool.run(["true"], capture_output=True, stdout=isolate.PIPE)
    assert pool.run(["true"]).returncode == 0


def test_the_zygote_loads_the_filter_early_only_where_that_changes_nothing(strict):
    from isolate.launch import warm

    _profile, pool = strict
    assert pool.early_seccomp  # strict's allowlist allows all the zygote does after loading it
    # A filter that refuses a call the zygote makes after loading it (umask): loaded late,
    # as on a cold launch, and the task's umask still applies.
    profile = isolate.load_profile(with_python("default", seccomp={"deny": ["umask", "@mount"]}))
    plan = isolate.plan_for(profile)
    assert not warm.zygote_may_filter_early(plan)
    with isolate.WarmPool(profile, size=1) as late:
        assert not late.early_seccomp and late.wait_ready(30)
        argv = [sys.executable, "-c", "import os\n"
                "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('Umask')][0])\n"
                "try:\n    os.umask(0)\nexcept OSError:\n    print('refused')"]
        r = late.run(argv, capture_output=True, text=True, umask=0o071)
        cold = isolate.run(argv, profile=profile, capture_output=True, text=True, umask=0o071)
    # The task's umask is set (before the filter), the program's own umask() is refused.
    assert r.returncode == cold.returncode == 0 and r.stdout == cold.stdout == "0071\nrefused\n", (r, cold)


def test_rusage_memory_peak_and_oom_of_a_warm_task_are_the_sandboxs(strict):
    profile, pool = strict
    busy = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"]
    r = pool.run(busy)
    cold = isolate.run(busy, profile=profile)
    assert r.returncode == cold.returncode == 0
    for res in (r, cold):
        assert 0.15 < res.rusage.utime + res.rusage.stime < 5 and res.rusage.maxrss_kb > 1000, res.rusage
        assert res.memory_peak is not None and res.memory_peak > 1 << 20 and not res.oom
    with isolate.WarmPool(with_python("strict", cgroup={"memory_max": "48M"}), size=1) as small:
        assert small.wait_ready(30)
        hog = [sys.executable, "-c", "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"]
        r = small.run(hog, capture_output=True)
    assert r.oom and r.outcome == "oom" and r.returncode == -9, r
    assert r.memory_peak is not None and r.memory_peak <= 48 << 20
