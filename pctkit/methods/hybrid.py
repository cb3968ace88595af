"""The hybrid net alone: the ablation that isolates what the image labels contribute."""

from __future__ import annotations

from torch import nn

from pctkit.methods.base import (
    Batch,
    ClassificationLoss,
    MethodInputs,
    SegmentationLoss,
    StatelessMethod,
    StepResult,
)


def hybrid_step(
    hybrid_net: nn.Module,
    batch: Batch,
    segmentation_loss: SegmentationLoss,
    classification_loss: ClassificationLoss,
    strong_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> StepResult:
    """Strong CCE plus the classification loss on the whole batch."""
    logits = hybrid_net(batch.images)
    loss_strong = segmentation_loss(
        logits[batch.strong], batch.masks[batch.strong], batch.image_labels[batch.strong]
    )
    loss_cls = classification_loss(logits, batch.image_labels)
    loss = strong_weight * loss_strong + cls_weight * loss_cls
    return StepResult(loss, {"loss_strong": loss_strong.detach(), "loss_cls": loss_cls.detach()})


class Hybrid(StatelessMethod):
    """One hybrid net under image labels, without a pseudo net."""

    labeller = "hybrid"

    def __init__(self, inputs: MethodInputs, strong_weight: float, cls_weight: float) -> None:
        self.nets = {"hybrid": inputs.new_net("hybrid")}
        self.segmentation_loss = inputs.segmentation_loss
        self.classification_loss = inputs.classification_loss
        self.strong_weight = strong_weight
        self.cls_weight = cls_weight

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """One micro-batch of :func:`hybrid_step`."""
        return hybrid_step(
            self.nets["hybrid"],
            batch,
            self.segmentation_loss,
            self.classification_loss,
            self.strong_weight,
            self.cls_weight,
        )
