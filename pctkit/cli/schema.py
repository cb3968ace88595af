"""``pctkit schema``: the recipe JSON Schema, for editors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pctkit.cli.app import errors


def schema(
    out: Annotated[Path | None, typer.Option(help="Write the JSON Schema to this file.")] = None,
) -> None:
    """The recipe JSON Schema (plugins' parameters included), for editor completion."""
    from pctkit.recipe.json_schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    from pctkit.artifacts.io import atomic_write_text

    atomic_write_text(out, text)
    errors.print(f"wrote {escape(str(out))}")
