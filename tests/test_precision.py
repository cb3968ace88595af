"""Numerics, memory and throughput options of a run, on CPU.

Precision (``experiment.precision``, ``channels_last``), gradient accumulation,
activation checkpointing, linear learning-rate scaling, peak memory in the results,
and a training loop free of per-step host synchronisation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_run import TINY_NET_TOML
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from pctkit.artifacts.io import load_state
from pctkit.components.losses import class_aware_cross_entropy, max_pool_soft_margin
from pctkit.engine.build import build_net
from pctkit.engine.checks import check_recipe, learning_rate_factor, learning_rate_notes
from pctkit.engine.cross_training import Batch, PCTWeights, StepResult, pct_step
from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.pipeline import Run, RunError, prepare_run_dir
from pctkit.engine.reporting import Reporter
from pctkit.engine.trainer import LoopContext, Stage, run_stage
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
    prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)
    return Run(recipe, run_dir, Reporter(enabled=False)).execute().results


def logged(run_dir: Path, key: str) -> list[Any]:
    """Every logged value of ``key``, in order."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record[key] for record in records if key in record]


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
            PCTWeights(score_power=2.0),
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
    assert results["peak_memory_gib"] == {"cross_training": "n/a", "evaluation": "n/a"}


def test_fp16_on_cpu_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, 'experiment.precision="fp16"')
    with pytest.raises(RunError, match=r"'fp16' needs CUDA; use 'bf16' or 'fp32' on CPU"):
        Run(recipe, tmp_path / "run")
    issues, _ = check_recipe(recipe)
    assert [(issue.path, issue.hint) for issue in issues] == [
        ("experiment.precision", "use 'bf16' or 'fp32' on CPU")
    ]


# --------------------------------------------------------------------------- batch and lr


def test_validate_says_when_the_batch_differs_from_the_reference(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, "cross_training.reference_batch_size=10")
    issues, lines = learning_rate_notes(recipe)
    assert issues == []
    assert lines == [
        "cross_training: batch 8 differs from reference_batch_size 10: learning rate NOT scaled "
        "(set cross_training.scale_lr = true for x0.8)"
    ]
    assert learning_rate_factor(recipe.cross_training) == 1.0
    scaled = tiny_recipe(tmp_path, "cross_training.reference_batch_size=10", "cross_training.scale_lr=true")
    assert learning_rate_factor(scaled.cross_training) == pytest.approx(0.8)
    assert "scaled linearly x0.8" in learning_rate_notes(scaled)[1][0]
    supervised = tiny_recipe(
        tmp_path, 'cross_training.mode="supervised"', "cross_training.reference_batch_size=4"
    )
    assert "equals reference_batch_size" in learning_rate_notes(supervised)[1][0]  # no weak images
    unstated = tiny_recipe(tmp_path, "cross_training.scale_lr=true")
    assert [issue.path for issue in learning_rate_notes(unstated)[0]] == ["cross_training.scale_lr"]


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
        load_state(run / "checkpoints" / "cross_training-00000002")[0]["extra"]["dynamic_evaluation"]
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


# --------------------------------------------------------------------------- host syncs

HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def count_host_syncs(iterations: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Calls that would wait for the device, in ``run_stage`` over ``iterations``
    steps logged once (at the end)."""
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def micro_batches(start: int) -> Iterator[list[Tensor]]:
        while True:
            yield [torch.randn(8, 4)]

    def compute(batch: Tensor, micro_index: int) -> StepResult:
        loss = net(batch).square().mean()
        return StepResult(loss, {"loss_square": loss.detach()})

    stage = Stage(
        name="cross_training",
        nets={"net": net},
        optimizers={"net": optimizer},
        schedulers={"net": LambdaLR(optimizer, lambda iteration: 1.0)},
        extra_state={},
        micro_batches=micro_batches,
        compute=compute,
        total_iterations=iterations,
        log_interval=iterations,
    )
    calls = 0

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return method(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for name in HOST_SYNCS:
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        run_stage(stage, LoopContext(run_dir=tmp_path / f"run{iterations}", device=torch.device("cpu")))
    return calls


def test_training_loop_syncs_with_the_host_per_log_interval_not_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice the steps between two logs, the same number of host syncs (the log and
    the final checkpoint account for all of them)."""
    assert count_host_syncs(3, tmp_path, monkeypatch) == count_host_syncs(6, tmp_path, monkeypatch)
