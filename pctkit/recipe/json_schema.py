"""The recipe JSON Schema, for editors (Taplo / Even Better TOML) and documentation."""

from __future__ import annotations

from typing import Any

from pctkit.recipe.schema import recipe_model

SCHEMA_ID = "https://pctkit.dev/schema/recipe.json"


def recipe_json_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, with every registered component's parameters."""
    schema = recipe_model().model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
