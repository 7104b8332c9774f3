"""The replay shim: isolate-replay.so (built from isolate/fuzz/_replay.c), which replays a
libFuzzer target's input without libFuzzer's driver, and the check of whether a target can
take it.

A libFuzzer binary spends ~3/4 of a one-input replay in libFuzzer's own start (its corpus
feature tables and dictionaries are page-faulted in before the input is read). The shim,
preloaded into the target, interposes __libc_start_main and calls LLVMFuzzerInitialize (if
defined) and LLVMFuzzerTestOneInput itself, as LLVM's StandaloneFuzzTargetMain.c does. The
two functions are rarely in the dynamic symbol table, so their offsets come from the
target's ELF symbol table, read here once per triage and passed in ISOLATE_REPLAY.

    spec = shim.target_spec("/path/fuzz_x", timeout=25)
    if spec.ok: env["LD_PRELOAD"], env["ISOLATE_REPLAY"] = shim.PATH, spec.env_value
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolate-replay.so")
ENV_NAME = "ISOLATE_REPLAY"
MARKER = "isolate-replay: running "   # the shim's first line, once it has read the input
# The shim's module map (before the input runs and again after a sanitizer's report): one
# line per loaded object, "isolate-replay: module <base> <start>-<end>... <path>".
MODULE_LINE = "isolate-replay: module "
# Common sanitizer flags of a shim replay (in ASAN_, LSAN_ and UBSAN_OPTIONS: each parses
# the common flags again, the last one read wins): bare frame addresses and no SUMMARY line,
# so that ASan's report skips its module-list refresh (a dl_iterate_phdr walk and two reads
# of /proc/self/maps); the shim's module map turns the addresses into (module+offset).
RAW_FRAME_OPTIONS = "stack_trace_format='    #%n %p':print_summary=0"
TEST_ONE_INPUT = b"LLVMFuzzerTestOneInput"
INITIALIZE = b"LLVMFuzzerInitialize"

# libFuzzer flags a one-input replay by the shim honours (-runs, -max_len: in the shim;
# -timeout and -rss_limit_mb: triage's own, as the shim's alarm and ASan's limits) or that
# do not change it (fuzzing-loop, corpus, output and exit-code settings). With any other
# target argument (a flag the shim does not know, or a positional one, which libFuzzer
# would run as a further input or corpus) libFuzzer's own main replays.
SHIM_FLAGS = frozenset({
    "runs", "max_len", "timeout", "rss_limit_mb", "dict", "only_ascii", "use_value_profile", "max_total_time",
    "seed", "print_final_stats", "print_pcs", "print_funcs", "print_coverage", "print_corpus_stats", "reload",
    "reduce_inputs", "mutate_depth", "len_control", "use_cmp", "use_memmem", "entropic",
    "entropic_feature_frequency_threshold", "entropic_number_of_rarest_features", "entropic_scale_per_exec_time",
    "shrink", "prefer_small", "artifact_prefix", "exact_artifact_path", "verbosity", "error_exitcode",
    "timeout_exitcode", "cross_over", "cross_over_uniform_dist", "shuffle", "focus_function", "keep_seed",
    "use_counters", "reduce_depth", "report_slow_units",
})


def unsupported_args(target_args) -> list:
    """The target arguments that make the shim replay differ from libFuzzer's main."""
    out = []
    for a in target_args:
        name = a[1:].split("=", 1)[0] if a.startswith("-") and not a.startswith("--") and "=" in a else None
        if name not in SHIM_FLAGS:
            out.append(a)
    return out


_PT_INTERP, _PT_DYNAMIC = 3, 2
_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC = 2
_MAX_SYMTAB = 256 << 20   # a symbol table larger than this is not read (the target is untrusted)


@dataclass(frozen=True)
class Spec:
    """Whether the shim can replay this target (`ok`, else `reason`), and what it needs."""
    ok: bool
    reason: str = ""
    test_one_input: int = 0     # offsets from the executable's load address
    initialize: int = 0
    timeout: int = 0

    @property
    def env_value(self) -> str:
        return f"{self.test_one_input:x}:{self.initialize:x}:{self.timeout}"


def _no(reason: str) -> Spec:
    return Spec(False, reason)


def _machine(path: str):
    try:
        with open(path, "rb") as f:
            h = f.read(20)
    except OSError:
        return None
    return struct.unpack_from("<H", h, 18)[0] if len(h) == 20 and h[:4] == b"\x7fELF" else None


def target_spec(target: str, timeout: int) -> Spec:
    """Read `target`'s ELF headers and symbol tables: a Spec that says whether the shim can
    replay it (a dynamically linked glibc ELF64 of this machine, defining
    LLVMFuzzerTestOneInput) and, if so, where its functions are. Never raises for a bad file:
    anything unexpected is a reason to use libFuzzer's own main."""
    if not os.path.isfile(PATH):
        return _no(f"the replay shim {PATH} is not built (python setup.py build_ext --inplace)")
    try:
        with open(target, "rb") as f:
            return _spec(f, timeout, _machine(PATH))
    except (OSError, struct.error, ValueError, IndexError) as e:
        return _no(f"cannot read the target's ELF headers ({e})")


def _spec(f, timeout: int, machine) -> Spec:
    h = f.read(64)
    if len(h) < 64 or h[:4] != b"\x7fELF":
        return _no("not an ELF file")
    if h[4] != 2 or h[5] != 1:
        return _no("not a little-endian 64-bit ELF")
    e_type, e_machine = struct.unpack_from("<HH", h, 16)
    if e_machine != machine:
        return _no(f"ELF machine {e_machine} is not the replay shim's ({machine})")
    if e_type not in (2, 3):
        return _no("not an executable")
    e_phoff, e_shoff = struct.unpack_from("<QQ", h, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHHHH", h, 54)
    f.seek(e_phoff)
    ph = f.read(e_phentsize * e_phnum)
    interp, dynamic = None, False
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * e_phentsize)
        if p_type == _PT_DYNAMIC:
            dynamic = True
        elif p_type == _PT_INTERP:
            f.seek(p_offset)
            interp = f.read(min(p_filesz, 4096)).rstrip(b"\0").decode("ascii", "replace")
    if interp is None or not dynamic:
        return _no("statically linked (no program interpreter): the replay shim cannot be preloaded")
    if "ld-linux" not in os.path.basename(interp):
        return _no(f"its program interpreter {interp} is not glibc's: the replay shim is built against glibc")
    f.seek(e_shoff)
    sh = f.read(e_shentsize * e_shnum)
    sections = [struct.unpack_from("<IIQQQQIIQQ", sh, i * e_shentsize) for i in range(e_shnum)]
    found: dict = {}
    for kind in (_SHT_SYMTAB, _SHT_DYNSYM):
        for s in sections:
            if s[1] != kind or s[9] < 24 or s[5] > _MAX_SYMTAB or s[6] >= e_shnum:
                continue
            strtab = sections[s[6]]
            if strtab[5] > _MAX_SYMTAB:
                continue
            f.seek(s[4])
            syms = f.read(s[5])
            f.seek(strtab[4])
            names = f.read(strtab[5])
            wanted = {}
            for name in (TEST_ONE_INPUT, INITIALIZE):
                at = names.find(name + b"\0")   # a symbol whose name starts there is `name`
                while at >= 0:
                    wanted[at] = name
                    at = names.find(name + b"\0", at + 1)
            if not wanted or s[9] != 24:
                continue
            # The entries whose st_name (their first 4 bytes) is one of those offsets, in table
            # order (found by bytes.find rather than unpacking every symbol of a large table).
            n = len(syms) // 24 * 24
            hits = []
            for at, name in wanted.items():
                key = struct.pack("<I", at)
                pos = syms.find(key, 0, n)
                while pos >= 0:
                    if pos % 24 == 0:
                        hits.append((pos, name))
                        pos = syms.find(key, pos + 24, n)
                    else:
                        pos = syms.find(key, pos + 1, n)
            for pos, name in sorted(hits):
                _, st_info, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", syms, pos)
                if st_shndx != 0 and (st_info & 0xF) == _STT_FUNC and st_value:
                    found.setdefault(name, st_value)
        if TEST_ONE_INPUT in found:
            break
    if TEST_ONE_INPUT not in found:
        return _no("LLVMFuzzerTestOneInput is not in its symbol tables (stripped?)")
    return Spec(True, test_one_input=found[TEST_ONE_INPUT], initialize=found.get(INITIALIZE, 0),
                timeout=max(0, int(timeout)))
