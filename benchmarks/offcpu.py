"""Off-CPU time of a launching process, from a perf trace of the scheduler.

    perf record -a -g -e sched:sched_switch -e sched:sched_process_fork -o sched.data -- sleep 1
    (or --call-graph dwarf,6144 for the user stacks: libpython has its debug info)
    perf script -i sched.data -F comm,pid,tid,cpu,time,event,trace,ip,sym,dso | \\
        python -m benchmarks.offcpu PID [TID ...]

For every time a thread of process PID, or a process it (or its descendants) started,
leaves the CPU, the time until it runs again is summed by why it left: the kernel
stack (and the user stack's C functions) of a blocked switch, or "preempted" for a
runnable one. TIDs named on the command line are reported one by one (the launching
threads, the pools' threads, the holding thread); the other threads of PID together.
Used for docs/launch-path.md, "Throughput".
"""

from __future__ import annotations

import collections
import os
import re
import sys

_EVENT = re.compile(r"^\s*(\S.*?)\s+(\d+)/(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
_SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
_FORK = re.compile(r" pid=(\d+) child_comm=.* child_pid=(\d+)")
_SKIP = {"__schedule", "schedule", "schedule_timeout", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
         "preempt_schedule_common", "__cond_resched", "io_schedule", "schedule_preempt_disabled",
         "preempt_schedule_irq", "irqentry_exit"}
_PY_GLUE = ("_PyEval", "_PyObject", "_PyVectorcall", "method_vectorcall", "do_call_core", "cfunction_",
            "PyObject_Vectorcall", "_Py_CheckFunctionResult")


def events(lines):
    cur = None
    for line in lines:
        if not line.strip():
            if cur:
                yield cur
            cur = None
            continue
        m = _EVENT.match(line)
        if m and cur is None:
            cur = {"comm": m.group(1), "pid": int(m.group(2)), "t": float(m.group(5)), "ev": m.group(6),
                   "trace": m.group(7), "stack": []}
        elif cur is not None:
            parts = line.split(None, 1)
            if len(parts) == 2:
                sym = parts[1].rsplit(" (", 1)
                cur["stack"].append((sym[0], sym[1].rstrip(")\n") if len(sym) > 1 else ""))
    if cur:
        yield cur


def reason(stack, state: str, depth: int = 4) -> str:
    kernel = [s for s, d in stack if "kernel" in d and s not in _SKIP]
    if state.startswith("R"):
        return "preempted (runnable): " + (kernel[0] if kernel else "?")
    user: list = []
    for s, d in stack:
        if "kernel" in d or s == "[unknown]" or s.startswith(_PY_GLUE):
            continue
        if not user or user[-1] != s:
            user.append(s)
    return " < ".join(kernel[:3]) + " | " + " < ".join(user[:depth])


def summarize(lines, pid: int, named: set, depth: int = 4):
    """{class: {reason: [seconds, count]}}, the trace's span in seconds."""
    ours: set = set()
    out_at: dict = {}
    sums: dict = collections.defaultdict(lambda: collections.defaultdict(lambda: [0.0, 0]))
    first = last = None
    for e in events(lines):
        if e["ev"] == "sched:sched_process_fork":
            m = _FORK.search(e["trace"])
            if m and (e["pid"] == pid or e["pid"] in ours):
                ours.add(int(m.group(2)))
            continue
        if e["ev"] != "sched:sched_switch":
            continue
        m = _SWITCH.search(e["trace"])
        if not m:
            continue
        t = e["t"]
        first = t if first is None else first
        last = t
        prev, state, nxt = int(m.group(2)), m.group(3), int(m.group(5))
        out_at[prev] = (t, reason(e["stack"], state, depth), e["pid"], m.group(1))
        if nxt in out_at:
            t0, why, owner, comm = out_at.pop(nxt)
            if owner == pid:
                cls = f"thread {nxt}" if nxt in named else "other threads of the caller"
            elif owner in ours or nxt in ours:
                cls = f"child ({comm})"
            else:
                continue
            slot = sums[cls][why]
            slot[0] += t - t0
            slot[1] += 1
    return sums, (last - first) if first is not None else 0.0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    pid, named = int(argv[0]), {int(x) for x in argv[1:]}
    sums, span = summarize(sys.stdin, pid, named, int(os.environ.get("DEPTH", "4")))
    print(f"trace span {span:.3f} s")
    for cls, reasons in sorted(sums.items(), key=lambda kv: -sum(v[0] for v in kv[1].values())):
        total = sum(v[0] for v in reasons.values())
        print(f"== {cls}: off-CPU {total * 1e3:.0f} ms")
        for why, (secs, n) in sorted(reasons.items(), key=lambda kv: -kv[1][0]):
            if secs >= 0.01 * total:
                print(f"  {secs * 1e3:8.1f} ms {secs / total * 100:5.1f}%  n={n:5d}  avg {secs / n * 1e6:6.0f} us  {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
