"""Tests of recipes: loading, resolved TOML, overrides, and errors people can act on."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from tiny_run import TINY_NET_TOML

from pctkit import registry
from pctkit.recipe import RecipeError, RecipeIssue, load_recipe, parse_recipe_text, resolved_toml
from pctkit.recipe.loader import key_lines, parse_override

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.toml"

SMALL_RECIPE = f"""\
[experiment]
name = "small"

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


def test_quickstart_loads() -> None:
    recipe = load_recipe(QUICKSTART)
    assert recipe.experiment.name == "quickstart"
    assert recipe.cross_training.mode == "pct"
    assert recipe.model.backbone.type == "timm"
    assert recipe.model.head.type == "fusion"
    assert recipe.data.parameters()["num_strong"] == 100
    # Unstated keys take their schema defaults.
    assert recipe.cross_training.loss_weights.p2h == 1.0
    assert recipe.loss.segmentation.type == "class_aware_cross_entropy"


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(QUICKSTART)
    text = resolved_toml(recipe, header="resolved\nsecond line")
    assert text.startswith("# resolved\n# second line\n")
    # Every default is spelled out.
    assert "score_power = 8.0" in text and "[retrain.model.backbone]" in text
    again = load_recipe(_write(tmp_path, text))
    assert again.model_dump() == recipe.model_dump()
    # And it is a fixed point.
    assert resolved_toml(again, header="resolved\nsecond line") == text


def test_resolved_toml_leaves_out_unset_optional_parameters(tmp_path: Path) -> None:
    # A plugin parameter typed `X | None = None`: TOML has no null, so it is left out
    # and reads back as its default.
    def optional_net(*, weights_file: str | None = None, width: int = 4) -> None:
        """A backbone with an optional parameter."""

    registry.register("backbones", "optional_net")(optional_net)
    try:
        recipe = load_recipe(
            _write(tmp_path, SMALL_RECIPE),
            ['model.backbone={type = "optional_net"}', 'retrain.model.backbone={type = "optional_net"}'],
        )
        assert recipe.model.backbone.parameters() == {"weights_file": None, "width": 4}
        text = resolved_toml(recipe)
        assert "weights_file" not in text and "width = 4" in text
        assert load_recipe(_write(tmp_path, text, "resolved.toml")).model_dump() == recipe.model_dump()
    finally:
        registry.reset()


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
    assert "valid integer" in iterations.message and "'many'" in iterations.message
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


def test_invalid_toml_reports_line_and_column() -> None:
    text = '[experiment]\nname = "x"\nseed = = 3\n'
    with pytest.raises(RecipeError) as caught:
        parse_recipe_text(text, file="broken.toml")
    (issue,) = caught.value.issues
    assert issue.message.startswith("invalid TOML")
    assert (issue.line, issue.column) == (3, 8)
    assert "[broken.toml:3:8]" in str(caught.value)


def test_missing_file_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nowhere.toml")


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a.b=3", 3),
        ("a.b=2.5", 2.5),
        ("a.b=1e-3", 1e-3),
        ("a.b=true", True),
        ("a.b=[1, 2]", [1, 2]),
        ("a.b=[0.5,1.0]", [0.5, 1.0]),
        ('a.b="3"', "3"),
        ("a.b=/data/voc", "/data/voc"),
        ("a.b=resnet50", "resnet50"),
        (" a.b = 4 ", 4),
    ],
)
def test_override_values_are_read_as_toml_else_as_strings(text: str, value: object) -> None:
    path, parsed = parse_override(text)
    assert path == ("a", "b")
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["a.b", "a..b=1", "=3"])
def test_malformed_overrides_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="override"):
        parse_override(text)


def test_overrides_apply_with_their_types(tmp_path: Path) -> None:
    recipe = load_recipe(
        _write(tmp_path, SMALL_RECIPE),
        [
            "cross_training.iterations=7",
            "optimizer.lr=0.01",
            "augmentation.horizontal_flip=true",
            "retrain.pseudo_labels.scales=[1.0, 1.5]",
            "experiment.output_dir=/tmp/some runs",
            "data.num_val=8",
        ],
    )
    assert recipe.cross_training.iterations == 7
    assert recipe.optimizer.parameters()["lr"] == 0.01
    assert recipe.augmentation.horizontal_flip is True
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


def test_key_lines_of_tables_dotted_keys_and_multiline_arrays() -> None:
    text = textwrap.dedent(
        """\
        [a]
        x = 1
        b.c = [
          1,
          2,
        ]
        y = 2 # [not a header]

        [a.d]
        z = "]"
        """
    )
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "x")] == 2
    assert lines[("a", "b", "c")] == 3
    assert lines[("a", "y")] == 7
    assert lines[("a", "d")] == 9 and lines[("a", "d", "z")] == 10
