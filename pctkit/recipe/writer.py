"""A resolved recipe as TOML text: every section and key, defaults included."""

from __future__ import annotations

from pctkit import tomlio
from pctkit.recipe.schema import Recipe


def resolved_toml(recipe: Recipe, header: str = "") -> str:
    """The complete recipe, every default spelled out, as TOML text."""
    return tomlio.dumps(recipe.model_dump(mode="json"), header=header)
