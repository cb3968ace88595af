"""One registry for every kind of component, built-in and plugin alike.

A component is a plain factory (function or class) registered under ``(kind, name)``.
Built-in components and third-party ones reach the registry the same way: through
Python entry points in the groups ``pctkit.<kind>`` (``pctkit.backbones``,
``pctkit.heads``, ...). The entry point's name is the component name and its object is
the factory. Entry points are read from package metadata at first use; a factory's
module is imported only when the component is needed, and a plugin that fails to import
is recorded and reported, never fatal for the others.

Code can also register directly, with :func:`register`, which is what tests and
notebooks do.

Names
-----
Names are lower case with optional ``.``-separated version parts (``mynet.v2``). A
plugin that takes a name already in use is reported and ignored; an entry point named
``override:<name>`` replaces the component on purpose. An entry point named
``deprecated:<old>`` with the same object as another entry point of its package keeps
``<old>`` working as an alias that warns.

A factory's typed keyword arguments are its recipe parameters (see
:mod:`pctkit.signatures`).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pctkit.component_info import (
    BrokenComponentError,
    Component,
    DeprecatedNameWarning,
    PluginProblem,
    RegistryError,
    UnknownComponentError,
    docstring_parts,
    parameters_model,
    singular,
)

__all__ = ["KINDS", "BrokenComponentError", "Component", "DeprecatedNameWarning", "PluginProblem"]
__all__ += ["RegistryError", "UnknownComponentError", "aliases", "deprecate", "get", "list_components"]
__all__ += ["names", "problems", "register", "reset", "singular", "unregister"]

KINDS: tuple[str, ...] = (
    *("methods", "backbones", "heads", "losses", "datasets"),
    *("augmentations", "optimizers", "schedulers", "postprocess"),
)
"""Every kind of component, also the suffix of its entry-point group."""

BUILTIN_DISTRIBUTION = "pctkit"
ENTRY_POINT_PREFIX = "pctkit."
OVERRIDE_PREFIX = "override:"
"""An entry point named ``override:<name>`` replaces a built-in on purpose."""
DEPRECATED_PREFIX = "deprecated:"
"""An entry point named ``deprecated:<old>`` whose object is also registered under a new
name (same ``module:attr``, same package) keeps ``<old>`` as a warning alias of it."""

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


@dataclass
class _Pending:
    """An entry point read from metadata whose module is not imported yet."""

    entry_point: importlib.metadata.EntryPoint
    origin: str
    override: bool


@dataclass
class _Registry:
    components: dict[tuple[str, str], Component] = field(default_factory=dict)
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    problems: dict[tuple[str, str], PluginProblem] = field(default_factory=dict)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)
    discovered: bool = False
    builtin_only: bool = False


_REGISTRY = _Registry()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"unknown component kind {kind!r}{hint} Kinds: {', '.join(KINDS)}.")


# --------------------------------------------------------------------------- registration


def _add(
    kind: str,
    name: str,
    factory: Callable[..., Any],
    origin: str,
    *,
    override: bool,
) -> Component:
    _check_kind(kind)
    if not _NAME_PATTERN.match(name):
        raise RegistryError(
            f"invalid {singular(kind)} name {name!r}: use lower-case letters, digits and "
            "'_', with optional '.'-separated version parts (for example 'mynet.v2')"
        )
    key = (kind, name)
    existing = _REGISTRY.components.get(key)
    if existing is not None and existing.factory is not factory and not override:
        raise RegistryError(
            f"{singular(kind)} {name!r} is already registered by {existing.origin!r}; "
            f"{origin!r} cannot take the name. Pick another name, or replace it on purpose "
            f"(register(..., override=True), or an entry point named 'override:{name}')."
        )
    description, _ = docstring_parts(factory)
    if not description:
        raise BrokenComponentError(f"{singular(kind)} {name!r} has no docstring")
    component = Component(
        kind=kind,
        name=name,
        factory=factory,
        origin=origin,
        description=description,
        parameters=parameters_model(kind, name, factory),
    )
    _REGISTRY.components[key] = component
    _REGISTRY.problems.pop(key, None)
    return component


def register(
    kind: str, name: str | None = None, *, override: bool = False, origin: str = "<code>"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a factory under ``(kind, name)``; used as a decorator.

    Example::

        @register("backbones", "tiny_cnn")
        def tiny_cnn(*, width: int = 16) -> nn.Module:
            '''A tiny CNN.'''

    Args:
        kind: one of :data:`KINDS`.
        name: the component name used in recipes (``type = "..."``); defaults to the
            factory's ``__name__``.
        override: replace an existing component of that name on purpose.
        origin: where the component comes from, shown by ``pctkit list``.
    """

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        _discover()
        component_name = name or factory.__name__
        _load(kind, component_name)  # a pending entry point of that name clashes too
        _add(kind, component_name, factory, origin, override=override)
        return factory

    return decorator


def unregister(kind: str, name: str) -> None:
    """Remove a component registered in code (tests use this to clean up)."""
    _REGISTRY.components.pop((kind, name), None)


def deprecate(kind: str, old_name: str, new_name: str) -> None:
    """Keep ``old_name`` working as an alias of ``new_name``, with a warning on use."""
    _check_kind(kind)
    _REGISTRY.aliases[(kind, old_name)] = new_name


# --------------------------------------------------------------------------- discovery


def _distribution_name(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return str(dist.metadata["Name"]) if dist is not None else "<unknown>"


def _discover() -> None:
    """Read every ``pctkit.<kind>`` entry point from package metadata (no imports)."""
    if _REGISTRY.discovered:
        return
    _REGISTRY.discovered = True
    for kind in KINDS:
        group = ENTRY_POINT_PREFIX + kind
        seen: dict[str, str] = {}
        entry_points = sorted(
            importlib.metadata.entry_points(group=group),
            # built-ins first, so that a plugin's clash is the one reported
            key=lambda ep: (_distribution_name(ep) != BUILTIN_DISTRIBUTION, ep.name),
        )
        deprecations: list[importlib.metadata.EntryPoint] = []
        for entry_point in entry_points:
            origin = _distribution_name(entry_point)
            if _REGISTRY.builtin_only and origin != BUILTIN_DISTRIBUTION:
                continue
            if entry_point.name.startswith(DEPRECATED_PREFIX):
                deprecations.append(entry_point)
                continue
            override = entry_point.name.startswith(OVERRIDE_PREFIX)
            name = entry_point.name.removeprefix(OVERRIDE_PREFIX)
            if name in seen and not override:
                # The same distribution seen twice (e.g. two paths on sys.path) is harmless.
                if seen[name] != origin:
                    _REGISTRY.problems[(kind, f"{name}@{origin}")] = PluginProblem(
                        kind,
                        name,
                        origin,
                        f"name already taken by package {seen[name]!r}; the plugin's "
                        f"component is ignored (an entry point named 'override:{name}' "
                        "replaces it on purpose)",
                    )
                continue
            seen[name] = origin
            _REGISTRY.pending[(kind, name)] = _Pending(entry_point, origin, override)
        for entry_point in deprecations:
            _add_deprecation(kind, entry_point, entry_points)


def _add_deprecation(
    kind: str, entry_point: importlib.metadata.EntryPoint, group: list[importlib.metadata.EntryPoint]
) -> None:
    """Make ``deprecated:<old>`` an alias of the entry point of the same package that
    names the same object, or record why it cannot be one."""
    origin = _distribution_name(entry_point)
    old_name = entry_point.name.removeprefix(DEPRECATED_PREFIX)
    targets = sorted(
        {
            other.name.removeprefix(OVERRIDE_PREFIX)
            for other in group
            if other.value == entry_point.value
            and _distribution_name(other) == origin
            and not other.name.startswith(DEPRECATED_PREFIX)
        }
    )
    if (kind, old_name) in _REGISTRY.pending:
        error = "name already taken by a component; the alias is ignored"
    elif len(targets) != 1:
        error = (
            f"a deprecation alias must name the same object ({entry_point.value}) as exactly one "
            f"other entry point of its package, found {len(targets)}"
        )
    else:
        _REGISTRY.aliases[(kind, old_name)] = targets[0]
        return
    _REGISTRY.problems[(kind, old_name)] = PluginProblem(kind, old_name, origin, error)


def _load(kind: str, name: str) -> Component | None:
    """Import a pending entry point; record a problem instead of raising."""
    pending = _REGISTRY.pending.pop((kind, name), None)
    if pending is None:
        return _REGISTRY.components.get((kind, name))
    try:
        factory = pending.entry_point.load()
    except Exception as error:  # a plugin may raise anything on import
        _REGISTRY.problems[(kind, name)] = PluginProblem(
            kind, name, pending.origin, f"import failed: {type(error).__name__}: {error}"
        )
        return None
    try:
        return _add(kind, name, factory, pending.origin, override=pending.override)
    except RegistryError as error:
        _REGISTRY.problems[(kind, name)] = PluginProblem(kind, name, pending.origin, str(error))
        return None


def _load_all(kind: str) -> None:
    for pending_kind, name in list(_REGISTRY.pending):
        if pending_kind == kind:
            _load(kind, name)


# --------------------------------------------------------------------------- lookup


def names(kind: str) -> list[str]:
    """Every known name of a kind, usable or not (no plugin is imported)."""
    _check_kind(kind)
    _discover()
    known = {n for k, n in _REGISTRY.components if k == kind}
    known |= {n for k, n in _REGISTRY.pending if k == kind}
    return sorted(known)


def get(kind: str, name: str) -> Component:
    """The component ``name`` of ``kind``, importing its plugin if needed.

    Raises:
        UnknownComponentError: no such name (with close names).
        BrokenComponentError: the name exists but its plugin or factory is broken.
    """
    _check_kind(kind)
    _discover()
    if (kind, name) in _REGISTRY.aliases:
        new_name = _REGISTRY.aliases[(kind, name)]
        warnings.warn(
            f"{singular(kind)} {name!r} is deprecated; use {new_name!r}",
            DeprecatedNameWarning,
            stacklevel=2,
        )
        name = new_name
    component = _load(kind, name)
    if component is not None:
        return component
    problem = _REGISTRY.problems.get((kind, name))
    if problem is not None:
        raise BrokenComponentError(str(problem))
    raise UnknownComponentError(kind, name, names(kind))


def list_components(kind: str | None = None, pattern: str = "*") -> list[Component]:
    """Usable components, sorted by kind and name; imports every plugin of the kinds.

    Args:
        kind: one kind, or ``None`` for all.
        pattern: shell-style wildcard on the name (``"*resnet*"``).
    """
    kinds = [kind] if kind is not None else list(KINDS)
    found: list[Component] = []
    for each in kinds:
        _check_kind(each)
        _discover()
        _load_all(each)
        found += [
            c for (k, n), c in _REGISTRY.components.items() if k == each and fnmatch.fnmatchcase(n, pattern)
        ]
        found += _alias_entries(each, pattern)
    return sorted(found, key=lambda c: (KINDS.index(c.kind), c.name))


def _alias_entries(kind: str, pattern: str) -> list[Component]:
    """Usable deprecation aliases of a kind, as entries named by the old name (so that
    recipes using it still validate, and `pctkit list` shows it)."""
    entries: list[Component] = []
    for (alias_kind, old_name), new_name in _REGISTRY.aliases.items():
        target = _REGISTRY.components.get((kind, new_name))
        if alias_kind != kind or target is None or (kind, old_name) in _REGISTRY.components:
            continue
        if fnmatch.fnmatchcase(old_name, pattern):
            description = f"Deprecated: use {new_name!r}. {target.description}"
            entries.append(replace(target, name=old_name, description=description, replaced_by=new_name))
    return entries


def problems(kind: str | None = None) -> list[PluginProblem]:
    """Plugins and components that could not be loaded (after loading every one)."""
    kinds = [kind] if kind is not None else list(KINDS)
    for each in kinds:
        _discover()
        _load_all(each)
    return sorted(
        (p for p in _REGISTRY.problems.values() if p.kind in kinds),
        key=lambda p: (KINDS.index(p.kind), p.name),
    )


def aliases(kind: str) -> dict[str, str]:
    """Deprecated names of a kind and the names they now point to."""
    return {old: new for (k, old), new in _REGISTRY.aliases.items() if k == kind}


def reset(*, builtin_only: bool = False) -> None:
    """Forget everything and re-read entry points on next use (for tests).

    Args:
        builtin_only: read pctkit's own entry points only, ignoring installed plugins
            (the published JSON Schema and the reference docs describe pctkit alone).
    """
    global _REGISTRY
    _REGISTRY = _Registry(builtin_only=builtin_only)
