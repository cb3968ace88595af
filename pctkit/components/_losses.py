"""The loss callables behind the built-in loss components (see :mod:`.losses`)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pctkit.losses import class_aware_cross_entropy as _class_aware_cross_entropy
from pctkit.losses import finite_mean, max_pool_classification_loss, negative_log_likelihood


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

    def per_pixel_from_class_aware_logits(self, class_aware_logits: Tensor, target: Tensor) -> Tensor:
        """Per-pixel CCE from logits already restricted to each image's classes
        (:func:`pctkit.losses.class_aware_logits`): a method that needs the restriction
        for its predictions too computes it once."""
        return negative_log_likelihood(
            F.log_softmax(class_aware_logits, dim=1), target, self.ignore_index, "none"
        )


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
