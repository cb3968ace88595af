"""The DPT head on single-stride (ViT) and multi-stride (CNN, ConvNeXt) features, and the
heads that need several strides refusing single-stride ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pctkit import registry
from pctkit.components.backbones.timm_backbone import timm_backbone
from pctkit.components.contracts import ParameterError
from pctkit.components.heads.deeplabv3plus import deeplabv3plus, fusion
from pctkit.components.heads.dpt import default_reassemble_channels, dpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def maps(channels: list[int], sizes: list[tuple[int, int]], batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes, strict=True)]


def test_single_stride_maps_are_reassembled_to_a_pyramid() -> None:
    head = dpt([64] * 4, [16] * 4, 21, channels=32)
    assert head.exponents == [2, 1, 0, -1]  # x4, x2, x1, x1/2: strides 4, 8, 16, 32
    assert [m[0].out_channels for m in head.reassemble] == [8, 16, 32, 64]
    logits = head(maps([64] * 4, [(4, 6)] * 4))
    assert tuple(logits.shape) == (2, 21, 16, 24)  # stride 4


def test_odd_sizes_of_whole_image_evaluation() -> None:
    # A 375 x 500 image through a patch-14 ViT: resized to 378 x 504, 27 x 36 patches.
    head = dpt([48] * 4, [14] * 4, 5, channels=16).eval()
    with torch.no_grad():
        logits = head(maps([48] * 4, [(27, 36)] * 4, batch=1))
    assert tuple(logits.shape) == (1, 5, 108, 144)
    with torch.no_grad():
        odd = head(maps([48] * 4, [(23, 31)] * 4, batch=1))
    assert tuple(odd.shape) == (1, 5, 92, 124)


def test_multi_stride_maps_keep_their_strides() -> None:
    head = dpt([24, 32, 48, 64], [4, 8, 16, 32], 3, channels=16)
    assert head.exponents == [0, 0, 0, 0]
    assert [m[0].out_channels for m in head.reassemble] == [24, 32, 48, 64]
    logits = head(maps([24, 32, 48, 64], [(16, 24), (8, 12), (4, 6), (2, 3)]))
    assert tuple(logits.shape) == (2, 3, 16, 24)


@pytest.mark.parametrize(
    ("parameters", "size", "expected"),
    [
        ({"model_name": "test_vit"}, (64, 96), (16, 24)),
        ({"model_name": "test_vit2", "out_indices": (3, 7)}, (64, 96), (16, 24)),
        ({"model_name": "test_convnext", "out_indices": (0, 1, 2, 3)}, (64, 96), (16, 24)),
        # Dilated: strides 4, 8, 8, 8; equal neighbours are fused at the same size.
        ({"model_name": "test_resnet", "out_indices": (1, 2, 3, 4), "output_stride": 8}, (64, 96), (16, 24)),
    ],
)
def test_on_real_backbones(
    parameters: dict[str, object], size: tuple[int, int], expected: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    backbone = timm_backbone(**parameters)  # type: ignore[arg-type]
    head = dpt(backbone.out_channels, backbone.out_strides, 4, channels=16)
    logits = head(backbone(torch.rand(2, 3, *size)))
    assert tuple(logits.shape) == (2, 4, *expected)


def test_one_or_two_maps() -> None:
    one = dpt([64], [16], 2, channels=8)
    assert one.exponents == [2] and tuple(one(maps([64], [(3, 5)])).shape) == (2, 2, 12, 20)
    two = dpt([64, 64], [16, 16], 2, channels=8)
    assert two.exponents == [2, 1]
    assert tuple(two(maps([64, 64], [(3, 5)] * 2)).shape) == (2, 2, 12, 20)


def test_classifier_is_the_final_layer_and_every_parameter_learns() -> None:
    head = dpt([32] * 4, [16] * 4, 7, channels=16, use_bn=True, dropout=0.1)
    assert isinstance(head.classifier, nn.Conv2d) and head.classifier.out_channels == 7
    seen: list[torch.Tensor] = []
    head.classifier.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    logits = head(maps([32] * 4, [(4, 4)] * 4))
    assert seen and seen[0] is logits
    logits.square().mean().backward()
    # No unused parameters (DDP would need find_unused_parameters otherwise): the
    # coarsest fusion block has no lateral unit.
    unused = [name for name, p in head.named_parameters() if p.grad is None]
    assert unused == [] and head.fusion[-1].lateral is None


def test_bf16_autocast() -> None:
    head = dpt([32] * 4, [14] * 4, 3, channels=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(maps([32] * 4, [(5, 5)] * 4))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_reassemble_widths() -> None:
    assert default_reassemble_channels([768] * 4, [14] * 4) == [96, 192, 384, 768]  # UniMatch V2, ViT-B
    assert default_reassemble_channels([384] * 4, [14] * 4) == [48, 96, 192, 384]  # ViT-S
    assert default_reassemble_channels([24, 32], [4, 32]) == [24, 32]
    head = dpt([64] * 4, [16] * 4, 2, reassemble_channels=(4, 8, 16, 32), channels=8)
    assert [m[0].out_channels for m in head.reassemble] == [4, 8, 16, 32]


def test_parameter_errors() -> None:
    with pytest.raises(ParameterError) as caught:
        dpt([64] * 4, [16] * 4, 2, reassemble_channels=(8, 16))
    assert caught.value.parameter == "reassemble_channels" and "2 widths for 4 feature maps" in str(
        caught.value
    )
    with pytest.raises(ParameterError, match="channels"):
        dpt([64] * 4, [16] * 4, 2, channels=0)
    with pytest.raises(ParameterError, match="dropout"):
        dpt([64] * 4, [16] * 4, 2, dropout=1.0)


def test_registered_as_dpt() -> None:
    component = registry.get("heads", "dpt")
    assert set(component.parameters.model_fields) == {"channels", "reassemble_channels", "use_bn", "dropout"}
    head = component.build([16, 16], [8, 8], 3, channels=8)
    assert head.classifier.out_channels == 3


@pytest.mark.parametrize("factory", [deeplabv3plus, fusion])
def test_heads_that_need_several_strides_refuse_a_vit(factory: object) -> None:
    backbone = timm_backbone(model_name="test_vit", out_indices=(2, 5))
    with pytest.raises(ParameterError) as caught:
        factory(backbone.out_channels, backbone.out_strides, 21)  # type: ignore[operator]
    assert caught.value.parameter == "type"
    assert "stride 16" in caught.value.message and "'dpt'" in (caught.value.hint or "")
    # Features at two strides are still fine.
    factory([32, 192], [4, 16], 21)  # type: ignore[operator]
