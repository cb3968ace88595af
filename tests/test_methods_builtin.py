"""The built-in method components (pctkit.methods.builtin): registered like plugins,
parameters checked with :class:`ParameterError`, nets made through ``MethodInputs``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pctkit import registry
from pctkit.components.contracts import ParameterError
from pctkit.components.losses import class_aware_cross_entropy, max_pool_soft_margin
from pctkit.methods.base import MethodInputs
from pctkit.methods.pct import PCT, PCTSettings


def _inputs(made: list[tuple[str, str | None]]) -> MethodInputs:
    def new_net(role: str, init_like: str | None = None) -> nn.Module:
        made.append((role, init_like))
        return nn.Conv2d(3, 3, 1)

    return MethodInputs(
        num_classes=3,
        new_net=new_net,
        segmentation_loss=class_aware_cross_entropy(),
        classification_loss=max_pool_soft_margin(),
        reduce_sum=lambda tensor: tensor,
    )


def test_builtin_methods_are_registered_through_entry_points() -> None:
    for name in ("pct", "hybrid", "supervised"):
        component = registry.get("methods", name)
        assert component.origin == "pctkit" and component.builtin and component.description
    parameters = registry.get("methods", "pct").parameters.model_fields
    assert list(parameters) == [
        "score_power",
        "score_momentum",
        "strong_weight",
        "cls_weight",
        "h2p_weight",
        "p2h_weight",
        "weight_rule",
        "p2h_mean",
    ]
    assert parameters["score_power"].default == 8.0 and parameters["score_momentum"].default == 0.99
    assert parameters["score_power"].description  # from the docstring's Args: section
    assert list(registry.get("methods", "hybrid").parameters.model_fields) == ["strong_weight", "cls_weight"]
    assert list(registry.get("methods", "supervised").parameters.model_fields) == []


def test_pct_factory_passes_its_parameters_on() -> None:
    made: list[tuple[str, str | None]] = []
    method = registry.get("methods", "pct").build(
        _inputs(made), score_power=2.0, score_momentum=0.5, h2p_weight=3.0, weight_rule="released"
    )
    assert isinstance(method, PCT)
    assert made == [("hybrid", None), ("pseudo", None)]
    settings = method.settings
    assert (settings.strong, settings.cls, settings.h2p, settings.p2h) == (1.0, 1.0, 3.0, 1.0)
    assert (settings.score_power, settings.weight_rule) == (2.0, "released")
    assert method.dynamic_evaluation.momentum == 0.5
    # The component's defaults are the method's own.
    defaults = registry.get("methods", "pct").parameters.model_fields
    assert defaults["weight_rule"].default == PCTSettings().weight_rule
    assert defaults["p2h_mean"].default == PCTSettings().p2h_mean


@pytest.mark.parametrize(
    ("name", "parameters", "bad"),
    [
        ("pct", {"score_power": -1.0}, "score_power"),
        ("pct", {"p2h_weight": -0.5}, "p2h_weight"),
        ("pct", {"score_momentum": 1.0}, "score_momentum"),
        ("hybrid", {"cls_weight": -1.0}, "cls_weight"),
    ],
)
def test_bad_parameters_are_parameter_errors_naming_the_key(
    name: str, parameters: dict[str, Any], bad: str
) -> None:
    with pytest.raises(ParameterError) as raised:
        registry.get("methods", name).build(_inputs([]), **parameters)
    assert raised.value.parameter == bad


def test_hybrid_and_supervised_factories() -> None:
    made: list[tuple[str, str | None]] = []
    hybrid = registry.get("methods", "hybrid").build(_inputs(made), strong_weight=2.0)
    assert list(hybrid.nets) == ["hybrid"] and hybrid.strong_weight == 2.0
    supervised = registry.get("methods", "supervised").build(_inputs(made))
    # The supervised net starts from the hybrid net's weights: ablation arms differ in losses only.
    assert made == [("hybrid", None), ("supervised", "hybrid")]
    assert list(supervised.nets) == ["supervised"] and supervised.labeller == "supervised"
    assert not supervised.draws_weak_images
    # Plain CE over all classes, not the recipe's class-aware loss: image labels unused.
    batch = _batch()
    logits = supervised.nets["supervised"](batch.images)
    expected = torch.nn.functional.cross_entropy(logits, batch.masks)
    assert supervised.step(batch, 0).loss.item() == pytest.approx(expected.item(), rel=1e-6)


def _batch() -> Any:
    from pctkit.methods.base import Batch

    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[1, :2] = 2
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # leave out class 2 of the masks
    return Batch(torch.rand(2, 3, 4, 4), masks, labels, torch.tensor([True, True]), num_strong=2)
