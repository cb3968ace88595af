"""pctkit.engine.probes: validate calls each loss once and names one that breaks
the contract of its slot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import FEW_SCENES

import pctkit.engine.probes as probes
from pctkit.components.contracts import RawSample
from pctkit.engine.probes import _probe, augmentation_issues, loss_issues
from pctkit.recipe import load_recipe

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


def test_the_built_in_losses_keep_their_contracts() -> None:
    assert loss_issues(load_recipe(QUICKSTART, FEW_SCENES), 5) == []


@pytest.mark.parametrize(
    ("override", "path", "problem"),
    [
        (
            'loss.classification.type="class_aware_cross_entropy"',
            "loss.classification",
            "calling it raised TypeError",
        ),
        ('retrain.loss.type="max_pool_soft_margin"', "retrain.loss", "calling it raised TypeError"),
    ],
)
def test_a_loss_in_the_wrong_slot_is_named_at_its_key(override: str, path: str, problem: str) -> None:
    (issue,) = loss_issues(load_recipe(QUICKSTART, [*FEW_SCENES, override]), 5)
    assert issue.path == path and problem in issue.message and issue.source == "check"
    assert issue.hint is not None and "docs/plugins.md" in issue.hint


def test_a_segmentation_loss_that_ignores_reduction_is_named() -> None:
    def mean_only(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"):
        return logits.mean()

    logits, target, labels = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 3)
    problem = _probe(mean_only, "segmentation", logits, target, labels)
    assert problem == "reduction='none' gave (), expected per-pixel losses (2, 4, 4)"
    assert _probe(lambda logits, labels: logits.amax(), "classification", logits, target, labels) is None


def test_an_augmentation_that_fails_on_a_training_image_is_named_per_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = load_recipe(QUICKSTART, FEW_SCENES)
    sample = RawSample(np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 8), dtype=np.uint8), [0], "s0")
    assert augmentation_issues(recipe, sample) == []  # the built-ins work

    def crashing(image: torch.Tensor, mask: torch.Tensor, seed: int) -> None:
        raise IndexError("list index out of range")

    monkeypatch.setattr(probes, "build_component", lambda kind, spec: crashing)
    issues = augmentation_issues(recipe, sample)
    assert [issue.path for issue in issues] == [
        "augmentation.strong",
        "augmentation.weak",
        "augmentation.retrain",
    ]
    assert issues[0].message == (
        "augmentation 'scale_crop_flip' fails on training image 's0': "
        "it raised IndexError: list index out of range"
    )
