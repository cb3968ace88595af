"""Stage 2, first half: the final hybrid net labels every weak training image.

Logits are averaged over scales and horizontal flips, each resized back to the image;
the label is the class-aware prediction under the image's labels (METHOD.md). Labels
are written as VOC palette PNGs, one per image, so they can be inspected with any
viewer and reused by other tools. A label already on disk is not redone: an
interrupted run picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from pctkit.components.contracts import RawSample, SampleSource
from pctkit.engine.data import images_to_float, labels_vector, to_tensors
from pctkit.engine.distributed import all_reduce_sum, barrier, current_world
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.model import multi_scale_logits
from pctkit.losses import class_aware_prediction
from pctkit.metrics import ConfusionMatrix
from pctkit.palette import MASK_READ_ERRORS, load_mask_png, save_palette_png


def weak_indices(num_train: int, strong_indices: Sequence[int]) -> list[int]:
    """Training images outside the strong set: the ones that need pseudo labels."""
    strong = set(strong_indices)
    return [index for index in range(num_train) if index not in strong]


@torch.no_grad()
def generate_pseudo_labels(
    net: nn.Module,
    source: SampleSource,
    indices: Sequence[int],
    output_dir: Path,
    num_classes: int,
    device: torch.device,
    *,
    scales: Sequence[float],
    flip: bool,
    batch_size: int,
    precision: str = "fp32",
    colors: list[tuple[int, int, int]] | None = None,
    progress: Callable[[int], None] | None = None,
    on_damaged: Callable[[str], None] | None = None,
) -> ConfusionMatrix:
    """Label ``indices`` of ``source`` into ``output_dir/<name>.png``.

    A label already on disk is kept; one that cannot be read, or does not fit its image
    (size, class indices), is labelled again and ``on_damaged`` told why.

    Returns the confusion matrix of the pseudo labels against the samples' reference
    masks where they have one (an empty matrix otherwise), summed over workers.
    """
    world = current_world()
    output_dir.mkdir(parents=True, exist_ok=True)
    quality = ConfusionMatrix(num_classes)
    net.eval()
    pending: list[RawSample] = []

    def flush() -> None:
        if not pending:
            return
        images = images_to_float(torch.stack([to_tensors(sample, None)[0] for sample in pending]), device)
        labels = torch.stack(
            [labels_vector(sample.image_labels, num_classes, sample.name) for sample in pending]
        ).to(device)
        with autocast_context(device, precision):
            logits = multi_scale_logits(net, images, scales, flip)
        predictions = class_aware_prediction(logits, labels).to(torch.uint8).cpu().numpy()
        for sample, prediction in zip(pending, predictions, strict=True):
            save_palette_png(prediction, output_dir / f"{sample.name}.png", colors)
            _score(quality, prediction, sample)
        if progress is not None:
            progress(len(pending) * world.world_size)
        pending.clear()

    for index in list(indices)[world.rank :: world.world_size]:
        sample = source[index]
        path = output_dir / f"{sample.name}.png"
        if path.is_file():
            label, problem = _label_on_disk(path, sample, num_classes)
            if label is not None:
                _score(quality, label, sample)
                if progress is not None:
                    progress(world.world_size)
                continue
            if on_damaged is not None:
                on_damaged(f"pseudo label {path} {problem}: labelling it again")
        # Only images of one size share a batch: no padding touches a label.
        if pending and pending[0].image.shape != sample.image.shape:
            flush()
        pending.append(sample)
        if len(pending) == batch_size:
            flush()
    flush()
    all_reduce_sum(quality.matrix)
    barrier()
    return quality


def _label_on_disk(
    path: Path, sample: RawSample, num_classes: int
) -> tuple[npt.NDArray[np.uint8] | None, str]:
    """The label written for ``sample``, or ``None`` and why it cannot be used."""
    try:
        label = load_mask_png(path)
    except MASK_READ_ERRORS as error:
        return None, f"cannot be read ({error})"
    size = tuple(sample.image.shape[:2])
    if label.shape != size:
        return None, f"is {label.shape[1]}x{label.shape[0]} pixels, its image {size[1]}x{size[0]}"
    if label.size and int(label.max()) >= num_classes:
        return None, f"holds class {int(label.max())}; there are {num_classes}"
    return label, ""


def _score(quality: ConfusionMatrix, prediction: object, sample: RawSample) -> None:
    if sample.reference_mask is not None:
        quality.update(torch.as_tensor(prediction).long(), torch.from_numpy(sample.reference_mask).long())
