"""End to end: `pctkit run` on a tiny quickstart variant, in the three modes.

Each mode runs once per test session (module fixture); the tests then read the run
directory as a user would: the resolved recipe, metrics, weights, pseudo labels,
results and pictures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_run import TINY_STAGES, run_cli, set_options
from typer.testing import CliRunner

from pctkit.cli.main import app
from pctkit.recipe import load_recipe

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # before the module's runs

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
NUM_STRONG, NUM_WEAK, NUM_CLASSES = 8, 24, 11
TINY = [
    *TINY_STAGES,
    "experiment.device=cpu",
    "data.canvas_size=32",
    f"data.num_strong={NUM_STRONG}",
    f"data.num_weak={NUM_WEAK}",
    "data.num_val=8",
    'model.backbone.model_name="test_resnet"',
    "model.head.channels=8",
    # More steps than TINY_STAGES: the metrics tests read the fourth cross-training step.
    "cross_training.iterations=4",
    "retrain.iterations=3",
    "retrain.batch_size=4",
    "evaluation.batch_size=8",
    "evaluation.num_pictures=2",
]
MODES = ("pct", "hybrid", "supervised")
STAGE_ONE_NETS = {"pct": ["hybrid", "pseudo"], "hybrid": ["hybrid"], "supervised": ["supervised"]}


def _overrides(mode: str, *extra: str) -> list[str]:
    return [*TINY, f"cross_training.mode={mode}", *extra]


def _run(run_dir: Path, overrides: list[str], *options: str) -> Any:
    arguments = ["run", str(QUICKSTART), "--out", str(run_dir), "--quiet", *options, *set_options(overrides)]
    return CliRunner().invoke(app, arguments)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished run per mode."""
    folder = tmp_path_factory.mktemp("pipeline")
    finished: dict[str, Path] = {}
    for mode in MODES:
        result = _run(folder / mode, _overrides(mode))
        assert result.exit_code == 0, f"{mode}: {result.output}\n{result.exception!r}"
        finished[mode] = folder / mode
    return finished


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_run_directory_holds_a_complete_loadable_recipe(runs: dict[str, Path], mode: str) -> None:
    saved = load_recipe(runs[mode] / "recipe.toml")
    expected = load_recipe(QUICKSTART, _overrides(mode))
    assert saved.model_dump() == expected.model_dump()
    text = (runs[mode] / "recipe.toml").read_text()
    # Complete: defaults the quickstart never states are written out.
    assert "score_momentum" in text and "[retrain.model.head]" in text and "[checkpoint]" in text


def test_pct_metrics_hold_the_four_terms_j_weights_and_lr(runs: dict[str, Path]) -> None:
    records = [r for r in _records(runs["pct"]) if r.get("stage") == "cross_training" and "loss" in r]
    assert records and records[-1]["iteration"] == 4
    record = records[-1]
    for name in ("loss_strong", "loss_cls", "loss_h2p", "loss_p2h", "mean_w", "loss"):
        assert isinstance(record[name], float) and np.isfinite(record[name]), name
    assert 0.0 <= record["mean_w"] <= 1.0
    assert len(record["J"]) == NUM_CLASSES and all(0.0 <= j <= 1.0 for j in record["J"])
    assert set(record["lr"]) == {"hybrid", "pseudo"} and record["lr"]["hybrid"] >= 0.0
    retraining = [r for r in _records(runs["pct"]) if r.get("stage") == "retraining" and "loss" in r]
    assert retraining and "loss_ce" in retraining[-1]


@pytest.mark.parametrize("mode", ["hybrid", "supervised"])
def test_ablation_metrics_hold_their_own_terms(runs: dict[str, Path], mode: str) -> None:
    record = [r for r in _records(runs[mode]) if r.get("stage") == "cross_training" and "loss" in r][-1]
    expected = {"hybrid": {"loss_strong", "loss_cls"}, "supervised": {"loss_ce"}}[mode]
    assert expected <= set(record)
    assert "loss_p2h" not in record and "J" not in record


@pytest.mark.parametrize("mode", MODES)
def test_weights_are_safetensors_with_class_names(runs: dict[str, Path], mode: str) -> None:
    roles = [*STAGE_ONE_NETS[mode], "retrained"]
    assert sorted(p.name for p in runs[mode].glob("*_net.safetensors")) == sorted(
        f"{role}_net.safetensors" for role in roles
    )
    for role in roles:
        path = runs[mode] / f"{role}_net.safetensors"
        tensors = load_file(str(path))
        assert tensors and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        class_names = json.loads(metadata["class_names"])
        assert len(class_names) == NUM_CLASSES and class_names[0] == "background"
        assert metadata["role"] == role


@pytest.mark.parametrize("mode", MODES)
def test_pseudo_labels_are_palette_pngs_for_every_weak_image(runs: dict[str, Path], mode: str) -> None:
    folder = runs[mode] / "pseudo_labels"
    expected = {f"train_{index:05d}.png" for index in range(NUM_STRONG, NUM_STRONG + NUM_WEAK)}
    assert {p.name for p in folder.glob("*.png")} == expected
    with Image.open(folder / f"train_{NUM_STRONG:05d}.png") as image:
        assert image.mode == "P" and image.size == (32, 32)
        labels = np.asarray(image)
    assert int(labels.max()) < NUM_CLASSES


@pytest.mark.parametrize("mode", MODES)
def test_results_and_pictures(runs: dict[str, Path], mode: str) -> None:
    results = json.loads((runs[mode] / "results.json").read_text())
    assert set(results["nets"]) == {*STAGE_ONE_NETS[mode], "retrained"}
    for summary in results["nets"].values():
        assert 0.0 <= summary["miou"] <= 1.0
        assert 0.0 <= summary["miou_with_labels"] <= 1.0
        assert len(summary["iou"]) == NUM_CLASSES
    assert results["pseudo_labels"]["images"] == NUM_WEAK
    with Image.open(runs[mode] / "predictions.png") as picture:
        assert picture.size[0] > 32 and picture.size[1] > 32


def test_running_into_an_existing_directory_is_refused(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (runs["pct"] / "hybrid_net.safetensors").read_bytes()
    arguments = ["run", str(QUICKSTART), "--out", str(runs["pct"]), "--quiet"]
    assert run_cli([*arguments, *set_options(_overrides("pct"))], monkeypatch) == 1
    message = capsys.readouterr().err
    assert "already exists" in message and "--overwrite" in message and "--resume" in message
    assert "Traceback" not in message
    # Nothing of the finished run was touched.
    assert (runs["pct"] / "hybrid_net.safetensors").read_bytes() == before


def test_runs_with_the_same_seed_are_bit_identical(runs: dict[str, Path], tmp_path: Path) -> None:
    # Stage 1 alone (no retraining) reproduces the hybrid net of the full hybrid run.
    result = _run(tmp_path / "again", _overrides("hybrid", "retrain.enabled=false"))
    assert result.exit_code == 0, result.output
    first = load_file(str(runs["hybrid"] / "hybrid_net.safetensors"))
    second = load_file(str(tmp_path / "again" / "hybrid_net.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    # And training changed the weights (the comparison is not between two initialisations).
    pct_hybrid = load_file(str(runs["pct"] / "hybrid_net.safetensors"))
    assert not all(torch.equal(first[key], pct_hybrid[key]) for key in first)
