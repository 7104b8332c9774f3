"""inspect_ai's `isolate` sandbox: `sandbox="isolate"` in any inspect eval.

Registered with inspect's `sandboxenv` decorator, and found by inspect through the
package's `inspect_ai` entry point (pyproject.toml), so no import is needed in the
eval. Needs the `inspect` extra: pip install 'isolate-sandbox[inspect]'.

    @task
    def my_task():
        return Task(dataset=..., solver=[use_tools(bash()), generate()], scorer=...,
                    sandbox="isolate")                      # the `agent` profile
        # sandbox=("isolate", "my-profile.toml")            # a profile (name or path)
        # sandbox=SandboxEnvironmentSpec("isolate", IsolateSandboxConfig(profile="agent", user="root"))

Each sample gets its own sandbox (isolate.integrations.inspect_sandbox.SampleSandbox):
its own /etc, /home, /root, /tmp, /var/tmp, root and a default user (`agent`), no
network, the profile's limits; it ends with the sample.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Literal, Union, overload

import anyio
from inspect_ai.util import (ExecResult, OutputLimitExceededError, SandboxEnvironment,
                             SandboxEnvironmentConfigType, SandboxEnvironmentLimits, sandboxenv)
from pydantic import BaseModel, Field

from isolate.integrations import inspect_sandbox
from isolate.integrations.inspect_sandbox import (DEFAULT_USER, ExecOutputTooLarge, ExecTimeout, ReadTooLarge,
                                                  SampleSandbox, SandboxError)


class IsolateSandboxConfig(BaseModel, frozen=True):
    """The config of the `isolate` sandbox (or give just a profile name or .toml path)."""

    profile: str = Field("agent", description="isolate profile (name or .toml path); its filesystem.view must be 'new'")
    overrides: tuple[str, ...] = Field((), description="profile overrides, KEY=VALUE as `isolate run --set`")
    user: str = Field(DEFAULT_USER, description="the default user of exec, read_file and write_file ('root' or a "
                                                 "name, created if the profile's /etc/passwd lacks it)")
    workdir: str | None = Field(None, description="working directory (default: the default user's home)")


def _config(config: SandboxEnvironmentConfigType | None) -> IsolateSandboxConfig:
    if config is None:
        return IsolateSandboxConfig()
    if isinstance(config, IsolateSandboxConfig):
        return config
    if isinstance(config, str):
        return IsolateSandboxConfig(profile=config)
    if isinstance(config, BaseModel):
        return IsolateSandboxConfig(**config.model_dump())
    raise SandboxError(f"isolate sandbox: config must be a profile name or path, or IsolateSandboxConfig; "
                       f"got {type(config).__name__}")


@sandboxenv(name="isolate")
class IsolateSandboxEnvironment(SandboxEnvironment):
    """A sample's isolate sandbox (see the module's documentation)."""

    _live: set = set()   # sandboxes of this process not yet cleaned up (task_cleanup ends them)

    def __init__(self, box: SampleSandbox):
        super().__init__()
        self.box = box

    # ---- life cycle ---------------------------------------------------------------------
    @classmethod
    def config_deserialize(cls, config: dict) -> BaseModel:
        return IsolateSandboxConfig(**config)

    @classmethod
    def config_files(cls) -> list[str]:
        return []

    @classmethod
    def default_concurrency(cls) -> int | None:
        return max(1, (os.cpu_count() or 1) * 2)

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None) -> None:
        # A bad profile or config fails the task here, before any sample starts.
        cfg = _config(config)
        await anyio.to_thread.run_sync(lambda: inspect_sandbox.build_profile(
            cfg.profile, root_dir=tempfile.gettempdir(), workdir=cfg.workdir or "/"))

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        cfg = _config(config)
        box = await anyio.to_thread.run_sync(lambda: SampleSandbox(
            cfg.profile, user=cfg.user, workdir=cfg.workdir, overrides=cfg.overrides))
        env = cls(box)
        cls._live.add(env)
        return {"default": env}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment], interrupted: bool) -> None:
        for env in environments.values():
            if isinstance(env, IsolateSandboxEnvironment):
                await anyio.to_thread.run_sync(env.box.close)
                cls._live.discard(env)

    @classmethod
    async def task_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None, cleanup: bool) -> None:
        # Sandboxes whose sample_cleanup did not run (an interrupted task). With
        # cleanup=False (`--no-sandbox-cleanup`) they are left for inspection; they still end
        # with this process, and `inspect sandbox cleanup isolate` removes their directories.
        if cleanup:
            for env in list(cls._live):
                await anyio.to_thread.run_sync(env.box.close)
                cls._live.discard(env)

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        # A sandbox's processes never outlive the process that made it; what can be left is
        # its host directory (all of them, or the one named by `id`).
        base = tempfile.gettempdir()
        if id:
            path = os.path.join(base, os.path.basename(id))
            paths = [path] if os.path.basename(path).startswith(inspect_sandbox.DIR_PREFIX) else []
        else:
            paths = glob.glob(os.path.join(base, inspect_sandbox.DIR_PREFIX + "*"))
        live = {env.box.root_dir for env in cls._live}
        for p in paths:
            if p not in live:
                shutil.rmtree(p, ignore_errors=True)

    # ---- commands -----------------------------------------------------------------------
    async def exec(self, cmd: list[str], input: str | bytes | None = None, cwd: str | None = None,
                   env: dict[str, str] | None = None, user: str | None = None, timeout: int | None = None,
                   timeout_retry: bool = True, concurrency: bool = True) -> ExecResult[str]:
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        limit_str = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR
        try:
            code, out, err = await anyio.to_thread.run_sync(lambda: self.box.exec(
                cmd, input=input, cwd=cwd, env=env, user=user, timeout=timeout, max_output=limit))
        except ExecTimeout:
            raise      # a TimeoutError with truncated_output, as inspect's SandboxTimeoutError
        except ExecOutputTooLarge as e:
            raise OutputLimitExceededError(limit_str, e.output) from None
        return ExecResult(success=code == 0, returncode=code, stdout=out, stderr=err)

    # ---- files --------------------------------------------------------------------------
    async def write_file(self, file: str, contents: str | bytes) -> None:
        data = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
        await anyio.to_thread.run_sync(lambda: self.box.write_file(file, data))

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> Union[str, bytes]:
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        limit_str = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR
        try:
            data = await anyio.to_thread.run_sync(lambda: self.box.read_file(file, limit))
        except ReadTooLarge:
            raise OutputLimitExceededError(limit_str, None) from None
        return data.decode("utf-8") if text else data   # newlines kept as they are (CRLF too)

    def default_polling_interval(self) -> float:
        return 0.2

