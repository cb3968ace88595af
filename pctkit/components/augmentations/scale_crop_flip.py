"""``scale_crop_flip``: the augmentation of pctkit's recipes before augmentation components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pctkit.components.augmentations._checks import crop_side, ordered_range, within

if TYPE_CHECKING:
    from pctkit.components.augmentations._scale_crop_flip import ScaleCropFlip


def scale_crop_flip(
    *,
    scale_range: tuple[float, float] = (1.0, 1.0),
    crop_size: int = 0,
    horizontal_flip: bool = False,
    color_jitter: float = 0.0,
    gaussian_blur: float = 0.0,
    rotation: float = 0.0,
) -> ScaleCropFlip:
    """Random rescale, rotation, crop and flip, then colour jitter and blur (pctkit's first augmentation).

    The operations run in that order, each only when enabled; every random number
    comes, in that order, from ``numpy.random.default_rng(seed)``, so the outputs are
    bit-identical to those of the recipe section ``[augmentation]`` it replaces. Unlike
    ``random_ops_crop`` and ``crop``, a crop larger than the image pads the image with
    black (0), not the mean colour, at the bottom and right only (masks with 255), and a
    rotation fills the image with black too: kept so that old runs reproduce.

    Args:
        scale_range: random rescale factor range (min, max), drawn uniformly; [1, 1]
            keeps the size.
        crop_size: square random crop (padded with 0, masks with 255, if smaller); 0
            keeps the size.
        horizontal_flip: random horizontal flips (probability 0.5).
        color_jitter: strength s of brightness/contrast/saturation jitter, each factor
            drawn from [1 - s, 1 + s]; 0 disables it.
        gaussian_blur: probability of a Gaussian blur (sigma drawn from [0.1, 2.0]).
        rotation: maximum random rotation in degrees (angle drawn from [-r, r]); 0
            disables it.
    """
    from pctkit.components.augmentations._scale_crop_flip import ScaleCropFlip

    return ScaleCropFlip(
        scale_range=ordered_range("scale_range", scale_range, positive=True),
        crop_size=crop_side(crop_size),
        horizontal_flip=bool(horizontal_flip),
        color_jitter=within("color_jitter", color_jitter, 0.0, 1.0),
        gaussian_blur=within("gaussian_blur", gaussian_blur, 0.0, 1.0),
        rotation=within("rotation", rotation, 0.0, 180.0),
    )
