"""What a resume may change in a run's recipe, and what it may not.

Keys declared with :data:`~pctkit.recipe.base.MAY_CHANGE_ON_RESUME` change where and how
often a run reports, not what it computes. Component parameters marked as locations
(``Annotated[str, LOCATION]``, such as the ``voc`` dataset's ``root``) say where an input
is: they may change too, and the engine checks that the inputs found there are the
run's (:mod:`pctkit.engine.data_identity`). Every other difference is refused.
"""

from __future__ import annotations

from typing import Any

from pctkit.recipe.issues import RecipeError
from pctkit.recipe.loader import validate_recipe_data
from pctkit.recipe.slots import location_keys, resume_mutable_keys


def flat_items(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if isinstance(data, dict):
        items: dict[str, Any] = {}
        for key, value in data.items():
            items.update(flat_items(value, f"{prefix}{key}."))
        return items
    return {prefix[:-1]: data}


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two recipes, except those a resume may change
    (reporting keys, and the locations of the current recipe's components)."""
    old, new = flat_items(saved), flat_items(current)
    mutable = set(resume_mutable_keys()) | set(location_keys(current))
    return [
        f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key not in mutable
    ]


def moved_locations(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The location keys whose values differ from the recipe the run started with."""
    old, new = flat_items(saved), flat_items(current)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in location_keys(current)
        if old.get(key) != new.get(key)
    ]


def with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved recipe re-validated by this pctkit, so that keys added since it was
    written compare at their defaults; as saved if it no longer validates."""
    try:
        return validate_recipe_data(saved).model_dump(mode="json")
    except RecipeError:
        return saved
