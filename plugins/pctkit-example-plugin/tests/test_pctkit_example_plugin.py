"""The plugin's own tests: what every plugin author should check.

1. pctkit finds each component through the installed entry points, with the package
   as its origin and the documented parameters;
2. each component keeps its contract (pctkit.components.contracts, and for a method
   pctkit.methods.base);
3. a recipe that uses them passes the same checks as ``pctkit validate``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch
from torch import nn

from pctkit import registry
from pctkit.engine.checks import check_recipe
from pctkit.losses import class_aware_cross_entropy, max_pool_classification_loss
from pctkit.methods.base import Batch, MethodInputs
from pctkit.recipe import load_recipe

PACKAGE = "pctkit-example-plugin"
QUICKSTART = Path(str(resources.files("pctkit") / "recipes" / "quickstart.toml"))  # a built-in recipe


def test_components_are_registered_through_entry_points() -> None:
    for kind, name in [
        ("backbones", "stair_cnn.v1"),
        ("backbones", "stair_cnn.v2"),
        ("heads", "pyramid_sum"),
        ("methods", "self_training"),
    ]:
        component = registry.get(kind, name)
        assert component.origin == PACKAGE
        assert component.description  # the first docstring line, shown by `pctkit list`
    parameters = registry.get("backbones", "stair_cnn.v2").parameters.model_fields
    assert list(parameters) == ["widths", "out_stages", "blocks_per_stage"]
    assert parameters["blocks_per_stage"].description  # from the docstring's Args: section
    method = registry.get("methods", "self_training").parameters.model_fields
    assert list(method) == ["threshold", "weak_weight"] and method["threshold"].description


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


def _inputs(made: list[tuple[str, str | None]]) -> MethodInputs:
    def new_net(role: str, init_like: str | None = None) -> nn.Module:
        made.append((role, init_like))
        torch.manual_seed(0)
        return nn.Conv2d(3, 3, 1)

    return MethodInputs(
        num_classes=3,
        new_net=new_net,
        segmentation_loss=class_aware_cross_entropy,
        classification_loss=max_pool_classification_loss,
        reduce_sum=lambda tensor: tensor,
    )


def test_method_keeps_the_contract() -> None:
    made: list[tuple[str, str | None]] = []
    method = registry.get("methods", "self_training").build(_inputs(made), threshold=0.0)
    assert made == [("student", "hybrid")]  # starts from the hybrid net's weights
    assert list(method.nets) == [method.labeller] == ["student"]
    assert method.draws_weak_images and method.predicts_with_image_labels
    masks = torch.full((4, 4, 4), 255, dtype=torch.long)
    masks[:2] = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    batch = Batch(
        torch.rand(4, 3, 4, 4), masks, torch.ones(4, 3), torch.tensor([True, True, False, False]), 2
    )
    result = method.step(batch, 0)
    assert set(result.terms) == {"loss_strong", "loss_weak", "confident"}
    assert result.terms["confident"].item() == 1.0  # threshold 0: every weak pixel is sure
    result.loss.backward()
    assert method.nets["student"].weight.grad is not None
    assert method.state_dict() == {} and method.log_metrics() == {}


def test_method_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="threshold"):
        registry.get("methods", "self_training").build(_inputs([]), threshold=1.0)


def test_a_recipe_using_the_plugin_passes_validation() -> None:
    recipe = load_recipe(
        QUICKSTART,
        [
            'model.backbone={type = "stair_cnn.v2", widths = [8, 16, 16, 32]}',
            'model.head={type = "pyramid_sum", channels = 16}',
            'method={type = "self_training", threshold = 0.8}',
            "data.num_weak=4",
            "data.num_val=4",
        ],
    )
    issues, checked = check_recipe(recipe)
    assert issues == []
    assert any(line.startswith("method self_training: nets student") for line in checked)
