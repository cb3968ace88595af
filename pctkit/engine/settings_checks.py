"""Checks of a recipe's numbers that need no component: batches that must split over
workers, options that need CUDA, learning rates set for another batch.

``pctkit validate`` reports them with the rest; ``pctkit run`` refuses a recipe with
any of the first two kinds before it writes anything.
"""

from __future__ import annotations

import torch

from pctkit.recipe import Recipe, RecipeIssue
from pctkit.recipe.schema import TrainingLoop


def _issue(path: str, message: str, hint: str | None = None) -> RecipeIssue:
    return RecipeIssue(path=path, message=message, hint=hint, source="check")


def stage_batch_sizes(recipe: Recipe, draws_weak_images: bool) -> dict[str, int]:
    """Images behind one optimizer step of each training stage, summed over workers and
    micro-batches (recipe batch sizes are global): strong + weak in cross training (weak
    only for methods that draw weak images), ``batch_size`` in retraining."""
    settings = recipe.cross_training
    sizes = {
        "cross_training": settings.strong_batch_size + (settings.weak_batch_size if draws_weak_images else 0)
    }
    if recipe.retrain.enabled:
        sizes["retrain"] = recipe.retrain.batch_size
    return sizes


def learning_rate_factor(loop: TrainingLoop, batch_size: int) -> float:
    """The linear scaling rule: ``batch / reference_batch_size`` when the stage's
    ``scale_lr`` is on and a reference batch is stated, else 1."""
    if not loop.scale_lr or loop.reference_batch_size <= 0:
        return 1.0
    return batch_size / loop.reference_batch_size


def batch_issues(recipe: Recipe, world_size: int) -> list[RecipeIssue]:
    """Global batches that do not split evenly over workers and micro-batches."""
    issues: list[RecipeIssue] = []
    settings = recipe.cross_training
    for name, batch in (
        ("strong_batch_size", settings.strong_batch_size),
        ("weak_batch_size", settings.weak_batch_size),
    ):
        if batch % (world_size * settings.accumulate):
            issues.append(
                _issue(
                    f"cross_training.{name}",
                    f"{batch} is not divisible by workers x accumulate = "
                    f"{world_size} x {settings.accumulate}",
                    "the global batch is split evenly over workers and micro-batches",
                )
            )
    retrain = recipe.retrain
    if retrain.enabled and retrain.batch_size % (world_size * retrain.accumulate):
        issues.append(
            _issue(
                "retrain.batch_size",
                f"{retrain.batch_size} is not divisible by workers x accumulate = "
                f"{world_size} x {retrain.accumulate}",
            )
        )
    return issues


def micro_batch_lines(recipe: Recipe, world_size: int) -> list[str]:
    """How each stage's global batch splits over workers and micro-batches."""
    settings = recipe.cross_training
    parts = world_size * settings.accumulate
    lines = [
        f"cross_training: {settings.strong_batch_size} strong + {settings.weak_batch_size} weak per "
        f"iteration = {settings.strong_batch_size // parts} + {settings.weak_batch_size // parts} per "
        f"micro-batch ({world_size} worker(s) x {settings.accumulate} micro-batch(es))"
    ]
    if recipe.retrain.enabled:
        retrain_parts = world_size * recipe.retrain.accumulate
        lines.append(
            f"retrain: {recipe.retrain.batch_size} per iteration = "
            f"{recipe.retrain.batch_size // retrain_parts} per micro-batch ({world_size} worker(s) x "
            f"{recipe.retrain.accumulate} micro-batch(es))"
        )
    return lines


def device_issues(recipe: Recipe, world_size: int) -> list[RecipeIssue]:
    """Options that need CUDA, asked for where the run would get none."""
    issues: list[RecipeIssue] = []
    device = recipe.experiment.device
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not on_cpu:
        return issues
    if recipe.experiment.precision == "fp16":
        issues.append(_issue("experiment.precision", "'fp16' needs CUDA", "use 'bf16' or 'fp32' on CPU"))
    for path, model in (("model", recipe.model), ("retrain.model", recipe.retrain.model)):
        if model.sync_batchnorm and world_size > 1:
            issues.append(
                _issue(
                    f"{path}.sync_batchnorm",
                    "SyncBatchNorm needs CUDA, the run would use the CPU",
                    "set it false on CPU (each worker then normalises with its own batch)",
                )
            )
    return issues


def learning_rate_notes(
    recipe: Recipe, draws_weak_images: bool = True
) -> tuple[list[RecipeIssue], list[str]]:
    """Where a stage's batch differs from the batch its learning rate was set for:
    what the run will do about it. Returns ``(issues, lines for the report)``."""
    issues: list[RecipeIssue] = []
    lines: list[str] = []
    loops: dict[str, TrainingLoop] = {"cross_training": recipe.cross_training, "retrain": recipe.retrain}
    for path, batch in stage_batch_sizes(recipe, draws_weak_images).items():
        loop = loops[path]
        reference = loop.reference_batch_size
        if reference == 0:
            if loop.scale_lr:
                issues.append(
                    _issue(
                        f"{path}.scale_lr",
                        "scale_lr needs the batch the learning rate was set for",
                        f"set {path}.reference_batch_size (the paper's PCT batch is 10: 5 + 5)",
                    )
                )
            continue
        if batch == reference:
            lines.append(f"{path}: batch {batch} equals reference_batch_size, learning rate as written")
        elif loop.scale_lr:
            lines.append(
                f"{path}: batch {batch} differs from reference_batch_size {reference}: learning rate "
                f"scaled linearly x{batch / reference:g}"
            )
        else:
            lines.append(
                f"{path}: batch {batch} differs from reference_batch_size {reference}: learning rate "
                f"NOT scaled (set {path}.scale_lr = true for x{batch / reference:g})"
            )
    return issues, lines
