"""The launch: starting, waiting for and killing sandboxes (see docs/architecture.md).

_launch.c the clone-based launch path; _init.c isolate-init (pid 1); process.py run/Popen/Result;
warm.py WarmPool; plans.py compiled plans made runnable and cached; pid1.py, mounts.py, hostids.py,
cgroup.py, net.py, terminal.py what a launch needs on this host.
"""
