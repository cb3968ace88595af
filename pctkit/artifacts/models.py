"""Network weights as safetensors, with the metadata needed to use them alone.

Every reader names the file and the problem when it cannot use it
(:class:`WeightsFileError`): a missing file, a truncated or foreign one, tensors that do
not fit the network, or tensors damaged after writing: each file carries a SHA-256 of
its tensors (:data:`CHECKSUM_KEY`), checked on every read. A truncated file fails to
parse; a flipped bit inside a tensor would load silently without the checksum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pctkit.artifacts.io import ArtifactError, save_tensors
from pctkit.state_dicts import mismatch
from pctkit.version import __version__

if TYPE_CHECKING:
    from torch import Tensor, nn

NET_FORMAT = "pctkit.net.v1"
CHECKSUM_KEY = "tensors_sha256"
"""Metadata key of the SHA-256 of a weights file's tensors (:func:`tensors_digest`).
Files without it (written by earlier versions) are read unchecked."""


class WeightsFileError(ArtifactError):
    """A weights file that cannot be used: missing, damaged, or for another network."""


def tensors_digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the
    same for the same tensors, whatever the file layout."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
    mean_buffer: Any = getattr(net, "mean", None)
    std_buffer: Any = getattr(net, "std", None)
    mean = [float(v) for v in mean_buffer.flatten()] if mean_buffer is not None else []
    std = [float(v) for v in std_buffer.flatten()] if std_buffer is not None else []
    metadata = {
        "format": NET_FORMAT,
        "pctkit_version": __version__,
        "role": role,
        "class_names": json.dumps(class_names),
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "model": json.dumps(model_section),
    }
    for key, value in (extra or {}).items():
        metadata[key] = json.dumps(value)
    tensors = net.state_dict()
    metadata[CHECKSUM_KEY] = tensors_digest(tensors)
    save_tensors(path, tensors, metadata)


def _problem(path: Path, error: BaseException) -> WeightsFileError:
    """The error of a safetensors file that cannot be read, in words."""
    if not path.exists():
        return WeightsFileError(f"{path}: the file is missing")
    text = str(error)
    if "header" in text.lower() or "incomplete" in text.lower() or "deserial" in text.lower():
        reason = f"not a complete safetensors file (truncated or damaged: {text})"
    else:
        reason = f"cannot be read ({type(error).__name__}: {text})"
    return WeightsFileError(f"{path}: {reason}")


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata header of a file written by :func:`save_net`.

    Raises:
        WeightsFileError: the file is missing, truncated or not safetensors.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:  # safetensors raises several kinds for broken files
        raise _problem(path, error) from None
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        if key == CHECKSUM_KEY:
            decoded[key] = value
            continue
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    return decoded


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, on the CPU, checked against the checksum
    in its metadata where it has one.

    Raises:
        WeightsFileError: the file is missing, truncated or not safetensors, or its
            tensors differ from the checksum written with them.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            recorded = (handle.metadata() or {}).get(CHECKSUM_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise _problem(path, error) from None
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise WeightsFileError(
            f"{path}: its tensors do not match the checksum written with them: the file was "
            "damaged after it was written (an interrupted or faulty copy, a failing disk). "
            "Restore it from a copy"
        )
    return tensors


def load_weights(net: nn.Module, path: Path) -> None:
    """Load weights saved by :func:`save_net` into the plain network ``net``.

    Raises:
        WeightsFileError: the file cannot be read, or its tensors do not fit ``net``
            (the first few missing, unexpected or differently shaped ones are named).
    """
    tensors = read_tensors(path)
    expected = {name: tuple(value.shape) for name, value in net.state_dict().items()}
    problems = mismatch(
        expected, {name: tuple(value.shape) for name, value in tensors.items()}, expected_in="the network"
    )
    if problems:
        raise WeightsFileError(
            f"{path}: its tensors do not fit the network its [model] section builds: {problems}"
        )
    net.load_state_dict(tensors)


def without_initial_weights(model_section: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``[model]`` section without its components' ``pretrained*`` keys."""
    cleaned = json.loads(json.dumps(model_section))
    for part in ("backbone", "head"):
        component = cleaned.get(part)
        if isinstance(component, dict):
            for key in [k for k in component if k.startswith("pretrained")]:
                del component[key]
    return dict(cleaned)
