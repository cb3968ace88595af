"""How much disk a run writes, estimated before it starts (``pctkit validate``).

A run that fills its disk stops at a checkpoint and loses nothing, but on a cluster it
loses its place in the queue. Most of what a run writes is checkpoints: every net's
weights and buffers, its optimizer's state, per checkpoint kept. The optimizer's share
is measured, not assumed: the recipe's optimizer takes one step on a small probe, so an
optimizer from a plugin counts what it really keeps.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pctkit.engine.build import build_optimizer
from pctkit.recipe import Recipe, RecipeIssue
from pctkit.recipe.schema import ComponentSpec

GIB = 1024**3


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the tensors' elements."""
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def optimizer_state_ratio(spec: ComponentSpec) -> float:
    """Bytes of optimizer state per byte of parameters (AdamW: 2, SGD with momentum: 1),
    measured after one step on a probe."""
    probe = nn.Linear(64, 4)
    optimizer = build_optimizer(spec, probe, 1.0)
    for parameter in probe.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    state = tensor_bytes(
        value for entry in optimizer.state.values() for value in entry.values() if isinstance(value, Tensor)
    )
    return state / tensor_bytes(probe.parameters())


@dataclass(frozen=True)
class StageSpace:
    """What one training stage keeps on disk at most."""

    name: str
    checkpoint_bytes: int
    """One checkpoint: each net's state and its optimizer's."""
    checkpoints: int
    """The most checkpoints on disk at once: those kept, one being written, the best."""
    weights_bytes: int
    """The stage's final ``*_net.safetensors``."""

    @property
    def total(self) -> int:
        return self.checkpoints * self.checkpoint_bytes + self.weights_bytes


def stage_space(
    name: str,
    nets: int,
    net: nn.Module,
    optimizer: ComponentSpec,
    iterations: int,
    recipe: Recipe,
    validates: bool,
) -> StageSpace:
    """The disk one training stage of ``nets`` nets like ``net`` keeps at most."""
    state = tensor_bytes(net.state_dict().values())
    parameters = tensor_bytes(net.parameters())
    per_net = state + math.ceil(optimizer_state_ratio(optimizer) * parameters)
    settings = recipe.checkpoint
    written = math.ceil(iterations / settings.interval) if settings.interval else 1
    # keep_last kept, one more while the next is written, and the best (twice while replaced).
    periodic = min(written, settings.keep_last + 1)
    return StageSpace(name, nets * per_net, periodic + (2 if validates else 0), nets * state)


def free_bytes(folder: Path) -> tuple[Path, int]:
    """The nearest existing folder at or above ``folder``, and the space free there."""
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing, shutil.disk_usage(existing).free


def describe(size: int) -> str:
    """A size in MiB or GiB."""
    return f"{size / GIB:.1f} GiB" if size >= GIB / 2 else f"{size / 1024**2:.0f} MiB"


def disk_check(
    recipe: Recipe, stage_one_nets: int, net: nn.Module, retrain_net: nn.Module | None
) -> tuple[list[RecipeIssue], str]:
    """The run's disk needs against the space free where it writes: an issue at
    ``experiment.output_dir`` when they do not fit, and a line for the report."""
    stages = [
        stage_space(
            "cross training",
            stage_one_nets,
            net,
            recipe.optimizer,
            recipe.cross_training.iterations,
            recipe,
            bool(recipe.cross_training.eval_interval),
        )
    ]
    if recipe.retrain.enabled and retrain_net is not None:
        stages.append(
            stage_space(
                "retraining",
                1,
                retrain_net,
                recipe.retrain.optimizer,
                recipe.retrain.iterations,
                recipe,
                bool(recipe.retrain.eval_interval),
            )
        )
    needed = sum(stage.total for stage in stages)
    folder, free = free_bytes(Path(recipe.experiment.output_dir))
    parts = ", ".join(
        f"{stage.name} {stage.checkpoints} x {describe(stage.checkpoint_bytes)} checkpoints"
        for stage in stages
    )
    line = (
        f"disk: the run writes up to about {describe(needed)} ({parts}, and weights); "
        f"{describe(free)} free in {folder}"
    )
    if needed <= free:
        return [], line
    issue = RecipeIssue(
        path="experiment.output_dir",
        message=f"the run writes up to about {describe(needed)} ({parts}, and the final weights), "
        f"and {folder} has {describe(free)} free: it would stop at a checkpoint when the disk fills",
        hint="free space, write elsewhere (experiment.output_dir, or pctkit run --out), or keep fewer "
        "checkpoints (checkpoint.keep_last)",
        source="check",
    )
    return [issue], line
