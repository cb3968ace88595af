"""The released PCT code's two training streams: ``random_ops_crop`` (strong) and ``crop`` (weak).

Facts from the authors' code (YudeWang/Learning-Pseudo-Label, ``lib/datasets/BaseDataset.py``
``__strong_augment__`` and ``lib/datasets/transform.py``); docs/augmentation.md cites the lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pctkit.components.augmentations._checks import (
    IMAGENET_MEAN_COLOUR,
    crop_side,
    fill_colour,
    ordered_range,
)
from pctkit.components.contracts import ParameterError

if TYPE_CHECKING:
    from pctkit.components.augmentations._random_ops import Crop, RandomOpsCrop


def random_ops_crop(
    *,
    crop_size: int = 384,
    num_ops: int = 2,
    horizontal_flip: bool = True,
    autocontrast_range: tuple[float, float] = (0.0, 1.0),
    brightness_range: tuple[float, float] = (0.5, 1.5),
    color_range: tuple[float, float] = (0.5, 1.5),
    contrast_range: tuple[float, float] = (0.5, 1.5),
    equalize_range: tuple[float, float] = (0.5, 1.5),
    invert_range: tuple[float, float] = (0.0, 1.0),
    posterize_bits: tuple[int, int] = (1, 8),
    sharpness_range: tuple[float, float] = (0.0, 1.0),
    solarize_range: tuple[float, float] = (0.0, 1.0),
    scale_range: tuple[float, float] = (0.5, 2.0),
    shear_range: tuple[float, float] = (-0.3, 0.3),
    rotation_range: tuple[int, int] = (-45, 45),
    fill: tuple[int, int, int] = IMAGENET_MEAN_COLOUR,
) -> RandomOpsCrop:
    """The released code's strong stream: k random photometric ops, num_ops - k joint ops, random crop.

    k is drawn uniformly from 0..num_ops. Then k image-only operations, drawn with
    replacement from autocontrast, brightness, color, contrast, equalize, invert,
    posterize, sharpness and solarize; then num_ops - k image+mask operations, drawn
    with replacement from scale, horizontal flip (mirrors with probability 0.5 once
    drawn), shear and rotation; then a random square crop. Each operation draws its
    strength uniformly from its range when it runs. Images are resampled bilinearly
    (bicubic for the rescale) and filled with ``fill``; masks with nearest neighbour
    and 255. The defaults are the released configuration (``config.py``).

    Args:
        crop_size: side of the square random crop; an image side shorter than it lands
            at a random offset and the rest is filled (images ``fill``, masks 255). 0
            skips the crop.
        num_ops: operations per image (the released ``DATA_AUGTIME``).
        horizontal_flip: include the flip among the joint operations; false for
            content whose mirror image is another thing (digits, text).
        autocontrast_range: weight of the original image in a blend with its
            autocontrasted version (1 keeps the original).
        brightness_range: brightness factor (1 keeps the image).
        color_range: saturation factor (1 keeps the image).
        contrast_range: contrast factor (1 keeps the image).
        equalize_range: weight of the original image in a blend with its
            histogram-equalised version (above 1 extrapolates away from it).
        invert_range: weight of the original image in a blend with its inverse.
        posterize_bits: bits kept per channel, an int drawn from [min, max] (8 keeps
            the image).
        sharpness_range: sharpness factor (1 keeps the image, 0 smooths).
        solarize_range: solarize threshold as a fraction of 255 (pixels at or above it
            are inverted).
        scale_range: rescale factor.
        shear_range: shear coefficients, x and y drawn separately and applied together
            (the released matrix [[1, sx], [sy, 1]]); both ends inside (-1, 1).
        rotation_range: rotation in whole degrees, counter-clockwise positive.
        fill: image colour where no source pixel exists (after a crop, shear or
            rotation); the default is ImageNet's mean colour.
    """
    if num_ops < 0:
        raise ParameterError("num_ops", f"must be >= 0, got {num_ops}", hint="the released code uses 2")
    posterize_low, posterize_high = ordered_range("posterize_bits", posterize_bits, minimum=1, maximum=8)
    shear = ordered_range("shear_range", shear_range, minimum=-0.99, maximum=0.99)
    rotation_low, rotation_high = ordered_range("rotation_range", rotation_range, minimum=-180, maximum=180)
    from pctkit.components.augmentations._random_ops import JOINT_OPS, RandomOpsCrop

    return RandomOpsCrop(
        crop_size=crop_side(crop_size),
        num_ops=int(num_ops),
        joint_ops=tuple(op for op in JOINT_OPS if horizontal_flip or op != "horizontal_flip"),
        posterize_bits=(int(posterize_low), int(posterize_high)),
        solarize_range=ordered_range("solarize_range", solarize_range, minimum=0.0, maximum=1.0),
        scale_range=ordered_range("scale_range", scale_range, positive=True),
        shear_range=shear,
        rotation_range=(int(rotation_low), int(rotation_high)),
        fill=fill_colour(fill),
        autocontrast_range=_factor("autocontrast_range", autocontrast_range),
        brightness_range=_factor("brightness_range", brightness_range),
        color_range=_factor("color_range", color_range),
        contrast_range=_factor("contrast_range", contrast_range),
        equalize_range=_factor("equalize_range", equalize_range),
        invert_range=_factor("invert_range", invert_range),
        sharpness_range=_factor("sharpness_range", sharpness_range),
    )


def _factor(parameter: str, value: tuple[float, float]) -> tuple[float, float]:
    """A range of enhancement factors or blend weights: ordered and not negative."""
    return ordered_range(parameter, value, minimum=0.0)


def crop(*, crop_size: int = 384, fill: tuple[int, int, int] = IMAGENET_MEAN_COLOUR) -> Crop:
    """The released code's weak stream: a random square crop only (no scale, flip or colour change).

    Args:
        crop_size: side of the square random crop; an image side shorter than it lands
            at a random offset and the rest is filled (images ``fill``, masks 255). 0
            returns images unchanged.
        fill: image colour of the padding; the default is ImageNet's mean colour.
    """
    from pctkit.components.augmentations._random_ops import Crop

    return Crop(crop_size=crop_side(crop_size), fill=fill_colour(fill))
