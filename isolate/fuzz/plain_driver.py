"""The plain engine's executor, run by /usr/bin/python3 -I inside the job's sandbox
(stdlib only, never imports isolate): a target that takes one input file (@@) is run
on every seed, then on byte-level mutations of the corpus, in batches, until --time;
an input that crashes it (a signal, or a sanitizer's exit) or hangs (--timeout) is
saved as artifacts/crash-SHA1 or timeout-SHA1. One line of stats per batch on stdout.
"""

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

BATCH = 100


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds")
    p.add_argument("--corpus")
    p.add_argument("--artifacts")
    p.add_argument("--time", type=float)
    p.add_argument("--timeout", type=float)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    seeds = []
    for d in (a.seeds, a.corpus):
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    seeds.append(f.read())
    if not seeds:
        seeds = [b"a"]
    rng = random.Random(0)
    start = time.monotonic()
    execs = crashes = 0
    todo = list(seeds)
    cur = os.path.join("/tmp", "input")
    while time.monotonic() - start < a.time:
        batch = todo[:BATCH] if todo else [mutate(rng, rng.choice(seeds)) for _ in range(BATCH)]
        todo = todo[BATCH:]
        for data in batch:
            with open(cur, "wb") as f:
                f.write(data)
            argv = [cur if x == "@@" else x for x in cmd]
            kind = None
            try:
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, timeout=a.timeout)
                if r.returncode < 0 and -r.returncode not in (signal.SIGTERM, signal.SIGINT):
                    kind = "crash"
                elif r.returncode != 0 and b"Sanitizer" in r.stderr:
                    kind = "crash"
            except subprocess.TimeoutExpired:
                kind = "timeout"
            execs += 1
            if kind:
                crashes += 1
                name = os.path.join(a.artifacts, f"{kind}-{hashlib.sha1(data).hexdigest()}")
                with open(name, "wb") as f:
                    f.write(data)
            if time.monotonic() - start >= a.time:
                break
        el = max(time.monotonic() - start, 1e-6)
        print(f"#plain execs: {execs} exec/s: {execs / el:.1f} corpus: {len(seeds)} crashes: {crashes}", flush=True)
    return 0


def mutate(rng, data: bytes) -> bytes:
    b = bytearray(data or b"a")
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 2)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] = rng.randrange(256)
        elif op == 1:
            b.insert(i, rng.randrange(256))
        elif len(b) > 1:
            del b[i]
    return bytes(b)


if __name__ == "__main__":
    sys.exit(main())
