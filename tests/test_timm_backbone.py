"""The ``timm`` backbone: CNNs unchanged, plain ViTs (timm's tiny test ViTs stand in for
DINOv2), hierarchical models, weights files, layer-wise decay and the crop-size check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from tiny_run import subprocess_environment

from pctkit.components.backbones import crop_size_issue, nearby_multiples
from pctkit.components.backbones.timm_backbone import timm_backbone
from pctkit.components.contracts import ParameterError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seeded_backbone(seed: int = 0, **parameters: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm_backbone(**parameters)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CNNs


def test_cnn_weights_are_timms_features_only_model_for_the_same_seed() -> None:
    # The ViT support must not change a CNN by one bit: same modules, same draws.
    backbone = seeded_backbone(model_name="test_resnet", out_indices=(1, 3))
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", features_only=True, out_indices=(1, 3))
    ours, theirs = backbone.state_dict(), reference.state_dict()
    assert list(ours) == [f"body.{name}" for name in theirs]
    assert all(torch.equal(ours[f"body.{name}"], tensor) for name, tensor in theirs.items())
    assert backbone.out_channels == [32, 192] and backbone.out_strides == [4, 16]
    assert backbone.input_multiple is None


def test_cnn_default_levels_and_dilation() -> None:
    backbone = timm_backbone(model_name="test_resnet", output_stride=8)
    assert backbone.out_strides == [4, 8]  # levels (1, 4), the last one dilated
    features = backbone.eval()(torch.rand(1, 3, 50, 75))
    assert [tuple(f.shape[2:]) for f in features] == [(13, 19), (7, 10)]


def test_hierarchical_model_gives_every_stage_at_its_stride() -> None:
    backbone = timm_backbone(model_name="test_convnext", out_indices=(0, 1, 2, 3))
    assert backbone.out_strides == [4, 8, 16, 32] and backbone.out_channels == [24, 32, 48, 64]
    features = backbone.eval()(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [
        (2, 24, 16, 24),
        (2, 32, 8, 12),
        (2, 48, 4, 6),
        (2, 64, 2, 3),
    ]


# --------------------------------------------------------------------------- plain ViTs


@pytest.mark.parametrize(
    ("model_name", "width", "depth"),
    [("test_vit", 64, 6), ("test_vit2", 64, 8), ("test_vit3", 96, 9)],
)
def test_vit_blocks_at_the_patch_stride(model_name: str, width: int, depth: int) -> None:
    backbone = timm_backbone(model_name=model_name)
    blocks = backbone.indices
    assert len(blocks) == 4 and blocks[-1] == depth - 1  # evenly spread, the last included
    assert backbone.out_channels == [width] * 4 and backbone.out_strides == [16] * 4
    assert backbone.input_multiple == 16
    features = backbone.eval()(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(2, width, 4, 6)] * 4
    # Blocks after the last returned one and the classifier are gone.
    assert len(backbone.body.blocks) == depth


def test_vit_drops_blocks_it_does_not_return() -> None:
    backbone = timm_backbone(model_name="test_vit", out_indices=(0, 2))
    assert backbone.out_channels == [64, 64] and len(backbone.body.blocks) == 3
    assert not any(name.startswith("body.head") for name, _ in backbone.named_parameters())


def test_vit_takes_any_size_and_resizes_to_the_patch_multiple() -> None:
    backbone = timm_backbone(model_name="test_vit").eval()
    with torch.no_grad():
        # 518 = 37 x 14 for DINOv2; for patch 16 a side of 500 becomes 496, 375 becomes 368.
        whole = backbone(torch.rand(1, 3, 375, 500))
        exact = backbone(torch.rand(1, 3, 96, 160))
        tiny = backbone(torch.rand(1, 3, 5, 7))
    assert tuple(whole[0].shape[2:]) == (23, 31)
    assert tuple(exact[0].shape[2:]) == (6, 10)
    assert tuple(tiny[0].shape[2:]) == (1, 1)  # at least one patch


def test_vit_final_norm_is_applied_or_dropped() -> None:
    normed = seeded_backbone(model_name="test_vit", out_indices=(5,)).eval()
    raw = seeded_backbone(model_name="test_vit", out_indices=(5,), final_norm=False).eval()
    assert "body.norm.weight" in normed.state_dict() and "body.norm.weight" not in raw.state_dict()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        (normed_map,), (raw_map,) = normed(images), raw(images)
        expected = normed.body.norm(raw_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(normed_map, expected, atol=1e-5)
    assert not torch.allclose(normed_map, raw_map, atol=1e-3)


def test_vit_registers_are_not_returned_as_patches() -> None:
    # test_vit2 has a register token and no class token, as the *_reg4_dinov2 models.
    backbone = timm_backbone(model_name="test_vit2").eval()
    assert backbone.body.num_prefix_tokens == 1
    assert tuple(backbone(torch.rand(1, 3, 48, 32))[0].shape) == (1, 64, 3, 2)


def test_grad_checkpointing_and_bf16_autocast_forward_backward() -> None:
    images = torch.rand(2, 3, 32, 48)

    def gradients(checkpointing: bool, bf16: bool) -> dict[str, torch.Tensor]:
        backbone = seeded_backbone(model_name="test_vit", drop_path_rate=0.0)
        backbone.set_grad_checkpointing(checkpointing)
        assert backbone.body.grad_checkpointing is checkpointing
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = backbone(images)
            loss = sum(f.float().square().mean() for f in features)
        assert torch.isfinite(loss)
        loss.backward()
        return {n: p.grad for n, p in backbone.named_parameters() if p.grad is not None}

    plain = gradients(checkpointing=False, bf16=False)
    checkpointed = gradients(checkpointing=True, bf16=False)
    half = gradients(checkpointing=True, bf16=True)
    backbone = seeded_backbone(model_name="test_vit")
    # Every parameter learns (nothing unused under DDP), checkpointing changes nothing.
    assert set(plain) == {name for name, _ in backbone.named_parameters()}
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)
    assert set(half) == set(plain) and all(torch.isfinite(g).all() for g in half.values())


# --------------------------------------------------------------------------- layer decay


def test_layer_decay_scales_vit_layers_from_the_top() -> None:
    scales = timm_backbone(model_name="test_vit", layer_decay=0.5).parameter_lr_scales()
    assert set(scales) == {name for name, _ in timm_backbone(model_name="test_vit").named_parameters()}
    # timm groups the final norm with the last block: the top layer, at the base rate.
    assert scales["body.norm.weight"] == scales["body.blocks.5.mlp.fc2.weight"] == 1.0
    assert scales["body.blocks.4.attn.qkv.weight"] == 0.5
    assert scales["body.blocks.0.norm1.weight"] == 0.5**5
    assert scales["body.patch_embed.proj.weight"] == scales["body.pos_embed"] == 0.5**6


def test_layer_decay_puts_register_tokens_with_the_embeddings() -> None:
    # timm's matcher leaves reg_token out, which would give it the top layer's rate.
    scales = timm_backbone(model_name="test_vit2", layer_decay=0.5).parameter_lr_scales()
    assert scales["body.reg_token"] == scales["body.pos_embed"] == 0.5**8


def test_layer_decay_off_and_on_cnns() -> None:
    assert set(timm_backbone(model_name="test_vit").parameter_lr_scales().values()) == {1.0}
    # A features_only CNN renames its modules (stages.0 -> stages_0); timm's layer
    # order must still apply.
    convnext = timm_backbone(model_name="test_convnext", out_indices=(0, 3), layer_decay=0.5)
    scales = convnext.parameter_lr_scales()
    assert scales["body.stem_0.weight"] == min(scales.values())
    assert scales["body.stages_3.blocks.1.mlp.fc2.weight"] == 1.0
    assert scales["body.stages_0.blocks.0.conv_dw.weight"] < scales["body.stages_1.blocks.0.conv_dw.weight"]
    resnet = timm_backbone(model_name="test_resnet", layer_decay=0.5).parameter_lr_scales()
    assert resnet["body.conv1.0.weight"] == 0.5**4 and resnet["body.layer4.0.conv1.weight"] == 1.0


# --------------------------------------------------------------------------- weights files


def test_pretrained_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = timm.create_model("test_vit")
    path = tmp_path / "test_vit.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))
    backbone = seeded_backbone(seed=7, model_name="test_vit", pretrained=str(path))
    loaded = backbone.state_dict()
    for name, tensor in source.state_dict().items():
        if f"body.{name}" in loaded:
            assert torch.equal(loaded[f"body.{name}"], tensor), name
    assert torch.equal(loaded["body.norm.weight"], source.state_dict()["norm.weight"])


def test_pretrained_file_of_another_size_has_its_position_embeddings_resized(tmp_path: Path) -> None:
    source = timm.create_model("test_vit", img_size=64)  # a 4 x 4 grid, not the default 10 x 10
    path = tmp_path / "test_vit_64.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))
    backbone = timm_backbone(model_name="test_vit", pretrained=str(path))
    assert tuple(source.pos_embed.shape) == (1, 1 + 4 * 4, 64)
    assert tuple(backbone.body.pos_embed.shape) == (1, 1 + 10 * 10, 64)


def test_pretrained_file_of_another_model_names_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "test_vit2.safetensors"
    safetensors.torch.save_file(timm.create_model("test_vit2").state_dict(), str(path))
    with pytest.raises(ParameterError) as caught:
        timm_backbone(model_name="test_vit", pretrained=str(path))
    error = caught.value
    assert error.parameter == "pretrained"
    assert "missing from the file: cls_token, norm.bias, norm.weight" in error.message
    assert "not in the model: blocks.0.ls1.gamma" in error.message
    # A CNN given a ViT's file is refused too (timm alone would load it without a word).
    with pytest.raises(ParameterError, match=r"tensors missing from the file: bn1\.bias"):
        timm_backbone(model_name="test_resnet", pretrained=str(path))


def test_pretrained_file_with_a_wrong_shape(tmp_path: Path) -> None:
    state = timm.create_model("test_vit").state_dict()
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:10].contiguous()
    path = tmp_path / "cut.safetensors"
    safetensors.torch.save_file(state, str(path))
    with pytest.raises(
        ParameterError, match=r"blocks\.0\.attn\.qkv\.weight \[10, 64\] in the file, \[192, 64\]"
    ):
        timm_backbone(model_name="test_vit", pretrained=str(path))


def test_missing_or_unreadable_pretrained_file(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="pretrained weights not found") as caught:
        timm_backbone(model_name="test_vit", pretrained=str(tmp_path / "absent.safetensors"))
    assert caught.value.parameter == "pretrained" and "save_file" in (caught.value.hint or "")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ParameterError, match="not a readable safetensors file"):
        timm_backbone(model_name="test_vit", pretrained=str(broken))


# --------------------------------------------------------------------------- parameter errors


def test_out_indices_a_model_does_not_have() -> None:
    with pytest.raises(ParameterError) as vit:
        timm_backbone(model_name="test_vit", out_indices=(2, 5, 8, 11))
    assert vit.value.parameter == "out_indices"
    assert vit.value.message == "test_vit has 6 blocks, 0 to 5: 8, 11 not among them"
    with pytest.raises(ParameterError) as cnn:
        timm_backbone(model_name="test_resnet", out_indices=(1, 5))
    assert "feature levels 0 to 4 (strides 2, 4, 8, 16, 32): 5 not among them" in cnn.value.message
    with pytest.raises(ParameterError, match="increasing and distinct"):
        timm_backbone(model_name="test_vit", out_indices=(3, 1))


def test_unknown_model_names_close_ones() -> None:
    with pytest.raises(ParameterError) as caught:
        timm_backbone(model_name="vit_base_patch14_dinov3")
    assert caught.value.parameter == "model_name"
    assert "'vit_base_patch14_dinov2'" in (caught.value.hint or "")
    with pytest.raises(ParameterError, match="has no pretrained tag 'lvd'") as tag:
        timm_backbone(model_name="vit_base_patch14_dinov2.lvd")
    assert "vit_base_patch14_dinov2.lvd142m" in (tag.value.hint or "")


def test_parameters_that_do_not_apply_to_a_vit() -> None:
    with pytest.raises(ParameterError, match="patch size 16") as stride:
        timm_backbone(model_name="test_vit", output_stride=16)
    assert stride.value.parameter == "output_stride"
    with pytest.raises(ParameterError) as fixed:
        timm_backbone(model_name="beit_base_patch16_224")  # relative positions: one size only
    assert fixed.value.parameter == "model_name" and "one size only" in fixed.value.message
    with pytest.raises(ParameterError) as decay:
        timm_backbone(model_name="test_vit", layer_decay=1.5)
    assert decay.value.parameter == "layer_decay"


# --------------------------------------------------------------------------- crop sizes


def test_crop_size_issue_names_the_patch_size_and_nearby_sizes() -> None:
    vit = timm_backbone(model_name="test_vit")
    assert crop_size_issue(vit, 64) is None and crop_size_issue(vit, 0) is None
    issue = crop_size_issue(vit, 72)
    assert issue is not None and "patch size 16" in issue and issue.endswith("use 64 or 80")
    assert crop_size_issue(timm_backbone(model_name="test_resnet"), 321) is None
    assert nearby_multiples(512, 14) == [518, 504]
    assert nearby_multiples(510, 14) == [504, 518]
    assert nearby_multiples(5, 14) == [14]


def test_tiny_vit_quickstart_variant_validates(tmp_path: Path) -> None:
    """The CPU variant of docs/dinov2.md, through the real command line."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pctkit",
            "validate",
            "quickstart",
            "--set",
            "model.backbone.model_name=test_vit",
            "--set",
            'model.backbone.pretrained=""',
            "--set",
            "model.backbone.out_indices=[1, 2, 4, 5]",
            "--set",
            "model.head.type=dpt",
            "--set",
            "model.head.channels=32",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_environment(),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "builds and maps (2, 3, 64, 64) images to (2, 5, 64, 64) logits" in completed.stdout
