"""Tests of pctkit.methods.pct: one PCT iteration, each loss term recomputed here
independently (METHOD.md), and the ``PCT`` method object around it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit.constants import IGNORE_INDEX
from pctkit.losses import class_aware_cross_entropy, max_pool_classification_loss
from pctkit.methods.base import Batch, MethodInputs
from pctkit.methods.dynamic_evaluation import DynamicEvaluation
from pctkit.methods.pct import PCT, PCTSettings, ground_truth_or, pct_step, weighted_pixel_mean

NUM_CLASSES = 4
IGNORE = IGNORE_INDEX
MOMENTUM = 0.5
# The strict weight rule and the mean over labelled pixels: what _expected_terms computes.
WEIGHTS = PCTSettings(
    strong=1.0, cls=0.5, h2p=2.0, p2h=3.0, score_power=2.0, weight_rule="strict", p2h_mean="valid_pixels"
)


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


def test_ground_truth_or_and_weighted_pixel_mean() -> None:
    pseudo = torch.tensor([[[1, 1]], [[2, 2]]])
    masks = torch.tensor([[[0, IGNORE]], [[3, 3]]])
    replaced = ground_truth_or(pseudo, masks, torch.tensor([True, False]))
    assert replaced.tolist() == [[[0, IGNORE]], [[2, 2]]]
    per_pixel = torch.tensor([[[2.0, 0.0]], [[4.0, 6.0]]])
    # (0.5·2 + 0.25·(4 + 6)) over the three valid pixels.
    mean = weighted_pixel_mean(per_pixel, replaced, torch.tensor([0.5, 0.25]), over="valid_pixels")
    assert mean.item() == pytest.approx(3.5 / 3)


def test_weighted_pixel_mean_over_all_weak_pixels_divides_by_every_pixel() -> None:
    """The released code's ``torch.mean``: ignored pixels count 0 but still divide."""
    per_pixel = torch.tensor([[[2.0, 0.0]], [[4.0, 6.0]]])
    target = torch.tensor([[[0, IGNORE]], [[2, 2]]])
    mean = weighted_pixel_mean(per_pixel, target, torch.tensor([0.5, 0.25]), over="all_weak_pixels")
    assert mean.item() == pytest.approx(3.5 / 4)


def test_p2h_mean_setting_reaches_the_step(nets: tuple[nn.Module, nn.Module]) -> None:
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    _, valid_terms, _ = _run(hybrid_net, pseudo_net, batch)
    settings = dataclasses.replace(WEIGHTS, p2h_mean="all_weak_pixels")
    result = pct_step(
        hybrid_net,
        pseudo_net,
        batch,
        DynamicEvaluation(NUM_CLASSES, momentum=MOMENTUM),
        _segmentation_loss,
        max_pool_classification_loss,
        settings,
    )
    # Same weighted sum, over 3 x 16 weak pixels instead of the 44 labelled ones.
    expected = valid_terms["loss_p2h"].item() * 44 / 48
    assert result.terms["loss_p2h"].item() == pytest.approx(expected, rel=1e-5)


def test_released_weight_rule_reaches_the_step(nets: tuple[nn.Module, nn.Module]) -> None:
    """With the released rule, classes P has never hit leave the min: weak images whose
    present classes were all missed get w = 1 instead of 0."""
    hybrid_net, pseudo_net = nets
    batch = _batch(pseudo_net)
    _, strict_terms, evaluation = _run(hybrid_net, pseudo_net, batch)
    released = pct_step(
        hybrid_net,
        pseudo_net,
        batch,
        DynamicEvaluation(NUM_CLASSES, momentum=MOMENTUM),
        _segmentation_loss,
        max_pool_classification_loss,
        dataclasses.replace(WEIGHTS, weight_rule="released"),
    )
    expected = evaluation.image_weights(batch.image_labels[2:], WEIGHTS.score_power, "released")
    assert released.terms["mean_w"].item() == pytest.approx(expected.mean().item(), rel=1e-6)
    assert released.terms["mean_w"].item() >= strict_terms["mean_w"].item()


# --------------------------------------------------------------------------- the method object


def _inputs(reduce_sum: Any = None) -> MethodInputs:
    seeds = {"hybrid": 1, "pseudo": 2}
    return MethodInputs(
        num_classes=NUM_CLASSES,
        new_net=lambda role, init_like=None: _net(seeds[init_like or role]),
        segmentation_loss=_segmentation_loss,
        classification_loss=max_pool_classification_loss,
        reduce_sum=reduce_sum or (lambda tensor: tensor),
    )


def test_pct_method_steps_like_pct_step_and_decays_once_per_iteration() -> None:
    method = PCT(_inputs(), WEIGHTS, score_momentum=MOMENTUM)
    assert list(method.nets) == ["hybrid", "pseudo"] and method.labeller == "hybrid"
    assert method.draws_weak_images and method.predicts_with_image_labels
    batch = _batch(method.nets["pseudo"])
    expected_loss, _, expected_evaluation = _run(_net(1), _net(2), batch)
    result = method.step(batch, micro_index=0)
    assert result.loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    assert set(result.terms) == {"loss_strong", "loss_cls", "loss_h2p", "loss_p2h", "mean_w"}
    assert torch.equal(method.dynamic_evaluation.scores, expected_evaluation.scores)
    # A second micro-batch of the same iteration adds its counts without a decay.
    before = method.dynamic_evaluation.target_counts.clone()
    method.step(batch, micro_index=1)
    valid_strong = int((batch.masks[:2] != IGNORE).sum())
    assert method.dynamic_evaluation.target_counts.sum().item() == pytest.approx(
        before.sum().item() + valid_strong
    )


def test_pct_method_state_is_j_and_it_is_logged() -> None:
    method = PCT(_inputs(), WEIGHTS, score_momentum=MOMENTUM)
    method.step(_batch(method.nets["pseudo"]), micro_index=0)
    scores = method.dynamic_evaluation.scores
    logged = method.log_metrics()
    assert logged["J"] == pytest.approx(scores.tolist(), abs=1e-5) and len(logged["J"]) == NUM_CLASSES
    restored = PCT(_inputs(), WEIGHTS, score_momentum=MOMENTUM)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.dynamic_evaluation.scores, scores)


def test_pct_method_sums_the_counts_over_workers() -> None:
    """Under DDP the counts of one iteration are reduced before the update."""
    reduced: list[Tensor] = []

    def twice(tensor: Tensor) -> Tensor:  # as if a second worker had the same counts
        reduced.append(tensor)
        return tensor * 2

    method = PCT(_inputs(twice), WEIGHTS, score_momentum=MOMENTUM)
    batch = _batch(method.nets["pseudo"])
    method.step(batch, micro_index=0)
    valid_strong = int((batch.masks[:2] != IGNORE).sum())
    assert len(reduced) == 1
    assert method.dynamic_evaluation.target_counts.sum().item() == pytest.approx(
        NUM_CLASSES * MOMENTUM + 2 * valid_strong
    )
