"""Tensor helpers shared by the augmentation implementations (imports torch)."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision import tv_tensors

from pctkit.components.augmentations._checks import MAX_SEED
from pctkit.constants import IGNORE_INDEX


def check_inputs(image: Tensor, mask: Tensor, seed: int) -> None:
    """Raise a clear error for inputs outside the augmentation contract."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise TypeError(f"image must be a uint8 tensor (3, H, W), got {image.dtype} {tuple(image.shape)}")
    if mask.dtype != torch.int64 or tuple(mask.shape) != tuple(image.shape[1:]):
        raise TypeError(
            f"mask must be an int64 tensor {tuple(image.shape[1:])} (the image's H, W), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")


def random_crop(
    image: tv_tensors.Image,
    mask: tv_tensors.Mask,
    size: int,
    fill: tuple[int, int, int],
    rng: np.random.Generator,
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """A random ``size`` x ``size`` window, as the released code's ``RandomCrop`` draws it.

    Along a side longer than ``size`` the window's offset is random; along a shorter
    side the whole image lands at a random offset inside the window, and the rest is
    ``fill`` (image) and 255 (mask). Draws: the left offset, then the top offset.
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    crop_left, pad_left = _offsets(width, size, int(rng.integers(0, abs(width - size) + 1)))
    crop_top, pad_top = _offsets(height, size, int(rng.integers(0, abs(height - size) + 1)))
    pad_right, pad_bottom = max(0, size - width - pad_left), max(0, size - height - pad_top)
    if pad_left or pad_top or pad_right or pad_bottom:
        padding = [pad_left, pad_top, pad_right, pad_bottom]
        image = TF.pad(image, padding, fill=list(fill))
        mask = TF.pad(mask, padding, fill=IGNORE_INDEX)
    image = image[..., crop_top : crop_top + size, crop_left : crop_left + size]
    mask = mask[..., crop_top : crop_top + size, crop_left : crop_left + size]
    return image, mask


def _offsets(length: int, size: int, offset: int) -> tuple[int, int]:
    """``(crop start, padding before)`` along one side: a longer side is cut at the
    offset, a shorter one is shifted by it inside the window."""
    return (offset, 0) if length >= size else (0, offset)


def plain(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Contiguous plain tensors (no ``tv_tensors`` subclass leaves the augmentation)."""
    return image.as_subclass(Tensor).contiguous(), mask.as_subclass(Tensor).contiguous()
