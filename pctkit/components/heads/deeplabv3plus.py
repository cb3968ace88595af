"""DeepLabv3+ and a lighter two-level fusion head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pctkit.components.contracts import ParameterError

if TYPE_CHECKING:
    from pctkit.components.heads._deeplabv3plus import DeepLabV3PlusHead, FusionHead


def _check_several_strides(head: str, in_strides: list[int]) -> None:
    """Heads that fuse a fine and a coarse map cannot work on single-stride features."""
    if len(set(in_strides)) == 1:
        raise ParameterError(
            "type",
            f"{head} fuses a fine and a coarse feature map, but every map of the backbone has "
            f"stride {in_strides[0]} (a plain ViT's maps all share its patch size)",
            "use the 'dpt' head, which resamples single-stride maps to a pyramid, or backbone "
            "levels at different strides",
        )


def deeplabv3plus(
    in_channels: list[int],
    in_strides: list[int],
    num_classes: int,
    /,
    *,
    aspp_rates: tuple[int, ...] = (6, 12, 18),
    channels: int = 256,
    shortcut_channels: int = 48,
    image_pooling: bool = True,
    dropout: float = 0.1,
) -> DeepLabV3PlusHead:
    """DeepLabv3+: ASPP on the coarsest feature map plus a low-level shortcut.

    Uses the first (finest) and last (coarsest) backbone feature maps. The reference
    rates 6/12/18 are for output stride 16; use 12/24/36 at output stride 8 to keep the
    same field of view, or keep 6/12/18 as the PCT reference code does.

    Args:
        aspp_rates: dilation rates of the 3x3 ASPP branches.
        channels: channels of the ASPP branches and of the decoder.
        shortcut_channels: channels the low-level map is projected to (48 in the paper).
        image_pooling: whether ASPP has a global-average-pooling branch.
        dropout: channel dropout before the classifier.
    """
    if len(in_channels) < 2:
        raise ValueError(
            f"deeplabv3plus needs at least two feature maps (low and high level), the "
            f"backbone gives {len(in_channels)}; set model.backbone.out_indices to two levels"
        )
    _check_several_strides("deeplabv3plus", in_strides)
    if any(rate < 1 for rate in aspp_rates):
        raise ValueError(f"aspp_rates must be >= 1, got {list(aspp_rates)}")
    from pctkit.components.heads._deeplabv3plus import DeepLabV3PlusHead

    return DeepLabV3PlusHead(
        in_channels, num_classes, aspp_rates, channels, shortcut_channels, image_pooling, dropout
    )


def fusion(
    in_channels: list[int],
    in_strides: list[int],
    num_classes: int,
    /,
    *,
    channels: int = 64,
    dropout: float = 0.0,
) -> FusionHead:
    """A light head for CPU-sized work: fuse the finest and coarsest maps, classify.

    About a tenth of DeepLabv3+'s cost at the same width; no dilated convolutions.

    Args:
        channels: width of the projected maps and of the 3x3 refinement.
        dropout: channel dropout before the classifier.
    """
    _check_several_strides("fusion", in_strides)
    from pctkit.components.heads._deeplabv3plus import FusionHead

    return FusionHead(in_channels, num_classes, channels, dropout)
