"""Tests of sampling, augmentation and batching (pctkit.engine.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pctkit.components.augmentations.scale_crop_flip import scale_crop_flip
from pctkit.components.contracts import IGNORE_INDEX, DataError, RawSample
from pctkit.engine.data import (
    EvaluationImages,
    IterationBatches,
    TrainingImages,
    images_to_float,
    labels_vector,
    micro_batches,
    pad_collate,
    raise_data_error,
    sample_problem,
    stable_seed,
    to_tensors,
)
from pctkit.palette import save_palette_png


class ListSource:
    """A sample source over a list (the smallest real SampleSource)."""

    def __init__(self, samples: list[RawSample]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RawSample:
        return self.samples[index]


def _coded_sample(name: str, height: int = 6, width: int = 8, with_mask: bool = True) -> RawSample:
    """An image whose red channel is 10 x its mask, so alignment can be checked after augmentation."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (height, width)).astype(np.uint8)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = mask * 10
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    labels = sorted({0, *np.unique(mask).tolist()})
    return RawSample(
        image=image,
        mask=mask if with_mask else None,
        image_labels=labels,
        name=name,
        reference_mask=None if with_mask else mask,
    )


# --------------------------------------------------------------------------- small helpers


def test_stable_seed_is_stable_and_distinguishes_parts() -> None:
    assert stable_seed(0, "strong", 3) == stable_seed(0, "strong", 3)
    seeds = {stable_seed(0, "strong", 3), stable_seed(0, "weak", 3), stable_seed(1, "strong", 3)}
    assert len(seeds) == 3
    assert all(0 <= seed < 2**63 for seed in seeds)
    # A fixed value: the seed must not depend on the process (no salted hash()).
    assert stable_seed("x") == stable_seed("x") and isinstance(stable_seed("x"), int)


def test_labels_vector_always_sets_background_and_checks_range() -> None:
    assert labels_vector([2], 4, "a").tolist() == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(DataError, match=r"img_7: image label 4 is outside 0\.\.3"):
        labels_vector([4], 4, "img_7")


def test_to_tensors_without_mask_is_all_ignored() -> None:
    sample = _coded_sample("a", with_mask=False)
    image, mask = to_tensors(sample, None)
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    assert mask.dtype == torch.long and mask.eq(IGNORE_INDEX).all()


# --------------------------------------------------------------------------- augmentation


def test_default_augmentation_changes_nothing() -> None:
    image, mask = to_tensors(_coded_sample("a"), _coded_sample("a").mask)
    augmented_image, augmented_mask = scale_crop_flip()(image, mask, 0)
    assert torch.equal(augmented_image, image) and torch.equal(augmented_mask, mask)


def test_crop_and_flip_keep_image_and_mask_aligned() -> None:
    sample = _coded_sample("a")
    image, mask = to_tensors(sample, sample.mask)
    settings = scale_crop_flip(crop_size=5, horizontal_flip=True)
    flipped_once = False
    for seed in range(8):
        augmented_image, augmented_mask = settings(image, mask, seed)
        assert augmented_image.shape == (3, 5, 5) and augmented_mask.shape == (5, 5)
        assert torch.equal(augmented_image[0].long(), augmented_mask * 10)
        # The column code runs right to left after a flip.
        flipped_once |= bool(augmented_image[1, 0, 0] > augmented_image[1, 0, -1])
    assert flipped_once


def test_crop_larger_than_the_image_pads_with_ignore() -> None:
    sample = _coded_sample("a", height=4, width=4)
    image, mask = to_tensors(sample, sample.mask)
    augmented_image, augmented_mask = scale_crop_flip(crop_size=6)(image, mask, 0)
    assert augmented_mask.shape == (6, 6)
    assert augmented_mask[4:, :].eq(IGNORE_INDEX).all() and augmented_mask[:, 4:].eq(IGNORE_INDEX).all()
    assert augmented_image[:, 4:, :].eq(0).all()
    assert torch.equal(augmented_mask[:4, :4], mask)


def test_scale_and_rotation_keep_shapes_and_mask_values() -> None:
    sample = _coded_sample("a")
    image, mask = to_tensors(sample, sample.mask)
    settings = scale_crop_flip(scale_range=(1.5, 1.5), rotation=30.0, color_jitter=0.3, gaussian_blur=1.0)
    augmented_image, augmented_mask = settings(image, mask, 0)
    assert augmented_image.shape == (3, 9, 12) and augmented_mask.shape == (9, 12)
    # Nearest-neighbour masks: only original classes or ignore, never blends.
    assert set(augmented_mask.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}
    assert augmented_mask.eq(IGNORE_INDEX).any()  # rotated corners
    again = settings(image, mask, 0)
    assert torch.equal(again[0], augmented_image) and torch.equal(again[1], augmented_mask)


# --------------------------------------------------------------------------- datasets and batches


def test_training_images_label_sources(tmp_path: Path) -> None:
    source = ListSource([_coded_sample("strong_0"), _coded_sample("weak_0", with_mask=False)])
    plain = TrainingImages(source, 3, scale_crop_flip())
    strong, weak = plain[(0, 1)], plain[(1, 2)]
    assert strong["has_mask"] and not weak["has_mask"]
    assert torch.equal(strong["mask"], torch.from_numpy(source[0].mask).long())  # type: ignore[arg-type]
    assert weak["mask"].eq(IGNORE_INDEX).all()
    assert strong["image_labels"][0] == 1.0 and strong["index"] == 0

    # In retraining, images without a mask read their pseudo label; has_mask stays False.
    pseudo = np.full((6, 8), 2, dtype=np.uint8)
    save_palette_png(pseudo, tmp_path / "weak_0.png")
    retraining = TrainingImages(source, 3, scale_crop_flip(), tmp_path)
    labelled = retraining[(1, 2)]
    assert not labelled["has_mask"]
    assert labelled["mask"].eq(2).all()

    # Errors travel as data (a loader worker's exception would reach the main process
    # only as traceback text); the batch carries the message that names the file.
    missing = TrainingImages(source, 3, scale_crop_flip(), tmp_path / "elsewhere")
    item = missing[(1, 0)]
    assert set(item) == {"error"} and "pseudo label missing for 'weak_0'" in item["error"]
    batch = pad_collate([missing[(0, 0)], item])
    with pytest.raises(DataError, match=r"pseudo label missing for 'weak_0': .*elsewhere/weak_0\.png"):
        raise_data_error(batch)
    raise_data_error(pad_collate([missing[(0, 0)]]))  # a batch without errors passes

    # A label damaged on disk is named, with the command that writes it again.
    damaged = tmp_path / "weak_0.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    item = retraining[(1, 2)]
    assert set(item) == {"error"}
    assert f"pseudo label {damaged} cannot be read" in item["error"] and "`pctkit resume`" in item["error"]


def test_micro_batches_put_strong_first_split_for_accumulation_and_raise_data_errors(tmp_path: Path) -> None:
    samples = [_coded_sample(f"s{i}") for i in range(4)] + [
        _coded_sample(f"w{i}", with_mask=False) for i in range(4)
    ]
    source = ListSource(samples)
    dataset = TrainingImages(source, 3, scale_crop_flip())
    strong = IterationBatches([0, 1, 2, 3], 4, 0, "strong", 0, 2)
    weak = IterationBatches([4, 5, 6, 7], 2, 0, "weak", 0, 2)
    iterations = list(micro_batches([(dataset, strong), (dataset, weak)], 2, torch.device("cpu")))
    assert len(iterations) == 2 and all(len(parts) == 2 for parts in iterations)
    first = iterations[0][0]
    assert first.num_strong == 2 and first.images.shape == (3, 3, 6, 8)  # 2 strong + 1 weak
    assert first.images.dtype == torch.float32 and float(first.images.max()) <= 1.0
    assert first.has_mask.tolist() == [True, True, False]
    assert first.masks[first.weak].eq(IGNORE_INDEX).all()
    assert first.strong == slice(0, 2) and first.weak == slice(2, 3)
    # A missing pseudo label stops the stage with the file's name, not a worker traceback.
    retraining = TrainingImages(source, 3, scale_crop_flip(), tmp_path)
    sampler = IterationBatches([4, 5], 2, 0, "retrain", 0, 1)
    with pytest.raises(DataError, match="pseudo label missing for 'w"):
        next(micro_batches([(retraining, sampler)], 1, torch.device("cpu")))


def test_evaluation_images_can_use_reference_masks() -> None:
    source = ListSource([_coded_sample("weak_0", with_mask=False)])
    assert EvaluationImages(source, 3)[0]["mask"].eq(IGNORE_INDEX).all()
    reference = EvaluationImages(source, 3, use_reference=True)[0]
    assert torch.equal(reference["mask"], torch.from_numpy(source[0].reference_mask).long())  # type: ignore[arg-type]
    assert reference["name"] == "weak_0" and not reference["has_mask"]


def test_pad_collate_pads_images_with_zero_and_masks_with_ignore() -> None:
    source = ListSource([_coded_sample("a", 4, 6), _coded_sample("b", 6, 3)])
    items = [EvaluationImages(source, 3)[index] for index in range(2)]
    batch = pad_collate(items)
    assert batch["image"].shape == (2, 3, 6, 6) and batch["mask"].shape == (2, 6, 6)
    assert batch["sizes"] == [(4, 6), (6, 3)]
    assert batch["mask"][0, 4:].eq(IGNORE_INDEX).all() and batch["image"][0, :, 4:].eq(0).all()
    assert batch["mask"][1, :, 3:].eq(IGNORE_INDEX).all()
    assert batch["name"] == ["a", "b"] and batch["index"].tolist() == [0, 1]
    assert batch["image_labels"].shape == (2, 3)


def test_iteration_batches_depend_only_on_seed_stream_and_iteration() -> None:
    pool = list(range(10, 17))
    full = IterationBatches(pool, 3, seed=0, stream="weak", start=0, end=10)
    late = IterationBatches(pool, 3, seed=0, stream="weak", start=6, end=10)
    batches = list(full)
    assert len(batches) == 10 and len(late) == 4
    assert list(late) == batches[6:]
    assert batches != list(IterationBatches(pool, 3, seed=1, stream="weak", start=0, end=10))
    assert batches != list(IterationBatches(pool, 3, seed=0, stream="strong", start=0, end=10))
    # Epochs are permutations of the pool: the first 7 draws hold every image once.
    first_epoch = [index for batch in batches for index, _ in batch][:7]
    assert sorted(first_epoch) == pool
    # Every draw has its own augmentation seed.
    seeds = [seed for batch in batches for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


def test_iteration_batches_split_the_global_batch_over_workers() -> None:
    pool = list(range(12))
    single = list(IterationBatches(pool, 4, 0, "strong", 0, 5))
    ranks = [list(IterationBatches(pool, 4, 0, "strong", 0, 5, rank=r, world_size=2)) for r in range(2)]
    for iteration in range(5):
        combined = ranks[0][iteration] + ranks[1][iteration]
        assert sorted(combined) == sorted(single[iteration])
        assert len(ranks[0][iteration]) == 2


def test_iteration_batches_reject_bad_settings() -> None:
    with pytest.raises(DataError, match="strong stream has no images"):
        IterationBatches([], 2, 0, "strong", 0, 1)
    with pytest.raises(ValueError, match="not divisible by 2 workers"):
        IterationBatches([1, 2, 3], 3, 0, "weak", 0, 1, rank=0, world_size=2)


def test_images_to_float() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    result = images_to_float(images, torch.device("cpu"), channels_last=True)
    assert result.dtype == torch.float32
    assert result.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert result.is_contiguous(memory_format=torch.channels_last)


def test_samples_that_break_the_dataset_contract_are_named() -> None:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    mask = np.zeros((4, 6), dtype=np.uint8)
    assert sample_problem(RawSample(image, mask, [0], "fine"), mask) is None
    channels_first = RawSample(np.zeros((3, 4, 6), dtype=np.uint8), None, [0], "chw")
    assert "image 'chw' is a ndarray uint8 of shape (3, 4, 6)" in str(sample_problem(channels_first, None))
    floats = RawSample(image.astype(np.float32), None, [0], "floats")
    assert "float32" in str(sample_problem(floats, None))
    wide = np.zeros((4, 7), dtype=np.uint8)
    assert sample_problem(RawSample(image, wide, [0], "wide"), wide) == (
        "mask of 'wide' is 7x4 but its image is 6x4 (width x height)"
    )
    # At training time the sample's error names it, as any data error does.
    images = TrainingImages([channels_first], 1, lambda image, mask, seed: (image, mask))
    assert "image 'chw'" in images[0, 0]["error"]


def test_an_augmentation_that_fails_names_the_image() -> None:
    sample = RawSample(np.zeros((4, 6, 3), dtype=np.uint8), None, [0], "img7")

    def crashing(image: torch.Tensor, mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise IndexError("list index out of range")

    error = TrainingImages([sample], 1, crashing)[0, 0]["error"]
    assert error.startswith("the augmentation failed on image 'img7' (index 0): IndexError: list index")


def test_a_strong_stream_refuses_an_image_without_a_mask() -> None:
    sample = RawSample(np.zeros((4, 6, 3), dtype=np.uint8), None, [0], "w0")
    identity = lambda image, mask, seed: (image, mask)  # noqa: E731
    assert "error" not in TrainingImages([sample], 1, identity)[0, 0]
    error = TrainingImages([sample], 1, identity, require_masks=True)[0, 0]["error"]
    assert error == (
        "image 'w0' (index 0) is in the dataset's strong set but has no mask: "
        "every index of strong_indices needs one"
    )
