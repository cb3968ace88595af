"""What a run was made with: pctkit, torch and timm versions, and the package and
version of every component the recipe names (plugins included), kept in the run
directory's ``environment.json`` so that a result can be traced to its code."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import TYPE_CHECKING, Any

from pctkit import registry
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.recipe import Recipe
from pctkit.recipe.slots import slot_at

if TYPE_CHECKING:
    from pctkit.engine.reporting import Reporter


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(recipe: Recipe) -> dict[str, Any]:
    """The versions of the run's software and of each component's package."""
    components: dict[str, dict[str, Any]] = {}

    def visit(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        kind = slot_at(path) if "type" in node else None
        if kind is not None:
            try:
                origin = registry.get(kind, str(node["type"])).origin
            except registry.RegistryError:
                origin = "<unknown>"
            components[".".join(path)] = {
                "type": node["type"],
                "package": origin,
                "version": _version(origin),
            }
        for key, value in node.items():
            visit(value, (*path, key))

    visit(recipe.model_dump(mode="json"), ())
    return {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("pctkit", "torch", "torchvision", "timm")},
        "components": components,
    }


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed between two :func:`environment` records, one line each."""
    lines = []
    for name, version in current.get("packages", {}).items():
        before = recorded.get("packages", {}).get(name)
        if before != version:
            lines.append(f"{name} {before} -> {version}")
    for path, now in current.get("components", {}).items():
        before = recorded.get("components", {}).get(path, {})
        if (before.get("package"), before.get("version")) != (now["package"], now["version"]):
            lines.append(
                f"{path} ({now['type']}): {before.get('package')} {before.get('version')} -> "
                f"{now['package']} {now['version']}"
            )
    return lines


def record_environment(directory: RunDirectory, recipe: Recipe, reporter: Reporter) -> None:
    """Write what the run is made with; on resume, say what changed since it started."""
    current = environment(recipe)
    recorded = directory.read_environment()
    if recorded is None:
        record = directory.path / RunDirectory.ENVIRONMENT
        if record.exists():
            reporter.warning(f"{record} is damaged: writing it again with this session's software")
        directory.write_environment(current)
        return
    changed = differences(recorded, current)
    if changed:
        reporter.warning(
            "resuming with other software than the run started with: "
            + "; ".join(changed)
            + f" (the start's is kept in {directory.path / RunDirectory.ENVIRONMENT})"
        )
