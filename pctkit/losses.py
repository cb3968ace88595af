"""The losses of progressive cross training (METHOD.md), as plain functions.

Shapes: ``logits`` ``(N, C, H, W)``, ``target`` ``(N, H, W)`` long with ``ignore_index``
for unlabelled pixels, ``image_labels`` ``(N, C)`` in {0, 1} with background (class 0)
always set.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pctkit.constants import IGNORE_INDEX


def class_aware_logits(logits: Tensor, image_labels: Tensor) -> Tensor:
    """The logits in fp32 with the classes an image does not contain set to ``-inf``:
    what both the class-aware softmax and the class-aware prediction start from."""
    present = image_labels.to(torch.bool)[:, :, None, None]
    # fp32: under autocast log_softmax runs in fp32 anyway. Adding 0 or -inf per image and
    # class is exact, and unlike masked_fill its backward passes gradients on uncopied.
    bias = torch.zeros(present.shape, dtype=torch.float32, device=logits.device).masked_fill_(
        ~present, float("-inf")
    )
    return logits.float() + bias


def class_aware_log_softmax(logits: Tensor, image_labels: Tensor) -> Tensor:
    """Log of the class-aware softmax: the softmax over the classes the image contains.

    ``p̃_c(i) = y_c exp(f_c(i)) / Σ_k y_k exp(f_k(i))``. Absent classes get ``-inf``.
    Computed as ``log_softmax`` of the masked logits, so it never overflows, also in
    fp16/bf16 (METHOD.md [pctkit]).
    """
    return F.log_softmax(class_aware_logits(logits, image_labels), dim=1)


def class_aware_prediction(logits: Tensor, image_labels: Tensor) -> Tensor:
    """The argmax over the classes present in each image: ``(N, H, W)`` long."""
    # max().indices: the same classes as argmax, several times faster on CPU.
    return class_aware_logits(logits, image_labels).max(dim=1).indices


def class_aware_cross_entropy(
    logits: Tensor,
    target: Tensor,
    image_labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Literal["mean", "none", "sum"] = "mean",
) -> Tensor:
    """Class-aware cross entropy (CCE): ``-log p̃_{t(i)}(i)`` over valid pixels.

    Args:
        logits: ``(N, C, H, W)`` at the target's resolution.
        target: ``(N, H, W)`` class indices; ``ignore_index`` pixels count for nothing.
        image_labels: ``(N, C)`` multi-hot, background included.
        ignore_index: label of unlabelled pixels.
        reduction: ``"mean"`` over valid pixels (0 when there are none), ``"sum"``, or
            ``"none"`` for per-pixel losses ``(N, H, W)`` (0 at ignored pixels).

    A target class absent from the image labels would cost ``inf``; METHOD.md's union
    of image labels and mask classes prevents that for ground truth, and class-aware
    pseudo labels are present by construction.
    """
    return negative_log_likelihood(
        class_aware_log_softmax(logits, image_labels), target, ignore_index, reduction
    )


def negative_log_likelihood(
    log_probabilities: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Literal["mean", "none", "sum"] = "mean",
) -> Tensor:
    """``-log p_{t(i)}(i)`` over valid pixels, from log-probabilities ``(N, C, H, W)``;
    ``reduction`` as in :func:`class_aware_cross_entropy`."""
    # nll_loss gives 0 at ignored pixels (and at them a zero gradient) in one kernel.
    per_pixel = F.nll_loss(log_probabilities, target, ignore_index=ignore_index, reduction="none")
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    return finite_mean(per_pixel, (target != ignore_index).sum().clamp(min=1))


def finite_mean(values: Tensor, count: Tensor | int) -> Tensor:
    """``values.sum() / count``, dividing first: each term may be near the float32
    maximum (logits of 3e38 give such losses), where a plain sum would overflow to inf."""
    return (values / count).sum()


def max_pool_classification_loss(logits: Tensor, image_labels: Tensor) -> Tensor:
    """Multi-label soft-margin loss on globally max-pooled logits, foreground only.

    Global max pooling over space gives one score per class; the loss is sigmoid binary
    cross entropy against the image labels over classes ``1..C-1``, averaged over
    classes and images (``MultiLabelSoftMarginLoss``).
    """
    scores = logits.float().amax(dim=(2, 3))[:, 1:]
    targets = image_labels.float()[:, 1:]
    per_class = F.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    return finite_mean(per_class, per_class.numel())
