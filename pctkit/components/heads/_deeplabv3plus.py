"""The modules of the ``deeplabv3plus`` and ``fusion`` heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _ImagePooling(nn.Module):
    """Global average pooling branch of ASPP, broadcast back to the map's size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # No BatchNorm: a 1x1 pooled map has one value per channel, and BN on a batch of
        # one image cannot normalise it.
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated convolutions, concatenated."""

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...], image_pooling: bool) -> None:
        super().__init__()
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, channels, 1)]
        branches += [_conv_bn_relu(in_channels, channels, 3, rate) for rate in rates]
        if image_pooling:
            branches.append(_ImagePooling(in_channels, channels))
        self.branches = nn.ModuleList(branches)
        self.project = _conv_bn_relu(channels * len(branches), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the coarsest map, fused with a projected low-level map, then classified."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        aspp_rates: tuple[int, ...],
        channels: int,
        shortcut_channels: int,
        image_pooling: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels[-1], channels, aspp_rates, image_pooling)
        self.shortcut = _conv_bn_relu(in_channels[0], shortcut_channels, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(channels + shortcut_channels, channels, 3),
            _conv_bn_relu(channels, channels, 3),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        low_level, high_level = features[0], features[-1]
        context = self.aspp(high_level)
        context = F.interpolate(context, size=low_level.shape[2:], mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([context, self.shortcut(low_level)], dim=1))
        logits: Tensor = self.classifier(fused)
        return logits


class FusionHead(nn.Module):
    """Two-level fusion: project both maps, upsample the coarse one, add, classify."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.low_project = _conv_bn_relu(in_channels[0], channels, 1)
        self.high_project = _conv_bn_relu(in_channels[-1], channels, 1)
        self.refine = nn.Sequential(_conv_bn_relu(channels, channels, 3), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        low_level, high_level = features[0], features[-1]
        high = F.interpolate(
            self.high_project(high_level), size=low_level.shape[2:], mode="bilinear", align_corners=False
        )
        logits: Tensor = self.classifier(self.refine(self.low_project(low_level) + high))
        return logits
