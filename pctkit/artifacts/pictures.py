"""Pictures people look at instead of reading numbers: prediction grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from pctkit.artifacts.io import atomic_write_bytes
from pctkit.palette import colorize

_TITLE_HEIGHT = 14


def prediction_grid(
    images: Sequence[npt.NDArray[np.uint8]],
    columns: Sequence[tuple[str, Sequence[npt.NDArray[np.uint8]]]],
    path: Path,
    colors: list[tuple[int, int, int]] | None = None,
    cell: int = 128,
) -> None:
    """Write a PNG grid: one row per image; the image, then one coloured mask per column.

    Args:
        images: RGB ``(H, W, 3)`` uint8 images.
        columns: ``(title, masks)`` pairs; each masks list matches ``images``.
        path: the PNG to write (atomically).
        colors: class colours (VOC colour map where absent).
        cell: side of each square cell in pixels (nearest-neighbour upscaling keeps
            label edges crisp).
    """
    titles = ["image"] + [title for title, _ in columns]
    width = cell * len(titles)
    height = _TITLE_HEIGHT + cell * len(images)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * cell + 4, 1), title, fill=(0, 0, 0))
    for row, image in enumerate(images):
        top = _TITLE_HEIGHT + row * cell
        cells = [image] + [colorize(masks[row], colors) for _, masks in columns]
        for column, picture in enumerate(cells):
            tile = Image.fromarray(np.ascontiguousarray(picture)).resize(
                (cell, cell), Image.Resampling.NEAREST
            )
            canvas.paste(tile, (column * cell, top))
    from io import BytesIO

    buffer = BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
