"""``validate``'s probes: components called once on tiny inputs, so that a loss in the
wrong slot, a loss that ignores ``reduction`` or an augmentation that fails on a real
image is found before a job starts rather than at its first step (the contracts:
docs/plugins.md)."""

from __future__ import annotations

from typing import Any

import torch

from pctkit.components.contracts import RawSample
from pctkit.constants import IGNORE_INDEX
from pctkit.engine.build import build_component
from pctkit.engine.data import to_tensors
from pctkit.recipe import Recipe, RecipeIssue

CONTRACTS = (
    "a segmentation loss is loss(logits, target, image_labels, reduction='mean'|'sum'|'none'), "
    "a classification loss is loss(logits, image_labels) (docs/plugins.md, Losses)"
)


def loss_issues(recipe: Recipe, num_classes: int) -> list[RecipeIssue]:
    """One issue per loss whose output breaks the contract of its slot."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 4, 4, generator=generator)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, 0] = IGNORE_INDEX
    labels = torch.ones(2, num_classes)
    slots = [
        ("loss.segmentation", recipe.loss.segmentation, "segmentation"),
        ("loss.classification", recipe.loss.classification, "classification"),
    ]
    if recipe.retrain.enabled:
        slots.append(("retrain.loss", recipe.retrain.loss, "segmentation"))
    issues = []
    for path, spec, role in slots:
        try:
            loss = build_component("losses", spec)
        except Exception:  # reported by the build check
            continue
        try:
            problem = _probe(loss, role, logits, target, labels)
        except Exception as error:
            problem = f"calling it raised {type(error).__name__}: {error}"
        if problem is not None:
            message = f"loss {spec.type!r} does not work as a {role} loss: {problem}"
            issues.append(RecipeIssue(path=path, message=message, hint=CONTRACTS, source="check"))
    return issues


def _probe(
    loss: Any, role: str, logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor
) -> str | None:
    if role == "classification":
        return _scalar(loss(logits, labels), "loss(logits, image_labels)")
    problem = _scalar(loss(logits, target, labels), "loss(logits, target, image_labels)")
    if problem is not None:
        return problem
    per_pixel = loss(logits, target, labels, reduction="none")
    if not isinstance(per_pixel, torch.Tensor) or per_pixel.shape != target.shape:
        shape = tuple(per_pixel.shape) if isinstance(per_pixel, torch.Tensor) else type(per_pixel).__name__
        return f"reduction='none' gave {shape}, expected per-pixel losses {tuple(target.shape)}"
    return None


def _scalar(value: Any, call: str) -> str | None:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        return f"{call} gave {shape}, expected a scalar"
    return None


def augmentation_issues(recipe: Recipe, sample: RawSample | None) -> list[RecipeIssue]:
    """Each stream's augmentation applied to one training image (``sample``); one issue
    per stream that fails on it or returns something else than an image and a mask."""
    if sample is None:
        return []
    streams = ["strong", "weak"] + (["retrain"] if recipe.retrain.enabled else [])
    issues = []
    for stream in streams:
        spec = getattr(recipe.augmentation, stream)
        try:
            augment = build_component("augmentations", spec)
        except Exception:  # reported by the build check
            continue
        image, mask = to_tensors(sample, sample.mask)
        try:
            result = augment(image, mask, 0)
            problem = None if _image_and_mask(result) else f"it returned {type(result).__name__}"
        except Exception as error:
            problem = f"it raised {type(error).__name__}: {error}"
        if problem is not None:
            issues.append(
                RecipeIssue(
                    path=f"augmentation.{stream}",
                    message=f"augmentation {spec.type!r} fails on training image {sample.name!r}: {problem}",
                    hint="an augmentation is augment(image (3, H, W) uint8, mask (H, W) long, seed) -> "
                    "(image, mask) (docs/plugins.md)",
                    source="check",
                )
            )
    return issues


def _image_and_mask(result: Any) -> bool:
    return (
        isinstance(result, tuple)
        and len(result) == 2
        and all(isinstance(part, torch.Tensor) for part in result)
        and result[0].ndim == 3
        and result[1].ndim == 2
    )
