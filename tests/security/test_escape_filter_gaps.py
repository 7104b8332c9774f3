"""Filter gaps closed in default (and so strict): the rest of the mount API, quotactl_fd,
fanotify, the terminal ioctls that change line discipline, console or controlling
terminal, and setuid/setgid files (seccomp.restrict_suid_sgid).

Each denial is shown three ways, from inside: the shipped profile answers the deny
errno (EPERM); the same profile with another deny_action answers that errno instead,
so it is the filter that refused, not the kernel; and where an unprivileged program
could otherwise do it, the same call succeeds in a profile without that rule (the
positive control). Every attack runs only after the sandbox check of PRELUDE.
"""

import os
import stat
import tty

import pytest

from escape_helpers import PROFILES, profile_for, run_attack

# An errno nothing else in these calls answers: seeing it proves the filter's deny.
MARK = "EBADSLT"


def _variant(profile, *, rw=(), **seccomp):
    prof = profile_for(profile, rw=rw)
    prof["seccomp"] = seccomp
    return prof


# ---- the mount API, quotactl_fd, fanotify -----------------------------------------------------------
SYSCALLS = r"""
    fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    AT_FDCWD = -100
    sc("open_tree", 428, AT_FDCWD, "/usr", 0)                    # a plain O_PATH-like open
    sc("open_tree:clone", 428, AT_FDCWD, "/usr", 1 | 0x8000)     # OPEN_TREE_CLONE | AT_RECURSIVE
    sc("move_mount", 429, -1, "", AT_FDCWD, "/tmp", 4)           # MOVE_MOUNT_F_EMPTY_PATH
    sc("fsopen", 430, "tmpfs", 0)
    sc("fspick", 433, AT_FDCWD, "/tmp", 0)
    sc("fsconfig", 431, -1, 0, None, None, 0)
    sc("fsmount", 432, -1, 0, 0)
    attr = (ctypes.c_uint64 * 4)(1, 0, 0, 0)                     # attr_set = MOUNT_ATTR_RDONLY
    sc("mount_setattr", 442, AT_FDCWD, "/tmp", 0, attr, 32)
    sc("open_tree_attr", 467, AT_FDCWD, "/usr", 1, attr, 32)    # the newest one this kernel has (6.15)
    fmt = ctypes.c_uint32(0)
    sc("quotactl_fd", 443, fd, (0x800004 << 8) | 0, 0, ctypes.byref(fmt))  # QCMD(Q_GETFMT, USRQUOTA)
    sc("fanotify_init", 300, 0x200, 0)                           # FAN_REPORT_FID: unprivileged-capable
    sc("fanotify_mark", 301, -1, 1, 0x1, AT_FDCWD, "/tmp")
"""
NEW_DENIED = ("open_tree", "open_tree:clone", "move_mount", "fsopen", "fspick", "fsconfig", "fsmount",
              "mount_setattr", "open_tree_attr", "quotactl_fd", "fanotify_init", "fanotify_mark")


@pytest.mark.parametrize("profile", PROFILES)
def test_mount_api_quotactl_fd_fanotify_are_denied(profile):
    _, seen = run_attack(profile, SYSCALLS)
    for key in NEW_DENIED:
        assert seen[key] == "EPERM", (key, seen)   # the deny list, in strict too (deny beats allow)
    # Another deny_action, and every one of them answers it: the filter refused.
    _, marked = run_attack(profile, SYSCALLS, profile_dict=_variant(profile, deny_action=f"errno:{MARK}"))
    for key in NEW_DENIED:
        assert marked[key] == MARK, (key, marked)


def test_open_tree_and_fanotify_would_work_without_the_filter():
    # default's deny list without the new entries: an unprivileged program gets an fd.
    from isolate import load_profile

    deny = [d for d in load_profile("default").to_dict()["seccomp"]["deny"]
            if d not in ("open_tree", "fanotify_init", "fanotify_mark", "quotactl_fd")]
    _, seen = run_attack("default", SYSCALLS, profile_dict=_variant("default", deny=deny))
    assert seen["open_tree"].startswith("OK:"), seen        # the kernel allows the plain form
    assert seen["fanotify_init"].startswith("OK:"), seen    # unprivileged fanotify (FAN_REPORT_FID)
    assert seen["open_tree:clone"] == "EPERM", seen         # needs CAP_SYS_ADMIN: the kernel's own no


def test_listmount_statmount_stay_allowed():
    # Read-only views of the program's own mount namespace (what /proc/self/mountinfo
    # shows; other namespaces need CAP_SYS_ADMIN over them); kept allowed on purpose:
    # the kernel answers, not the filter, even with all of @mount denied.
    _, seen = run_attack("default", r"""
        class Req(ctypes.Structure):   # struct mnt_id_req, version 0
            _fields_ = [("size", ctypes.c_uint32), ("spare", ctypes.c_uint32),
                        ("mnt_id", ctypes.c_uint64), ("param", ctypes.c_uint64)]
        req = Req(24, 0, 0xFFFFFFFFFFFFFFFF, 0)                # LSMT_ROOT: the namespace's root
        buf = (ctypes.c_uint64 * 64)()
        sc("listmount", 458, ctypes.byref(req), buf, 64, 0)
    """, profile_dict=_variant("default", deny=["@mount"], deny_action=f"errno:{MARK}"))
    assert seen["listmount"].startswith("OK:"), seen   # the ids of its own mounts


# ---- terminal ioctls ----------------------------------------------------------------------------
TTY = r"""
    import fcntl
    T = ARGS["fd"]
    REQ = {"TIOCSCTTY": 0x540E, "TIOCNOTTY": 0x5422, "TIOCSETD": 0x5423, "TIOCCONS": 0x541D,
           "TIOCVHANGUP": 0x5437, "TIOCSTI": 0x5412, "TIOCLINUX": 0x541C, "TIOCSSERIAL": 0x541F}
    out["isatty"] = os.isatty(T)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        # A new session of its own, so that the kernel would let it take T as its
        # controlling terminal: only the filter stands in the way.
        os.setsid()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)   # TIOCNOTTY hangs up its own group
        res = {}
        def io(name, req, arg):
            rr, e = raw(16, T, req, arg)
            res[name] = "OK" if rr == 0 else ename(e)
        io("TIOCSCTTY", REQ["TIOCSCTTY"], 0)
        io("TIOCSCTTY:high-bits", REQ["TIOCSCTTY"] | 0x100000000, 0)
        try:
            os.close(os.open("/dev/tty", os.O_RDWR))
            res["/dev/tty"] = "OK"
        except OSError as ex:
            res["/dev/tty"] = ename(ex.errno)
        c = ctypes.c_char(b"x")
        io("TIOCSTI", REQ["TIOCSTI"], ctypes.byref(c))
        io("TIOCSETD", REQ["TIOCSETD"], ctypes.byref(ctypes.c_int(0)))          # N_TTY: the one it has
        io("TIOCLINUX", REQ["TIOCLINUX"], ctypes.byref(ctypes.c_char(b"\x02")))
        io("TIOCSSERIAL", REQ["TIOCSSERIAL"], ctypes.byref((ctypes.c_char * 128)()))
        io("TIOCCONS", REQ["TIOCCONS"], 0)
        io("TIOCVHANGUP", REQ["TIOCVHANGUP"], 0)
        io("TIOCNOTTY", REQ["TIOCNOTTY"], 0)
        res["sid_is_self"] = os.getsid(0) == os.getpid()
        os.write(w, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    out.update(json.loads(os.read(r, 4000)))
"""
IOCTLS = ("TIOCSCTTY", "TIOCSCTTY:high-bits", "TIOCSTI", "TIOCSETD", "TIOCLINUX", "TIOCSSERIAL", "TIOCCONS",
          "TIOCVHANGUP", "TIOCNOTTY")


def _tty_attack(profile, profile_dict=None):
    master, slave = os.openpty()
    tty.setraw(slave)   # a pushed byte is readable at once
    try:
        _, seen = run_attack(profile, TTY, {"fd": slave}, profile_dict=profile_dict, pass_fds=[slave])
        # Host side: whatever was pushed with TIOCSTI is readable on the slave.
        os.set_blocking(slave, False)
        try:
            seen["host:pushed"] = os.read(slave, 100).decode()
        except BlockingIOError:
            seen["host:pushed"] = ""
        return seen
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("profile", PROFILES)
def test_terminal_ioctls_are_denied(profile):
    seen = _tty_attack(profile)
    assert seen["isatty"] and seen["sid_is_self"], seen
    for key in IOCTLS:
        assert seen[key] == "EPERM", (key, seen)
    # setsid + TIOCSCTTY on the terminal passed in failed: the session has no terminal.
    assert seen["/dev/tty"] == "ENXIO", seen
    assert seen["host:pushed"] == "", seen
    marked = _tty_attack(profile, _variant(profile, deny_action=f"errno:{MARK}"))
    for key in IOCTLS:
        assert marked[key] == MARK, (key, marked)   # the filter, not the kernel, refused each


def test_terminal_ioctls_work_without_the_ioctl_rules():
    # Positive control: default without deny_ioctls. The same child takes the passed-in
    # terminal as its controlling terminal, pushes a byte into it, sets its line
    # discipline and gives it up again; the ioctls that need CAP_SYS_ADMIN (TIOCCONS,
    # TIOCVHANGUP) or a console/serial device get the kernel's own answer.
    seen = _tty_attack("default", _variant("default", deny_ioctls=[]))
    assert seen["TIOCSCTTY"] == "OK" and seen["/dev/tty"] == "OK", seen
    assert seen["TIOCSTI"] == "OK" and seen["host:pushed"] == "x", seen
    assert seen["TIOCSETD"] == "OK" and seen["TIOCNOTTY"] == "OK", seen
    assert seen["TIOCCONS"] == "EPERM" and seen["TIOCVHANGUP"] == "EPERM", seen
    assert seen["TIOCLINUX"] in ("EINVAL", "ENOTTY") and seen["TIOCSSERIAL"] in ("ENOTTY", "EINVAL"), seen


# ---- setuid / setgid files ----------------------------------------------------------------------------
SUID = r"""
    import stat
    D = ARGS["dir"]
    AT_FDCWD = -100
    O_WRONLY, O_CREAT, O_TMPFILE = 0o1, 0o100, 0o20200000
    f = D + "/plain"
    os.close(os.open(f, os.O_WRONLY | os.O_CREAT, 0o644))
    fd = os.open(f, os.O_RDONLY)
    sc("chmod:u+s", 90, f, 0o4755)
    sc("chmod:g+s", 90, f, 0o2755)
    sc("chmod:ug+s", 90, f, 0o6755)
    sc("chmod:u+s:high-bits", 90, f, (1 << 32) | 0o4755)   # mode_t is 32 bits: still the bit
    sc("fchmod:u+s", 91, fd, 0o4755)
    sc("fchmodat:g+s", 268, AT_FDCWD, f, 0o2755)
    sc("fchmodat2:u+s", 452, AT_FDCWD, f, 0o4755, 0)
    sc("open:creat-04755", 2, D + "/o", O_WRONLY | O_CREAT, 0o4755)
    sc("openat:creat-02755", 257, AT_FDCWD, D + "/oa", O_WRONLY | O_CREAT, 0o2755)
    sc("openat:tmpfile-04755", 257, AT_FDCWD, D, O_WRONLY | O_TMPFILE, 0o4755)
    sc("open:tmpfile-02755", 2, D, O_WRONLY | O_TMPFILE, 0o2755)
    sc("creat:04755", 85, D + "/c", 0o4755)
    sc("mkdir:02755", 83, D + "/d", 0o2755)
    sc("mkdirat:04755", 258, AT_FDCWD, D + "/da", 0o4755)
    sc("mknod:reg-04755", 133, D + "/n", stat.S_IFREG | 0o4755, 0)
    sc("mknodat:reg-02755", 259, AT_FDCWD, D + "/na", stat.S_IFREG | 0o2755, 0)
    how = (ctypes.c_uint64 * 3)(O_WRONLY | O_CREAT, 0o644, 0)  # open_how: flags, mode, resolve
    sc("openat2", 437, AT_FDCWD, D + "/o2", how, 24)
    # Allowed: no S_ISUID/S_ISGID, or a mode the kernel ignores (no O_CREAT/O_TMPFILE).
    sc("chmod:0755", 90, f, 0o755)
    sc("fchmod:0700", 91, fd, 0o700)
    sc("fchmodat:sticky", 268, AT_FDCWD, f, 0o1755)
    sc("open:no-creat-04755", 2, f, 0, 0o4755)
    sc("openat:creat-0644", 257, AT_FDCWD, D + "/ok", O_WRONLY | O_CREAT, 0o644)
    sc("openat:tmpfile-0600", 257, AT_FDCWD, D, O_WRONLY | O_TMPFILE, 0o600)
    sc("mkdir:0755", 83, D + "/okdir", 0o755)
    sc("mknod:reg-0644", 133, D + "/okn", stat.S_IFREG | 0o644, 0)
    attempt("python-open", lambda: open(D + "/py", "w").close())
    out["left"] = sorted(os.listdir(D))
    out["suid_sgid_inside"] = sorted(n for n in os.listdir(D)
                                     if os.lstat(D + "/" + n).st_mode & (stat.S_ISUID | stat.S_ISGID))
"""
SUID_DENIED = ("chmod:u+s", "chmod:g+s", "chmod:ug+s", "chmod:u+s:high-bits", "fchmod:u+s", "fchmodat:g+s",
               "fchmodat2:u+s", "open:creat-04755", "openat:creat-02755", "openat:tmpfile-04755",
               "open:tmpfile-02755", "creat:04755", "mkdir:02755", "mkdirat:04755", "mknod:reg-04755",
               "mknodat:reg-02755")
SUID_ALLOWED = ("chmod:0755", "fchmod:0700", "fchmodat:sticky", "open:no-creat-04755", "openat:creat-0644",
                "openat:tmpfile-0600", "mkdir:0755", "mknod:reg-0644", "python-open")


def _suid_attack(profile, tmp_path, profile_dict=None):
    d = tmp_path / "rw"
    d.mkdir()
    os.chmod(d, 0o777)
    prof = profile_dict if profile_dict is not None else profile_for(profile, rw=[d])
    _, seen = run_attack(profile, SUID, {"dir": str(d)}, profile_dict=prof)
    # Host side: what the program left behind in the read-write bind.
    seen["host:suid_sgid"] = sorted(str(p.relative_to(d)) for p in d.rglob("*")
                                    if p.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID))
    return seen


@pytest.mark.parametrize("profile", PROFILES)
def test_no_setuid_or_setgid_files(profile, tmp_path):
    seen = _suid_attack(profile, tmp_path)
    for key in SUID_DENIED:
        assert seen[key] == "EPERM", (key, seen)
    assert seen["openat2"] == "ENOSYS", seen           # its mode is in a struct: refused whole
    for key in SUID_ALLOWED:
        assert seen[key].startswith("OK"), (key, seen)
    # Nothing was created by the denied calls, and nothing is setuid/setgid, inside or out.
    assert not {"o", "oa", "c", "d", "da", "n", "na", "o2"} & set(seen["left"]), seen
    assert seen["suid_sgid_inside"] == [] and seen["host:suid_sgid"] == [], seen


def test_setuid_filter_is_what_refuses(tmp_path):
    d = tmp_path / "rw"
    # With another deny_action, each denied call answers it: the filter refused, not the
    # kernel (which ignores S_ISGID for mkdir and may strip it for files).
    prof = _variant("default", rw=[d], deny_action=f"errno:{MARK}")
    prof["seccomp"]["restrict_suid_sgid"] = True
    seen = _suid_attack("default", tmp_path, prof)
    for key in SUID_DENIED:
        assert seen[key] == MARK, (key, seen)


def test_setuid_files_without_the_restriction(tmp_path):
    # Positive control: restrict_suid_sgid off, and the same program leaves setuid files
    # behind in the read-write bind (which is what the field prevents).
    d = tmp_path / "rw"
    prof = _variant("default", rw=[d], restrict_suid_sgid=False)
    seen = _suid_attack("default", tmp_path, prof)
    for key in SUID_DENIED:
        assert seen[key].startswith("OK"), (key, seen)
    assert seen["openat2"].startswith("OK"), seen
    assert {"o", "oa", "c", "n", "na"} <= set(seen["host:suid_sgid"]), seen  # (plain: chmod 0755 after)


def test_restrict_suid_sgid_field():
    from conftest import cli

    from isolate import load_profile

    assert load_profile("default").to_dict()["seccomp"]["restrict_suid_sgid"] is True
    assert load_profile("strict").to_dict()["seccomp"]["restrict_suid_sgid"] is True   # inherited
    r = cli("run", "--set", "seccomp.restrict_suid_sgid=maybe", "--", "true")
    assert r.returncode == 2 and "seccomp.restrict_suid_sgid: expected a boolean" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
