"""``pyramid_sum``: a head that uses every feature map the backbone returns.

It follows pctkit's head contract (``pctkit.components.contracts``): the factory takes
``in_channels, in_strides, num_classes`` positionally (pctkit supplies them from the
backbone and the dataset), then its own typed keyword parameters, and the module
exposes its final layer as ``classifier``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PyramidSumHead(nn.Module):
    """Project each map to one width, upsample to the finest, sum, refine, classify."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
            )
            for c in in_channels
        )
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[2:]
        total = self.laterals[0](features[0])
        for lateral, feature in zip(self.laterals[1:], features[1:], strict=True):
            total = total + F.interpolate(lateral(feature), size=size, mode="bilinear", align_corners=False)
        logits: Tensor = self.classifier(self.refine(total))
        return logits


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
    return PyramidSumHead(in_channels, num_classes, channels, dropout)
