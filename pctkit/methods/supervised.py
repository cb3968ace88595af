"""One net, fully supervised on the masks it is given: the strong-only baseline of
stage 1, and the retraining of stage 2 (on ground truth plus pseudo labels)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from pctkit.methods.base import Batch, StatelessMethod, StepResult

PixelLoss = Callable[..., Tensor]


def supervised_step(net: nn.Module, batch: Batch, loss_fn: PixelLoss) -> StepResult:
    """``loss_fn`` on every image of the batch (its masks: 255 counts for nothing)."""
    loss = loss_fn(net(batch.images), batch.masks, batch.image_labels)
    return StepResult(loss, {"loss_ce": loss.detach()})


class Supervised(StatelessMethod):
    """One net trained on masks alone; image labels are not used."""

    draws_weak_images = False
    predicts_with_image_labels = False

    def __init__(self, net: nn.Module, role: str, loss_fn: PixelLoss) -> None:
        self.nets = {role: net}
        self.labeller = role
        self.loss_fn = loss_fn

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """One micro-batch of :func:`supervised_step`."""
        return supervised_step(self.nets[self.labeller], batch, self.loss_fn)
