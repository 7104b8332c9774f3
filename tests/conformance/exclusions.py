"""The tests of CPython's own test_subprocess.py and test_asyncio/test_subprocess.py that
do not pass against isolate, each with its reason. The conformance test
(tests/test_conformance.py) asserts that every other test passes, on 3.11, 3.12 and
3.13, and that no entry here matches a test that passes (so the list cannot go stale).

Keys are unittest ids without the module ("Class.test_name"), fnmatch patterns; values
are keys of REASONS."""

REASONS = {
    "internals": "tests CPython's own implementation, not subprocess's behaviour: it mocks _fork_exec, "
                 "os.waitpid or _USE_VFORK, or checks that _fork_exec is None; isolate.Popen starts the child "
                 "with its own launch path (clone3 + raw syscalls) and reaps it with wait4",
    "preexec_fn": "preexec_fn is refused: the launch path never runs Python in the child (profile fields do "
                  "its usual jobs)",
    "close_fds": "passes close_fds=False, which is refused: a sandbox never inherits the caller's fds "
                 "(pass_fds= names those it keeps)",
    "popen_mock": "mocks subprocess.Popen to fail; isolate.asyncio creates isolate.Popen, which the mock "
                  "does not replace",
    "watcher": "expects a child watcher to be needed; isolate.asyncio has none (the loop watches each "
               "sandbox's pidfd)",
}

# CPython's Lib/test/test_subprocess.py (3.11, 3.12, 3.13)
SUBPROCESS = {
    "POSIXProcessTestCase.test_close_fds": "close_fds",
    "POSIXProcessTestCase.test_pass_fds": "close_fds",
    "POSIXProcessTestCase.test_pipe_cloexec": "close_fds",
    "POSIXProcessTestCase.test_pipe_cloexec_real_tools": "close_fds",
    "POSIXProcessTestCase.test_user": "close_fds",    # every user= case also runs with close_fds=False
    "POSIXProcessTestCase.test_group": "close_fds",   # every group= case also runs with close_fds=False
    "POSIXProcessTestCase.test_close_fds_after_preexec": "preexec_fn",
    "POSIXProcessTestCase.test_preexec": "preexec_fn",
    "POSIXProcessTestCase.test_preexec_exception": "preexec_fn",
    "POSIXProcessTestCase.test_preexec_errpipe_does_not_double_close_pipes": "preexec_fn",
    "POSIXProcessTestCase.test_preexec_fork_failure": "preexec_fn",
    "POSIXProcessTestCase.test_preexec_gc_module_failure": "preexec_fn",
    "POSIXProcessTestCase.test_exception_errpipe_*": "internals",
    "POSIXProcessTestCase.test_surrogates_error_message": "internals",
    "POSIXProcessTestCase.test_stopped": "internals",
    "*.test__use_vfork": "internals",
}

# CPython's Lib/test/test_asyncio/test_subprocess.py (each for every watcher class)
ASYNCIO = {
    "*WatcherTests.test_devnull_*": "close_fds",
    "*WatcherTests.test_devstdin_input": "close_fds",
    "*WatcherTests.test_empty_input": "close_fds",
    "*WatcherTests.test_stdin_not_inheritable": "close_fds",
    "*WatcherTests.test_popen_error*": "popen_mock",
    "GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher": "watcher",
}


def reason(table: dict, test_id: str) -> str | None:
    """The reason `test_id` is excluded, or None."""
    import fnmatch

    for pattern, why in table.items():
        if fnmatch.fnmatchcase(test_id, pattern):
            return why
    return None
