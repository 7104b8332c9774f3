"""The isolate benchmark suite: `.venv/bin/python -m benchmarks.run [--quick] [--out DIR]`.

Modules: stats (interleaved runner, percentiles), programs (what is launched and how,
warm pools included), latency, parent_size, mounts, throughput, phases, netpool (one
measurement each), targets and report (docs/performance.md and the plots), run (the
command line).
"""
