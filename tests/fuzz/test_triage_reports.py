"""isolate.fuzz.reports on report texts captured from tests/fuzz/planted.c (clang 14,
-fsanitize=fuzzer,address,undefined -fno-sanitize=object-size,null) and on hand-made ones."""

from pathlib import Path

import pytest

from isolate.fuzz import reports

DATA = Path(__file__).parent / "reports"


def parse(name):
    return reports.parse((DATA / f"{name}.txt").read_text())


@pytest.mark.parametrize("name, type_, frames, security", [
    ("HW", "Heap-buffer-overflow WRITE 1", ["heap_overflow_write", "LLVMFuzzerTestOneInput"], "High"),
    ("UR", "Heap-use-after-free READ 4", ["use_after_free_read", "LLVMFuzzerTestOneInput"], "High"),
    ("ND", "Null-dereference WRITE", ["null_write", "LLVMFuzzerTestOneInput"], None),
    ("SO", "Stack-overflow", ["recurse_forever"], None),
    ("AB", "Abrt", ["LLVMFuzzerTestOneInput"], None),
    ("IO", "Integer-overflow", ["add_overflow", "LLVMFuzzerTestOneInput"], None),
    ("LK", "Memory leak", ["leak", "LLVMFuzzerTestOneInput"], None),
    ("OM", "Out-of-memory", ["out_of_memory", "LLVMFuzzerTestOneInput"], None),
    ("TO", "Timeout", ["hang", "LLVMFuzzerTestOneInput"], None),
    ("RC", "Heap-buffer-overflow READ 1", ["walk", "LLVMFuzzerTestOneInput"], "Medium"),
])
def test_captured_reports(name, type_, frames, security):
    r = parse(name)
    assert r.type == type_
    assert [f.function for f in r.frames] == frames
    assert r.security == security
    assert r.state == "\n".join([type_] + frames[:3])
    # Frames keep their source position.
    assert r.frames[0].file.endswith("planted.c") and r.frames[0].line > 0


def test_engine_libc_and_sanitizer_frames_are_dropped():
    for name in ("HW", "AB", "TO", "LK", "OM"):
        names = [f.function for f in parse(name).frames]
        assert not any(n.startswith(("fuzzer::", "__sanitizer", "__libc", "__pthread", "_start", "main", "malloc",
                                     "raise", "abort")) for n in names), names
    # The stack itself keeps them.
    assert any(f.function.startswith("fuzzer::") for f in parse("HW").stack)


def test_recursion_at_different_depths_is_one_state():
    shallow, deep = parse("RC"), parse("RC2")
    assert len([f for f in deep.stack if f.function == "walk"]) > len([f for f in shallow.stack if f.function == "walk"])
    assert shallow.state == deep.state and shallow.state_id == deep.state_id
    so = parse("SO")
    assert len(so.stack) > 100 and [f.function for f in so.frames] == ["recurse_forever"]


def test_mutual_recursion_collapses():
    text = "==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6020 at pc 0x1 bp 0x2 sp 0x3\n" \
           "READ of size 1 at 0x6020 thread T0\n" + "".join(
               f"    #{i} 0x55{i:04x} in {fn} /src/re.c:{10 + i}:3\n"
               for i, fn in enumerate(["match_here", "match_star", "match_here", "match_star", "match_here", "match",
                                       "LLVMFuzzerTestOneInput"]))
    r = reports.parse(text)
    assert r.state == "Heap-buffer-overflow READ 1\nmatch_here\nmatch_star\nmatch"


def test_state_id_is_stable_and_short():
    assert parse("HW").state_id == reports.state_id(parse("HW").state)
    assert len(parse("HW").state_id) == 16
    assert parse("HW").state_id != parse("UR").state_id


def test_ubsan_report_before_asan_wins_and_object_size_is_named():
    text = ("t.c:11:5: runtime error: store to address 0x6020 with insufficient space for an object of type 'char'\n"
            "    #0 0x556d70552401 in f /tmp/t.c:11:10\n"
            "    #1 0x556d70551a15 in LLVMFuzzerTestOneInput /tmp/t.c:73:37\n")
    assert reports.parse(text).type == "Object-size"
    assert reports.parse(text.replace("store to address 0x6020 with insufficient space for an object of type 'char'",
                                      "store to null pointer of type 'int'")).type == "Null-dereference WRITE"
    assert reports.parse("a.c:1:2: runtime error: division by zero\n").type == "Divide-by-zero"
    assert reports.parse("a.c:1:2: runtime error: index 9 out of bounds for type 'int [4]'\n").security == "Medium"


def test_segv_far_from_null_is_unknown_and_security():
    text = ("==1==ERROR: AddressSanitizer: SEGV on unknown address 0x41414141 (pc 0x1 bp 0x2 sp 0x3 T0)\n"
            "==1==The signal is caused by a WRITE memory access.\n"
            "    #0 0x55 in poke /src/a.c:3:1\n")
    r = reports.parse(text)
    assert r.type == "UNKNOWN WRITE" and r.security == "High"
    assert reports.parse(text.replace("0x41414141", "0x000000000010")).type == "Null-dereference WRITE"


@pytest.mark.parametrize("line, type_", [
    ("==1==ERROR: AddressSanitizer: attempting double-free on 0x602 in thread T0:", "Heap-double-free"),
    ("==1==ERROR: AddressSanitizer: stack-buffer-overflow on address 0x7ff at pc 0x1 bp 0x2 sp 0x3\n"
     "WRITE of size 8 at 0x7ff thread T0", "Stack-buffer-overflow WRITE 8"),
    ("==1==ERROR: AddressSanitizer: global-buffer-overflow on address 0x5 at pc 0x1 bp 0x2 sp 0x3\n"
     "READ of size 2 at 0x5 thread T0", "Global-buffer-overflow READ 2"),
    ("==1==ERROR: AddressSanitizer: requested allocation size 0xffffffffff exceeds maximum supported size",
     "Out-of-memory"),
    ("==1== ERROR: libFuzzer: out-of-memory (malloc(4294967296))", "Out-of-memory"),
    ("==1== ERROR: libFuzzer: deadly signal", "Fatal-signal"),
])
def test_other_asan_and_libfuzzer_types(line, type_):
    assert reports.parse(line + "\n    #0 0x55 in f /src/a.c:3:1\n").type == type_


def test_severity_table():
    assert reports.security_severity("Heap-buffer-overflow WRITE 1") == "High"
    assert reports.security_severity("Stack-buffer-overflow WRITE 4") == "High"
    assert reports.security_severity("Heap-use-after-free READ 4") == "High"
    assert reports.security_severity("Heap-buffer-overflow READ 1") == "Medium"
    for t in ("Null-dereference WRITE", "Stack-overflow", "Abrt", "Timeout", "Out-of-memory", "Memory leak",
              "Integer-overflow"):
        assert reports.security_severity(t) is None


def test_no_crash_and_outcomes_without_text():
    assert reports.parse("INFO: Running\nExecuted x in 0 ms\n", returncode=0).type == ""
    assert not reports.parse("", returncode=0).crashed
    assert reports.parse("", timed_out=True).type == "Timeout"
    r = reports.parse("", oom=True, returncode=-9)
    assert r.type == "Out-of-memory" and r.sanitizer == "cgroup"
    assert reports.parse("", returncode=-11).type == "SEGV"
    assert reports.parse("", returncode=-6).type == "Abrt"


def test_cpp_frames_lose_their_parameters_and_std_frames_go():
    text = ("==1==ERROR: AddressSanitizer: heap-use-after-free on address 0x6 at pc 0x1 bp 0x2 sp 0x3\n"
            "WRITE of size 8 at 0x6 thread T0\n"
            "    #0 0x1 in std::vector<int, std::allocator<int> >::push_back(int const&) /usr/include/c++/12/v.h:3:1\n"
            "    #1 0x2 in ns::Parser::feed(char const*, unsigned long) /src/p.cc:40:7\n"
            "    #2 0x3 in LLVMFuzzerTestOneInput /src/fuzz.cc:9:3\n")
    r = reports.parse(text)
    assert r.state == "Heap-use-after-free WRITE 8\nns::Parser::feed\nLLVMFuzzerTestOneInput"


@pytest.mark.parametrize("name, type_, frames, sanitizer", [
    ("shim-HW", "Heap-buffer-overflow WRITE 1", ["heap_overflow_write", "LLVMFuzzerTestOneInput"], "AddressSanitizer"),
    ("shim-AB", "Abrt", ["LLVMFuzzerTestOneInput"], "AddressSanitizer"),
    ("shim-LK", "Memory leak", ["leak", "LLVMFuzzerTestOneInput"], "LeakSanitizer"),
    # ASan's soft RSS limit (the shim's stand-in for libFuzzer's -rss_limit_mb): the stack of
    # the malloc past it, as libFuzzer's memory profile names the allocating frames.
    ("shim-OM", "Out-of-memory", ["out_of_memory", "LLVMFuzzerTestOneInput"], "AddressSanitizer"),
    # The shim's own alarm (its stand-in for libFuzzer's -timeout), printed like libFuzzer's.
    ("shim-TO", "Timeout", ["hang", "LLVMFuzzerTestOneInput"], "isolate-replay"),
])
def test_reports_of_the_replay_shim_drop_its_frames(name, type_, frames, sanitizer):
    # Captured from tests/fuzz/planted.c replayed by isolate-replay.so (no libFuzzer driver):
    # the same type and frames as libFuzzer's main gives (test_captured_reports), the shim's
    # own frames (isolate_replay_main, isolate_replay_alarm) dropped like fuzzer:: ones.
    r = parse(name)
    assert r.type == type_ and [f.function for f in r.frames] == frames and r.sanitizer == sanitizer
    assert any(f.function.startswith("isolate_replay_") for f in r.stack)
    assert not any(f.function.startswith("fuzzer::") for f in r.stack)
    base = parse(name.split("-")[1])
    assert r.state == base.state and r.security == base.security
