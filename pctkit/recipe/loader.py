"""Reading recipes: TOML text -> overrides -> validated :class:`Recipe`, or every error.

Errors are for people: each names the recipe path (``model.backbone.output_stride``),
the TOML line where it can be found, what is wrong, and what would be right.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pctkit import registry
from pctkit.recipe.issues import RecipeError, RecipeIssue
from pctkit.recipe.migrate import migrate
from pctkit.recipe.schema import RETRAIN_INHERITS, Recipe, with_retrain_defaults
from pctkit.recipe.slots import component_slots, recipe_model, slot_at, with_default_types
from pctkit.recipe.text import line_of, parse_recipe_text


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
        if typing.get_args(member):  # an optional slot: the union inside ``X | None``
            found = _section_type(member, raw)
            if found is not None:
                return found
            continue
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
    return slot_at(path)


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
        elif kind != "toml_type" and "input" in item and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"  # toml_type messages quote it
        key = (".".join(loc), message)
        if key in seen:
            continue
        seen.add(key)
        issues.append(RecipeIssue(path=".".join(loc), message=message, hint=hint))
    return issues


# --------------------------------------------------------------------------- loading


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
    if len(path) < 2 or path[0] != "retrain" or path[1] not in RETRAIN_INHERITS:
        return False
    if _exists(raw, path):
        return False  # the user wrote this value in [retrain]
    # Either the whole enclosing section is copied, or the very same error is reported
    # at the top level (a value merged into a partly written retrain section).
    return not _exists(raw, path[:-1]) or (".".join(path[1:]), issue.message) in reported


def _locate(
    issues: list[RecipeIssue],
    locations: dict[tuple[str, ...], int] | None,
    overridden: set[tuple[str, ...]] | None,
) -> None:
    """Give each issue its TOML line, or mark it as coming from a ``--set`` override."""
    for issue in issues:
        path = tuple(issue.path.split(".")) if issue.path else ()
        if overridden and path and any(path[: len(o)] == o or o[: len(path)] == path for o in overridden):
            issue.source = "--set"
        elif locations is not None and issue.line is None:
            issue.line = line_of(locations, path)


def validate_recipe_data(
    raw: dict[str, Any],
    locations: dict[tuple[str, ...], int] | None = None,
    overridden: set[tuple[str, ...]] | None = None,
    file: str | None = None,
    notes: list[RecipeIssue] | None = None,
) -> Recipe:
    """Validate raw recipe data against the registry-aware schema, reporting all errors.

    Old spellings are rewritten first (:mod:`pctkit.recipe.migrate`); a note for each,
    and for each deprecated component name, is appended to ``notes`` when given.
    """
    found_notes = migrate(raw)
    with_default_types(raw)
    model = recipe_model()
    try:
        recipe = model.model_validate(raw)
    except ValidationError as error:
        # Messages look values up in the data as validated, [retrain] defaults merged in.
        found = issues_from_validation(error, model, with_retrain_defaults(raw))
        reported = {(issue.path, issue.message) for issue in found}
        issues = [issue for issue in found if not _inherited(raw, issue, reported)]
        _locate(issues, locations, overridden)
        if notes is not None:  # old spellings are worth knowing while fixing the rest
            _locate(found_notes, locations, overridden)
            notes.extend(found_notes)
        raise RecipeError(issues, file) from None
    written = {(note.path, note.message) for note in found_notes}
    for note in deprecated_names(recipe):
        # A retrain section copied from the top level repeats the top level's name.
        inherited = note.path.startswith("retrain.") and (
            note.path.removeprefix("retrain."),
            note.message,
        ) in {(n.path, n.message) for n in found_notes}
        if not inherited and (note.path, note.message) not in written:
            found_notes.append(note)
    _locate(found_notes, locations, overridden)
    if notes is not None:
        notes.extend(found_notes)
    return recipe


def deprecated_names(recipe: Recipe) -> list[RecipeIssue]:
    """A note for every component the recipe names by a deprecated alias."""
    notes: list[RecipeIssue] = []
    data = recipe.model_dump()
    for slot, kind in component_slots().items():
        for path, section in _sections_at(data, slot):
            name = section.get("type") if isinstance(section, dict) else None
            new_name = registry.aliases(kind).get(str(name)) if name is not None else None
            if new_name is not None:
                notes.append(
                    RecipeIssue(
                        path=f"{path}.type",
                        message=f"deprecated: {registry.singular(kind)} {name!r} was renamed",
                        hint=f'write type = "{new_name}"',
                    )
                )
    return notes


def _sections_at(data: Any, slot: tuple[str, ...], prefix: str = "") -> list[tuple[str, Any]]:
    """The sections of ``data`` at a slot path (``*`` matches every key of a table)."""
    if not slot:
        return [(prefix.rstrip("."), data)]
    if not isinstance(data, dict):
        return []
    keys = list(data) if slot[0] == "*" else [slot[0]] if slot[0] in data else []
    return [found for key in keys for found in _sections_at(data[key], slot[1:], f"{prefix}{key}.")]


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, notes: list[RecipeIssue] | None = None
) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the TOML file.
        overrides: ``section.key=value`` strings; values are TOML (``3``, ``true``,
            ``"text"``, ``[1, 2]``), anything that is not valid TOML is a string.
        notes: a list to append notes to (old spellings, deprecated component names).

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
    raw, locations, overridden = parse_recipe_text(text, overrides, display, notes)
    return validate_recipe_data(raw, locations, overridden, display, notes)
