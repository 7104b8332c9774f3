"""The argument checks that make isolate.Popen's signature subprocess's own.

preexec_fn and close_fds=False are refused before anything starts. `user=`/`group=` are the identity
INSIDE the sandbox: names are looked up in the sandbox's own /etc/passwd and /etc/group
(the files its view shows), numbers are taken as they are; either must be mapped by the
profile's identity maps.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Sequence

from ..errors import ProfileError, SandboxSetupError
from ..kernel.constants import CLONE_NEWUSER
from ..plan.mountops import OP_BIND, OP_MOUNT, OP_WRITE
from ..plan.plan import Plan
from .. import profile as profile_pkg  # its names load on first use (PEP 562): import isolate stays light
from .plans import no_nul, plan_for_cwd

# What the usual preexec_fn jobs are in a profile (preexec_fn itself cannot run: the
# launch path never runs Python in the child).
PREEXEC_FIELDS = ("rlimits.* (resource.setrlimit)", "process.cwd (os.chdir)", "identity.uid/identity.gid or "
                  "user=/group= (os.setuid/os.setgid)", "seccomp.* (a syscall filter)", "env.* or env= (os.environ)",
                  "umask= (os.umask)", "fds.pass or pass_fds= (os.dup2)", "capabilities.keep")


class IdentityError(SandboxSetupError, PermissionError):
    """user=/group=/extra_groups= ask for an identity the sandbox's id maps cannot give."""

    def __init__(self, what: str, reason: str):
        SandboxSetupError.__init__(self, "identity", errno.EPERM, reason, None)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


class UnknownName(ProfileError, KeyError):
    """A user or group name that the sandbox's /etc/passwd or /etc/group does not list
    (subprocess raises KeyError here too, from pwd/grp)."""

    def __str__(self) -> str:  # KeyError's own __str__ would print the repr
        return ProfileError.__str__(self)


def check_call_args(args, shell, executable, cwd, env, umask) -> list:
    """What subprocess checks of args/executable/cwd/env (and isolate of umask) before
    anything starts, in its order; args as a list. C strings would silently cut at a NUL."""
    if isinstance(args, (str, bytes)):
        argl = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        argl = [args]
    else:
        argl = list(args)
    if not argl:
        raise IndexError("list index out of range") if not shell else ValueError("shell=True: no command")
    for i, a in enumerate(argl):
        if not isinstance(a, (str, bytes, os.PathLike)):
            raise TypeError(f"expected str, bytes or os.PathLike object, not {type(a).__name__}")
        no_nul(a, f"args[{i}]")
    if executable is not None:
        no_nul(executable, "executable")
    if cwd is not None:
        no_nul(cwd, "cwd")
    if env is not None:
        for k, v in env.items():
            no_nul(k, f"an env name {k!r}")
            no_nul(v, f"env[{k!r}]")
    if not isinstance(umask, int) or isinstance(umask, bool):
        raise TypeError(f"umask: expected an integer, got {type(umask).__name__}")
    return argl


def check_popen_args(preexec_fn, close_fds, startupinfo, creationflags) -> None:
    """The refusals of isolate.Popen, before anything starts."""
    if preexec_fn is not None:
        raise ValueError("preexec_fn: cannot run in a sandbox (the launch path never runs Python in the child); "
                         "its usual jobs are profile fields: " + ", ".join(PREEXEC_FIELDS))
    if not close_fds:
        raise ValueError("close_fds=False: a sandbox never inherits the caller's fds (that is what it exists to "
                         "prevent); name the ones it should keep with pass_fds= (or fds.pass in the profile)")


# ---- identity: user=, group=, extra_groups= -----------------------------------------
def _view_file(plan, path: str) -> bytes | None:
    """The content of `path` as the sandbox's view shows it (None: not there)."""
    new = "/newroot"
    if not any((op.b or "").startswith(new + "/") for op in plan.mount_ops):
        host = path  # the host's own tree
    else:
        target = new + path
        host = None
        content = None
        for op in plan.mount_ops:
            b = op.b or ""
            if not (target == b or target.startswith(b.rstrip("/") + "/")):
                continue
            if op.kind == OP_BIND and (op.a or "").startswith("/oldroot"):
                host, content = op.a[len("/oldroot"):] + target[len(b):], None
            elif op.kind == OP_BIND:  # an empty directory of the staging over it: hidden
                host, content = None, None
            elif op.kind == OP_WRITE and target == b:
                host, content = None, op.d
            elif op.kind == OP_MOUNT:  # a tmpfs over it: hidden
                host, content = None, None
        if content is not None:
            return content
    if host is None:
        return None
    try:
        with open(host or "/", "rb") as f:
            return f.read()
    except OSError:
        return None


def _lookup(plan, file: str, name: str, what: str) -> int:
    data = _view_file(plan, file)
    if data is not None:
        for line in data.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name:
                try:
                    return int(fields[2])
                except ValueError:
                    break
    raise UnknownName(f"{what}={name!r}: no such name in the sandbox's {file}"
                      + ("" if data is not None else f" ({file} is not in its view)"))


def _id(plan, value, file: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what}: must be a string or an integer, got {type(value).__name__}")
    if isinstance(value, str):
        return _lookup(plan, file, value, what)
    if value < 0:
        raise ValueError(f"{what}: an id cannot be negative, got {value}")
    if value > 2**32 - 2:  # as subprocess: OverflowError for a uid/gid, ValueError in extra_groups
        cls = ValueError if what == "extra_groups" else OverflowError
        raise cls(f"{what}: an id is at most {2**32 - 2}, got {value}")
    return value


def identity_overrides(plan, user, group) -> list:
    """The overrides (identity.uid=..., identity.gid=...) that make `plan`'s program run
    as user/group inside the sandbox; [] when nothing is asked."""
    out = []
    if user is not None:
        out.append(f"identity.uid={_id(plan, user, '/etc/passwd', 'user')}")
    if group is not None:
        out.append(f"identity.gid={_id(plan, group, '/etc/group', 'group')}")
    return out


def extra_gids(plan, extra_groups) -> list | None:
    """The supplementary gids of extra_groups= (None: not given), each one the sandbox's
    user namespace maps (as subprocess, names come from the sandbox's /etc/group)."""
    if extra_groups is None:
        return None
    if isinstance(extra_groups, (str, bytes)) or not hasattr(extra_groups, "__iter__"):
        raise TypeError("extra_groups: expected a list of group names or ids")
    gids = [_id(plan, g, "/etc/group", "extra_groups") for g in extra_groups]
    if os.geteuid() != 0:
        raise IdentityError("extra_groups", "an unprivileged caller cannot set supplementary groups in a user "
                            "namespace (setgroups is denied there); it needs root")
    if plan.clone_flags & CLONE_NEWUSER:
        if plan.host_ids:
            ranges, how = [(plan.inside_gid, 1)], f"maps only gid {plan.inside_gid} (identity.gid)"
        else:
            ranges = [(int(i), int(c)) for i, _o, c in (line.split() for line in (plan.gid_map or "").splitlines())]
            how = "does not map it (identity.gid_map)"
        for g in gids:
            if not any(i <= g < i + c for i, c in ranges):
                raise IdentityError("extra_groups", f"gid {g}: the sandbox's user namespace {how}")
    return gids


def plan_with_identity(profile: Any, overrides: Sequence[str], cwd, user, group, extra_groups=None):
    """The plan of `profile` whose program runs as user/group (see identity_overrides);
    extra_groups are checked against it by extra_gids()."""
    base = plan_for_cwd(profile, overrides, cwd)
    if user is None and group is None:
        return base
    wanted = identity_overrides(base, user, group)
    if not wanted:
        return base
    if isinstance(profile, Plan):
        have = {"identity.uid": base.inside_uid, "identity.gid": base.inside_gid}
        for o in wanted:
            key, value = o.split("=")
            if have[key] != int(value):
                raise ValueError(f"{'user' if key.endswith('uid') else 'group'}=: this Plan was compiled for "
                                 f"{key} {have[key]}; pass the profile (a name, path or dict) to choose another")
        return base
    if isinstance(profile, profile_pkg.Profile):
        profile = profile.to_dict()
    try:
        return plan_for_cwd(profile, [*overrides, *wanted], cwd)
    except ProfileError as e:
        if e.key in ("identity.uid", "identity.gid"):
            what = "user" if e.key == "identity.uid" else "group"
            raise IdentityError(what, f"{e.message} (profile {base.profile_name})") from None
        raise
    except SandboxSetupError as e:
        field = getattr(e, "field", "")
        if field in ("identity.uid", "identity.gid"):
            raise IdentityError("user" if field == "identity.uid" else "group", str(e)) from None
        raise
