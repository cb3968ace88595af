"""pctkit.recipe.slots: component slots declared once, everything else derived."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import Field, ValidationError

from pctkit import registry
from pctkit.recipe.schema import ComponentSpec, StrictModel, component
from pctkit.recipe.slots import (
    ANY_KEY,
    component_model,
    component_slots,
    recipe_model,
    resume_mutable_keys,
    slot_at,
)


def test_every_slot_of_the_recipe_and_its_kind() -> None:
    slots = component_slots()
    assert slots == {
        ("method",): "methods",
        ("data",): "datasets",
        ("augmentation", "strong"): "augmentations",
        ("augmentation", "weak"): "augmentations",
        ("augmentation", "retrain"): "augmentations",
        ("evaluation", "postprocess"): "postprocess",
        ("model", "backbone"): "backbones",
        ("model", "head"): "heads",
        ("loss", "segmentation"): "losses",
        ("loss", "classification"): "losses",
        ("optimizer",): "optimizers",
        ("scheduler",): "schedulers",
        ("nets", ANY_KEY, "optimizer"): "optimizers",
        ("nets", ANY_KEY, "scheduler"): "schedulers",
        ("retrain", "model", "backbone"): "backbones",
        ("retrain", "model", "head"): "heads",
        ("retrain", "loss"): "losses",
        ("retrain", "optimizer"): "optimizers",
        ("retrain", "scheduler"): "schedulers",
    }
    assert slot_at(("retrain", "model", "head")) == "heads"
    assert slot_at(("nets", "pseudo", "scheduler")) == "schedulers"  # any role
    assert slot_at(("model",)) is None and slot_at(("experiment", "name")) is None


class Stage(StrictModel):
    head: ComponentSpec = component("heads", "A head.", "fusion")


class Nets(StrictModel):
    nets: dict[str, Stage] = Field(default_factory=dict)
    extra: Stage = Field(default_factory=Stage)


def test_tables_of_sections_are_slots_for_any_key() -> None:
    assert component_slots(Nets) == {("nets", ANY_KEY, "head"): "heads", ("extra", "head"): "heads"}


def test_a_component_model_pins_its_type_and_forbids_unknown_keys() -> None:
    model = component_model(registry.get("methods", "hybrid"))
    assert model(type="hybrid").parameters() == {"strong_weight": 1.0, "cls_weight": 1.0}
    with pytest.raises(ValidationError):
        model(type="pct")
    with pytest.raises(ValidationError):
        model(type="hybrid", score_power=2.0)


def test_the_recipe_model_knows_components_registered_since_the_last_call() -> None:
    def toy_method(inputs: Any, /, *, rounds: int = 2) -> Any:
        """A toy method."""

    registry.register("methods", "toy_method")(toy_method)
    try:
        model = recipe_model()
        section = model.model_fields["method"]
        assert section.default_factory is not None and section.default_factory()["type"] == "pct"
        schema = model.model_json_schema()
        titles = {definition.get("title") for definition in schema["$defs"].values()}
        assert "method 'toy_method'" in titles and "method 'pct'" in titles
    finally:
        registry.reset()
    assert "method 'toy_method'" not in {
        d.get("title") for d in recipe_model().model_json_schema()["$defs"].values()
    }


def test_keys_a_resume_may_change_are_reporting_keys_only() -> None:
    keys = set(resume_mutable_keys())
    assert {
        "experiment.output_dir",
        "loader.num_workers",
        "cross_training.log_interval",
        "cross_training.eval_interval",
        "retrain.log_interval",
        "evaluation.num_pictures",
        "checkpoint.interval",
        "checkpoint.keep_last",
    } <= keys
    assert not {"optimizer", "cross_training.iterations", "experiment.seed", "method"} & keys
