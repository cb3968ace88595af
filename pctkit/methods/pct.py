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
from pctkit.losses import class_aware_logits, finite_mean
from pctkit.methods.base import Batch, ClassificationLoss, MethodInputs, SegmentationLoss, StepResult
from pctkit.methods.dynamic_evaluation import DynamicEvaluation, WeightRule

ALL_ROWS = slice(None)

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


class ClassAwareView:
    """One net's logits on a batch, restricted to each image's classes once and shared
    by the net's class-aware prediction and its CCE terms (both use p̃, METHOD.md).

    Where the segmentation loss can start from the restricted logits
    (``per_pixel_from_class_aware_logits``, as class-aware CE can), the restriction is
    not redone per term; any other loss is called on the raw logits. Predictions and
    losses are taken on the rows (images) that need them: rows of the batch dimension
    are views, so no logits are copied.
    """

    def __init__(self, logits: Tensor, image_labels: Tensor, loss: SegmentationLoss) -> None:
        self.logits = logits
        self.image_labels = image_labels
        self.loss = loss
        self.masked = class_aware_logits(logits, image_labels)
        self.shared = getattr(loss, "per_pixel_from_class_aware_logits", None)

    @torch.no_grad()
    def prediction(self, rows: slice = ALL_ROWS) -> Tensor:
        """The class-aware prediction ``(n, H, W)`` of ``rows``: argmax over the present
        classes."""
        return self.masked[rows].detach().max(dim=1).indices

    def per_pixel(self, target: Tensor, rows: slice = ALL_ROWS) -> Tensor:
        """The loss of every pixel of ``rows`` against ``target`` (0 where ignored)."""
        if self.shared is not None:
            per_pixel: Tensor = self.shared(self.masked[rows], target)
            return per_pixel
        return self.loss(self.logits[rows], target, self.image_labels[rows], reduction="none")


def valid_pixel_mean(per_pixel: Tensor, target: Tensor) -> Tensor:
    """The mean of per-pixel losses over the pixels ``target`` labels (0 if none)."""
    return finite_mean(per_pixel, (target != IGNORE_INDEX).sum().clamp(min=1))


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
    hybrid = ClassAwareView(hybrid_logits, labels, segmentation_loss)
    pseudo = ClassAwareView(pseudo_logits, labels, segmentation_loss)

    # 2. Hard, detached pseudo labels; ground truth replaces them where it exists. H
    # learns ground truth on the strong half and Ŷ_p on the weak half; P learns Ŷ_h on
    # the weak half only, so H's prediction is taken there only.
    with torch.no_grad():
        pseudo_prediction = pseudo.prediction()
        truth_rows = batch.has_mask.clone()
        truth_rows[strong] = True  # strong images always learn their masks
        hybrid_target = ground_truth_or(pseudo_prediction, batch.masks, truth_rows)
        pseudo_target = ground_truth_or(hybrid.prediction(weak), batch.masks[weak], batch.has_mask[weak])

        # 3. Dynamic evaluation of P on the strong half; 4. weights of the weak half.
        dynamic_evaluation.update(pseudo_prediction[strong], batch.masks[strong], decay=new_iteration)
        image_weights = dynamic_evaluation.image_weights(
            labels[weak], settings.score_power, settings.weight_rule
        )

    # 5. The four terms. H's CCE is computed once over the whole batch, against the
    # targets of its two terms; P's over the weak half.
    hybrid_per_pixel = hybrid.per_pixel(hybrid_target)
    pseudo_per_pixel = pseudo.per_pixel(pseudo_target, weak)

    loss_strong = valid_pixel_mean(hybrid_per_pixel[strong], batch.masks[strong])
    loss_cls = classification_loss(hybrid_logits, labels)
    loss_h2p = valid_pixel_mean(pseudo_per_pixel, pseudo_target)
    loss_p2h = weighted_pixel_mean(
        hybrid_per_pixel[weak], hybrid_target[weak], image_weights, settings.p2h_mean
    )

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
