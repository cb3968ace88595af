"""Evaluation: mIoU over a whole split, plain and with image labels."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from pctkit.components.contracts import SampleSource
from pctkit.engine.data import EvaluationImages, images_to_float, pad_collate, raise_data_error
from pctkit.engine.distributed import all_reduce_sum, current_world
from pctkit.engine.model import multi_scale_logits
from pctkit.engine.refine import Postprocess, Refiner
from pctkit.losses import class_aware_prediction
from pctkit.metrics import ConfusionMatrix


@dataclass
class EvaluationResult:
    """Confusion matrices of one network on one split."""

    plain: ConfusionMatrix
    with_labels: ConfusionMatrix
    class_names: list[str]
    examples: list[dict[str, Any]] = field(default_factory=list)
    postprocessed: ConfusionMatrix | None = None
    """Plain predictions after the post-processing (the CRF), where one was asked for."""

    def summary(self) -> dict[str, Any]:
        """mIoU and per-class IoU, JSON-friendly."""

        def per_class(matrix: ConfusionMatrix) -> dict[str, float | None]:
            return {
                name: (None if torch.isnan(value) else round(float(value), 6))
                for name, value in zip(self.class_names, matrix.iou(), strict=True)
            }

        summary: dict[str, Any] = {
            "miou": self.plain.miou(),
            "miou_with_labels": self.with_labels.miou(),
            "pixel_accuracy": self.plain.pixel_accuracy(),
            "iou": per_class(self.plain),
            "iou_with_labels": per_class(self.with_labels),
        }
        if self.postprocessed is not None:
            summary["miou_postprocessed"] = self.postprocessed.miou()
            summary["iou_postprocessed"] = per_class(self.postprocessed)
        return summary


def autocast_context(device: torch.device, precision: str) -> Any:
    """An autocast context for the precision (``fp32`` disables it)."""
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class SlidingWindow(nn.Module):
    """Runs a network on overlapping square windows and averages their logits.

    Windows of ``window`` pixels (clipped to the image where it is smaller) start every
    ``stride`` pixels, the last one flush with the bottom/right edge, so every pixel is
    covered and no padding is ever fed to the network. Memory is bounded by the window,
    whatever the image size.
    """

    def __init__(self, net: nn.Module, window: int, stride: int) -> None:
        super().__init__()
        if not 0 < stride <= window:
            raise ValueError(f"need 0 < stride <= window, got window {window} and stride {stride}")
        self.net = net
        self.window = window
        self.stride = stride

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        window_height, window_width = min(self.window, height), min(self.window, width)
        total: Tensor | None = None
        count = torch.zeros(1, 1, height, width, device=images.device)
        for top in _window_starts(height, window_height, self.stride):
            for left in _window_starts(width, window_width, self.stride):
                crop = images[..., top : top + window_height, left : left + window_width]
                logits = self.net(crop).float()
                if total is None:
                    total = logits.new_zeros(images.shape[0], logits.shape[1], height, width)
                total[..., top : top + window_height, left : left + window_width] += logits
                count[..., top : top + window_height, left : left + window_width] += 1
        assert total is not None
        return total / count


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def evaluate(
    net: nn.Module,
    source: SampleSource,
    class_names: list[str],
    device: torch.device,
    *,
    batch_size: int = 16,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    precision: str = "fp32",
    use_reference: bool = False,
    num_examples: int = 0,
    progress: Any = None,
    postprocess: Postprocess | None = None,
    postprocess_workers: int = 0,
    sliding_window: tuple[int, int] | None = None,
) -> EvaluationResult:
    """mIoU of ``net`` over ``source`` (sharded over workers, matrices summed).

    Args:
        sliding_window: ``(window, stride)`` to predict each scale with
            :class:`SlidingWindow`; ``None`` predicts whole images.
        use_reference: score against the samples' reference masks (pseudo-label
            quality on weak images) instead of their training masks.
        num_examples: keep this many (image, gt, prediction) triples for pictures.
        progress: optional callable ``(advance: int)`` for a progress bar.
        postprocess: refines each image's softmax probabilities (the dense CRF); the
            plain predictions are scored with and without it.
        postprocess_workers: processes that run ``postprocess`` while the network
            predicts the next batches; 0 runs it here (:class:`~pctkit.engine.refine.Refiner`).
    """
    world = current_world()
    num_classes = len(class_names)
    dataset = EvaluationImages(source, num_classes, use_reference=use_reference)
    shard = Subset(dataset, list(range(world.rank, len(dataset), world.world_size)))
    # A generator of its own: evaluating draws nothing from torch's global generator.
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, collate_fn=pad_collate, generator=torch.Generator()
    )
    plain = ConfusionMatrix(num_classes)
    with_labels = ConfusionMatrix(num_classes)
    examples: list[dict[str, Any]] = []
    was_training = net.training
    net.eval()
    predictor = net if sliding_window is None else SlidingWindow(net, *sliding_window)
    refiner = None
    if postprocess is not None:
        refiner = Refiner(postprocess, ConfusionMatrix(num_classes), postprocess_workers)
    with refiner if refiner is not None else nullcontext():
        for batch in loader:
            raise_data_error(batch)
            images = images_to_float(batch["image"], device)
            with autocast_context(device, precision):
                logits = multi_scale_logits(predictor, images, scales, flip)
            labels = batch["image_labels"].to(device)
            prediction = logits.argmax(1).cpu()
            prediction_with_labels = class_aware_prediction(logits, labels).cpu()
            plain.update(prediction, batch["mask"])
            with_labels.update(prediction_with_labels, batch["mask"])
            if refiner is not None:
                for slot, (height, width) in enumerate(batch["sizes"]):
                    image = batch["image"][slot, :, :height, :width]
                    refiner.add(image, logits[slot, :, :height, :width], batch["mask"][slot, :height, :width])
            for slot in range(len(batch["sizes"])):
                if len(examples) >= num_examples:
                    break
                height, width = batch["sizes"][slot]
                examples.append(
                    {
                        "image": batch["image"][slot, :, :height, :width],
                        "mask": batch["mask"][slot, :height, :width],
                        "prediction": prediction[slot, :height, :width],
                        "prediction_with_labels": prediction_with_labels[slot, :height, :width],
                        "name": batch["name"][slot],
                    }
                )
            if progress is not None:
                progress(len(batch["sizes"]) * world.world_size)
    net.train(was_training)
    all_reduce_sum(plain.matrix)
    all_reduce_sum(with_labels.matrix)
    postprocessed = refiner.matrix if refiner is not None else None
    if postprocessed is not None:
        all_reduce_sum(postprocessed.matrix)
    return EvaluationResult(plain, with_labels, class_names, examples, postprocessed)


def class_aware_or_plain(logits: Tensor, labels: Tensor | None) -> Tensor:
    """Class-aware prediction when image labels are known, plain argmax otherwise."""
    return logits.argmax(1) if labels is None else class_aware_prediction(logits, labels)
