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
        if as_json:
            _print_json(path, False, error.issues, notes, [])
        else:
            print_issues(error)
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
    )


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
