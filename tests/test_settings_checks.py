"""pctkit.engine.settings_checks: batches that must split, options that need CUDA,
learning rates set for another batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_run import TINY_NET_TOML

from pctkit.engine.settings_checks import (
    batch_issues,
    device_issues,
    learning_rate_factor,
    learning_rate_notes,
    micro_batch_lines,
    stage_batch_sizes,
)
from pctkit.recipe import Recipe, load_recipe

RECIPE = f"""
[experiment]
name = "checks"
device = "cpu"

[data]
type = "digit_scenes"

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


def recipe(path: Path, *overrides: str) -> Recipe:
    return load_recipe(path, list(overrides))


def test_batches_that_do_not_split_over_workers_are_named(recipe_file: Path) -> None:
    """validate --nproc 3 and the run itself name the keys whose batch does not split."""
    plain = recipe(recipe_file)
    assert {issue.path for issue in batch_issues(plain, 3)} == {
        "cross_training.strong_batch_size",
        "cross_training.weak_batch_size",
        "retrain.batch_size",
    }
    assert batch_issues(plain, 2) == []
    assert micro_batch_lines(plain, 2) == [
        "cross_training: 4 strong + 4 weak per iteration = 2 + 2 per micro-batch "
        "(2 worker(s) x 1 micro-batch(es))",
        "retrain: 4 per iteration = 2 per micro-batch (2 worker(s) x 1 micro-batch(es))",
    ]
    accumulated = recipe(recipe_file, "cross_training.accumulate=3")
    issues = batch_issues(accumulated, 1)
    assert [issue.path for issue in issues] == [
        "cross_training.strong_batch_size",
        "cross_training.weak_batch_size",
    ]
    assert issues[0].message == "4 is not divisible by workers x accumulate = 1 x 3"
    assert all(issue.source == "check" for issue in issues)
    # Without retraining its batch does not matter.
    assert batch_issues(recipe(recipe_file, "retrain.enabled=false", "retrain.batch_size=3"), 2) == []


def test_options_that_need_cuda_are_refused_on_the_cpu(recipe_file: Path) -> None:
    issues = device_issues(recipe(recipe_file, 'experiment.precision="fp16"'), 1)
    assert [(issue.path, issue.message, issue.hint) for issue in issues] == [
        ("experiment.precision", "'fp16' needs CUDA", "use 'bf16' or 'fp32' on CPU")
    ]
    assert device_issues(recipe(recipe_file, 'experiment.precision="bf16"'), 1) == []
    synced = recipe(recipe_file, "model.sync_batchnorm=true")
    assert device_issues(synced, 1) == []  # one worker: nothing to synchronise
    assert [issue.path for issue in device_issues(synced, 2)] == [
        "model.sync_batchnorm",
        "retrain.model.sync_batchnorm",
    ]


def test_batch_sizes_per_stage_count_weak_images_only_for_methods_that_draw_them(recipe_file: Path) -> None:
    plain = recipe(recipe_file)
    assert stage_batch_sizes(plain, draws_weak_images=True) == {"cross_training": 8, "retrain": 4}
    assert stage_batch_sizes(plain, draws_weak_images=False) == {"cross_training": 4, "retrain": 4}


def test_validate_says_when_the_batch_differs_from_the_reference(recipe_file: Path) -> None:
    plain = recipe(recipe_file, "cross_training.reference_batch_size=10")
    issues, lines = learning_rate_notes(plain)
    assert issues == []
    assert lines == [
        "cross_training: batch 8 differs from reference_batch_size 10: learning rate NOT scaled "
        "(set cross_training.scale_lr = true for x0.8)"
    ]
    assert learning_rate_factor(plain.cross_training, 8) == 1.0
    scaled = recipe(recipe_file, "cross_training.reference_batch_size=10", "cross_training.scale_lr=true")
    assert learning_rate_factor(scaled.cross_training, 8) == pytest.approx(0.8)
    assert "scaled linearly x0.8" in learning_rate_notes(scaled)[1][0]
    # A method without weak images: the batch is the strong images alone.
    supervised = recipe(recipe_file, "method.type=supervised", "cross_training.reference_batch_size=4")
    assert "equals reference_batch_size" in learning_rate_notes(supervised, draws_weak_images=False)[1][0]
    unstated = recipe(recipe_file, "cross_training.scale_lr=true")
    problems, _ = learning_rate_notes(unstated)
    assert [issue.path for issue in problems] == ["cross_training.scale_lr"]
    assert learning_rate_factor(unstated.cross_training, 8) == 1.0  # no reference: nothing to scale by
    retrain = recipe(recipe_file, "retrain.reference_batch_size=2", "retrain.scale_lr=true")
    assert learning_rate_factor(retrain.retrain, 4) == 2.0
    assert learning_rate_notes(retrain)[1] == [
        "retrain: batch 4 differs from reference_batch_size 2: learning rate scaled linearly x2"
    ]
