"""A session's files, reached from the host without starting a program.

Every path is resolved by openat2(RESOLVE_IN_ROOT) against /proc/PID/root of the
session's process: the kernel resolves it as if the sandbox's root were "/", so "..",
absolute symlinks and symlinks pointing upwards all stay inside the sandbox's view,
and a magic link (/proc/self/fd/..., /proc/PID/root) is refused (RESOLVE_NO_MAGICLINKS).
The mount flags of the view apply as they do inside (a read-only bind stays read-only).
Files and directories created are given to the sandbox's own uid and gid.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import stat as stat_mod

from ..errors import IsolateError

SYS_openat2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
DEFAULT_READ_MAX = 100 << 20   # read_file's cap (inspect_ai uses 100 MiB too)


class SessionPathError(IsolateError, ValueError):
    """A path the session's file API cannot use (not a string, embedded NUL, outside the session...)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_setfsuid, SYS_setfsgid = 122, 123


class as_user:
    """File system ids of this thread set to (uid, gid) for the block: files are created
    as the sandbox's user (a tmpfs of the sandbox's user namespace refuses host root,
    EOVERFLOW) and permissions are checked as for it (the fs capabilities go with a
    non-zero fsuid). Per thread: other threads keep their ids."""

    def __init__(self, uid: int, gid: int):
        self.uid, self.gid = uid, gid
        self.active = (uid, gid) != (os.geteuid(), os.getegid())

    def __enter__(self):
        if self.active:
            self.old_gid = _libc.syscall(SYS_setfsgid, self.gid)
            self.old_uid = _libc.syscall(SYS_setfsuid, self.uid)
            if _libc.syscall(SYS_setfsuid, -1) != self.uid:
                self.__exit__()
                raise PermissionError(errno.EPERM, "cannot act as the session's user on its files")
        return self

    def __exit__(self, *exc):
        if self.active:
            _libc.syscall(SYS_setfsuid, self.old_uid)
            _libc.syscall(SYS_setfsgid, self.old_gid)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
            what: str = "") -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(SYS_openat2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what or 'open'}: {os.strerror(e)} in the session", path)
    return fd


@dataclasses.dataclass(frozen=True)
class DirEntry:
    name: str
    type: str        # "file", "dir", "symlink", "other"
    size: int
    mode: int


def check_path(path, what: str) -> str:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise SessionPathError(f"{what}: expected a path (str), got {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise SessionPathError(f"{what}: empty path")
    if "\0" in path:
        raise SessionPathError(f"{what}: embedded null byte in {path!r}")
    return path


class Files:
    """The file API of one session: `root_fd` is an O_PATH fd of the sandbox's root."""

    def __init__(self, root_fd: int, uid: int, gid: int, cwd):
        self.root_fd = root_fd
        self.uid, self.gid = uid, gid
        self._cwd = cwd            # callable: the session's current directory inside

    def _abs(self, path: str) -> str:
        if not path.startswith("/"):
            path = os.path.join(self._cwd() or "/", path)
        depth = 0
        for part in path.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise SessionPathError(f"{path!r} is outside the session: '..' climbs above its root")
            elif part and part != ".":
                depth += 1
        return path

    def _own(self, fd: int) -> None:
        if (self.uid, self.gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, self.uid, self.gid)
            except OSError:
                pass

    def _mkparents(self, path: str) -> None:
        parent = os.path.dirname(path.rstrip("/")) or "/"
        try:
            os.close(openat2(self.root_fd, parent, os.O_PATH | os.O_DIRECTORY))
            return
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        parts = [p for p in parent.split("/") if p]
        cur = "/"
        for p in parts:
            nxt = os.path.join(cur, p)
            try:
                os.close(openat2(self.root_fd, nxt, os.O_PATH | os.O_DIRECTORY, what="write_file"))
            except FileNotFoundError:
                dfd = openat2(self.root_fd, cur, os.O_PATH | os.O_DIRECTORY, what="write_file")
                try:
                    try:
                        os.mkdir(p, 0o755, dir_fd=dfd)
                    except FileExistsError:
                        pass
                finally:
                    os.close(dfd)
            cur = nxt

    def write_file(self, path, data, mode: int = 0o644) -> int:
        with as_user(self.uid, self.gid):
            return self._write_file(path, data, mode)

    def read_file(self, path, text: bool = False, max_size: int | None = DEFAULT_READ_MAX):
        with as_user(self.uid, self.gid):
            return self._read_file(path, text, max_size)

    def list_dir(self, path=".") -> list:
        with as_user(self.uid, self.gid):
            return self._list_dir(path)

    def _write_file(self, path, data, mode: int = 0o644) -> int:
        path = self._abs(check_path(path, "write_file"))
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_file: data must be bytes or str, got {type(data).__name__}")
        self._mkparents(path)
        fd = openat2(self.root_fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode, what="write_file")
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
        return len(data)

    def _read_file(self, path, text, max_size):
        path = self._abs(check_path(path, "read_file"))
        fd = openat2(self.root_fd, path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK, what="read_file")
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "read_file: a directory in the session (use list_dir)", path)
            if not stat_mod.S_ISREG(st.st_mode):
                raise SessionPathError(f"read_file: {path} is not a regular file in the session")
            if max_size is not None and st.st_size > max_size:
                raise SessionPathError(f"read_file: {path} has {st.st_size} bytes, more than max_size={max_size}")
            chunks, total = [], 0
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if max_size is not None and total > max_size:
                    raise SessionPathError(f"read_file: {path} grew beyond max_size={max_size} bytes")
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        return data.decode("utf-8", "replace") if text else data

    def _list_dir(self, path) -> list:
        path = self._abs(check_path(path, "list_dir"))
        fd = openat2(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY, what="list_dir")
        out = []
        try:
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                kind = ("dir" if stat_mod.S_ISDIR(st.st_mode) else "file" if stat_mod.S_ISREG(st.st_mode)
                        else "symlink" if stat_mod.S_ISLNK(st.st_mode) else "other")
                out.append(DirEntry(name, kind, st.st_size, stat_mod.S_IMODE(st.st_mode)))
        finally:
            os.close(fd)
        return out
