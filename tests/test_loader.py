"""pctkit.recipe.loader: recipes loaded, overridden and validated, with every error
reported at once (path, TOML line, hint)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import TINY_NET_TOML

from pctkit.recipe import RecipeError, RecipeIssue, load_recipe, validate_recipe_data

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"

SMALL_RECIPE = f"""\
[experiment]
name = "small"

[method]
type = "pct"

[data]
type = "digit_scenes"
canvas_size = 32

{TINY_NET_TOML}
[cross_training]
iterations = 4
strong_batch_size = 2
weak_batch_size = 2

[optimizer]
type = "adamw"
lr = 1e-3

[retrain]
iterations = 3
batch_size = 4
"""


def _write(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _line(text: str, fragment: str) -> int:
    """1-based number of the line holding ``fragment``."""
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


def _issues(path: Path, overrides: list[str] | None = None) -> dict[str, RecipeIssue]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides)
    issues = {issue.path: issue for issue in caught.value.issues}
    assert len(issues) == len(caught.value.issues), "an issue was reported twice"
    return issues


# --------------------------------------------------------------------------- loading


def test_quickstart_loads_without_notes() -> None:
    notes: list[RecipeIssue] = []
    recipe = load_recipe(QUICKSTART, notes=notes)
    assert notes == []  # written in the current spelling
    assert recipe.experiment.name == "quickstart"
    assert recipe.method.type == "pct"
    assert recipe.model.backbone.type == "timm"
    assert recipe.model.head.type == "fusion"
    assert recipe.data.parameters()["num_strong"] == 120
    # Unstated keys take their schema and component defaults.
    assert recipe.method.parameters()["p2h_weight"] == 1.0
    assert recipe.loss.segmentation.type == "class_aware_cross_entropy"
    assert recipe.experiment.skip_nonfinite is False


def test_an_absent_method_section_is_pct_with_its_defaults(tmp_path: Path) -> None:
    text = SMALL_RECIPE.replace('[method]\ntype = "pct"\n', "")
    recipe = load_recipe(_write(tmp_path, text))
    assert recipe.method.type == "pct"
    assert recipe.method.parameters()["score_power"] == 8.0


def test_retrain_sections_default_to_the_top_level(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, SMALL_RECIPE))
    assert recipe.retrain.model.model_dump() == recipe.model.model_dump()
    assert recipe.retrain.optimizer.model_dump() == recipe.optimizer.model_dump()
    assert recipe.retrain.scheduler.type == "poly"
    # A partial retrain section is merged over the top level...
    merged = load_recipe(_write(tmp_path, SMALL_RECIPE), ["retrain.model.head.channels=4"])
    assert merged.retrain.model.head.parameters()["channels"] == 4
    assert merged.retrain.model.backbone.model_dump() == merged.model.backbone.model_dump()
    assert merged.model.head.parameters()["channels"] == 8
    # ...and a section of another type replaces it whole.
    replaced = load_recipe(_write(tmp_path, SMALL_RECIPE), ["retrain.optimizer.type=sgd"])
    assert replaced.retrain.optimizer.type == "sgd"
    assert "betas" not in replaced.retrain.optimizer.parameters()  # nothing of adamw's left
    assert replaced.retrain.optimizer.parameters()["momentum"] == 0.9


# --------------------------------------------------------------------------- errors


BAD_RECIPE = (
    SMALL_RECIPE.replace('type = "fusion"', 'type = "fusoin"')
    .replace("output_stride = 32", "outptu_stride = 32")
    .replace("iterations = 4", 'iterations = "many"')
)


def test_three_mistakes_are_all_reported_with_paths_lines_and_hints(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD_RECIPE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    error = caught.value
    issues = {issue.path: issue for issue in error.issues}
    assert set(issues) == {"model.head.type", "model.backbone.outptu_stride", "cross_training.iterations"}

    head = issues["model.head.type"]
    assert "unknown head 'fusoin'" in head.message and "fusion" in head.message
    assert head.hint == "did you mean 'fusion'?"
    assert head.line == _line(BAD_RECIPE, '"fusoin"')

    key = issues["model.backbone.outptu_stride"]
    assert key.message == "unknown key 'outptu_stride'"
    assert key.hint == "did you mean 'output_stride'?"
    assert key.line == _line(BAD_RECIPE, "outptu_stride")

    iterations = issues["cross_training.iterations"]
    assert iterations.message == "expected an integer, got the string 'many'"
    assert iterations.line == _line(BAD_RECIPE, '"many"')

    # The message people read names the file and line of each.
    text = str(error)
    assert text.startswith(f"3 problem(s) in recipe {path}")
    assert f"[{path}:{head.line}]" in text and "hint: did you mean 'output_stride'?" in text


def test_an_error_in_an_inherited_retrain_section_is_reported_once(tmp_path: Path) -> None:
    text = SMALL_RECIPE.replace('type = "fusion"', 'type = "fusoin"')
    issues = _issues(_write(tmp_path, text))
    assert list(issues) == ["model.head.type"]
    # Also when retrain states part of the section and inherits the mistake.
    issues = _issues(_write(tmp_path, text), ["retrain.model.head.channels=4"])
    assert list(issues) == ["model.head.type"]
    # A mistake written in [retrain] itself is reported there.
    issues = _issues(_write(tmp_path, SMALL_RECIPE), ["retrain.model.head.chanels=4"])
    assert list(issues) == ["retrain.model.head.chanels"]
    assert issues["retrain.model.head.chanels"].hint == "did you mean 'channels'?"


def test_missing_required_keys_are_reported(tmp_path: Path) -> None:
    text = SMALL_RECIPE.replace('name = "small"\n', "").replace("strong_batch_size = 2\n", "")
    issues = _issues(_write(tmp_path, text))
    assert set(issues) == {"experiment.name", "cross_training.strong_batch_size"}
    assert all(issue.message == "required key is missing" for issue in issues.values())
    # The line of the nearest stated ancestor: the section header.
    assert issues["experiment.name"].line == _line(text, "[experiment]")
    assert issues["cross_training.strong_batch_size"].line == _line(text, "[cross_training]")


def test_missing_component_type_lists_the_choices(tmp_path: Path) -> None:
    text = SMALL_RECIPE.replace('type = "adamw"\n', "")
    issues = _issues(_write(tmp_path, text))
    assert "optimizer.type" in issues
    assert issues["optimizer.type"].message == "missing 'type': name an optimizer"
    assert issues["optimizer.type"].hint is not None and "adamw" in issues["optimizer.type"].hint


def test_missing_file_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nowhere.toml")


# --------------------------------------------------------------------------- overrides


def test_overrides_apply_with_their_types(tmp_path: Path) -> None:
    recipe = load_recipe(
        _write(tmp_path, SMALL_RECIPE),
        [
            "cross_training.iterations=7",
            "optimizer.lr=0.01",
            "augmentation.strong.horizontal_flip=true",
            "retrain.pseudo_labels.scales=[1.0, 1.5]",
            "experiment.output_dir=/tmp/some runs",
            "data.num_val=8",
        ],
    )
    assert recipe.cross_training.iterations == 7
    assert recipe.optimizer.parameters()["lr"] == 0.01
    assert recipe.augmentation.strong.parameters()["horizontal_flip"] is True
    assert recipe.retrain.pseudo_labels.scales == (1.0, 1.5)
    assert recipe.experiment.output_dir == "/tmp/some runs"
    assert recipe.data.parameters()["num_val"] == 8


def test_a_mistaken_override_is_reported_as_from_set(tmp_path: Path) -> None:
    issues = _issues(_write(tmp_path, SMALL_RECIPE), ["model.backbone.outptu_stride=16"])
    issue = issues["model.backbone.outptu_stride"]
    assert issue.source == "--set" and issue.line is None
    assert issue.location("recipe.toml") == "--set"
    assert issue.hint == "did you mean 'output_stride'?"
    with pytest.raises(RecipeError) as caught:
        load_recipe(_write(tmp_path, SMALL_RECIPE), ["model.backbone.outptu_stride=16"])
    assert "[--set]" in str(caught.value)


def test_an_override_through_a_value_is_reported(tmp_path: Path) -> None:
    issues = _issues(_write(tmp_path, SMALL_RECIPE), ["experiment.name.first=3"])
    issue = issues["experiment.name.first"]
    assert issue.source == "--set"
    assert "experiment.name is a value, not a table" in issue.message


def test_method_parameters_are_validated_against_the_registered_method(tmp_path: Path) -> None:
    issues = _issues(
        _write(tmp_path, SMALL_RECIPE),
        ["method.score_powr=2", 'method.weight_rule="lenient"', "method.h2p_weight=heavy"],
    )
    assert set(issues) == {"method.score_powr", "method.weight_rule", "method.h2p_weight"}
    assert issues["method.score_powr"].hint == "did you mean 'score_power'?"
    assert "'released'" in (issues["method.weight_rule"].hint or "")
    unknown = _issues(_write(tmp_path, SMALL_RECIPE), ['method.type="pcd"'])["method.type"]
    assert "unknown method 'pcd'" in unknown.message and unknown.hint == "did you mean 'pct'?"
    assert unknown.source == "--set"
    # Another method takes its own parameters only: PCT's are not carried over.
    recipe = load_recipe(_write(tmp_path, SMALL_RECIPE), ["method.type=hybrid", "method.cls_weight=0.5"])
    assert recipe.method.parameters() == {"strong_weight": 1.0, "cls_weight": 0.5}


def test_validate_recipe_data_reports_all_issues_of_raw_data() -> None:
    with pytest.raises(RecipeError) as caught:
        validate_recipe_data({"experiment": {"seed": "x"}})
    paths = {issue.path for issue in caught.value.issues}
    assert {"experiment.name", "experiment.seed", "model", "cross_training", "retrain"} <= paths


def test_an_unknown_key_of_an_optional_component_section_lists_the_allowed_keys(tmp_path: Path) -> None:
    text = QUICKSTART.read_text() + '\n[evaluation.postprocess]\ntype = "dense_crf"\ntemp = 3\n'
    with pytest.raises(RecipeError) as caught:
        load_recipe(_write(tmp_path, text))
    (issue,) = caught.value.issues
    assert issue.path == "evaluation.postprocess.temp"
    assert issue.hint is not None and issue.hint.startswith("allowed keys: type, gaussian_sxy")


def test_a_type_override_notes_the_keys_it_drops(tmp_path: Path) -> None:
    notes: list[RecipeIssue] = []
    recipe = load_recipe(QUICKSTART, ["model.head.type=deeplabv3plus"], notes=notes)
    assert recipe.model.head.parameters()["channels"] == 256  # the new head's default, not 64
    (note,) = [note for note in notes if note.path == "model.head"]
    assert note.source == "--set"
    assert note.message == (
        "--set model.head.type=deeplabv3plus replaces the section: channels of the recipe's "
        "component no longer apply"
    )
    # Setting the same type again keeps the section, and says nothing.
    notes.clear()
    load_recipe(QUICKSTART, ["model.head.type=fusion"], notes=notes)
    assert notes == []
