"""The DPT head's modules (Ranftl et al., "Vision Transformers for Dense Prediction",
ICCV 2021): reassemble feature maps to a pyramid, fuse it top-down with residual
convolution units, classify at the finest level.

Imported by the light factory in ``dpt.py`` when a head is built.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def resampler(channels: int, exponent: int) -> nn.Module:
    """Change a map's stride by ``2 ** exponent``: a transposed convolution upsamples
    (kernel = stride, so output pixels do not overlap), strided 3x3 convolutions
    downsample, one per halving."""
    if exponent > 0:
        factor = 2**exponent
        return nn.ConvTranspose2d(channels, channels, kernel_size=factor, stride=factor)
    if exponent < 0:
        return nn.Sequential(
            *[nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1) for _ in range(-exponent)]
        )
    return nn.Identity()


class ResidualConvUnit(nn.Module):
    """``x + conv(relu(conv(relu(x))))``, with optional BatchNorm after each conv."""

    def __init__(self, channels: int, use_bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not use_bn)
        self.norm1 = nn.BatchNorm2d(channels) if use_bn else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not use_bn)
        self.norm2 = nn.BatchNorm2d(channels) if use_bn else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # Not in place: x is still needed for the residual sum.
        residual = self.norm1(self.conv1(F.relu(x)))
        residual = self.norm2(self.conv2(F.relu(residual)))
        return x + residual


class FusionBlock(nn.Module):
    """One top-down step: add the refined lateral map to the coarser path, refine,
    project, resize to the next finer level."""

    def __init__(self, channels: int, use_bn: bool, lateral: bool) -> None:
        super().__init__()
        # The coarsest block has no path from above yet, so it has no lateral unit
        # (an unused unit would leave parameters without gradients under DDP).
        self.lateral = ResidualConvUnit(channels, use_bn) if lateral else None
        self.refine = ResidualConvUnit(channels, use_bn)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, path: Tensor, lateral: Tensor | None, size: tuple[int, int]) -> Tensor:
        if self.lateral is not None and lateral is not None:
            path = path + self.lateral(lateral)
        # The 1x1 projection commutes with bilinear resizing; projecting first is cheaper.
        path = self.project(self.refine(path))
        if tuple(path.shape[-2:]) != size:
            path = F.interpolate(path, size=size, mode="bilinear", align_corners=False)
        return path


class DPTHead(nn.Module):
    """Reassemble (1x1 projection, resampling), align (3x3 to ``channels``), fuse
    top-down, classify at the finest level.

    Features that all share one stride (a plain ViT) are resampled to a pyramid: with
    four maps, the strides become p/4, p/2, p and 2p (4, 8, 16, 32 for patch 16).
    Features already at several strides (a CNN, Swin, ConvNeXt) keep their own.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        num_classes: int,
        channels: int,
        reassemble_channels: list[int],
        use_bn: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        count = len(in_channels)
        single_stride = len(set(in_strides)) == 1
        # Finest map up 4x, then each next one half as much (DPT's 4, 2, 1, 1/2).
        self.exponents = [2 - i if single_stride else 0 for i in range(count)]
        self.reassemble = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_mid, 1), resampler(c_mid, exponent))
            for c_in, c_mid, exponent in zip(in_channels, reassemble_channels, self.exponents, strict=True)
        )
        self.align = nn.ModuleList(
            nn.Conv2d(c_mid, channels, 3, padding=1, bias=False) for c_mid in reassemble_channels
        )
        self.fusion = nn.ModuleList(
            FusionBlock(channels, use_bn, lateral=i < count - 1) for i in range(count)
        )
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        pyramid = [
            align(reassemble(feature))
            for feature, reassemble, align in zip(features, self.reassemble, self.align, strict=True)
        ]
        path = pyramid[-1]
        for level in range(len(pyramid) - 1, -1, -1):
            finer = pyramid[max(level - 1, 0)]
            lateral = pyramid[level] if level < len(pyramid) - 1 else None
            path = self.fusion[level](path, lateral, (finer.shape[-2], finer.shape[-1]))
        logits: Tensor = self.classifier(self.refine(path))
        return logits
