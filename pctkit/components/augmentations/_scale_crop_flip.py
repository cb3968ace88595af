"""The ``scale_crop_flip`` augmentation (imports torch; see ``scale_crop_flip.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

from pctkit.components.augmentations._tensors import check_inputs
from pctkit.constants import IGNORE_INDEX


@dataclass(frozen=True)
class ScaleCropFlip:
    """Rescale, rotate, crop, flip, jitter, blur: each step only when enabled.

    The order of the steps, and of the random draws, is part of the contract: it makes
    the outputs bit-identical to pctkit's augmentation before components existed.
    """

    scale_range: tuple[float, float] = (1.0, 1.0)
    crop_size: int = 0
    horizontal_flip: bool = False
    color_jitter: float = 0.0
    gaussian_blur: float = 0.0
    rotation: float = 0.0

    def __call__(self, image: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        check_inputs(image, mask, seed)
        rng = np.random.default_rng(seed)
        low, high = self.scale_range
        if high > low or low != 1.0:
            scale = float(rng.uniform(low, high))
            size = [max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale))]
            image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            mask = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST)[0]
        if self.rotation > 0:
            angle = float(rng.uniform(-self.rotation, self.rotation))
            image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
            mask = TF.rotate(mask[None], angle, interpolation=InterpolationMode.NEAREST, fill=[IGNORE_INDEX])[
                0
            ]
        if self.crop_size > 0:
            image, mask = self._crop(image, mask, rng)
        if self.horizontal_flip and rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.color_jitter > 0:
            strength = self.color_jitter
            image = TF.adjust_brightness(image, float(rng.uniform(1 - strength, 1 + strength)))
            image = TF.adjust_contrast(image, float(rng.uniform(1 - strength, 1 + strength)))
            image = TF.adjust_saturation(image, float(rng.uniform(1 - strength, 1 + strength)))
        if self.gaussian_blur > 0 and rng.random() < self.gaussian_blur:
            sigma = float(rng.uniform(0.1, 2.0))
            kernel = 2 * math.ceil(2 * sigma) + 1
            image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
        return image.contiguous(), mask.contiguous()

    def _crop(self, image: Tensor, mask: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """Pad (bottom/right: image 0, mask 255) up to the crop, then cut a random window."""
        crop = self.crop_size
        pad_height, pad_width = max(0, crop - image.shape[1]), max(0, crop - image.shape[2])
        if pad_height or pad_width:
            image = TF.pad(image, [0, 0, pad_width, pad_height], fill=0)
            mask = TF.pad(mask[None], [0, 0, pad_width, pad_height], fill=IGNORE_INDEX)[0]
        top = int(rng.integers(0, image.shape[1] - crop + 1))
        left = int(rng.integers(0, image.shape[2] - crop + 1))
        return image[:, top : top + crop, left : left + crop], mask[top : top + crop, left : left + crop]
