"""The shape of the package: imports point one way, no cycles, small modules, and the
commands that only list or describe things start without torch.

Imports are read from the source (every ``import`` statement, lazy ones inside
functions and ``TYPE_CHECKING`` blocks included), as ``shared/tools/import_graph.py``
reads them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import subprocess_environment

PACKAGE = Path(__file__).resolve().parents[1] / "pctkit"
MAX_LINES = 400

# Layers, lowest first: a module imports modules of its own layer's package or of lower
# layers, never upward. The package's __init__ re-exports load_model lazily: it is the
# public API's top, outside the layers.
LAYERS: list[tuple[str, ...]] = [
    (
        "pctkit.constants",
        "pctkit.losses",
        "pctkit.metrics",
        "pctkit.palette",
        "pctkit.tomlio",
        "pctkit.version",
    ),
    ("pctkit.component_info", "pctkit.registry"),
    ("pctkit.components", "pctkit.methods", "pctkit.artifacts", "pctkit.recipe"),
    ("pctkit.engine",),
    ("pctkit.cli", "pctkit.__main__"),
]
# Within the middle layer, who may use whom (methods build on the component contracts);
# in the other layers, modules use each other freely.
MIDDLE = 2
SIDEWAYS = {("pctkit.methods", "pctkit.components")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every pctkit module a source file imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: set[str] = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import sub` imports the submodule; `from pkg import name`, the package.
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {base}
    return {name for name in found if name in modules and name != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> tuple[int, str] | None:
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                return index, prefix
    return None


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, targets in graph().items():
        source = layer_of(module)
        if source is None:
            continue
        for target in targets:
            destination = layer_of(target)
            if destination is None:
                continue
            sideways = destination[0] == source[0] and (
                source[0] != MIDDLE or destination[1] == source[1] or (source[1], destination[1]) in SIDEWAYS
            )
            if destination[0] < source[0] or sideways:
                continue
            wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_the_layer_rules_catch_an_upward_import() -> None:
    # The check above must be able to fail: an engine module importing the CLI would.
    assert layer_of("pctkit.engine.run") == (3, "pctkit.engine")
    assert layer_of("pctkit.cli.app")[0] > layer_of("pctkit.engine.run")[0]  # type: ignore[index]
    assert ("pctkit.artifacts", "pctkit.recipe") not in SIDEWAYS


def test_every_module_has_at_most_400_lines() -> None:
    long = {
        module_name(path): count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _imported_heavy_modules(arguments: list[str]) -> list[str]:
    """The torch/timm/torchvision modules a ``pctkit`` command imports."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pctkit", *arguments],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = [
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    ]
    return [name for name in names if name.split(".")[0] in ("torch", "timm", "torchvision")]


@pytest.mark.parametrize("arguments", [["--help"], ["list"], ["schema"], ["recipes"], ["run", "--help"]])
def test_listing_commands_do_not_import_torch(arguments: list[str]) -> None:
    assert _imported_heavy_modules(arguments) == []


def test_the_import_check_sees_torch_where_it_is_imported() -> None:
    # `validate` builds networks: it must import torch, or the check above proves nothing.
    assert "torch" in _imported_heavy_modules(["validate", "quickstart", "--set", "data.num_weak=4"])
