"""Progressive cross training, one iteration at a time (METHOD.md steps 1-6).

:func:`pct_step` is the method: it reads like METHOD.md, term by term. :class:`PCT`
holds what it needs between iterations (the two nets and the dynamic evaluation) and
is what the ``pct`` method component returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pctkit.constants import IGNORE_INDEX
from pctkit.losses import class_aware_prediction, finite_mean
from pctkit.methods.base import Batch, ClassificationLoss, MethodInputs, SegmentationLoss, StepResult
from pctkit.methods.dynamic_evaluation import DynamicEvaluation, WeightRule

P2HMean = Literal["all_weak_pixels", "valid_pixels"]
"""What the pseudo-to-hybrid term's mean divides by: every pixel of the weak half (the
released code's ``torch.mean``, ignored pixels counting 0), or its labelled pixels."""


@dataclass(frozen=True)
class PCTSettings:
    """The weights of the four loss terms, and how the weak images are weighted."""

    strong: float = 1.0
    cls: float = 1.0
    h2p: float = 1.0
    p2h: float = 1.0
    score_power: float = 8.0
    weight_rule: WeightRule = "released"
    p2h_mean: P2HMean = "all_weak_pixels"


def ground_truth_or(pseudo_labels: Tensor, masks: Tensor, has_mask: Tensor) -> Tensor:
    """Pseudo labels, replaced by the ground truth for images that have a mask."""
    return torch.where(has_mask[:, None, None], masks, pseudo_labels)


def weighted_pixel_mean(
    per_pixel: Tensor, target: Tensor, image_weights: Tensor, over: P2HMean = "all_weak_pixels"
) -> Tensor:
    """``mean_i [w_n · ℓ(i)]`` over the valid pixels of the batch, or over all of them."""
    if over == "all_weak_pixels":
        count = torch.tensor(float(per_pixel.numel()), device=per_pixel.device)
    else:
        count = (target != IGNORE_INDEX).float().sum()
    return finite_mean(per_pixel * image_weights[:, None, None], count.clamp(min=1.0))


def pct_step(
    hybrid_net: nn.Module,
    pseudo_net: nn.Module,
    batch: Batch,
    dynamic_evaluation: DynamicEvaluation,
    segmentation_loss: SegmentationLoss,
    classification_loss: ClassificationLoss,
    settings: PCTSettings,
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
        image_weights = dynamic_evaluation.image_weights(
            labels[weak], settings.score_power, settings.weight_rule
        )

    # 5. The four terms.
    loss_strong = segmentation_loss(hybrid_logits[strong], batch.masks[strong], labels[strong])
    loss_cls = classification_loss(hybrid_logits, labels)
    loss_h2p = segmentation_loss(pseudo_logits[weak], hybrid_labels[weak], labels[weak])
    per_pixel_p2h = segmentation_loss(
        hybrid_logits[weak], pseudo_labels[weak], labels[weak], reduction="none"
    )
    loss_p2h = weighted_pixel_mean(per_pixel_p2h, pseudo_labels[weak], image_weights, settings.p2h_mean)

    loss = (
        settings.strong * loss_strong
        + settings.cls * loss_cls
        + settings.h2p * loss_h2p
        + settings.p2h * loss_p2h
    )
    terms = {
        "loss_strong": loss_strong.detach(),
        "loss_cls": loss_cls.detach(),
        "loss_h2p": loss_h2p.detach(),
        "loss_p2h": loss_p2h.detach(),
        "mean_w": image_weights.mean() if image_weights.numel() else torch.zeros((), device=loss.device),
    }
    return StepResult(loss, terms)


class PCT:
    """The hybrid and pseudo nets, teaching each other under image labels."""

    labeller = "hybrid"
    draws_weak_images = True
    predicts_with_image_labels = True

    def __init__(self, inputs: MethodInputs, settings: PCTSettings, score_momentum: float) -> None:
        self.nets: dict[str, nn.Module] = {
            "hybrid": inputs.new_net("hybrid"),
            "pseudo": inputs.new_net("pseudo"),
        }
        self.settings = settings
        self.segmentation_loss = inputs.segmentation_loss
        self.classification_loss = inputs.classification_loss
        self.dynamic_evaluation = DynamicEvaluation(
            inputs.num_classes, score_momentum, reduce_sum=inputs.reduce_sum
        )

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """One micro-batch of :func:`pct_step`."""
        return pct_step(
            self.nets["hybrid"],
            self.nets["pseudo"],
            batch,
            self.dynamic_evaluation,
            self.segmentation_loss,
            self.classification_loss,
            self.settings,
            new_iteration=micro_index == 0,
        )

    def state_dict(self) -> dict[str, Any]:
        """J's running counts."""
        return {"dynamic_evaluation": self.dynamic_evaluation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore J's running counts."""
        self.dynamic_evaluation.load_state_dict(state["dynamic_evaluation"])

    def log_metrics(self) -> dict[str, Any]:
        """J per class."""
        return {"J": [round(float(v), 5) for v in self.dynamic_evaluation.scores]}
