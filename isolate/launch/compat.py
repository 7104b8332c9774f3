"""subprocess's module-level API on top of isolate.Popen.

    isolate.call / check_call / check_output / getoutput / getstatusoutput

behave as subprocess's functions of the same names, with the child in a sandbox
(`profile=`, `overrides=` ... as for isolate.Popen).
"""

from __future__ import annotations

from .process import PIPE, STDOUT, CalledProcessError, Popen, run


# ---- the module-level functions -------------------------------------------------------
def call(*popenargs, timeout=None, **kwargs) -> int:
    """Run a command in a sandbox, wait for it, return its returncode (subprocess.call)."""
    with Popen(*popenargs, **kwargs) as p:
        try:
            return p.wait(timeout=timeout)
        except BaseException:
            p.kill()
            raise


def check_call(*popenargs, **kwargs) -> int:
    """call(), raising CalledProcessError on a non-zero returncode (subprocess.check_call)."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs, timeout=None, **kwargs):
    """The command's stdout; CalledProcessError on a non-zero returncode, TimeoutExpired
    on a timeout (subprocess.check_output)."""
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        # As subprocess: input=None means "no input", not "inherit stdin".
        kwargs["input"] = "" if kwargs.get("universal_newlines") or kwargs.get("text") or \
            kwargs.get("encoding") or kwargs.get("errors") else b""
    return run(*popenargs, stdout=PIPE, timeout=timeout, check=True, **kwargs).stdout


def getstatusoutput(cmd, *, encoding=None, errors=None, **kwargs) -> tuple:
    """(exitcode, output) of `cmd` run by the profile's shell (process.shell) in a
    sandbox, stderr included, one trailing newline removed (subprocess.getstatusoutput)."""
    try:
        data = check_output(cmd, shell=True, text=True, stderr=STDOUT, encoding=encoding, errors=errors, **kwargs)
        exitcode = 0
    except CalledProcessError as ex:
        data = ex.output
        exitcode = ex.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd, *, encoding=None, errors=None, **kwargs) -> str:
    """The output of getstatusoutput() (subprocess.getoutput)."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors, **kwargs)[1]
