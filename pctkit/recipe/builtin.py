"""The recipes that ship inside the package: found by name, described, copied out.

A built-in recipe is a TOML file in ``pctkit/recipes``; ``pctkit run NAME`` and
``pctkit validate NAME`` accept its name.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path


class UnknownRecipeError(ValueError):
    """Neither a recipe file nor a built-in recipe name."""


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped inside the package, by name."""
    folder = resources.files("pctkit") / "recipes"
    found: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = Path(str(entry))
    return dict(sorted(found.items()))


def resolve_recipe(recipe: str) -> Path:
    """A recipe path, or the file of a built-in recipe name.

    Raises:
        UnknownRecipeError: no such file, and no built-in recipe of that name.
    """
    path = Path(recipe)
    if path.exists() or path.suffix == ".toml" or "/" in recipe:
        return path
    recipes = builtin_recipes()
    if recipe in recipes:
        return recipes[recipe]
    close = difflib.get_close_matches(recipe, list(recipes), n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UnknownRecipeError(
        f"no recipe file {recipe!r} and no built-in recipe of that name.{hint} "
        f"Built-in recipes: {', '.join(recipes)}."
    )


def recipe_description(path: Path) -> str:
    """A recipe's description: the first sentence of its leading comment (directives
    such as ``#:schema`` skipped), however many lines it spans."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#:") or (not stripped and not words):
            continue  # directives, and blank lines before the comment
        text = stripped.lstrip("#").strip() if stripped.startswith("#") else None
        if not text:
            break  # the end of the first paragraph, or the first key
        words.append(text)
    text = " ".join(words)
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text
