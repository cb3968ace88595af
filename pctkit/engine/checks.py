"""Checks a recipe must pass before a job is submitted, beyond its schema:
the data is reachable, every component builds, and the networks run."""

from __future__ import annotations

import re

import torch

from pctkit.components.contracts import SegmentationData
from pctkit.engine.build import build_component, build_data, build_net, build_optimizer, build_scheduler
from pctkit.recipe import Recipe, RecipeIssue
from pctkit.recipe.schema import ComponentSpec, CrossTraining, Model, Retrain


def _issue(path: str, error: BaseException, hint: str | None = None) -> RecipeIssue:
    message = str(error) or type(error).__name__
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    return RecipeIssue(path=path, message=message, hint=hint, source="check")


def _blamed_key(error: BaseException, sections: dict[str, ComponentSpec]) -> str | None:
    """The recipe key (``data.root``, ``model.backbone.pretrained``) a component's error is
    about: the parameter it names as ``parameter NAME=``, else the one parameter whose
    value it quotes. A value quoted only as part of a longer quoted value (the model
    name inside a weights path) does not count."""
    message = str(error)
    named = re.search(r"\bparameter (\w+)=", message)
    quoted: dict[str, str] = {}
    for section, spec in sections.items():
        parameters = spec.parameters()
        if named and named.group(1) in parameters:
            return f"{section}.{named.group(1)}"
        for key, value in parameters.items():
            if isinstance(value, str) and len(value) > 1 and value in message:
                quoted[f"{section}.{key}"] = value
    alone = [
        key
        for key, value in quoted.items()
        if not any(value in other and value != other for other in quoted.values())
    ]
    return alone[0] if len(alone) == 1 else None


def _component_issue(fallback: str, error: BaseException, sections: dict[str, ComponentSpec]) -> RecipeIssue:
    """An issue at the key the error is about, with how to change it from the command line."""
    key = _blamed_key(error, sections)
    hint = None
    if key is not None and "--set" not in str(error):
        hint = f"fix {key} in the recipe, or override it: --set {key}=..."
    return _issue(key or fallback, error, hint)


def _check_model(model: Model, path: str, num_classes: int, size: int) -> list[RecipeIssue]:
    try:
        net = build_net(model, num_classes)
    except Exception as error:  # any failure of a component factory is the user's to see
        where = f"{path}.backbone" if "backbone" in str(error).lower() or "timm" in str(error) else path
        return [
            _component_issue(where, error, {f"{path}.backbone": model.backbone, f"{path}.head": model.head})
        ]
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


def effective_batch_size(settings: CrossTraining | Retrain) -> int:
    """Images behind one optimizer step of a stage, summed over workers and
    micro-batches (recipe batch sizes are global): strong + weak in cross training
    (strong only in ``supervised`` mode, which draws no weak images), ``batch_size``
    in retraining."""
    if isinstance(settings, Retrain):
        return settings.batch_size
    weak = settings.weak_batch_size if settings.mode != "supervised" else 0
    return settings.strong_batch_size + weak


def learning_rate_factor(settings: CrossTraining | Retrain) -> float:
    """The linear scaling rule: ``effective batch / reference_batch_size`` when the
    stage's ``scale_lr`` is on and a reference batch is stated, else 1."""
    if not settings.scale_lr or settings.reference_batch_size <= 0:
        return 1.0
    return effective_batch_size(settings) / settings.reference_batch_size


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
        issues.append(
            RecipeIssue(
                path="experiment.precision",
                message="'fp16' needs CUDA",
                hint="use 'bf16' or 'fp32' on CPU",
                source="check",
            )
        )
    for path, model in (("model", recipe.model), ("retrain.model", recipe.retrain.model)):
        if model.sync_batchnorm and world_size > 1:
            issues.append(
                RecipeIssue(
                    path=f"{path}.sync_batchnorm",
                    message="SyncBatchNorm needs CUDA, the run would use the CPU",
                    hint="set it false on CPU (each worker then normalises with its own batch)",
                    source="check",
                )
            )
    return issues


def learning_rate_notes(recipe: Recipe) -> tuple[list[RecipeIssue], list[str]]:
    """Where a stage's batch differs from the batch its learning rate was set for:
    what the run will do about it. Returns ``(issues, lines for the report)``."""
    issues: list[RecipeIssue] = []
    lines: list[str] = []
    stages: list[tuple[str, CrossTraining | Retrain]] = [("cross_training", recipe.cross_training)]
    if recipe.retrain.enabled:
        stages.append(("retrain", recipe.retrain))
    for path, settings in stages:
        batch, reference = effective_batch_size(settings), settings.reference_batch_size
        if reference == 0:
            if settings.scale_lr:
                issues.append(
                    RecipeIssue(
                        path=f"{path}.scale_lr",
                        message="scale_lr needs the batch the learning rate was set for",
                        hint=f"set {path}.reference_batch_size (the paper's PCT batch is 10: 5 + 5)",
                        source="check",
                    )
                )
            continue
        if batch == reference:
            lines.append(f"{path}: batch {batch} equals reference_batch_size, learning rate as written")
        elif settings.scale_lr:
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


def check_recipe(recipe: Recipe, world_size: int = 1) -> tuple[list[RecipeIssue], list[str]]:
    """Run the checks; returns ``(issues, what was checked)``."""
    issues: list[RecipeIssue] = []
    checked: list[str] = ["schema and component names"]

    settings = recipe.cross_training
    batch_problems = batch_issues(recipe, world_size)
    issues += batch_problems
    if not batch_problems and (world_size > 1 or settings.accumulate > 1 or recipe.retrain.accumulate > 1):
        checked += micro_batch_lines(recipe, world_size)
    issues += device_issues(recipe, world_size)
    rate_problems, rate_lines = learning_rate_notes(recipe)
    issues += rate_problems
    checked += rate_lines

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
        # Decoding every file would take minutes; one strong and one weak training image
        # catch a wrong mask folder or class count. Other broken files fail at load time.
        strong = set(data.strong_indices)
        weak = next((index for index in range(len(data.train)) if index not in strong), None)
        for index in [*data.strong_indices[:1], *([weak] if weak is not None else [])]:
            kind = "strong" if index in strong else "weak"
            checked.append(f"data: first {kind} training image {data.train[index].name!r} loads")
    except Exception as error:
        issues.append(_component_issue("data", error, {"data": recipe.data}))

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
