"""Recipe text: TOML parsing, the line of every key, and ``--set`` overrides."""

from __future__ import annotations

import re
from typing import Any

from pctkit import tomlio
from pctkit.recipe.issues import RecipeError, RecipeIssue

# --------------------------------------------------------------------------- TOML lines

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in key.split("."))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each table header and key of a TOML text to its 1-based line.

    A light scan, good for the plain recipes pctkit reads (tables, dotted keys, simple
    values); multi-line strings and arrays only lose their inner lines.
    """
    locations: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    depth = 0  # bracket depth of a multi-line array or inline table value
    for number, line in enumerate(text.splitlines(), start=1):
        if depth > 0:
            depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
            continue
        if _ARRAY_HEADER.match(line):
            continue
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            locations.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = table + _split_key(key.group(1))
            locations.setdefault(path, number)
            value = line[key.end() :].split("#", 1)[0]
            depth = value.count("[") + value.count("{") - value.count("]") - value.count("}")
    return locations


def line_of(locations: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path`` or of its nearest stated ancestor."""
    for end in range(len(path), 0, -1):
        if path[:end] in locations:
            return locations[path[:end]]
    return None


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"a.b=3"`` -> ``(("a", "b"), 3)``; the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = tuple(part.strip() for part in key.strip().split("."))
    if not all(path):
        raise ValueError(f"override {text!r} has an empty key part")
    try:
        value = tomlio.loads(f"value = {raw.strip()}")["value"]
    except tomlio.TOMLDecodeError:
        value = raw.strip()  # bare words and paths: data.root=/data/voc
    return path, value


def apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any) -> list[str]:
    """Set ``data[path] = value``, creating tables on the way; returns the keys dropped.

    Setting a component section's ``type`` to another component empties the section
    first, so ``--set model.backbone.type=other`` does not keep the old component's
    parameters; the keys it had are returned, for a note.
    """
    node = data
    for index, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(
                f"cannot set {'.'.join(path)}: {'.'.join(path[: index + 1])} is a value, not a table"
            )
        node = child
    dropped: list[str] = []
    if path[-1] == "type" and node.get("type") not in (None, value):
        # A new component: the old one's parameters would not fit it.
        dropped = [key for key in node if key != "type"]
        node.clear()
    node[path[-1]] = value
    return dropped


# --------------------------------------------------------------------------- parsing


def parse_recipe_text(
    text: str,
    overrides: list[str] | None = None,
    file: str | None = None,
    notes: list[RecipeIssue] | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, ...], int], set[tuple[str, ...]]]:
    """TOML text -> (raw data with overrides applied, key lines, overridden paths).

    A ``type`` override that replaces a component drops the old component's keys; a
    note naming them is appended to ``notes`` when given."""
    try:
        raw = tomlio.loads(text)
    except tomlio.TOMLDecodeError as error:
        line = getattr(error, "lineno", None)
        column = getattr(error, "colno", None)
        message = getattr(error, "msg", str(error))
        if line is None:
            match = re.search(r"line (\d+), column (\d+)", str(error))
            if match:
                line, column = int(match.group(1)), int(match.group(2))
        raise RecipeError(
            [
                RecipeIssue(
                    path="",
                    message=f"invalid TOML: {message}",
                    line=line,
                    column=column,
                    hint="see https://toml.io for the syntax",
                )
            ],
            file,
        ) from None
    overridden: set[tuple[str, ...]] = set()
    issues: list[RecipeIssue] = []
    # `type` overrides first: choosing another component resets its section, and the
    # other overrides then set the new component's parameters, whatever their order.
    ordered = sorted(overrides or [], key=lambda text: not text.split("=", 1)[0].strip().endswith(".type"))
    for override in ordered:
        try:
            path, value = parse_override(override)
            dropped = apply_override(raw, path, value)
            overridden.add(path)
            if dropped and notes is not None:
                section = ".".join(path[:-1])
                notes.append(
                    RecipeIssue(
                        path=section,
                        message=f"--set {section}.type={value} replaces the section: "
                        f"{', '.join(dropped)} of the recipe's component no longer apply",
                        hint=f"set those the new component takes again: --set {section}.KEY=VALUE",
                        source="--set",
                    )
                )
        except ValueError as error:
            issues.append(RecipeIssue(path=override.split("=", 1)[0], message=str(error), source="--set"))
    if issues:
        raise RecipeError(issues, file)
    return raw, key_lines(text), overridden
