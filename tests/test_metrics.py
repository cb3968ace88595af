"""Tests of the confusion matrix and its mIoU (METHOD.md "Evaluation")."""

from __future__ import annotations

import math

import pytest
import torch

from pctkit.metrics import IGNORE_INDEX, ConfusionMatrix


def _matrix(num_classes: int, *pairs: tuple[list[int], list[int]]) -> ConfusionMatrix:
    """A matrix fed one ``(prediction, ground truth)`` image per pair (1-row images)."""
    matrix = ConfusionMatrix(num_classes)
    for prediction, ground_truth in pairs:
        matrix.update(torch.tensor([prediction]), torch.tensor([ground_truth]))
    return matrix


def test_matrix_counts_rows_ground_truth_columns_prediction() -> None:
    matrix = _matrix(3, ([0, 1, 1, 2], [0, 1, 2, 2]))
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert torch.equal(matrix.matrix, expected)
    assert matrix.pixel_accuracy() == pytest.approx(3 / 4)


def test_miou_from_the_accumulated_matrix_not_the_average_of_image_ious() -> None:
    # Image A: 1 pixel of class 1, missed. Image B: 9 pixels of class 1, all right.
    # Both images are mostly class 0, always right.
    image_a = ([0, 0, 0, 0], [0, 0, 0, 1])
    image_b = ([0] + [1] * 9, [0] + [1] * 9)
    whole = _matrix(2, image_a, image_b)
    # By hand over the split: class 0 TP 4, union 5; class 1 TP 9, union 10.
    assert whole.iou().tolist() == pytest.approx([4 / 5, 9 / 10])
    assert whole.miou() == pytest.approx((4 / 5 + 9 / 10) / 2)
    per_image = [_matrix(2, image).miou() for image in (image_a, image_b)]
    # Image A: class 0 IoU 3/4, class 1 IoU 0; image B: both 1.
    assert per_image == pytest.approx([(3 / 4 + 0) / 2, 1.0])
    average_of_images = sum(per_image) / 2
    assert not math.isclose(whole.miou(), average_of_images, abs_tol=1e-3)


def test_ignored_pixels_count_for_nothing() -> None:
    with_ignored = _matrix(3, ([0, 1, 2, 2, 1], [0, 1, IGNORE_INDEX, 2, IGNORE_INDEX]))
    without = _matrix(3, ([0, 1, 2], [0, 1, 2]))
    assert torch.equal(with_ignored.matrix, without.matrix)
    assert with_ignored.miou() == 1.0


def test_custom_ignore_index() -> None:
    matrix = ConfusionMatrix(3, ignore_index=2)
    matrix.update(torch.tensor([[0, 1, 0]]), torch.tensor([[0, 1, 2]]))
    assert int(matrix.matrix.sum()) == 2


def test_classes_absent_from_ground_truth_and_prediction_are_nan_and_excluded() -> None:
    matrix = _matrix(4, ([0, 0, 1, 1], [0, 1, 1, 1]))
    iou = matrix.iou()
    assert torch.isnan(iou[2]) and torch.isnan(iou[3])
    assert iou[0].item() == pytest.approx(1 / 2)
    assert iou[1].item() == pytest.approx(2 / 3)
    assert matrix.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_a_class_only_predicted_has_iou_zero_and_counts() -> None:
    matrix = _matrix(3, ([0, 2], [0, 0]))
    assert matrix.iou()[2].item() == 0.0
    assert matrix.miou() == pytest.approx((1 / 2 + 0.0) / 2)


def test_empty_matrix() -> None:
    matrix = ConfusionMatrix(3)
    assert matrix.miou() == 0.0
    assert matrix.pixel_accuracy() == 0.0
    assert torch.isnan(matrix.iou()).all()


def test_merge_equals_one_matrix_over_everything() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randint(0, 5, (4, 6, 6), generator=generator)
    ground_truth = torch.randint(0, 5, (4, 6, 6), generator=generator)
    ground_truth[0, :2] = IGNORE_INDEX
    whole = ConfusionMatrix(5)
    whole.update(predictions, ground_truth)
    first, second = ConfusionMatrix(5), ConfusionMatrix(5)
    first.update(predictions[:1], ground_truth[:1])
    second.update(predictions[1:], ground_truth[1:])
    first.merge(second)
    assert torch.equal(first.matrix, whole.matrix)
    assert int(whole.matrix.sum()) == 4 * 36 - 12


def test_update_rejects_mismatched_shapes_and_out_of_range_classes() -> None:
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="ground truth has class 5"):
        matrix.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="prediction has class 3"):
        matrix.update(torch.tensor([[0, 3]]), torch.zeros(1, 2, dtype=torch.long))
    assert int(matrix.matrix.sum()) == 0
