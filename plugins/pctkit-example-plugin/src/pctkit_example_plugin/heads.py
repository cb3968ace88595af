"""``pyramid_sum``: a head that uses every feature map the backbone returns.

It follows pctkit's head contract (``pctkit.components.contracts``): the factory takes
``in_channels, in_strides, num_classes`` positionally (pctkit supplies them from the
backbone and the dataset), then its own typed keyword parameters, and the module
exposes its final layer as ``classifier``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pctkit_example_plugin._modules import PyramidSumHead


def pyramid_sum(
    in_channels: list[int],
    in_strides: list[int],
    num_classes: int,
    /,
    *,
    channels: int = 64,
    dropout: float = 0.0,
) -> PyramidSumHead:
    """Sum every backbone map, projected to one width and upsampled to the finest.

    Args:
        channels: width every map is projected to, and of the 3x3 refinement.
        dropout: channel dropout before the classifier.
    """
    if list(in_strides) != sorted(in_strides):
        raise ValueError(f"pyramid_sum needs feature maps finest first, got strides {list(in_strides)}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    from pctkit_example_plugin._modules import PyramidSumHead

    return PyramidSumHead(in_channels, num_classes, channels, dropout)
