"""A tiny but real PASCAL VOC + SBD folder, for tests, examples and demos.

:func:`write_tiny_voc` writes the same files as the real dataset -- JPEG images, palette
PNG masks, XML annotations, split files -- at a few dozen pixels per side, so that the
``voc`` dataset, the CLI and the engine can run end to end on the real file formats in
seconds.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import numpy.typing as npt
from PIL import Image

from pctkit.components.contracts import IGNORE_INDEX
from pctkit.components.datasets.voc import VOC_CLASS_NAMES
from pctkit.palette import save_palette_png, voc_palette

_TRAIN_STREAM = 0
_VAL_STREAM = 1
"""Second entry of each image's seed: every image has its own random stream."""

_MAX_OBJECT_CLASSES = 5
"""Objects use foreground classes 1..5 (fewer if there are fewer): few classes, each
seen often, as a tiny demo needs."""

_JPEG_QUALITY = 95


def tiny_voc_names(num_train: int, num_val: int) -> tuple[list[str], list[str]]:
    """The image names :func:`write_tiny_voc` uses: ``train_0000``.., ``val_0000``.."""
    return [f"train_{i:04d}" for i in range(num_train)], [f"val_{i:04d}" for i in range(num_val)]


def write_tiny_voc(
    root: Path,
    num_train: int = 12,
    num_val: int = 4,
    num_strong: int = 4,
    size: tuple[int, int] = (48, 64),
    num_classes: int = 21,
    seed: int = 0,
) -> Path:
    """Write a tiny PASCAL VOC 2012 + SBD layout under ``root`` and return ``root``.

    What is written (names from :func:`tiny_voc_names`):

    - ``JPEGImages/<name>.jpg`` for every image: 1 to 3 objects on a noisy, shaded
      background. An object of an odd class is a rectangle, of an even class an
      ellipse, each in its class's VOC colour with some noise. Images alternate between
      ``size`` and ``(height + 8, width - 4)`` pixels, as real VOC images vary in size.
    - ``ImageSets/Segmentation/train_aug.txt``: every training name, in order.
      ``train.txt``: ``num_strong`` training names spread through train_aug and listed
      in *reverse* order, so that "the first N of train.txt" differs from "the first N
      of train_aug". ``val.txt``: every validation name.
    - ``SegmentationClass/<name>.png`` (palette PNG) for the names of train.txt and
      val.txt, with a 255 (ignore) band on every boundary between two labels, as in VOC.
    - ``SegmentationClassAug/<name>.png`` for every training name: the VOC mask for the
      names of train.txt, a mask without ignore band (like SBD's) for the others.
    - ``Annotations/<name>.xml`` for every image: one ``<object>`` per drawn object,
      with ``name``, ``difficult`` and a 1-based ``bndbox``. The last object of every
      third image (indices 2, 5, 8, ...) is marked difficult; it is still in the masks.
      An object may be hidden entirely by a later one: it is then in the annotation but
      not in the masks, as happens in real data.

    Class names are the VOC names when ``num_classes`` is 21, ``class_0``.. otherwise,
    matching the ``voc`` dataset's defaults. Each image has its own random stream seeded
    by ``(seed, split, index)``, so the output depends only on the arguments.

    Args:
        root: folder to write into (created if needed).
        num_train: number of training images (train_aug.txt).
        num_val: number of validation images (val.txt).
        num_strong: number of names in train.txt, at most ``num_train``.
        size: ``(height, width)`` of the even-indexed images.
        num_classes: number of classes, background included.
        seed: seed of every random choice.

    Returns:
        ``root``.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one image per split, got {num_train=} and {num_val=}")
    if not 1 <= num_strong <= num_train:
        raise ValueError(f"num_strong must be in 1..num_train={num_train}, got {num_strong}")
    if not 2 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 2..{IGNORE_INDEX}, got {num_classes}")
    if min(size) < 16:
        raise ValueError(f"size must be at least 16 pixels per side, got {size}")
    class_names = (
        list(VOC_CLASS_NAMES)
        if num_classes == len(VOC_CLASS_NAMES)
        else [f"class_{index}" for index in range(num_classes)]
    )
    train_names, val_names = tiny_voc_names(num_train, num_val)
    spread = np.linspace(0, num_train - 1, num_strong).round().astype(int)
    strong_names = [train_names[int(position)] for position in spread[::-1]]

    root = Path(root)
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True, exist_ok=True)
    for file_name, names in (
        ("train_aug.txt", train_names),
        ("train.txt", strong_names),
        ("val.txt", val_names),
    ):
        (split_dir / file_name).write_text("".join(f"{name}\n" for name in names))

    voc_names = set(strong_names) | set(val_names)
    for stream, names in ((_TRAIN_STREAM, train_names), (_VAL_STREAM, val_names)):
        for index, name in enumerate(names):
            rng = np.random.default_rng([seed, stream, index])
            height, width = size if index % 2 == 0 else (size[0] + 8, size[1] - 4)
            image, labels, objects = _draw_scene(rng, height, width, num_classes)
            if index % 3 == 2:
                class_index, box, _ = objects[-1]
                objects[-1] = (class_index, box, True)

            root.joinpath("JPEGImages").mkdir(exist_ok=True)
            Image.fromarray(image).save(
                root / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=_JPEG_QUALITY
            )
            voc_mask = _with_ignore_band(labels)
            if name in voc_names:
                save_palette_png(voc_mask, root / "SegmentationClass" / f"{name}.png")
            if stream == _TRAIN_STREAM:
                aug_mask = voc_mask if name in voc_names else labels
                save_palette_png(aug_mask, root / "SegmentationClassAug" / f"{name}.png")
            _write_annotation(
                root / "Annotations" / f"{name}.xml", name, (height, width), objects, class_names
            )
    return root


_Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)``, 0-based, end exclusive."""
_Object = tuple[int, _Box, bool]
"""``(class index, box, difficult)``."""


def _draw_scene(
    rng: np.random.Generator, height: int, width: int, num_classes: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], list[_Object]]:
    """An RGB image, its label map (no ignore) and the objects drawn, back to front."""
    rows = np.arange(height, dtype=np.float32)[:, None]
    columns = np.arange(width, dtype=np.float32)[None, :]

    base = rng.uniform(90, 170, size=3)
    shade = rng.uniform(-30, 30) * (rows / height - 0.5)
    picture = base + shade[..., None] + rng.normal(0, 12, size=(height, width, 3))
    labels = np.zeros((height, width), dtype=np.uint8)

    colours = voc_palette(num_classes).astype(np.float32)
    num_object_classes = min(num_classes - 1, _MAX_OBJECT_CLASSES)
    objects: list[_Object] = []
    for _ in range(int(rng.integers(1, 4))):
        class_index = int(rng.integers(1, num_object_classes + 1))
        box_height = int(rng.integers(max(6, height // 4), height // 2 + 1))
        box_width = int(rng.integers(max(6, width // 4), width // 2 + 1))
        y0 = int(rng.integers(0, height - box_height + 1))
        x0 = int(rng.integers(0, width - box_width + 1))
        box = (x0, y0, x0 + box_width, y0 + box_height)
        if class_index % 2 == 1:
            region = (rows >= y0) & (rows < box[3]) & (columns >= x0) & (columns < box[2])
        else:
            centre_y, centre_x = y0 + (box_height - 1) / 2, x0 + (box_width - 1) / 2
            region = ((rows - centre_y) / (box_height / 2)) ** 2 + (
                (columns - centre_x) / (box_width / 2)
            ) ** 2 <= 1.0
        texture = colours[class_index] + rng.normal(0, 8, size=(height, width, 3))
        picture = np.where(region[..., None], texture, picture)
        labels[region] = class_index
        objects.append((class_index, box, False))
    image = np.clip(picture, 0, 255).round().astype(np.uint8)
    return image, labels, objects


def _with_ignore_band(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``labels`` with 255 on both sides of every boundary, like VOC's outlines."""
    boundary = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    banded = labels.copy()
    banded[boundary] = IGNORE_INDEX
    return banded


def _write_annotation(
    path: Path,
    name: str,
    size: tuple[int, int],
    objects: list[_Object],
    class_names: list[str],
) -> None:
    annotation = ElementTree.Element("annotation")
    ElementTree.SubElement(annotation, "folder").text = "VOC2012"
    ElementTree.SubElement(annotation, "filename").text = f"{name}.jpg"
    size_element = ElementTree.SubElement(annotation, "size")
    for tag, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ElementTree.SubElement(size_element, tag).text = str(value)
    ElementTree.SubElement(annotation, "segmented").text = "1"
    for class_index, (x0, y0, x1, y1), difficult in objects:
        element = ElementTree.SubElement(annotation, "object")
        ElementTree.SubElement(element, "name").text = class_names[class_index]
        ElementTree.SubElement(element, "pose").text = "Unspecified"
        ElementTree.SubElement(element, "truncated").text = "0"
        ElementTree.SubElement(element, "difficult").text = "1" if difficult else "0"
        box = ElementTree.SubElement(element, "bndbox")
        # VOC boxes are 1-based and inclusive.
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ElementTree.SubElement(box, tag).text = str(value)
    tree = ElementTree.ElementTree(annotation)
    ElementTree.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8")
