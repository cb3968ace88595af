"""Dynamic evaluation: the pseudo net's running per-class IoU, J (METHOD.md step 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from pctkit.constants import IGNORE_INDEX

WeightRule = Literal["released", "strict"]
"""How a present class that P has never hit (J_c = 0) enters the min of an image's weight:
``"released"`` leaves it out (the authors' code: ``sample_weight[sample_weight == 0] = 1``);
``"strict"`` keeps it, so the image gets weight 0 until every present class is hit."""


class DynamicEvaluation:
    """Momentum-accumulated per-class pixel counts of the pseudo net on strong images.

    ``T_c ← m T_c + #gt=c``, ``P_c ← m P_c + #pred=c``, ``TP_c ← m TP_c + #gt=pred=c``
    and ``J_c = TP_c / (T_c + P_c − TP_c)``, initialised ``T = 1, P = TP = 0`` (J = 0).
    Pixels whose ground truth is ``ignore_index`` are left out of all three counts.
    Under data parallelism one iteration's counts are summed over all workers before
    the update, so every worker holds the same J.
    """

    def __init__(
        self,
        num_classes: int,
        momentum: float = 0.99,
        ignore_index: int = IGNORE_INDEX,
        reduce_sum: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.ignore_index = ignore_index
        self.reduce_sum = reduce_sum
        self.target_counts = torch.ones(num_classes, dtype=torch.float64)
        self.predicted_counts = torch.zeros(num_classes, dtype=torch.float64)
        self.true_positive_counts = torch.zeros(num_classes, dtype=torch.float64)

    def counts(self, pred: Tensor, gt: Tensor) -> Tensor:
        """One batch's ``(3, C)`` counts: ground truth, prediction, true positives.

        Computed with integer ``scatter_add`` on the batch's device: no boolean indexing,
        so no host synchronisation in the training step. Ignored pixels add 0.
        """
        valid = (gt != self.ignore_index).flatten().to(torch.int64)
        gt_index = gt.flatten().to(torch.int64) * valid  # ignored pixels count (0 times) for class 0
        pred_index = pred.flatten().to(torch.int64)
        hits = valid * (gt_index == pred_index)
        counts = torch.zeros(3, self.num_classes, dtype=torch.int64, device=gt.device)
        counts[0].scatter_add_(0, gt_index, valid)
        counts[1].scatter_add_(0, pred_index, valid)
        counts[2].scatter_add_(0, gt_index, hits)
        return counts.to(torch.float64)

    def update(self, pred: Tensor, gt: Tensor, decay: bool = True) -> None:
        """Fold one iteration's predictions (``(N, H, W)``) against ground truth into J.

        Args:
            decay: apply the momentum. ``False`` adds the counts of a further
                micro-batch of the same iteration (gradient accumulation), so that the
                counts after the iteration equal those of one big batch.
        """
        batch_counts = self.counts(pred, gt)
        if self.reduce_sum is not None:
            batch_counts = self.reduce_sum(batch_counts)
        if self.target_counts.device != batch_counts.device:
            # The state follows the batches (GPU in training); checkpoints get CPU copies.
            for key in ("target_counts", "predicted_counts", "true_positive_counts"):
                setattr(self, key, getattr(self, key).to(batch_counts.device))
        m = self.momentum if decay else 1.0
        self.target_counts = m * self.target_counts + batch_counts[0]
        self.predicted_counts = m * self.predicted_counts + batch_counts[1]
        self.true_positive_counts = m * self.true_positive_counts + batch_counts[2]

    @property
    def scores(self) -> Tensor:
        """J per class, ``(C,)`` float64 in [0, 1]."""
        union = self.target_counts + self.predicted_counts - self.true_positive_counts
        return self.true_positive_counts / union

    def image_weights(self, image_labels: Tensor, power: float, rule: WeightRule = "released") -> Tensor:
        """``w_n = (min_c J_c) ** power`` over the classes present in each image,
        ``(N,)`` float32 (METHOD.md step 4).

        With ``rule="released"`` classes with ``J_c = 0`` are left out of the min, and an
        image whose present classes all have ``J_c = 0`` gets ``w_n = 1``; with
        ``"strict"`` they count, and such an image gets ``w_n = 0``.
        """
        scores = self.scores.to(image_labels.device, torch.float32)
        present = image_labels.to(torch.bool)
        if rule == "released":
            # The released code multiplies the labels by J and sets every zero to 1.
            present = present & (scores > 0)
        # Classes outside the min get the largest possible score, 1.
        masked = torch.where(present, scores.expand_as(present), torch.ones_like(scores))
        return masked.amin(dim=1).pow(power)

    def state_dict(self) -> dict[str, Tensor]:
        """The three count vectors, for checkpoints."""
        return {
            "target_counts": self.target_counts.detach().cpu().clone(),
            "predicted_counts": self.predicted_counts.detach().cpu().clone(),
            "true_positive_counts": self.true_positive_counts.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the counts saved by :meth:`state_dict`."""
        for key in ("target_counts", "predicted_counts", "true_positive_counts"):
            value = state[key].to(torch.float64).cpu()
            if value.shape != (self.num_classes,):
                raise ValueError(
                    f"dynamic evaluation state {key!r} has shape {tuple(value.shape)}, "
                    f"expected ({self.num_classes},)"
                )
            setattr(self, key, value.clone())
