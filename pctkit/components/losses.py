"""Built-in loss components: configured callables over logits, targets and image labels.

A segmentation loss is called as ``loss(logits, target, image_labels, reduction)`` and
returns per-pixel losses for ``reduction="none"``; a classification loss is called as
``loss(logits, image_labels)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pctkit.losses import class_aware_cross_entropy as _class_aware_cross_entropy
from pctkit.losses import finite_mean, max_pool_classification_loss


class ClassAwareCrossEntropy:
    """CCE: cross entropy under the class-aware softmax (see ``pctkit.losses``)."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(
        self,
        logits: Tensor,
        target: Tensor,
        image_labels: Tensor,
        reduction: Literal["mean", "none", "sum"] = "mean",
    ) -> Tensor:
        return _class_aware_cross_entropy(logits, target, image_labels, self.ignore_index, reduction)


class CrossEntropy:
    """Plain cross entropy over all classes; image labels are not used."""

    def __init__(self, ignore_index: int, label_smoothing: float) -> None:
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def __call__(
        self,
        logits: Tensor,
        target: Tensor,
        image_labels: Tensor,
        reduction: Literal["mean", "none", "sum"] = "mean",
    ) -> Tensor:
        return F.cross_entropy(
            logits.float(),
            target,
            ignore_index=self.ignore_index,
            reduction=reduction,
            label_smoothing=self.label_smoothing,
        )


def class_aware_cross_entropy(*, ignore_index: int = 255) -> ClassAwareCrossEntropy:
    """Class-aware cross entropy: softmax over the classes each image contains.

    Args:
        ignore_index: label of pixels that count for nothing.
    """
    return ClassAwareCrossEntropy(ignore_index)


def cross_entropy(*, ignore_index: int = 255, label_smoothing: float = 0.0) -> CrossEntropy:
    """Plain cross entropy over all classes (retraining, supervised baselines).

    Args:
        ignore_index: label of pixels that count for nothing.
        label_smoothing: amount of label smoothing, 0 for none.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return CrossEntropy(ignore_index, label_smoothing)


class PooledSoftMargin:
    """Multi-label soft-margin loss on spatially pooled logits, foreground classes only."""

    def __init__(self, pooling: Literal["max", "lse"], sharpness: float) -> None:
        self.pooling = pooling
        self.sharpness = sharpness

    def __call__(self, logits: Tensor, image_labels: Tensor) -> Tensor:
        if self.pooling == "max":
            return max_pool_classification_loss(logits, image_labels)
        flat = logits.float().flatten(2)
        # log-mean-exp: a smooth maximum; sharpness -> inf gives max pooling.
        r = self.sharpness
        scores = (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r
        per_class = F.binary_cross_entropy_with_logits(
            scores[:, 1:], image_labels.float()[:, 1:], reduction="none"
        )
        return finite_mean(per_class, per_class.numel())


def max_pool_soft_margin() -> PooledSoftMargin:
    """The method's classification loss: global max pooling + multi-label soft margin.

    Foreground classes only, averaged over classes and images (METHOD.md).
    """
    return PooledSoftMargin("max", 0.0)


def lse_pool_soft_margin(*, sharpness: float = 5.0) -> PooledSoftMargin:
    """Classification loss on log-sum-exp pooled logits (a smooth max), soft margin.

    Args:
        sharpness: the LSE temperature r; large values approach max pooling.
    """
    if sharpness <= 0:
        raise ValueError(f"sharpness must be > 0, got {sharpness}")
    return PooledSoftMargin("lse", sharpness)
