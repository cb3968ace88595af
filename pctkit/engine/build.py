"""Recipe sections -> components, through the registry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from pctkit import registry
from pctkit.components.contracts import SegmentationData
from pctkit.engine.data import stable_seed
from pctkit.engine.model import IMAGENET_MEAN, IMAGENET_STD, SegmentationNet, parameter_groups
from pctkit.recipe.schema import ComponentSpec, Model, Recipe


def build_component(kind: str, spec: ComponentSpec, *runtime_args: Any) -> Any:
    """Build the component a recipe section declares."""
    return registry.get(kind, spec.type).build(*runtime_args, **spec.parameters())


def build_data(recipe: Recipe) -> SegmentationData:
    """The dataset of ``[data]``."""
    data = build_component("datasets", recipe.data)
    if not isinstance(data, SegmentationData):
        raise TypeError(f"dataset {recipe.data.type!r} returned {type(data).__name__}, not SegmentationData")
    return data


def build_backbone(model: Model) -> nn.Module:
    """The backbone of a ``[model]`` section, checked against the backbone contract."""
    backbone: nn.Module = build_component("backbones", model.backbone)
    for attribute in ("out_channels", "out_strides"):
        if not hasattr(backbone, attribute):
            raise TypeError(
                f"backbone {model.backbone.type!r} has no {attribute!r} attribute (see the "
                "backbone contract in pctkit.components.contracts)"
            )
    return backbone


def build_head(model: Model, backbone: nn.Module, num_classes: int) -> SegmentationNet:
    """The network of a ``[model]`` section around an already built backbone."""
    contract: Any = backbone  # out_channels and out_strides: see the backbone contract
    head = build_component(
        "heads", model.head, list(contract.out_channels), list(contract.out_strides), num_classes
    )
    net = SegmentationNet(
        backbone,
        head,
        num_classes,
        mean=getattr(backbone, "mean", IMAGENET_MEAN),
        std=getattr(backbone, "std", IMAGENET_STD),
    )
    if model.activation_checkpointing:
        enable = getattr(backbone, "set_grad_checkpointing", None)
        if enable is None:
            raise TypeError(f"backbone {model.backbone.type!r} does not support activation checkpointing")
        enable(True)
    return net


def build_net(model: Model, num_classes: int) -> SegmentationNet:
    """A segmentation network from a ``[model]`` section."""
    return build_head(model, build_backbone(model), num_classes)


def fresh_net(model: Model, num_classes: int, seed: int, role: str) -> SegmentationNet:
    """A network initialised by the run's seed and a role only (``stable_seed``), so the
    arms of an ablation start from the same weights; the global generator is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "init", role))
        return build_net(model, num_classes)


def prepare_net(
    net: nn.Module,
    device: torch.device,
    *,
    channels_last: bool = False,
    distributed: bool = False,
    sync_batchnorm: bool = False,
    compile_backend: str | None = None,
) -> nn.Module:
    """A network on ``device``, in channels-last memory format, converted to SyncBatchNorm
    and DDP-wrapped, and compiled (``compile_backend``; ``None``: not compiled), as asked."""
    from torch.nn.parallel import DistributedDataParallel

    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if distributed:
        if sync_batchnorm:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_backend is not None:
        net = torch.compile(net, backend=compile_backend)  # type: ignore[assignment]
    return net


def build_optimizer(
    spec: ComponentSpec, net: nn.Module, classifier_lr_multiplier: float, head_lr_multiplier: float = 1.0
) -> Optimizer:
    """The optimizer of ``spec`` over ``net``'s parameters (classifier group scaled)."""
    optimizer = build_component(
        "optimizers", spec, parameter_groups(net, classifier_lr_multiplier, head_lr_multiplier)
    )
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer {spec.type!r} did not return a torch Optimizer")
    return optimizer


def build_scheduler(spec: ComponentSpec, optimizer: Optimizer, total_iterations: int) -> LRScheduler:
    """The learning-rate schedule of ``spec``."""
    scheduler = build_component("schedulers", spec, optimizer, total_iterations)
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler {spec.type!r} did not return a torch LRScheduler")
    return scheduler


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"experiment.device = {name!r} but CUDA is not available")
    return device
