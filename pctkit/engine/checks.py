"""Checks a recipe must pass before a job is submitted, beyond its schema: the data is
reachable, every component builds, and the networks run.

Components report a bad parameter with :class:`~pctkit.components.contracts.ParameterError`
(or a :class:`~pctkit.components.contracts.DataError` that names its parameter); the
issue then points at that parameter's recipe key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from pctkit import registry
from pctkit.components.backbones import crop_size_issue
from pctkit.components.contracts import (
    DataError,
    ParameterError,
    ParameterErrors,
    RawSample,
    SegmentationData,
)
from pctkit.engine.build import (
    build_backbone,
    build_component,
    build_data,
    build_head,
    build_optimizer,
    build_scheduler,
)
from pctkit.engine.data import sample_problem
from pctkit.engine.probes import augmentation_issues as probe_augmentations
from pctkit.engine.probes import loss_issues
from pctkit.engine.refine import picklable_problem
from pctkit.engine.settings_checks import batch_issues, device_issues, learning_rate_notes, micro_batch_lines
from pctkit.engine.space import disk_check
from pctkit.methods.base import MethodInputs
from pctkit.recipe import Recipe, RecipeIssue
from pctkit.recipe.schema import Model


def component_issue(section: str, error: BaseException) -> RecipeIssue:
    """An issue at the recipe key a component's error is about: the parameter a
    :class:`ParameterError` or :class:`DataError` names, else the section."""
    parameter = getattr(error, "parameter", None)
    if isinstance(error, ParameterError):
        message, hint = error.message, error.hint
    else:
        message = str(error) or type(error).__name__
        if isinstance(error, KeyError) and error.args:
            message = str(error.args[0])
        hint = None
        if isinstance(error, ImportError):
            message = f"the component needs a module that is not installed: {message}"
            hint = "install it into this environment"
        elif not isinstance(error, ValueError | KeyError | DataError):
            # Not a value the recipe got wrong: the component itself failed.
            message = f"the component failed to build: {type(error).__name__}: {message}"
            hint = "an error in the component's code, not in a recipe value: report it to its package"
    if parameter and isinstance(error, ParameterError | DataError):
        key = f"{section}.{parameter}"
        if hint is None and "--set" not in message:
            hint = f"fix {key} in the recipe, or override it: --set {key}=..."
        return RecipeIssue(path=key, message=message, hint=hint, source="check")
    return RecipeIssue(path=section, message=message, hint=hint, source="check")


def component_issues(section: str, error: BaseException) -> list[RecipeIssue]:
    """:func:`component_issue`, one per parameter of a :class:`ParameterErrors`."""
    if isinstance(error, ParameterErrors):
        return [component_issue(section, each) for each in error.errors]
    return [component_issue(section, error)]


def stand_in_inputs(num_classes: int) -> MethodInputs:
    """Method inputs whose networks and losses are stand-ins: enough to build a method
    and read its roles, without building a network."""
    return MethodInputs(
        num_classes=num_classes,
        new_net=lambda role, init_like=None: torch.nn.Identity(),
        segmentation_loss=lambda *args, **kwargs: torch.zeros(()),
        classification_loss=lambda *args: torch.zeros(()),
        reduce_sum=lambda tensor: tensor,
    )


@dataclass
class MethodTraits:
    """What validation needs to know of the recipe's method, without building its nets."""

    roles: list[str] = field(default_factory=lambda: ["hybrid"])
    labeller: str = "hybrid"
    draws_weak_images: bool = True


def method_traits(recipe: Recipe, num_classes: int) -> tuple[MethodTraits | None, list[RecipeIssue]]:
    """Build the recipe's method with stand-in networks: its roles, or its errors."""
    inputs = stand_in_inputs(num_classes)
    try:
        method = build_component("methods", recipe.method, inputs)
        traits = MethodTraits(list(method.nets), method.labeller, bool(method.draws_weak_images))
    except Exception as error:  # a plugin's method may raise anything
        return None, component_issues("method", error)
    if traits.labeller not in traits.roles:
        issue = RecipeIssue(
            path="method.type",
            message=f"method {recipe.method.type!r} names labeller {traits.labeller!r}, which is not one "
            f"of its nets ({', '.join(traits.roles)})",
            source="check",
        )
        return None, [issue]
    return traits, []


def known_roles(num_classes: int) -> set[str]:
    """The net roles of every registered method (built with stand-in networks)."""
    roles: set[str] = set()
    for component in registry.list_components("methods"):
        inputs = stand_in_inputs(num_classes)
        try:
            roles |= set(component.build(inputs).nets)
        except Exception:  # a method that needs parameters to build has its own check
            continue
    return roles


def _check_model(
    model: Model, path: str, num_classes: int, size: int, crops: dict[str, int] | None = None
) -> tuple[list[RecipeIssue], torch.nn.Module | None]:
    """Build the network and run it once; returns the issues and, without any, the net."""
    try:
        backbone = build_backbone(model)
    except Exception as error:  # any failure of a component factory is the user's to see
        return component_issues(f"{path}.backbone", error), None
    issues = []
    for stream, crop in (crops or {}).items():
        problem = crop_size_issue(backbone, crop)
        if problem is not None:
            issues.append(
                RecipeIssue(path=f"augmentation.{stream}.crop_size", message=problem, source="check")
            )
    if issues:
        return issues, None
    try:
        net = build_head(model, backbone, num_classes)
    except Exception as error:
        return component_issues(f"{path}.head", error), None
    net.eval()
    try:
        with torch.no_grad():
            logits = net(torch.rand(2, 3, size, size))
    except Exception as error:
        return component_issues(path, error), None
    if tuple(logits.shape) != (2, num_classes, size, size):
        message = (
            f"the network returns logits of shape {tuple(logits.shape)}, expected "
            f"(2, {num_classes}, {size}, {size})"
        )
        return [RecipeIssue(path=path, message=message, source="check")], None
    return [], net


def _check_data(recipe: Recipe, checked: list[str]) -> tuple[SegmentationData | None, list[RecipeIssue]]:
    try:
        data = build_data(recipe)
    except Exception as error:
        return None, component_issues("data", error)
    issues: list[RecipeIssue] = []
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
    try:
        if len(data.val) == 0:
            issues.append(
                RecipeIssue(path="data", message="the dataset has no validation image", source="check")
            )
        else:
            sample = data.val[0]
            _require_sample(sample, sample.mask, "validation")
            checked.append(f"data: first validation image {sample.name!r} loads")
        # Decoding every file would take minutes; one strong and one weak training image
        # catch a wrong mask folder or class count. Other broken files fail at load time.
        strong = set(data.strong_indices)
        weak = next((index for index in range(len(data.train)) if index not in strong), None)
        for index in [*data.strong_indices[:1], *([weak] if weak is not None else [])]:
            kind = "strong" if index in strong else "weak"
            sample = data.train[index]
            if kind == "strong" and sample.mask is None:
                raise DataError(f"strong image {sample.name!r} (index {index}) has no mask")
            _require_sample(sample, sample.mask, kind)
            checked.append(f"data: first {kind} training image {sample.name!r} loads")
    except Exception as error:
        issues += component_issues("data", error)
    return data, issues


def _require_sample(sample: RawSample, mask: Any, kind: str) -> None:
    problem = sample_problem(sample, mask)
    if problem is not None:
        raise DataError(f"{kind} {problem} (docs/plugins.md, datasets)")


def _check_augmentations(recipe: Recipe) -> tuple[dict[str, int], list[RecipeIssue]]:
    """Build each stream's augmentation; returns their crop sizes and the issues."""
    crops: dict[str, int] = {}
    issues: list[RecipeIssue] = []
    streams = ["strong", "weak"] + (["retrain"] if recipe.retrain.enabled else [])
    for stream in streams:
        try:
            augment = build_component("augmentations", getattr(recipe.augmentation, stream))
        except Exception as error:
            issues += component_issues(f"augmentation.{stream}", error)
            continue
        crops[stream] = int(getattr(augment, "crop_size", 0) or 0)
    return crops, issues


def _check_training_components(recipe: Recipe) -> list[RecipeIssue]:
    issues: list[RecipeIssue] = []
    probe = torch.nn.Linear(1, 1)
    stages: list[tuple[str, Any, Any, int]] = [
        ("", recipe.optimizer, recipe.scheduler, recipe.cross_training.iterations),
        ("retrain.", recipe.retrain.optimizer, recipe.retrain.scheduler, recipe.retrain.iterations),
    ]
    stages += [
        (
            f"nets.{role}.",
            recipe.net_optimizer(role),
            recipe.net_scheduler(role),
            recipe.cross_training.iterations,
        )
        for role in recipe.nets
    ]
    for prefix, optimizer_spec, scheduler_spec, total in stages:
        try:
            optimizer = build_optimizer(optimizer_spec, probe, 1.0)
        except Exception as error:
            issues += component_issues(f"{prefix}optimizer", error)
            # The schedule is still checked, on a stand-in optimizer.
            optimizer = torch.optim.SGD(probe.parameters(), lr=0.1)
        try:
            build_scheduler(scheduler_spec, optimizer, total)
        except Exception as error:
            issues += component_issues(f"{prefix}scheduler", error)
    for path, spec in (
        ("loss.segmentation", recipe.loss.segmentation),
        ("loss.classification", recipe.loss.classification),
        ("retrain.loss", recipe.retrain.loss),
    ):
        try:
            build_component("losses", spec)
        except Exception as error:
            issues += component_issues(path, error)
    if recipe.evaluation.postprocess is not None:
        try:
            postprocess = build_component("postprocess", recipe.evaluation.postprocess)
        except Exception as error:
            issues += component_issues("evaluation.postprocess", error)
        else:
            problem = picklable_problem(postprocess) if recipe.evaluation.postprocess_workers else None
            if problem is not None:
                issues.append(
                    RecipeIssue("evaluation.postprocess_workers", problem, hint="set it to 0", source="check")
                )
    return once_where_inherited(issues)


_INHERITING = re.compile(r"^(retrain|nets\.[^.]+)\.")


def once_where_inherited(issues: list[RecipeIssue]) -> list[RecipeIssue]:
    """An issue of a top-level section, repeated word for word by the sections that
    inherit it (``[retrain]``, ``[nets.<role>]``), reported once, where it is written."""
    by_key = {(issue.path, issue.message): issue for issue in issues}
    kept: list[RecipeIssue] = []
    inherited_by: dict[int, list[str]] = {}
    for issue in issues:
        match = _INHERITING.match(issue.path)
        source = by_key.get((issue.path[match.end() :], issue.message)) if match else None
        if source is None or match is None:
            kept.append(issue)
            continue
        inherited_by.setdefault(id(source), []).append(match.group(1))
    for issue in kept:
        if id(issue) in inherited_by:
            sections = inherited_by[id(issue)]
            names = " and ".join([", ".join(sections[:-1]), sections[-1]] if len(sections) > 1 else sections)
            issue.message += f" (also in {names}, which inherit{'s' if len(sections) == 1 else ''} it)"
    return kept


def check_recipe(recipe: Recipe, world_size: int = 1) -> tuple[list[RecipeIssue], list[str]]:
    """Run every check; returns ``(issues, what was checked)``."""
    issues: list[RecipeIssue] = []
    checked: list[str] = ["schema and component names"]

    settings = recipe.cross_training
    batch_problems = batch_issues(recipe, world_size)
    issues += batch_problems
    if not batch_problems and (world_size > 1 or settings.accumulate > 1 or recipe.retrain.accumulate > 1):
        checked += micro_batch_lines(recipe, world_size)
    issues += device_issues(recipe, world_size)

    data, data_issues = _check_data(recipe, checked)
    issues += data_issues
    num_classes = data.num_classes if data is not None else 2

    traits, method_issues = method_traits(recipe, num_classes)
    issues += method_issues
    if traits is not None:
        known = known_roles(num_classes)
        for role in sorted(set(recipe.nets) - set(traits.roles)):
            if role in known:  # another method's net (an ablation of the recipe): unused
                checked.append(
                    f"nets.{role}: method {recipe.method.type} has no {role} net; the section is unused"
                )
                continue
            issues.append(
                RecipeIssue(
                    path=f"nets.{role}",
                    message=f"no method has a net {role!r}; method {recipe.method.type!r} has "
                    f"{', '.join(traits.roles)}",
                    hint="name one of its nets, or remove the section",
                    source="check",
                )
            )
        checked.append(
            f"method {recipe.method.type}: nets {', '.join(traits.roles)}; "
            f"{traits.labeller} labels pseudo labels"
        )
    rate_problems, rate_lines = learning_rate_notes(recipe, traits.draws_weak_images if traits else True)
    issues += rate_problems
    checked += rate_lines

    crops, augmentation_issues = _check_augmentations(recipe)
    issues += augmentation_issues
    if not augmentation_issues and not data_issues and data is not None and data.strong_indices:
        issues += probe_augmentations(recipe, data.train[data.strong_indices[0]])
    if crops:
        checked.append(
            "augmentation: "
            + ", ".join(
                f"{stream} {getattr(recipe.augmentation, stream).type}" + (f" (crop {crop})" if crop else "")
                for stream, crop in crops.items()
            )
        )
    size = min(crops.get("strong") or 64, 128)
    model_issues, net = _check_model(recipe.model, "model", num_classes, size, crops)
    issues += model_issues
    if not model_issues:
        checked.append(
            f"model: builds and maps (2, 3, {size}, {size}) images to "
            f"(2, {num_classes}, {size}, {size}) logits"
        )
    retrain_net = net
    if recipe.retrain.enabled and recipe.retrain.model != recipe.model:
        retrain_crops = {"retrain": crops["retrain"]} if "retrain" in crops else {}
        retrain_issues, retrain_net = _check_model(
            recipe.retrain.model, "retrain.model", num_classes, size, retrain_crops
        )
        issues += retrain_issues
        if not retrain_issues:
            checked.append("retrain.model: builds and runs")

    training_issues = _check_training_components(recipe) + loss_issues(recipe, num_classes)
    issues += training_issues
    if not training_issues:
        built = "optimizers, schedules and losses build"
        if recipe.evaluation.postprocess is not None:
            built += f"; evaluation.postprocess {recipe.evaluation.postprocess.type} builds"
        checked.append(built)
        if net is not None and traits is not None:
            space_issues, space_line = disk_check(recipe, len(traits.roles), net, retrain_net)
            issues += space_issues
            checked.append(space_line)
    return issues, checked
