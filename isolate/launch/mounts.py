"""A plan's filesystem view at launch time, on this host: the template mount namespace
(joined around the clone by a short-lived thread of the launch path, _launch.c), and the detached trees of
a host-id sandbox's binds (idmapped where the filesystem allows it).

The view itself (which mounts, in which order) is compiled by isolate.plan.fs.
"""

from __future__ import annotations

import os
import socket

from ..kernel.constants import CLONE_NEWNS, CLONE_NEWPID
from . import _launch, pid1


def idmap_support(binds, userns_fd: int) -> tuple:
    """((op index, source, why not or ""), ...): whether each bind's filesystem can be idmapped here."""
    out = []
    for i, src in binds:
        why = ""
        try:
            os.close(_launch.detached_tree(os.fsencode(src), userns_fd))
        except FileNotFoundError:
            pass  # an optional source not there now: tried again at launch
        except OSError as e:
            why = e.strerror or str(e)
        out.append((i, src, why))
    return tuple(out)


def detached_trees(plan, userns_fd: int) -> list:
    """Per mount op, the fd of its tree for this launch (idmapped where supported), or -1."""
    fds = [-1] * len(plan.mount_ops)
    try:
        for i, src, why in plan.idmap_binds:
            path = os.fsencode(src)
            try:
                fds[i] = _launch.detached_tree(path, -1 if why else userns_fd)
            except FileNotFoundError:
                continue  # the child reports it (or skips an optional one) as before
            except OSError:
                if why:
                    raise
                fds[i] = _launch.detached_tree(path, -1)  # refused now: plain, files show as nobody
    except BaseException:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        raise
    return fds


# ---- a template mount namespace: see isolate.plan.fs.template_ops

def make_template(template_ops, pidns: bool = False) -> int:
    """A template mount namespace built by `template_ops` (isolate.plan.fs.template_ops of a
    view), as an fd (-1 where none can be had).

    Made by a short-lived process that builds it (through the launch path itself) and
    then waits, so that its namespace can be opened; the fd keeps it alive after. pidns:
    that process is pid 1 of a pid namespace of its own (a view template's placeholder
    /proc is of that namespace, empty once the process is gone)."""
    if os.geteuid() != 0:
        return -1
    capsule = _launch.make_plan(clone_flags=CLONE_NEWNS | (CLONE_NEWPID if pidns else 0), drop_caps=False,
                                no_new_privs=False, use_init=True, ops=[op.as_tuple() for op in template_ops])
    init_fd, _self_pidfd = pid1.process_fds()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    init_argv = [b"isolate-init", b"3", b"-1", b"-1", b"%d" % pid1.FLAG_WARM, b"3", b"-1", b"0"]
    try:
        pid, pidfd, status_fd, _t, _c = _launch.spawn(capsule, [], [], [], b"/", [theirs.fileno(), devnull, devnull],
                                                     [0, 1, 2], init_fd, init_argv, 3, -1, -1)
    except _launch.ChildError:
        return -1  # the cold launch then copies the caller's namespace, as without a template
    finally:
        theirs.close()
        os.close(devnull)
    try:
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        mine.close()  # no task will come: it exits
        os.waitpid(pid, 0)
        os.close(pidfd)
        os.close(status_fd)
