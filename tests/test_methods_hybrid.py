"""Tests of pctkit.methods.hybrid: the hybrid net alone under image labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit.constants import IGNORE_INDEX
from pctkit.losses import class_aware_cross_entropy, max_pool_classification_loss
from pctkit.methods.base import Batch, MethodInputs
from pctkit.methods.hybrid import Hybrid, hybrid_step

NUM_CLASSES = 4


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, NUM_CLASSES, kernel_size=1)


def _batch() -> Batch:
    """2 strong images with masks (one pixel ignored), 2 weak ones without."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 4, 4, generator=generator)
    labels = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0, 0, 1]])
    masks = torch.full((4, 4, 4), IGNORE_INDEX, dtype=torch.long)
    masks[0] = torch.tensor([0, 1, 2, 0]).repeat(4, 1)
    masks[1] = torch.tensor([3, 2, 0, 0]).repeat(4, 1)
    masks[0, 0, 0] = IGNORE_INDEX
    return Batch(images, masks, labels, torch.tensor([True, True, False, False]), num_strong=2)


def _segmentation_loss(
    logits: Tensor, target: Tensor, image_labels: Tensor, reduction: str = "mean"
) -> Tensor:
    return class_aware_cross_entropy(logits, target, image_labels, reduction=reduction)  # type: ignore[arg-type]


def _expected(net: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Strong CCE and the classification loss, from plain torch functions."""
    logits = net(batch.images)
    masked = logits.masked_fill(batch.image_labels[:, :, None, None] == 0, -1e9)
    strong = F.cross_entropy(masked[:2], batch.masks[:2], ignore_index=IGNORE_INDEX)
    pooled = logits.amax(dim=(2, 3))
    classification = nn.MultiLabelSoftMarginLoss()(pooled[:, 1:], batch.image_labels[:, 1:])
    return strong, classification


def test_hybrid_step_is_strong_cce_plus_classification() -> None:
    net, batch = _net(1), _batch()
    result = hybrid_step(net, batch, _segmentation_loss, max_pool_classification_loss, 1.0, 0.5)
    strong, classification = _expected(net, batch)
    assert set(result.terms) == {"loss_strong", "loss_cls"}
    assert result.terms["loss_strong"].item() == pytest.approx(strong.item(), rel=1e-5)
    assert result.terms["loss_cls"].item() == pytest.approx(classification.item(), rel=1e-5)
    assert result.loss.item() == pytest.approx((strong + 0.5 * classification).item(), rel=1e-5)
    assert not any(term.requires_grad for term in result.terms.values())


def test_hybrid_method_has_one_net_and_no_state() -> None:
    inputs = MethodInputs(
        num_classes=NUM_CLASSES,
        new_net=lambda role, init_like=None: _net(1),
        segmentation_loss=_segmentation_loss,
        classification_loss=max_pool_classification_loss,
        reduce_sum=lambda tensor: tensor,
    )
    method = Hybrid(inputs, strong_weight=2.0, cls_weight=0.0)
    assert list(method.nets) == ["hybrid"] and method.labeller == "hybrid"
    assert method.draws_weak_images and method.predicts_with_image_labels
    assert method.state_dict() == {} and method.log_metrics() == {}
    batch = _batch()
    result = method.step(batch, micro_index=0)
    strong, _ = _expected(method.nets["hybrid"], batch)
    assert result.loss.item() == pytest.approx(2.0 * strong.item(), rel=1e-5)
