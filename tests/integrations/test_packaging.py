"""Packaging of the integrations: the distribution's name, extras that carry each
integration's dependency, and `import isolate` loading none of them."""

import subprocess
import sys
from importlib.metadata import metadata, requires


def test_the_distribution_is_isolate_sandbox_and_imports_as_isolate():
    assert metadata("isolate-sandbox")["Name"] == "isolate-sandbox"
    import isolate

    assert isolate.__name__ == "isolate"


def test_integration_dependencies_come_only_with_their_extras():
    reqs = requires("isolate-sandbox")
    unconditional = [r for r in reqs if "extra ==" not in r]
    assert not any(r.startswith(("inspect", "mcp", "pytest")) for r in unconditional), unconditional
    assert any(r.startswith("inspect_ai") and 'extra == "inspect"' in r for r in reqs), reqs
    assert any(r.startswith("mcp") and 'extra == "mcp"' in r for r in reqs), reqs


def test_import_isolate_loads_no_integration():
    code = ("import sys, isolate; print([m for m in ('isolate.integrations', 'inspect_ai', 'mcp', 'pytest', "
            "'anyio', 'pydantic') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
