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


# ---- registration and an offline eval ------------------------------------------------------

def test_inspect_finds_the_provider_through_its_entry_point():
    import subprocess
    import sys
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="inspect_ai")}
    assert eps.get("isolate") == "isolate.integrations.inspect_provider"
    # A fresh interpreter that never imports isolate: inspect's registry loads it.
    code = ("from inspect_ai.util._sandbox.registry import registry_find_sandboxenv as f; "
            "c = f('isolate'); print(c.__module__, c.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["isolate.integrations.inspect_provider", "IsolateSandboxEnvironment"], r.stderr


def _mock_outputs(commands, final="done"):
    from inspect_ai.model import ModelOutput, ModelUsage

    outs = [ModelOutput.for_tool_call(model="mockllm/model", tool_name="bash", tool_arguments={"command": c})
            for c in commands]
    outs.append(ModelOutput.from_content(model="mockllm/model", content=final))
    for o in outs:   # without usage, inspect counts tokens with a tokenizer it would download
        o.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)
    return outs


def _eval(tmp_path, commands, sandbox, scorer):
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import get_model
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import bash

    task = Task(dataset=[Sample(input="Write hello to out.txt", target="hello")],
                solver=[use_tools(bash(timeout=60)), generate()], scorer=scorer(), sandbox=sandbox)
    model = get_model("mockllm/model", custom_outputs=_mock_outputs(commands))
    logs = eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none", log_format="json")
    assert len(logs) == 1
    log = logs[0]
    assert log.status == "success", log.error
    return log


def _tool_outputs(log):
    return [m.text for m in log.samples[0].messages if m.role == "tool"]


def test_an_offline_eval_runs_its_tools_in_isolate_sandboxes(tmp_path):
    from inspect_ai.scorer import CORRECT, INCORRECT, Score, accuracy, scorer
    from inspect_ai.util import sandbox

    @scorer(metrics=[accuracy()])
    def file_says_hello():
        async def score(state, target):
            text = await sandbox().read_file("out.txt")
            return Score(value=CORRECT if text.strip() == target.text else INCORRECT, answer=text)
        return score

    log = _eval(tmp_path, ["hostname; id -un; pwd; ls /home/agent", "echo hello > out.txt",
                           "(exec 3<>/dev/tcp/1.1.1.1/80) && echo online || echo offline"],
                "isolate", file_says_hello)
    outs = _tool_outputs(log)
    assert outs[0].split()[:3] == ["agent", "agent", "/home/agent"]     # inside: isolate's hostname, its user
    assert "offline" in outs[2] and "online" not in outs[2].replace("offline", "")
    assert log.samples[0].scores["file_says_hello"].value == "C"
    assert log.results.scores[0].metrics["accuracy"].value == 1.0


def test_an_eval_with_a_profile_and_a_config(tmp_path):
    from inspect_ai.scorer import Score, scorer, accuracy
    from inspect_ai.util import SandboxEnvironmentSpec

    from isolate.integrations.inspect_provider import IsolateSandboxConfig

    profile = tmp_path / "evalbox.toml"
    profile.write_text('extends = "agent"\n[identity]\nhostname = "evalbox"\n')

    @scorer(metrics=[accuracy()])
    def nothing():
        async def score(state, target):
            return Score(value=1)
        return score

    log = _eval(tmp_path, ["hostname; id -un"], ("isolate", str(profile)), nothing)
    assert _tool_outputs(log)[0].split() == ["evalbox", "agent"]
    spec = SandboxEnvironmentSpec("isolate", IsolateSandboxConfig(profile=str(profile), user="root"))
    log = _eval(tmp_path, ["hostname; id -un"], spec, nothing)
    assert _tool_outputs(log)[0].split() == ["evalbox", "root"]


def test_inspects_injected_tools_run_in_the_sandbox(tmp_path):
    """text_editor and bash_session need inspect's sandbox tools, injected into /var/tmp
    as root and run as the default user."""
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import Score, accuracy, scorer
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import bash_session, text_editor

    @scorer(metrics=[accuracy()])
    def nothing():
        async def score(state, target):
            return Score(value=1)
        return score

    call = ModelOutput.for_tool_call
    outs = [call(model="mockllm/model", tool_name="text_editor",
                 tool_arguments={"command": "create", "path": "/home/agent/t.txt", "file_text": "hi there\n"}),
            call(model="mockllm/model", tool_name="text_editor",
                 tool_arguments={"command": "view", "path": "/home/agent/t.txt"}),
            call(model="mockllm/model", tool_name="bash_session",
                 tool_arguments={"action": "type_submit", "input": "id -un; hostname; cat t.txt"}),
            ModelOutput.from_content(model="mockllm/model", content="done")]
    for o in outs:
        o.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    task = Task(dataset=[Sample(input="x")], solver=[use_tools(text_editor(), bash_session()), generate()],
                scorer=nothing(), sandbox="isolate")
    log = eval(task, model=get_model("mockllm/model", custom_outputs=outs), log_dir=str(tmp_path),
               display="none")[0]
    assert log.status == "success", log.error
    outs = _tool_outputs(log)
    assert "File created successfully" in outs[0]
    assert "hi there" in outs[1]
    assert "agent\nagent\nhi there" in outs[2].replace("\r", "")
