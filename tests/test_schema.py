"""pctkit.recipe.schema: the static sections, the retrain defaults, resumable keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from tiny_run import TINY_NET_TOML

from pctkit.recipe import load_recipe
from pctkit.recipe.schema import (
    Augmentation,
    Evaluation,
    merge_sections,
    with_retrain_defaults,
)

SMALL_RECIPE = f"""\
[experiment]
name = "small"

[data]
type = "digit_scenes"

{TINY_NET_TOML}
[cross_training]
iterations = 4
strong_batch_size = 2
weak_batch_size = 2

[optimizer]
type = "adamw"

[retrain]
iterations = 3
batch_size = 4
"""


def test_merge_sections_deep_merges_and_a_new_type_replaces_the_section() -> None:
    base = {
        "backbone": {"type": "timm", "model_name": "resnet50", "out_indices": [1, 3]},
        "sync_batchnorm": False,
    }
    merged = merge_sections(base, {"backbone": {"model_name": "test_resnet"}})
    assert merged == {
        "backbone": {"type": "timm", "model_name": "test_resnet", "out_indices": [1, 3]},
        "sync_batchnorm": False,
    }
    replaced = merge_sections(base, {"backbone": {"type": "stair_cnn.v2"}})
    assert replaced["backbone"] == {"type": "stair_cnn.v2"}
    assert merge_sections(base, None) == base and merge_sections(base, None) is not base


def test_retrain_inherits_model_optimizer_and_scheduler() -> None:
    raw = {
        "model": {"head": {"type": "fusion", "channels": 8}},
        "optimizer": {"type": "adamw", "lr": 0.1},
        "retrain": {"optimizer": {"lr": 0.2}},
    }
    data = with_retrain_defaults(raw)
    assert data["retrain"]["model"] == raw["model"]
    assert data["retrain"]["optimizer"] == {"type": "adamw", "lr": 0.2}
    assert data["retrain"]["scheduler"] == {"type": "poly"}  # the declared default
    assert "model" not in raw["retrain"]  # the input is not changed


def test_section_checks() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Augmentation(scale_range=(1.5, 1.0))  # one pipeline per stream now
    with pytest.raises(ValidationError, match="stride 200 is larger than window 100"):
        Evaluation(window=100, stride=200)


def test_a_nets_section_is_written_over_the_shared_optimizer_and_schedule(tmp_path: Path) -> None:
    raw = {
        "optimizer": {"type": "adamw", "lr": 0.1},
        "scheduler": {"type": "poly", "power": 0.9},
        "nets": {"pseudo": {"scheduler": {"type": "constant"}, "optimizer": {"lr": 0.01}}},
    }
    merged = with_retrain_defaults(raw)["nets"]["pseudo"]
    assert merged == {"scheduler": {"type": "constant"}, "optimizer": {"type": "adamw", "lr": 0.01}}
    path = tmp_path / "recipe.toml"
    path.write_text(
        SMALL_RECIPE + '\n[nets.pseudo.scheduler]\ntype = "constant"\n\n[nets.hybrid.optimizer]\nlr = 0.5\n'
    )
    recipe = load_recipe(path)
    assert recipe.net_scheduler("pseudo").type == "constant"
    assert recipe.net_scheduler("hybrid").model_dump() == recipe.scheduler.model_dump()
    assert recipe.net_optimizer("hybrid").parameters()["lr"] == 0.5
    assert recipe.net_optimizer("pseudo").model_dump() == recipe.optimizer.model_dump()
