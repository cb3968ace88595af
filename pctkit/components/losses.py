"""Built-in loss components: configured callables over logits, targets and image labels.

A segmentation loss is called as ``loss(logits, target, image_labels, reduction)`` and
returns per-pixel losses for ``reduction="none"``; a classification loss is called as
``loss(logits, image_labels)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pctkit.components.contracts import ParameterError

if TYPE_CHECKING:
    from pctkit.components._losses import ClassAwareCrossEntropy, CrossEntropy, PooledSoftMargin


def class_aware_cross_entropy(*, ignore_index: int = 255) -> ClassAwareCrossEntropy:
    """Class-aware cross entropy: softmax over the classes each image contains.

    Args:
        ignore_index: label of pixels that count for nothing.
    """
    from pctkit.components._losses import ClassAwareCrossEntropy

    return ClassAwareCrossEntropy(ignore_index)


def cross_entropy(*, ignore_index: int = 255, label_smoothing: float = 0.0) -> CrossEntropy:
    """Plain cross entropy over all classes (retraining, supervised baselines).

    Args:
        ignore_index: label of pixels that count for nothing.
        label_smoothing: amount of label smoothing, 0 for none.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ParameterError("label_smoothing", f"must be in [0, 1), got {label_smoothing}")
    from pctkit.components._losses import CrossEntropy

    return CrossEntropy(ignore_index, label_smoothing)


def max_pool_soft_margin() -> PooledSoftMargin:
    """The method's classification loss: global max pooling + multi-label soft margin.

    Foreground classes only, averaged over classes and images (METHOD.md).
    """
    from pctkit.components._losses import PooledSoftMargin

    return PooledSoftMargin("max", 0.0)


def lse_pool_soft_margin(*, sharpness: float = 5.0) -> PooledSoftMargin:
    """Classification loss on log-sum-exp pooled logits (a smooth max), soft margin.

    Args:
        sharpness: the LSE temperature r; large values approach max pooling.
    """
    if sharpness <= 0:
        raise ParameterError("sharpness", f"must be > 0, got {sharpness}")
    from pctkit.components._losses import PooledSoftMargin

    return PooledSoftMargin("lse", sharpness)
