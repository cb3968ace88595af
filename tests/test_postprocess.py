"""Tests of the post-processing components (``pctkit.components.postprocess``): the dense
CRF refines probabilities towards colour edges, keeps them a distribution, and says how
to install its optional binding when it is missing."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
import pytest

from pctkit import registry
from pctkit.components.contracts import ParameterError
from pctkit.components.postprocess.dense_crf import DenseCRF, dense_crf

HEIGHT, WIDTH, EDGE = 40, 64, 32
"""The synthetic scene: class 0 left of column ``EDGE``, class 1 right of it."""


def needs_binding() -> None:
    pytest.importorskip("pydensecrf.densecrf", reason="the crf extra (pydensecrf2) is not installed")


def two_colour_scene() -> tuple[np.ndarray, np.ndarray]:
    """A dark-blue left half and a yellow right half, and the edge-aligned truth."""
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, :EDGE] = (20, 30, 120)
    image[:, EDGE:] = (230, 210, 40)
    truth = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    truth[:, EDGE:] = 1
    return image, truth


def noisy_probabilities(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A network's guess: right on the whole, but with its boundary 5 pixels too far
    right and 15 % of the pixels flipped, at random confidences."""
    rng = np.random.default_rng(seed)
    guess = truth.copy()
    guess[:, EDGE : EDGE + 5] = 0
    flipped = rng.random(truth.shape) < 0.15
    guess[flipped] = 1 - guess[flipped]
    confidence = rng.uniform(0.55, 0.8, truth.shape)
    probabilities = np.where(guess == 1, confidence, 1 - confidence)
    return np.stack([1 - probabilities, probabilities]).astype(np.float32)


def test_defaults_are_the_released_values() -> None:
    assert dense_crf.__kwdefaults__ == {
        "gaussian_sxy": 3.0,
        "gaussian_compat": 3.0,
        "bilateral_sxy": 32.0,
        "bilateral_srgb": 13.0,
        "bilateral_compat": 10.0,
        "iterations": 1,
    }
    model = registry.parameters_model("postprocess", "dense_crf", dense_crf)
    assert all(field.description for field in model.model_fields.values())


def test_output_is_a_distribution_of_the_input_shape() -> None:
    needs_binding()
    image, truth = two_colour_scene()
    refined = dense_crf()(image, noisy_probabilities(truth))
    assert refined.dtype == np.float32 and refined.shape == (2, HEIGHT, WIDTH)
    assert (refined >= 0).all()
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)


def test_a_noisy_map_moves_to_the_colour_edge() -> None:
    needs_binding()
    image, truth = two_colour_scene()
    probabilities = noisy_probabilities(truth)
    refined = dense_crf()(image, probabilities)
    accuracy_before = (probabilities.argmax(0) == truth).mean()
    accuracy_after = (refined.argmax(0) == truth).mean()
    assert accuracy_before < 0.82
    assert accuracy_after > accuracy_before + 0.1
    # The misplaced band next to the edge is where the colour evidence matters most.
    band = slice(EDGE, EDGE + 5)
    assert (refined.argmax(0)[:, band] == 1).mean() > (probabilities.argmax(0)[:, band] == 1).mean() + 0.5
    # Closer to the truth as a distribution too, not only at the argmax.
    truth_probability_before = np.take_along_axis(probabilities, truth[None], 0).mean()
    truth_probability_after = np.take_along_axis(refined, truth[None], 0).mean()
    assert truth_probability_after > truth_probability_before


@pytest.mark.parametrize(
    "changed",
    [
        {"gaussian_sxy": 1.0},
        {"gaussian_compat": 0.0},
        {"bilateral_sxy": 8.0},
        {"bilateral_srgb": 60.0},
        {"bilateral_compat": 3.0},
        {"iterations": 5},
    ],
)
def test_every_parameter_changes_the_result(changed: dict[str, Any]) -> None:
    needs_binding()
    image, truth = two_colour_scene()
    probabilities = noisy_probabilities(truth)
    default = dense_crf()(image, probabilities)
    other = dense_crf(**changed)(image, probabilities)
    assert np.abs(other - default).max() > 1e-3


def test_without_pairwise_terms_it_returns_the_clipped_input() -> None:
    needs_binding()
    image, truth = two_colour_scene()
    probabilities = noisy_probabilities(truth)
    unchanged = dense_crf(gaussian_compat=0.0, bilateral_compat=0.0)(image, probabilities)
    np.testing.assert_allclose(unchanged, probabilities, atol=1e-5)


def test_picklable_and_deterministic() -> None:
    needs_binding()
    image, truth = two_colour_scene()
    probabilities = noisy_probabilities(truth)
    crf = dense_crf()
    restored = pickle.loads(pickle.dumps(crf))
    assert restored == crf
    np.testing.assert_array_equal(restored(image, probabilities), crf(image, probabilities))


def test_inputs_that_do_not_match_are_refused() -> None:
    needs_binding()
    image, truth = two_colour_scene()
    probabilities = noisy_probabilities(truth)
    crf = dense_crf()
    with pytest.raises(ValueError, match="uint8"):
        crf(image[:, :-1], probabilities)
    with pytest.raises(ValueError, match="uint8"):
        crf(image.astype(np.float32), probabilities)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        crf(image, probabilities[0])


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        ({"gaussian_sxy": 0.0}, "gaussian_sxy"),
        ({"bilateral_srgb": -1.0}, "bilateral_srgb"),
        ({"bilateral_compat": -1.0}, "bilateral_compat"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_parameters_are_named(arguments: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ParameterError) as caught:
        dense_crf(**arguments)
    assert caught.value.parameter == parameter


def test_a_missing_binding_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail, as an absent package does.
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ParameterError) as caught:
        dense_crf()
    assert caught.value.parameter == "type"
    assert "pydensecrf2" in caught.value.message
    assert caught.value.hint == "pip install 'pctkit[crf]'"


def test_the_callable_holds_no_module() -> None:
    """What a DataLoader worker or a process pool pickles is plain numbers."""
    crf = DenseCRF()
    assert all(isinstance(value, (int, float)) for value in vars(crf).values())
