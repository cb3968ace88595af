"""``pctkit recipes``: the recipes that ship inside the package, listed and copied out.

A copied recipe gets the recipe JSON Schema beside it (``recipe.schema.json``, with the
parameters of every installed plugin) and its ``#:schema`` line points there, so
editors complete and check it offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pctkit.cli.app import UserError, console
from pctkit.recipe.builtin import builtin_recipes, recipe_description

app = typer.Typer(
    name="recipes",
    help="Built-in recipes: without a command, list them with a one-line description; "
    "`pctkit recipes copy NAME` writes one out to edit.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
def list_recipes(ctx: typer.Context) -> None:
    """List the built-in recipes with a one-line description of each."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title="built-in recipes", title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description")
    for name, path in builtin_recipes().items():
        table.add_row(name, escape(recipe_description(path)))
    console.print(table)
    console.print(
        "Run one with [bold]pctkit run NAME[/]; copy it out to edit with [bold]pctkit recipes copy NAME[/].",
        highlight=False,
    )


def with_schema_line(text: str, schema: str) -> str:
    """Recipe text whose ``#:schema`` directive points at ``schema`` (added if absent)."""
    lines = text.splitlines()
    directive = f"#:schema {schema}"
    if lines and lines[0].startswith("#:schema"):
        lines[0] = directive
    else:
        lines.insert(0, directive)
    return "\n".join(lines) + "\n"


@app.command()
def copy(
    name: Annotated[str, typer.Argument(help="A built-in recipe name (see `pctkit recipes`).")],
    dest: Annotated[
        Path | None,
        typer.Argument(help="File or existing folder to write to (default: ./NAME.toml)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a built-in recipe out to a file to edit and run, with its JSON Schema beside it."""
    from pctkit.recipe.json_schema import SCHEMA_FILE, recipe_json_schema

    recipes = builtin_recipes()
    if name not in recipes:
        import difflib

        close = difflib.get_close_matches(name, list(recipes), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UserError(f"no built-in recipe {name!r}.{hint} Built-in recipes: {', '.join(recipes)}.")
    target = dest if dest is not None else Path(f"{name}.toml")
    if target.is_dir():
        target = target / f"{name}.toml"
    shown = escape(str(target))  # a path is text, not Rich markup
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to replace it, or name another file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = recipes[name].read_text(encoding="utf-8")
    target.write_text(with_schema_line(text, SCHEMA_FILE), encoding="utf-8")
    schema_file = target.parent / SCHEMA_FILE
    schema_file.write_text(json.dumps(recipe_json_schema(), indent=2) + "\n", encoding="utf-8")
    console.print(
        f"wrote [cyan]{shown}[/] and its schema [cyan]{escape(str(schema_file))}[/]; "
        f"check it with [bold]pctkit validate {shown}[/]",
        highlight=False,
        soft_wrap=True,
    )
