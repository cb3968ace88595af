"""``pctkit recipes`` (pctkit.cli.recipes, pctkit.recipe.builtin): built-in recipes
listed, copied out with their JSON Schema beside them, and accepted by name.

The non-editable install (recipes as package data of a wheel) is tested in
``test_wheel.py``; these tests run against the package in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_run import run_cli
from typer.testing import CliRunner

from pctkit.cli.app import UserError, recipe_path
from pctkit.cli.main import app
from pctkit.cli.recipes import with_schema_line
from pctkit.recipe import RecipeIssue, load_recipe
from pctkit.recipe.builtin import UnknownRecipeError, builtin_recipes, recipe_description, resolve_recipe
from pctkit.recipe.json_schema import SCHEMA_FILE, recipe_json_schema

REPO = Path(__file__).resolve().parent.parent


def invoke(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(arguments), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_every_builtin_recipe_is_listed_with_its_description() -> None:
    code, out, _ = invoke("recipes")
    assert code == 0
    recipes = builtin_recipes()
    assert "quickstart" in recipes
    for name, path in recipes.items():
        assert name in out
        description = recipe_description(path)
        assert description, f"{path.name} has no leading comment line to describe it"
        assert description.split()[0] in out


def test_description_skips_directives_and_stops_at_the_first_key(tmp_path: Path) -> None:
    described = tmp_path / "described.toml"
    described.write_text(f"#:schema {SCHEMA_FILE}\n\n# Trains a thing.\n# More detail.\n[experiment]\n")
    bare = tmp_path / "bare.toml"
    bare.write_text('[experiment]\nname = "x"\n# a comment after the first table\n')
    assert recipe_description(described) == "Trains a thing."
    assert recipe_description(bare) == ""


def test_every_builtin_recipe_points_at_the_schema_and_parses_without_notes() -> None:
    for name, path in builtin_recipes().items():
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line.startswith("#:schema "), f"{name}: first line is {first_line!r}"
        # The line points at the packaged schema, relative to the recipe (test_docs.py
        # checks that the published schema is current).
        schema = (path.parent / first_line.removeprefix("#:schema ")).resolve()
        assert schema.name == SCHEMA_FILE and schema.is_file(), name
        assert schema == (REPO / "schema" / SCHEMA_FILE).resolve()
        # Schema-level validation only: a recipe's data (VOC) need not exist here.
        notes: list[RecipeIssue] = []
        assert load_recipe(path, notes=notes).experiment.name
        assert notes == [], f"{name} uses old spellings: {[note.path for note in notes]}"


def test_recipes_folder_at_the_top_is_the_packaged_one() -> None:
    assert (REPO / "recipes").resolve() == (REPO / "pctkit" / "recipes").resolve()


def test_copy_writes_the_recipe_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "mine.toml"
    code, out, _ = invoke("recipes", "copy", "quickstart", str(target))
    assert code == 0 and "mine.toml" in out and SCHEMA_FILE in out
    original = builtin_recipes()["quickstart"].read_text(encoding="utf-8")
    copied = with_schema_line(original, SCHEMA_FILE)
    assert target.read_text(encoding="utf-8") == copied
    assert copied.splitlines()[0] == f"#:schema {SCHEMA_FILE}"
    assert copied.splitlines()[1:] == original.splitlines()[1:]
    # The schema beside it knows every installed component, so editors check it offline.
    assert json.loads((tmp_path / SCHEMA_FILE).read_text()) == recipe_json_schema()

    target.write_text("# my edits\n")
    assert run_cli(["recipes", "copy", "quickstart", str(target)], monkeypatch) == 1
    assert "--force" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "# my edits\n"

    code, _, _ = invoke("recipes", "copy", "quickstart", str(target), "--force")
    assert code == 0 and target.read_text(encoding="utf-8") == copied


def test_copy_into_a_folder_or_the_current_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    assert invoke("recipes", "copy", "quickstart", str(folder))[0] == 0
    assert (folder / "quickstart.toml").is_file()
    monkeypatch.chdir(tmp_path)
    assert invoke("recipes", "copy", "quickstart")[0] == 0
    assert (tmp_path / "quickstart.toml").is_file()


def test_copy_of_an_unknown_name_suggests_a_close_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["recipes", "copy", "quikstart", str(tmp_path / "x.toml")], monkeypatch) == 1
    assert "Did you mean quickstart" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


def test_a_builtin_name_resolves_to_the_packaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_recipe("quickstart") == builtin_recipes()["quickstart"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").write_text("")  # a file of that name in the way wins: paths come first
    assert resolve_recipe("quickstart") == Path("quickstart")
    assert resolve_recipe("elsewhere.toml") == Path("elsewhere.toml")  # a path, even if missing
    with pytest.raises(UnknownRecipeError, match="Did you mean quickstart"):
        resolve_recipe("quickstar")
    # The CLI turns it into a user error (a message, exit code 1).
    with pytest.raises(UserError, match=r"Built-in recipes: .*quickstart"):
        recipe_path("quickstar")


def test_with_schema_line_replaces_or_adds_the_directive() -> None:
    assert with_schema_line("#:schema old.json\n[a]\n", "new.json") == "#:schema new.json\n[a]\n"
    assert with_schema_line("[a]\n", "new.json") == "#:schema new.json\n[a]\n"


def test_validate_takes_a_builtin_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = invoke(
        "validate", "quickstart", "--json", "--set", "data.num_weak=4", "--set", "data.num_val=4"
    )
    assert code == 0, out
    assert '"valid": true' in out
    assert str(builtin_recipes()["quickstart"]) in out
