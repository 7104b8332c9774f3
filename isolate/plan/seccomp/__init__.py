"""Seccomp: syscall names, systemd-style groups and actions -> BPF bytes via libseccomp.

One file per concern:
    isolate/kernel/syscalls.py        names -> numbers per arch, actions, socket families, ioctls
                                      (the vocabulary; the profile validates against it)
    isolate/kernel/syscall_groups.py  the @groups
    regions.py                        the argument-space algebra, and rule forms for libseccomp
    policy.py                         a spec -> per-syscall regions and libseccomp rules
    verify.py                         symbolic execution of the BPF against those regions
    bpf.py                            generating (and caching) the program: compile_filter, describe
    oci.py                            Docker / OCI seccomp profiles (JSON) -> a spec
This package re-exports the public API below.

CONTRACT (other modules code against these names; keep the signatures):

    parse_action(text) -> int          libseccomp action value; ValueError on bad text
    check_syscall_name(name) -> None   name or "@group"; ValueError naming it otherwise
    expand(names) -> list[str]         groups expanded, sorted, unique
    compile_filter(spec) -> bytes      BPF program (array of struct sock_filter)
    describe(spec) -> str              readable form of the same filter

`spec` is the normalized [seccomp] section of a profile (see isolate/profile/).

Also public: SOCKET_FAMILIES, IOCTLS, CLONE_NAMESPACE_FLAGS, EXTRA_X86_64_SYSCALLS,
format_action(value) -> str, socket_family(name) -> int, ioctl_request(item) -> int,
CACHE (compile results by spec).

Docker / OCI seccomp profiles (JSON; see the section at the end of this file):
    load_oci(path) / parse_oci(bytes, path) -> OciProfile   ProfileError naming the file
                                       and the JSON path ("syscalls[12].action")
    oci_translate(profile, caps) -> (default_action, allow, rules)
    oci_spec(spec, caps, ctx, file) -> spec   `oci` replaced by what the file says
    oci_digest(spec, ctx) -> sha256 of the file now (for caches keyed on the profile)
A spec with `oci` set may also be given to compile_filter/describe directly (no
capabilities kept then).  With an OCI profile, `socket_families` only denies.

Semantics of a compiled filter, per syscall made through the native ABI:

  1. the syscall is in `deny` (after group expansion): `deny_action`, whatever its
     arguments (argument rules for it are ignored);
  2. otherwise, if argument rules exist for it (`rules`, `socket_families`,
     `deny_ioctls`, `deny_namespace_flags`, `restrict_suid_sgid`) and the
     conditions of at least one match: that rule's action.  When several match,
     the most restrictive action wins, in the kernel's order for stacked filters
     (kill-process > kill-thread > trap > errno > trace > log > allow); between
     equally restrictive actions the rule listed first wins (user `rules` first,
     then namespace flags, ioctls, socket families, restrict_suid_sgid);
  3. otherwise ALLOW if the syscall is in `allow`;
  4. otherwise `default_action`.
  Syscalls made through another ABI (x86 `int 0x80`, x32) get `other_arches`.

libseccomp cannot express that directly: it drops every conditional rule of a
syscall that also has an unconditional one, keeps only the shorter of two rules
when one's comparisons extend the other's, refuses two rules with identical
comparisons but different actions (EEXIST), refuses two comparisons of the same
argument in one rule (EINVAL), and refuses rules whose action is the default
action (EACCES).  So the compiler below computes, per syscall, the exact region
of argument space that gets each action (disjoint unions of per-argument ranges
and mask/value "cubes") and hands libseccomp only rules whose regions do not
overlap unless their actions are equal, never an unconditional rule next to
conditional ones of another action, and never a rule for the default action.

libseccomp 2.5.4 also has bugs of its own here (an endless loop and lost rules
with range comparisons followed by further arguments, a wrong jump in its binary
tree mode; see _NATIVE_NOTE in regions.py and bpf._generate).  Every program is therefore checked
by symbolic execution against the computed regions before it is returned
(verify.verify), and regenerated in a more conservative form if the check fails.
"""

from __future__ import annotations

from ...kernel.syscall_groups import DESCRIPTIONS as GROUP_DESCRIPTIONS
from ...kernel.syscall_groups import GROUPS
from ...kernel.syscalls import (AF_MAX, CLONE_NAMESPACE_FLAGS, EXTRA_X86_64_SYSCALLS, IOCTLS, SOCKET_FAMILIES,
                                check_syscall_name, expand, format_action, ioctl_request, parse_action, socket_family)
from ...profile.oci import (OCI_ACTIONS, OCI_ARCHES, OCI_FLAGS, OCI_OPS, OciEntry, OciProfile, arch_names, load_oci,
                           parse_oci, read_oci_file)
from .bpf import CACHE, compile_filter, describe
from .oci import oci_digest, oci_included, oci_spec, oci_translate

__all__ = [
    "AF_MAX",
    "CACHE",
    "CLONE_NAMESPACE_FLAGS",
    "EXTRA_X86_64_SYSCALLS",
    "GROUPS",
    "GROUP_DESCRIPTIONS",
    "IOCTLS",
    "OCI_ACTIONS",
    "OCI_ARCHES",
    "OCI_FLAGS",
    "OCI_OPS",
    "OciEntry",
    "OciProfile",
    "SOCKET_FAMILIES",
    "arch_names",
    "check_syscall_name",
    "compile_filter",
    "describe",
    "expand",
    "format_action",
    "ioctl_request",
    "load_oci",
    "oci_digest",
    "oci_included",
    "oci_spec",
    "oci_translate",
    "parse_action",
    "parse_oci",
    "read_oci_file",
    "socket_family",
]
