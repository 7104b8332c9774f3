"""Agent sessions (isolate.Session) against subprocess and sandlock, side by side in one run.

    .venv/bin/python -m benchmarks.sessions [--rounds N] [--sessions 200] [--out docs/performance.md]

Measures, interleaved round by round (medians):
- a new Session ready for its first command: cold, and handed out by a SessionPool;
- exec("true") against subprocess.run(["sh", "-c", "true"]) (and sandlock's run of the same);
- exec(["true"]) against subprocess.run(["true"]) (and sandlock);
- the host memory of an idle session (sum of the PSS of its processes);
- N sessions at once, each answering a command.

and writes the results as the section "Agent sessions" of docs/performance.md (between
the markers <!-- sessions:begin --> and <!-- sessions:end -->, replaced on each run).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import isolate

BEGIN, END = "<!-- sessions:begin -->", "<!-- sessions:end -->"


def pss_kb(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def session_pids(s) -> list:
    from isolate.agent.session import _tree

    return _tree(s.pid)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run(rounds: int, n_sessions: int) -> dict:
    res: dict = {}
    try:
        import sandlock

        sb = sandlock.Sandbox(fs_readable=["/usr", "/lib", "/lib64", "/bin", "/etc"])
        sb.run(["true"])
    except Exception as e:   # not installed, or cannot run here
        sb = None
        res["sandlock_error"] = f"{type(e).__name__}: {e}"
    # -- start: cold and from a pool ------------------------------------------------------
    cold, cold_first, pooled, run_true = [], [], [], []
    with isolate.SessionPool("agent", size=4) as pool:
        pool.acquire(wait=60).close()
        for i in range(max(10, rounds // 10)):
            # Neither start is timed while the pool refills in this process (its thread
            # would share the CPUs and the interpreter with the start being timed).
            while len(pool._ready) < pool.size:
                time.sleep(0.01)
            # "Ready": the Session is returned and a command can be sent (agentd has been
            # exec'd; its hello is read by the first call, which is in cold_first).
            t = time.perf_counter()
            s = isolate.Session("agent")
            cold.append((time.perf_counter() - t) * 1000)
            cold_first.append(cold[-1] + timed(lambda: s.exec("true")))
            s.close()
            # The same sandbox as a plain cold launch that runs /bin/true and waits for it.
            run_true.append(timed(lambda: isolate.run(["/bin/true"], profile="agent")))
            while len(pool._ready) < pool.size:
                time.sleep(0.01)
            t = time.perf_counter()
            s = pool.acquire()
            pooled.append((time.perf_counter() - t) * 1000)
            s.close()
    res["start_cold"], res["start_cold_first"], res["start_pool"] = median(cold), median(cold_first), median(pooled)
    res["run_true"] = median(run_true)
    # -- commands ---------------------------------------------------------------------------
    s = isolate.Session("agent")
    s.exec("true")
    series = {k: [] for k in ("exec_sh", "sub_sh", "sl_sh", "exec_argv", "sub_argv", "sl_argv")}
    for i in range(rounds):
        series["exec_sh"].append(timed(lambda: s.exec("true")))
        series["sub_sh"].append(timed(lambda: subprocess.run(["sh", "-c", "true"])))
        series["exec_argv"].append(timed(lambda: s.exec(["true"])))
        series["sub_argv"].append(timed(lambda: subprocess.run(["true"])))
        if sb is not None and i % 5 == 0:
            series["sl_sh"].append(timed(lambda: sb.run(["sh", "-c", "true"])))
            series["sl_argv"].append(timed(lambda: sb.run(["true"])))
    for k, v in series.items():
        res[k] = median(v)
    res["rounds"] = rounds
    # -- memory of an idle session -------------------------------------------------------------
    time.sleep(0.2)
    res["idle_pss_kb"] = pss_kb(session_pids(s))
    res["idle_procs"] = len(session_pids(s))
    s.close()
    # -- many sessions at once -------------------------------------------------------------------
    many = []
    t = time.perf_counter()
    try:
        for i in range(n_sessions):
            many.append(isolate.Session("agent"))
        start_all = time.perf_counter() - t
        t = time.perf_counter()
        answers = sum(1 for i, m in enumerate(many) if m.exec(f"echo {i}").stdout == f"{i}\n")
        res["many_answer_s"] = time.perf_counter() - t
        res["many_start_s"] = start_all
        res["many_ok"] = answers
        res["many_pss_kb"] = sum(pss_kb(session_pids(m)) for m in many)
    finally:
        for m in many:
            m.close()
    res["many"] = n_sessions
    return res


def section(res: dict) -> str:
    def ratio(a, b):
        return a / b if b else float("nan")

    def status(ok):
        return "met" if ok else "**NOT MET**"

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sl = res.get("sandlock_error")
    lines = [BEGIN, "## Agent sessions", "",
             f"`.venv/bin/python -m benchmarks.sessions` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{platform.node() and 'this machine'}: {os.cpu_count()} CPUs, load average {load} at the end "
             f"(other jobs were running). Medians of {res['rounds']} interleaved rounds; the profile is `agent`.",
             "", "| measurement | isolate | subprocess | sandlock 0.9 | ratio | target |", "|---|---|---|---|---|---|"]
    sl_sh = "n/a" if sl else f"{res['sl_sh']:.2f} ms"
    sl_argv = "n/a" if sl else f"{res['sl_argv']:.2f} ms"
    r_sh = ratio(res["exec_sh"], res["sub_sh"])
    r_argv = ratio(res["exec_argv"], res["sub_argv"])
    lines += [
        f"| new Session ready (cold) | {res['start_cold']:.2f} ms | | | "
        f"{ratio(res['start_cold'], res['run_true']):.2f}× isolate.run([\"/bin/true\"], profile=\"agent\") "
        f"({res['run_true']:.2f} ms, same rounds) | ≤ 3 ms: {status(res['start_cold'] <= 3)} |",
        f"| new Session + first exec(\"true\") (cold, shell started) | {res['start_cold_first']:.2f} ms | | | | |",
        f"| Session from a SessionPool | {res['start_pool']:.3f} ms | | | | ≤ 0.5 ms: "
        f"{status(res['start_pool'] <= 0.5)} |",
        f"| exec(\"true\") vs sh -c true | {res['exec_sh']:.2f} ms | {res['sub_sh']:.2f} ms | {sl_sh} | {r_sh:.2f}× | "
        f"≤ 1.5×: {status(r_sh <= 1.5)} |",
        f"| exec([\"true\"]) vs [\"true\"] | {res['exec_argv']:.2f} ms | {res['sub_argv']:.2f} ms | {sl_argv} | "
        f"{r_argv:.2f}× | ≤ 1.2×: {status(r_argv <= 1.2)} |",
        f"| idle session, host memory (PSS of its {res['idle_procs']} processes) | {res['idle_pss_kb'] / 1024:.2f} MB "
        f"| | | | ≤ 4 MB: {status(res['idle_pss_kb'] <= 4096)} |",
        f"| {res['many']} sessions at once: started / all answered | {res['many_start_s']:.1f} s / "
        f"{res['many_answer_s']:.2f} s, {res['many_ok']} of {res['many']} answered, "
        f"{res['many_pss_kb'] / 1024:.0f} MB PSS in all | | | | all answering: "
        f"{status(res['many_ok'] == res['many'])} |",
        "",
        "A session is ready when `Session()` has returned: its sandbox is set up and isolate-agentd has been "
        "exec'd in it (isolate-init reports that exec), so a command can be sent; agentd's hello is read by the "
        "first call (a failed start is that call's error). "
        "`exec(\"true\")` runs the shell builtin in the session's persistent bash (no fork); `exec([\"true\"])` "
        "forks and execs /usr/bin/true through isolate-agentd inside the sandbox (its seccomp filter included). "
        "sandlock starts a new sandbox per command (its `Sandbox.run`), so its numbers include the sandbox's set-up; "
        "isolate's do not, the session exists already." + (f" sandlock could not be measured: {sl}." if sl else ""),
        END]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.sessions")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                                                  "performance.md"))
    a = ap.parse_args(argv)
    res = run(a.rounds, a.sessions)
    text = section(res)
    print(text)
    try:
        with open(a.out) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Performance\n\n"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(a.out, "w") as f:
        f.write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
