"""The overlay workspace: the session sees the host directory, its writes stay apart.

Session(profile, workspace=DIR, overlay=True) puts an overlayfs over DIR at the same
path inside the sandbox: lower = the host's DIR (never written), upper = a directory
on a private tmpfs. Both mounts are made with the new mount API and never attached
to the host's tree: the tmpfs is held only by an fd of the caller and the overlay
only by the sandbox's mount namespace (attached there from a thread of the caller
that joins that namespace), so nothing is left in the host's mount table, even when
the caller dies. For a root caller the overlay is idmapped like isolate's binds (the
caller's files appear owned by the sandbox's root, what it creates is root's).

changes() reads the upper layer: a file or symlink there is "A" (added) or "M"
(modified, it exists in DIR), a whiteout is "D" (deleted), a directory new in the
upper layer is "A". apply() copies the changes into DIR and starts over with an empty
upper layer; discard() only starts over. Starting over replaces the mount in the
sandbox: processes whose working directory is in the workspace keep the old view
(the session's shell is restarted for that reason, with its state).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import shutil
import stat
import threading

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_mount_setattr = 429, 430, 431, 432, 442
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_EMPTY_PATH = 0x1000
AT_FDCWD = -100
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_FS, CLONE_NEWNS = 0x200, 0x20000
MNT_DETACH = 2


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def _check(ret, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"overlay workspace: {what}: {os.strerror(e)}")
    return ret


def _fsmount(fstype: str, options: dict, fds: dict | None = None, flags=()) -> int:
    fs = _check(_libc.syscall(SYS_fsopen, fstype.encode(), FSOPEN_CLOEXEC), f"fsopen {fstype}")
    try:
        for k in flags:
            _check(_libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, k.encode(), None, 0), f"{fstype} flag {k}")
        for k, v in options.items():
            _check(_libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, k.encode(), os.fsencode(v), 0),
                   f"{fstype} option {k}={v}")
        for k, fd in (fds or {}).items():
            _check(_libc.syscall(SYS_fsconfig, fs, FSCONFIG_SET_FD, k.encode(), None, fd), f"{fstype} layer {k}")
        _check(_libc.syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, None, None, 0), f"creating the {fstype}")
        return _check(_libc.syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0), f"fsmount {fstype}")
    finally:
        os.close(fs)


@dataclasses.dataclass(frozen=True)
class Change:
    kind: str      # "A" added, "M" modified, "D" deleted
    path: str      # absolute path in the workspace


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e
    t = threading.Thread(target=run, name="isolate-overlay")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box.get("v")


class Overlay:
    def __init__(self, workspace: str):
        self.workspace = workspace
        self.tmpfs = -1
        self.upper = -1
        self.lower = -1
        self.session = None

    def launch_args(self, plan) -> dict:
        return {}

    # ---- mounting ----------------------------------------------------------------------
    def _mount(self, replace: bool) -> None:
        """In a forked helper that joins the sandbox's user and mount namespaces and becomes
        its root: a tmpfs (upper and work) and an overlay on the workspace, mounted at the
        workspace's path. The tmpfs comes back to us as an fd (for changes())."""
        import socket

        s = self.session
        userns = os.open(f"/proc/{s.agent_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        mntns = os.open(f"/proc/{s.agent_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        target = self.workspace.encode()
        # The workspace as the sandbox sees it (its bind, idmapped for a root caller),
        # opened once, before the first overlay covers it.
        if self.lower < 0:
            self.lower = os.open(f"/proc/{s.agent_pid}/root{self.workspace}",
                                 os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        lower = self.lower
        pid = os.fork()
        if pid == 0:   # the helper: raw calls only, then _exit
            code = 1
            try:
                _check(_libc.setns(userns, 0x10000000), "joining the sandbox's user namespace")
                _check(_libc.setns(mntns, CLONE_NEWNS), "joining the sandbox's mount namespace")
                _check(_libc.syscall(106, 0), "setgid")   # setgid(0) in the sandbox
                _check(_libc.syscall(105, 0), "setuid")   # setuid(0)
                tm = _fsmount("tmpfs", {"mode": "0755"})
                os.mkdir("upper", 0o755, dir_fd=tm)
                os.mkdir("work", 0o755, dir_fd=tm)
                up = os.open("upper", os.O_RDONLY | os.O_DIRECTORY, dir_fd=tm)
                wk = os.open("work", os.O_RDONLY | os.O_DIRECTORY, dir_fd=tm)
                # Layers by fd (Linux 6.13+): no path of ours resolves in the sandbox's /proc.
                # userxattr: in a user namespace, overlay's own xattrs are user.overlay.*.
                ov = _fsmount("overlay", {}, fds={"lowerdir+": lower, "upperdir": up, "workdir": wk},
                              flags=("userxattr",))
                if replace:
                    _libc.umount2(target, MNT_DETACH)
                _check(_libc.syscall(SYS_move_mount, ov, b"", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH),
                       f"mounting it at {self.workspace}")
                socket.send_fds(theirs, [b"ok"], [tm])
                code = 0
            except BaseException as e:
                try:
                    theirs.send(str(e).encode()[:4000])
                except BaseException:
                    pass
            finally:
                os._exit(code)
        theirs.close()
        os.close(userns)
        os.close(mntns)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(mine, 4096, 1)
        finally:
            mine.close()
            os.waitpid(pid, 0)
        if msg != b"ok" or not fds:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EIO, msg.decode("utf-8", "replace") or "overlay workspace: the helper failed")
        old = self.tmpfs, self.upper
        self.tmpfs = fds[0]
        self.upper = os.open("upper", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.tmpfs)
        for fd in old:
            if fd >= 0:
                os.close(fd)

    def attach(self, session) -> None:
        self.session = session
        self._mount(replace=False)

    def session_ended(self) -> None:
        for fd in (self.upper, self.tmpfs, self.lower):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.upper = self.tmpfs = self.lower = -1

    # ---- changes -------------------------------------------------------------------------
    def changes(self) -> list:
        out: list = []
        self._walk(self.upper, "", out)
        return sorted(out, key=lambda c: c.path)

    def _walk(self, dfd: int, rel: str, out: list) -> None:
        for name in sorted(os.listdir(dfd)):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            relpath = f"{rel}/{name}"
            host = self.workspace + relpath
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(Change("D", host))        # a whiteout
                continue
            exists = os.path.lexists(host)
            if stat.S_ISDIR(st.st_mode):
                opaque = False
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                    try:
                        opaque = os.getxattr(sub, "user.overlay.opaque") in (b"y", b"x")
                    finally:
                        os.close(sub)
                except OSError:
                    opaque = False
                if not exists or not os.path.isdir(host) or opaque:
                    if exists:
                        out.append(Change("D", host))
                    out.append(Change("A", host))
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                try:
                    self._walk(sub, relpath, out)
                finally:
                    os.close(sub)
                continue
            out.append(Change("M" if exists else "A", host))

    def apply(self) -> list:
        """Copy the upper layer's changes into the workspace on the host, then start over."""
        changes = self.changes()
        for c in changes:
            rel = os.path.relpath(c.path, self.workspace)
            if c.kind == "D":
                if os.path.isdir(c.path) and not os.path.islink(c.path):
                    shutil.rmtree(c.path)
                elif os.path.lexists(c.path):
                    os.unlink(c.path)
                continue
            st = os.stat(rel, dir_fd=self.upper, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if os.path.lexists(c.path) and not os.path.isdir(c.path):
                    os.unlink(c.path)
                os.makedirs(c.path, exist_ok=True)
                os.chmod(c.path, stat.S_IMODE(st.st_mode))
            elif stat.S_ISLNK(st.st_mode):
                if os.path.lexists(c.path):
                    os.unlink(c.path)
                os.symlink(os.readlink(rel, dir_fd=self.upper), c.path)
            elif stat.S_ISREG(st.st_mode):
                src = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.upper)
                try:
                    if os.path.islink(c.path) or os.path.isdir(c.path):
                        shutil.rmtree(c.path) if os.path.isdir(c.path) else os.unlink(c.path)
                    tmp = c.path + ".isolate-apply"
                    dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  stat.S_IMODE(st.st_mode))
                    try:
                        while True:
                            chunk = os.read(src, 1 << 20)
                            if not chunk:
                                break
                            os.write(dst, chunk)
                        os.fchmod(dst, stat.S_IMODE(st.st_mode))
                    finally:
                        os.close(dst)
                    os.replace(tmp, c.path)
                finally:
                    os.close(src)
        self.discard()
        return changes

    def discard(self) -> None:
        """Drop the upper layer: a fresh overlay replaces the old one in the sandbox."""
        self._mount(replace=True)
