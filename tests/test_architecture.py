"""The layers of docs/architecture.md hold: each imports only the ones below it.

lint-imports checks the contract in pyproject.toml; the graph below is built here as
well, from every `import` in isolate/ and cli/ (inside functions too), so that no
import can hide from it: it must have no cycle, and no module may take another
module's private names.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("isolate", "cli")

# Imports inside functions that stay there, and why (each also carries the reason
# as a comment on its line): heavy to load, needed only on some paths.
LAZY_OK = {
    ("isolate.plan.compile", "isolate.plan.seccomp"),      # pyseccomp + the filter compiler
    ("isolate.profile.schema", "isolate.kernel.syscalls"),  # pyseccomp
    ("isolate.profile.schema", "isolate.profile.oci"),      # pyseccomp
    ("isolate.profile.cache", "isolate.profile.loader"),    # tomllib and the schema, kept out of `import isolate`
    ("isolate.launch.plans", "isolate.plan.compile"),       # the compiler (probes, views), kept out of `import isolate`
    ("isolate", "isolate.agent"),                           # agent sessions, loaded on first use of isolate.Session
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_submodule(package: str, name: str) -> bool:
    """`name` is a module of `package` (a .py file, a subpackage or a C extension)."""
    d = ROOT.joinpath(*package.split("."))
    return d.is_dir() and any(p.name.split(".")[0] == name for p in d.iterdir())


def _imports():
    """[(importer, imported module, name taken or None, inside a function?, line text)]."""
    mods = _modules()
    out = []
    for mod, path in mods.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        in_function = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(n) for n in ast.walk(node) if n is not node)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                found = []
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    if sub in mods or _is_submodule(source, a.name):
                        found.append((sub, None))  # a module, not a name taken from one
                    else:
                        found.append((source, a.name))
            else:
                continue
            for target, name in found:
                if target.split(".")[0] in PACKAGES:
                    out.append((mod, target, name, id(node) in in_function, lines[node.lineno - 1]))
    return out


def test_lint_imports_keeps_the_layers_contract():
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (pip install -e '.[test]')"
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_import_graph_has_no_cycle():
    mods = _modules()
    graph: dict[str, set] = {m: set() for m in mods}
    for importer, target, _name, _lazy, _line in _imports():
        # Importing a.b.c runs a and a.b first: those are imported too.
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            t = ".".join(parts[:i])
            if t in mods and t != importer and not importer.startswith(t + "."):
                graph[importer].add(t)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if not state.get(n):
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_no_module_takes_another_modules_private_names():
    bad = []
    for importer, target, name, _lazy, line in _imports():
        if name and name.startswith("_") and not name.startswith("__"):
            bad.append(f"{importer}: {line.strip()}")
        parts = target.split(".")
        # A private module (isolate.launch._launch) belongs to its own package.
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if importer != owner and not importer.startswith(owner + "."):
                    bad.append(f"{importer}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_no_module_reaches_into_another_modules_private_names():
    """`from . import fs` then `fs._op(...)` takes a private name as surely as an import."""
    mods = _modules()
    bad = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                aliases.update(a.asname or a.name for a in node.names
                               if f"{source}.{a.name}" in mods and not a.name.startswith("_"))
            elif isinstance(node, ast.Import):
                aliases.update(a.asname for a in node.names if a.asname and a.name in mods)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{mod}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def test_imports_inside_functions_are_only_the_heavy_ones():
    bad = []
    for importer, target, _name, lazy, line in _imports():
        if not lazy or importer.startswith("cli."):  # cli imports the library per command (--help stays fast)
            continue
        if (importer, target) not in LAZY_OK or "#" not in line:
            bad.append(f"{importer}: {line.strip()}")
    assert not bad, "imports inside functions (say why on the line, and list them in LAZY_OK):\n" + "\n".join(bad)


def test_import_isolate_loads_neither_the_schema_nor_the_compiler():
    code = ("import sys, isolate; heavy = [m for m in ('pyseccomp', 'tomllib', 'isolate.profile.schema', "
            "'isolate.plan.seccomp', 'isolate.plan.compile', 'isolate.kernel.features', 'isolate.doctor') "
            "if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_mount_op_codes_agree_with_the_c_launch_child():
    from isolate.launch import _launch
    from isolate.plan import fs

    assert {name: getattr(_launch, name) for name in fs.OP_NAMES.values()} == \
        {name: code for code, name in fs.OP_NAMES.items()}
    assert (fs.BIND_READONLY, fs.BIND_OPTIONAL, fs.BIND_DEV) == \
        (_launch.BIND_READONLY, _launch.BIND_OPTIONAL, _launch.BIND_DEV)
