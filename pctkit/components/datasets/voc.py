"""PASCAL VOC 2012 with the SBD augmented masks, split for semi-and-weakly supervision.

The factory :func:`voc` checks the layout cheaply when it is called (so that
``pctkit validate`` shows a broken dataset) and decodes images and masks only when a
sample is asked for. Every problem with the data is a :class:`DataError` that names the
file.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

from pctkit.components.contracts import (
    IGNORE_INDEX,
    LOCATION,
    DataError,
    ParameterError,
    SegmentationData,
)
from pctkit.components.datasets.voc_samples import ImageLabelSource, VocItem, VocSamples

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 21 PASCAL VOC classes, background first."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_LISTED = 5
"""How many missing files an error message spells out before it only counts."""


# --------------------------------------------------------------------------- layout checks


@dataclass(frozen=True)
class _Listed:
    name: str
    line: int


def _read_split(root: Path, relative: str, parameter: str) -> list[_Listed]:
    """The names of a split file, one per line, with their line numbers.

    A line may also be a DeepLab-style list entry (``/JPEGImages/x.jpg /Seg.../x.png``);
    the name is then the stem of its first path.
    """
    path = root / relative
    if not path.is_file():
        raise DataError(
            f"split file {path} not found (parameter {parameter}={relative!r}, relative to "
            f"the dataset root {root})" + _layout_hint(root, relative, parameter),
            parameter,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file {path}: {error}") from error
    listed: list[_Listed] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        token = tokens[0]
        is_path = "/" in token or token.lower().endswith(_IMAGE_SUFFIXES)
        name = PurePosixPath(token).stem if is_path else token
        if name in first_line:
            raise DataError(
                f"split file {path}: name {name!r} appears twice (lines {first_line[name]} "
                f"and {number}); each image may be listed once"
            )
        first_line[name] = number
        listed.append(_Listed(name, number))
    if not listed:
        raise DataError(f"split file {path} is empty (parameter {parameter}={relative!r})", parameter)
    return listed


def _layout_hint(root: Path, relative: str, parameter: str) -> str:
    """What the folder suggests when a split file is not where the recipe says: the
    root one level too high, a list of another name, VOC without the SBD masks."""
    for inner in ("VOC2012", "VOCdevkit/VOC2012"):
        if (root / inner / relative).is_file():
            return f". It is in {root / inner}: --set data.root={root / inner}"
    folder = (root / relative).parent
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.suffix == ".txt")
        without_sbd = Path(relative).name == "train_aug.txt" and "train.txt" in others
        candidates = [name for name in others if not (without_sbd and name == "train.txt")]
        close = difflib.get_close_matches(Path(relative).name, candidates, n=1, cutoff=0.75)
        if close:  # trainaug.txt, the released code's name, for train_aug.txt
            suggestion = str(Path(relative).with_name(close[0]))
            return f". {folder} has {close[0]}: --set data.{parameter}={suggestion}"
        if without_sbd:
            return (
                ". Without the SBD masks (VOC 2012 alone), train on VOC's own list and masks: "
                "--set data.train_list=ImageSets/Segmentation/train.txt "
                "--set data.mask_dir=SegmentationClass (docs/voc.md)"
            )
    return ""


def _require_files(paths: list[tuple[Path, _Listed]], what: str, split: Path, why: str = "") -> None:
    """Raise one error listing every file of ``paths`` that does not exist."""
    missing = [(path, listed) for path, listed in paths if not os.path.isfile(path)]
    if not missing:
        return
    shown = "; ".join(f"{path} (line {listed.line})" for path, listed in missing[:_MAX_LISTED])
    more = f"; and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    raise DataError(
        f"{len(missing)} {what} file(s) for names listed in {split} not found: {shown}{more}"
        + (f" ({why})" if why else "")
    )


def _class_names(num_classes: int, class_names: tuple[str, ...]) -> list[str]:
    if not 2 <= num_classes <= IGNORE_INDEX:
        raise ParameterError(
            "num_classes",
            f"must be between 2 and {IGNORE_INDEX} (masks are uint8 and {IGNORE_INDEX} means ignore), "
            f"got {num_classes}",
        )
    if class_names:
        if len(class_names) != num_classes:
            raise ParameterError(
                "class_names", f"has {len(class_names)} names but num_classes is {num_classes}"
            )
        if len(set(class_names)) != len(class_names):
            duplicated = sorted({name for name in class_names if class_names.count(name) > 1})
            raise ParameterError("class_names", f"repeats {', '.join(duplicated)}")
        return list(class_names)
    if num_classes == len(VOC_CLASS_NAMES):
        return list(VOC_CLASS_NAMES)
    return [f"class_{index}" for index in range(num_classes)]


# --------------------------------------------------------------------------- factory


def voc(
    *,
    root: Annotated[str, LOCATION],
    image_dir: str = "JPEGImages",
    mask_dir: str = "SegmentationClassAug",
    val_mask_dir: str = "SegmentationClass",
    annotation_dir: str = "Annotations",
    train_list: str = "ImageSets/Segmentation/train_aug.txt",
    strong_list: str = "ImageSets/Segmentation/train.txt",
    val_list: str = "ImageSets/Segmentation/val.txt",
    num_strong: int = 1464,
    num_classes: int = 21,
    class_names: tuple[str, ...] = (),
    image_labels: ImageLabelSource = "masks",
    skip_difficult: bool = False,
    image_suffix: str = ".jpg",
    mask_suffix: str = ".png",
) -> SegmentationData:
    """PASCAL VOC 2012 + SBD: the first N images of train.txt strong, the rest of train_aug weak.

    The training set is every name of ``train_list``. The strong set is the first
    ``num_strong`` names of ``strong_list``; a strong name missing from ``train_list`` is
    appended to the training set. Only strong images carry a training mask; every other
    training image carries its mask file, when there is one, as ``reference_mask`` (used
    only to score pseudo labels). Training masks come from ``mask_dir``, validation masks
    from ``val_mask_dir``. Masks are palette or single-channel PNGs, 255 = ignore.

    Image labels always include background. With ``image_labels="masks"`` (the paper's
    protocol) they are the classes of the image's mask file, so every training image
    needs one. With ``"annotations"`` they are the object names of the XML annotation,
    united with the mask's classes for strong and validation images.

    Args:
        root: dataset root folder (VOCdevkit/VOC2012 with SegmentationClassAug added).
        image_dir: folder of the images, relative to root.
        mask_dir: folder of the training masks (VOC + SBD), relative to root.
        val_mask_dir: folder of the validation masks, relative to root.
        annotation_dir: folder of the XML annotations, relative to root.
        train_list: split file naming every training image, relative to root.
        strong_list: split file whose first num_strong names form the strong set.
        val_list: split file naming the validation images, relative to root.
        num_strong: number of strong images taken from strong_list; -1 takes all.
        num_classes: number of classes, background included.
        class_names: one name per class; default the VOC names, or class_0.. otherwise.
        image_labels: where image labels come from: "masks" or "annotations" (XML).
        skip_difficult: with annotation labels, ignore objects marked difficult.
        image_suffix: file extension of the images.
        mask_suffix: file extension of the masks.

    Raises:
        DataError: the layout is broken (root, split files, images or masks missing,
            a split file empty or with duplicates). Broken files found while loading a
            sample (size mismatch, bad label values, corrupt files) raise it from
            ``__getitem__``.
        ParameterError: a parameter is out of range.
    """
    names_of_classes = _class_names(num_classes, class_names)
    if image_labels not in ("masks", "annotations"):
        raise ParameterError("image_labels", f"must be 'masks' or 'annotations', got {image_labels!r}")
    if num_strong != -1 and num_strong <= 0:
        raise ParameterError("num_strong", f"must be positive, or -1 for all, got {num_strong}")

    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataError(
            f"dataset root {root_path} (resolved: {root_path.resolve()}) does not exist or is "
            "not a folder; point to it with --set data.root=/path/to/VOC2012",
            "root",
        )

    train_listed = _read_split(root_path, train_list, "train_list")
    strong_listed = _read_split(root_path, strong_list, "strong_list")
    val_listed = _read_split(root_path, val_list, "val_list")

    if num_strong == -1:
        num_strong = len(strong_listed)
    if num_strong > len(strong_listed):
        raise DataError(
            f"parameter num_strong={num_strong} but split file {root_path / strong_list} lists only "
            f"{len(strong_listed)} names; use at most {len(strong_listed)}, or -1 for all",
            "num_strong",
        )
    strong_names = strong_listed[:num_strong]

    # The protocol draws the strong set from train.txt, which train_aug contains; a
    # custom training list that lacks a strong name gets it appended, so the strong
    # set is always part of the training set.
    train_index = {listed.name: index for index, listed in enumerate(train_listed)}
    listed_in_train = len(train_listed)
    for listed in strong_names:
        if listed.name not in train_index:
            train_index[listed.name] = len(train_listed)
            train_listed.append(listed)
    strong_indices = [train_index[listed.name] for listed in strong_names]
    strong_set = {listed.name for listed in strong_names}

    def image_path(name: str) -> Path:
        return root_path / image_dir / f"{name}{image_suffix}"

    def mask_path(folder: str, name: str) -> Path:
        return root_path / folder / f"{name}{mask_suffix}"

    def annotation_path(name: str) -> Path:
        return root_path / annotation_dir / f"{name}.xml"

    train_file, val_file = root_path / train_list, root_path / val_list
    strong_file = root_path / strong_list
    # Each missing file is reported against the split file that listed its name; an
    # appended strong name was listed by the strong list.
    listed_by: list[tuple[Path, list[_Listed]]] = [
        (train_file, train_listed[:listed_in_train]),
        (strong_file, train_listed[listed_in_train:]),
        (val_file, val_listed),
    ]
    for split_file, entries in listed_by:
        _require_files([(image_path(e.name), e) for e in entries], "image", split_file)
    _require_files([(mask_path(mask_dir, e.name), e) for e in strong_names], "strong mask", strong_file)
    _require_files([(mask_path(val_mask_dir, e.name), e) for e in val_listed], "mask", val_file)
    if image_labels == "masks":
        _require_files(
            [(mask_path(mask_dir, e.name), e) for e in train_listed if e.name not in strong_set],
            "mask",
            train_file,
            why="image_labels='masks' takes every training image's labels from its mask",
        )
    else:
        for split_file, entries in listed_by:
            _require_files(
                [(annotation_path(e.name), e) for e in entries],
                "annotation",
                split_file,
                why="image_labels='annotations' takes image labels from them",
            )

    by_annotations = image_labels == "annotations"
    train_items: list[VocItem] = []
    for listed in train_listed:
        own_mask = mask_path(mask_dir, listed.name)
        strong = listed.name in strong_set
        train_items.append(
            VocItem(
                name=listed.name,
                image_path=image_path(listed.name),
                mask_path=own_mask if strong else None,
                reference_path=None if strong or not own_mask.is_file() else own_mask,
                annotation_path=annotation_path(listed.name) if by_annotations else None,
            )
        )
    val_items = [
        VocItem(
            name=listed.name,
            image_path=image_path(listed.name),
            mask_path=mask_path(val_mask_dir, listed.name),
            reference_path=None,
            annotation_path=annotation_path(listed.name) if by_annotations else None,
        )
        for listed in val_listed
    ]

    def samples(items: list[VocItem]) -> VocSamples:
        return VocSamples(
            items,
            class_names=names_of_classes,
            image_labels=image_labels,
            skip_difficult=skip_difficult,
        )

    return SegmentationData(
        class_names=names_of_classes,
        train=samples(train_items),
        strong_indices=strong_indices,
        val=samples(val_items),
        palette=None,
        description=(
            f"PASCAL VOC at {root_path}: {len(train_items)} training images "
            f"({len(strong_indices)} strong, from {strong_list}), {len(val_items)} validation "
            f"images; image labels from {image_labels}"
        ),
    )
