"""pctkit.engine.checks: what ``pctkit validate`` checks beyond the schema: data,
components (their ``ParameterError``/``DataError`` at the recipe key), the method's
nets, and the networks' shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_run import FEW_SCENES, TINY_NET_TOML

from pctkit import registry
from pctkit.components.contracts import DataError, ParameterError
from pctkit.engine.checks import check_recipe, component_issue, method_traits
from pctkit.recipe import load_recipe

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn

RECIPE = f"""
[experiment]
name = "checks"
device = "cpu"

[method]
type = "pct"

[data]
type = "digit_scenes"
canvas_size = 32

{TINY_NET_TOML}
[cross_training]
iterations = 2
strong_batch_size = 4
weak_batch_size = 4

[optimizer]
type = "adamw"

[retrain]
iterations = 1
batch_size = 4
"""


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    return path


def test_component_issue_points_at_the_parameter_a_component_names() -> None:
    issue = component_issue(
        "model.backbone", ParameterError("out_indices", "must be increasing", "e.g. [1, 3]")
    )
    assert (issue.path, issue.message, issue.hint, issue.source) == (
        "model.backbone.out_indices",
        "must be increasing",
        "e.g. [1, 3]",
        "check",
    )
    data = component_issue("data", DataError("split file x.txt not found", "train_list"))
    assert data.path == "data.train_list"
    assert data.hint == "fix data.train_list in the recipe, or override it: --set data.train_list=..."
    plain = component_issue("data", KeyError("no such thing"))
    assert (plain.path, plain.message, plain.hint) == ("data", "no such thing", None)


def test_a_valid_recipe_passes_and_says_what_was_checked(recipe_file: Path) -> None:
    issues, checked = check_recipe(load_recipe(recipe_file, FEW_SCENES))
    assert issues == []
    text = "\n".join(checked)
    assert "data: 8 training (4 strong), 4 validation images, 11 classes" in text
    assert "method pct: nets hybrid, pseudo; hybrid labels pseudo labels" in text
    assert "model: builds and maps (2, 3, 64, 64) images to (2, 11, 64, 64) logits" in text
    assert "optimizers, schedules and losses build" in text


def test_fp16_on_cpu_is_refused_with_a_clear_message(recipe_file: Path) -> None:
    issues, _ = check_recipe(load_recipe(recipe_file, [*FEW_SCENES, 'experiment.precision="fp16"']))
    assert [(issue.path, issue.hint) for issue in issues] == [
        ("experiment.precision", "use 'bf16' or 'fp32' on CPU")
    ]


def test_bad_method_parameters_point_at_their_key(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file, [*FEW_SCENES, "method.score_momentum=1.0"])
    traits, issues = method_traits(recipe, 11)
    assert traits is None
    assert [(issue.path, issue.message) for issue in issues] == [
        ("method.score_momentum", "must be in [0, 1), got 1.0")
    ]
    traits, issues = method_traits(load_recipe(recipe_file, ["method.type=supervised"]), 11)
    assert issues == [] and traits is not None
    assert (traits.roles, traits.labeller, traits.draws_weak_images) == (["supervised"], "supervised", False)


def test_a_method_whose_labeller_is_not_one_of_its_nets_is_refused(recipe_file: Path) -> None:
    def lost_labeller(inputs: Any, /) -> Any:
        """A method that names a labeller it does not have."""
        from pctkit.methods.supervised import Supervised

        method = Supervised(inputs.new_net("only"), "only", None)  # type: ignore[arg-type]
        method.labeller = "missing"
        return method

    registry.register("methods", "lost_labeller")(lost_labeller)
    try:
        _, issues = method_traits(load_recipe(recipe_file, ["method.type=lost_labeller"]), 11)
    finally:
        registry.reset()
    assert [issue.path for issue in issues] == ["method.type"]
    assert "names labeller 'missing', which is not one of its nets (only)" in issues[0].message


def test_per_net_settings_must_name_nets_of_the_method(recipe_file: Path) -> None:
    recipe = load_recipe(
        recipe_file,
        [*FEW_SCENES, 'nets.pseudo.scheduler={type = "constant"}', "nets.retrained.optimizer.lr=1.0"],
    )
    issues, _ = check_recipe(recipe)
    assert [issue.path for issue in issues] == ["nets.retrained"]
    assert "no method has a net 'retrained'; method 'pct' has hybrid, pseudo" in issues[0].message


def test_per_net_settings_of_another_methods_net_are_unused_not_wrong(recipe_file: Path) -> None:
    # An ablation of a PCT recipe keeps its [nets.pseudo]: a note, not an error.
    recipe = load_recipe(
        recipe_file, [*FEW_SCENES, 'nets.pseudo.scheduler={type = "constant"}', 'method={type = "hybrid"}']
    )
    issues, checked = check_recipe(recipe)
    assert issues == []
    assert "nets.pseudo: method hybrid has no pseudo net; the section is unused" in checked


def test_a_component_that_fails_to_build_is_reported_at_its_section(recipe_file: Path) -> None:
    recipe = load_recipe(recipe_file, [*FEW_SCENES, "model.backbone.out_indices=[3, 1]", "optimizer.lr=-1.0"])
    issues, checked = check_recipe(recipe)
    paths = [issue.path for issue in issues]
    assert any(path.startswith("model.backbone") for path in paths)
    assert any(path.startswith("optimizer") for path in paths)
    assert not any(line.startswith("model: builds") for line in checked)


def test_an_inherited_mistake_is_reported_once_and_the_schedule_still_checked(recipe_file: Path) -> None:
    """[retrain] inherits [optimizer] and [scheduler]: one mistake, one issue at the key
    where it is written. A schedule is checked even when the optimizer does not build."""
    overrides = [*FEW_SCENES, "optimizer.lr=-1.0", "scheduler.warmup_iterations=-3"]
    issues, _ = check_recipe(load_recipe(recipe_file, overrides))
    messages = {issue.path: issue.message for issue in issues}
    assert messages == {
        "optimizer.lr": "must be > 0, got -1.0 (also in retrain, which inherits it)",
        "scheduler.warmup_iterations": "must be >= 0, got -3 (also in retrain, which inherits it)",
    }
    # Where retraining has a value of its own, its issue stands on its own.
    overrides = [*FEW_SCENES, "optimizer.lr=-1.0", "retrain.optimizer.lr=-2.0"]
    paths = sorted(issue.path for issue in check_recipe(load_recipe(recipe_file, overrides))[0])
    assert paths == ["optimizer.lr", "retrain.optimizer.lr"]


def test_a_component_that_fails_in_its_own_code_is_not_blamed_on_a_value() -> None:
    crash = component_issue("loss.segmentation", RuntimeError("table not initialised"))
    assert crash.path == "loss.segmentation"
    assert crash.message == "the component failed to build: RuntimeError: table not initialised"
    assert crash.hint is not None and "report it to its package" in crash.hint
    missing = component_issue("loss.segmentation", ModuleNotFoundError("No module named 'cupy'"))
    assert missing.message == "the component needs a module that is not installed: No module named 'cupy'"
    value = component_issue("optimizer", ValueError("Invalid learning rate: -1.0"))
    assert value.message == "Invalid learning rate: -1.0" and value.hint is None
