"""The scenes of :mod:`.digit_scenes`: how one scene is drawn, generated on demand."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pctkit.components.contracts import RawSample

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
