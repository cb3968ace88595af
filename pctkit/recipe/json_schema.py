"""The recipe JSON Schema, for editors (Taplo / Even Better TOML) and documentation.

Recipes point at it with a relative path on their first line
(``#:schema ../schema/recipe.schema.json``), so editors load it offline.
"""

from __future__ import annotations

from typing import Any

from pctkit.recipe.slots import recipe_model

SCHEMA_FILE = "recipe.schema.json"
"""The schema's file name, in the repository's ``schema/`` folder and beside copied recipes."""


def recipe_json_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, with every registered component's parameters."""
    schema = recipe_model().model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
