"""Stage 1: progressive cross training, one iteration at a time (METHOD.md steps 1-6).

:func:`pct_step` is the method. :func:`hybrid_step` and :func:`supervised_step` are the
ablations its claims rest on: the hybrid net alone under image labels, and one net on
strong masks only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.losses import IGNORE_INDEX, class_aware_prediction, finite_mean

SegmentationLoss = Callable[..., Tensor]
"""``loss(logits, target, image_labels, reduction) -> Tensor`` (see components.losses)."""
ClassificationLoss = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Batch:
    """One (micro-)batch on the device: the strong images first, then the weak ones."""

    images: Tensor
    masks: Tensor
    image_labels: Tensor
    has_mask: Tensor
    num_strong: int

    @property
    def strong(self) -> slice:
        """Rows of the strong half."""
        return slice(0, self.num_strong)

    @property
    def weak(self) -> slice:
        """Rows of the weak half."""
        return slice(self.num_strong, self.images.shape[0])


@dataclass(frozen=True)
class PCTWeights:
    """The weights of the four loss terms and the score power γ."""

    strong: float = 1.0
    cls: float = 1.0
    h2p: float = 1.0
    p2h: float = 1.0
    score_power: float = 8.0


@dataclass
class StepResult:
    """The loss to back-propagate and its named terms (detached)."""

    loss: Tensor
    terms: dict[str, Tensor]


def ground_truth_or(pseudo_labels: Tensor, masks: Tensor, has_mask: Tensor) -> Tensor:
    """Pseudo labels, replaced by the ground truth for images that have a mask."""
    return torch.where(has_mask[:, None, None], masks, pseudo_labels)


def weighted_pixel_mean(per_pixel: Tensor, target: Tensor, image_weights: Tensor) -> Tensor:
    """``mean_i [w_n · ℓ(i)]`` over the valid pixels of the batch."""
    valid = (target != IGNORE_INDEX).float()
    return finite_mean(per_pixel * image_weights[:, None, None], valid.sum().clamp(min=1.0))


def pct_step(
    hybrid_net: nn.Module,
    pseudo_net: nn.Module,
    batch: Batch,
    dynamic_evaluation: DynamicEvaluation,
    segmentation_loss: SegmentationLoss,
    classification_loss: ClassificationLoss,
    weights: PCTWeights,
    new_iteration: bool = True,
) -> StepResult:
    """One PCT iteration's loss (METHOD.md "One PCT iteration").

    Args:
        new_iteration: ``False`` for the second and later micro-batches of an
            accumulated iteration: their counts add to J without a second decay.
    """
    strong, weak = batch.strong, batch.weak
    labels = batch.image_labels

    # 1. Forward both nets on the whole batch.
    hybrid_logits = hybrid_net(batch.images)
    pseudo_logits = pseudo_net(batch.images)

    # 2. Hard, detached pseudo labels; ground truth replaces them where it exists.
    with torch.no_grad():
        hybrid_labels = ground_truth_or(
            class_aware_prediction(hybrid_logits, labels), batch.masks, batch.has_mask
        )
        pseudo_prediction = class_aware_prediction(pseudo_logits, labels)
        pseudo_labels = ground_truth_or(pseudo_prediction, batch.masks, batch.has_mask)

        # 3. Dynamic evaluation of P on the strong half; 4. weights of the weak half.
        dynamic_evaluation.update(pseudo_prediction[strong], batch.masks[strong], decay=new_iteration)
        image_weights = dynamic_evaluation.image_weights(labels[weak], weights.score_power)

    # 5. The four terms.
    loss_strong = segmentation_loss(hybrid_logits[strong], batch.masks[strong], labels[strong])
    loss_cls = classification_loss(hybrid_logits, labels)
    loss_h2p = segmentation_loss(pseudo_logits[weak], hybrid_labels[weak], labels[weak])
    per_pixel_p2h = segmentation_loss(
        hybrid_logits[weak], pseudo_labels[weak], labels[weak], reduction="none"
    )
    loss_p2h = weighted_pixel_mean(per_pixel_p2h, pseudo_labels[weak], image_weights)

    loss = (
        weights.strong * loss_strong
        + weights.cls * loss_cls
        + weights.h2p * loss_h2p
        + weights.p2h * loss_p2h
    )
    terms = {
        "loss_strong": loss_strong.detach(),
        "loss_cls": loss_cls.detach(),
        "loss_h2p": loss_h2p.detach(),
        "loss_p2h": loss_p2h.detach(),
        "mean_w": image_weights.mean() if image_weights.numel() else torch.zeros((), device=loss.device),
    }
    return StepResult(loss, terms)


def hybrid_step(
    hybrid_net: nn.Module,
    batch: Batch,
    segmentation_loss: SegmentationLoss,
    classification_loss: ClassificationLoss,
    weights: PCTWeights,
) -> StepResult:
    """The hybrid net alone: strong CCE plus the classification loss on the whole batch."""
    logits = hybrid_net(batch.images)
    loss_strong = segmentation_loss(
        logits[batch.strong], batch.masks[batch.strong], batch.image_labels[batch.strong]
    )
    loss_cls = classification_loss(logits, batch.image_labels)
    loss = weights.strong * loss_strong + weights.cls * loss_cls
    return StepResult(loss, {"loss_strong": loss_strong.detach(), "loss_cls": loss_cls.detach()})


def supervised_step(net: nn.Module, images: Tensor, masks: Tensor) -> StepResult:
    """Plain cross entropy on labelled images (ignore 255)."""
    logits = net(images)
    loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
    return StepResult(loss, {"loss_ce": loss.detach()})
