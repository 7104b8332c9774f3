"""The per-sample sandbox behind inspect_ai's `isolate` provider, without inspect_ai.

A `SampleSandbox` is one isolate Session built for what inspect expects of a
sandbox: a writable /etc, /home and /root of its own (copies made per sample on the
host, so `adduser` works and nothing leaks between samples), a writable /var/tmp
(where inspect injects its sandbox tools), users: root (with the capabilities a
root needs to manage users and files of the sandbox) and a default user (`agent`,
uid 1000 unless the host's /etc/passwd names another) that commands run as unless
they ask for another with `user=`. Uids 1..65535 inside map to a reserved host
range (HOST_ID_BASE + uid), inside uid 0 to the caller's root: that needs a root
caller (a user namespace with more than one id).

Everything the sandbox writes lives in one host directory per sample, removed by
`close()`; the sandbox's processes die with it.
"""

from __future__ import annotations

import base64
import errno
import itertools
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass

import isolate

HOST_ID_BASE = 2_100_000_000     # inside uid/gid N (1..65535) is host uid/gid HOST_ID_BASE + N
ID_COUNT = 65535
DIR_PREFIX = "isolate-inspect-"
DEFAULT_USER = "agent"
DEFAULT_UID = 1000
ROOT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
             "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]
# Not copied into a sample's /etc: secrets of the host, and backups of the password files.
ETC_SKIP = {"shadow-", "gshadow-", "ssh", "sudoers", "sudoers.d", "ssl/private", "passwd-", "group-"}
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_INLINE_ARGV = 64 * 1024
EXIT_ISDIR, EXIT_NOENT, EXIT_ACCES, EXIT_TOOBIG = 21, 2, 13, 27

_READ = r'''f=$1
if [ -d "$f" ]; then echo "$f: Is a directory" >&2; exit 21; fi
if [ ! -e "$f" ]; then echo "$f: No such file or directory" >&2; exit 2; fi
if [ ! -r "$f" ]; then echo "$f: Permission denied" >&2; exit 13; fi
n=$(wc -c < "$f") || exit 13
if [ "$n" -gt "$2" ]; then echo "$f: $n bytes" >&2; exit 27; fi
exec base64 -w0 < "$f"'''
_WRITE = r'''set -e
mkdir -p -- "$(dirname -- "$1")"
if [ -d "$1" ]; then echo "$1: Is a directory" >&2; exit 21; fi
exec cat > "$1"'''


class SandboxError(isolate.IsolateError):
    """The sample's sandbox cannot be made as configured (said in one line)."""


class ReadTooLarge(SandboxError):
    """read_file: the file is larger than the limit."""


class ExecTimeout(TimeoutError):
    """A command ran past its timeout (killed with its tree); `truncated_output` holds
    what it wrote before (inspect's SandboxTimeoutError has the same attribute)."""

    def __init__(self, message: str, truncated_output: str | None = None):
        super().__init__(message)
        self.truncated_output = truncated_output


class ExecOutputTooLarge(SandboxError):
    """A stream of a command wrote more than the limit: head and tail kept in `output`."""

    def __init__(self, output: str):
        super().__init__("output limit exceeded")
        self.output = output


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def _sanitize_shadow(text: str) -> str:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            parts[1] = "*"
        out.append(":".join(parts))
    return "\n".join(out) + "\n"


def _copy_etc(dst: str) -> None:
    def ignore(directory, names):
        rel = os.path.relpath(directory, "/etc")
        skip = set()
        for n in names:
            key = n if rel == "." else f"{rel}/{n}"
            p = os.path.join(directory, n)
            if key in ETC_SKIP or not (os.path.islink(p) or os.path.isfile(p) or os.path.isdir(p)):
                skip.add(n)
        return skip

    def copy(src, d):
        try:
            return shutil.copy2(src, d)
        except OSError:
            return d   # unreadable or vanished: left out

    shutil.copytree("/etc", dst, symlinks=True, ignore=ignore, copy_function=copy, ignore_dangling_symlinks=True)
    for name in ("shadow", "gshadow"):
        p = os.path.join(dst, name)
        if os.path.isfile(p):
            with open(p) as f:
                text = _sanitize_shadow(f.read())
            with open(p, "w") as f:
                f.write(text)


def _passwd(etc: str) -> dict[str, User]:
    users = {}
    with open(os.path.join(etc, "passwd")) as f:
        for line in f:
            parts = line.rstrip("\n").split(":")
            if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
                users[parts[0]] = User(parts[0], int(parts[2]), int(parts[3]), parts[5] or "/", parts[6] or "/bin/sh")
    return users


def _add_user(etc: str, name: str, uid: int | None) -> User:
    users = _passwd(etc)
    if name in users:
        return users[name]
    taken = {u.uid for u in users.values()}
    uid = uid if uid is not None and uid not in taken else next(i for i in range(DEFAULT_UID, ID_COUNT) if i not in taken)
    with open(os.path.join(etc, "group")) as f:
        gids = {int(p[2]) for p in (ln.split(":") for ln in f) if len(p) > 2 and p[2].isdigit()}
    gid = uid if uid not in gids else next(i for i in range(DEFAULT_UID, ID_COUNT) if i not in gids)
    home = f"/home/{name}"
    with open(os.path.join(etc, "passwd"), "a") as f:
        f.write(f"{name}:x:{uid}:{gid}:{name}:{home}:/bin/bash\n")
    with open(os.path.join(etc, "group"), "a") as f:
        f.write(f"{name}:x:{gid}:\n")
    for file, line in (("shadow", f"{name}:*:19000:0:99999:7:::\n"), ("gshadow", f"{name}:!::\n")):
        p = os.path.join(etc, file)
        if os.path.exists(p):
            with open(p, "a") as f:
                f.write(line)
    return User(name, uid, gid, home, "/bin/bash")


def host_id(inside: int) -> int:
    return inside if inside == 0 else HOST_ID_BASE + inside


def build_profile(base="agent", *, root_dir: str, workdir: str) -> dict:
    """The profile of a sample's sandbox: `base` (a view = "new" profile) with this
    sample's /etc, /home, /root and /var/tmp, two-level identity and root's capabilities."""
    prof = isolate.load_profile(base)
    d = prof.to_dict()
    fs = d["filesystem"]
    if fs.get("view") != "new":
        raise SandboxError(f"profile {base!r}: the inspect sandbox needs filesystem.view = \"new\" (it gives the "
                           f"sample its own /etc, /home and /root)")
    own = ("/etc", "/home", "/root", "/var/tmp")

    def under(path):
        return any(path == p or path.startswith(p + "/") for p in own)

    def target(entry):
        return entry["target"] if isinstance(entry, dict) else entry

    fs["ro"] = [e for e in fs["ro"] if not under(target(e))]
    fs["rw"] = [e for e in fs["rw"] if "{cwd}" not in str(target(e)) and not under(target(e))]
    fs["rw"] += [{"source": os.path.join(root_dir, p.strip("/").replace("/", "_")), "target": p} for p in own[:3]]
    fs["tmpfs"] = [e for e in fs["tmpfs"] if not under(e["path"] if isinstance(e, dict) else e)]
    fs["tmpfs"].append({"path": "/var/tmp", "size": "2G", "mode": 0o1777})
    fs["tmpfs"].append({"path": "/run", "size": "16M", "mode": 0o755})       # adduser's lock file
    fs["hide"] = [p for p in fs["hide"] if not under(p)]
    return {
        "extends": base,
        "filesystem": fs,
        "identity": {"uid": 0, "gid": 0, "uid_map": ["0 0 1", f"1 {HOST_ID_BASE + 1} {ID_COUNT}"],
                     "gid_map": ["0 0 1", f"1 {HOST_ID_BASE + 1} {ID_COUNT}"]},
        "capabilities": {"keep": sorted(set(d["capabilities"]["keep"]) | set(ROOT_CAPS))},
        "process": {"cwd": workdir},
        # shadow-utils (useradd, userdel) abort when the audit socket is refused with EPERM; in
        # the sandbox's own network namespace the kernel itself says the audit protocol is not
        # supported there, which they accept.
        "seccomp": {"socket_families": sorted(set(d["seccomp"].get("socket_families") or []) | {"netlink"})}
        if d["seccomp"].get("socket_families") else {},
    }


class SampleSandbox:
    """One sample's sandbox (synchronous; the inspect provider calls it from threads)."""

    def __init__(self, profile="agent", *, user: str = DEFAULT_USER, workdir: str | None = None,
                 overrides=(), max_output: int = 10 * 1024 * 1024):
        if os.geteuid() != 0:
            raise SandboxError("the isolate sandbox for inspect needs a root caller: it maps root and the "
                               "sandbox's other users (uids 1..65535) into a user namespace")
        self.root_dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
        self.session = None
        self._spills = itertools.count()
        try:
            etc = os.path.join(self.root_dir, "etc")
            _copy_etc(etc)
            self.default_user = User("root", 0, 0, "/root", "/bin/bash") if user == "root" else \
                _add_user(etc, user, DEFAULT_UID)
            home = os.path.join(self.root_dir, "home")
            os.makedirs(home, mode=0o755)
            os.makedirs(os.path.join(self.root_dir, "root"), mode=0o700)
            if self.default_user.uid != 0:
                h = os.path.join(home, os.path.basename(self.default_user.home))
                os.makedirs(h, mode=0o755, exist_ok=True)
                os.chown(h, host_id(self.default_user.uid), host_id(self.default_user.gid))
            self.workdir = workdir or self.default_user.home
            self.etc = etc
            plan_profile = build_profile(profile, root_dir=self.root_dir, workdir=self.workdir)
            self.session = isolate.Session(plan_profile, overrides=overrides, max_output=max_output)
            if workdir:
                self.exec(["mkdir", "-p", "--", workdir], user=self.default_user.name)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        shutil.rmtree(self.root_dir, ignore_errors=True)

    # ---- users --------------------------------------------------------------------------
    def user(self, name: str | None) -> User | None:
        """The user `name` (None: the default) from the sandbox's own /etc/passwd; None if
        there is no such user."""
        if name is None:
            return self.default_user
        users = _passwd(self.etc)
        if name in users:
            return users[name]
        if name.isdigit():
            return next((u for u in users.values() if u.uid == int(name)), None)
        return None

    def resolve(self, path: str) -> str:
        return path if posixpath.isabs(path) else posixpath.join(self.workdir, path)

    # ---- commands -----------------------------------------------------------------------
    def exec(self, cmd, *, input=None, cwd=None, env=None, user=None, timeout=None, max_output=None):
        """(returncode as a shell gives it, stdout, stderr) of argv `cmd` run as `user`.
        Raises ExecTimeout, ExecOutputTooLarge, PermissionError (not executable), or
        returns 126 with a message for an unknown user."""
        if not isinstance(cmd, (list, tuple)) or not cmd:
            raise ValueError(f"cmd: expected a non-empty argv list, got {cmd!r}")
        u = self.user(user)
        if u is None:
            return 126, "", f"isolate: unable to find user {user}: no matching entries in passwd file\n"
        argv = [str(a) for a in cmd]
        run_env = {"HOME": u.home, "USER": u.name, "LOGNAME": u.name, "SHELL": u.shell,
                   "PATH": ROOT_PATH if u.uid == 0 else USER_PATH}
        run_env.update(env or {})
        if u.uid == 0 and "/" not in argv[0] and "=" not in argv[0]:
            argv = ["env", "--"] + argv      # looked up in run_env's PATH (root's has the sbin directories)
        if u.uid != 0:
            argv = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--init-groups", "--inh-caps=-all",
                    "--bounding-set=-all", "--"] + argv
        if isinstance(input, str):
            input = input.encode()
        spill = None
        if sum(len(a.encode()) + 1 for a in argv) > MAX_INLINE_ARGV:
            # One session message holds argv and env; a bigger argv goes through a file that
            # bash reads back into an array (as many bytes as the kernel's ARG_MAX allows).
            spill = f"/tmp/.isolate-argv-{os.getpid()}-{next(self._spills)}"
            self.session.write_file(spill, b"\0".join(a.encode() for a in argv) + b"\0", mode=0o644)
            argv = ["bash", "-c", 'mapfile -d "" -t a < "$1" && exec "${a[@]}"', "bash", spill]
        try:
            r = self.session.exec(argv, input=input, cwd=self.resolve(cwd) if cwd else self.workdir, env=run_env,
                                  timeout=timeout, max_output=max_output)
        finally:
            if spill:
                self.session.exec(["rm", "-f", "--", spill])
        if r.timed_out:
            raise ExecTimeout(f"command timed out after {timeout} seconds: {cmd!r}", r.stdout + r.stderr)
        if r.truncated:
            raise ExecOutputTooLarge(r.stdout if r.truncated.stdout else r.stderr)
        code = r.returncode
        if code is not None and code < 0:
            code = 128 - code        # as a shell reports a signal
        if r.error and code == 126 or (code == 126 and "Permission denied" in r.stderr):
            raise PermissionError(errno.EACCES, f"cannot execute {cmd[0]}: {r.error or r.stderr.strip()}")
        return code, r.stdout, r.stderr + (f"{r.error}\n" if r.error and not r.stderr else "")

    # ---- files --------------------------------------------------------------------------
    def read_file(self, file: str, limit: int) -> bytes:
        """The bytes of `file`, read as the default user. Raises FileNotFoundError,
        PermissionError, IsADirectoryError, ReadTooLarge."""
        path = self.resolve(file)
        code, out, err = self.exec(["sh", "-c", _READ, "sh", path, str(limit)],
                                   max_output=(limit + 2) // 3 * 4 + 16)
        if code == 0:
            return base64.b64decode(out)
        if code == EXIT_TOOBIG:
            raise ReadTooLarge(f"{file}: larger than {limit} bytes")
        self._raise(code, err, file)
        raise OSError(errno.EIO, f"read_file failed: {err.strip()}", file)

    def write_file(self, file: str, data: bytes) -> None:
        """Write `file` as the default user, its parent directories created."""
        path = self.resolve(file)
        code, out, err = self.exec(["sh", "-c", _WRITE, "sh", path], input=data)
        if code != 0:
            self._raise(code, err, file)
            raise OSError(errno.EIO, f"write_file failed: {err.strip()}", file)

    @staticmethod
    def _raise(code: int, err: str, file: str) -> None:
        if code == EXIT_ISDIR or "Is a directory" in err:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", file)
        if code == EXIT_ACCES or "Permission denied" in err:
            raise PermissionError(errno.EACCES, "Permission denied", file)
        if code == EXIT_NOENT and "No such file" in err or "No such file" in err:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", file)
        if "Not a directory" in err:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", file)
        if "Read-only file system" in err:
            raise PermissionError(errno.EROFS, "Read-only file system", file)
