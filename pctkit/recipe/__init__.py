"""Recipes: TOML files, validated against a schema that knows every registered component."""

from pctkit.recipe.issues import RecipeError, RecipeIssue
from pctkit.recipe.loader import load_recipe, validate_recipe_data
from pctkit.recipe.schema import ComponentSpec, Recipe
from pctkit.recipe.slots import recipe_model
from pctkit.recipe.text import parse_recipe_text
from pctkit.recipe.writer import resolved_toml

__all__ = [
    "ComponentSpec",
    "Recipe",
    "RecipeError",
    "RecipeIssue",
    "load_recipe",
    "parse_recipe_text",
    "recipe_model",
    "resolved_toml",
    "validate_recipe_data",
]
