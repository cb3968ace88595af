"""The modules of the ``timm`` backbone: a timm model's features under pctkit's backbone
contract (see :mod:`._timm` for how they are built)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def resize_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Resize ``images`` so that height and width are the nearest multiples of
    ``multiple`` (at least one multiple), as DINOv2 segmentation code evaluates whole
    images; unchanged when they already are."""
    height, width = images.shape[-2:]
    if height % multiple == 0 and width % multiple == 0:
        return images
    size = (
        max(multiple, int(height / multiple + 0.5) * multiple),
        max(multiple, int(width / multiple + 0.5) * multiple),
    )
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


class TimmBackbone(nn.Module):
    """A timm model as a backbone (see the contract in :mod:`pctkit.components.contracts`).

    What both kinds share: ``out_channels``, ``out_strides``, ``mean``, ``std``,
    ``input_multiple``, activation checkpointing and the per-parameter learning-rate
    scales of layer-wise decay.
    """

    out_channels: list[int]
    out_strides: list[int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_multiple: int | None
    """Inputs whose sides are not multiples of this are resized to the nearest ones
    (``None``: any size works as it is)."""

    def __init__(self, body: nn.Module, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.body = body
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.input_multiple = None
        self._lr_scales: dict[str, float] = {}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward to save memory (timm's own mechanism)."""
        self.body.set_grad_checkpointing(enable)  # type: ignore[operator]

    def parameter_lr_scales(self) -> dict[str, float]:
        """Learning-rate multiplier of every parameter, keyed as in ``named_parameters()``:
        ``layer_decay ** depth_from_top`` under layer-wise decay, 1.0 for all without."""
        return {name: self._lr_scales.get(name, 1.0) for name, _ in self.named_parameters()}

    def _snap(self, images: Tensor) -> Tensor:
        return images if self.input_multiple is None else resize_to_multiple(images, self.input_multiple)


class TimmFeatureBackbone(TimmBackbone):
    """A timm model created with ``features_only=True``: one map per stage, finest first."""

    def __init__(
        self,
        body: nn.Module,
        mean: Iterable[float],
        std: Iterable[float],
        input_multiple: int | None = None,
    ) -> None:
        super().__init__(body, mean, std)
        info: Any = body.feature_info
        self.out_channels = list(info.channels())
        self.out_strides = list(info.reduction())
        self.input_multiple = input_multiple
        # Transformers such as Swin give channels-last maps; the contract is (N, C, H, W).
        self.channels_last_output = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = self.body(self._snap(x))
        if self.channels_last_output:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return features


class TimmViTBackbone(TimmBackbone):
    """A plain ViT: the outputs of chosen blocks as maps at the patch stride.

    Prefix tokens (class, registers) are dropped; every map optionally passes through
    the model's final norm. Blocks after the last chosen one are removed, and so is the
    classifier.
    """

    def __init__(
        self,
        body: nn.Module,
        indices: list[int],
        final_norm: bool,
        mean: Iterable[float],
        std: Iterable[float],
    ) -> None:
        super().__init__(body, mean, std)
        info: Any = body.feature_info
        stride = int(info[-1]["reduction"])
        self.indices = list(indices)
        self.final_norm = final_norm
        self.out_channels = [int(info[i]["num_chs"]) for i in indices]
        self.out_strides = [stride] * len(indices)
        self.input_multiple = stride
        # Drop what no returned block needs: later blocks, the head (and the final norm
        # when the maps are not normalised), so that DDP sees no unused parameters.
        body.prune_intermediate_layers(self.indices, prune_norm=not final_norm, prune_head=True)  # type: ignore[operator]

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = self.body.forward_intermediates(  # type: ignore[operator]
            self._snap(x), indices=self.indices, norm=self.final_norm, intermediates_only=True
        )
        return list(features)
