"""The ``random_ops_crop`` and ``crop`` augmentations (imports torch; see ``random_ops.py``).

Built on ``torchvision.transforms.v2.functional`` with ``tv_tensors.Image`` and
``tv_tensors.Mask``, so each kernel treats a mask as a mask (nearest neighbour). Every
random number comes from ``numpy.random.default_rng`` seeded by the sample's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from pctkit.components.augmentations._tensors import check_inputs, plain, random_crop
from pctkit.constants import IGNORE_INDEX

PHOTOMETRIC_OPS = (
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "invert",
    "posterize",
    "sharpness",
    "solarize",
)
"""The released code's image-only operations, in its order (``BaseDataset.py:43-61``)."""

JOINT_OPS = ("scale", "horizontal_flip", "shear", "rotation")
"""The released code's image+mask operations, in its order (``BaseDataset.py:63-67``)."""

FLIP_PROBABILITY = 0.5
"""The flip operation, once drawn, mirrors with this probability (``DATA_RANDOMFLIP``)."""

Range = tuple[float, float]


@dataclass(frozen=True)
class Crop:
    """A random square crop; smaller images land at a random offset, the rest is filled.

    ``crop_size`` 0 returns the input unchanged.
    """

    crop_size: int = 384
    fill: tuple[int, int, int] = (124, 116, 104)

    def __call__(self, image: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        check_inputs(image, mask, seed)
        if self.crop_size == 0:
            return image.contiguous(), mask.contiguous()
        rng = np.random.default_rng(seed)
        cropped_image, cropped_mask = random_crop(
            tv_tensors.Image(image), tv_tensors.Mask(mask), self.crop_size, self.fill, rng
        )
        return plain(cropped_image, cropped_mask)


@dataclass(frozen=True)
class RandomOpsCrop:
    """k photometric operations, ``num_ops - k`` joint operations, then a random crop.

    k is uniform in ``0..num_ops``; the operations are drawn with replacement from
    :data:`PHOTOMETRIC_OPS` and ``joint_ops`` (see :meth:`operations`). Each operation
    draws its own strength from its range when it runs.
    """

    crop_size: int = 384
    num_ops: int = 2
    joint_ops: tuple[str, ...] = JOINT_OPS
    autocontrast_range: Range = (0.0, 1.0)
    brightness_range: Range = (0.5, 1.5)
    color_range: Range = (0.5, 1.5)
    contrast_range: Range = (0.5, 1.5)
    equalize_range: Range = (0.5, 1.5)
    invert_range: Range = (0.0, 1.0)
    posterize_bits: tuple[int, int] = (1, 8)
    sharpness_range: Range = (0.0, 1.0)
    solarize_range: Range = (0.0, 1.0)
    scale_range: Range = (0.5, 2.0)
    shear_range: Range = (-0.3, 0.3)
    rotation_range: tuple[int, int] = (-45, 45)
    fill: tuple[int, int, int] = (124, 116, 104)

    def operations(self, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The operations ``seed`` applies: ``(photometric, joint)``, each in order.

        They come from their own stream, ``default_rng((seed, 0))``, so that which
        operations run never depends on the strengths drawn (``default_rng((seed, 1))``).
        """
        choices = np.random.default_rng((seed, 0))
        count = int(choices.integers(0, self.num_ops + 1))
        photometric = choices.integers(0, len(PHOTOMETRIC_OPS), size=count)
        joint = choices.integers(0, len(self.joint_ops), size=self.num_ops - count)
        return (
            tuple(PHOTOMETRIC_OPS[int(index)] for index in photometric),
            tuple(self.joint_ops[int(index)] for index in joint),
        )

    def __call__(self, image: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        check_inputs(image, mask, seed)
        photometric, joint = self.operations(seed)
        strengths = np.random.default_rng((seed, 1))
        picture, labels = tv_tensors.Image(image), tv_tensors.Mask(mask)
        # Image-only operations first, then joint ones, then the crop (BaseDataset.py:147-159).
        for name in photometric:
            picture = self._photometric(name, picture, strengths)
        for name in joint:
            picture, labels = self._joint(name, picture, labels, strengths)
        if self.crop_size > 0:
            picture, labels = random_crop(picture, labels, self.crop_size, self.fill, strengths)
        return plain(picture, labels)

    # ------------------------------------------------------------------ image only

    def _photometric(self, name: str, image: tv_tensors.Image, rng: np.random.Generator) -> tv_tensors.Image:
        if name == "posterize":
            bits = int(rng.integers(self.posterize_bits[0], self.posterize_bits[1] + 1))
            return tv_tensors.Image(TF.posterize(image, bits))
        low, high = getattr(self, f"{name}_range")
        factor = float(rng.uniform(low, high))
        return tv_tensors.Image(_PHOTOMETRIC[name](image, factor))

    # ------------------------------------------------------------------ image and mask

    def _joint(
        self, name: str, image: tv_tensors.Image, mask: tv_tensors.Mask, rng: np.random.Generator
    ) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if name == "scale":
            scale = float(rng.uniform(*self.scale_range))
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            # Bicubic without antialiasing, as cv2.resize(INTER_CUBIC) (transform.py:337).
            resized = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=False)
            # Nearest at pixel centres, on the image's grid; the released cv2 INTER_NEAREST
            # (and torch's "nearest") sample floor(x * scale), up to a pixel off it.
            labels = TF.resize(mask.as_subclass(Tensor)[None], size, InterpolationMode.NEAREST_EXACT)[0]
            return tv_tensors.Image(resized), tv_tensors.Mask(labels)
        if name == "horizontal_flip":
            if rng.random() < FLIP_PROBABILITY:
                return tv_tensors.Image(TF.horizontal_flip(image)), tv_tensors.Mask(TF.horizontal_flip(mask))
            return image, mask
        if name == "shear":
            shear_x = float(rng.uniform(*self.shear_range))
            shear_y = float(rng.uniform(*self.shear_range))
            # The released matrix: both shears at once, offsets -s*cols/2 and -s*rows/2
            # (transform.py:235-237).
            forward = np.array([[1.0, shear_x, -shear_x * width / 2], [shear_y, 1.0, -shear_y * height / 2]])
            return _warp(image, mask, forward, self.fill)
        if name == "rotation":
            degrees = int(rng.integers(self.rotation_range[0], self.rotation_range[1] + 1))
            return _warp(image, mask, _rotation_matrix(degrees, width / 2, height / 2), self.fill)
        raise ValueError(f"unknown joint operation {name!r}; known: {', '.join(JOINT_OPS)}")


def _blend(transformed: Tensor, original: Tensor, weight: float) -> Tensor:
    """``transformed * (1 - weight) + original * weight`` in uint8 (PIL's ``Image.blend``
    with the original second, as the released code calls it)."""
    mixed = transformed.float().mul(1.0 - weight).add_(original.float().mul(weight))
    return mixed.clamp_(0, 255).to(torch.uint8)


_PHOTOMETRIC: dict[str, Callable[[Tensor, float], Tensor]] = {
    "autocontrast": lambda image, weight: _blend(TF.autocontrast(image), image, weight),
    "brightness": lambda image, factor: TF.adjust_brightness(image, factor),
    "color": lambda image, factor: TF.adjust_saturation(image, factor),
    "contrast": lambda image, factor: TF.adjust_contrast(image, factor),
    "equalize": lambda image, weight: _blend(TF.equalize(image), image, weight),
    "invert": lambda image, weight: _blend(TF.invert(image), image, weight),
    "sharpness": lambda image, factor: TF.adjust_sharpness(image, factor),
    "solarize": lambda image, fraction: TF.solarize(image, fraction * 255.0),
}
"""Image-only operations with one real strength (posterize draws an int and is apart)."""


def _rotation_matrix(degrees: int, center_x: float, center_y: float) -> np.ndarray:
    """cv2.getRotationMatrix2D's forward matrix: counter-clockwise by ``degrees`` about
    the centre, in coordinates whose pixel centres are integers."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array(
        [
            [cos, sin, (1 - cos) * center_x - sin * center_y],
            [-sin, cos, sin * center_x + (1 - cos) * center_y],
        ]
    )


def _warp(
    image: tv_tensors.Image, mask: tv_tensors.Mask, forward: np.ndarray, fill: tuple[int, int, int]
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Warp image (bilinear, ``fill``) and mask (nearest, 255) by a forward affine map
    given as cv2.warpAffine takes it; the output keeps the input size."""
    linear, offset = forward[:, :2], forward[:, 2]
    inverse = np.linalg.inv(linear)
    # torchvision samples at pixel centres x + 0.5 and wants the output-to-input map:
    # input = inverse @ (output - 0.5 - offset) + 0.5.
    half = np.array([0.5, 0.5])
    shift = half - inverse @ (half + offset)
    coefficients = [
        float(inverse[0, 0]),
        float(inverse[0, 1]),
        float(shift[0]),
        float(inverse[1, 0]),
        float(inverse[1, 1]),
        float(shift[1]),
        0.0,
        0.0,
    ]
    warped_image = TF.perspective(
        image,
        None,
        None,
        interpolation=InterpolationMode.BILINEAR,
        fill=list(fill),
        coefficients=coefficients,
    )
    warped_mask = TF.perspective(mask, None, None, fill=[IGNORE_INDEX], coefficients=coefficients)
    return tv_tensors.Image(warped_image), tv_tensors.Mask(warped_mask)
