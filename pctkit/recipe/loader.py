"""Reading recipes: TOML text -> overrides -> validated :class:`Recipe`, or every error.

Errors are for people: each names the recipe path (``model.backbone.output_stride``),
the TOML line where it can be found, what is wrong, and what would be right.
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pctkit import registry
from pctkit.recipe.schema import COMPONENT_SECTIONS, Recipe, recipe_model, with_retrain_defaults

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class RecipeIssue:
    """One mistake in a recipe."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    source: str = "recipe"
    """``"recipe"`` (the file), ``"--set"`` (an override) or ``"check"`` (a build check)."""

    def location(self, file: str | None = None) -> str:
        """``file:line`` or ``--set`` or empty, for messages."""
        if self.source == "--set":
            return "--set"
        if file and self.line is not None:
            return f"{file}:{self.line}" + (f":{self.column}" if self.column else "")
        return file or ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (``pctkit validate --json``)."""
        return {
            "path": self.path,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "hint": self.hint,
            "source": self.source,
        }


@dataclass
class RecipeError(Exception):
    """A recipe that cannot be used; holds every issue found, not just the first."""

    issues: list[RecipeIssue]
    file: str | None = None
    checked: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{len(self.issues)} problem(s) in recipe {self.file or '<text>'}:"]
        for issue in self.issues:
            where = issue.location(self.file)
            text = f"  {issue.path or '<recipe>'}: {issue.message}"
            if where:
                text += f"  [{where}]"
            if issue.hint:
                text += f"\n      hint: {issue.hint}"
            lines.append(text)
        return "\n".join(lines)


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
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # bare words and paths: data.root=/data/voc
    return path, value


def apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``data[path] = value``, creating tables on the way.

    Setting a component section's ``type`` to another component empties the section
    first, so ``--set model.backbone.type=other`` does not keep the old component's
    parameters.
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
    if path[-1] == "type" and node.get("type") not in (None, value):
        # A new component: the old one's parameters would not fit it.
        node.clear()
    node[path[-1]] = value


# --------------------------------------------------------------------------- errors


def _fields_at(model: type[BaseModel], raw: Any, loc: tuple[str, ...]) -> list[str] | None:
    """The keys allowed in the section at ``loc`` (given the raw data), if known."""
    current: Any = model
    node = raw
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return None
        current = _section_type(fields[part].annotation, node.get(part) if isinstance(node, dict) else None)
        node = node.get(part) if isinstance(node, dict) else None
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields is not None else None


def _section_type(annotation: Any, raw: Any) -> Any:
    """The model class for a field: itself, or the union member that ``raw['type']`` picks."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _section_type(args[0], raw)
    wanted = raw.get("type") if isinstance(raw, dict) else None
    for member in args:
        if isinstance(member, type) and issubclass(member, BaseModel):
            type_field = member.model_fields.get("type")
            if type_field is not None and typing.get_args(type_field.annotation) == (wanted,):
                return member
    return None


def _clean_loc(loc: tuple[int | str, ...], raw: Any) -> tuple[str, ...]:
    """Drop the union-member tags pydantic puts in error locations."""
    cleaned: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the discriminator tag of a component section
        if isinstance(part, str) and "[" in part and part.endswith("]"):
            continue  # a union member named like 'function-after[...]'
        cleaned.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(cleaned)


def _component_kind(path: tuple[str, ...]) -> str | None:
    return COMPONENT_SECTIONS.get(path)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _unknown_type_issue(path: tuple[str, ...], kind: str, name: Any) -> tuple[str, str | None]:
    """Message and hint for a ``type`` that names no usable component."""
    if not isinstance(name, str):
        return f"'type' must be a string naming {_article(registry.singular(kind))}", None
    try:
        registry.get(kind, name)
    except registry.BrokenComponentError as error:
        return f"{registry.singular(kind)} {name!r} cannot be used: {error}", (
            "fix or reinstall the plugin package, or choose another component"
        )
    except registry.UnknownComponentError as error:
        hint = None
        if error.suggestions:
            hint = f"did you mean {' or '.join(repr(s) for s in error.suggestions)}?"
        available = ", ".join(error.available) or "none"
        return f"unknown {registry.singular(kind)} {name!r} (available: {available})", hint
    return f"{registry.singular(kind)} {name!r} is not usable here", None


def issues_from_validation(
    error: ValidationError, model: type[BaseModel], raw: dict[str, Any]
) -> list[RecipeIssue]:
    """Turn pydantic's errors into :class:`RecipeIssue` (path, message, hint)."""
    issues: list[RecipeIssue] = []
    seen: set[tuple[str, str]] = set()
    for item in error.errors(include_url=False):
        loc = _clean_loc(tuple(item["loc"]), raw)
        kind = item["type"]
        message = item["msg"]
        hint: str | None = None
        if kind in ("union_tag_invalid", "union_tag_not_found") or (
            loc and loc[-1] == "type" and _component_kind(loc[:-1]) and kind == "literal_error"
        ):
            section = loc if kind.startswith("union_tag") else loc[:-1]
            component_kind = _component_kind(section)
            node: Any = raw
            for part in section:
                node = node.get(part) if isinstance(node, dict) else None
            if kind == "union_tag_not_found" and component_kind:
                message = f"missing 'type': name {_article(registry.singular(component_kind))}"
                hint = "available: " + ", ".join(registry.names(component_kind))
                loc = (*section, "type")
            elif component_kind:
                message, hint = _unknown_type_issue(
                    section, component_kind, node.get("type") if isinstance(node, dict) else None
                )
                loc = (*section, "type")
        elif kind == "extra_forbidden":
            allowed = _fields_at(model, raw, loc[:-1]) or []
            message = f"unknown key {loc[-1]!r}"
            close = difflib.get_close_matches(loc[-1], allowed, n=3, cutoff=0.6)
            if close:
                hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
            elif allowed:
                hint = "allowed keys: " + ", ".join(allowed)
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error" and "expected" in (item.get("ctx") or {}):
            hint = f"allowed values: {item['ctx']['expected']}"
        elif "input" in item and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"
        key = (".".join(loc), message)
        if key in seen:
            continue
        seen.add(key)
        issues.append(RecipeIssue(path=".".join(loc), message=message, hint=hint))
    return issues


# --------------------------------------------------------------------------- loading


def parse_recipe_text(
    text: str, overrides: list[str] | None = None, file: str | None = None
) -> tuple[dict[str, Any], dict[tuple[str, ...], int], set[tuple[str, ...]]]:
    """TOML text -> (raw data with overrides applied, key lines, overridden paths)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
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
            apply_override(raw, path, value)
            overridden.add(path)
        except ValueError as error:
            issues.append(RecipeIssue(path=override.split("=", 1)[0], message=str(error), source="--set"))
    if issues:
        raise RecipeError(issues, file)
    return raw, key_lines(text), overridden


def _exists(raw: Any, path: tuple[str, ...]) -> bool:
    node = raw
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _inherited(raw: dict[str, Any], issue: RecipeIssue, reported: set[tuple[str, str]]) -> bool:
    """Whether an error lies in a retrain section copied from the top level: the same
    mistake is then reported once, where the user wrote it."""
    path = tuple(issue.path.split("."))
    if len(path) < 2 or path[0] != "retrain" or path[1] not in ("model", "optimizer", "scheduler"):
        return False
    if _exists(raw, path):
        return False  # the user wrote this value in [retrain]
    # Either the whole enclosing section is copied, or the very same error is reported
    # at the top level (a value merged into a partly written retrain section).
    return not _exists(raw, path[:-1]) or (".".join(path[1:]), issue.message) in reported


def validate_recipe_data(
    raw: dict[str, Any],
    locations: dict[tuple[str, ...], int] | None = None,
    overridden: set[tuple[str, ...]] | None = None,
    file: str | None = None,
) -> Recipe:
    """Validate raw recipe data against the registry-aware schema, reporting all errors."""
    model = recipe_model()
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        # Messages look values up in the data as validated, [retrain] defaults merged in.
        found = issues_from_validation(error, model, with_retrain_defaults(raw))
        reported = {(issue.path, issue.message) for issue in found}
        issues = [issue for issue in found if not _inherited(raw, issue, reported)]
        for issue in issues:
            path = tuple(issue.path.split(".")) if issue.path else ()
            if overridden and any(path[: len(o)] == o for o in overridden):
                issue.source = "--set"
            elif locations is not None:
                issue.line = line_of(locations, path)
        raise RecipeError(issues, file) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the TOML file.
        overrides: ``section.key=value`` strings; values are TOML (``3``, ``true``,
            ``"text"``, ``[1, 2]``), anything that is not valid TOML is a string.

    Raises:
        RecipeError: with every issue found (paths, lines, hints).
    """
    file = Path(path)
    display = str(path)
    if not file.is_file():
        raise RecipeError(
            [
                RecipeIssue(
                    path="",
                    message=f"recipe file not found: {file}",
                    hint="check the path, or run `pctkit recipes` for built-in recipes",
                )
            ],
            display,
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError([RecipeIssue(path="", message=f"cannot read recipe: {error}")], display) from None
    raw, locations, overridden = parse_recipe_text(text, overrides, display)
    return validate_recipe_data(raw, locations, overridden, display)
