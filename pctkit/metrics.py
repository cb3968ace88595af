"""Segmentation metrics: a confusion matrix over a whole split and its mIoU."""

from __future__ import annotations

import torch
from torch import Tensor

from pctkit.constants import IGNORE_INDEX


class ConfusionMatrix:
    """A ``C x C`` confusion matrix (rows: ground truth, columns: prediction).

    mIoU comes from the matrix accumulated over the whole split, never from an
    average of per-image IoUs. Pixels whose ground truth is ``ignore_index`` are left out.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, gt: Tensor) -> None:
        """Add a batch of predictions and ground truths of the same shape."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
        valid = gt != self.ignore_index
        gt_valid = gt[valid].to(torch.int64).cpu()
        pred_valid = pred[valid].to(torch.int64).cpu()
        # Out-of-range classes would silently land in another cell (or break the reshape).
        for what, values in (("ground truth", gt_valid), ("prediction", pred_valid)):
            if values.numel() and not 0 <= int(values.min()) <= int(values.max()) < self.num_classes:
                bad = int(values.max()) if int(values.max()) >= self.num_classes else int(values.min())
                raise ValueError(f"{what} has class {bad}, outside 0..{self.num_classes - 1}")
        index = gt_valid * self.num_classes + pred_valid
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix (from another worker or split part)."""
        self.matrix += other.matrix

    def iou(self) -> Tensor:
        """Per-class IoU, ``NaN`` for classes absent from both ground truth and prediction."""
        true_positive = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - true_positive
        return torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)

    def miou(self) -> float:
        """Mean IoU over all classes that occur in ground truth or prediction."""
        iou = self.iou()
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if bool(present.any()) else 0.0

    def pixel_accuracy(self) -> float:
        """Fraction of valid pixels predicted correctly."""
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else 0.0
