"""Facts about this kernel, and its constants: the bottom layer.

constants   clone flags, rlimits, mount flags, capabilities, seccomp return values
features    what this kernel and this user allow, probed once (doctor's table)
mounts      /proc/self/mountinfo and this process's cgroups
cgroups     where this process can make cgroups with given controllers
syscalls    syscall names and numbers per architecture, seccomp actions, socket
            families, ioctl requests (the seccomp vocabulary profiles are written in)
syscall_groups  systemd-style @groups of syscalls

Nothing here imports anything of isolate above it (errors.py only).
"""
