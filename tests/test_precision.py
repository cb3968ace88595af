"""Numerics, memory and throughput options of a run, on CPU.

Precision (``experiment.precision``, ``channels_last``), gradient accumulation,
activation checkpointing, linear learning-rate scaling and peak memory in the results.
The learning-rate notes are tested in ``test_settings_checks.py``, the loop's host
synchronisation in ``test_loop.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_run import TINY_NET_TOML
from torch import Tensor, nn

from pctkit.artifacts import checkpoints
from pctkit.components.losses import class_aware_cross_entropy, max_pool_soft_margin
from pctkit.engine.build import build_net
from pctkit.engine.checks import check_recipe
from pctkit.engine.errors import RunError
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import run
from pctkit.methods.base import Batch
from pctkit.methods.dynamic_evaluation import DynamicEvaluation
from pctkit.methods.pct import PCTSettings, pct_step
from pctkit.recipe import Recipe, load_recipe
from pctkit.recipe.schema import ComponentSpec, Model

NUM_CLASSES = 4

RECIPE = f"""
[experiment]
name = "precision"
seed = 1
device = "cpu"

[data]
type = "digit_scenes"
num_strong = 8
num_weak = 8
num_val = 4
canvas_size = 32
min_digit_size = 8
max_digit_size = 16
digit_classes = [0, 1, 7]

[method]
type = "pct"

{TINY_NET_TOML}
[cross_training]
iterations = 2
strong_batch_size = 4
weak_batch_size = 4
log_interval = 1

[optimizer]
type = "adamw"
lr = 1e-3

[retrain]
enabled = false
iterations = 1
batch_size = 4

[evaluation]
batch_size = 4
num_pictures = 0
"""


def tiny_recipe(folder: Path, *overrides: str) -> Recipe:
    """The recipe above with ``section.key=value`` overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.toml"
    path.write_text(RECIPE)
    return load_recipe(path, list(overrides))


def train(recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """A complete run on one process; returns its results."""
    return run(recipe, run_dir, reporter=Reporter(enabled=False)).results


def logged(run_dir: Path, key: str) -> list[Any]:
    """``key`` of every cross-training record, in order (``loss`` is a term)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if r["kind"] == "train" and r["stage"] == "cross_training"]
    return [r["terms"][key] if key in r["terms"] else r[key] for r in trained]


def tiny_model(activation_checkpointing: bool = False) -> Model:
    return Model(
        backbone=ComponentSpec(type="timm", model_name="test_resnet", out_indices=[1, 3]),
        head=ComponentSpec(type="fusion", channels=8),
        activation_checkpointing=activation_checkpointing,
    )


def frozen_batchnorm_forward(self: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """BatchNorm with its running statistics, in training too (nothing per-batch)."""
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_class_aware_losses_stay_finite_for_extreme_logits(dtype: torch.dtype) -> None:
    """Logits whose exp overflows any low-precision type still give finite losses."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, NUM_CLASSES, 8, 8, generator=generator) * 1e4).clamp(-6e4, 6e4).to(dtype)
    labels = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float32)
    target = torch.tensor([0, 2, 3])[:, None, None].expand(3, 8, 8).clone()
    target[:, :2] = 255
    target[0, 4:] = 1
    segmentation = class_aware_cross_entropy()
    assert torch.isfinite(segmentation(logits, target, labels))
    assert torch.isfinite(segmentation(logits, target, labels, reduction="none")).all()
    assert torch.isfinite(max_pool_soft_margin()(logits, labels))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_pct_step_terms_are_finite_under_autocast(precision: str) -> None:
    """The four terms of a PCT step under each autocast type (fp16 autocast exists on
    CPU too, so the numerics are checked here although runs use it on CUDA only)."""
    torch.manual_seed(0)
    hybrid, pseudo = build_net(tiny_model(), NUM_CLASSES), build_net(tiny_model(), NUM_CLASSES)
    masks = torch.randint(0, NUM_CLASSES, (4, 32, 32))
    masks[2:] = 255  # the weak half
    labels = torch.ones(4, NUM_CLASSES)
    batch = Batch(
        images=torch.rand(4, 3, 32, 32) * 40,  # far outside [0, 1]: large activations
        masks=masks,
        image_labels=labels,
        has_mask=torch.tensor([True, True, False, False]),
        num_strong=2,
    )
    evaluation = DynamicEvaluation(NUM_CLASSES)
    evaluation.load_state_dict(  # J well above 0, so the P2H term acts
        {
            "target_counts": torch.full((NUM_CLASSES,), 1e7),
            "predicted_counts": torch.full((NUM_CLASSES,), 1e7),
            "true_positive_counts": torch.full((NUM_CLASSES,), 9e6),
        }
    )
    with autocast_context(torch.device("cpu"), precision):
        result = pct_step(
            hybrid,
            pseudo,
            batch,
            evaluation,
            class_aware_cross_entropy(),
            max_pool_soft_margin(),
            PCTSettings(score_power=2.0),
        )
    result.loss.backward()
    assert torch.isfinite(result.loss)
    assert all(torch.isfinite(value) for value in result.terms.values())
    assert float(result.terms["mean_w"]) > 0.5
    assert all(torch.isfinite(p.grad).all() for p in hybrid.parameters() if p.grad is not None)


def test_bf16_channels_last_run_end_to_end_with_scaled_learning_rate(tmp_path: Path) -> None:
    """A bf16 + channels-last run trains, evaluates and reports; lr scaled x2."""
    recipe = tiny_recipe(
        tmp_path,
        'experiment.precision="bf16"',
        "experiment.channels_last=true",
        "cross_training.reference_batch_size=4",
        "cross_training.scale_lr=true",
    )
    results = train(recipe, tmp_path / "run")
    for role in ("hybrid", "pseudo"):
        assert 0.0 <= results["nets"][role]["miou_with_labels"] <= 1.0
    losses = logged(tmp_path / "run", "loss")
    assert len(losses) == 2 and all(loss == loss and abs(loss) < 1e6 for loss in losses)
    # The rate each step used: base 1e-3 x (4 + 4) / 4, then poly (1 - 1/2) ** 0.9.
    rates = [record["hybrid"] for record in logged(tmp_path / "run", "lr")]
    assert rates == pytest.approx([2e-3, 2e-3 * 0.5**0.9])
    # CPU runs record their resident memory per stage.
    assert list(results["peak_memory_gib"]) == ["cross_training", "evaluation"]
    assert all(0 < peak < 64 for peak in results["peak_memory_gib"].values())
    assert results["memory_kind"] == "resident memory (RSS)"


def test_fp16_on_cpu_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, 'experiment.precision="fp16"')
    with pytest.raises(RunError, match=r"'fp16' needs CUDA; use 'bf16' or 'fp32' on CPU"):
        run(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    issues, _ = check_recipe(recipe)
    assert [(issue.path, issue.hint) for issue in issues] == [
        ("experiment.precision", "use 'bf16' or 'fp32' on CPU")
    ]


# --------------------------------------------------------------------------- memory


def test_accumulation_matches_one_big_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``accumulate = 2`` gives the losses and the J counts of the undivided batch.

    BatchNorm is frozen to its running statistics: with batch statistics, two
    micro-batches are normalised differently from one batch, as with DDP workers.
    """
    monkeypatch.setattr(nn.BatchNorm2d, "forward", frozen_batchnorm_forward)
    whole = tiny_recipe(tmp_path / "whole")
    split = tiny_recipe(tmp_path / "split", "cross_training.accumulate=2")
    train(whole, tmp_path / "whole" / "run")
    train(split, tmp_path / "split" / "run")
    assert logged(tmp_path / "split" / "run", "loss") == pytest.approx(
        logged(tmp_path / "whole" / "run", "loss"), rel=1e-5
    )
    states = [
        checkpoints.read(run / "checkpoints" / "cross_training-00000002")[0]["method"]["dynamic_evaluation"]
        for run in (tmp_path / "whole" / "run", tmp_path / "split" / "run")
    ]
    assert float(states[0]["target_counts"].sum()) > 2 * 4 * 32 * 32 * 0.99
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], rtol=1e-12, atol=0.0)


def test_activation_checkpointing_saves_activations_and_keeps_gradients() -> None:
    """Same gradients, fewer tensors kept for backward (timm's checkpointing)."""

    def forward_backward(activation_checkpointing: bool) -> tuple[list[Tensor], int]:
        torch.manual_seed(0)
        net = build_net(tiny_model(activation_checkpointing), NUM_CLASSES)
        saved_bytes = 0

        def pack(tensor: Tensor) -> Tensor:
            nonlocal saved_bytes
            saved_bytes += tensor.numel() * tensor.element_size()
            return tensor

        images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = net(images).square().mean()
        loss.backward()
        return [p.grad.clone() for p in net.parameters() if p.grad is not None], saved_bytes

    plain_grads, plain_bytes = forward_backward(False)
    checkpointed_grads, checkpointed_bytes = forward_backward(True)
    assert checkpointed_bytes < 0.9 * plain_bytes  # measured 0.8 for this tiny net, 0.36 for ResNet-101
    assert len(plain_grads) == len(checkpointed_grads)
    for plain, checkpointed in zip(plain_grads, checkpointed_grads, strict=True):
        torch.testing.assert_close(checkpointed, plain)
