"""Kernel constants the layers above share (<linux/sched.h>, <sys/resource.h>, <sys/mount.h>,
<linux/capability.h>, <linux/seccomp.h>): defined here once."""

from __future__ import annotations

from typing import Iterable

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# namespace name as in a profile's [namespaces] table -> clone flag
NAMESPACE_FLAGS = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "cgroup": CLONE_NEWCGROUP,
}
# ... plus time, which profiles do not ask for but doctor reports
NAMESPACES = {**NAMESPACE_FLAGS, "time": CLONE_NEWTIME}
FLAG_NAMES = {CLONE_NEWUSER: "CLONE_NEWUSER", CLONE_NEWPID: "CLONE_NEWPID", CLONE_NEWNET: "CLONE_NEWNET",
              CLONE_NEWNS: "CLONE_NEWNS", CLONE_NEWIPC: "CLONE_NEWIPC", CLONE_NEWUTS: "CLONE_NEWUTS",
              CLONE_NEWCGROUP: "CLONE_NEWCGROUP", CLONE_NEWTIME: "CLONE_NEWTIME"}

# <sys/resource.h>: a profile's [rlimits] key -> RLIMIT_* number
RLIMITS = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "nproc": 6, "nofile": 7, "memlock": 8, "as": 9,
}
RLIMIT_NAMES = {v: k for k, v in RLIMITS.items()}
RLIMIT_NOFILE = RLIMITS["nofile"]
RLIM_INFINITY = 2**64 - 1

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# <linux/capability.h>: name -> bit
CAPABILITIES: dict[str, int] = {
    f"CAP_{n}": i
    for i, n in enumerate(
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK "
        "IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN "
        "SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE "
        "AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND "
        "AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE".split()
    )
}

# <linux/seccomp.h>: action name as in /proc/sys/kernel/seccomp/actions_avail -> SECCOMP_RET_*
SECCOMP_ACTIONS = {
    "kill_process": 0x80000000,
    "kill_thread": 0x00000000,
    "trap": 0x00030000,
    "errno": 0x00050000,
    "trace": 0x7FF00000,
    "log": 0x7FFC0000,
    "allow": 0x7FFF0000,
    "user_notif": 0x7FC00000,
}

# a profile's [cgroup] limit -> the controller that enforces it
CONTROLLER_OF = {"memory_max": "memory", "memory_swap_max": "memory", "pids_max": "pids"}


def controllers(limits: Iterable[str]) -> tuple[str, ...]:
    """The controllers the limit keys need, e.g. ("memory", "pids")."""
    return tuple(sorted({CONTROLLER_OF[k] for k in limits}))


def last_cap() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40
