"""The contracts between components and the engine.

Components (backbones, heads, datasets, ...) are plain Python: they know nothing of
recipes, the registry or the engine. This module states what the engine expects of
each kind, so that a third-party plugin can be written against it alone.

Backbone contract
-----------------
A backbone factory returns an ``nn.Module`` whose ``forward(x)`` takes a float image
batch ``(N, 3, H, W)`` (already normalised) and returns a list of feature maps, finest
first. The module has two attributes:

- ``out_channels: list[int]`` -- channels of each returned map;
- ``out_strides: list[int]`` -- the stride of each map relative to the input;

and optionally ``mean`` / ``std`` (tuples of three floats) giving the normalisation the
backbone was trained with. The engine normalises images with them.

Head contract
-------------
A head factory takes ``(in_channels, in_strides, num_classes)`` positionally (supplied
by the engine from the backbone and the dataset) and returns an ``nn.Module`` whose
``forward(features)`` maps the backbone's list of features to logits ``(N, C, h, w)`` at
any resolution; the engine upsamples them to the label resolution. The head exposes
``classifier: nn.Module`` -- its final layer, which may get its own learning rate.

Dataset contract
----------------
A dataset factory returns :class:`SegmentationData`: raw, unaugmented samples. The
engine owns augmentation, normalisation, batching and sampling, so every dataset is
augmented the same way, as the recipe declares.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from pctkit.component_info import LOCATION as LOCATION
from pctkit.component_info import Location as Location
from pctkit.constants import IGNORE_INDEX as IGNORE_INDEX


@dataclass
class RawSample:
    """One image as a dataset stores it.

    Attributes:
        image: ``uint8`` array ``(H, W, 3)``, RGB.
        mask: ``uint8`` array ``(H, W)`` of class indices (255 = ignore), or ``None``
            when the image has no pixel-level label available for training.
        image_labels: sorted class indices present in the image (background 0
            included). For an image with a mask, the union with the mask's classes.
        name: a stable identifier (file stem for file-based datasets).
        reference_mask: a mask that must *not* be used for training, only to score
            pseudo labels (for example the hidden ground truth of a weak image), or
            ``None``.
    """

    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8] | None
    image_labels: list[int]
    name: str
    reference_mask: npt.NDArray[np.uint8] | None = None


@runtime_checkable
class SampleSource(Protocol):
    """An indexable collection of :class:`RawSample`.

    A source may also have a ``names`` property (the sample names in index order, read
    without loading a sample): a resume then checks that the data it finds has the
    names the run started with (:mod:`pctkit.engine.data_identity`).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> RawSample: ...


@dataclass
class SegmentationData:
    """What a dataset factory returns.

    Attributes:
        class_names: one name per class, index 0 is background.
        train: every training image. Images with a mask carry it; the weak stream
            samples from all of them (METHOD.md).
        strong_indices: indices into ``train`` that form the strong set (each has a
            mask).
        val: validation images, each with a mask.
        palette: optional ``(C, 3)`` colours for pictures and palette PNGs; the VOC
            colour map is used when absent.
    """

    class_names: list[str]
    train: SampleSource
    strong_indices: list[int]
    val: SampleSource
    palette: list[tuple[int, int, int]] | None = None
    description: str = field(default="")

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)


def package_file(path: str) -> Path:
    """A file path, where ``package:relative/path`` names a file shipped inside an
    installed Python package (``pctkit:weights/x.safetensors``), found wherever the
    package is installed."""
    package, separator, relative = path.partition(":")
    if separator and len(package) > 1 and package.replace("_", "").replace(".", "").isalnum():
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations))) / relative
    return Path(path).expanduser()


class DataError(Exception):
    """Bad or unreadable data. The message names the file and says what is wrong.

    Args:
        message: what is wrong, with the file.
        parameter: the dataset parameter that leads to the file (``root``,
            ``train_list``), when one does: ``pctkit validate`` then points at its key.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class ParameterError(ValueError):
    """A component parameter that cannot work, named so that ``pctkit validate`` can
    point at its recipe key (``model.backbone.out_indices``) and TOML line.

    Components raise it from their factories (or from a check they run at build time)
    instead of a bare ``ValueError``; the message says what is wrong, ``hint`` what
    would be right (allowed values, close names, the install command).

    Args:
        parameter: the factory's keyword argument, as written in the recipe.
        message: what is wrong with its value.
        hint: what would work, or ``None``.
    """

    def __init__(self, parameter: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{parameter}: {message}" + (f" ({hint})" if hint else ""))
        self.parameter = parameter
        self.message = message
        self.hint = hint


class ParameterErrors(ValueError):
    """Several bad parameters of one component, each a :class:`ParameterError`, so that
    ``pctkit validate`` reports every one at its own key."""

    def __init__(self, errors: list[ParameterError], component: str = "") -> None:
        text = "; ".join(error.message for error in errors)
        super().__init__(f"{component}: {text}" if component else text)
        self.errors = errors
