"""``stair_cnn``: a small convolutional backbone of its own, no timm involved.

It follows pctkit's backbone contract (``pctkit.components.contracts``): ``forward``
returns a list of feature maps, finest first, and the module states their
``out_channels`` and ``out_strides``, plus the ``mean``/``std`` its inputs are
normalised with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pctkit_example_plugin._modules import StairCNN


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
    from pctkit_example_plugin._modules import StairCNN

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
    from pctkit_example_plugin._modules import StairCNN

    return StairCNN(widths, out_stages, blocks_per_stage=blocks_per_stage, residual=True)
