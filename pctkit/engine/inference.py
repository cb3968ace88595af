"""Trained networks back from their files: rebuilt through the registry, ready to predict.

A run's ``*_net.safetensors`` and an export bundle's ``model.safetensors`` carry the
``[model]`` section that built them; :func:`rebuild_net` builds it again and loads the
weights. :class:`Predictor` turns images into masks the way the run's evaluation does.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import ValidationError
from torch import nn

from pctkit.artifacts.bundle import Bundle, ExportError, choose_role
from pctkit.artifacts.models import WeightsFileError, load_weights, read_metadata, without_initial_weights
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.engine.build import build_net
from pctkit.engine.evaluation import SlidingWindow, class_aware_or_plain
from pctkit.engine.model import multi_scale_logits
from pctkit.recipe.schema import Model


def rebuild_net(model_section: dict[str, Any], num_classes: int, weights: Path) -> nn.Module:
    """The network a ``[model]`` section describes, with ``weights`` loaded, in eval mode.

    Keys that only choose initial weights (``pretrained``) are dropped: the saved
    weights replace them, and the file they name need not exist where the net is used.
    """
    try:
        model = Model.model_validate(without_initial_weights(model_section))
    except ValidationError as error:
        raise WeightsFileError(f"{weights}: its [model] section cannot build a net: {error}") from None
    net = build_net(model, num_classes)
    load_weights(net, weights)
    return net.eval()


def net_from_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network from a file written by :func:`save_net` alone; returns it (in
    eval mode) with the file's metadata."""
    metadata = read_metadata(path)
    if "model" not in metadata or "class_names" not in metadata:
        raise WeightsFileError(
            f"{path} was not written by pctkit (no model section or class names in its header)"
        )
    net = rebuild_net(metadata["model"], len(metadata["class_names"]), path)
    return net, metadata


@dataclass
class Predictor:
    """A network with what it takes to turn RGB images into class masks.

    Attributes:
        net: images in [0, 1] ``(N, 3, H, W)`` -> logits ``(N, C, H, W)``, eval mode.
        class_names: one per class, background first.
        evaluation: the ``[evaluation]`` settings (``scales``, ``flip``, ``mode``,
            ``window``, ``stride``) applied at prediction time.
        palette: class colours for masks, or ``None`` for the VOC colour map.
        metadata: the weights file's decoded header.
    """

    net: nn.Module
    class_names: list[str]
    evaluation: dict[str, Any] = field(default_factory=dict)
    palette: list[tuple[int, int, int]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the net's parameters are."""
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Predictor:
        """Move the net; returns ``self``."""
        self.net.to(device)
        return self

    def class_index(self, label: str | int) -> int:
        """A class index from a class name, or from an index (int, or text that is not a
        class name: digit scenes name their classes "0", "1", ..., and names win)."""
        name = str(label).strip()
        if not isinstance(label, int) and name in self.class_names:
            return self.class_names.index(name)
        if isinstance(label, int) or name.isdigit():
            index = int(name)
            if not 0 <= index < len(self.class_names):
                raise ValueError(f"class index {index} is outside 0..{len(self.class_names) - 1}")
            return index
        close = difflib.get_close_matches(name, self.class_names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown class {name!r}{hint}; classes: {', '.join(self.class_names)}")

    def sliding_window(self) -> tuple[int, int] | None:
        """``(window, stride)`` when the evaluation settings predict in windows."""
        if self.evaluation.get("mode") == "sliding":
            return int(self.evaluation["window"]), int(self.evaluation["stride"])
        return None

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of float images in [0, 1], averaged over the test-time scales/flips."""
        predictor: nn.Module = self.net
        window = self.sliding_window()
        if window is not None:
            predictor = SlidingWindow(self.net, *window)
        scales = tuple(self.evaluation.get("scales", (1.0,)))
        return multi_scale_logits(predictor, images, scales, bool(self.evaluation.get("flip", False)))

    def predict(
        self, image: npt.NDArray[np.uint8], image_labels: Sequence[int] | None = None
    ) -> npt.NDArray[np.uint8]:
        """The class mask ``(H, W)`` of one RGB image ``(H, W, 3)`` uint8.

        With ``image_labels`` (class indices; background is always added) the
        prediction is class-aware: the argmax over those classes only.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        images = tensor.to(self.device).float() / 255
        logits = self.logits(images)
        labels = None
        if image_labels is not None:
            labels = torch.zeros(1, len(self.class_names), device=logits.device)
            labels[0, [0, *image_labels]] = 1.0
        mask: npt.NDArray[np.uint8] = class_aware_or_plain(logits, labels)[0].to(torch.uint8).cpu().numpy()
        return mask


def load_bundle(bundle_dir: Path, device: torch.device | str = "cpu") -> Predictor:
    """A :class:`Predictor` from a bundle folder alone."""
    bundle = Bundle(bundle_dir)
    if not bundle.is_bundle():
        raise ExportError(f"{bundle_dir} is not a pctkit bundle (needs {Bundle.WEIGHTS} and {Bundle.RECIPE})")
    metadata = _checked_metadata(bundle.weights)
    recipe = bundle.read_recipe()
    class_names = list(metadata["class_names"])
    net = rebuild_net(recipe["model"], len(class_names), bundle.weights).to(device)
    return Predictor(net, class_names, recipe.get("evaluation", {}), _palette(metadata), metadata)


def load_run_net(run_dir: Path, role: str | None = None, device: torch.device | str = "cpu") -> Predictor:
    """A :class:`Predictor` for one net of a run directory (default: see :func:`choose_role`),
    with the run's evaluation settings."""
    role = choose_role(run_dir, role)
    run = RunDirectory(run_dir)
    weights = run.net_weights(role)
    metadata = _checked_metadata(weights)
    class_names = list(metadata["class_names"])
    net = rebuild_net(metadata["model"], len(class_names), weights).to(device)
    return Predictor(net, class_names, run.read_recipe().get("evaluation", {}), _palette(metadata), metadata)


def _checked_metadata(weights: Path) -> dict[str, Any]:
    """A weights file's metadata, with the keys a net is rebuilt from."""
    metadata = read_metadata(weights)
    missing = [key for key in ("class_names", "model") if key not in metadata]
    if missing:
        raise WeightsFileError(
            f"{weights} has no {' and no '.join(missing)} in its header: not written by pctkit"
        )
    return metadata


def load_predictor(
    source: str | Path, net: str | None = None, device: torch.device | str = "cpu"
) -> Predictor:
    """A :class:`Predictor` from an exported bundle folder, one net of a run directory
    (``net``: its role; default: see :func:`choose_role`), or a weights file written by
    pctkit (a run's ``*_net.safetensors``, a bundle's ``model.safetensors``).

    Raises:
        ExportError: ``source`` is none of these, or ``net`` is given for a bundle or file.
        WeightsFileError: the weights are missing, damaged, or do not fit their network.
    """
    path = Path(source)
    run = RunDirectory(path)
    if not path.exists():
        if path.suffix == ".safetensors":
            raise WeightsFileError(f"{path}: the file is missing")
        raise ExportError(f"{path}: no such file or folder")
    if run.lost_recipe_json():
        raise ExportError(run.lost_recipe_message())
    if net is not None and not run.holds_run():
        raise ExportError(f"{path} holds one net; choosing a net (--net) applies to run directories")
    if path.is_file():
        model, metadata = net_from_file(path)
        return Predictor(
            model.to(device), list(metadata["class_names"]), _beside(path), _palette(metadata), metadata
        )
    if Bundle(path).is_bundle():
        return load_bundle(path, device)
    if run.holds_run():
        return load_run_net(path, net, device)
    raise ExportError(
        f"{path} is neither a bundle ({Bundle.WEIGHTS} + {Bundle.RECIPE}), a run directory "
        f"({RunDirectory.RECIPE_JSON}) nor a weights file"
    )


def _beside(weights: Path) -> dict[str, Any]:
    """The ``[evaluation]`` settings of the bundle or run a weights file lies in, or none."""
    folder = weights.parent
    if weights.name == Bundle.WEIGHTS and Bundle(folder).is_bundle():
        return dict(Bundle(folder).read_recipe().get("evaluation", {}))
    if RunDirectory(folder).holds_run():
        return dict(RunDirectory(folder).read_recipe().get("evaluation", {}))
    return {}


def load_model(source: str | Path, device: torch.device | str = "cpu", net: str | None = None) -> nn.Module:
    """A trained network, ready to use: an ``nn.Module`` in eval mode.

    ``source`` is an exported bundle folder, a run directory (``net`` chooses the role:
    ``"retrained"``, ``"hybrid"``, ...; default: the retrained net where there is one)
    or a weights file written by pctkit. The module takes RGB images scaled to [0, 1],
    ``(N, 3, H, W)`` float, and returns logits ``(N, C, H, W)``; normalisation happens
    inside. Class names and the palette are in the weights file's header
    (:func:`pctkit.artifacts.models.read_metadata`).

    Raises:
        WeightsFileError: the weights are missing, damaged (truncated, not safetensors,
            changed after writing) or do not fit the network their header describes.
        ExportError: ``source`` is none of the above.
    """
    return load_predictor(source, net, device).net


def _palette(metadata: dict[str, Any]) -> list[tuple[int, int, int]] | None:
    palette = metadata.get("palette")
    return [(int(r), int(g), int(b)) for r, g, b in palette] if palette else None
