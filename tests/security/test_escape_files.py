"""Escape attempts through the file system, from inside the default and strict profiles.

Covers: host files outside the view, inherited fds, writes to system directories, raw
devices, non-namespaced sysctls, chroot break-outs, and /proc/1 (/proc/self) roots.
"""

import os
import stat

import pytest

from conftest import PYTHON_DIRS, ROOT
from escape_helpers import DENIED, NO_WRITE, PROFILES, run_attack

pytestmark = pytest.mark.parametrize("profile", PROFILES)


def snapshot(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_mtime_ns, st.st_size, stat.S_IMODE(st.st_mode)


# ---- 1. host files outside the view ------------------------------------------------------------
def test_host_files_outside_the_view_are_unreachable(profile, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret\n")
    before = {p: snapshot(p) for p in (str(secret), "/root/.bashrc")}
    _, seen = run_attack(profile, """
        for p in ARGS["paths"]:
            attempt("read:" + p, lambda: open(p).read())
            attempt("write:" + p, lambda: open(p, "a").write("escaped"))
        # The same through other spellings of the path.
        for p in ("/proc/self/root/root/.bashrc", "/proc/1/root/root/.bashrc",
                  "/../../../root/.bashrc", "/proc/self/cwd/../../../../root/.bashrc",
                  "/proc/self/root" + ARGS["secret"]):
            attempt("read:" + p, lambda: open(p).read())
        for d in ("/home", "/var", "/run", "/sys", "/boot", "/srv", "/mnt", "/opt"):
            attempt("list:" + d, lambda: os.listdir(d))
        attempt("list:/root", lambda: sorted(os.listdir("/root")))
    """, {"paths": [str(secret), "/root/.bashrc", "/etc/shadow", "/etc/gshadow", "/etc/ssh"],
          "secret": str(secret)})
    for p in (str(secret), "/root/.bashrc"):
        assert seen["read:" + p] == "ENOENT", (p, seen)
        assert seen["write:" + p] in {"ENOENT"} | NO_WRITE, (p, seen)
    for p in ("/proc/self/root/root/.bashrc", "/../../../root/.bashrc",
              "/proc/self/cwd/../../../../root/.bashrc", "/proc/self/root" + str(secret)):
        assert seen["read:" + p] == "ENOENT", (p, seen)
    # pid 1 is not dumpable: its /proc/1/root is closed to the program altogether.
    assert seen["read:/proc/1/root/root/.bashrc"] in ("ENOENT", "EACCES"), seen
    for d in ("/home", "/var", "/run", "/sys", "/boot", "/srv", "/mnt", "/opt"):
        assert seen["list:" + d] == "ENOENT", (d, seen)
    # /root exists only as the parent of this interpreter's bind (e.g. pyenv), if at all.
    bound_under_root = {d.split("/")[2] for d in PYTHON_DIRS + [str(ROOT)] if d.startswith("/root/")}
    if seen["list:/root"] != "ENOENT":
        assert seen["list:/root"] == "OK:" + str(sorted(bound_under_root)), seen
    if profile == "strict":
        # strict has no host /etc at all: only ld.so.cache, localtime and generated files.
        for p in ("/etc/shadow", "/etc/gshadow", "/etc/ssh"):
            assert seen["read:" + p] == "ENOENT", (p, seen)
    else:
        # default binds the host's /etc read-only (by design: the program runs as the caller's
        # own uid); it must not be writable.
        assert seen["write:/etc/shadow"] in NO_WRITE, seen
    # Host side: nothing changed.
    for p, snap in before.items():
        assert snapshot(p) == snap, p


# ---- 2. fds the parent left open -----------------------------------------------------------------
def test_inherited_fds_are_closed(profile, tmp_path):
    path = tmp_path / "parent-file.txt"
    path.write_text("parent data\n")
    f = os.open(path, os.O_RDWR)            # no O_CLOEXEC
    r_end, w_end = os.pipe()
    leaked = [f, r_end, w_end]
    try:
        for fd in leaked:
            os.set_inheritable(fd, True)
        _, seen = run_attack(profile, """
            # First thing after the sandbox check (which closed what it opened): scan the table.
            limit = min(os.sysconf("SC_OPEN_MAX"), 4096)
            is_open = []
            for fd in range(3, limit):
                try:
                    os.fstat(fd)
                    is_open.append(fd)
                except OSError:
                    pass
            out["open_fds"] = is_open
            for fd in ARGS["fds"]:
                attempt("write:%d" % fd, lambda: os.write(fd, b"escaped"))
                attempt("read:%d" % fd, lambda: os.read(fd, 100))
                attempt("proc:%d" % fd, lambda: os.readlink("/proc/self/fd/%d" % fd))
            out["fd_dir"] = sorted(int(x) for x in os.listdir("/proc/self/fd")
                                   if os.path.exists("/proc/self/fd/" + x))
        """, {"fds": leaked})
        assert seen["open_fds"] == [], seen
        assert [fd for fd in seen["fd_dir"] if fd >= 3] == [], seen
        for fd in leaked:
            assert seen["write:%d" % fd] == "EBADF", seen
            assert seen["read:%d" % fd] == "EBADF", seen
            assert seen["proc:%d" % fd] == "ENOENT", seen
        # Host side: the file is unchanged and nothing came down the pipe.
        os.lseek(f, 0, os.SEEK_SET)
        assert os.read(f, 100) == b"parent data\n"
        os.set_blocking(r_end, False)
        with pytest.raises(BlockingIOError):
            os.read(r_end, 100)
    finally:
        for fd in leaked:
            os.close(fd)


# ---- 5. writes to system directories ---------------------------------------------------------------
SYSTEM_TARGETS = ["/usr/isolate-escape", "/usr/bin/isolate-escape", "/etc/isolate-escape", "/bin/isolate-escape",
                  "/lib/isolate-escape", "/isolate-escape", "/proc/self/root/usr/isolate-escape"]


def test_system_directories_are_not_writable(profile):
    stamp = f"{os.getpid()}"
    targets = [t + "-" + stamp for t in SYSTEM_TARGETS]
    host_paths = [os.path.realpath(t.replace("/proc/self/root", "")) for t in targets]
    for p in host_paths:
        assert not os.path.lexists(p)
    existing = "/usr/bin/true"
    before = snapshot(existing)
    try:
        _, seen = run_attack(profile, """
            for t in ARGS["targets"]:
                attempt("create:" + t, lambda: open(t, "w").write("escaped"))
                attempt("mkdir:" + t, lambda: os.mkdir(t + ".d"))
                attempt("symlink:" + t, lambda: os.symlink("/", t + ".l"))
            e = ARGS["existing"]
            st = os.stat(e)
            # Changes that would be harmless even if they went through: same mode, same owner.
            attempt("chmod", lambda: os.chmod(e, st.st_mode & 0o7777))
            attempt("chown", lambda: os.chown(e, st.st_uid, st.st_gid))
            attempt("append", lambda: open(e, "ab").write(b""))
            attempt("utime", lambda: os.utime(e, ns=(st.st_atime_ns, st.st_mtime_ns)))
            attempt("rename", lambda: os.rename(e, e))
            attempt("link", lambda: os.link(e, "/usr/bin/isolate-escape-link"))
            attempt("etc-hostname", lambda: open("/etc/hostname", "a").write(""))
        """, {"targets": targets, "existing": existing})
        for t in targets:
            for op in ("create", "mkdir", "symlink"):
                assert seen[f"{op}:{t}"] in NO_WRITE, (op, t, seen)
        for op in ("chmod", "chown", "append", "utime", "link", "etc-hostname"):
            assert seen[op] in NO_WRITE, (op, seen)
        # rename(x, x) is a no-op that returns success without writing on a writable fs;
        # on a read-only mount it must still be refused.
        assert seen["rename"] in NO_WRITE | {"OK"}, seen
    finally:
        leaked = [p for p in host_paths + [p + ".d" for p in host_paths] + [p + ".l" for p in host_paths]
                  if os.path.lexists(p)]
        for p in leaked:  # never leave a broken sandbox's debris on the machine
            os.rmdir(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    assert not leaked, f"the sandbox wrote to the host: {leaked}"
    assert snapshot(existing) == before


# ---- 11. raw devices ---------------------------------------------------------------------------------
RAW_DEVICES = ["/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/port",
               "/dev/console", "/dev/tty0", "/dev/loop0", "/dev/fuse", "/dev/net/tun", "/dev/kvm", "/dev/cpu/0/msr"]


def test_raw_devices_are_absent(profile):
    host_present = [d for d in RAW_DEVICES if os.path.exists(d)]
    assert "/dev/vda" in host_present and "/dev/kmsg" in host_present  # real targets on this machine
    _, seen = run_attack(profile, """
        for d in ARGS["devices"]:
            attempt("open:" + d, lambda: os.close(os.open(d, os.O_RDONLY | os.O_NONBLOCK)))
        attempt("list", lambda: sorted(os.listdir("/dev")))
        # A new node for the host's disk (8,0 / 254,0) or /dev/mem (1,1): no CAP_MKNOD,
        # and /tmp and /dev are nodev anyway.
        attempt("mknod:/tmp/vda", lambda: os.mknod("/tmp/vda", 0o600 | 0o60000, os.makedev(254, 0)))
        attempt("mknod:/tmp/mem", lambda: os.mknod("/tmp/mem", 0o600 | 0o20000, os.makedev(1, 1)))
        attempt("mknod:/dev/vda", lambda: os.mknod("/dev/vda", 0o600 | 0o60000, os.makedev(254, 0)))
        attempt("open:/proc/kcore", lambda: len(open("/proc/kcore", "rb").read(4096)))
        attempt("open:/sys/block", lambda: os.listdir("/sys/block"))
    """, {"devices": RAW_DEVICES})
    for d in RAW_DEVICES:
        assert seen["open:" + d] == "ENOENT", (d, seen)
    assert seen["list"] == "OK:" + str(sorted(["null", "zero", "full", "random", "urandom", "tty", "shm", "pts",
                                                "fd", "stdin", "stdout", "stderr", "ptmx"])), seen
    # EPERM: no CAP_MKNOD; EACCES: strict's Landlock rules do not grant making devices.
    assert seen["mknod:/tmp/vda"] in {"EPERM", "EACCES"}, seen
    assert seen["mknod:/tmp/mem"] in {"EPERM", "EACCES"}, seen
    assert seen["mknod:/dev/vda"] in NO_WRITE, seen
    assert seen["open:/proc/kcore"] in ("OK:0", "EACCES", "ENOENT"), seen  # masked by /dev/null
    assert seen["open:/sys/block"] == "ENOENT", seen


# ---- 12. non-namespaced sysctls ------------------------------------------------------------------------
def read_host(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"unreadable:{e.errno}"


SYSCTLS = {
    # path -> what the attack writes (harmless if it ever went through)
    "/proc/sys/vm/drop_caches": "4",                       # 4 = only "stop printing" the info message
    "/proc/sys/kernel/core_pattern": "isolate-escape-core",
    "/proc/sys/kernel/modprobe": "/nonexistent/isolate-escape-modprobe",
    "/proc/sys/kernel/hostname": "isolate-escape",         # namespaced, but read-only all the same
    "/proc/sys/kernel/domainname": "isolate-escape",
    "/proc/sysrq-trigger": "h",                            # h = print help: the harmless one
    "/proc/sys/kernel/sysrq": "0",
}


def test_non_namespaced_sysctls_are_not_writable(profile):
    before = {p: read_host(p) for p in SYSCTLS}
    try:
        _, seen = run_attack(profile, """
            for path, value in ARGS["sysctls"].items():
                def w():
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.write(fd, value.encode())
                    finally:
                        os.close(fd)
                attempt(path, w)
            # Make /proc/sys writable again: remount (MS_REMOUNT | MS_BIND, without MS_RDONLY).
            sc("remount", 165, None, "/proc/sys", None, 0x20 | 0x1000, None)
        """, {"sysctls": SYSCTLS})
        for path in SYSCTLS:
            if not os.path.exists(path):
                assert seen[path] == "ENOENT", (path, seen)  # e.g. no sysrq on this kernel
            else:
                assert seen[path] in {"EROFS", "EACCES", "ENOENT", "EPERM"}, (path, seen)
        assert seen["remount"] in DENIED[profile], seen
    finally:
        after = {p: read_host(p) for p in SYSCTLS}
        changed = {p: (before[p], after[p]) for p in SYSCTLS if before[p] != after[p]}
        for p, (old, _new) in changed.items():  # put the machine back before failing
            if not old.startswith("unreadable:"):
                with open(p, "w") as f:
                    f.write(old)
    assert not changed, f"the sandbox changed host sysctls: {changed}"


# ---- 14. chroot break-out ------------------------------------------------------------------------------
def test_chroot_breakout(profile):
    host_jail = os.path.exists("/tmp/jail")
    _, seen = run_attack(profile, """
        root_before = sorted(os.listdir("/"))
        os.makedirs("/tmp/jail/d", exist_ok=True)
        attempt("chroot:jail", lambda: os.chroot("/tmp/jail"))
        os.chdir("/tmp/jail/d")
        attempt("chroot:.", lambda: os.chroot("."))
        for _ in range(64):
            os.chdir("..")
        attempt("chroot:climbed", lambda: os.chroot("."))
        out["cwd"] = os.getcwd()
        out["root_after"] = sorted(os.listdir("/"))
        out["cwd_listing"] = sorted(os.listdir("."))
        out["same_root"] = root_before == out["root_after"]
        attempt("read:/root/.bashrc", lambda: open("/root/.bashrc").read())
        attempt("read:./root/.bashrc", lambda: open("./root/.bashrc").read())
        attempt("fchdir-chroot", lambda: (os.chdir("/tmp/jail"), os.chroot("/tmp/jail/d")) and None)
    """)
    for k in ("chroot:jail", "chroot:.", "chroot:climbed", "fchdir-chroot"):
        assert seen[k] in DENIED[profile], (k, seen)
    assert seen["cwd"] == "/" and seen["same_root"], seen
    host_only = {"home", "var", "run", "sys", "boot", "srv", "mnt", "opt", "media"}
    assert not host_only & set(seen["cwd_listing"]), seen
    assert seen["read:/root/.bashrc"] == "ENOENT" and seen["read:./root/.bashrc"] == "ENOENT", seen
    # Host side: the jail was made in the sandbox's private /tmp, not the host's.
    assert os.path.exists("/tmp/jail") == host_jail


# ---- 16. /proc/1/root, /proc/self/root, /proc/1/mem ----------------------------------------------------------
def test_proc_roots_lead_only_to_the_sandbox_root(profile):
    _, seen = run_attack(profile, """
        root = sorted(os.listdir("/"))
        def same(p):
            # pid 1 is not dumpable: its /proc/1/root may be closed to us altogether (EACCES)
            try:
                return sorted(os.listdir(p)) == root
            except OSError as e:
                return ename(e.errno)
        out["same"] = {p: same(p) for p in ("/proc/1/root", "/proc/self/root", "/proc/1/root/proc/1/root",
                                            "/proc/1/root/..", "/proc/self/root/../..")}
        out["pid1"] = open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()
        attempt("pid1_root", lambda: os.readlink("/proc/1/root"))
        attempt("read:/proc/1/root/root/.bashrc", lambda: open("/proc/1/root/root/.bashrc").read())
        attempt("read:/proc/1/root/../../root/.bashrc", lambda: open("/proc/1/root/../../root/.bashrc").read())
        attempt("list:/proc/1/root/home", lambda: os.listdir("/proc/1/root/home"))
    """)
    assert seen["pid1"] == "isolate-init", seen
    # Each /proc root leads to the sandbox's own root, or is closed (pid 1 is not dumpable).
    assert all(v is True or v == "EACCES" for v in seen["same"].values()), seen
    assert seen["same"]["/proc/self/root"] is True, seen
    assert seen["pid1_root"] in ("OK:/", "EACCES"), seen
    assert seen["read:/proc/1/root/root/.bashrc"] in ("ENOENT", "EACCES"), seen
    assert seen["read:/proc/1/root/../../root/.bashrc"] in ("ENOENT", "EACCES"), seen
    assert seen["list:/proc/1/root/home"] in ("ENOENT", "EACCES"), seen


def test_pid1_memory_is_not_readable(profile):
    """pid 1 (isolate-init) runs WITHOUT the seccomp filter: its memory must be out of reach."""
    _, seen = run_attack(profile, """
        try:
            first = open("/proc/1/maps").readline()
        except OSError:
            first = ""
        addr = int(first.split("-")[0], 16) if first else 0x400000
        def read_mem():
            with open("/proc/1/mem", "rb") as f:
                f.seek(addr)
                return f.read(4).hex()
        attempt("read:/proc/1/mem", read_mem)
        attempt("open-rw:/proc/1/mem", lambda: os.close(os.open("/proc/1/mem", os.O_RDWR)))
        attempt("read:/proc/1/maps", lambda: len(open("/proc/1/maps").read()))
        attempt("read:/proc/1/syscall", lambda: open("/proc/1/syscall").read().split()[0])
        attempt("read:/proc/1/environ", lambda: len(open("/proc/1/environ", "rb").read()))
        buf = ctypes.create_string_buffer(4)
        local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 4)
        remote = (ctypes.c_void_p * 2)(addr, 4)
        sc("process_vm_readv:1", 310, 1, local, 1, remote, 1, 0)
    """)
    assert seen["read:/proc/1/mem"] in {"EACCES", "EPERM", "EIO"}, seen
    assert seen["open-rw:/proc/1/mem"] in {"EACCES", "EPERM"}, seen
    assert seen["read:/proc/1/syscall"] in {"EACCES", "EPERM"}, seen
    assert seen["process_vm_readv:1"] in DENIED[profile] | {"EACCES"}, seen


def test_pid1_fds_are_not_reachable(profile):
    """isolate-init holds the status pipe to the caller and a pidfd of the caller process."""
    _, seen = run_attack(profile, """
        attempt("list:/proc/1/fd", lambda: sorted(os.listdir("/proc/1/fd")))
        for n in range(3, 8):
            attempt("readlink:%d" % n, lambda: os.readlink("/proc/1/fd/%d" % n))
            attempt("open-w:%d" % n, lambda: os.close(os.open("/proc/1/fd/%d" % n, os.O_WRONLY)))
            attempt("open-r:%d" % n, lambda: os.close(os.open("/proc/1/fd/%d" % n, os.O_RDONLY)))
    """)
    # Listing shows at most fd numbers: a non-dumpable pid 1's /proc entries belong to
    # root, which a root caller's program is on the host side. What they are, and
    # opening them, is closed to it.
    assert seen["list:/proc/1/fd"] in {"EACCES", "EPERM"} or os.geteuid() == 0, seen
    for n in range(3, 8):
        for op in ("readlink", "open-w", "open-r"):
            assert seen[f"{op}:{n}"] in {"EACCES", "EPERM", "ENOENT"}, (op, n, seen)
