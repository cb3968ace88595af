"""Tests of one PCT iteration: each loss term recomputed here independently (METHOD.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit.engine.cross_training import (
    Batch,
    PCTWeights,
    ground_truth_or,
    hybrid_step,
    pct_step,
    supervised_step,
    weighted_pixel_mean,
)
from pctkit.engine.dynamic_evaluation import DynamicEvaluation
from pctkit.losses import class_aware_cross_entropy, max_pool_classification_loss

NUM_CLASSES = 4
IGNORE = 255
MOMENTUM = 0.5
WEIGHTS = PCTWeights(strong=1.0, cls=0.5, h2p=2.0, p2h=3.0, score_power=2.0)


def _net(seed: int) -> nn.Module:
    """A 1x1 convolution: the smallest network mapping images to per-pixel logits."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, NUM_CLASSES, kernel_size=1)


def _segmentation_loss(
    logits: Tensor, target: Tensor, image_labels: Tensor, reduction: str = "mean"
) -> Tensor:
    return class_aware_cross_entropy(logits, target, image_labels, reduction=reduction)  # type: ignore[arg-type]


def _masked(logits: Tensor, labels: Tensor) -> Tensor:
    """Logits with absent classes pushed far down: plain softmax then equals the class-aware one."""
    return logits.masked_fill(labels[:, :, None, None] == 0, -1e9)


def _batch(pseudo_net: nn.Module) -> Batch:
    """2 strong + 3 weak images of 4x4 pixels; the last weak image has a mask.

    The strong masks are the pseudo net's own class-aware prediction (one pixel
    ignored), so that its J is non-zero after this iteration's update and the
    weak images get non-zero weights.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 4, 4, generator=generator)
    labels = torch.tensor(
        [
            [1.0, 1.0, 1.0, 0.0],
            [1.0, 0.0, 1.0, 1.0],
            [1.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 1.0, 1.0],
            [1.0, 1.0, 1.0, 1.0],
        ]
    )
    with torch.no_grad():
        pseudo_prediction = _masked(pseudo_net(images), labels).argmax(1)
    masks = torch.full((5, 4, 4), IGNORE, dtype=torch.long)
    masks[:2] = pseudo_prediction[:2]
    masks[0, 0, 0] = IGNORE
    # The weak image with a mask: a ground truth unlike any net's prediction.
    masks[4] = torch.randint(0, NUM_CLASSES, (4, 4), generator=generator)
    masks[4, 3, :] = IGNORE
    has_mask = torch.tensor([True, True, False, False, True])
    return Batch(images=images, masks=masks, image_labels=labels, has_mask=has_mask, num_strong=2)


def _expected_terms(hybrid_net: nn.Module, pseudo_net: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """Every term of METHOD.md step 5, from plain torch functions."""
    labels, masks = batch.image_labels, batch.masks
    hybrid_logits = _masked(hybrid_net(batch.images), labels)
    pseudo_logits = _masked(pseudo_net(batch.images), labels)
    strong, weak = slice(0, 2), slice(2, 5)
    with torch.no_grad():
        has_mask = batch.has_mask[:, None, None]
        hybrid_labels = torch.where(has_mask, masks, hybrid_logits.argmax(1))
        pseudo_labels = torch.where(has_mask, masks, pseudo_logits.argmax(1))
        # Dynamic evaluation of P on the strong half, one update from T=1, P=TP=0.
        gt, prediction = masks[strong], pseudo_logits[strong].argmax(1)
        valid = gt != IGNORE
        gt_counts = torch.bincount(gt[valid], minlength=NUM_CLASSES).double()
        pred_counts = torch.bincount(prediction[valid], minlength=NUM_CLASSES).double()
        tp_counts = torch.bincount(gt[valid & (gt == prediction)], minlength=NUM_CLASSES).double()
        j = tp_counts / (MOMENTUM + gt_counts + pred_counts - tp_counts)
        weak_labels = labels[weak].bool()
        image_weights = torch.stack(
            [j[present].min() ** WEIGHTS.score_power for present in weak_labels]
        ).float()
    loss_strong = F.cross_entropy(hybrid_logits[strong], masks[strong], ignore_index=IGNORE)
    pooled = hybrid_net(batch.images).amax(dim=(2, 3))
    loss_cls = nn.MultiLabelSoftMarginLoss()(pooled[:, 1:], labels[:, 1:])
    loss_h2p = F.cross_entropy(pseudo_logits[weak], hybrid_labels[weak], ignore_index=IGNORE)
    per_pixel = F.cross_entropy(
        hybrid_logits[weak], pseudo_labels[weak], ignore_index=IGNORE, reduction="none"
    )
    valid_weak = (pseudo_labels[weak] != IGNORE).sum()
    loss_p2h = (per_pixel * image_weights[:, None, None]).sum() / valid_weak
    return {
        "loss_strong": loss_strong,
        "loss_cls": loss_cls,
        "loss_h2p": loss_h2p,
        "loss_p2h": loss_p2h,
        "mean_w": image_weights.mean(),
        "J": j,
    }


@pytest.fixture
def nets() -> tuple[nn.Module, nn.Module]:
    return _net(1), _net(2)


def _run(
    hybrid_net: nn.Module, pseudo_net: nn.Module, batch: Batch
) -> tuple[Tensor, dict[str, Tensor], DynamicEvaluation]:
    evaluation = DynamicEvaluation(NUM_CLASSES, momentum=MOMENTUM)
    result = pct_step(
        hybrid_net, pseudo_net, batch, evaluation, _segmentation_loss, max_pool_classification_loss, WEIGHTS
    )
    return result.loss, result.terms, evaluation


def test_pct_step_terms_match_an_independent_computation(nets: tuple[nn.Module, nn.Module]) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    loss, terms, evaluation = _run(hybrid_net, pseudo_net, batch)
    expected = _expected_terms(hybrid_net, pseudo_net, batch)
    for name in ("loss_strong", "loss_cls", "loss_h2p", "loss_p2h", "mean_w"):
        assert terms[name].item() == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-7), name
        assert not terms[name].requires_grad
    total = (
        WEIGHTS.strong * expected["loss_strong"]
        + WEIGHTS.cls * expected["loss_cls"]
        + WEIGHTS.h2p * expected["loss_h2p"]
        + WEIGHTS.p2h * expected["loss_p2h"]
    )
    assert loss.item() == pytest.approx(total.item(), rel=1e-5)
    # The weights come from J updated with this iteration's strong half (not J = 0):
    # the test is only meaningful if some weak image has a non-zero weight.
    assert torch.allclose(evaluation.scores, expected["J"])
    assert terms["mean_w"].item() > 0.01
    assert terms["loss_p2h"].item() > 0


def test_ground_truth_replaces_pseudo_labels_of_weak_images_with_masks(
    nets: tuple[nn.Module, nn.Module],
) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    _, terms, _ = _run(hybrid_net, pseudo_net, batch)
    # Hiding the mask of the last weak image (as if it had none) changes the H2P term...
    unmasked = Batch(
        batch.images, batch.masks, batch.image_labels, torch.tensor([True, True, False, False, False]), 2
    )
    _, unmasked_terms, _ = _run(hybrid_net, pseudo_net, unmasked)
    assert terms["loss_h2p"].item() != pytest.approx(unmasked_terms["loss_h2p"].item(), rel=1e-3)
    # ...and with the mask, that image's share of H2P is CE against its ground truth.
    with torch.no_grad():
        logits = _masked(pseudo_net(batch.images[4:]), batch.image_labels[4:])
        hybrid_prediction = _masked(hybrid_net(batch.images[2:4]), batch.image_labels[2:4]).argmax(1)
        pseudo_logits = _masked(pseudo_net(batch.images[2:4]), batch.image_labels[2:4])
    per_pixel_gt = F.cross_entropy(logits, batch.masks[4:], ignore_index=IGNORE, reduction="sum")
    per_pixel_rest = F.cross_entropy(pseudo_logits, hybrid_prediction, reduction="sum")
    valid = 2 * 16 + 12  # two unmasked weak images, and the masked one's 12 labelled pixels
    assert terms["loss_h2p"].item() == pytest.approx(
        ((per_pixel_gt + per_pixel_rest) / valid).item(), rel=1e-5
    )


def test_gradients_reach_both_nets_and_the_pseudo_net_learns_only_from_h2p(
    nets: tuple[nn.Module, nn.Module],
) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    loss, _, _ = _run(hybrid_net, pseudo_net, batch)
    loss.backward()
    for net in (hybrid_net, pseudo_net):
        assert isinstance(net, nn.Conv2d) and net.weight.grad is not None
        assert net.weight.grad.abs().sum() > 0
    pseudo_gradient = pseudo_net.weight.grad.clone()  # type: ignore[union-attr]
    hybrid_gradient = hybrid_net.weight.grad.clone()  # type: ignore[union-attr]
    # P has no loss on the strong half and the hybrid's labels are detached:
    # its gradient is exactly that of h2p · L_CCE(P, Ŷ_h).
    pseudo_net.zero_grad()
    hybrid_net.zero_grad()
    expected = _expected_terms(hybrid_net, pseudo_net, batch)
    (WEIGHTS.h2p * expected["loss_h2p"]).backward()
    assert torch.allclose(pseudo_net.weight.grad, pseudo_gradient, atol=1e-6)  # type: ignore[arg-type]
    # And H's gradient holds no H2P part (the pseudo labels it learns from are detached).
    pseudo_net.zero_grad()
    hybrid_net.zero_grad()
    expected = _expected_terms(hybrid_net, pseudo_net, batch)
    (
        WEIGHTS.strong * expected["loss_strong"]
        + WEIGHTS.cls * expected["loss_cls"]
        + WEIGHTS.p2h * expected["loss_p2h"]
    ).backward()
    assert torch.allclose(hybrid_net.weight.grad, hybrid_gradient, atol=1e-6)  # type: ignore[arg-type]


def test_later_micro_batches_add_counts_without_decay(nets: tuple[nn.Module, nn.Module]) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    evaluation = DynamicEvaluation(NUM_CLASSES, momentum=MOMENTUM)
    for new_iteration in (True, False):
        pct_step(
            hybrid_net,
            pseudo_net,
            batch,
            evaluation,
            _segmentation_loss,
            max_pool_classification_loss,
            WEIGHTS,
            new_iteration=new_iteration,
        )
    valid_strong = int((batch.masks[:2] != IGNORE).sum())
    # Decay once (T: 1 -> 0.5), then two batches' worth of counts.
    assert evaluation.target_counts.sum().item() == pytest.approx(NUM_CLASSES * MOMENTUM + 2 * valid_strong)


def test_pct_step_without_weak_images(nets: tuple[nn.Module, nn.Module]) -> None:
    hybrid_net, pseudo_net = nets
    full = _batch(pseudo_net)
    strong_only = Batch(full.images[:2], full.masks[:2], full.image_labels[:2], full.has_mask[:2], 2)
    evaluation = DynamicEvaluation(NUM_CLASSES, momentum=MOMENTUM)
    result = pct_step(
        hybrid_net,
        pseudo_net,
        strong_only,
        evaluation,
        _segmentation_loss,
        max_pool_classification_loss,
        WEIGHTS,
    )
    assert result.terms["mean_w"].item() == 0.0
    assert result.terms["loss_h2p"].item() == 0.0
    assert torch.isfinite(result.loss)


def test_hybrid_step_is_strong_cce_plus_classification(nets: tuple[nn.Module, nn.Module]) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    result = hybrid_step(hybrid_net, batch, _segmentation_loss, max_pool_classification_loss, WEIGHTS)
    expected = _expected_terms(hybrid_net, pseudo_net, batch)
    assert set(result.terms) == {"loss_strong", "loss_cls"}
    assert result.terms["loss_strong"].item() == pytest.approx(expected["loss_strong"].item(), rel=1e-5)
    assert result.terms["loss_cls"].item() == pytest.approx(expected["loss_cls"].item(), rel=1e-5)
    total = WEIGHTS.strong * expected["loss_strong"] + WEIGHTS.cls * expected["loss_cls"]
    assert result.loss.item() == pytest.approx(total.item(), rel=1e-5)


def test_supervised_step_is_plain_cross_entropy_over_all_classes() -> None:
    net = _net(3)
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 4, 4, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (2, 4, 4), generator=generator)
    masks[0, 0] = IGNORE
    result = supervised_step(net, images, masks)
    logits = net(images)
    per_pixel = -F.log_softmax(logits, dim=1).gather(1, masks.clamp(max=NUM_CLASSES - 1)[:, None])[:, 0]
    valid = masks != IGNORE
    expected = per_pixel[valid].mean()
    assert result.terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    result.loss.backward()
    assert isinstance(net, nn.Conv2d) and net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_ground_truth_or_and_weighted_pixel_mean() -> None:
    pseudo = torch.tensor([[[1, 1]], [[2, 2]]])
    masks = torch.tensor([[[0, IGNORE]], [[3, 3]]])
    replaced = ground_truth_or(pseudo, masks, torch.tensor([True, False]))
    assert replaced.tolist() == [[[0, IGNORE]], [[2, 2]]]
    per_pixel = torch.tensor([[[2.0, 0.0]], [[4.0, 6.0]]])
    # (0.5·2 + 0.25·(4 + 6)) over the three valid pixels.
    mean = weighted_pixel_mean(per_pixel, replaced, torch.tensor([0.5, 0.25]))
    assert mean.item() == pytest.approx(3.5 / 3)
