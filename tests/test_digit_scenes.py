"""Tests of the synthetic digit-scene dataset."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pctkit.components.contracts import DataError, RawSample, SegmentationData
from pctkit.components.datasets._digit_scene_source import DigitSceneSource, _bilinear_weights, _dilate
from pctkit.components.datasets.digit_scenes import digit_scenes

# scikit-learn is the optional `demo` extra; without it only the error test could run.
sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _source(data: SegmentationData, split: str) -> DigitSceneSource:
    source = data.train if split == "train" else data.val
    assert isinstance(source, DigitSceneSource)
    return source


def _hidden_mask(sample: RawSample) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The mask of a strong or validation sample, the reference mask of a weak one."""
    mask = sample.mask if sample.mask is not None else sample.reference_mask
    assert mask is not None
    return mask


@pytest.fixture(scope="module")
def small() -> SegmentationData:
    return digit_scenes(num_strong=4, num_weak=6, num_val=5, seed=3)


def test_images_and_masks_have_the_contract_layout(small: SegmentationData) -> None:
    for source in (small.train, small.val):
        for index in range(len(source)):
            sample = source[index]
            assert sample.image.dtype == np.uint8
            assert sample.image.shape == (64, 64, 3)
            mask = _hidden_mask(sample)
            assert mask.dtype == np.uint8
            assert mask.shape == (64, 64)
            assert int(mask.max()) <= 10


def test_splits_strong_weak_and_names(small: SegmentationData) -> None:
    assert len(small.train) == 10
    assert len(small.val) == 5
    assert small.strong_indices == [0, 1, 2, 3]
    for index in range(10):
        sample = small.train[index]
        assert sample.name == f"train_{index:05d}"
        if index < 4:
            assert sample.mask is not None and sample.reference_mask is None
        else:
            assert sample.mask is None and sample.reference_mask is not None
    for index in range(5):
        sample = small.val[index]
        assert sample.name == f"val_{index:05d}"
        assert sample.mask is not None and sample.reference_mask is None


def test_class_names_palette_and_description(small: SegmentationData) -> None:
    assert small.class_names == ["background", *(str(digit) for digit in range(10))]
    assert small.num_classes == 11
    assert small.palette is not None and len(small.palette) == 11
    assert len(set(small.palette)) == 11
    assert small.description


def test_image_labels_are_exactly_the_mask_classes(small: SegmentationData) -> None:
    for source in (small.train, small.val):
        for index in range(len(source)):
            sample = source[index]
            present = np.unique(_hidden_mask(sample)).tolist()
            assert sample.image_labels == present
            assert sample.image_labels[0] == 0


def test_every_scene_shows_at_least_one_digit() -> None:
    data = digit_scenes(num_strong=20, num_weak=0, num_val=1, min_digits=1, max_digits=1)
    for index in range(20):
        assert len(data.train[index].image_labels) == 2


def test_same_seed_gives_identical_scenes_in_any_order() -> None:
    first = digit_scenes(num_strong=3, num_weak=3, num_val=3, seed=7)
    second = digit_scenes(num_strong=3, num_weak=3, num_val=3, seed=7)
    for split in ("train", "val"):
        # Read the second factory's scenes backwards: order must not matter.
        backwards = {index: _source(second, split)[index] for index in reversed(range(3))}
        for index in range(3):
            one = _source(first, split)[index]
            assert np.array_equal(one.image, backwards[index].image)
            assert np.array_equal(_hidden_mask(one), _hidden_mask(backwards[index]))
    assert np.array_equal(first.train[1].image, first.train[1].image)


def test_different_seed_gives_different_scenes() -> None:
    first = digit_scenes(num_strong=2, num_weak=0, num_val=2, seed=0)
    second = digit_scenes(num_strong=2, num_weak=0, num_val=2, seed=1)
    for index in range(2):
        assert not np.array_equal(first.train[index].image, second.train[index].image)
        assert not np.array_equal(first.val[index].image, second.val[index].image)


def test_train_and_val_scenes_differ(small: SegmentationData) -> None:
    assert not np.array_equal(small.train[0].image, small.val[0].image)


def test_strong_weak_boundary_does_not_change_the_scenes() -> None:
    # The fully supervised upper bound relies on this: all-strong training scenes equal
    # the strong + weak ones of the semi-supervised recipe.
    split = digit_scenes(num_strong=3, num_weak=5, num_val=2, seed=5)
    all_strong = digit_scenes(num_strong=8, num_weak=0, num_val=2, seed=5)
    assert all_strong.strong_indices == list(range(8))
    for index in range(8):
        semi, full = split.train[index], all_strong.train[index]
        assert full.mask is not None
        assert np.array_equal(semi.image, full.image)
        assert np.array_equal(_hidden_mask(semi), full.mask)
        assert semi.image_labels == full.image_labels
    for index in range(2):
        assert np.array_equal(split.val[index].image, all_strong.val[index].image)


def test_validation_digits_never_appear_in_training() -> None:
    data = digit_scenes(num_strong=30, num_weak=30, num_val=60, seed=2)
    train, val = _source(data, "train"), _source(data, "val")
    assert not set(train.pool_ids.tolist()) & set(val.pool_ids.tolist())
    # Together the pools hold every image, about a fifth of them for validation.
    assert len(train.pool_ids) + len(val.pool_ids) == 1797
    assert 0.18 < len(val.pool_ids) / 1797 < 0.22
    train_used = {digit for i in range(60) for digit in train.scene_digit_ids(i)}
    val_used = {digit for i in range(60) for digit in val.scene_digit_ids(i)}
    assert train_used <= set(train.pool_ids.tolist())
    assert val_used <= set(val.pool_ids.tolist())
    assert not train_used & val_used


def test_subset_of_digits_maps_to_classes_one_to_k() -> None:
    digit_classes = (7, 3)
    data = digit_scenes(
        num_strong=25,
        num_weak=0,
        num_val=5,
        min_digits=1,
        max_digits=1,
        digit_classes=digit_classes,
    )
    assert data.class_names == ["background", "7", "3"]
    assert data.palette is not None and len(data.palette) == 3
    targets = sklearn_datasets.load_digits().target
    train = _source(data, "train")
    seen_classes = set()
    for index in range(25):
        sample = train[index]
        (digit_id,) = train.scene_digit_ids(index)
        expected_class = digit_classes.index(int(targets[digit_id])) + 1
        assert sample.image_labels == [0, expected_class]
        seen_classes.add(expected_class)
    assert seen_classes == {1, 2}


def test_scene_size_and_digit_count_follow_the_arguments() -> None:
    data = digit_scenes(
        num_strong=5,
        num_weak=0,
        num_val=1,
        canvas_size=40,
        min_digits=2,
        max_digits=2,
        min_digit_size=10,
        max_digit_size=12,
    )
    train = _source(data, "train")
    for index in range(5):
        assert train[index].image.shape == (40, 40, 3)
        assert len(train.scene_digit_ids(index)) == 2


def test_index_out_of_range_raises_index_error(small: SegmentationData) -> None:
    with pytest.raises(IndexError):
        small.train[10]
    with pytest.raises(IndexError):
        small.val[-6]
    assert np.array_equal(small.val[-1].image, small.val[4].image)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_strong": 0}, "num_strong"),
        ({"num_weak": -1}, "num_weak"),
        ({"num_val": -2}, "num_val"),
        ({"min_digits": 3, "max_digits": 2}, "min_digits"),
        ({"max_digits": 0, "min_digits": 0}, "max_digits"),
        ({"min_digit_size": 20, "max_digit_size": 18}, "min_digit_size"),
        ({"min_digit_size": 4}, "at least 8"),
        ({"max_digit_size": 80}, "canvas_size"),
        ({"digit_classes": ()}, "digit_classes"),
        ({"digit_classes": (1, 2, 1)}, "repeat"),
        ({"digit_classes": (3, 10)}, "0..9"),
        ({"seed": -1}, "seed"),
        ({"stroke_dilation": -1}, "stroke_dilation must be 0 or more"),
        ({"stroke_dilation": 2, "min_digit_size": 16}, "less than min_digit_size / 8"),
    ],
)
def test_bad_arguments_raise_value_error(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        digit_scenes(**arguments)


def test_every_bad_argument_is_reported_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        digit_scenes(num_strong=0, num_weak=-1, digit_classes=(), stroke_dilation=-2)
    text = str(caught.value)
    assert "num_strong" in text and "num_weak" in text and "digit_classes" in text
    assert "stroke_dilation" in text


def test_missing_scikit_learn_asks_for_the_demo_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pctkit\[demo\]"):
        digit_scenes()


@pytest.mark.parametrize("size", [8, 13, 16, 32])
def test_digit_upscaling_matches_pil_bilinear(size: int) -> None:
    image = np.random.default_rng(size).uniform(0.0, 1.0, (8, 8)).astype(np.float32)
    weights = _bilinear_weights(size, 8)
    ours = weights @ image @ weights.T
    reference = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    assert np.allclose(ours, reference, atol=1e-5)


# --------------------------------------------------------------------- stroke dilation

_BOLD: dict[str, Any] = {
    "canvas_size": 32,
    "min_digit_size": 14,
    "max_digit_size": 22,
    "digit_classes": (0, 1, 4, 7),
}


def _foreground(mask: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return mask > 0


def _dilated_3x3(region: np.ndarray[Any, np.dtype[np.bool_]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    padded = np.pad(region, 1)
    height, width = region.shape
    return np.any([padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)], axis=0)


def test_dilate_grows_a_point_into_a_square_inside_the_digit_square() -> None:
    intensity = np.zeros((9, 9), dtype=np.float32)
    intensity[4, 4] = 1.0
    intensity[0, 8] = 0.5
    dilated = _dilate(intensity, 2)
    assert dilated.shape == (9, 9) and dilated.dtype == np.float32
    expected = np.zeros((9, 9), dtype=np.float32)
    expected[0:3, 6:9] = 0.5  # the corner point's square, clipped at the border
    expected[2:7, 2:7] = 1.0
    assert np.array_equal(dilated, expected)


def test_stroke_dilation_grows_masks_by_its_radius_and_inks_the_new_pixels() -> None:
    # One digit per scene: each dilated scene has the same digit, place, colour and noise.
    thin = digit_scenes(num_strong=12, num_weak=0, num_val=2, max_digits=1, **_BOLD)
    bold = digit_scenes(num_strong=12, num_weak=0, num_val=2, max_digits=1, stroke_dilation=1, **_BOLD)
    total_thin = total_bold = 0
    for index in range(12):
        before, after = thin.train[index], bold.train[index]
        assert before.mask is not None and after.mask is not None
        assert _source(thin, "train").scene_digit_ids(index) == _source(bold, "train").scene_digit_ids(index)
        assert after.image_labels == before.image_labels
        grown, original = _foreground(after.mask), _foreground(before.mask)
        # The stroke grows by one pixel at most (less where its square clips it), never shrinks.
        assert np.all(grown >= original)
        assert np.all(grown <= _dilated_3x3(original))
        total_thin += int(original.sum())
        total_bold += int(grown.sum())
        # The newly labelled pixels turn towards the digit's ink colour.
        added = grown & ~original
        ink = after.image[original].astype(np.float64).mean(axis=0)
        distance_before = np.abs(before.image[added] - ink).mean()
        distance_after = np.abs(after.image[added] - ink).mean()
        assert distance_after < distance_before
    assert total_bold > 1.3 * total_thin


def test_stroke_dilation_is_deterministic_and_keeps_the_split_invariant() -> None:
    split = digit_scenes(num_strong=3, num_weak=3, num_val=3, stroke_dilation=1, seed=4, **_BOLD)
    all_strong = digit_scenes(num_strong=6, num_weak=0, num_val=3, stroke_dilation=1, seed=4, **_BOLD)
    for index in range(6):
        one, other = split.train[index], all_strong.train[index]
        assert np.array_equal(one.image, other.image)
        assert np.array_equal(_hidden_mask(one), _hidden_mask(other))
    for index in range(3):
        assert np.array_equal(split.val[index].image, all_strong.val[index].image)
    assert "dilated by 1 px" in split.description
    assert "dilated" not in digit_scenes(num_strong=1, num_weak=0, num_val=1).description
