"""Host-wide kernel information in the sandbox's /proc: masked or read-only.

From inside default and strict (and a host view with its own pid namespace): every
masked entry this kernel has reads empty (a file: /dev/null over it; a directory: an
empty read-only tmpfs) or is absent, and the read-only entries are on read-only mounts
and refuse to be opened for writing. The host side: the same entries are real there.
"""

import os

import pytest

from isolate.plan import fs

from escape_helpers import NO_WRITE, PROFILES, SYSTEM_PYTHON, profile_for, run_attack

# runc/Docker's masked paths and more: the list must hold at least these.
RUNC_MASKED = {"acpi", "asound", "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug",
               "scsi"}
EXTRA_MASKED = {"kpageflags", "kpagecount", "kpagecgroup", "slabinfo", "vmallocinfo", "pagetypeinfo"}
RUNC_READONLY = {"bus", "fs", "irq", "sys", "sysrq-trigger"}

# A file in each read-only entry to open for writing (nothing is written: the open is
# what must fail). Missing ones are skipped inside, and the test requires most to exist.
WRITE_TARGETS = ["/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", "/proc/sysrq-trigger",
                 "/proc/irq/default_smp_affinity", "/proc/sys/vm/drop_caches"]

BODY = r"""
    ST_RDONLY = 1
    for name in ARGS["masked"]:
        path = "/proc/" + name
        if not os.path.lexists(path):
            out["masked:" + name] = "absent"
        elif os.path.isdir(path):
            out["masked:" + name] = "dir:%d:%s" % (len(os.listdir(path)), os.statvfs(path).f_flag & ST_RDONLY)
        else:
            try:
                with open(path, "rb") as f:
                    out["masked:" + name] = "file:%d" % len(f.read(65536))
            except OSError as e:
                out["masked:" + name] = ename(e.errno)
    for name in ARGS["readonly"]:
        path = "/proc/" + name
        out["ro:" + name] = ("rdonly" if os.statvfs(path).f_flag & ST_RDONLY else "WRITABLE") \
            if os.path.lexists(path) else "absent"
    for path in ARGS["targets"]:
        if os.path.lexists(path):
            attempt("open-w:" + path, lambda: os.close(os.open(path, os.O_WRONLY)))
"""


def _args():
    return {"masked": sorted(RUNC_MASKED | EXTRA_MASKED | set(fs.PROC_MASKED)),
            "readonly": sorted(RUNC_READONLY | set(fs.PROC_READONLY)), "targets": WRITE_TARGETS}


def test_the_lists_cover_runc_and_more():
    assert RUNC_MASKED | EXTRA_MASKED <= set(fs.PROC_MASKED)
    assert RUNC_READONLY <= set(fs.PROC_READONLY)


def _check(seen):
    host_present = [n for n in _args()["masked"] if os.path.lexists(f"/proc/{n}")]
    # Real targets on this machine: these do exist on the host, with content.
    assert {"kpageflags", "slabinfo", "vmallocinfo", "pagetypeinfo", "timer_list", "acpi"} <= set(host_present)
    for name in _args()["masked"]:
        v = seen["masked:" + name]
        if os.path.isdir(f"/proc/{name}"):
            assert v in ("dir:0:1", "absent"), (name, v)      # empty, read-only
        else:
            assert v in ("file:0", "absent"), (name, v)       # reads empty
    for name in _args()["readonly"]:
        assert seen["ro:" + name] in ("rdonly", "absent"), (name, seen)
        if os.path.lexists(f"/proc/{name}"):
            assert seen["ro:" + name] == "rdonly", (name, seen)
    tried = [k for k in seen if k.startswith("open-w:")]
    assert len(tried) >= 4, seen
    for k in tried:
        assert seen[k] in NO_WRITE, (k, seen)


@pytest.mark.parametrize("profile", PROFILES)
def test_proc_masks_and_readonly_entries(profile):
    _, seen = run_attack(profile, BODY, _args())
    _check(seen)


def test_proc_masks_with_the_host_view():
    # filesystem.view = "host" with a pid namespace mounts its own /proc: hardened too.
    prof = profile_for("default")
    prof["filesystem"] = {"view": "host"}
    _, seen = run_attack("default", BODY, _args(), profile_dict=prof, python=SYSTEM_PYTHON)
    _check(seen)
