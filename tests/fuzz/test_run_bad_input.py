"""isolate fuzz run on bad input: a clear error, exit 2, nothing started (OUT not created)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isolate import fuzz

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE = Path(__file__).resolve().parent / "targets.c"


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def lf(tmp_path_factory):
    d = tmp_path_factory.mktemp("badbuild")
    subprocess.run(["clang", "-fsanitize=fuzzer", "-DSAFE", '-DESCAPE_PATHS="/x"', str(SOURCE), "-o",
                    str(d / "lf")], check=True)
    return str(d / "lf")


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    return str(d)


def _bad(tmp_path, *args, expect):
    out = tmp_path / "out"
    r = _cli("fuzz", "run", *args, "--out", str(out), "--time", "1")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert expect in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()  # nothing started
    return r


def test_target_not_executable(tmp_path, corpus, lf):
    t = tmp_path / "t"
    t.write_bytes(Path(lf).read_bytes())
    t.chmod(0o644)
    _bad(tmp_path, str(t), "--engine", "libfuzzer", "--corpus", corpus, expect="not executable")


def test_target_missing(tmp_path, corpus):
    _bad(tmp_path, str(tmp_path / "nope"), "--engine", "libfuzzer", "--corpus", corpus, expect="no such file")


def test_not_a_libfuzzer_target(tmp_path, corpus):
    _bad(tmp_path, "/bin/true", "--engine", "libfuzzer", "--corpus", corpus, expect="not a libFuzzer target")


def test_not_an_afl_target(tmp_path, corpus, lf):
    _bad(tmp_path, lf, "--engine", "afl", "--corpus", corpus, expect="not an AFL++ target")


def test_a_script_is_not_a_libfuzzer_target(tmp_path, corpus):
    s = tmp_path / "s.sh"
    s.write_text("#!/bin/sh\nexit 0\n")
    s.chmod(0o755)
    _bad(tmp_path, str(s), "--engine", "libfuzzer", "--corpus", corpus, expect="not an ELF binary")


def test_plain_without_the_input_placeholder(tmp_path, corpus):
    _bad(tmp_path, "/bin/cat", "--engine", "plain", "--corpus", corpus, expect="must contain @@")


def test_missing_corpus(tmp_path, lf):
    _bad(tmp_path, lf, "--engine", "libfuzzer", "--corpus", str(tmp_path / "none"), expect="--corpus")


def test_engine_not_installed(tmp_path, corpus, lf):
    assert not fuzz.detect()["honggfuzz"].found  # Debian 12 has no honggfuzz package
    _bad(tmp_path, lf, "--engine", "honggfuzz", "--corpus", corpus, expect="not installed")


def test_unknown_engine(tmp_path, corpus, lf):
    _bad(tmp_path, lf, "--engine", "radamsa", "--corpus", corpus, expect="--engine")


def test_out_not_writable(tmp_path, corpus, lf):
    # Root passes permission bits, so: OUT on a read-only file system, and OUT that is a file.
    r = _cli("fuzz", "run", lf, "--engine", "libfuzzer", "--corpus", corpus, "--out", "/proc/isolate-fuzz-out",
             "--time", "1")
    assert r.returncode == 2 and "not writable" in r.stderr, r.stderr
    assert not os.path.exists("/proc/isolate-fuzz-out")
    f = tmp_path / "file"
    f.write_text("")
    r = _cli("fuzz", "run", lf, "--engine", "libfuzzer", "--corpus", corpus, "--out", str(f), "--time", "1")
    assert r.returncode == 2 and "not a directory" in r.stderr, r.stderr


def test_bad_numbers(tmp_path, corpus, lf):
    for opt, val, msg in (("--jobs", "0", "--jobs"), ("--time", "0", "--time"), ("--timeout", "-1", "--timeout"),
                          ("--rss-limit-mb", "1", "--rss-limit-mb")):
        out = tmp_path / "out"
        r = _cli("fuzz", "run", lf, "--engine", "libfuzzer", "--corpus", corpus, "--out", str(out), opt, val)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
        assert not out.exists()


def test_library_raises_before_starting(tmp_path, lf):
    with pytest.raises(fuzz.FuzzError, match="--corpus"):
        fuzz.run_fuzz(lf, engine="libfuzzer", corpus=str(tmp_path / "none"), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
