"""Any timm model as a feature-pyramid backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn


class TimmBackbone(nn.Module):
    """A timm model created with ``features_only=True``; see the backbone contract."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.body = model
        info: Any = model.feature_info
        self.out_channels: list[int] = list(info.channels())
        self.out_strides: list[int] = list(info.reduction())
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def forward(self, x: Tensor) -> list[Tensor]:
        features: list[Tensor] = self.body(x)
        return features

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward to save memory (timm's own mechanism)."""
        self.body.set_grad_checkpointing(enable)  # type: ignore[operator]


def timm_backbone(
    *,
    model_name: str = "resnet50",
    pretrained: str = "",
    output_stride: int = 32,
    out_indices: tuple[int, ...] = (1, 4),
    drop_path_rate: float = 0.0,
) -> TimmBackbone:
    """Any timm model as a backbone, through ``features_only``.

    Weights never come from a hub: ``pretrained`` is the path of a local safetensors
    file (for example written once with ``timm.create_model(name, pretrained=True)``
    and ``safetensors.torch.save_file(model.state_dict(), path)`` on a machine with
    internet access).

    Args:
        model_name: a timm model name (``pctkit list`` shows none of them; see
            ``timm.list_models()``), e.g. ``resnet101`` or ``test_resnet``.
        pretrained: path to a local ``.safetensors`` file of ImageNet weights for this
            model, or ``""`` for random initialisation.
        output_stride: the stride of the coarsest feature map, 8, 16 or 32 (dilated
            convolutions replace strides where the model supports it).
        out_indices: which feature levels to return, finest first (timm's
            ``out_indices``); the first is the low-level map of DeepLabv3+ style heads.
        drop_path_rate: stochastic depth rate, where the model supports it.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if list(out_indices) != sorted(set(out_indices)):
        raise ValueError(f"out_indices must be increasing and distinct, got {list(out_indices)}")
    if model_name not in timm.list_models():
        raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
    kwargs: dict[str, Any] = {
        "features_only": True,
        "out_indices": tuple(out_indices),
        "drop_path_rate": drop_path_rate,
    }
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    if pretrained:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights not found: {path}")
        if path.suffix != ".safetensors":
            raise ValueError(f"pretrained weights must be a .safetensors file, got {path.name}")
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    if drop_path_rate == 0.0:
        del kwargs["drop_path_rate"]  # not every model takes the argument
    model = timm.create_model(model_name, **kwargs)
    config = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(config.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(config.get("std", (0.229, 0.224, 0.225)))
    return TimmBackbone(model, mean, std)
