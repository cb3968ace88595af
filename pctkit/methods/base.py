"""What a stage-1 method is: the contract between methods and the engine.

A method factory takes one positional argument, :class:`MethodInputs` (what the engine
provides: a way to make networks, the recipe's losses, the class count, a reduction over
workers), and its typed keyword parameters from the recipe's ``[method]`` section. It
returns an object with the attributes and methods of :class:`Method`. The engine runs
everything around it: data, mixed precision, gradient accumulation, data parallelism,
optimizers and schedules, checkpoints, validation, pseudo labels, export.

This module imports nothing heavy, so that listing methods stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor, nn

SegmentationLoss = Callable[..., "Tensor"]
"""``loss(logits, target, image_labels, reduction="mean") -> Tensor`` (see components.losses)."""
ClassificationLoss = Callable[["Tensor", "Tensor"], "Tensor"]
"""``loss(logits, image_labels) -> Tensor``."""


@dataclass
class Batch:
    """One (micro-)batch on the device: the strong images first, then the weak ones.

    Attributes:
        images: float images in [0, 1], ``(N, 3, H, W)``.
        masks: ``(N, H, W)`` long; 255 where there is no label (weak images).
        image_labels: ``(N, C)`` multi-hot, background always set.
        has_mask: ``(N,)`` bool, whether each image's mask is ground truth.
        num_strong: how many of the first rows were drawn from the strong set.
    """

    images: Tensor
    masks: Tensor
    image_labels: Tensor
    has_mask: Tensor
    num_strong: int

    @property
    def strong(self) -> slice:
        """Rows of the strong half."""
        return slice(0, self.num_strong)

    @property
    def weak(self) -> slice:
        """Rows of the weak half."""
        return slice(self.num_strong, self.images.shape[0])


@dataclass
class StepResult:
    """The loss to back-propagate and its named terms.

    ``terms`` are detached scalars (loss terms and diagnostics such as the mean weight
    ``mean_w``): the engine averages them over the micro-batches of an iteration and
    the iterations of a log interval, and stops the run when one is not finite.
    """

    loss: Tensor
    terms: dict[str, Tensor]


@dataclass
class MethodInputs:
    """What the engine hands a method factory.

    Attributes:
        num_classes: classes of the dataset, background included.
        new_net: ``new_net(role, init_like=None)`` returns a freshly initialised network
            for ``role`` (on the run's device, wrapped for data parallelism and
            compilation as the recipe asks). Initial weights depend on the seed and on
            ``init_like or role`` only, so that two methods' nets of the same role (or
            declared alike) start from the same weights.
        segmentation_loss: the recipe's ``[loss.segmentation]``.
        classification_loss: the recipe's ``[loss.classification]``.
        reduce_sum: sums a tensor over the data-parallel workers, in place (identity on
            one process); for state every worker must hold alike.
    """

    num_classes: int
    new_net: Callable[..., nn.Module]
    segmentation_loss: SegmentationLoss
    classification_loss: ClassificationLoss
    reduce_sum: Callable[[Tensor], Tensor]


class Method(Protocol):
    """A stage-1 training method.

    Attributes:
        nets: the networks it trains, by role (``hybrid``, ``pseudo``, ...); each gets its
            own optimizer and schedule, and is saved as ``<role>_net.safetensors``.
        labeller: the role whose final network labels the weak images for retraining
            and whose validation score picks the best checkpoint.
        draws_weak_images: whether batches hold weak images after the strong ones.
        predicts_with_image_labels: whether the labeller is scored (and labels) with
            class-aware predictions under the image labels.
    """

    nets: dict[str, nn.Module]
    labeller: str
    draws_weak_images: bool
    predicts_with_image_labels: bool

    def step(self, batch: Batch, micro_index: int) -> StepResult:
        """The loss of one micro-batch; ``micro_index`` is its place in the iteration
        (0 for the first: state that decays once per iteration decays then)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The method's own state beyond its networks (tensors and plain values)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def log_metrics(self) -> dict[str, Any]:
        """Values added to each training log record (JSON-friendly)."""
        ...


class StatelessMethod:
    """A base for methods without state of their own and nothing extra to log."""

    nets: dict[str, nn.Module]
    labeller: str
    draws_weak_images: bool = True
    predicts_with_image_labels: bool = True

    def state_dict(self) -> dict[str, Any]:
        """No state beyond the networks."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    def log_metrics(self) -> dict[str, Any]:
        """Nothing extra to log."""
        return {}
