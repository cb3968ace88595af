"""pctkit.engine.space: the disk a run writes, checked by ``pctkit validate``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from tiny_run import run_cli
from torch import nn

from pctkit.engine import space
from pctkit.engine.space import optimizer_state_ratio, stage_space, tensor_bytes
from pctkit.recipe import load_recipe
from pctkit.recipe.schema import ComponentSpec

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


@pytest.mark.parametrize(
    ("optimizer", "ratio"),
    [
        ({"type": "adamw", "lr": 1e-3}, 2.0),  # two moments per parameter
        ({"type": "sgd", "lr": 0.1, "momentum": 0.9}, 1.0),  # one momentum buffer
        ({"type": "sgd", "lr": 0.1, "momentum": 0.0}, 0.0),
    ],
)
def test_optimizer_state_is_measured_after_one_step(optimizer: dict[str, Any], ratio: float) -> None:
    # AdamW also keeps a step count per parameter tensor: a few bytes more.
    assert optimizer_state_ratio(ComponentSpec(**optimizer)) == pytest.approx(ratio, abs=0.02)


def test_a_stage_keeps_its_last_checkpoints_one_being_written_and_the_best() -> None:
    recipe = load_recipe(QUICKSTART, overrides=["checkpoint.interval=100", "checkpoint.keep_last=3"])
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    state = tensor_bytes(net.state_dict().values())
    parameters = tensor_bytes(net.parameters())
    adamw = ComponentSpec(type="adamw", lr=1e-3)
    stage = stage_space("cross training", 2, net, adamw, 1800, recipe, validates=True)
    expected = 2 * (state + math.ceil(optimizer_state_ratio(adamw) * parameters))
    assert stage.checkpoint_bytes == expected and expected > 2 * (state + 2 * parameters)
    assert stage.checkpoints == 3 + 1 + 2
    assert stage.total == 6 * stage.checkpoint_bytes + 2 * state
    # Fewer checkpoints written than kept: only those.
    assert stage_space("retraining", 1, net, adamw, 150, recipe, validates=False).checkpoints == 2


def test_validate_refuses_a_run_that_does_not_fit_its_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["validate", str(QUICKSTART), "--set", f"experiment.output_dir={tmp_path / 'runs'}"]
    assert run_cli(arguments, monkeypatch) == 0
    output = " ".join(capsys.readouterr().out.split())
    assert "disk: the run writes up to about" in output and f"free in {tmp_path}" in output

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(space.shutil, "disk_usage", lambda path: usage._replace(free=5 * 1024**2))
    assert run_cli(arguments, monkeypatch) == 1
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())
    assert "experiment.output_dir: the run writes up to about" in output
    assert f"{tmp_path} has 5 MiB free" in output and "checkpoint.keep_last" in output
