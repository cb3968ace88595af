"""The plugin's own tests: what every plugin author should check.

1. pctkit finds each component through the installed entry points, with the package
   as its origin and the documented parameters;
2. each component keeps its contract (pctkit.components.contracts);
3. a recipe that uses them passes the same checks as ``pctkit validate``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

from pctkit import registry
from pctkit.engine.checks import check_recipe
from pctkit.recipe import load_recipe

PACKAGE = "pctkit-example-plugin"


def test_components_are_registered_through_entry_points() -> None:
    for kind, name in [
        ("backbones", "stair_cnn.v1"),
        ("backbones", "stair_cnn.v2"),
        ("heads", "pyramid_sum"),
    ]:
        component = registry.get(kind, name)
        assert component.origin == PACKAGE
        assert component.description  # the first docstring line, shown by `pctkit list`
    parameters = registry.get("backbones", "stair_cnn.v2").parameters.model_fields
    assert list(parameters) == ["widths", "out_stages", "blocks_per_stage"]
    assert parameters["blocks_per_stage"].description  # from the docstring's Args: section


@pytest.mark.parametrize("name", ["stair_cnn.v1", "stair_cnn.v2"])
def test_backbone_keeps_the_contract(name: str) -> None:
    backbone = registry.get("backbones", name).build(widths=(8, 16, 16, 32), out_stages=(0, 2, 3))
    features = backbone(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in features] == backbone.out_channels == [8, 16, 32]
    assert [64 // f.shape[-1] for f in features] == backbone.out_strides == [2, 8, 16]
    assert len(backbone.mean) == len(backbone.std) == 3


def test_backbone_rejects_bad_arguments_with_one_message() -> None:
    with pytest.raises(ValueError, match=r"widths must be positive.*out_stages must be increasing"):
        registry.get("backbones", "stair_cnn.v2").build(widths=(8, 0), out_stages=(1, 0))


def test_head_keeps_the_contract() -> None:
    head = registry.get("heads", "pyramid_sum").build([8, 32], [4, 16], 5, channels=16)
    logits = head([torch.rand(2, 8, 16, 16), torch.rand(2, 32, 4, 4)])
    assert logits.shape == (2, 5, 16, 16)
    assert isinstance(head.classifier, torch.nn.Conv2d)  # pctkit may give it its own learning rate


def test_a_recipe_using_the_plugin_passes_validation() -> None:
    recipe = load_recipe(
        Path(str(resources.files("pctkit") / "recipes" / "quickstart.toml")),  # a built-in recipe
        [
            'model.backbone={type = "stair_cnn.v2", widths = [8, 16, 16, 32]}',
            'model.head={type = "pyramid_sum", channels = 16}',
            "data.num_weak=4",
            "data.num_val=4",
        ],
    )
    issues, _ = check_recipe(recipe)
    assert issues == []
