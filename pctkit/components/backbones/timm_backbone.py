"""Any timm model as a backbone: CNNs, hierarchical transformers and plain ViTs.

A light module: it imports neither torch nor timm, so that ``pctkit list`` stays quick;
the modules live in :mod:`pctkit.components.backbones._timm`, imported when a backbone
is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pctkit.components.contracts import LOCATION, ParameterError

if TYPE_CHECKING:
    from pctkit.components.backbones._timm_modules import TimmBackbone


def timm_backbone(
    *,
    model_name: str = "resnet50",
    pretrained: Annotated[str, LOCATION] = "",
    output_stride: int = 32,
    out_indices: tuple[int, ...] | None = None,
    drop_path_rate: float = 0.0,
    layer_decay: float = 1.0,
    final_norm: bool = True,
) -> TimmBackbone:
    """Any timm model as a backbone: CNNs, ConvNeXt, Swin, and plain ViTs such as DINOv2.

    CNNs and hierarchical models give one feature map per stage (timm's
    ``features_only``). Plain vision transformers (``vit_*``, ``deit_*``, ``eva*``,
    ``vit_base_patch14_dinov2``, ...) give the outputs of chosen blocks, all at the
    patch stride; they take any image size (position embeddings are interpolated, and
    sides that are not multiples of the patch size are resized to the nearest ones),
    and expose ``input_multiple``, the patch size.

    Weights never come from a hub: ``pretrained`` is the path of a local safetensors
    file (for example written once with ``timm.create_model(name, pretrained=True)``
    and ``safetensors.torch.save_file(model.state_dict(), path)`` on a machine with
    internet access).

    Args:
        model_name: a timm model name, optionally with a pretrained tag (see
            ``timm.list_models()``), e.g. ``resnet101``, ``convnext_base``,
            ``vit_base_patch14_dinov2`` or the tiny ``test_resnet`` / ``test_vit``.
        pretrained: path to a local ``.safetensors`` file of weights for this model
            (``package:relative/path`` names a file shipped inside an installed Python
            package, e.g. ``pctkit:weights/test_resnet_digits_235689.safetensors``), or
            ``""`` for random initialisation.
        output_stride: CNNs: the stride of the coarsest feature map, 8, 16 or 32
            (dilated convolutions replace strides where the model supports it). Plain
            ViTs have one stride, their patch size; leave it at 32.
        out_indices: which feature levels (CNNs, hierarchical models) or blocks (plain
            ViTs, from 0) to return, finest first. Default: the stride-4 level and the
            last (``[1, 4]`` on ResNets); four evenly spread blocks on ViTs
            (``[2, 5, 8, 11]`` of 12, as DPT heads take them).
        drop_path_rate: stochastic depth rate, where the model supports it.
        layer_decay: layer-wise learning-rate decay: the top layer learns at the base
            rate and each layer below at ``layer_decay`` times the one above (1.0: off).
        final_norm: plain ViTs: pass every returned block through the model's final
            norm, as DINOv2's intermediate layers feed DPT heads.
    """
    if output_stride not in (8, 16, 32):
        raise ParameterError("output_stride", f"must be 8, 16 or 32, got {output_stride}")
    if out_indices is not None and (
        not out_indices or list(out_indices) != sorted(set(out_indices)) or out_indices[0] < 0
    ):
        raise ParameterError(
            "out_indices",
            f"must be non-negative, increasing and distinct, got {list(out_indices)}",
            "finest level first, e.g. [1, 4] or [2, 5, 8, 11]",
        )
    if not 0.0 < layer_decay <= 1.0:
        raise ParameterError(
            "layer_decay", f"must be in (0, 1], got {layer_decay}", "0.65 to 0.9 is usual; 1.0 is off"
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise ParameterError("drop_path_rate", f"must be in [0, 1), got {drop_path_rate}")

    from pctkit.components.backbones._timm import build_timm_backbone

    return build_timm_backbone(
        model_name=model_name,
        pretrained=pretrained,
        output_stride=output_stride,
        out_indices=tuple(out_indices) if out_indices is not None else None,
        drop_path_rate=drop_path_rate,
        layer_decay=layer_decay,
        final_norm=final_norm,
    )
