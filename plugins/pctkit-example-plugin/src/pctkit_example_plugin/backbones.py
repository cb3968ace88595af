"""``stair_cnn``: a small convolutional backbone of its own, no timm involved.

It follows pctkit's backbone contract (``pctkit.components.contracts``): ``forward``
returns a list of feature maps, finest first, and the module states their
``out_channels`` and ``out_strides``, plus the ``mean``/``std`` its inputs are
normalised with.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _check(widths: Sequence[int], out_stages: Sequence[int]) -> None:
    """Raise one ValueError naming every bad argument (pctkit shows it at validation)."""
    problems = []
    if not widths or any(width < 1 for width in widths):
        problems.append(f"widths must be positive channel counts, got {list(widths)}")
    if not out_stages or list(out_stages) != sorted(set(out_stages)):
        problems.append(f"out_stages must be increasing and distinct, got {list(out_stages)}")
    elif out_stages[0] < 0 or out_stages[-1] >= len(widths):
        problems.append(
            f"out_stages must lie in 0..{len(widths) - 1} (one per width), got {list(out_stages)}"
        )
    if problems:
        raise ValueError("; ".join(problems))


def stair_cnn_v1(
    *,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    out_stages: tuple[int, ...] = (1, 3),
) -> StairCNN:
    """A small plain CNN: one strided 3x3 convolution per stage.

    Args:
        widths: channels of each stage; stage i has stride 2 ** (i + 1).
        out_stages: stages whose maps are returned, finest first (the default gives
            strides 4 and 16).
    """
    _check(widths, out_stages)
    return StairCNN(widths, out_stages, blocks_per_stage=0, residual=False)


def stair_cnn_v2(
    *,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    out_stages: tuple[int, ...] = (1, 3),
    blocks_per_stage: int = 1,
) -> StairCNN:
    """A small residual CNN: a strided 3x3 convolution then residual blocks per stage.

    Args:
        widths: channels of each stage; stage i has stride 2 ** (i + 1).
        out_stages: stages whose maps are returned, finest first (the default gives
            strides 4 and 16).
        blocks_per_stage: residual 3x3 blocks after each stage's strided convolution.
    """
    _check(widths, out_stages)
    if blocks_per_stage < 0:
        raise ValueError(f"blocks_per_stage must be >= 0, got {blocks_per_stage}")
    return StairCNN(widths, out_stages, blocks_per_stage=blocks_per_stage, residual=True)
