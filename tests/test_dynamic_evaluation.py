"""Tests of pctkit.methods.dynamic_evaluation: J against hand-computed counts (METHOD.md
steps 3-4)."""

from __future__ import annotations

import pytest
import torch

import pctkit.engine
from pctkit.constants import IGNORE_INDEX
from pctkit.methods.dynamic_evaluation import DynamicEvaluation

# Two hand-worked iterations with three classes and momentum 0.9.
# Iteration 1: the last pixel is ignored (its prediction, class 2, must not count).
FIRST_GT = [0, 0, 1, 2, IGNORE_INDEX]
FIRST_PRED = [0, 1, 1, 0, 2]
# Per class: ground truth [2, 1, 1], prediction [2, 2, 0], true positives [1, 1, 0].
T1 = [0.9 * 1 + 2, 0.9 * 1 + 1, 0.9 * 1 + 1]
P1 = [2.0, 2.0, 0.0]
TP1 = [1.0, 1.0, 0.0]
# Iteration 2: ground truth [0, 2, 2], prediction [0, 1, 3], true positives [0, 1, 2].
SECOND_GT = [1, 1, 2, 2]
SECOND_PRED = [1, 2, 2, 2]
T2 = [0.9 * T1[0] + 0, 0.9 * T1[1] + 2, 0.9 * T1[2] + 2]
P2 = [0.9 * P1[0] + 0, 0.9 * P1[1] + 1, 0.9 * P1[2] + 3]
TP2 = [0.9 * TP1[0] + 0, 0.9 * TP1[1] + 1, 0.9 * TP1[2] + 2]


def _jaccard(t: list[float], p: list[float], tp: list[float]) -> list[float]:
    return [tp_c / (t_c + p_c - tp_c) for t_c, p_c, tp_c in zip(t, p, tp, strict=True)]


def _update(evaluation: DynamicEvaluation, pred: list[int], gt: list[int], decay: bool = True) -> None:
    evaluation.update(torch.tensor([pred]), torch.tensor([gt]), decay=decay)


def _after_two_updates() -> DynamicEvaluation:
    evaluation = DynamicEvaluation(3, momentum=0.9)
    _update(evaluation, FIRST_PRED, FIRST_GT)
    _update(evaluation, SECOND_PRED, SECOND_GT)
    return evaluation


def test_starts_with_t_one_and_j_zero() -> None:
    evaluation = DynamicEvaluation(4)
    assert evaluation.momentum == 0.99
    assert evaluation.target_counts.tolist() == [1.0] * 4
    assert evaluation.predicted_counts.tolist() == [0.0] * 4
    assert evaluation.true_positive_counts.tolist() == [0.0] * 4
    assert evaluation.scores.tolist() == [0.0] * 4
    # With J = 0 every weak image gets weight 0 under the strict rule (power > 0), and
    # weight 1 under the released one (no present class has a score yet).
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert evaluation.image_weights(labels, power=8.0, rule="strict").tolist() == [0.0]
    assert evaluation.image_weights(labels, power=8.0, rule="released").tolist() == [1.0]


def test_one_update_by_hand_leaves_ignored_pixels_out() -> None:
    evaluation = DynamicEvaluation(3, momentum=0.9)
    _update(evaluation, FIRST_PRED, FIRST_GT)
    assert evaluation.target_counts.tolist() == pytest.approx(T1)
    assert evaluation.predicted_counts.tolist() == pytest.approx(P1)
    assert evaluation.true_positive_counts.tolist() == pytest.approx(TP1)
    assert evaluation.scores.tolist() == pytest.approx(_jaccard(T1, P1, TP1))
    assert evaluation.scores.tolist() == pytest.approx([1 / 3.9, 1 / 2.9, 0.0])


def test_two_updates_by_hand_apply_the_momentum() -> None:
    evaluation = _after_two_updates()
    assert evaluation.target_counts.tolist() == pytest.approx(T2)
    assert evaluation.predicted_counts.tolist() == pytest.approx(P2)
    assert evaluation.true_positive_counts.tolist() == pytest.approx(TP2)
    assert evaluation.scores.tolist() == pytest.approx([0.9 / 3.51, 1.9 / 4.61, 2 / 4.71])


def test_counts_of_one_batch() -> None:
    evaluation = DynamicEvaluation(3)
    counts = evaluation.counts(torch.tensor([FIRST_PRED]), torch.tensor([FIRST_GT]))
    assert counts.shape == (3, 3)
    assert counts.tolist() == [[2, 1, 1], P1, TP1]


def test_image_weights_use_the_worst_present_class() -> None:
    evaluation = _after_two_updates()
    j = _jaccard(T2, P2, TP2)
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    weights = evaluation.image_weights(labels, power=2.0)
    assert weights.dtype == torch.float32
    expected = [min(j[0], j[1]) ** 2, min(j[0], j[2]) ** 2, j[0] ** 2, min(j) ** 2]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    # Power 8, the method's γ.
    assert evaluation.image_weights(labels[:1], power=8.0).item() == pytest.approx(
        min(j[0], j[1]) ** 8, rel=1e-5
    )


def test_state_dict_round_trip_restores_exact_j() -> None:
    evaluation = _after_two_updates()
    state = evaluation.state_dict()
    restored = DynamicEvaluation(3, momentum=0.9)
    restored.load_state_dict(state)
    assert torch.equal(restored.scores, evaluation.scores)
    # The saved state is a copy: later updates do not change it.
    _update(evaluation, [0, 0], [0, 0])
    assert not torch.equal(state["target_counts"], evaluation.target_counts)
    # Both continue identically from the same state.
    _update(restored, [0, 0], [0, 0])
    assert torch.equal(restored.scores, evaluation.scores)


def test_load_state_dict_rejects_another_class_count() -> None:
    state = DynamicEvaluation(3).state_dict()
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        DynamicEvaluation(4).load_state_dict(state)


def test_no_decay_accumulation_equals_one_big_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randint(0, 4, (4, 5, 5), generator=generator)
    ground_truth = torch.randint(0, 4, (4, 5, 5), generator=generator)
    ground_truth[1, 0] = IGNORE_INDEX
    split, whole = DynamicEvaluation(4, momentum=0.8), DynamicEvaluation(4, momentum=0.8)
    for evaluation in (split, whole):  # the same first iteration
        evaluation.update(predictions[2:], ground_truth[2:])
    whole.update(predictions, ground_truth)
    split.update(predictions[:2], ground_truth[:2], decay=True)
    split.update(predictions[2:], ground_truth[2:], decay=False)
    assert torch.allclose(split.target_counts, whole.target_counts, rtol=0, atol=1e-12)
    assert torch.allclose(split.predicted_counts, whole.predicted_counts, rtol=0, atol=1e-12)
    assert torch.allclose(split.true_positive_counts, whole.true_positive_counts, rtol=0, atol=1e-12)


def test_perfect_predictions_drive_j_towards_one() -> None:
    evaluation = DynamicEvaluation(2, momentum=0.5)
    ground_truth = torch.tensor([[0, 1, 1, 0]])
    for _ in range(40):
        evaluation.update(ground_truth, ground_truth)
    assert evaluation.scores.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_momentum_out_of_range_is_rejected(momentum: float) -> None:
    with pytest.raises(ValueError, match="momentum"):
        DynamicEvaluation(3, momentum=momentum)


def test_released_rule_leaves_classes_never_hit_out_of_the_min() -> None:
    evaluation = DynamicEvaluation(3, momentum=0.9)
    _update(evaluation, FIRST_PRED, FIRST_GT)  # J = [1/3.9, 1/2.9, 0]: class 2 never hit
    labels = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    strict = evaluation.image_weights(labels, power=1.0, rule="strict")
    released = evaluation.image_weights(labels, power=1.0, rule="released")
    assert strict.tolist() == [0.0, 0.0, 0.0]
    assert released.tolist() == pytest.approx([1 / 3.9, 1 / 3.9, 1.0])  # no scored class: w = 1


def test_the_engine_still_exports_it() -> None:
    """Public API kept where users import it, after the move to pctkit.methods."""
    assert pctkit.engine.DynamicEvaluation is DynamicEvaluation
