"""``pctkit validate``: every mistake a recipe holds, found before a job is submitted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pctkit.cli.app import SetOption, console, print_issues, print_notes, recipe_path
from pctkit.recipe import RecipeError, RecipeIssue, load_recipe


def validate(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in recipe name.")],
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    nproc: Annotated[int, typer.Option(help="Workers the job will use (batch divisibility).")] = 1,
) -> None:
    """Check a recipe before submitting a job: schema, names, data, and a build check."""
    path = recipe_path(recipe)
    notes: list[RecipeIssue] = []
    try:
        parsed = load_recipe(path, overrides or [], notes=notes)
    except RecipeError as error:
        issues = [*error.issues, *checks_beside_schema_issues(path, overrides or [], error.issues, nproc)]
        if as_json:
            _print_json(path, False, issues, notes, [])
        else:
            print_notes(notes, str(path))
            print_issues(RecipeError(issues, error.file))
        raise typer.Exit(1) from None
    from pctkit.engine.checks import check_recipe

    issues, checked = check_recipe(parsed, world_size=nproc)
    locate(issues, path, overrides or [])
    if as_json:
        _print_json(path, not issues, issues, notes, checked)
        raise typer.Exit(1 if issues else 0)
    print_notes(notes, str(path))
    if issues:
        print_issues(RecipeError(issues, str(path)))
        raise typer.Exit(1)
    console.print(f"[bold green]valid[/]: {escape(str(path))}")
    for line in checked:
        console.print(f"  [green]✓[/] {escape(line)}", highlight=False, soft_wrap=True)
    settings = parsed.cross_training
    console.print(
        f"  {parsed.method.type} for {settings.iterations} iterations ({settings.strong_batch_size} strong + "
        f"{settings.weak_batch_size} weak), retraining "
        + (f"{parsed.retrain.iterations} iterations" if parsed.retrain.enabled else "off"),
        highlight=False,
        soft_wrap=True,
    )


def checks_beside_schema_issues(
    path: Path, overrides: list[str], schema_issues: list[RecipeIssue], world_size: int
) -> list[RecipeIssue]:
    """The build and data checks' issues in the parts of a recipe the schema accepted.

    The keys the schema refused are set aside (their defaults stand in), and the checks
    run on the rest, so that one ``validate`` reports the mistakes of both kinds. Issues
    in a section that held a refused key are left out: they could come from a stand-in.
    When a refused key has no default (or the file does not parse), nothing is added.
    """
    from pctkit.recipe.loader import validate_recipe_data
    from pctkit.recipe.text import parse_recipe_text

    try:
        raw, _, _ = parse_recipe_text(path.read_text(encoding="utf-8"), overrides, str(path))
    except (OSError, RecipeError):
        return []
    set_aside: list[tuple[str, ...]] = []
    for issue in schema_issues:
        key = _remove_key(raw, tuple(issue.path.split(".")) if issue.path else ())
        if key is None:
            return []
        set_aside.append(key)
    try:
        repaired = validate_recipe_data(_with_stand_ins(raw, set_aside))
    except RecipeError:
        return []
    from pctkit.engine.checks import check_recipe

    issues, _ = check_recipe(repaired, world_size=world_size)
    sections = {key[:-1] or key for key in set_aside}
    kept = [
        issue
        for issue in issues
        if not any(tuple(issue.path.split("."))[: len(section)] == section for section in sections)
    ]
    locate(kept, path, overrides)
    return kept


def _with_stand_ins(raw: dict[str, object], keys: list[tuple[str, ...]]) -> dict[str, object]:
    """``raw`` with each removed key that has no default (``iterations``) taken from the
    quickstart recipe, a valid value of the right kind."""
    from pctkit.recipe.builtin import builtin_recipes
    from pctkit.recipe.text import parse_recipe_text

    stand_ins, _, _ = parse_recipe_text(builtin_recipes()["quickstart"].read_text(encoding="utf-8"))
    for key in keys:
        value: object = stand_ins
        for part in key:
            value = value.get(part) if isinstance(value, dict) else None
        table: object = raw
        for part in key[:-1]:
            table = table.setdefault(part, {}) if isinstance(table, dict) else None
        if value is not None and isinstance(table, dict):
            table[key[-1]] = value
    return raw


def _remove_key(raw: dict[str, object], key: tuple[str, ...]) -> tuple[str, ...] | None:
    """Delete the deepest table entry on ``key`` (a list index ends the walk); returns
    the key removed, or ``None`` when there is none."""
    parent: dict[str, object] | None = None
    node: object = raw
    walked: tuple[str, ...] = ()
    for part in key:
        if not isinstance(node, dict) or part not in node:
            break
        parent, node, walked = node, node[part], (*walked, part)
    if parent is None:
        return None
    del parent[walked[-1]]
    return walked


def _print_json(
    path: Path, valid: bool, issues: list[RecipeIssue], notes: list[RecipeIssue], checked: list[str]
) -> None:
    document = {
        "valid": valid,
        "recipe": str(path),
        "checked": checked,
        "issues": [issue.to_dict() for issue in issues],
        "notes": [note.to_dict() for note in notes],
    }
    console.print_json(json.dumps(document))


def locate(issues: list[RecipeIssue], path: Path, overrides: list[str]) -> None:
    """Give the build and data checks' issues their TOML line, or mark them as coming
    from a ``--set`` override."""
    from pctkit.recipe.text import key_lines, line_of

    locations = key_lines(path.read_text(encoding="utf-8"))
    overridden = {tuple(o.split("=", 1)[0].strip().split(".")) for o in overrides}
    for issue in issues:
        key = tuple(issue.path.split(".")) if issue.path else ()
        if any(key[: len(o)] == o or o[: len(key)] == key for o in overridden if key):
            issue.source = "--set"
        elif issue.line is None:
            issue.line = line_of(locations, key)
