"""A segmentation network: normalisation, backbone, head, upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pctkit.engine.distributed import unwrap

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationNet(nn.Module):
    """Images in [0, 1] -> logits ``(N, C, H, W)`` at the input's resolution.

    The normalisation (the backbone's mean and std) is part of the network, so an
    exported model needs nothing but RGB images scaled to [0, 1].
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        mean: Tensor = self.mean  # type: ignore[assignment]
        std: Tensor = self.std  # type: ignore[assignment]
        normalised = (images - mean) / std
        features = self.backbone(normalised)
        logits: Tensor = self.head(features)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Parameters of the head's final layer (they may get a larger learning rate)."""
        classifier = getattr(self.head, "classifier", None)
        return list(classifier.parameters()) if isinstance(classifier, nn.Module) else []


def parameter_groups(
    net: nn.Module, classifier_lr_multiplier: float, head_lr_multiplier: float = 1.0
) -> list[dict[str, object]]:
    """Optimizer groups, each with its ``lr_scale``: the final classifier
    (``classifier_lr_multiplier``), the rest of the head (``head_lr_multiplier``) and the
    backbone (1, times the backbone's own layer-wise scales where it has them,
    ``parameter_lr_scales()``). Parameters of equal scale share one group, in the net's
    parameter order."""
    target = unwrap(net)
    classifier: set[int] = set()
    head: set[int] = set()
    backbone_scales: dict[int, float] = {}
    if isinstance(target, SegmentationNet):
        classifier = {id(p) for p in target.classifier_parameters()}
        head = {id(p) for p in target.head.parameters()}
        own = getattr(target.backbone, "parameter_lr_scales", None)
        if callable(own):
            scales = own()
            backbone_scales = {
                id(p): float(scales.get(n, 1.0)) for n, p in target.backbone.named_parameters()
            }
    groups: dict[float, list[nn.Parameter]] = {}
    names: dict[float, str] = {}
    for parameter in net.parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in classifier:
            scale, name = classifier_lr_multiplier, "classifier"
        elif id(parameter) in head:
            scale, name = head_lr_multiplier, "head"
        else:
            scale, name = backbone_scales.get(id(parameter), 1.0), "body"
        groups.setdefault(scale, []).append(parameter)
        names.setdefault(scale, name)
    # The body's group first, the classifier's last, as the optimizers have always had them.
    order = sorted(groups, key=lambda scale: (names[scale] == "classifier", names[scale] != "body", -scale))
    return [{"params": groups[scale], "lr_scale": scale, "name": names[scale]} for scale in order]


@torch.no_grad()
def multi_scale_logits(
    net: nn.Module, images: Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> Tensor:
    """Logits averaged over scales and horizontal flips, each resized back to the input."""
    height, width = images.shape[-2:]
    total: Tensor | None = None
    count = 0
    for scale in scales:
        scaled = images
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        variants = [scaled, scaled.flip(-1)] if flip else [scaled]
        for variant_index, variant in enumerate(variants):
            logits = net(variant).float()
            if variant_index == 1:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            total = logits if total is None else total + logits
            count += 1
    assert total is not None
    return total / count
