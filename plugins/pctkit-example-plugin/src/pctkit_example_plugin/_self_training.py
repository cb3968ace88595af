"""The ``self_training`` method's step (see ``self_training``)."""

from __future__ import annotations

from typing import Any

import torch

from pctkit.constants import IGNORE_INDEX
from pctkit.losses import class_aware_log_softmax
from pctkit.methods.base import Batch, MethodInputs, StepResult


class SelfTraining:
    """One net, ``student``, on strong masks and its own confident weak labels."""

    labeller = "student"
    draws_weak_images = True
    predicts_with_image_labels = True

    def __init__(self, inputs: MethodInputs, threshold: float, weak_weight: float) -> None:
        self.nets = {"student": inputs.new_net("student", init_like="hybrid")}
        self.segmentation_loss = inputs.segmentation_loss
        self.threshold = threshold
        self.weak_weight = weak_weight

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """Strong loss plus the weighted loss on confident weak pixels."""
        strong, weak, labels = batch.strong, batch.weak, batch.image_labels
        logits = self.nets["student"](batch.images)
        with torch.no_grad():
            confidence, prediction = class_aware_log_softmax(logits[weak], labels[weak]).max(dim=1)
            sure = confidence.exp() >= self.threshold
            # Weak draws that have a mask keep their ground truth.
            own = torch.where(sure, prediction, torch.full_like(prediction, IGNORE_INDEX))
            targets = torch.where(batch.has_mask[weak, None, None], batch.masks[weak], own)
        loss_strong = self.segmentation_loss(logits[strong], batch.masks[strong], labels[strong])
        loss_weak = self.segmentation_loss(logits[weak], targets, labels[weak])
        loss = loss_strong + self.weak_weight * loss_weak
        terms = {
            "loss_strong": loss_strong.detach(),
            "loss_weak": loss_weak.detach(),
            "confident": sure.float().mean() if sure.numel() else torch.zeros((), device=logits.device),
        }
        return StepResult(loss, terms)

    def state_dict(self) -> dict[str, Any]:
        """No state beyond the net."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    def log_metrics(self) -> dict[str, Any]:
        """Nothing beyond the terms."""
        return {}
