"""Checks a recipe must pass before a job is submitted, beyond its schema:
the data is reachable, every component builds, and the networks run."""

from __future__ import annotations

import torch

from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import build_component, build_data, build_net, build_optimizer, build_scheduler
from pctkit.recipe import Recipe, RecipeIssue
from pctkit.recipe.schema import Model


def _issue(path: str, error: BaseException, hint: str | None = None) -> RecipeIssue:
    message = str(error) or type(error).__name__
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    return RecipeIssue(path=path, message=message, hint=hint, source="check")


def _check_model(model: Model, path: str, num_classes: int, size: int) -> list[RecipeIssue]:
    try:
        net = build_net(model, num_classes)
    except Exception as error:  # any failure of a component factory is the user's to see
        where = f"{path}.backbone" if "backbone" in str(error).lower() or "timm" in str(error) else path
        return [_issue(where, error)]
    net.eval()
    try:
        with torch.no_grad():
            logits = net(torch.rand(2, 3, size, size))
    except Exception as error:
        return [_issue(path, error, "the backbone's features and the head do not fit together")]
    if tuple(logits.shape) != (2, num_classes, size, size):
        return [
            RecipeIssue(
                path=path,
                message=f"the network returns logits of shape {tuple(logits.shape)}, expected "
                f"(2, {num_classes}, {size}, {size})",
                source="check",
            )
        ]
    return []


def check_recipe(recipe: Recipe, world_size: int = 1) -> tuple[list[RecipeIssue], list[str]]:
    """Run the checks; returns ``(issues, what was checked)``."""
    issues: list[RecipeIssue] = []
    checked: list[str] = ["schema and component names"]

    settings = recipe.cross_training
    for name, batch in (
        ("strong_batch_size", settings.strong_batch_size),
        ("weak_batch_size", settings.weak_batch_size),
    ):
        if batch % (world_size * settings.accumulate):
            issues.append(
                RecipeIssue(
                    path=f"cross_training.{name}",
                    message=f"{batch} is not divisible by workers x accumulate = "
                    f"{world_size} x {settings.accumulate}",
                    hint="the global batch is split evenly over workers and micro-batches",
                    source="check",
                )
            )
    if recipe.retrain.enabled and recipe.retrain.batch_size % (world_size * recipe.retrain.accumulate):
        issues.append(
            RecipeIssue(
                path="retrain.batch_size",
                message=f"{recipe.retrain.batch_size} is not divisible by workers x accumulate = "
                f"{world_size} x {recipe.retrain.accumulate}",
                source="check",
            )
        )

    data: SegmentationData | None = None
    try:
        data = build_data(recipe)
        checked.append(
            f"data: {len(data.train)} training ({len(data.strong_indices)} strong), "
            f"{len(data.val)} validation images, {data.num_classes} classes"
        )
        if not data.strong_indices:
            issues.append(
                RecipeIssue(
                    path="data", message="the dataset has no strong (pixel-labelled) image", source="check"
                )
            )
        if len(data.val) == 0:
            issues.append(
                RecipeIssue(path="data", message="the dataset has no validation image", source="check")
            )
        else:
            sample = data.val[0]
            checked.append(f"data: first validation image {sample.name!r} loads")
    except Exception as error:
        issues.append(_issue("data", error))

    num_classes = data.num_classes if data is not None else 2
    size = recipe.augmentation.crop_size or 64
    size = min(size, 128)
    model_issues = _check_model(recipe.model, "model", num_classes, size)
    issues += model_issues
    if not model_issues:
        checked.append(
            f"model: builds and maps (2, 3, {size}, {size}) images "
            f"to (2, {num_classes}, {size}, {size}) logits"
        )
    if recipe.retrain.enabled and recipe.retrain.model != recipe.model:
        retrain_issues = _check_model(recipe.retrain.model, "retrain.model", num_classes, size)
        issues += retrain_issues
        if not retrain_issues:
            checked.append("retrain.model: builds and runs")

    probe = torch.nn.Linear(1, 1)
    for path, spec, total in (
        ("optimizer", recipe.optimizer, settings.iterations),
        ("retrain.optimizer", recipe.retrain.optimizer, recipe.retrain.iterations),
    ):
        try:
            optimizer = build_optimizer(spec, probe, 1.0)
            scheduler_path = path.replace("optimizer", "scheduler")
            scheduler_spec = recipe.scheduler if path == "optimizer" else recipe.retrain.scheduler
            try:
                build_scheduler(scheduler_spec, optimizer, total)
            except Exception as error:
                issues.append(_issue(scheduler_path, error))
        except Exception as error:
            issues.append(_issue(path, error))
    for path, spec in (
        ("loss.segmentation", recipe.loss.segmentation),
        ("loss.classification", recipe.loss.classification),
        ("retrain.loss", recipe.retrain.loss),
    ):
        try:
            build_component("losses", spec)
        except Exception as error:
            issues.append(_issue(path, error))
    checked.append("optimizers, schedules and losses build")
    return issues, checked
