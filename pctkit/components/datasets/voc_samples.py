"""Samples of a VOC-layout dataset, decoded when asked for (see :mod:`.voc`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import numpy as np
import numpy.typing as npt
from PIL import Image

from pctkit.components.contracts import IGNORE_INDEX, DataError, RawSample
from pctkit.palette import MASK_READ_ERRORS, load_mask_png

ImageLabelSource = Literal["masks", "annotations"]
"""Where image-level labels come from: the mask files or the XML annotations."""


@dataclass(frozen=True)
class VocItem:
    """The files behind one sample; nothing is read until the sample is loaded.

    Attributes:
        name: the file stem, as listed in the split file.
        image_path: the JPEG image.
        mask_path: the mask usable for training or evaluation, or ``None``.
        reference_path: a mask used only to score pseudo labels, or ``None``.
        annotation_path: the XML annotation, or ``None`` when labels come from masks.
    """

    name: str
    image_path: Path
    mask_path: Path | None
    reference_path: Path | None
    annotation_path: Path | None


class VocSamples:
    """A lazily loaded VOC split: a :class:`~pctkit.components.contracts.SampleSource`.

    Holds only paths and plain settings, so it pickles cheaply into data-loader workers.
    """

    def __init__(
        self,
        items: list[VocItem],
        *,
        class_names: list[str],
        image_labels: ImageLabelSource,
        skip_difficult: bool,
    ) -> None:
        self.items = items
        self.class_names = class_names
        self.image_labels = image_labels
        self.skip_difficult = skip_difficult
        self._class_index = {name: index for index, name in enumerate(class_names)}

    @property
    def names(self) -> list[str]:
        """The sample names (file stems), in index order."""
        return [item.name for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> RawSample:
        item = self.items[index]
        image = _read_image(item.image_path)
        mask = self._read_mask(item.mask_path, item.image_path, image)
        reference_mask = self._read_mask(item.reference_path, item.image_path, image)

        labels = {0}  # background is always present (METHOD.md, notation)
        if self.image_labels == "masks":
            label_source = mask if mask is not None else reference_mask
            if label_source is not None:
                labels |= _classes_in(label_source)
        else:
            assert item.annotation_path is not None  # checked by voc()
            labels |= self._annotation_classes(item.annotation_path)
            # [pctkit] a ground-truth pixel must never be an impossible class, so the
            # labels of an image with a usable mask include the mask's classes. The
            # reference mask is never used here: it must not leak into training.
            if mask is not None:
                labels |= _classes_in(mask)
        return RawSample(
            image=image,
            mask=mask,
            image_labels=sorted(labels),
            name=item.name,
            reference_mask=reference_mask,
        )

    def _read_mask(
        self, path: Path | None, image_path: Path, image: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.uint8] | None:
        if path is None:
            return None
        try:
            mask = load_mask_png(path)
        except MASK_READ_ERRORS as error:
            raise DataError(f"cannot read mask {path}: {error}") from error
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"mask {path} is {_size(mask)} but its image {image_path} is {_size(image)} "
                "(width x height); a mask must have its image's size"
            )
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        bad = [int(v) for v in values if v >= len(self.class_names) and v != IGNORE_INDEX]
        if bad:
            raise DataError(
                f"mask {path} has label values {bad}; with {len(self.class_names)} classes "
                f"a mask may hold 0..{len(self.class_names) - 1} and {IGNORE_INDEX} (ignore)"
            )
        return mask

    def _annotation_classes(self, path: Path) -> set[int]:
        try:
            tree = ElementTree.parse(path)
        except (OSError, ElementTree.ParseError) as error:
            raise DataError(f"cannot read annotation {path}: {error}") from error
        classes: set[int] = set()
        for number, element in enumerate(tree.getroot().iter("object"), start=1):
            name_text = element.findtext("name")
            if name_text is None or not name_text.strip():
                raise DataError(f"annotation {path}: object {number} has no <name>")
            name = name_text.strip()
            if self.skip_difficult and (element.findtext("difficult") or "0").strip() == "1":
                continue
            if name not in self._class_index:
                raise DataError(
                    f"annotation {path}: unknown object name {name!r}; valid names: "
                    f"{', '.join(self.class_names)}"
                )
            classes.add(self._class_index[name])
        return classes


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    # No EXIF rotation: masks are aligned with the pixels as stored, not as displayed.
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error


def _classes_in(mask: npt.NDArray[np.uint8]) -> set[int]:
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return {int(value) for value in present if value != IGNORE_INDEX}


def _size(array: npt.NDArray[np.uint8]) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"
