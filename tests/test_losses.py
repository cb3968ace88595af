"""Tests of the PCT losses against hand-computed values (METHOD.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pctkit import registry
from pctkit.losses import (
    IGNORE_INDEX,
    class_aware_cross_entropy,
    class_aware_log_softmax,
    class_aware_prediction,
    max_pool_classification_loss,
)


def _pixel(values: list[float]) -> torch.Tensor:
    """Logits ``(1, C, 1, 1)`` of a single pixel."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def _log_softmax_over(values: list[float], present: list[int]) -> dict[int, float]:
    """Hand computation: log of the softmax restricted to ``present`` classes."""
    normaliser = math.log(sum(math.exp(values[c]) for c in present))
    return {c: values[c] - normaliser for c in present}


# --------------------------------------------------------------------------- class-aware softmax


def test_class_aware_log_softmax_renormalises_over_present_classes() -> None:
    values = [1.0, 2.0, 3.0, 0.5]
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    result = class_aware_log_softmax(_pixel(values), labels)[0, :, 0, 0]
    expected = _log_softmax_over(values, [0, 2, 3])
    assert result[1] == float("-inf")
    for c, value in expected.items():
        assert result[c].item() == pytest.approx(value, abs=1e-6)
    # The present classes' probabilities sum to one.
    assert result.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_class_aware_log_softmax_with_every_class_present_is_log_softmax() -> None:
    logits = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.ones(2, 5)
    assert torch.allclose(class_aware_log_softmax(logits, labels), F.log_softmax(logits, dim=1))


def test_class_aware_log_softmax_is_per_image() -> None:
    logits = torch.cat([_pixel([0.0, 1.0, 2.0]), _pixel([0.0, 1.0, 2.0])])
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    result = class_aware_log_softmax(logits, labels)[:, :, 0, 0]
    assert torch.isinf(result[0, 2]) and torch.isinf(result[1, 1])
    assert result[0, 1].item() == pytest.approx(_log_softmax_over([0.0, 1.0, 2.0], [0, 1])[1], abs=1e-6)
    assert result[1, 2].item() == pytest.approx(_log_softmax_over([0.0, 1.0, 2.0], [0, 2])[2], abs=1e-6)


def test_class_aware_prediction_ignores_absent_classes() -> None:
    # Class 2 has the largest logit but is absent: the answer is the best present class.
    logits = torch.cat([_pixel([0.0, 1.0, 5.0]), _pixel([0.0, 1.0, 5.0])])
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    prediction = class_aware_prediction(logits, labels)
    assert prediction.shape == (2, 1, 1)
    assert prediction.dtype == torch.long
    assert prediction[:, 0, 0].tolist() == [1, 2]


def test_class_aware_prediction_with_only_background() -> None:
    logits = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert class_aware_prediction(logits, labels).eq(0).all()


# --------------------------------------------------------------------------- CCE


def _two_pixel_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """One image, 1x3 pixels, classes {0, 2} present; the third pixel is ignored."""
    columns = [[1.0, 2.0, 3.0], [0.0, 4.0, -1.0], [7.0, 7.0, 7.0]]
    logits = torch.tensor(columns, dtype=torch.float32).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[[2, 0, IGNORE_INDEX]]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    per_pixel = [
        -_log_softmax_over(columns[0], [0, 2])[2],
        -_log_softmax_over(columns[1], [0, 2])[0],
    ]
    return logits, target, labels, per_pixel


def test_class_aware_cross_entropy_reductions_by_hand() -> None:
    logits, target, labels, per_pixel = _two_pixel_case()
    none = class_aware_cross_entropy(logits, target, labels, reduction="none")
    assert none.shape == (1, 1, 3)
    assert none[0, 0, 0].item() == pytest.approx(per_pixel[0], abs=1e-6)
    assert none[0, 0, 1].item() == pytest.approx(per_pixel[1], abs=1e-6)
    assert none[0, 0, 2].item() == 0.0  # ignored pixel
    total = sum(per_pixel)
    assert class_aware_cross_entropy(logits, target, labels, reduction="sum").item() == pytest.approx(
        total, abs=1e-5
    )
    # The mean is over the two valid pixels, not the three pixels.
    assert class_aware_cross_entropy(logits, target, labels).item() == pytest.approx(total / 2, abs=1e-6)


def test_class_aware_cross_entropy_mean_is_over_valid_pixels_of_the_whole_batch() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 3, 3, generator=generator)
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    target = torch.tensor([[0, 1, 3], [3, 3, 1], [0, 0, 1]]).expand(2, 3, 3).clone()
    target[1] = torch.tensor([[0, 2, 2], [2, 0, 0], [2, 2, 0]])
    target[0, 0, :] = IGNORE_INDEX
    target[1, 2, 2] = IGNORE_INDEX
    valid = target != IGNORE_INDEX
    per_pixel = class_aware_cross_entropy(logits, target, labels, reduction="none")
    mean = class_aware_cross_entropy(logits, target, labels)
    assert mean.item() == pytest.approx((per_pixel.sum() / valid.sum()).item(), abs=1e-6)
    # And it equals plain cross entropy on the masked logits.
    masked = logits.masked_fill(labels[:, :, None, None] == 0, -1e9)
    assert mean.item() == pytest.approx(F.cross_entropy(masked, target, ignore_index=255).item(), abs=1e-5)


def test_class_aware_cross_entropy_with_no_valid_pixel_is_zero() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), IGNORE_INDEX)
    loss = class_aware_cross_entropy(logits, target, torch.ones(1, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_class_aware_cross_entropy_ignores_whatever_logits_ignored_pixels_have() -> None:
    logits, target, labels, _ = _two_pixel_case()
    changed = logits.clone()
    changed[..., 2] = torch.tensor([-50.0, 80.0, 1e4]).view(1, 3, 1)
    assert torch.equal(
        class_aware_cross_entropy(logits, target, labels), class_aware_cross_entropy(changed, target, labels)
    )


def test_class_aware_cross_entropy_custom_ignore_index() -> None:
    logits, _, labels, per_pixel = _two_pixel_case()
    target = torch.tensor([[[2, 0, 1]]])  # class 1 is absent: it must be the ignored one
    loss = class_aware_cross_entropy(logits, target, labels, ignore_index=1)
    assert loss.item() == pytest.approx(sum(per_pixel) / 2, abs=1e-6)


# --------------------------------------------------------------------------- classification loss


def test_max_pool_classification_loss_by_hand() -> None:
    # Two images, three classes, 1x2 pixels. Max pooling picks one score per class.
    logits = torch.tensor(
        [
            [[[9.0, -9.0]], [[0.5, -1.0]], [[-2.0, 1.0]]],
            [[[0.0, 0.0]], [[3.0, 2.0]], [[-0.5, -4.0]]],
        ]
    )
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])

    def bce(score: float, target: float) -> float:
        probability = 1.0 / (1.0 + math.exp(-score))
        return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))

    # Background (class 0) takes no part, whatever its logits.
    expected = (bce(0.5, 0.0) + bce(1.0, 1.0) + bce(3.0, 1.0) + bce(-0.5, 0.0)) / 4
    assert max_pool_classification_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_max_pool_classification_loss_is_multilabel_soft_margin_on_foreground() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 4, 4, generator=generator)
    labels = (torch.rand(3, 5, generator=generator) > 0.5).float()
    labels[:, 0] = 1.0
    pooled = logits.amax(dim=(2, 3))[:, 1:]
    expected = torch.nn.MultiLabelSoftMarginLoss()(pooled, labels[:, 1:])
    assert max_pool_classification_loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_registered_losses_compute_the_same_formulas() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 4, 3, 3, generator=generator)
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    target = class_aware_prediction(torch.randn(2, 4, 3, 3, generator=generator), labels)
    segmentation = registry.get("losses", "class_aware_cross_entropy").build()
    classification = registry.get("losses", "max_pool_soft_margin").build()
    assert torch.equal(
        segmentation(logits, target, labels), class_aware_cross_entropy(logits, target, labels)
    )
    assert classification(logits, labels).item() == pytest.approx(
        max_pool_classification_loss(logits, labels).item(), abs=1e-7
    )


# --------------------------------------------------------------------------- numerical safety


def _random_case(scale: float, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of magnitude ``scale``, class-aware targets, some ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 5, generator=generator).sign() * scale
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    target = torch.randint(0, 4, (2, 5, 5), generator=generator)
    # Only present classes can be targets (absent ones cost inf by definition).
    target = torch.where(labels.gather(1, target.flatten(1)).view_as(target) > 0, target, 0)
    target[:, 0, :] = IGNORE_INDEX
    return logits, target, labels


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_losses_and_gradients_are_finite_for_huge_logits(scale: float) -> None:
    logits, target, labels = _random_case(scale)
    logits.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):
        value = class_aware_cross_entropy(logits, target, labels, reduction=reduction)
        assert torch.isfinite(value).all(), reduction
    loss = class_aware_cross_entropy(logits, target, labels) + max_pool_classification_loss(logits, labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_losses_stay_finite_near_the_float32_maximum() -> None:
    # Logits of 0 and 3e38: each pixel's loss (up to 3e38) is representable, and so must
    # their means be, although a plain sum of two of them overflows float32.
    logits, target, labels = _random_case(1.0)
    logits = (logits > 0).float() * 3e38
    logits.requires_grad_(True)
    segmentation = class_aware_cross_entropy(logits, target, labels)
    classification = max_pool_classification_loss(logits, labels)
    assert segmentation.item() > 1e37  # some targets sit 3e38 below the best logit
    assert torch.isfinite(segmentation) and torch.isfinite(classification)
    (segmentation + classification).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert torch.isfinite(
        class_aware_log_softmax(logits, labels).masked_fill(labels[:, :, None, None] == 0, 0)
    ).all()


def test_losses_are_finite_under_bfloat16_autocast() -> None:
    generator = torch.Generator().manual_seed(6)
    conv = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(2, 3, 5, 5, generator=generator)
    _, target, labels = _random_case(1.0)
    for scale in (1.0, 1e4):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = conv(images) * scale
            assert logits.dtype == torch.bfloat16
            loss = class_aware_cross_entropy(logits, target, labels) + max_pool_classification_loss(
                logits, labels
            )
            prediction = class_aware_prediction(logits, labels)
        assert torch.isfinite(loss)
        # Absent classes are never predicted, also in low precision.
        assert labels.gather(1, prediction.flatten(1)).eq(1).all()
        loss.backward()
        assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
