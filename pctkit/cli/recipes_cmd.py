"""``pctkit recipes``: the recipes that ship inside the package, listed and copied out.

A built-in recipe is a TOML file in ``pctkit/recipes``; ``pctkit run NAME`` and
``pctkit validate NAME`` accept its name. To change one, copy it out first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="recipes",
    help="Built-in recipes: without a command, list them with a one-line description; "
    "`pctkit recipes copy NAME` writes one out to edit.",
    invoke_without_command=True,
    no_args_is_help=False,
)
console = Console()
errors = Console(stderr=True)


def _builtin_recipes() -> dict[str, Path]:
    # Imported here, not at the top: pctkit.cli.main imports this module to register it.
    from pctkit.cli.main import builtin_recipes

    return builtin_recipes()


def recipe_description(path: Path) -> str:
    """A recipe's one-line description: its first comment line that is not a directive
    (``#:schema ...``)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            continue
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break  # the first key or table: the recipe has no leading comment
    return ""


@app.callback()
def list_recipes(ctx: typer.Context) -> None:
    """List the built-in recipes with a one-line description of each."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="built-in recipes", title_justify="left")
    table.add_column("name", style="bold cyan")
    table.add_column("description")
    for name, path in _builtin_recipes().items():
        table.add_row(name, recipe_description(path))
    console.print(table)
    console.print(
        "Run one with [bold]pctkit run NAME[/]; copy it out to edit with [bold]pctkit recipes copy NAME[/].",
        highlight=False,
    )


@app.command()
def copy(
    name: Annotated[str, typer.Argument(help="A built-in recipe name (see `pctkit recipes`).")],
    dest: Annotated[
        Path | None,
        typer.Argument(help="File or existing folder to write to (default: ./NAME.toml)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a built-in recipe out to a file, to edit and run."""
    recipes = _builtin_recipes()
    if name not in recipes:
        import difflib

        close = difflib.get_close_matches(name, list(recipes), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        errors.print(
            f"[bold red]error[/]: no built-in recipe {name!r}.{hint} Built-in recipes: {', '.join(recipes)}.",
            highlight=False,
        )
        raise typer.Exit(1)
    target = dest if dest is not None else Path(f"{name}.toml")
    if target.is_dir():
        target = target / f"{name}.toml"
    shown = escape(str(target))  # a path is text, not Rich markup
    if target.exists() and not force:
        errors.print(
            f"[bold red]error[/]: {shown} exists; pass --force to replace it, or name another file.",
            highlight=False,
        )
        raise typer.Exit(1)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(recipes[name].read_text(encoding="utf-8"), encoding="utf-8")
    console.print(f"wrote [cyan]{shown}[/]; check it with [bold]pctkit validate {shown}[/]", highlight=False)
