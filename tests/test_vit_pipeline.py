"""The tiny-ViT quickstart variant of docs/dinov2.md end to end, as a user runs it: it
trains through PCT and retraining, resumes after a stop, exports, predicts, and loads
with ``pctkit.load_model``. timm's ``test_vit`` stands in for DINOv2 and the ``dpt`` head
reassembles its single-stride blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import TINY_QUICKSTART, one_thread, set_options, subprocess_environment

import pctkit
from pctkit.engine.errors import TrainingInterrupted
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import run
from pctkit.recipe import load_recipe
from pctkit.recipe.builtin import builtin_recipes

pytest.importorskip("sklearn.datasets")
pytestmark = pytest.mark.slow

VIT = [
    "model.backbone.model_name=test_vit",
    'model.backbone.pretrained=""',
    "model.backbone.out_indices=[1,2,4,5]",
    "model.head.type=dpt",
    "model.head.channels=32",
    "experiment.device=cpu",
    "cross_training.iterations=4",
    "retrain.iterations=4",
    "checkpoint.interval=2",
]


def pctkit_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pctkit", *arguments],
        env=subprocess_environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_tiny_vit_variant_trains_resumes_exports_and_predicts(tmp_path: Path) -> None:
    recipe = load_recipe(builtin_recipes()["quickstart"], [*TINY_QUICKSTART, *VIT])
    run_dir = tmp_path / "vit"
    with one_thread(), pytest.raises(TrainingInterrupted):
        run(recipe, run_dir, reporter=Reporter(enabled=False), stop_after={"cross_training": 2})
    assert (run_dir / "checkpoints" / "cross_training-00000002").is_dir()

    resumed = pctkit_cli("resume", str(run_dir), "--log-format", "plain", cwd=tmp_path)
    assert "resuming cross training (pct) at iteration 2 of 4" in resumed.stderr
    assert (run_dir / "retrained_net.safetensors").is_file()

    pctkit_cli("export", str(run_dir), "--out", str(tmp_path / "bundle"), cwd=tmp_path)
    pctkit_cli(
        "predict", str(tmp_path / "bundle"), str(run_dir / "predictions.png"), "--out", "masks", cwd=tmp_path
    )
    assert (tmp_path / "masks" / "masks" / "predictions.png").is_file()

    net = pctkit.load_model(tmp_path / "bundle")
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 45, 61))  # not a multiple of the patch: resized inside
    assert logits.shape == (1, recipe.data.parameters()["digit_classes"].__len__() + 1, 45, 61)
    assert set_options(["a=1"]) == ["--set", "a=1"]
