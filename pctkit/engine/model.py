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


def parameter_groups(net: nn.Module, classifier_lr_multiplier: float) -> list[dict[str, object]]:
    """Two optimizer groups: the final classifier (``lr_scale`` = multiplier) and the rest."""
    target = unwrap(net)
    classifier = (
        {id(p) for p in target.classifier_parameters()} if isinstance(target, SegmentationNet) else set()
    )
    rest = [p for p in net.parameters() if id(p) not in classifier and p.requires_grad]
    head = [p for p in net.parameters() if id(p) in classifier and p.requires_grad]
    groups: list[dict[str, object]] = [{"params": rest, "lr_scale": 1.0, "name": "body"}]
    if head:
        groups.append({"params": head, "lr_scale": classifier_lr_multiplier, "name": "classifier"})
    return groups


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
