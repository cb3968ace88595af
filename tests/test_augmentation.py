"""Tests of the training augmentation (``pctkit.engine.data.augment``): image and mask
move together, masks keep their label values, crops pad with ignore, seeds decide."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from pctkit.components.augmentations.scale_crop_flip import scale_crop_flip
from pctkit.components.contracts import IGNORE_INDEX

GEOMETRY = scale_crop_flip(scale_range=(0.5, 2.0), crop_size=48, horizontal_flip=True, rotation=30.0)
EVERYTHING = scale_crop_flip(
    scale_range=(0.5, 2.0),
    crop_size=48,
    horizontal_flip=True,
    color_jitter=0.4,
    gaussian_blur=1.0,
    rotation=30.0,
)
VALUE_STEP = 12
"""Image value per label value in :func:`encoded_pair` (labels 0..20 -> 0..240)."""


def encoded_pair(height: int = 60, width: int = 80) -> tuple[Tensor, Tensor]:
    """A mask of 10x10 blocks with labels that differ left/right and top/bottom, and an
    image whose three channels hold ``label * VALUE_STEP``: the image encodes its mask."""
    rows = torch.arange(height)[:, None] // 10
    columns = torch.arange(width)[None, :] // 10
    mask = (rows * 5 + columns * 3) % 21
    image = (mask * VALUE_STEP).to(torch.uint8).expand(3, height, width).clone()
    return image, mask.long()


def interior(mask: Tensor, radius: int) -> Tensor:
    """Pixels whose whole ``(2 radius + 1)``-square neighbourhood lies in the frame and has
    one label (not 255). At the frame's edge a rotated image blends in its black fill
    while the nearest-neighbour mask still has a label: that is resampling, not a bug."""
    framed = F.pad(mask[None, None].float(), [radius] * 4, value=IGNORE_INDEX)
    size = 2 * radius + 1
    highest = F.max_pool2d(framed, size, stride=1)
    lowest = -F.max_pool2d(-framed, size, stride=1)
    return ((highest == lowest) & (mask[None, None] != IGNORE_INDEX))[0, 0]


@pytest.mark.parametrize("seed", range(8))
def test_image_and_mask_are_transformed_together(seed: int) -> None:
    image, mask = encoded_pair()
    out_image, out_mask = GEOMETRY(image, mask, seed)
    assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    # Away from label boundaries (where bilinear resampling blends two blocks) the
    # image still encodes the mask it travelled with: same scale, crop, flip, angle.
    checked = interior(out_mask, radius=2)
    assert checked.sum() > 40  # a small scale leaves few block interiors
    expected = out_mask[checked].float() * VALUE_STEP
    for channel in out_image:
        assert torch.allclose(channel[checked].float(), expected, atol=4.0)


def test_a_mismatch_would_be_caught() -> None:
    """The check above is sharp: a mask flipped on its own disagrees with its image."""
    image, mask = encoded_pair()
    out_image, out_mask = GEOMETRY(image, mask, 0)
    flipped = out_mask.flip(-1)
    checked = interior(flipped, radius=2)
    disagree = (out_image[0][checked].float() - flipped[checked].float() * VALUE_STEP).abs() > 4.0
    assert disagree.float().mean() > 0.3


@pytest.mark.parametrize("seed", range(8))
def test_masks_keep_their_label_values(seed: int) -> None:
    # Neighbouring pixels with unrelated labels: any interpolation but nearest neighbour
    # would invent values in between.
    generator = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 21, (37, 53), generator=generator)
    mask[mask == 20] = IGNORE_INDEX
    image = torch.randint(0, 256, (3, 37, 53), generator=generator, dtype=torch.uint8)
    _, out_mask = EVERYTHING(image, mask, seed)
    assert out_mask.dtype == mask.dtype
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {IGNORE_INDEX}


def test_crop_pads_the_mask_with_ignore_and_the_image_with_zero() -> None:
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    mask = torch.full((20, 30), 7, dtype=torch.long)
    settings = scale_crop_flip(crop_size=48)
    out_image, out_mask = settings(image, mask, 0)
    assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    assert (out_mask[:20, :30] == 7).all() and (out_image[:, :20, :30] == 200).all()
    padding = torch.ones(48, 48, dtype=torch.bool)
    padding[:20, :30] = False
    assert (out_mask[padding] == IGNORE_INDEX).all()
    assert (out_image[:, padding] == 0).all()


def test_rotation_fills_the_corners_with_ignore() -> None:
    image, mask = encoded_pair(64, 64)
    settings = scale_crop_flip(rotation=45.0)
    rotated = [settings(image, mask, seed)[1] for seed in range(4)]
    assert all(r.shape == (64, 64) for r in rotated)
    assert any((r[0, 0] == IGNORE_INDEX).item() for r in rotated)
    assert (mask != IGNORE_INDEX).all()


def test_photometric_changes_leave_the_mask_alone() -> None:
    image, mask = encoded_pair()
    plain = GEOMETRY(image, mask, 5)
    coloured = EVERYTHING(image, mask, 5)
    # Photometric draws come after the geometric ones, so the geometry is the same.
    assert torch.equal(plain[1], coloured[1])
    assert not torch.equal(plain[0], coloured[0])
    assert coloured[0].dtype == torch.uint8


def test_no_augmentation_is_the_identity() -> None:
    image, mask = encoded_pair()
    out_image, out_mask = scale_crop_flip()(image, mask, 0)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


def test_same_seed_same_result_other_seed_other_result() -> None:
    image, mask = encoded_pair()
    first = EVERYTHING(image, mask, 11)
    again = EVERYTHING(image, mask, 11)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [EVERYTHING(image, mask, seed) for seed in range(3)]
    assert any(not torch.equal(first[0], other[0]) for other in others)
    assert any(not torch.equal(first[1], other[1]) for other in others)


def test_scale_range_bounds_the_size() -> None:
    image, mask = encoded_pair(40, 60)
    settings = scale_crop_flip(scale_range=(0.5, 2.0))
    shapes = {tuple(settings(image, mask, s)[1].shape) for s in range(20)}
    assert len(shapes) > 5
    for height, width in shapes:
        assert 20 <= height <= 80 and 30 <= width <= 120
        assert abs(height / 40 - width / 60) < 0.05  # one factor for both sides
