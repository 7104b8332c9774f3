"""Sanitizer and fuzzing-engine reports -> a crash type, its top frames and a crash state.

The names follow ClusterFuzz (src/clusterfuzz/stacktraces): `Heap-buffer-overflow WRITE 1`,
`Heap-use-after-free READ 4`, `Null-dereference WRITE`, `Stack-overflow`, `Abrt`,
`Integer-overflow`, `Timeout`, `Out-of-memory`, `Memory leak`... The state is the type and
the top three frames left after dropping sanitizer, engine (libFuzzer), libc and STL frames;
a function already on the list is dropped too, so that a recursive bug met at different
depths keeps one state.

Pure text processing: nothing here runs a program.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

# Addresses below this are a NULL dereference (ClusterFuzz's NULL_DEREFERENCE_BOUNDARY).
NULL_DEREFERENCE_BOUNDARY = 0x1000
STATE_FRAMES = 3

_FRAME = re.compile(r"^\s*#(\d+)\s+0x[0-9a-fA-F]+\s*(?:in\s+(.*?))?\s*(?:\s(\S+?):(\d+)(?::\d+)?|\s*\(([^()]*)\))?\s*$")
_BUILD_ID = re.compile(r"\s*\(BuildId: [0-9a-fA-F]+\)")
_ASAN_ERROR = re.compile(r"ERROR: (?:Address|Memory|Thread|HWAddress)Sanitizer: ([\w-]+)(?: on (?:unknown )?address "
                         r"(?:0x)?([0-9a-fA-F]+))?")
_ACCESS = re.compile(r"^(READ|WRITE) of size (\d+)", re.M)
_SEGV_ACCESS = re.compile(r"The signal is caused by a (READ|WRITE) memory access")
_SEGV_NULL_HINT = re.compile(r"Hint: address points to the zero page")
_UBSAN = re.compile(r"runtime error: (.*)")
# libFuzzer's own findings, and the same findings of isolate's replay shim (isolate/fuzz/_replay.c).
_LIBFUZZER = re.compile(r"ERROR: (libFuzzer|isolate-replay): ([\w-]+)")
_LEAK = re.compile(r"ERROR: LeakSanitizer: detected memory leaks")
# The sanitizer's own RSS limit (ASAN_OPTIONS hard_rss_limit_mb, what the runner gives AFL++ jobs).
_RSS_LIMIT = re.compile(r"(?:Address|Memory|Thread|HWAddress)Sanitizer: (?:hard|soft) rss limit exhausted|"
                        r"allocator exceeded the RSS limit")
_DEADLY = re.compile(r"ERROR: libFuzzer: deadly signal")

# ClusterFuzz's ASan bug names, by the word in `ERROR: AddressSanitizer: <word>`.
_ASAN_TYPES = {
    "heap-buffer-overflow": "Heap-buffer-overflow",
    "stack-buffer-overflow": "Stack-buffer-overflow",
    "stack-buffer-underflow": "Stack-buffer-underflow",
    "global-buffer-overflow": "Global-buffer-overflow",
    "dynamic-stack-buffer-overflow": "Dynamic-stack-buffer-overflow",
    "container-overflow": "Container-overflow",
    "heap-use-after-free": "Heap-use-after-free",
    "stack-use-after-return": "Stack-use-after-return",
    "stack-use-after-scope": "Stack-use-after-scope",
    "use-after-poison": "Use-after-poison",
    "intra-object-overflow": "Intra-object-overflow",
    "unknown-crash": "UNKNOWN",
    "attempting": None,  # "attempting double-free" / "attempting free on address which was not malloc()-ed"
    "stack-overflow": "Stack-overflow",
    "ABRT": "Abrt",
    "SEGV": "SEGV",
    "BUS": "Bus-error",
    "FPE": "Floating-point-exception",
    "ILL": "Ill",
    "allocation-size-too-big": "Out-of-memory",
    "requested": "Out-of-memory",  # "requested allocation size ... exceeds maximum supported size"
    "out-of-memory": "Out-of-memory",
    "calloc-overflow": "Calloc-overflow",
    "negative-size-param": "Negative-size-param",
    "memcpy-param-overlap": "Memcpy-param-overlap",
    "strcpy-param-overlap": "Strcpy-param-overlap",
    "alloc-dealloc-mismatch": "Heap-buffer-overflow",
    "new-delete-type-mismatch": "New-delete-type-mismatch",
    "bad-free": "Bad-free",
    "double-free": "Heap-double-free",
    "use-of-uninitialized-value": "Use-of-uninitialized-value",
}
# Types that carry READ/WRITE and the access size.
_SIZED = {"Heap-buffer-overflow", "Stack-buffer-overflow", "Stack-buffer-underflow", "Global-buffer-overflow",
          "Dynamic-stack-buffer-overflow", "Container-overflow", "Heap-use-after-free", "Stack-use-after-return",
          "Stack-use-after-scope", "Use-after-poison", "Intra-object-overflow", "UNKNOWN"}

# UBSan runtime errors, first match wins (ClusterFuzz's UBSAN_* crash types).
_UBSAN_TYPES = [
    (r"signed integer overflow|unsigned integer overflow|negation of .* cannot be represented", "Integer-overflow"),
    (r"division by zero", "Divide-by-zero"),
    (r"index .* out of bounds", "Index-out-of-bounds"),
    (r"shift exponent|left shift of", "Invalid-shift"),
    (r"(load|store|member access|reference binding|member call) .*null pointer|applying .*offset to null pointer",
     "Null-dereference"),
    (r"misaligned address", "Misaligned-address"),
    (r"pointer index expression|addition of unsigned offset|subtraction of unsigned offset|applying non-zero offset",
     "Pointer-overflow"),
    (r"variable length array bound", "Non-positive-vla-bound-value"),
    (r"is outside the range of representable values", "Float-cast-overflow"),
    (r"not a valid value for type 'bool'|load of value .* not a valid value for type .*bool", "Invalid-bool-value"),
    (r"not a valid value for type", "Invalid-enum-value"),
    (r"execution reached an unreachable program point|execution reached the end of a value-returning function",
     "Unreachable code"),
    (r"call to function .* through pointer to incorrect function type", "Incorrect-function-pointer-type"),
    (r"downcast of address|member call on address|member access within address .* which does not point",
     "Bad-cast"),
    (r"implicit conversion", "Implicit-conversion"),
    (r"null pointer passed as argument|null pointer returned from function", "Invalid-null-argument"),
    (r"object has invalid vptr", "Bad-cast"),
    (r"with insufficient space for an object", "Object-size"),
]
_UBSAN_TYPES = [(re.compile(p), t) for p, t in _UBSAN_TYPES]

# Frames that say nothing about the bug (ClusterFuzz's STACK_FRAME_IGNORE_REGEXES, the
# part that applies to C/C++ on Linux): sanitizer runtimes, interceptors, libFuzzer, libc
# and the C++ standard library.
_IGNORE_FUNCTIONS = re.compile("|".join([
    r"^__(asan|lsan|msan|tsan|ubsan|hwasan|sanitizer|interceptor|interception|cxa_|gxx_|libc_|GI_|"
    r"memcpy|memmove|memset|memcmp|strcpy|strncpy|strlen|strcmp|strncmp|sigsetjmp|assert_fail|"
    r"printf_chk|memcpy_chk|memset_chk|stack_chk_fail|fortify_fail)",
    r"^(asan|lsan|msan|ubsan|hwasan|__sanitizer|__asan|__ubsan)_", r"^__sanitizer::", r"^__asan::",
    r"^__ubsan::", r"^__lsan::", r"^__interception::", r"^__hwasan::", r"^__msan::",
    r"^fuzzer::", r"^LLVMFuzzerRunDriver$", r"^isolate_replay_", r"^main$", r"^_start$", r"^start_thread$", r"^clone3?$",
    r"^(std|__gnu_cxx|__cxxabiv1)::", r"^operator (new|delete)",
    r"^(malloc|calloc|realloc|free|valloc|pvalloc|memalign|posix_memalign|aligned_alloc|cfree|"
    r"reallocarray|strdup|strndup)$",
    r"^(memcpy|memmove|memset|memcmp|memchr|bcmp|strcpy|strncpy|strcat|strncat|strlen|strnlen|strcmp|"
    r"strncmp|strchr|strrchr|strstr|sprintf|snprintf|vsnprintf|printf|fprintf|puts|fwrite|fread|read|write)$",
    r"^(abort|raise|gsignal|pthread_kill|__pthread_kill_implementation|__pthread_kill_internal|"
    r"__assert_fail|__assert_fail_base|_Unwind_\w+|__GI_\w+|__libc_\w+|exit|_exit)$",
]))
_IGNORE_FILES = re.compile(r"compiler-rt/lib/|/sanitizer_common/|/libfuzzer/|/fuzzer/Fuzzer\w+\.cpp|"
                           r"/isolate/fuzz/_replay\.c$|(^|/)isolate-replay\.so$|"
                           r"/(libc|libc\+\+|libc\+\+abi|libstdc\+\+)[\w.+-]*\.so|^(\.\./)?(csu|nptl|stdlib|"
                           r"string|sysdeps|libio|malloc|signal)/|/include/c\+\+/|/usr/include/")


@dataclass
class Frame:
    index: int
    function: str          # "" when unsymbolized
    file: str | None = None
    line: int | None = None
    module: str | None = None

    def to_json(self) -> dict:
        return {"function": self.function, "file": self.file, "line": self.line}

    def label(self) -> str:
        return self.function or (self.module or "?")


@dataclass
class Report:
    type: str                       # ClusterFuzz's crash type, e.g. "Heap-buffer-overflow WRITE 1"
    frames: list = field(default_factory=list)   # the significant frames, recursion collapsed
    stack: list = field(default_factory=list)    # every frame of the crash stack
    address: int | None = None
    sanitizer: str | None = None    # "AddressSanitizer", "UndefinedBehaviorSanitizer", "libFuzzer", ...
    text: str = ""

    @property
    def crashed(self) -> bool:
        return self.type != ""

    @property
    def state(self) -> str:
        return crash_state(self.type, self.frames)

    @property
    def state_id(self) -> str:
        return state_id(self.state)

    @property
    def security(self) -> str | None:
        return security_severity(self.type)


def crash_state(type_: str, frames) -> str:
    """ClusterFuzz's crash state: the type, then the top three significant functions."""
    return "\n".join([type_] + [f.label() for f in frames[:STATE_FRAMES]])


def state_id(state: str) -> str:
    return hashlib.sha1(state.encode()).hexdigest()[:16]


def parse_frames(lines) -> list:
    out = []
    for line in lines:
        m = _FRAME.match(_BUILD_ID.sub("", line))
        if not m:
            continue
        idx, fn, file, lineno, module = m.groups()
        fn = (fn or "").strip()
        module_in_fn = re.match(r"^(.*?)\s*\(([^()]*\+0x[0-9a-fA-F]+)\)$", fn)
        if module_in_fn:  # "func (/path/bin+0x1234)": symbolized name, no file
            fn, module = module_in_fn.group(1), module_in_fn.group(2)
        if module:
            module = module.split("+")[0]
        out.append(Frame(int(idx), _short(fn), file, int(lineno) if lineno else None, module))
    return out


def _short(fn: str) -> str:
    """The function's name without its C++ parameter list."""
    if "(" in fn and not fn.startswith("operator()"):
        depth, cut = 0, len(fn)
        for i in range(len(fn) - 1, -1, -1):
            c = fn[i]
            if c == ")":
                depth += 1
            elif c == "(":
                depth -= 1
                if depth == 0:
                    cut = i
                    break
        fn = fn[:cut]
    return fn.strip()


def _first_stack(lines, start: int) -> list:
    """The first run of consecutive `#N` frames at or after line `start`."""
    block, seen = [], False
    for line in lines[start:]:
        if _FRAME.match(_BUILD_ID.sub("", line)):
            seen = True
            block.append(line)
        elif seen:
            break
    return parse_frames(block)


def significant(stack) -> list:
    """Drop sanitizer, engine, libc and STL frames, and every repeat of a function already
    listed (recursion at any depth is one bug)."""
    out, names = [], set()
    for f in stack:
        if not f.function:
            continue
        if _IGNORE_FUNCTIONS.search(f.function):
            continue
        if (f.file and _IGNORE_FILES.search(f.file)) or (not f.file and f.module and _IGNORE_FILES.search(f.module)):
            continue
        if f.function in names:
            continue
        names.add(f.function)
        out.append(f)
    return out


def parse(text: str, *, returncode: int | None = None, timed_out: bool = False, oom: bool = False) -> Report:
    """A Report from a sanitizer/engine output (stderr). type is "" when the text shows no crash
    and neither the exit nor the sandbox outcome say one happened."""
    lines = text.splitlines()
    rep = _parse_text(lines)
    if rep is None:
        if timed_out:
            rep = Report("Timeout")
        elif oom:
            rep = Report("Out-of-memory", sanitizer="cgroup")
        elif returncode is not None and returncode < 0:
            rep = Report(_SIGNAL_TYPES.get(-returncode, f"Fatal-signal {-returncode}"), sanitizer="signal")
        else:
            rep = Report("")
    rep.text = text
    rep.frames = significant(rep.stack)
    return rep


_SIGNAL_TYPES = {6: "Abrt", 11: "SEGV", 7: "Bus-error", 8: "Floating-point-exception", 4: "Ill", 5: "Trap",
                 9: "Killed"}


def _line_index(lines, pattern) -> tuple:
    for i, line in enumerate(lines):
        m = pattern.search(line)
        if m:
            return i, m
    return None, None


def _parse_text(lines) -> Report | None:
    text = "\n".join(lines)
    # libFuzzer's own findings (no sanitizer report before them).
    i, m = _line_index(lines, _LIBFUZZER)
    if m and m.group(2) in ("timeout", "out-of-memory"):
        kind = "Timeout" if m.group(2) == "timeout" else "Out-of-memory"
        return Report(kind, stack=_first_stack(lines, i + 1), sanitizer=m.group(1))

    i, m = _line_index(lines, _RSS_LIMIT)
    if m:
        return Report("Out-of-memory", stack=_first_stack(lines, i + 1), sanitizer="AddressSanitizer")

    # UBSan: "file:line:col: runtime error: ..." (before an ASan line it may have triggered).
    ui, um = _line_index(lines, _UBSAN)
    ai, am = _line_index(lines, _ASAN_ERROR)
    li, lm = _line_index(lines, _LEAK)
    if um and (ai is None or ui < ai):
        msg = um.group(1)
        kind = next((t for p, t in _UBSAN_TYPES if p.search(msg)), "Undefined-behavior")
        if kind == "Null-dereference":
            kind += " WRITE" if re.search(r"\bstore\b", msg) else " READ"
        return Report(kind, stack=_first_stack(lines, ui + 1), sanitizer="UndefinedBehaviorSanitizer")

    if am:
        word, addr = am.group(1), am.group(2)
        address = int(addr, 16) if addr else None
        line = lines[ai]
        if word == "attempting":
            kind = "Heap-double-free" if "double-free" in line else "Bad-free"
        elif word == "requested" or "allocation-size-too-big" in line:
            kind = "Out-of-memory"
        else:
            kind = _ASAN_TYPES.get(word, word[:1].upper() + word[1:].lower())
        rest = "\n".join(lines[ai:])
        if kind == "SEGV":
            acc = _SEGV_ACCESS.search(rest)
            if (address is not None and address < NULL_DEREFERENCE_BOUNDARY) or _SEGV_NULL_HINT.search(rest):
                kind = "Null-dereference"
            else:
                kind = "UNKNOWN"
            if acc:
                kind += " " + acc.group(1)
        elif kind in _SIZED:
            acc = _ACCESS.search(rest)
            if acc:
                kind = f"{kind} {acc.group(1)} {acc.group(2)}"
        return Report(kind, stack=_first_stack(lines, ai + 1), address=address, sanitizer="AddressSanitizer")

    if lm:
        return Report("Memory leak", stack=_first_stack(lines, li + 1), sanitizer="LeakSanitizer")

    if _DEADLY.search(text):
        di, _ = _line_index(lines, _DEADLY)
        return Report("Fatal-signal", stack=_first_stack(lines, di + 1), sanitizer="libFuzzer")
    return None


# ClusterFuzz's security severity (severity_analyzer): memory corruption by WRITE and
# use-after-free High, out-of-bounds READ Medium; crashes that are not memory-safety bugs
# (NULL dereference, stack exhaustion, abort, timeout, OOM, leaks, UBSan arithmetic) None.
_HIGH = ("Heap-use-after-free", "Heap-double-free", "Bad-cast", "Use-after-poison", "Stack-use-after-return",
         "Stack-use-after-scope")
_OVERFLOWS = ("Heap-buffer-overflow", "Stack-buffer-overflow", "Stack-buffer-underflow", "Global-buffer-overflow",
              "Dynamic-stack-buffer-overflow", "Container-overflow", "Intra-object-overflow", "UNKNOWN")
_MEDIUM = ("Index-out-of-bounds", "Use-of-uninitialized-value", "Bad-free", "Memcpy-param-overlap",
           "Strcpy-param-overlap", "Negative-size-param", "Incorrect-function-pointer-type")


def security_severity(type_: str) -> str | None:
    base, _, rest = type_.partition(" ")
    if base in _HIGH:
        return "High"
    if base in _OVERFLOWS:
        if base == "UNKNOWN" and not rest:
            return "Medium"
        return "High" if rest.startswith("WRITE") else "Medium"
    if base in _MEDIUM:
        return "Medium"
    return None
