"""From raw samples to training batches: augmentation, label sources, sampling.

Sampling is a pure function of ``(seed, stream, iteration)``: which images make up
iteration t's batch, and how each is augmented, never depends on what ran before.
That makes resuming exact (no sampler state to save beyond the iteration) and splits
a global batch over data-parallel workers without a sampler per worker: every rank
computes the same global batch and takes its own slice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pctkit.components.contracts import IGNORE_INDEX, DataError, RawSample, SampleSource
from pctkit.methods.base import Batch
from pctkit.palette import MASK_READ_ERRORS, load_mask_png


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


Augment = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]
"""An augmentation component: ``(uint8 image (3, H, W), long mask (H, W), seed) -> both``."""


def sample_problem(sample: RawSample, mask: np.ndarray | None) -> str | None:
    """How a dataset's sample breaks the contract of :class:`RawSample` (an ``(H, W, 3)``
    ``uint8`` image, an ``(H, W)`` mask of the same size), or ``None``."""
    image = sample.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        found = f"{type(image).__name__} {getattr(image, 'dtype', '')} of shape {shape}"
        return f"image {sample.name!r} is a {found}; a dataset gives (H, W, 3) uint8 RGB arrays"
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.ndim != 2:
            return f"mask of {sample.name!r} has shape {getattr(mask, 'shape', None)}; expected (H, W)"
        if mask.shape != image.shape[:2]:
            return (
                f"mask of {sample.name!r} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]} (width x height)"
            )
    return None


def to_tensors(sample: RawSample, mask: np.ndarray | None) -> tuple[Tensor, Tensor]:
    """``uint8`` image ``(3, H, W)`` and long mask ``(H, W)`` (255 where no mask)."""
    problem = sample_problem(sample, mask)
    if problem is not None:
        raise DataError(problem)
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)
    if mask is None:
        target = torch.full(image.shape[1:], IGNORE_INDEX, dtype=torch.long)
    else:
        target = torch.from_numpy(np.ascontiguousarray(mask)).long()
    return image, target


def labels_vector(image_labels: Sequence[int], num_classes: int, name: str) -> Tensor:
    """Multi-hot ``(C,)`` float labels with background always set."""
    vector = torch.zeros(num_classes)
    for label in image_labels:
        if not 0 <= label < num_classes:
            raise DataError(f"{name}: image label {label} is outside 0..{num_classes - 1}")
        vector[label] = 1.0
    vector[0] = 1.0
    return vector


class TrainingImages(Dataset[dict[str, Any]]):
    """Training samples, augmented, indexed by ``(image index, augmentation seed)``.

    Args:
        source: the raw samples.
        num_classes: class count (for the multi-hot labels).
        augmentation: the stream's augmentation component (seeded per sample).
        pseudo_label_dir: where to read a label for images without a mask (the
            retraining stage); ``None`` leaves them unlabelled (all 255).
        require_masks: every image read must have a mask (stage 1's strong stream).
    """

    def __init__(
        self,
        source: SampleSource,
        num_classes: int,
        augmentation: Augment,
        pseudo_label_dir: Path | None = None,
        require_masks: bool = False,
    ) -> None:
        self.source = source
        self.num_classes = num_classes
        self.augmentation = augmentation
        self.pseudo_label_dir = pseudo_label_dir
        self.require_masks = require_masks

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        try:
            return self._item(*key)
        except DataError as error:
            # Errors travel as data: a worker's exception reaches the main process only as
            # traceback text, and the user needs the message that names the file.
            return {"error": str(error)}

    def _item(self, index: int, seed: int) -> dict[str, Any]:
        sample = self.source[index]
        mask = sample.mask
        has_mask = mask is not None
        if self.require_masks and not has_mask:
            raise DataError(
                f"image {sample.name!r} (index {index}) is in the dataset's strong set but has no "
                "mask: every index of strong_indices needs one"
            )
        if mask is None and self.pseudo_label_dir is not None:
            path = self.pseudo_label_dir / f"{sample.name}.png"
            if not path.is_file():
                raise DataError(
                    f"pseudo label missing for {sample.name!r}: {path} (if the dataset lists it "
                    "as a strong image, it gave the image no mask)"
                )
            try:
                mask = load_mask_png(path)
            except MASK_READ_ERRORS as error:
                raise DataError(
                    f"pseudo label {path} cannot be read ({error}); `pctkit resume` labels it again"
                ) from None
        image, target = to_tensors(sample, mask)
        try:
            image, target = self.augmentation(image, target, seed)
        except DataError:
            raise
        except Exception as error:  # a worker's traceback would not name the image
            raise DataError(
                f"the augmentation failed on image {sample.name!r} (index {index}): "
                f"{type(error).__name__}: {error}. If the image is sound, the augmentation "
                "component has a bug: report it to its package"
            ) from error
        return {
            "image": image,
            "mask": target,
            "image_labels": labels_vector(sample.image_labels, self.num_classes, sample.name),
            "has_mask": has_mask,
            "index": index,
        }


class EvaluationImages(Dataset[dict[str, Any]]):
    """Unaugmented images with their masks (reference masks where asked)."""

    def __init__(self, source: SampleSource, num_classes: int, use_reference: bool = False) -> None:
        self.source = source
        self.num_classes = num_classes
        self.use_reference = use_reference

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._item(index)
        except DataError as error:
            return {"error": str(error)}

    def _item(self, index: int) -> dict[str, Any]:
        sample = self.source[index]
        mask = sample.reference_mask if self.use_reference else sample.mask
        image, target = to_tensors(sample, mask)
        return {
            "image": image,
            "mask": target,
            "image_labels": labels_vector(sample.image_labels, self.num_classes, sample.name),
            "has_mask": sample.mask is not None,
            "index": index,
            "name": sample.name,
        }


def pad_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples, padding images (0) and masks (255) at the bottom/right to a
    common size; ``sizes`` keeps each image's own size. A sample that could not be read
    makes the batch ``{"error": message}`` (see :func:`raise_data_error`)."""
    for item in items:
        if "error" in item:
            return {"error": item["error"]}
    height = max(int(item["image"].shape[1]) for item in items)
    width = max(int(item["image"].shape[2]) for item in items)
    images = torch.zeros(len(items), 3, height, width, dtype=items[0]["image"].dtype)
    masks = torch.full((len(items), height, width), IGNORE_INDEX, dtype=torch.long)
    for slot, item in enumerate(items):
        h, w = item["image"].shape[1:]
        images[slot, :, :h, :w] = item["image"]
        masks[slot, :h, :w] = item["mask"]
    batch: dict[str, Any] = {
        "image": images,
        "mask": masks,
        "image_labels": torch.stack([item["image_labels"] for item in items]),
        "has_mask": torch.tensor([bool(item["has_mask"]) for item in items]),
        "index": torch.tensor([int(item["index"]) for item in items]),
        "sizes": [tuple(int(s) for s in item["image"].shape[1:]) for item in items],
    }
    if "name" in items[0]:
        batch["name"] = [item["name"] for item in items]
    return batch


class IterationBatches(Sampler[list[tuple[int, int]]]):
    """Batches for iterations ``start..end-1`` of one stream, each a list of
    ``(image index, augmentation seed)`` for this worker's slice of the global batch.

    Epochs are shuffles of ``pool`` seeded by ``(seed, stream, epoch)``; iteration t
    takes the global positions ``t*B .. t*B+B-1`` of that endless sequence.
    """

    def __init__(
        self,
        pool: Sequence[int],
        global_batch_size: int,
        seed: int,
        stream: str,
        start: int,
        end: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not pool:
            raise DataError(f"the {stream} stream has no images to sample")
        if global_batch_size % world_size:
            raise ValueError(
                f"{stream} batch size {global_batch_size} is not divisible by {world_size} workers"
            )
        self.pool = list(pool)
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.stream = stream
        self.start = start
        self.end = end
        self.rank = rank
        self.world_size = world_size
        self._epoch_cache: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._epoch_cache:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, self.stream, epoch))
            order = torch.randperm(len(self.pool), generator=generator).tolist()
            self._epoch_cache = {epoch: [self.pool[i] for i in order]}
        return self._epoch_cache[epoch]

    def global_batch(self, iteration: int) -> list[tuple[int, int]]:
        """Every worker's samples of one iteration."""
        items = []
        for slot in range(self.global_batch_size):
            position = iteration * self.global_batch_size + slot
            epoch, offset = divmod(position, len(self.pool))
            index = self._epoch(epoch)[offset]
            items.append((index, stable_seed(self.seed, self.stream, "augment", position)))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.end):
            yield self.global_batch(iteration)[self.rank :: self.world_size]

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def raise_data_error(batch: dict[str, Any]) -> None:
    """Raise the :class:`DataError` a batch carries instead of its samples, if any."""
    if "error" in batch:
        raise DataError(batch["error"])


def make_loader(
    dataset: Dataset[Any],
    batch_sampler: Sampler[Any],
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    seed: int = 0,
) -> DataLoader[Any]:
    """A DataLoader over a batch sampler, with the recipe's worker settings.

    It has a generator of its own: starting it draws no number from torch's global
    generator, which the networks' dropout uses, so a resumed stage draws the same.
    """
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=pad_collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def micro_batches(
    streams: list[tuple[Dataset[Any], IterationBatches]],
    accumulate: int,
    device: torch.device,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    channels_last: bool = False,
) -> Iterator[list[Batch]]:
    """Per iteration: the streams' slices concatenated (the first stream, strong,
    first), split into ``accumulate`` micro-batches, on the device.

    Raises:
        DataError: a sample cannot be read; the message names the file.
    """
    loaders = [
        make_loader(dataset, sampler, num_workers, pin_memory, persistent_workers, seed=sampler.seed)
        for dataset, sampler in streams
    ]
    for loaded in zip(*loaders, strict=True):
        for part in loaded:
            raise_data_error(part)
        parts = same_size(list(loaded))
        micro: list[Batch] = []
        for index in range(accumulate):
            pieces = [
                {
                    key: part[key].chunk(accumulate)[index]
                    for key in ("image", "mask", "image_labels", "has_mask")
                }
                for part in parts
            ]
            micro.append(
                Batch(
                    images=images_to_float(torch.cat([p["image"] for p in pieces]), device, channels_last),
                    masks=torch.cat([p["mask"] for p in pieces]).to(device, non_blocking=True),
                    image_labels=torch.cat([p["image_labels"] for p in pieces]).to(device, non_blocking=True),
                    has_mask=torch.cat([p["has_mask"] for p in pieces]).to(device, non_blocking=True),
                    num_strong=int(pieces[0]["image"].shape[0]),
                )
            )
        yield micro


def same_size(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The streams' batches padded to one size (images with 0, masks with 255 at the
    bottom and right, as :func:`pad_collate` pads within a stream), so that they can be
    concatenated: streams without a crop may hold images of different sizes."""
    height = max(int(part["image"].shape[-2]) for part in parts)
    width = max(int(part["image"].shape[-1]) for part in parts)
    padded = []
    for part in parts:
        pad_h, pad_w = height - int(part["image"].shape[-2]), width - int(part["image"].shape[-1])
        if pad_h or pad_w:
            part = dict(part)
            part["image"] = torch.nn.functional.pad(part["image"], (0, pad_w, 0, pad_h), value=0)
            part["mask"] = torch.nn.functional.pad(part["mask"], (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        padded.append(part)
    return padded


def images_to_float(images: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """``uint8`` images to float in [0, 1] on ``device`` (normalisation is the net's)."""
    images = images.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images
