"""Network weights as safetensors with the metadata needed to use them alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from pctkit import __version__
from pctkit.artifacts.io import load_tensors, save_tensors


def save_net(
    path: Path,
    net: nn.Module,
    *,
    role: str,
    class_names: list[str],
    model_section: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a network's weights with a metadata header: class names, normalisation,
    the ``[model]`` recipe section that builds it, and the pctkit version.

    ``extra`` entries (palette, input size, ...) are stored JSON-encoded beside them.
    ``net`` is the plain network: the caller unwraps DDP and ``torch.compile``.
    """
    inner = net
    mean_buffer: Any = getattr(inner, "mean", None)
    std_buffer: Any = getattr(inner, "std", None)
    mean = [float(v) for v in mean_buffer.flatten()] if mean_buffer is not None else []
    std = [float(v) for v in std_buffer.flatten()] if std_buffer is not None else []
    metadata = {
        "format": "pctkit.net.v1",
        "pctkit_version": __version__,
        "role": role,
        "class_names": json.dumps(class_names),
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "model": json.dumps(model_section),
    }
    for key, value in (extra or {}).items():
        metadata[key] = json.dumps(value)
    save_tensors(path, inner.state_dict(), metadata)


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata header of a file written by :func:`save_net`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded


def load_weights(net: nn.Module, path: Path) -> None:
    """Load weights saved by :func:`save_net` into the plain network ``net`` (strict)."""
    net.load_state_dict(load_tensors(path))


def without_initial_weights(model_section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``[model]`` section without its components' ``pretrained*`` keys."""
    cleaned = json.loads(json.dumps(model_section))
    for part in ("backbone", "head"):
        component = cleaned.get(part)
        if isinstance(component, dict):
            for key in [k for k in component if k.startswith("pretrained")]:
                del component[key]
    return dict(cleaned)
