"""The DPT head: dense prediction from ViT blocks (or any feature pyramid).

A light module: the ``nn.Module`` code is in :mod:`pctkit.components.heads._dpt`,
imported when the head is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pctkit.components.contracts import ParameterError

if TYPE_CHECKING:
    from pctkit.components.heads._dpt import DPTHead


def dpt(
    in_channels: list[int],
    in_strides: list[int],
    num_classes: int,
    /,
    *,
    channels: int = 256,
    reassemble_channels: tuple[int, ...] = (),
    use_bn: bool = False,
    dropout: float = 0.0,
) -> DPTHead:
    """DPT: reassemble ViT blocks into a pyramid, fuse it top-down, predict at stride 4.

    After Ranftl et al., "Vision Transformers for Dense Prediction" (ICCV 2021), as
    UniMatch V2 uses it on DINOv2. Maps that share one stride (plain ViT blocks, e.g.
    four of them at patch stride 14) are projected and resampled to strides p/4, p/2, p
    and 2p by transposed and strided convolutions; maps already at several strides
    (CNNs, ConvNeXt, Swin) keep theirs. Residual convolution units fuse the levels from
    the coarsest down; the classifier works at the finest level (stride 3.5 for patch
    14, 4 for patch 16).

    Args:
        channels: width of the fusion path (DPT's ``features``; UniMatch V2 uses 64, 128
            and 256 for DINOv2-S, -B and -L).
        reassemble_channels: channels each feature map is projected to before
            resampling, one per map; empty: 1/8, 1/4, 1/2 and all of the input's
            channels for single-stride maps (UniMatch V2's 96, 192, 384, 768 for ViT-B),
            the input's own for multi-stride ones.
        use_bn: BatchNorm in the residual convolution units.
        dropout: channel dropout before the classifier.
    """
    if channels < 1:
        raise ParameterError("channels", f"must be at least 1, got {channels}")
    if reassemble_channels and len(reassemble_channels) != len(in_channels):
        raise ParameterError(
            "reassemble_channels",
            f"gives {len(reassemble_channels)} widths for {len(in_channels)} feature maps",
            f"give {len(in_channels)}, or none for the defaults",
        )
    if any(width < 1 for width in reassemble_channels):
        raise ParameterError(
            "reassemble_channels", f"widths must be at least 1, got {list(reassemble_channels)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ParameterError("dropout", f"must be in [0, 1), got {dropout}")
    widths = list(reassemble_channels) or default_reassemble_channels(in_channels, in_strides)

    from pctkit.components.heads._dpt import DPTHead

    return DPTHead(in_channels, in_strides, num_classes, channels, widths, use_bn, dropout)


def default_reassemble_channels(in_channels: list[int], in_strides: list[int]) -> list[int]:
    """Single-stride maps: finest (most upsampled) narrowest, halving per level from the
    coarsest, which keeps its width; multi-stride maps: their own widths."""
    if len(set(in_strides)) > 1:
        return list(in_channels)
    last = len(in_channels) - 1
    return [max(1, width // 2 ** (last - i)) for i, width in enumerate(in_channels)]
