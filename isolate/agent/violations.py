"""Violations as data: what the sandbox refused while a command ran, labelled for a model.

Sources, each as far as this host lets isolate read it (`status()` says which):

- **syscalls denied by the filter, with their arguments** (where denials.usable(plan)):
  the session's filter is loaded as its notify variant (isolate.kernel.seccomp_notify:
  errno returns become SECCOMP_RET_USER_NOTIF); isolate-agentd answers each such call
  with the profile's errno and reports it (R_DENIED: syscall, arguments, pid, program
  name): {"kind": "syscall", "syscall", "argument" (the one that decided: "family
  AF_NETLINK (16), type SOCK_RAW", "request TIOCSTI (0x5412)", "flags CLONE_NEWUSER"),
  "errno", "args", "result", "program", "pid", "reason"}. Kills (SECCOMP_RET_KILL) are
  not sent to agentd: they come from the audit records below.
- **syscalls denied by the filter, audit records** (the other plans, and kills): the
  filter is loaded with SECCOMP_FILTER_FLAG_LOG (Popen(seccomp_log=True)), so the kernel
  writes an audit record (type 1326, AUDIT_SECCOMP) for every denial: host pid and uid,
  syscall number, the action (errno). isolate reads them from the audit netlink
  socket's read-only multicast group (CAP_AUDIT_READ: root), without an audit daemon
  and without the printk rate limit. A record belongs to the session whose host uid it
  names (a root caller's sessions each have a host uid of their own) or, for a caller
  that is not root, whose processes include its pid; it belongs to the command during
  whose run it was stamped. The filter's arguments are not in the record: the label
  names the rule that can deny that syscall (a socket family outside socket_families,
  namespace flags, setuid bits, a denied ioctl request).
- **network connections**: isolate-agentd watches connect() (a SECCOMP_RET_USER_NOTIF
  filter of its own on top of the profile's, or in notify mode a prefix of the
  profile's own; it only looks, the kernel then does the call as the profile decides) and reports non-loopback inet addresses; in a session with network mode
  "none" such a connection is refused by the kernel (ENETUNREACH), and is listed as
  {"kind": "network", "host", "port", "reason": "no network"}.
- **the network allowlist's refusals** (a profile with network.mode = "allowlist"): the
  session's host-side proxy (isolate.netproxy) records each refused connection, DNS
  question and UDP datagram with destination, port, name and why; a command gets those
  recorded while it ran: {"kind": "network", "proto": "tcp"|"dns"|"udp", "host", "port",
  "name", "reason"}.
- **paths refused by Landlock**: audit records of type 1423 (AUDIT_LANDLOCK_ACCESS,
  Linux 6.15+) when the profile enforces its view with Landlock; they carry no uid, so
  they are attributed through the syscall record of the same event when the kernel
  writes one (syscall auditing on), else not at all.
"""

from __future__ import annotations

import collections
import errno as errno_mod
import ipaddress
import os
import re
import socket
import struct
import threading
import time

AUDIT_SECCOMP = 1326
AUDIT_SYSCALL = 1300
AUDIT_LANDLOCK_ACCESS = 1423
NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
COARSE = 0.012       # the audit stamp is CLOCK_REALTIME_COARSE (a jiffy, up to 10 ms at HZ=100)
LATE = 0.05          # seconds to wait for the kernel's records of a command that failed
MAX_EVENTS = 10000   # agentd's reports a session keeps (different ones; repeats are counted)

_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')
_STAMP = re.compile(r"audit\((\d+)\.(\d+):(\d+)\)")

RULE_LABELS = {
    "socket": "socket family not allowed by the profile (socket_families)",
    "socketpair": "socket family not allowed by the profile (socket_families)",
    "clone": "new namespaces are not allowed (deny_namespace_flags)",
    "clone3": "clone3 is answered ENOSYS so that libc uses clone, whose flags are checked",
    "unshare": "new namespaces are not allowed (deny_namespace_flags)",
    "setns": "joining namespaces is not allowed (deny_namespace_flags)",
    "ioctl": "an ioctl request the profile denies (deny_ioctls)",
    "chmod": "setuid/setgid bits are not allowed (restrict_suid_sgid)",
    "fchmod": "setuid/setgid bits are not allowed (restrict_suid_sgid)",
    "fchmodat": "setuid/setgid bits are not allowed (restrict_suid_sgid)",
    "fchmodat2": "setuid/setgid bits are not allowed (restrict_suid_sgid)",
}


def syscall_name(nr: int) -> str:
    try:
        import pyseccomp as seccomp

        name = seccomp.resolve_syscall(seccomp.Arch.NATIVE, nr)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return f"syscall {nr}"


class AuditReader:
    """One per process: the kernel's audit records (multicast, read-only), kept briefly."""

    def __init__(self):
        self.records: collections.deque = collections.deque(maxlen=4096)
        self.error: str | None = None
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.count = 0
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
            self.sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        except OSError as e:
            self.sock = None
            self.error = (f"cannot read the kernel's audit records ({os.strerror(e.errno)}; "
                          f"CAP_AUDIT_READ is needed)")
            return
        self.thread = threading.Thread(target=self._loop, name="isolate-audit-reader", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    break
                if kind in (AUDIT_SECCOMP, AUDIT_LANDLOCK_ACCESS, AUDIT_SYSCALL):
                    text = data[off + 16:off + length].split(b"\0", 1)[0].decode("utf-8", "replace")
                    rec = _parse(kind, text)
                    if rec is not None:
                        with self.lock:
                            self.count += 1
                            rec["seq"] = self.count
                            self.records.append(rec)
                            self.arrived.notify_all()
                off += (length + 3) & ~3

    def since(self, seq: int, t0: float) -> list:
        """Records that arrived after `seq`, stamped no earlier than t0 (the kernel's
        stamp is the coarse clock: a few ms early at most)."""
        with self.lock:
            out = []
            for r in reversed(self.records):   # newest first, in arrival order
                if r["seq"] <= seq:
                    break
                if r["time"] >= t0 - COARSE:
                    out.append(r)
            return out[::-1]


def _parse(kind: int, text: str) -> dict | None:
    m = _STAMP.search(text)
    if not m:
        return None
    fields = {k: v.strip('"') for k, v in _FIELD.findall(text[m.end():])}
    return {"type": kind, "time": int(m.group(1)) + int(m.group(2)) / 1000.0, "serial": int(m.group(3)),
            "fields": fields}


_reader = None
_reader_lock = threading.Lock()


def reader() -> AuditReader:
    global _reader
    with _reader_lock:
        if _reader is None or _reader.sock is None and _reader.error is None:
            _reader = AuditReader()
        return _reader


def status() -> dict:
    """What this process can report: {"syscalls": bool, "network": True, "paths": bool, "why": str}."""
    r = reader()
    ok = r.sock is not None
    return {"syscalls": ok, "network": True, "paths": ok, "why": r.error or ""}


# ---- per command -------------------------------------------------------------------------
def mark(session):
    """Where a command's window begins (wall clock, and the session's network events)."""
    r = reader() if session.seccomp_log else None
    proxy = session.network
    kept, dropped = session.events_mark()
    return (time.time(), kept, r.count if r is not None else 0,
            proxy.count() if proxy is not None else 0, dropped)


def collect(session, mark_, run) -> list:
    t0, net0, seq, proxied0, dropped0 = mark_
    out = []
    failed = run.returncode not in (0, None) or run.timed_out
    r = reader() if session.seccomp_log else None
    if r is not None and r.sock is not None and (failed or r.count > seq):
        if failed:
            # The kernel queues the record at the syscall; kauditd delivers it soon after.
            def arrived():
                for x in reversed(r.records):
                    if x["seq"] <= seq:
                        return False
                    if x["type"] == AUDIT_SECCOMP and _ours(session, x):
                        return True
                return False
            with r.lock:
                r.arrived.wait_for(arrived, LATE)
        recs = r.since(seq, t0)
        syscall_uid = {x["serial"]: x["fields"].get("uid") for x in recs if x["type"] == AUDIT_SYSCALL}
        for x in recs:
            if x["type"] == AUDIT_SECCOMP and _ours(session, x):
                out.append(_seccomp_violation(x))
            elif x["type"] == AUDIT_LANDLOCK_ACCESS and syscall_uid.get(x["serial"]) == str(session.uid):
                f = x["fields"]
                out.append({"kind": "path", "path": f.get("path") or f.get("name") or "?",
                            "access": f.get("blockers", "?"), "reason": "refused by Landlock (the profile's view)"})
    if session.notify or session.net_events:
        session.read_ctl()   # (in notify mode every refusal was sent before its call returned)
        for ev in list(session.net_events)[net0:]:
            out.append(ev)
    if session.network is not None:   # recorded by the proxy before the program saw the refusal
        out.extend(session.network.recorded(proxied0))
    out = _dedupe(out)
    if session.events_dropped > dropped0:
        out.append({"kind": "omitted", "count": session.events_dropped - dropped0,
                    "reason": f"more different refusals than a session keeps ({MAX_EVENTS})"})
    return out


def _ours(session, rec) -> bool:
    f = rec["fields"]
    if session.uid != os.geteuid():
        return f.get("uid") == str(session.uid)
    try:
        return int(f.get("pid", -1)) in set(session.sandbox_pids())
    except ValueError:
        return False


def _seccomp_violation(rec) -> dict:
    f = rec["fields"]
    nr = int(f.get("syscall", -1))
    name = syscall_name(nr)
    code = int(f.get("code", "0"), 16)
    action = code & 0xFFFF0000   # the record has the action, not its errno
    if action == 0x00050000:
        result = "an error"
    elif action in (0x80000000, 0):
        result = "killed"
    elif action == 0x00030000:
        result = "SIGSYS"
    else:
        result = hex(code)
    return {"kind": "syscall", "syscall": name, "result": result, "program": f.get("comm", "?"),
            "pid": int(f.get("pid", -1)), "reason": RULE_LABELS.get(name, "denied by the profile's seccomp filter")}


def network_event(session, pid: int, family: int, port: int, addr: bytes) -> dict:
    host = str(ipaddress.ip_address(addr))
    mode = session.plan.network_mode
    reason = "no network" if mode == "none" else f"network mode {mode!r}"
    return {"kind": "network", "host": host, "port": port, "family": "inet6" if family == socket.AF_INET6 else "inet",
            "reason": reason, "refused": mode == "none"}


def _key(v: dict) -> tuple:
    return tuple(sorted((k, str(x)) for k, x in v.items() if k not in ("pid", "time", "args", "count")))


def same_event(a: dict, b: dict) -> bool:
    """The same refusal, as a model is told it (another pid or pointer argument apart)."""
    return _key(a) == _key(b)


def _dedupe(items) -> list:
    seen, out = {}, []
    for v in items:
        key = _key(v)
        if key in seen:
            seen[key]["count"] = seen[key].get("count", 1) + v.get("count", 1)
            continue
        v = dict(v)
        seen[key] = v
        out.append(v)
    return out


def render(violations) -> str:
    """One short block for a model: "the sandbox denied: connect to 1.2.3.4:443 (no network); ..."."""
    parts = []
    for v in violations:
        n = f" x{v['count']}" if v.get("count", 1) > 1 else ""
        if v["kind"] == "network":
            if not v.get("refused", True):
                continue
            if v.get("proto") == "dns":
                parts.append(f"DNS lookup of {v.get('name') or '?'} ({v['reason']}){n}")
                continue
            host = v.get("name") or v.get("host") or "?"
            host = f"[{host}]" if ":" in host else host
            dest = host if v.get("port") is None else f"{host}:{v['port']}"
            verb = "UDP to" if v.get("proto") == "udp" else "connect to"
            parts.append(f"{verb} {dest} ({v['reason']}){n}")
        elif v["kind"] == "syscall":
            call = f"{v['syscall']}({v['argument']})" if v.get("argument") else v["syscall"]
            parts.append(f"{call} by {v['program']} ({v['reason']}){n}")
        elif v["kind"] == "omitted":
            parts.append(f"{v['count']} more not listed ({v['reason']})")
        elif v["kind"] == "path":
            parts.append(f"{v['access']} on {v['path']} ({v['reason']}){n}")
    if not parts:
        return ""
    return "[the sandbox denied: " + "; ".join(parts) + "]"
