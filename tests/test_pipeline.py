"""End to end (pctkit.engine.stages through the CLI): `pctkit run` on a tiny quickstart
variant, with each built-in method; and a run that proves the pipeline learns.

Each method runs once per test module (module fixture); the tests then read the run
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
from tiny_run import TINY_NET_TOML, TINY_STAGES, run_cli, set_options
from typer.testing import CliRunner

from pctkit.cli.main import app
from pctkit.engine.build import build_data
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import run
from pctkit.metrics import ConfusionMatrix
from pctkit.recipe import load_recipe

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # before the module's runs

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
NUM_STRONG, NUM_WEAK, NUM_CLASSES = 8, 24, 5  # the quickstart draws digits 0, 1, 4 and 7
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
    return [*TINY, f"method.type={mode}", *extra]


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


def _records(run_dir: Path, stage: str = "cross_training", kind: str = "train") -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("stage") == stage and r["kind"] == kind]


@pytest.mark.parametrize("mode", MODES)
def test_run_directory_holds_a_complete_loadable_recipe(runs: dict[str, Path], mode: str) -> None:
    saved = load_recipe(runs[mode] / "recipe.toml")
    expected = load_recipe(QUICKSTART, _overrides(mode))
    assert saved.model_dump() == expected.model_dump()
    assert saved.method.type == mode
    text = (runs[mode] / "recipe.toml").read_text()
    # Complete: defaults the quickstart never states are written out.
    assert "[retrain.model.head]" in text and "[checkpoint]" in text and "skip_nonfinite" in text
    if mode == "pct":
        assert "h2p_weight = 1.0" in text and "weight_rule" in text


def test_pct_metrics_hold_the_four_terms_j_weights_and_lr(runs: dict[str, Path]) -> None:
    records = _records(runs["pct"])
    assert [r["iteration"] for r in records] == [4]  # the last iteration is always logged
    record = records[-1]
    terms = record["terms"]
    assert set(terms) == {"loss_strong", "loss_cls", "loss_h2p", "loss_p2h", "mean_w", "loss"}
    for name, value in terms.items():
        assert isinstance(value, float) and np.isfinite(value), name
    assert 0.0 <= terms["mean_w"] <= 1.0
    scores = record["method"]["J"]
    assert len(scores) == NUM_CLASSES and all(0.0 <= j <= 1.0 for j in scores)
    assert set(record["lr"]) == {"hybrid", "pseudo"} and record["lr"]["hybrid"] >= 0.0
    assert record["seconds_per_iteration"] > 0
    retraining = _records(runs["pct"], "retraining")
    assert retraining and set(retraining[-1]["terms"]) == {"loss_ce", "loss"}
    assert set(retraining[-1]["lr"]) == {"retrained"}
    (evaluation,) = _records(runs["pct"], "evaluation", "evaluation")
    assert set(evaluation["nets"]) == {"hybrid", "pseudo", "retrained"}
    (labels,) = _records(runs["pct"], "pseudo_labels", "pseudo_labels")
    assert labels["images"] == NUM_WEAK and 0.0 <= labels["miou"] <= 1.0


@pytest.mark.parametrize("mode", ["hybrid", "supervised"])
def test_ablation_metrics_hold_their_own_terms(runs: dict[str, Path], mode: str) -> None:
    record = _records(runs[mode])[-1]
    expected = {"hybrid": {"loss_strong", "loss_cls", "loss"}, "supervised": {"loss_ce", "loss"}}[mode]
    assert set(record["terms"]) == expected
    assert "method" not in record  # no J
    assert set(record["lr"]) == set(STAGE_ONE_NETS[mode])


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
    stages = ["cross_training", "pseudo_labels", "retraining", "evaluation"]
    assert list(results["seconds"]) == stages and all(v > 0 for v in results["seconds"].values())
    assert list(results["peak_memory_gib"]) == stages and all(
        v > 0 for v in results["peak_memory_gib"].values()
    )
    assert results["memory_kind"] == "resident memory (RSS)"
    progress = json.loads((runs[mode] / "progress.json").read_text())
    assert progress["completed"] == stages
    assert progress["nets"] == STAGE_ONE_NETS[mode]  # the labeller first
    with Image.open(runs[mode] / "predictions.png") as picture:
        assert picture.size[0] > 32 and picture.size[1] > 32


def test_running_into_an_existing_directory_is_refused(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (runs["pct"] / "hybrid_net.safetensors").read_bytes()
    arguments = ["run", str(QUICKSTART), "--out", str(runs["pct"]), "--quiet"]
    assert run_cli([*arguments, *set_options(_overrides("pct"))], monkeypatch) == 1
    message = capsys.readouterr().err
    # A finished run: nothing to resume, so the message offers --out and --overwrite.
    assert f"run directory {runs['pct']} holds a finished run" in message
    assert "--out DIR" in message and "--overwrite" in message and "pctkit resume" not in message
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


# --------------------------------------------------------------------------- it learns

LEARNING_RECIPE = f"""
[experiment]
name = "learns"
seed = 0
device = "cpu"

[method]
type = "pct"

[data]
type = "digit_scenes"
num_strong = 16
num_weak = 48
num_val = 16
canvas_size = 32
min_digit_size = 16
max_digit_size = 24
max_digits = 1
digit_classes = [0, 1]

{TINY_NET_TOML.replace("channels = 8", "channels = 16")}
[cross_training]
iterations = 200
strong_batch_size = 8
weak_batch_size = 8
log_interval = 20
classifier_lr_multiplier = 1.0

[optimizer]
type = "adamw"
lr = 1e-2

[retrain]
iterations = 150
batch_size = 8
log_interval = 15
classifier_lr_multiplier = 1.0

[retrain.pseudo_labels]
scales = [1.0]
flip = false

[evaluation]
batch_size = 16
num_pictures = 0
"""
HYBRID_MARGIN, RETRAINED_MARGIN = 0.10, 0.05
"""mIoU over always-background that the trained nets must reach. Measured: +0.18 for
the hybrid net, +0.11 for the retrained one (background alone: 0.289)."""


@pytest.mark.slow
def test_a_short_run_learns(tmp_path: Path) -> None:
    """350 iterations of the whole pipeline (about 12 s): both training losses fall, and
    the final nets segment digits better than predicting background everywhere."""
    path = tmp_path / "learns.toml"
    path.write_text(LEARNING_RECIPE)
    recipe = load_recipe(path)
    results = run(recipe, tmp_path / "run", reporter=Reporter(enabled=False)).results

    for stage in ("cross_training", "retraining"):
        losses = [r["terms"]["loss"] for r in _records(tmp_path / "run", stage)]
        assert len(losses) == 10
        assert max(losses[-2:]) < 0.5 * losses[0], (stage, losses)

    # Always background, on the same validation split.
    data = build_data(recipe)
    background = ConfusionMatrix(data.num_classes)
    for index in range(len(data.val)):
        mask = torch.from_numpy(data.val[index].mask).long()  # type: ignore[arg-type]
        background.update(torch.zeros_like(mask), mask)
    baseline = background.miou()
    assert 0.2 < baseline < 0.4  # background covers most pixels; the two digits score 0
    nets = results["nets"]
    assert nets["hybrid"]["miou"] > baseline + HYBRID_MARGIN, (nets["hybrid"]["miou"], baseline)
    assert nets["retrained"]["miou"] > baseline + RETRAINED_MARGIN, (nets["retrained"]["miou"], baseline)
