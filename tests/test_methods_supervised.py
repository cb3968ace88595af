"""Tests of pctkit.methods.supervised: one net, plain cross entropy on its masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pctkit.components.losses import cross_entropy
from pctkit.constants import IGNORE_INDEX
from pctkit.methods.base import Batch
from pctkit.methods.supervised import Supervised, supervised_step

NUM_CLASSES = 4


def _batch() -> Batch:
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 4, 4, generator=generator)
    masks = torch.randint(0, NUM_CLASSES, (2, 4, 4), generator=generator)
    masks[0, 0] = IGNORE_INDEX
    # Image labels that leave out classes of the masks: a plain CE must not use them.
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    return Batch(images, masks, labels, torch.tensor([True, True]), num_strong=2)


def test_supervised_step_is_plain_cross_entropy_over_all_classes() -> None:
    torch.manual_seed(3)
    net = nn.Conv2d(3, NUM_CLASSES, kernel_size=1)
    batch = _batch()
    result = supervised_step(net, batch, cross_entropy())
    logits = net(batch.images)
    per_pixel = -F.log_softmax(logits, dim=1).gather(1, batch.masks.clamp(max=NUM_CLASSES - 1)[:, None])[:, 0]
    expected = per_pixel[batch.masks != IGNORE_INDEX].mean()
    assert set(result.terms) == {"loss_ce"}
    assert result.terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    result.loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_supervised_method_trains_the_net_of_its_role_without_weak_images() -> None:
    net = nn.Conv2d(3, NUM_CLASSES, kernel_size=1)
    method = Supervised(net, "retrained", cross_entropy())
    assert method.nets == {"retrained": net} and method.labeller == "retrained"
    assert not method.draws_weak_images and not method.predicts_with_image_labels
    assert method.state_dict() == {} and method.log_metrics() == {}
    batch = _batch()
    assert method.step(batch, 0).loss.item() == pytest.approx(
        supervised_step(net, batch, cross_entropy()).loss.item()
    )
