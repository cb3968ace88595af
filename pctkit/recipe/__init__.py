"""Recipes: TOML files, validated against a schema that knows every registered component."""

from pctkit.recipe.loader import (
    RecipeError,
    RecipeIssue,
    load_recipe,
    parse_recipe_text,
    validate_recipe_data,
)
from pctkit.recipe.schema import ComponentSpec, Recipe, recipe_model
from pctkit.recipe.toml_writer import dumps as dumps_toml

__all__ = [
    "ComponentSpec",
    "Recipe",
    "RecipeError",
    "RecipeIssue",
    "dumps_toml",
    "load_recipe",
    "parse_recipe_text",
    "recipe_model",
    "resolved_toml",
    "validate_recipe_data",
]


def resolved_toml(recipe: Recipe, header: str = "") -> str:
    """The complete recipe, every default spelled out, as TOML text."""
    return dumps_toml(recipe.model_dump(mode="json"), header=header)
