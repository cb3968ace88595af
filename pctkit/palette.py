"""Class colours and palette PNGs in the PASCAL VOC format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image


def voc_palette(num_colors: int = 256) -> npt.NDArray[np.uint8]:
    """The PASCAL VOC colour map: ``(num_colors, 3)`` uint8 RGB.

    Class ``i`` gets its colour from the bits of ``i`` spread over the three channels,
    most significant first; index 255 (ignore) comes out as (224, 224, 192).
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def full_palette(colors: list[tuple[int, int, int]] | None) -> npt.NDArray[np.uint8]:
    """A 256-entry palette: ``colors`` first (if given), the VOC map for the rest."""
    palette = voc_palette(256)
    if colors:
        palette[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return palette


def save_palette_png(
    mask: npt.NDArray[np.uint8], path: Path, colors: list[tuple[int, int, int]] | None = None
) -> None:
    """Write a class-index mask as a palette ("P" mode) PNG, VOC style.

    The file is written under a temporary name and renamed, so a reader never sees a
    half-written label.
    """
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(full_palette(colors).reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    temporary.replace(path)


MASK_READ_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError)
"""What :func:`load_mask_png` raises for a file that is missing, truncated, not a PNG
(PIL's errors) or not a mask (its own ``ValueError``)."""


def load_mask_png(path: Path) -> npt.NDArray[np.uint8]:
    """Read a palette or single-channel PNG mask as class indices (uint8, 255 = ignore).

    Raises:
        One of :data:`MASK_READ_ERRORS`.
    """
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask must be a palette or single-channel PNG, got mode {image.mode!r}")
        return np.asarray(image, dtype=np.uint8).copy()


def colorize(
    mask: npt.NDArray[np.uint8], colors: list[tuple[int, int, int]] | None = None
) -> npt.NDArray[np.uint8]:
    """An RGB picture ``(H, W, 3)`` of a class-index mask."""
    return full_palette(colors)[mask]
