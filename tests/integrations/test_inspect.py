"""inspect_ai's `isolate` sandbox provider: inspect's own conformance suite
(inspect_ai.util._sandbox.self_check) in full, the registry entry point, and an
offline eval (mockllm) whose tool calls run in isolate sandboxes."""

import pytest
from inspect_ai.util._sandbox.self_check import *  # noqa: F401,F403  (the conformance checks)

from isolate.integrations.inspect_provider import IsolateSandboxEnvironment

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def sandbox_env():
    envs = await IsolateSandboxEnvironment.sample_init("self_check", None, {})
    try:
        yield envs["default"]
    finally:
        await IsolateSandboxEnvironment.sample_cleanup("self_check", None, envs, False)
