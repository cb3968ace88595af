"""Synthetic segmentation scenes made of scikit-learn's handwritten digits.

A scene is a small RGB canvas with a noisy colour-gradient background and a few real
handwritten digits (the 1,797 8x8 images bundled with scikit-learn) scaled up, tinted
and pasted at random places. Every pixel's class is known exactly, so the dataset needs
no download and gives exact masks and image labels: a cheap stand-in for a real
semi-supervised segmentation benchmark.

Scenes are generated on demand. Scene ``i`` of a split comes from its own random stream,
seeded by ``(seed, split, i)``, so it is the same whatever the access order and whatever
the number of other scenes; in particular the training scenes do not depend on where
the strong/weak boundary lies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pctkit.components.contracts import DataError, ParameterError, ParameterErrors, SegmentationData
from pctkit.components.datasets._digit_scene_source import (
    _BACKGROUND_COLOUR,
    _DIGIT_COLOURS,
    _DIGIT_SIDE,
    _DIGIT_VALUES,
    _TRAIN_STREAM,
    _VAL_STREAM,
    DigitSceneSource,
    _bilinear_weights,
    _SceneSpec,
    _split_digit_pool,
)


def handwritten_digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """scikit-learn's 1,797 handwritten 8x8 digits ``(N, 8, 8)`` and their values.

    Read straight from the data file scikit-learn ships, without importing scikit-learn
    (which would add most of a second to ``pctkit validate``); through
    ``sklearn.datasets.load_digits`` where the file is not found.

    Raises:
        DataError: scikit-learn is not installed.
    """
    spec = importlib.util.find_spec("sklearn")
    # A None entry in sys.modules means "this import must fail": honour it.
    if spec is None or sys.modules.get("sklearn.datasets", spec) is None:
        raise DataError(
            "digit_scenes needs scikit-learn for its bundled handwritten digits: pip install 'pctkit[demo]'"
        )
    folder = next(iter(spec.submodule_search_locations or []), None)
    path = Path(folder) / "datasets" / "data" / "digits.csv.gz" if folder else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float32), np.asarray(digits.target, dtype=np.int64)


def _argument_problems(
    *,
    num_strong: int,
    num_weak: int,
    num_val: int,
    canvas_size: int,
    min_digits: int,
    max_digits: int,
    min_digit_size: int,
    max_digit_size: int,
    stroke_dilation: int,
    digit_classes: tuple[int, ...],
    seed: int,
) -> list[str]:
    """Every problem with the arguments, so that they can be reported at once."""
    problems: list[str] = []
    if num_strong < 1:
        problems.append(f"num_strong must be at least 1, got {num_strong}")
    for name, value in (("num_weak", num_weak), ("num_val", num_val), ("seed", seed)):
        if value < 0:
            problems.append(f"{name} must be 0 or more, got {value}")
    if min_digits < 0:
        problems.append(f"min_digits must be 0 or more, got {min_digits}")
    if max_digits < 1:
        problems.append(f"max_digits must be at least 1, got {max_digits}")
    if min_digits > max_digits:
        problems.append(f"min_digits ({min_digits}) must not exceed max_digits ({max_digits})")
    if min_digit_size < _DIGIT_SIDE:
        problems.append(
            f"min_digit_size must be at least {_DIGIT_SIDE} (the digit images are "
            f"{_DIGIT_SIDE}x{_DIGIT_SIDE} and are only scaled up), got {min_digit_size}"
        )
    if min_digit_size > max_digit_size:
        problems.append(
            f"min_digit_size ({min_digit_size}) must not exceed max_digit_size ({max_digit_size})"
        )
    if max_digit_size > canvas_size:
        problems.append(f"max_digit_size ({max_digit_size}) must not exceed canvas_size ({canvas_size})")
    if stroke_dilation < 0:
        problems.append(f"stroke_dilation must be 0 or more, got {stroke_dilation}")
    elif stroke_dilation * _DIGIT_SIDE >= min_digit_size:
        # One pixel of the 8x8 source digits spans min_digit_size / 8 pixels of the smallest
        # digit; growing every stroke by that much fills the gaps inside most digits.
        problems.append(
            f"stroke_dilation ({stroke_dilation}) must be less than min_digit_size / {_DIGIT_SIDE} "
            f"({min_digit_size} / {_DIGIT_SIDE}, one source pixel): bolder strokes fill the digits' "
            "holes; 1 keeps digits of 12 px and more readable"
        )
    if not digit_classes:
        problems.append("digit_classes must name at least one digit, e.g. (0, 1, 2)")
    out_of_range = [digit for digit in digit_classes if digit not in _DIGIT_VALUES]
    if out_of_range:
        problems.append(f"digit_classes must be digits 0..9, got {out_of_range}")
    duplicates = sorted({digit for digit in digit_classes if digit_classes.count(digit) > 1})
    if duplicates:
        problems.append(f"digit_classes must not repeat a digit, {duplicates} repeated")
    return problems


def digit_scenes(
    *,
    num_strong: int = 100,
    num_weak: int = 1900,
    num_val: int = 500,
    canvas_size: int = 64,
    min_digits: int = 1,
    max_digits: int = 3,
    min_digit_size: int = 16,
    max_digit_size: int = 32,
    stroke_dilation: int = 0,
    digit_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    seed: int = 0,
) -> SegmentationData:
    """Synthetic scenes of handwritten digits on noisy backgrounds; no download.

    Each scene is an RGB canvas with a random colour gradient and pixel noise, holding
    ``min_digits`` to ``max_digits`` of scikit-learn's real handwritten 8x8 digits,
    scaled up, tinted to contrast with the background and placed at random (later
    digits paint over earlier ones). Classes are background plus one per digit in
    ``digit_classes``, in that order; masks and image labels are exact. Training scenes
    ``0 .. num_strong - 1`` carry masks, the following ``num_weak`` only image labels
    (their mask is kept as ``reference_mask`` for scoring pseudo labels). Validation
    scenes use digit images that no training scene uses. The scene counts do not change
    any scene: ``num_strong=S + W, num_weak=0`` yields the same training scenes as
    ``num_strong=S, num_weak=W`` (all other arguments equal). Needs scikit-learn
    (``pip install 'pctkit[demo]'``).

    Args:
        num_strong: number of training scenes with a mask (at least 1).
        num_weak: number of training scenes with image labels only.
        num_val: number of validation scenes.
        canvas_size: side of each square scene, in pixels.
        min_digits: fewest digits in a scene.
        max_digits: most digits in a scene.
        min_digit_size: smallest side of a pasted digit, in pixels (at least 8).
        max_digit_size: largest side of a pasted digit, in pixels (at most canvas_size).
        stroke_dilation: pixels by which every stroke grows after upscaling, ink and
            mask alike, within the digit's square (0: the scanned strokes; less than
            min_digit_size / 8). Thin strokes cap even fully supervised IoU, the more
            so with coarse features; 1 raises it and keeps digits of 12 px or more
            readable.
        digit_classes: the digits used, in class order (class 1 is the first one).
        seed: seed of every random choice; the same seed gives the same scenes.

    Raises:
        ValueError: an argument is out of range (every problem is listed).
        DataError: scikit-learn is not installed.
    """
    digit_classes = tuple(digit_classes)
    problems = _argument_problems(
        num_strong=num_strong,
        num_weak=num_weak,
        num_val=num_val,
        canvas_size=canvas_size,
        min_digits=min_digits,
        max_digits=max_digits,
        min_digit_size=min_digit_size,
        max_digit_size=max_digit_size,
        stroke_dilation=stroke_dilation,
        digit_classes=digit_classes,
        seed=seed,
    )
    if problems:
        # Every message starts with the parameter it is about.
        errors = [ParameterError(problem.split(" ", 1)[0], problem) for problem in problems]
        raise ParameterErrors(errors, "digit_scenes")

    raw_images, targets = handwritten_digits()
    # Scale each digit to its own peak so that the stroke threshold means the same for
    # faint and bold handwriting.
    digit_images = raw_images / raw_images.max(axis=(1, 2), keepdims=True)

    is_val = _split_digit_pool(targets, seed)
    train_pools = [np.flatnonzero((targets == digit) & ~is_val) for digit in digit_classes]
    val_pools = [np.flatnonzero((targets == digit) & is_val) for digit in digit_classes]

    spec = _SceneSpec(
        seed=seed,
        canvas_size=canvas_size,
        min_digits=min_digits,
        max_digits=max_digits,
        min_digit_size=min_digit_size,
        max_digit_size=max_digit_size,
        stroke_dilation=stroke_dilation,
        digit_images=digit_images,
        upscale_weights={
            size: _bilinear_weights(size, _DIGIT_SIDE) for size in range(min_digit_size, max_digit_size + 1)
        },
        ramp=np.linspace(0.0, 1.0, canvas_size, dtype=np.float32),
    )
    train = DigitSceneSource(
        spec,
        pools=train_pools,
        stream=_TRAIN_STREAM,
        length=num_strong + num_weak,
        num_with_mask=num_strong,
        name_prefix="train",
    )
    val = DigitSceneSource(
        spec,
        pools=val_pools,
        stream=_VAL_STREAM,
        length=num_val,
        num_with_mask=num_val,
        name_prefix="val",
    )
    return SegmentationData(
        class_names=["background", *(str(digit) for digit in digit_classes)],
        train=train,
        strong_indices=list(range(num_strong)),
        val=val,
        palette=[_BACKGROUND_COLOUR, *(_DIGIT_COLOURS[digit] for digit in digit_classes)],
        description=(
            f"{canvas_size}x{canvas_size} scenes of {min_digits}-{max_digits} handwritten "
            f"digits ({len(digit_classes)} digit classes) from scikit-learn"
            + (f", strokes dilated by {stroke_dilation} px" if stroke_dilation else "")
        ),
    )
