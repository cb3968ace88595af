"""The plugin's PyTorch modules; the factories in ``backbones`` and ``heads`` import
this module only when they build one, so listing the components imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Block(nn.Module):
    """A 3x3 conv-BN-ReLU, optionally with an identity shortcut."""

    def __init__(self, channels: int, residual: bool) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(channels, channels)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return out + x if self.residual else out


class StairCNN(nn.Module):
    """Stages that each halve the resolution; returns the maps of the chosen stages.

    Stage ``i`` has stride ``2 ** (i + 1)`` and ``widths[i]`` channels.
    """

    def __init__(
        self, widths: Sequence[int], out_stages: Sequence[int], blocks_per_stage: int, residual: bool
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            blocks = [_Block(width, residual) for _ in range(blocks_per_stage)]
            stages.append(nn.Sequential(_conv_bn_relu(in_channels, width, stride=2), *blocks))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.out_stages = list(out_stages)
        # The backbone contract: what forward returns, and how inputs are normalised.
        self.out_channels: list[int] = [widths[i] for i in self.out_stages]
        self.out_strides: list[int] = [2 ** (i + 1) for i in self.out_stages]
        # Trained from scratch: centring [0, 1] images is all it needs, not ImageNet's values.
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.5, 0.5, 0.5)

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = []
        for index, stage in enumerate(self.stages[: self.out_stages[-1] + 1]):
            x = stage(x)
            if index in self.out_stages:
                features.append(x)
        return features


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
