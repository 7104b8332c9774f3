"""isolate.fuzz.triage end to end: tests/fuzz/planted.c built with clang
(-fsanitize=fuzzer,address,undefined), its planted bugs replayed in fresh sandboxes."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import isolate
from isolate.fuzz import reports, shim, triage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLANG = shutil.which("clang") or shutil.which("clang-14")
TIMEOUT = 5          # seconds: the hang becomes a Timeout after this
RSS_MB = 256         # the OOM input passes it within a second

INPUTS = {
    "crash-hw": b"HW", "crash-hw-long": b"HWsame-bug-longer-input", "crash-ur": b"UR", "crash-nd": b"ND",
    "crash-so": b"SO", "crash-ab": b"AB", "crash-io": b"IO", "leak-lk": b"LK", "oom-om": b"OM",
    "timeout-to": b"TO", "crash-rc-shallow": b"RCx", "crash-rc-deep": b"RC" + b"x" * 40, "crash-fl": b"FL",
}
EXPECTED = {  # input -> (type, frames, security)
    "crash-hw": ("Heap-buffer-overflow WRITE 1", ["heap_overflow_write", "LLVMFuzzerTestOneInput"], "High"),
    "crash-ur": ("Heap-use-after-free READ 4", ["use_after_free_read", "LLVMFuzzerTestOneInput"], "High"),
    "crash-nd": ("Null-dereference WRITE", ["null_write", "LLVMFuzzerTestOneInput"], None),
    "crash-so": ("Stack-overflow", ["recurse_forever"], None),
    "crash-ab": ("Abrt", ["LLVMFuzzerTestOneInput"], None),
    "crash-io": ("Integer-overflow", ["add_overflow", "LLVMFuzzerTestOneInput"], None),
    "leak-lk": ("Memory leak", ["leak", "LLVMFuzzerTestOneInput"], None),
    "oom-om": ("Out-of-memory", ["out_of_memory", "LLVMFuzzerTestOneInput"], None),
    "timeout-to": ("Timeout", ["hang", "LLVMFuzzerTestOneInput"], None),
    "crash-rc-deep": ("Heap-buffer-overflow READ 1", ["walk", "LLVMFuzzerTestOneInput"], "Medium"),
}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    assert CLANG, "clang is not installed (scripts/install.sh installs clang-14 and libclang-rt-14-dev)"
    d = tmp_path_factory.mktemp("target")
    exe = d / "planted"
    subprocess.run([CLANG, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize=object-size,null",
                    str(HERE / "planted.c"), "-o", str(exe)], check=True, timeout=300)
    return str(exe)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    for name, data in INPUTS.items():
        (d / name).write_bytes(data)
    return {name: str(d / name) for name in INPUTS}


@pytest.fixture(scope="module")
def first(target, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "OUT"
    crashes = triage.triage(target, [], list(inputs.values()), str(out), engine="libfuzzer", runs=3,
                            timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    summary = triage.write_summary(str(out), crashes, {"execs": 0, "exec_per_s": 0, "corpus_size": 0, "wall_s": 0})
    return out, crashes, summary


def by_input(crashes, path):
    [c] = [c for c in crashes if path in c["inputs"]]
    return c


def test_each_planted_bug_has_its_type_frames_and_severity(first, inputs):
    _, crashes, _ = first
    for name, (type_, frames, security) in EXPECTED.items():
        c = by_input(crashes, inputs[name])
        assert c["type"] == type_, (name, c["type"], c["state"])
        assert [f["function"] for f in c["frames"]] == frames, (name, c["frames"])
        assert c["state"] == "\n".join([type_] + frames[:3])
        assert c["security"] == security, name
        assert c["reproducible"] and c["reproduced"] == c["runs"], (name, c["reproduced"], c["runs"])
        assert c["frames"][0]["file"].endswith("planted.c") and c["frames"][0]["line"] > 0


def test_duplicates_merge_and_recursion_does_not_split(first, inputs):
    _, crashes, _ = first
    hw = by_input(crashes, inputs["crash-hw"])
    assert sorted(hw["inputs"]) == sorted([inputs["crash-hw"], inputs["crash-hw-long"]])
    assert hw["runs"] == 6 and hw["reproduced"] == 6
    rc = by_input(crashes, inputs["crash-rc-shallow"])
    assert inputs["crash-rc-deep"] in rc["inputs"]
    # One crash per planted bug: 10 reproducible states, the flaky input apart.
    assert len(crashes) == 11
    assert len({c["state_id"] for c in crashes}) == 11


def test_a_crash_only_on_the_third_call_in_one_process_is_unreproducible_not_dropped(first, inputs):
    _, crashes, _ = first
    fl = by_input(crashes, inputs["crash-fl"])
    assert fl["reproducible"] is False and fl["reproduced"] == 0 and fl["runs"] == 3
    assert fl["inputs"] == [inputs["crash-fl"]]
    # No shim replay crashed, so libFuzzer's own main replayed it again: its verdict stands.
    assert fl["replayer"] == "libfuzzer"


def test_out_holds_the_smallest_input_the_report_and_crash_json(first, inputs):
    out, crashes, _ = first
    for c in crashes:
        d = out / "crashes" / c["state_id"]
        assert sorted(p.name for p in d.iterdir()) == ["crash.json", "input", "report.txt"]
        saved = json.loads((d / "crash.json").read_text())
        assert saved["state"] == c["state"] and saved["type"] == c["type"]
        if c["reproducible"]:
            assert reports.parse((d / "report.txt").read_text()).state == c["state"]
    hw = by_input(crashes, inputs["crash-hw"])
    assert (out / "crashes" / hw["state_id"] / "input").read_bytes() == b"HW"  # the smaller of the two


def test_summary_lists_every_crash_and_the_totals(first):
    out, crashes, summary = first
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["totals"] == {"execs": 0, "exec_per_s": 0, "corpus_size": 0, "wall_s": 0}
    assert {c["state_id"] for c in on_disk["crashes"]} == {c["state_id"] for c in crashes}
    for c in on_disk["crashes"]:
        assert {"state", "type", "frames", "security", "reproducible", "reproduced", "runs", "inputs",
                "first_seen"} <= set(c)


def test_sqlite_records_and_a_rerun_recognises_known_states(first, target, inputs):
    out, crashes, _ = first
    db = sqlite3.connect(out / "crashes.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = dict(db.execute("SELECT state_id, type FROM crashes").fetchall())
    assert rows == {c["state_id"]: c["type"] for c in crashes}
    assert db.execute("SELECT count(*) FROM inputs").fetchone()[0] == len(INPUTS)
    first_seen = {c["state_id"]: c["first_seen"] for c in crashes}
    again = triage.triage(target, [], [inputs["crash-hw"], inputs["crash-ur"]], str(out), engine="libfuzzer",
                          runs=1, timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    assert all(c["known"] for c in again)
    assert all(c["first_seen"] == first_seen[c["state_id"]] for c in again)
    hw = by_input(again, inputs["crash-hw"])
    assert hw["total_runs"] == 7 and hw["total_reproduced"] == 7
    summary = triage.write_summary(str(out), again, {})
    assert summary["unique"] == 11 and summary["this_run"]["new"] == 0
    assert db.execute("SELECT runs FROM crashes WHERE state_id = ?", (hw["state_id"],)).fetchone()[0] == 7


def test_the_leak_is_found_because_ptrace_is_allowed_inside(first, inputs):
    # Under "default" (@debug denied) LeakSanitizer cannot stop the world and every
    # replay would end in "LeakSanitizer has encountered a fatal error".
    out, crashes, _ = first
    lk = by_input(crashes, inputs["leak-lk"])
    text = (out / "crashes" / lk["state_id"] / "report.txt").read_text()
    assert "detected memory leaks" in text and "fatal error" not in text


def test_the_replay_profile_is_a_sandbox(target, tmp_path):
    prof = triage.replay_profile(None, [os.path.dirname(target)], [], {}, 1024)
    assert "@debug" not in prof["seccomp"]["deny"] and "@mount" in prof["seccomp"]["deny"]
    assert prof["cgroup"]["memory_max"] == "1024M" and prof["cgroup"]["fallback"] == "fail"
    import isolate
    r = isolate.run([sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3", "-c",
                     "import os, socket; print(os.getcwd(), os.path.exists(%r), "
                     "[n for n in os.listdir('/sys/class/net')] if os.path.exists('/sys/class/net') else [], "
                     "open('/proc/self/status').read().count('NSpid'))" % str(ROOT)],
                    profile=prof, capture_output=True, cwd="/tmp")
    assert r.returncode == 0, r.stderr
    cwd, sees_checkout = r.stdout.decode().split()[:2]
    assert cwd == "/tmp" and sees_checkout == "False"


def test_minimize_shrinks_keeping_the_state(target, tmp_path):
    big = tmp_path / "crash-big"
    big.write_bytes(b"UR" + b"\xff" * 200)
    [c] = triage.triage(target, [], [str(big)], str(tmp_path / "OUT"), engine="libfuzzer", runs=1,
                        timeout=TIMEOUT, rss_limit_mb=RSS_MB, minimize=True)
    assert c["minimized"] and c["type"] == "Heap-use-after-free READ 4"
    data = (tmp_path / "OUT" / "crashes" / c["state_id"] / "input").read_bytes()
    assert data.startswith(b"UR") and len(data) < 202


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cli.main", "fuzz", "triage", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_triage_and_bad_input(target, inputs, tmp_path):
    out = tmp_path / "OUT"
    r = run_cli("--out", str(out), "--runs", "1", "--timeout", str(TIMEOUT), "--json", target, inputs["crash-hw"],
                inputs["crash-hw-long"], inputs["crash-nd"])
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert sorted(c["type"] for c in s["crashes"]) == ["Heap-buffer-overflow WRITE 1", "Null-dereference WRITE"]
    bad = tmp_path / "BAD"
    notexec = tmp_path / "notexec"
    notexec.write_text("x")
    for args, word in [((str(tmp_path / "nope"), inputs["crash-hw"]), "no such file"),
                       ((str(notexec), inputs["crash-hw"]), "not executable"),
                       ((target, str(tmp_path / "missing-input")), "no such file"),
                       (("--engine", "nosuch", target, inputs["crash-hw"]), "engine"),
                       (("--engine", "afl", "--minimize", target, inputs["crash-hw"]), "minimizer"),
                       (("--replayer", "nope", target, inputs["crash-hw"]), "replayer"),
                       (("-p", "no-such-profile", target, inputs["crash-hw"]), "no-such-profile")]:
        r = run_cli("--out", str(bad), *args)
        assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not bad.exists()  # nothing started
    # An OUT that cannot be made: its parent is a file (root may write anywhere else).
    r = run_cli("--out", str(notexec / "OUT"), target, inputs["crash-hw"])
    assert r.returncode == 2 and "not a writable directory" in r.stderr, r.stderr


# The replay shim (isolate/fuzz/_replay.c, isolate-replay.so): libFuzzer targets' inputs
# replayed without libFuzzer's driver, checked against libFuzzer's own main.

@pytest.fixture(scope="module")
def by_main(target, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out-main") / "OUT"
    return out, triage.triage(target, [], list(inputs.values()), str(out), engine="libfuzzer", runs=3,
                              timeout=TIMEOUT, rss_limit_mb=RSS_MB, replayer="libfuzzer")


def test_the_shim_gives_the_states_libfuzzers_main_gives(first, by_main, inputs):
    _, shimmed, _ = first
    _, mained = by_main
    assert len(shimmed) == len(mained) == 11
    for name in INPUTS:
        a, b = by_input(shimmed, inputs[name]), by_input(mained, inputs[name])
        assert (a["type"], a["state"], a["security"], a["reproducible"], a["reproduced"], a["runs"]) == \
            (b["type"], b["state"], b["security"], b["reproducible"], b["reproduced"], b["runs"]), name
        assert [(f["function"], f["file"]) for f in a["frames"]] == [(f["function"], f["file"]) for f in b["frames"]]
        assert a["replayer"] == ("libfuzzer" if name == "crash-fl" else "shim"), (name, a["replayer"])
        assert b["replayer"] == "libfuzzer" and "replayer='libfuzzer'" in b["replayer_note"]
        assert "replayer_note" not in a


def test_the_shim_replay_ran_without_libfuzzers_start(first, by_main):
    # From the replays' own output: the shim's line, none of libFuzzer's INFO lines, and a
    # crash stack that goes from LLVMFuzzerTestOneInput straight to the shim's main.
    out, shimmed, _ = first
    out_main, mained = by_main
    for c in shimmed:
        if not c["reproducible"]:
            continue
        text = (out / c["report"]).read_text()
        assert shim.MARKER in text and "without libFuzzer's driver" in text, c["type"]
        assert "INFO:" not in text and "Running:" not in text and "fuzzer::" not in text, c["type"]
        stack = [f.function for f in reports.parse(text).stack]
        if c["type"] != "Stack-overflow":   # its stack is cut off after ~250 frames of recursion
            assert "isolate_replay_main" in stack and "main" not in stack, (c["type"], stack)
        assert json.loads((out / "crashes" / c["state_id"] / "crash.json").read_text())["replayer"] == "shim"
    for c in mained:
        if c["reproducible"]:
            text = (out_main / c["report"]).read_text()
            assert "INFO: Seed:" in text and shim.MARKER not in text, c["type"]
    # Timeouts come from the shim's alarm, OOMs from ASan's RSS limit, leaks from LSan at exit.
    sanitizers = {c["type"]: c["sanitizer"] for c in shimmed}
    assert sanitizers["Timeout"] == "isolate-replay" and sanitizers["Memory leak"] == "LeakSanitizer"
    assert sanitizers["Out-of-memory"] == "AddressSanitizer"


PROBE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sanitizer/allocator_interface.h>
static int inits, calls, init_argc;
static const char *init_last = "-";
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    inits++;
    init_argc = *argc;
    init_last = (*argv)[*argc - 1];
    return 0;
}
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    calls++;
    if (n >= 2 && d[0] == 'P' && d[1] == 'R') {
        const char *pre = getenv("LD_PRELOAD"), *rep = getenv("ISOLATE_REPLAY");
        const char *as = getenv("ASAN_OPTIONS"), *ub = getenv("UBSAN_OPTIONS"), *ls = getenv("LSAN_OPTIONS");
        int raw = (as && strstr(as, "stack_trace_format")) || (ub && strstr(ub, "stack_trace_format")) ||
                  (ls && strstr(ls, "stack_trace_format"));
        fprintf(stderr, "PROBE inits=%d calls=%d argc=%d last=%s size=%zu allocated=%zu preload=%s replay=%s "
                "raw=%d asan_end=%s\n", inits, calls, init_argc, init_last, n, __sanitizer_get_allocated_size(d),
                pre ? pre : "-", rep ? rep : "-", raw, as && strlen(as) > 12 ? as + strlen(as) - 12 : "-");
        abort();
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe_target(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE)
    subprocess.run([CLANG, "-g", "-O1", "-fsanitize=fuzzer,address", str(d / "probe.c"), "-o", str(d / "probe")],
                   check=True, timeout=300)
    return str(d / "probe")


def _probe_line(out, crash):
    [line] = [ln for ln in (out / crash["report"]).read_text().splitlines() if ln.startswith("PROBE ")]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def test_inside_the_shim_replay_initialize_runs_once_and_the_input_is_an_exact_copy(probe_target, tmp_path):
    inp = tmp_path / "crash-probe"
    inp.write_bytes(b"PR" + b"x" * 37)
    seen = {}
    for replayer in ("auto", "libfuzzer"):
        out = tmp_path / f"OUT-{replayer}"
        [c] = triage.triage(probe_target, [], [str(inp)], str(out), engine="libfuzzer", runs=1, timeout=TIMEOUT,
                            rss_limit_mb=RSS_MB, replayer=replayer)
        assert c["type"] == "Abrt" and [f["function"] for f in c["frames"]] == ["LLVMFuzzerTestOneInput"]
        seen[replayer] = (c, _probe_line(out, c))
    c, p = seen["auto"]
    assert c["replayer"] == "shim"
    # LLVMFuzzerInitialize once, with libFuzzer's argv (the flags, then the input); one call
    # of LLVMFuzzerTestOneInput on a heap copy of exactly the input's size; the shim's
    # variables gone from the environment the target (and whatever it starts) sees.
    assert (p["inits"], p["calls"], p["argc"]) == ("1", "1", "4")
    assert p["last"].startswith(str(tmp_path / "OUT-auto" / ".triage"))
    assert p["size"] == p["allocated"] == "39"
    assert p["preload"] == "-" and p["replay"] == "-"
    # The sanitizers read shim.RAW_FRAME_OPTIONS at their start; the target sees its options
    # as they were (as under libFuzzer's main), and so does whatever it starts.
    assert p["raw"] == "0" and p["asan_end"] == f"hard_rss_limit_mb={RSS_MB + 512}"[-12:], p
    c_main, p_main = seen["libfuzzer"]
    assert c_main["replayer"] == "libfuzzer" and c_main["state"] == c["state"]
    assert (p_main["inits"], p_main["size"], p_main["allocated"]) == ("1", "39", "39")


def test_target_spec_reads_the_elf_symbol_table(target, tmp_path):
    spec = shim.target_spec(target, 7)
    nm = subprocess.run(["nm", target], capture_output=True, text=True, check=True).stdout
    [addr] = [ln.split()[0] for ln in nm.splitlines() if ln.endswith(" T LLVMFuzzerTestOneInput")]
    assert spec.ok and spec.test_one_input == int(addr, 16) and spec.initialize == 0 and spec.timeout == 7
    assert spec.env_value == f"{int(addr, 16):x}:0:7"
    # Not in the dynamic symbol table: dlsym could not find it.
    assert "LLVMFuzzerTestOneInput" not in subprocess.run(["nm", "-D", target], capture_output=True,
                                                          text=True).stdout
    for path, word in [("/etc/passwd", "not an ELF"), (sys.executable, "LLVMFuzzerTestOneInput is not"),
                       (str(tmp_path / "missing"), "cannot read")]:
        s = shim.target_spec(path, 5)
        assert not s.ok and word in s.reason, (path, s.reason)


def test_a_target_without_the_symbol_falls_back_to_libfuzzers_main(target, inputs, first, tmp_path):
    # LLVMFuzzerTestOneInput removed from the symbol table (its debug information stays, so
    # frames keep their names): the shim cannot find it; libFuzzer's main replays, same state.
    exe = tmp_path / "planted-nosym"
    subprocess.run(["objcopy", "--strip-symbol=LLVMFuzzerTestOneInput", target, str(exe)], check=True)
    assert not shim.target_spec(str(exe), 5).ok
    [c] = triage.triage(str(exe), [], [inputs["crash-hw"]], str(tmp_path / "OUT"), engine="libfuzzer", runs=1,
                        timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    assert c["replayer"] == "libfuzzer" and "LLVMFuzzerTestOneInput is not in its symbol tables" in c["replayer_note"]
    assert c["state"] == by_input(first[1], inputs["crash-hw"])["state"]
    assert "INFO: Seed:" in (tmp_path / "OUT" / c["report"]).read_text()


STATIC_TARGET = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n >= 2 && d[0] == 'A' && d[1] == 'B') abort();
    return 0;
}
int main(int argc, char **argv) {   /* a stand-in for a statically linked libFuzzer binary */
    uint8_t buf[64];
    FILE *f = fopen(argv[argc - 1], "rb");
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    printf("STATIC MAIN ran with %d args\n", argc);
    fflush(stdout);
    return LLVMFuzzerTestOneInput(buf, n);
}
"""


def test_a_static_target_falls_back_to_its_own_main(inputs, tmp_path):
    (tmp_path / "static.c").write_text(STATIC_TARGET)
    exe = tmp_path / "static-target"
    subprocess.run(["cc", "-static", "-O1", str(tmp_path / "static.c"), "-o", str(exe)], check=True, timeout=120)
    spec = shim.target_spec(str(exe), 5)
    assert not spec.ok and "statically linked" in spec.reason
    [c] = triage.triage(str(exe), [], [inputs["crash-ab"]], str(tmp_path / "OUT"), engine="libfuzzer", runs=2,
                        timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    assert c["replayer"] == "libfuzzer" and "statically linked" in c["replayer_note"]
    assert c["type"] == "Abrt" and c["reproduced"] == 2
    assert "STATIC MAIN ran with 4 args" in (tmp_path / "OUT" / c["report"]).read_text()


def test_a_shim_replay_that_did_not_run_is_done_again_by_libfuzzers_main(target, inputs, first, tmp_path,
                                                                          monkeypatch):
    # An offset outside the program's code: the shim refuses it and lets libFuzzer's main
    # run; its line missing from the output, triage replays with libFuzzer's main again.
    monkeypatch.setattr(shim, "target_spec", lambda path, timeout: shim.Spec(True, test_one_input=0x10,
                                                                             timeout=timeout))
    [c] = triage.triage(target, [], [inputs["crash-ur"]], str(tmp_path / "OUT"), engine="libfuzzer", runs=2,
                        timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    assert c["replayer"] == "libfuzzer" and c["reproduced"] == 2
    assert c["state"] == by_input(first[1], inputs["crash-ur"])["state"]
    text = (tmp_path / "OUT" / c["report"]).read_text()
    assert shim.MARKER not in text and "INFO: Seed:" in text


def test_other_engines_and_minimize_keep_their_replayer(target, tmp_path):
    # --minimize runs libFuzzer's own minimizer (-minimize_crash=1); the check of its result
    # replays through the shim.
    big = tmp_path / "crash-big"
    big.write_bytes(b"HW" + b"\xff" * 100)
    [c] = triage.triage(target, [], [str(big)], str(tmp_path / "OUT"), engine="libfuzzer", runs=1,
                        timeout=TIMEOUT, rss_limit_mb=RSS_MB, minimize=True)
    assert c["minimized"] and c["replayer"] == "shim"
    with pytest.raises(triage.TriageError, match="replayer"):
        triage.triage(target, [], [str(big)], str(tmp_path / "OUT2"), engine="libfuzzer", replayer="nope")
    assert not (tmp_path / "OUT2").exists()


def test_libfuzzer_flags_in_the_target_arguments(target, inputs, tmp_path):
    # -runs=3 makes libFuzzer's main call the target three times on the input: the planted
    # bug that crashes only on the third call reproduces, with the shim as with libFuzzer.
    got = {}
    for replayer in ("auto", "libfuzzer"):
        [c] = triage.triage(target, ["-runs=3"], [inputs["crash-fl"]], str(tmp_path / f"OUT-{replayer}"),
                            engine="libfuzzer", runs=2, timeout=TIMEOUT, rss_limit_mb=RSS_MB, replayer=replayer)
        got[replayer] = c
    assert got["auto"]["replayer"] == "shim" and got["libfuzzer"]["replayer"] == "libfuzzer"
    for c in got.values():
        assert c["type"] == "Abrt" and c["reproduced"] == 2, c
        assert [f["function"] for f in c["frames"]] == ["flaky_abort", "LLVMFuzzerTestOneInput"]
    # A flag the shim does not handle like libFuzzer (here its malloc limit): libFuzzer's main.
    [c] = triage.triage(target, ["-malloc_limit_mb=64"], [inputs["crash-hw"]], str(tmp_path / "OUT-flag"),
                        engine="libfuzzer", runs=1, timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    assert c["replayer"] == "libfuzzer" and "-malloc_limit_mb=64" in c["replayer_note"]
    assert c["type"] == "Heap-buffer-overflow WRITE 1"
    assert shim.unsupported_args(["-dict=d", "-runs=2", "-max_len=9"]) == []
    assert shim.unsupported_args(["corpus", "-jobs=4", "-close_fd_mask=3", "--x=1"]) == \
        ["corpus", "-jobs=4", "-close_fd_mask=3", "--x=1"]


# Bare frame addresses (shim.RAW_FRAME_OPTIONS) and the shim's module map: ASan's report
# skips its module-list refresh; triage locates each address with the shim's map.

def _traced_replay(target, inp, stage, bare=True):
    """One shim replay of `inp` in a replay sandbox, under strace (ptrace is allowed there:
    LeakSanitizer needs it): (the replay's own stderr, the files it opened). bare=False:
    without shim.RAW_FRAME_OPTIONS (ASan's own frames)."""
    strace = shutil.which("strace")
    assert strace, "strace is not installed (apt-get install strace)"
    stage.mkdir()
    shim_copy = stage / "isolate-replay.so"
    shutil.copy(shim.PATH, shim_copy)
    spec = shim.target_spec(target, TIMEOUT)
    env = triage.sanitizer_env(None)
    prof = triage.replay_profile(None, [os.path.dirname(target), os.path.dirname(inp), str(stage)], [], env,
                                 RSS_MB + triage.CGROUP_OVERHEAD_MB)
    box_env = triage.shim_environment(dict(env, PATH="/usr/bin:/bin"), str(shim_copy), spec, RSS_MB)
    if not bare:
        box_env = {k: v.replace(":" + shim.RAW_FRAME_OPTIONS, "") for k, v in box_env.items()}
    # strace gets neither the preload nor ISOLATE_REPLAY; the target does (-E).
    pre, rep = box_env.pop("LD_PRELOAD"), box_env.pop(shim.ENV_NAME)
    script = (f"{strace} -f -qq -e trace=open,openat -o /tmp/trace -E LD_PRELOAD={pre} -E {shim.ENV_NAME}={rep} "
              f"{target} -timeout={TIMEOUT} {inp}; cat /tmp/trace >&2")
    r = isolate.run(["/bin/sh", "-c", script], profile=prof, env=box_env, capture_output=True, cwd="/tmp",
                    timeout=60)
    lines = r.stderr.decode().splitlines()
    opened = [ln for ln in lines if ln.split(" ", 1)[0].isdigit() and " open" in ln]
    report = "\n".join(ln for ln in lines if ln not in opened) + "\n"
    return report, opened


def test_inside_a_shim_replay_asan_prints_bare_frames_and_does_not_look_up_modules(target, inputs, first,
                                                                                  tmp_path):
    text, opened = _traced_replay(target, inputs["crash-hw"], tmp_path / "bare")
    lines = text.splitlines()
    frames = [ln for ln in lines if ln.lstrip().startswith("#")]
    assert frames and all(len(ln.split()) == 2 for ln in frames), frames   # "#N 0xPC" only
    assert "SUMMARY: AddressSanitizer" not in text
    [err] = [i for i, ln in enumerate(lines) if "ERROR: AddressSanitizer" in ln]
    maps = [i for i, ln in enumerate(lines) if ln.startswith(shim.MODULE_LINE)]
    assert min(maps) < err < max(maps), maps   # the map before the input runs, and after the report
    assert any(ln.endswith(" " + target) for ln in lines if ln.startswith(shim.MODULE_LINE))
    # The same replay with ASan's own frames reads /proc/self/maps again for its report.
    text_asan, opened_asan = _traced_replay(target, inputs["crash-hw"], tmp_path / "asan", bare=False)
    reads = sum("/proc/self/maps" in ln for ln in opened)
    reads_asan = sum("/proc/self/maps" in ln for ln in opened_asan)
    assert reads > 0 and reads + 2 <= reads_asan, (reads, reads_asan)
    assert "SUMMARY: AddressSanitizer: heap-buffer-overflow" in text_asan
    # Located with the shim's map, the frames are ASan's own (module+offset): symbolized, the same.
    sym = triage.Symbolizer(triage.symbolizer(), triage.replay_profile(
        None, [os.path.dirname(target)], [], {}, RSS_MB + triage.CGROUP_OVERHEAD_MB))
    try:
        ours, theirs = sym.symbolize(text), sym.symbolize(text_asan)
    finally:
        sym.close()
    assert shim.MODULE_LINE not in ours
    a, b = reports.parse(ours), reports.parse(theirs)
    assert a.type == b.type == "Heap-buffer-overflow WRITE 1"
    assert [(f.function, f.file, f.line) for f in a.stack] == [(f.function, f.file, f.line) for f in b.stack]
    assert a.state == b.state == by_input(first[1], inputs["crash-hw"])["state"]


DLOPEN_LIB = r"""
#include <stdlib.h>
volatile int plugin_sink;
__attribute__((noinline)) void plugin_overflow(int n) {
    char *p = malloc(8);
    p[8 + n] = 1;
    plugin_sink = p[0];
    free(p);
}
"""
DLOPEN_TARGET = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (n >= 2 && d[0] == 'D' && d[1] == 'L') {   /* loaded only now: not in the shim's first map */
        void *h = dlopen(getenv("PLUGIN") ? getenv("PLUGIN") : PLUGIN, RTLD_NOW);
        if (!h) abort();
        ((void (*)(int))dlsym(h, "plugin_overflow"))(0);
    }
    return 0;
}
"""


def test_a_library_dlopened_during_the_input_is_located_by_the_shims_later_map(tmp_path):
    (tmp_path / "plugin.c").write_text(DLOPEN_LIB)
    (tmp_path / "target.c").write_text(DLOPEN_TARGET)
    lib, exe = tmp_path / "libplugin.so", tmp_path / "dltarget"
    subprocess.run([CLANG, "-g", "-O1", "-fsanitize=address", "-shared", "-fPIC", str(tmp_path / "plugin.c"), "-o",
                    str(lib)], check=True, timeout=300)
    subprocess.run([CLANG, "-g", "-O1", "-fsanitize=fuzzer,address", f'-DPLUGIN="{lib}"', str(tmp_path / "target.c"),
                    "-o", str(exe), "-ldl"], check=True, timeout=300)
    inp = tmp_path / "crash-dl"
    inp.write_bytes(b"DL")
    got = {}
    for replayer in ("auto", "libfuzzer"):
        out = tmp_path / f"OUT-{replayer}"
        [c] = triage.triage(str(exe), [], [str(inp)], str(out), engine="libfuzzer", runs=1, timeout=TIMEOUT,
                            rss_limit_mb=RSS_MB, replayer=replayer)
        got[replayer] = c
        text = (out / c["report"]).read_text()
        assert f"in plugin_overflow {tmp_path}/plugin.c:6" in text, text
    assert got["auto"]["replayer"] == "shim" and got["libfuzzer"]["replayer"] == "libfuzzer"
    for c in got.values():
        assert c["type"] == "Heap-buffer-overflow WRITE 1"
        assert [f["function"] for f in c["frames"]] == ["plugin_overflow", "LLVMFuzzerTestOneInput"]
    assert got["auto"]["state"] == got["libfuzzer"]["state"]


def test_module_maps_the_last_one_wins_and_an_address_outside_them_is_unknown():
    text = "\n".join([
        shim.MARKER + "x (2 bytes) without libFuzzer's driver",
        shim.MODULE_LINE + "0x1000 0x1000-0x2000 0x3000-0x3800 /opt/a b/prog",
        shim.MODULE_LINE + "0x7000 0x7000-0x7100 /lib/libc.so.6",
        "==1==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000",
        "    #0 0x1234", "    #1 0x7004", "    #2 0x9000", "    #3 0x9008",
        "",
        shim.MODULE_LINE + "0x1000 0x1000-0x2000 0x3000-0x3800 /opt/a b/prog",
        shim.MODULE_LINE + "0x9000 0x9000-0x9100 /lib/plugin.so",
    ])
    maps = triage.module_maps(text.splitlines())
    assert len(maps) == 2 and maps[0][-1] == (0x9000, 0x9100, 0x9000, "/lib/plugin.so")
    assert triage.locate(maps, 0x3004) == ("/opt/a b/prog", 0x2004)
    assert triage.locate(maps, 0x7004) == ("/lib/libc.so.6", 4)      # only in the earlier map
    assert triage.locate(maps, 0x9008) == ("/lib/plugin.so", 8)
    assert triage.locate(maps, 0x5000) is None
    # A Symbolizer that knows no function: the frames come out as ASan prints unsymbolized ones.
    sym = triage.Symbolizer.__new__(triage.Symbolizer)
    sym.lookup = lambda module, offset: []
    out = sym.symbolize(text).splitlines()
    assert not any(ln.startswith(shim.MODULE_LINE) for ln in out)
    assert [ln for ln in out if "#" in ln] == [
        "    #0 0x1234  (/opt/a b/prog+0x234)", "    #1 0x7004  (/lib/libc.so.6+0x4)",
        "    #2 0x9000  (/lib/plugin.so+0x0)", "    #3 0x9008  (/lib/plugin.so+0x8)"]
    text2 = text.replace("    #2 0x9000", "    #2 0x5000")
    assert "    #2 0x5000  (<unknown module>)" in sym.symbolize(text2).splitlines()


def test_pooled_replays_give_the_cold_replays_states(target, inputs, first, tmp_path, monkeypatch):
    # triage.WARM_REPLAYS = True: each replay the one task of a WarmPool sandbox instead of a
    # cold isolate.run (the default), the same fresh sandbox of the same profile: the same
    # crashes. From the pool's own counters: every replay was served by a sandbox of it.
    assert triage.WARM_REPLAYS is False
    monkeypatch.setattr(triage, "WARM_REPLAYS", True)
    pools = []
    real = triage.WarmPool

    def pool(*args, **kwargs):
        pools.append(real(*args, **kwargs))
        return pools[-1]

    monkeypatch.setattr(triage, "WarmPool", pool)
    names = ["crash-hw", "crash-io", "leak-lk", "timeout-to", "crash-fl", "crash-so"]
    crashes = triage.triage(target, [], [inputs[n] for n in names], str(tmp_path / "OUT"), engine="libfuzzer",
                            runs=2, timeout=TIMEOUT, rss_limit_mb=RSS_MB)
    for n in names:
        a, b = by_input(crashes, inputs[n]), by_input(first[1], inputs[n])
        assert (a["type"], a["state"], a["security"], a["reproducible"], a["replayer"]) == \
            (b["type"], b["state"], b["security"], b["reproducible"], b["replayer"]), n
        assert a["reproduced"] == (2 if b["reproducible"] else 0), (n, a["reproduced"])
    [p] = pools
    # 6 inputs x 2 shim replays, and crash-fl's 2 replays again by libFuzzer's main
    assert p.stats["served_warm"] + p.stats["served_cold"] == 14, p.stats
