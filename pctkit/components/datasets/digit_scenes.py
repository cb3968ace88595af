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

import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pctkit.components.contracts import DataError, RawSample, SegmentationData

# Random streams, the second entry of every seed tuple: one per split, one for the split
# of the digit images into training and validation pools.
_TRAIN_STREAM = 0
_VAL_STREAM = 1
_POOL_STREAM = 2

_VAL_FRACTION = 0.2
"""Share of each digit's images kept for validation scenes."""

_DIGIT_VALUES = range(10)
"""The digits scikit-learn's images show."""

_DIGIT_SIDE = 8
"""Side of scikit-learn's digit images, in pixels."""

_STROKE_THRESHOLD = 0.5
"""An upscaled pixel above this share of its digit's peak intensity is labelled a stroke."""

_MIN_COLOUR_DISTANCE = 140.0
"""Least RGB distance wanted between a digit's colour and the background under it."""

_MIN_LUMA_DIFFERENCE = 70.0
"""Least brightness difference wanted too: hue contrast alone leaves digits hard to read."""

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 weights of R, G and B in perceived brightness."""

_COLOUR_CANDIDATES = 16
_NOISE_SIGMA_RANGE = (4.0, 14.0)

# Matplotlib's "tab10" colours, one per digit value, so that a digit keeps its colour
# whichever subset of digits a recipe uses.
_DIGIT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
_BACKGROUND_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class _SceneSpec:
    """What every scene of one factory call shares."""

    seed: int
    canvas_size: int
    min_digits: int
    max_digits: int
    min_digit_size: int
    max_digit_size: int
    stroke_dilation: int
    digit_images: npt.NDArray[np.float32]
    """``(N, 8, 8)`` digit images, each scaled so that its brightest pixel is 1."""
    upscale_weights: dict[int, npt.NDArray[np.float32]]
    """Bilinear interpolation matrix ``(size, 8)`` for every allowed digit size."""
    ramp: npt.NDArray[np.float32]
    """``canvas_size`` values from 0 to 1, to blend the background's corner colours."""


@dataclass(frozen=True)
class _Scene:
    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]
    digit_ids: list[int]


class DigitSceneSource:
    """The scenes of one split, generated on demand.

    Attributes:
        pool_ids: sorted indices (into ``sklearn.datasets.load_digits``) of the digit
            images this split draws from; the training and validation pools are
            disjoint.
        num_with_mask: scenes ``0 .. num_with_mask - 1`` carry their mask; the others
            carry it only as ``reference_mask``.
    """

    def __init__(
        self,
        spec: _SceneSpec,
        *,
        pools: list[npt.NDArray[np.int64]],
        stream: int,
        length: int,
        num_with_mask: int,
        name_prefix: str,
    ) -> None:
        self._spec = spec
        # pools[k] holds the image ids of the digit with class index k + 1.
        self._pools = pools
        self._stream = stream
        self._length = length
        self._name_prefix = name_prefix
        self.num_with_mask = num_with_mask
        self.pool_ids: npt.NDArray[np.int64] = np.sort(np.concatenate(pools))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> RawSample:
        index = self._check_index(index)
        scene = self._compose(index)
        # bincount is cheaper than np.unique on a small uint8 mask.
        image_labels = np.flatnonzero(np.bincount(scene.mask.ravel())).tolist()
        has_mask = index < self.num_with_mask
        return RawSample(
            image=scene.image,
            mask=scene.mask if has_mask else None,
            image_labels=image_labels,
            name=f"{self._name_prefix}_{index:05d}",
            reference_mask=None if has_mask else scene.mask,
        )

    def scene_digit_ids(self, index: int) -> list[int]:
        """Indices (into ``load_digits``) of the digit images drawn in scene ``index``."""
        return self._compose(self._check_index(index)).digit_ids

    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(
                f"{self._name_prefix} scene index {index} out of range for {self._length} scenes"
            )
        return position

    def _compose(self, index: int) -> _Scene:
        spec = self._spec
        rng = np.random.default_rng((spec.seed, self._stream, index))
        size = spec.canvas_size

        corners = rng.uniform(0.0, 255.0, size=(2, 2, 3)).astype(np.float32)
        ramp = spec.ramp[:, None]
        top_edge = corners[0, 0] * (1.0 - ramp) + corners[0, 1] * ramp
        bottom_edge = corners[1, 0] * (1.0 - ramp) + corners[1, 1] * ramp
        canvas = top_edge[None] * (1.0 - ramp[:, :, None]) + bottom_edge[None] * ramp[:, :, None]
        mask = np.zeros((size, size), dtype=np.uint8)

        digit_ids: list[int] = []
        num_digits = int(rng.integers(spec.min_digits, spec.max_digits + 1))
        for _ in range(num_digits):
            # Pick the class first, then an image of it, so classes are balanced even
            # though scikit-learn's digits are not quite.
            class_position = int(rng.integers(len(self._pools)))
            pool = self._pools[class_position]
            digit_id = int(pool[rng.integers(len(pool))])
            digit_size = int(rng.integers(spec.min_digit_size, spec.max_digit_size + 1))
            row = int(rng.integers(size - digit_size + 1))
            column = int(rng.integers(size - digit_size + 1))
            candidates = rng.uniform(0.0, 255.0, size=(_COLOUR_CANDIDATES, 3)).astype(np.float32)

            weights = spec.upscale_weights[digit_size]
            intensity = weights @ spec.digit_images[digit_id] @ weights.T
            if spec.stroke_dilation:
                intensity = _dilate(intensity, spec.stroke_dilation)
            region = canvas[row : row + digit_size, column : column + digit_size]
            colour = _contrasting_colour(candidates, region.mean(axis=(0, 1)))
            # Opacity ramps from 0 at a quarter of the peak to 1 at three quarters, so
            # strokes are solid with soft edges, and every labelled pixel (intensity
            # above one half) is at least half digit colour.
            alpha = np.clip((intensity - 0.25) * 2.0, 0.0, 1.0)[:, :, None]
            region *= 1.0 - alpha
            region += alpha * colour
            mask[row : row + digit_size, column : column + digit_size][intensity > _STROKE_THRESHOLD] = (
                class_position + 1
            )
            digit_ids.append(digit_id)

        sigma = rng.uniform(*_NOISE_SIGMA_RANGE)
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return _Scene(image=image, mask=mask, digit_ids=digit_ids)


def _contrasting_colour(
    candidates: npt.NDArray[np.float32], background: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """The first candidate that stands out from ``background`` in colour and brightness.

    When none does (under 1 % of scenes), the one that differs most in brightness.
    """
    differences = candidates - background
    distances = np.linalg.norm(differences, axis=1)
    luma_differences = np.abs(differences @ _LUMA_WEIGHTS)
    contrasting = (distances >= _MIN_COLOUR_DISTANCE) & (luma_differences >= _MIN_LUMA_DIFFERENCE)
    chosen = np.argmax(contrasting) if contrasting.any() else np.argmax(luma_differences)
    colour: npt.NDArray[np.float32] = candidates[int(chosen)]
    return colour


def _dilate(intensity: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float32]:
    """Grey-scale dilation: each pixel takes the largest value within ``radius`` pixels of
    it, diagonals included (a ``2 * radius + 1`` square), inside the digit's square.

    Dilating the intensity rather than the mask grows ink and label together: the
    thresholded result is the stroke mask dilated by ``radius``, and the opacity ramp
    keeps its soft edge around it.
    """
    side = 2 * radius + 1
    # Intensities are >= 0, so zero padding never wins a maximum that a real pixel would.
    padded = np.pad(intensity, radius)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side))
    dilated: npt.NDArray[np.float32] = windows.max(axis=(2, 3))
    return dilated


def _bilinear_weights(out_size: int, in_size: int) -> npt.NDArray[np.float32]:
    """Matrix ``(out_size, in_size)`` that resizes a vector bilinearly.

    Pixel centres are aligned the way PIL and OpenCV align them (half-pixel offset),
    with the border pixels repeated outside the image.
    """
    source = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, in_size - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    fraction = source - lower
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - fraction)
    np.add.at(weights, (rows, upper), fraction)
    return weights.astype(np.float32)


def _split_digit_pool(targets: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.bool_]:
    """Which digit images are kept for validation: about 20 % of each digit, at random."""
    rng = np.random.default_rng((seed, _POOL_STREAM))
    is_val = np.zeros(len(targets), dtype=bool)
    for digit in _DIGIT_VALUES:
        ids = rng.permutation(np.flatnonzero(targets == digit))
        is_val[ids[: round(_VAL_FRACTION * len(ids))]] = True
    return is_val


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
        raise ValueError("digit_scenes: " + "; ".join(problems))

    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError(
            "digit_scenes needs scikit-learn for its bundled handwritten digits: pip install 'pctkit[demo]'"
        ) from error

    digits = load_digits()
    raw_images = np.asarray(digits.images, dtype=np.float32)
    targets = np.asarray(digits.target, dtype=np.int64)
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
