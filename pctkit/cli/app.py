"""What every command shares: the consoles, the user-error type, common options, and
reading a recipe with its notes.

Nothing here imports torch: ``pctkit --help``, ``list``, ``schema`` and ``recipes`` must
start fast. Commands import the engine inside their functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from pctkit.recipe import Recipe, RecipeError, RecipeIssue, load_recipe
from pctkit.recipe.builtin import UnknownRecipeError, resolve_recipe

console = Console(soft_wrap=True)  # messages are never broken mid-line; tables fit the width
errors = Console(stderr=True, soft_wrap=True)


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback, exit code 1."""


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe key: section.key=value (TOML value).", metavar="KEY=VALUE"
    ),
]
NetOption = Annotated[
    str | None,
    typer.Option(
        "--net",
        help="Which net of a run: retrained, hybrid, pseudo, supervised or a plugin method's "
        "(default: retrained where the run has one, else the net that labelled pseudo labels).",
    ),
]
DeviceOption = Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")]
QuietOption = Annotated[bool, typer.Option(help="No progress output; warnings are still shown.")]
LogFormat = Literal["auto", "rich", "plain"]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="'rich': progress bars; 'plain': complete timestamped lines (for log files); "
        "'auto': rich on a terminal, plain otherwise.",
    ),
]
NprocOption = Annotated[int, typer.Option(help="Launch this many workers with torchrun (DDP).")]


def recipe_path(recipe: str) -> Path:
    """A recipe path, or the file of a built-in recipe name."""
    try:
        return resolve_recipe(recipe)
    except UnknownRecipeError as error:
        raise UserError(str(error)) from None


def read_recipe(recipe: str, overrides: list[str] | None, *, show_notes: bool = True) -> tuple[Path, Recipe]:
    """Resolve, read, override and validate a recipe; its notes (old spellings,
    deprecated names) are printed once, as warnings."""
    path = recipe_path(recipe)
    notes: list[RecipeIssue] = []
    parsed = load_recipe(path, overrides or [], notes=notes)
    if show_notes:
        print_notes(notes, str(path))
    return path, parsed


def print_issues(error: RecipeError) -> None:
    """Every issue of a recipe, with its key, location and hint."""
    errors.print(f"[bold red]{len(error.issues)} problem(s)[/] in recipe [cyan]{escape(str(error.file))}[/]:")
    for issue in error.issues:
        _print_issue(issue, error.file)


def print_notes(notes: list[RecipeIssue], file: str) -> None:
    """Notes on a valid recipe (old spellings, deprecated names), as warnings."""
    for note in notes:
        errors.print("[yellow]warning[/] ", end="")
        _print_issue(note, file, indent="")


def _print_issue(issue: RecipeIssue, file: str | None, indent: str = "  ") -> None:
    where = issue.location(file)
    errors.print(
        f"{indent}[bold]{escape(issue.path or '<recipe>')}[/]: {escape(issue.message)}"
        + (f"  [dim]\\[{escape(where)}][/]" if where else ""),
        highlight=False,
        soft_wrap=True,
    )
    if issue.hint:
        errors.print(f"{indent}    [green]hint[/]: {escape(issue.hint)}", highlight=False, soft_wrap=True)


def log_format(value: str) -> LogFormat:
    """Check a ``--log-format`` value."""
    if value not in ("auto", "rich", "plain"):
        raise UserError(f"--log-format must be auto, rich or plain, got {value!r}")
    return value  # type: ignore[return-value]
