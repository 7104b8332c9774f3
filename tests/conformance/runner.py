"""Run CPython's own test_subprocess (or test_asyncio.test_subprocess) with subprocess.Popen
replaced by isolate.Popen, and asyncio's subprocess transports by isolate.asyncio's.

    python -m tests.conformance.runner subprocess|asyncio RESULT.json

Every child runs in a sandbox from `conformance_profile()`: the default profile that
keeps the caller's environment and shows the interpreter, the test package, the host's
/tmp (where the tests make their temp dirs) and the current directory. Writes
{"ran": n, "passed": [...], "failed": {id: traceback}, "skipped": {id: reason}}."""

import json
import os
import sys
import tempfile
import unittest


def conformance_profile() -> dict:
    import isolate

    base = isolate.load_profile("default").to_dict()
    fs = base["filesystem"]
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)})
    fs["ro"] = list(fs["ro"]) + [p for p in prefixes if not p.startswith(here)] + [here]
    fs["rw"] = list(fs["rw"]) + [tempfile.gettempdir(), os.getcwd()]
    fs["tmpfs"] = [t for t in fs.get("tmpfs", []) if (t if isinstance(t, str) else t.get("path")) != "/tmp"]
    return {"extends": "default", "filesystem": fs, "env": {"clear": False},
            "rlimits": {"nofile": 4096}}


def install(profile) -> None:
    import asyncio
    import subprocess
    from asyncio import unix_events

    import isolate
    from isolate.launch import asyncio as iasyncio  # start_transport (the public module re-exports the API only)

    class Popen(isolate.Popen):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("profile", profile)
            super().__init__(*args, **kwargs)

    Popen.__name__ = Popen.__qualname__ = "Popen"
    subprocess.Popen = Popen

    async def make_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs):
        kwargs.setdefault("profile", profile)
        return await iasyncio.start_transport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                              extra=extra, **kwargs)

    unix_events._UnixSelectorEventLoop._make_subprocess_transport = make_transport
    del asyncio


class Collect(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed, self.bad, self.skipped_ = [], {}, {}

    module = ""

    def _id(self, test) -> str:
        tid = test.id()
        return tid[len(self.module) + 1:] if tid.startswith(self.module + ".") else tid

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(self._id(test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.bad[self._id(test)] = self._exc_info_to_string(err, test)[-3000:]

    def addError(self, test, err):
        super().addError(test, err)
        self.bad[self._id(test)] = self._exc_info_to_string(err, test)[-3000:]

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.bad[self._id(test)] = self._exc_info_to_string(err, test)[-3000:]

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_[self._id(test)] = reason

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed.append(self._id(test))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.bad[self._id(test)] = "unexpected success"


def main() -> int:
    which, out = sys.argv[1], sys.argv[2]
    only = sys.argv[3:]
    name = {"subprocess": "test.test_subprocess", "asyncio": "test.test_asyncio.test_subprocess"}[which]
    install(conformance_profile())
    from test import support

    support.verbose = False
    loader = unittest.TestLoader()
    suite = loader.loadTestsFromNames([f"{name}.{t}" for t in only]) if only else loader.loadTestsFromName(name)
    Collect.module = name
    runner = unittest.TextTestRunner(resultclass=Collect, verbosity=0, stream=sys.stderr)
    result = runner.run(suite)
    passed = [t for t in result.passed if t not in result.bad]
    with open(out, "w") as f:
        json.dump({"python": sys.version.split()[0], "ran": result.testsRun, "passed": passed,
                   "failed": result.bad, "skipped": result.skipped_}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
