"""The modules behind the ``timm`` backbone: timm models as lists of feature maps.

Two kinds of model, two wrappers:

- :class:`TimmFeatureBackbone`: CNNs and hierarchical transformers (ResNet, ConvNeXt,
  Swin, ...) through timm's ``features_only`` API, one map per stage;
- :class:`TimmViTBackbone`: plain vision transformers (ViT, DeiT, DINOv2, EVA, ...),
  whose blocks all run at one stride (the patch size), through
  ``forward_intermediates``: the outputs of chosen blocks as ``(N, C, H/p, W/p)`` maps.

:func:`build_timm_backbone` picks the wrapper from the model's structure, which it reads
from a copy built on the ``meta`` device (no memory, no random numbers drawn), and
checks the recipe's parameters against it before the real model is built.

This module imports torch and timm; the registered factory in ``timm_backbone.py`` only
imports it when a backbone is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import FeatureDictNet, FeatureHookNet
from timm.models._manipulate import group_with_matcher
from torch import nn

from pctkit.components.backbones._timm_modules import TimmBackbone, TimmFeatureBackbone, TimmViTBackbone
from pctkit.components.contracts import ParameterError, package_file
from pctkit.state_dicts import mismatch

DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- building


def _meta_model(model_name: str, **kwargs: Any) -> nn.Module | None:
    """``model_name`` built on the meta device (shapes only, no random numbers drawn),
    or ``None`` where the model cannot be built that way."""
    try:
        with torch.device("meta"):
            return timm.create_model(model_name, **kwargs)
    except Exception:
        return None


def _refused_argument(model_name: str, **kwargs: Any) -> TypeError | None:
    """The error of a model that does not take one of ``kwargs``, else ``None``."""
    try:
        with torch.device("meta"):
            timm.create_model(model_name, **kwargs)
    except TypeError as error:
        return error
    except Exception:
        return None  # another problem, for the real build to report
    return None


def _is_plain_vit(model: nn.Module) -> bool:
    """A transformer whose blocks all run at one stride, with timm's intermediates API."""
    methods = ("patch_embed", "blocks", "forward_intermediates", "prune_intermediate_layers")
    info: list[dict[str, Any]] = list(getattr(model, "feature_info", None) or [])
    return all(hasattr(model, name) for name in methods) and len({entry["reduction"] for entry in info}) == 1


def check_model_name(model_name: str) -> None:
    """Raise :class:`ParameterError` unless timm knows ``model_name`` (an optional
    ``.tag`` must name one of its pretrained weights)."""
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
        raise ParameterError(
            "model_name",
            f"timm has no model {model_name!r} (timm {timm.__version__}; see timm.list_models('*vit*'))",
            hint,
        )
    if "." in model_name:
        architecture = model_name.split(".")[0]
        tags = timm.list_pretrained(f"{architecture}.*")
        if model_name not in tags:
            raise ParameterError(
                "model_name",
                f"{architecture!r} has no pretrained tag {model_name.split('.', 1)[1]!r}",
                f"its tags: {', '.join(tags)}" if tags else "it has no pretrained weights in timm",
            )


def _weights_path(pretrained: str, model_name: str) -> Path:
    path = package_file(pretrained)
    how = (
        f"write it once where there is internet access: save_file(timm.create_model('{model_name}', "
        "pretrained=True).state_dict(), PATH) with safetensors.torch.save_file; or give an empty "
        "path for random initialisation"
    )
    if not path.is_file():
        raise ParameterError("pretrained", f"pretrained weights not found: {path}", how)
    if path.suffix != ".safetensors":
        raise ParameterError(
            "pretrained", f"pretrained weights must be a .safetensors file, got {path.name}", how
        )
    try:
        _file_shapes(path)
    except Exception as error:
        raise ParameterError(
            "pretrained", f"{path} is not a readable safetensors file: {error}", how
        ) from error
    return path


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118


def _weights_mismatch(path: Path, model: nn.Module, compare_shapes: bool) -> str:
    """What in the file does not fit ``model`` (a meta-device copy): missing and
    unexpected tensors and, with ``compare_shapes``, other shapes; ``""`` if nothing."""
    file_shapes = _file_shapes(path)
    model_shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    # The file may hold the ImageNet classifier; timm drops it on loading.
    found = {n: shape for n, shape in file_shapes.items() if n in model_shapes or not n.startswith(heads)}
    if not compare_shapes:
        found = {n: model_shapes.get(n, shape) for n, shape in found.items()}
    return mismatch(model_shapes, found)


def _create(model_name: str, path: Path | None, meta_kwargs: dict[str, Any], **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the weights of ``path``; a file that does not fit the
    model is a :class:`ParameterError` naming the tensors.

    timm loads feature backbones and headless models non-strictly (it only logs what
    it skipped), so the tensor names are compared first, from the file's header and a
    meta-device copy of the model. Shapes are left to timm, whose filters resize some of
    them (position embeddings), and reported if loading then fails.
    """
    if path is None:
        return timm.create_model(model_name, **kwargs)
    reference = _meta_model(model_name, num_classes=0, **meta_kwargs)
    hint = (
        f"the file must hold the state_dict of timm.create_model('{model_name}'), written with "
        "safetensors.torch.save_file; are model_name and the file the same model?"
    )
    mismatch = _weights_mismatch(path, reference, compare_shapes=False) if reference is not None else ""
    if mismatch:
        raise ParameterError("pretrained", f"{path} does not fit timm's {model_name!r}: {mismatch}", hint)
    try:
        return timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except Exception as error:
        shapes = _weights_mismatch(path, reference, compare_shapes=True) if reference is not None else ""
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ParameterError(
            "pretrained", f"{path} does not fit timm's {model_name!r}: {shapes or first_line}", hint
        ) from error


def _check_indices(out_indices: tuple[int, ...], available: list[int], what: str) -> None:
    wrong = [i for i in out_indices if i not in available]
    if wrong:
        raise ParameterError(
            "out_indices",
            f"{what}: {', '.join(str(i) for i in wrong)} not among them",
            f"choose from {available[0]} to {available[-1]}",
        )


def _even_blocks(depth: int, count: int = 4) -> list[int]:
    """``count`` blocks evenly spread, the last one included: 2, 5, 8, 11 of 12 (as DPT
    heads on DINOv2 take them)."""
    return sorted({max(0, int((k + 1) * depth / count + 0.5) - 1) for k in range(count)})


def _translated_name(name: str, body: nn.Module) -> str:
    """A parameter name of a feature wrapper as the underlying timm model names it, so
    that the model's ``group_matcher`` applies: ``FeatureListNet`` flattens top-level
    sequences (``stages.0`` -> ``stages_0``), ``FeatureGetterNet`` nests the model."""
    if isinstance(body, (FeatureDictNet, FeatureHookNet)):
        return re.sub(r"^([^.]+?)_(\d+)(?=\.|$)", r"\1.\2", name)
    return name.removeprefix("model.") if hasattr(body, "model") else name


def layer_decay_scales(
    named_parameters: Iterable[str],
    matcher_model: nn.Module,
    layer_decay: float,
    rename: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """Learning-rate scales of layer-wise decay: timm's ``group_matcher`` of the model
    numbers its layers from the input (embeddings 0, then blocks or stages); the top
    layer keeps the base rate and each layer below gets ``layer_decay`` times the one
    above it (BEiT's rule, as timm's ``param_groups_layer_decay`` applies it)."""
    names = list(named_parameters)
    if layer_decay == 1.0:
        return dict.fromkeys(names, 1.0)
    matcher = matcher_model.group_matcher(coarse=False)  # type: ignore[operator]
    translated = {name: (rename(name) if rename else name) for name in names}
    layer_of = group_with_matcher(((t, None) for t in translated.values()), matcher, reverse=True)
    top = max(layer_of.values())
    return {name: float(layer_decay ** (top - layer_of[translated[name]])) for name in names}


def build_timm_backbone(
    *,
    model_name: str,
    pretrained: str,
    output_stride: int,
    out_indices: tuple[int, ...] | None,
    drop_path_rate: float,
    layer_decay: float,
    final_norm: bool,
) -> TimmBackbone:
    """The ``timm`` backbone; see :func:`pctkit.components.backbones.timm_backbone.timm_backbone`."""
    check_model_name(model_name)
    path = _weights_path(pretrained, model_name) if pretrained else None
    probe = _meta_model(model_name)
    if probe is not None and _is_plain_vit(probe):
        return _build_vit(
            model_name, path, probe, output_stride, out_indices, drop_path_rate, layer_decay, final_norm
        )
    return _build_features(model_name, path, probe, output_stride, out_indices, drop_path_rate, layer_decay)


def _build_vit(
    model_name: str,
    path: Path | None,
    probe: nn.Module,
    output_stride: int,
    out_indices: tuple[int, ...] | None,
    drop_path_rate: float,
    layer_decay: float,
    final_norm: bool,
) -> TimmViTBackbone:
    stride = int(probe.feature_info[-1]["reduction"])  # type: ignore[index]
    if output_stride != 32:
        raise ParameterError(
            "output_stride",
            f"{model_name} is a plain ViT: every block runs at one stride, its patch size {stride}",
            "leave output_stride out (it applies to CNNs)",
        )
    depth = len(probe.blocks)  # type: ignore[arg-type]
    indices = list(out_indices) if out_indices is not None else _even_blocks(depth)
    _check_indices(tuple(indices), list(range(depth)), f"{model_name} has {depth} blocks, 0 to {depth - 1}")
    kwargs: dict[str, Any] = {"num_classes": 0, "dynamic_img_size": True}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    refused = _refused_argument(model_name, **kwargs)
    if refused is not None:
        raise ParameterError(
            "model_name",
            f"{model_name} takes images of one size only ({refused})",
            "use a ViT that resizes its position embeddings: vit_*, deit_*, eva*, *_dinov2",
        ) from refused
    model = _create(model_name, path, {"dynamic_img_size": True}, **kwargs)
    config = getattr(model, "pretrained_cfg", None) or {}
    backbone = TimmViTBackbone(
        model,
        indices,
        final_norm,
        config.get("mean", DEFAULT_MEAN),
        config.get("std", DEFAULT_STD),
    )
    if layer_decay != 1.0:
        backbone._lr_scales = layer_decay_scales(
            (name for name, _ in backbone.named_parameters()),
            model,
            layer_decay,
            rename=_vit_layer_name,
        )
    return backbone


def _vit_layer_name(name: str) -> str:
    """A ViT backbone's parameter name for timm's ``group_matcher``; register tokens,
    which the matcher leaves out (and so would put at the top), are embeddings like the
    class token."""
    name = name.removeprefix("body.")
    return "cls_token" if name == "reg_token" else name


def _build_features(
    model_name: str,
    path: Path | None,
    probe: nn.Module | None,
    output_stride: int,
    out_indices: tuple[int, ...] | None,
    drop_path_rate: float,
    layer_decay: float,
) -> TimmFeatureBackbone:
    levels: list[dict[str, Any]] = list(getattr(probe, "feature_info", None) or [])
    if out_indices is None:
        # The finest level at stride >= 4 and the last one: (1, 4) on five-level CNNs.
        finest = next((i for i, level in enumerate(levels) if level["reduction"] >= 4), 1)
        out_indices = (finest, len(levels) - 1) if levels else (1, 4)
    if levels:
        strides = ", ".join(str(level["reduction"]) for level in levels)
        _check_indices(
            out_indices,
            list(range(len(levels))),
            f"{model_name} has feature levels 0 to {len(levels) - 1} (strides {strides})",
        )
    kwargs: dict[str, Any] = {"features_only": True, "out_indices": tuple(out_indices)}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate  # not every model takes the argument
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    meta_kwargs: dict[str, Any] = {}
    input_multiple = None
    config = getattr(probe, "pretrained_cfg", None) or {}
    if config.get("fixed_input_size"):
        # Transformers built for one size (Swin) take others once told not to insist.
        refused = _refused_argument(model_name, strict_img_size=False)
        if refused is not None:
            raise ParameterError(
                "model_name",
                f"{model_name} takes images of one size only, {config.get('input_size')}",
                "segmentation crops and whole-image evaluation need varying sizes: use a CNN, "
                "ConvNeXt, Swin or a plain ViT",
            ) from refused
        kwargs["strict_img_size"] = meta_kwargs["strict_img_size"] = False
        patch = getattr(getattr(probe, "patch_embed", None), "patch_size", None)
        input_multiple = int(patch[0]) if patch is not None else int(levels[0]["reduction"])
    try:
        model = _create(model_name, path, meta_kwargs, **kwargs)
    except TypeError as error:
        if "output_stride" in str(error):
            raise ParameterError(
                "output_stride", f"{model_name} cannot trade strides for dilation", "use 32"
            ) from error
        raise
    config = getattr(model, "pretrained_cfg", None) or {}
    backbone = TimmFeatureBackbone(
        model,
        config.get("mean", DEFAULT_MEAN),
        config.get("std", DEFAULT_STD),
        input_multiple,
    )
    if layer_decay != 1.0:
        if probe is None or not hasattr(probe, "group_matcher"):
            raise ParameterError(
                "layer_decay", f"timm does not say how {model_name}'s layers are ordered", "use 1.0"
            )
        backbone._lr_scales = layer_decay_scales(
            (name for name, _ in backbone.named_parameters()),
            probe,
            layer_decay,
            rename=lambda name: _translated_name(name.removeprefix("body."), model),
        )
    return backbone
