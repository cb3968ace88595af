"""Export bundles: a trained network that travels without its run.

A bundle is a folder with

- ``model.safetensors``: the weights, and a metadata header with the class names, the
  normalisation (mean/std, applied inside the net), the input size the net was trained
  at, the palette, the net's role, the pctkit version and the run's ``environment.json``
  (package versions, each component's package);
- ``recipe.toml``: the ``[model]`` section that rebuilds the architecture through the
  registry, and the ``[evaluation]`` settings it was evaluated with (test-time scales,
  flips, sliding windows), which prediction reuses;
- ``README.md``: a model card with the run's evaluation table;
- ``model.onnx`` (optional): the same net as an ONNX graph, images in [0, 1] to logits.

:func:`pctkit.engine.inference.load_model` needs nothing else to rebuild the net. This
module writes and recognises bundles; building networks from them is the engine's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pctkit import tomlio
from pctkit.artifacts.io import ArtifactError, atomic_write_text, save_tensors
from pctkit.artifacts.models import (
    CHECKSUM_KEY,
    WeightsFileError,
    read_metadata,
    read_tensors,
    tensors_digest,
    without_initial_weights,
)
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.version import __version__

if TYPE_CHECKING:
    from torch import nn

BUNDLE_FORMAT = "pctkit.bundle.v1"


class ExportError(ArtifactError):
    """A run cannot be exported, or a folder is not a bundle."""


class Bundle:
    """The files of an export bundle."""

    WEIGHTS = "model.safetensors"
    RECIPE = "recipe.toml"
    README = "README.md"
    ONNX = "model.onnx"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def weights(self) -> Path:
        """The weights, with the metadata header."""
        return self.path / self.WEIGHTS

    @property
    def recipe(self) -> Path:
        """The ``[model]`` and ``[evaluation]`` sections."""
        return self.path / self.RECIPE

    @property
    def readme(self) -> Path:
        """The model card."""
        return self.path / self.README

    @property
    def onnx(self) -> Path:
        """The optional ONNX graph."""
        return self.path / self.ONNX

    def is_bundle(self) -> bool:
        """Whether the folder looks like a bundle (weights and recipe)."""
        return self.weights.is_file() and self.recipe.is_file()

    def read_recipe(self) -> dict[str, Any]:
        """The bundle's ``recipe.toml``.

        Raises:
            ExportError: it is missing, not TOML, or has no ``[model]`` section.
        """
        try:
            recipe = tomlio.loads(self.recipe.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomlio.TOMLDecodeError) as error:
            raise ExportError(f"{self.recipe}: cannot be read ({error})") from None
        if not isinstance(recipe.get("model"), dict):
            raise ExportError(f"{self.recipe} has no [model] section")
        return recipe


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` looks like a bundle (weights and recipe, no run progress)."""
    return Bundle(folder).is_bundle()


def choose_role(run_dir: Path, role: str | None) -> str:
    """``role`` if the run holds that net, else its first (the retrained net, else the
    stage-1 net that labels pseudo labels).

    Raises:
        WeightsFileError: no ``role`` is given and the file of the net a finished stage
            made first is missing: another net is not taken in its place unasked.
    """
    run = RunDirectory(run_dir)
    roles = run.roles()
    finished = run.finished_roles()
    if role is None and finished and finished[0] not in roles:
        others = f"; or choose another net with --net ({', '.join(roles)})" if roles else ""
        raise WeightsFileError(
            f"{run.net_weights(finished[0])}: the file is missing, although the run finished the stage "
            f"that writes it. Restore it from a copy{others}"
        )
    if not roles:
        raise ExportError(
            f"{run_dir} holds no trained net (*_net.safetensors): is it a run directory, "
            "and did its first stage finish?"
        )
    if role is None:
        return roles[0]
    if role not in roles:
        raise ExportError(f"{run_dir} has no {role} net; it has: {', '.join(roles)}")
    return role


# --------------------------------------------------------------------------- export


def export_bundle(run_dir: Path, out: Path, role: str | None = None) -> Path:
    """Write the bundle of one net of a run into ``out``; returns ``out``.

    Args:
        run_dir: a run directory (final weights, ``recipe.json``, ``results.json``).
        out: the bundle folder (created; files in it are replaced).
        role: ``retrained``, ``hybrid``, ``pseudo`` or ``supervised``; default: the
            retrained net where there is one.
    """
    role = choose_role(run_dir, role)
    run = RunDirectory(run_dir)
    recipe = run.read_recipe()
    source = run.net_weights(role)
    metadata = read_metadata(source)
    model_section = without_initial_weights(metadata["model"])
    evaluation = {k: v for k, v in recipe.get("evaluation", {}).items() if k != "num_pictures"}

    tensors = read_tensors(source)  # checked against its checksum
    header = {
        key: json.dumps(value) for key, value in metadata.items() if key not in ("format", CHECKSUM_KEY)
    }
    header[CHECKSUM_KEY] = tensors_digest(tensors)
    header.update(
        {
            "model": json.dumps(model_section),
            "source_run": str(run_dir.resolve()),
            "format": BUNDLE_FORMAT,
            "role": role,
            "pctkit_version": __version__,
            "trained_with": str(metadata.get("pctkit_version", "")),
            "experiment": str(recipe.get("experiment", {}).get("name", "")),
            "num_classes": str(len(metadata["class_names"])),
        }
    )
    trained_in = run.read_environment()  # package versions of the run and its components
    if trained_in is not None:
        header["environment"] = json.dumps(trained_in)
    bundle = Bundle(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(bundle.weights, tensors, header)
    recipe_header = (
        f"The {role} net of run {recipe.get('experiment', {}).get('name', '?')}: the [model] section "
        "rebuilds it\n(pctkit.load_model), [evaluation] says how its masks were predicted."
    )
    atomic_write_text(
        bundle.recipe, tomlio.dumps({"model": model_section, "evaluation": evaluation}, header=recipe_header)
    )
    atomic_write_text(
        bundle.readme, model_card(role, recipe, read_metadata(bundle.weights), run.read_results())
    )
    return out


def input_size(metadata: dict[str, Any]) -> tuple[int, int]:
    """The input size a net was trained at, from its metadata (64 x 64 if unknown)."""
    size = metadata.get("input_size") or [64, 64]
    return int(size[0]), int(size[1])


def export_onnx(net: nn.Module, path: Path, input_size: tuple[int, int]) -> None:
    """Write ``net`` as an ONNX graph: input ``images`` (N, 3, H, W) in [0, 1], output
    ``logits`` (N, C, H, W); batch, height and width are dynamic."""
    import torch

    backbone = getattr(net, "backbone", None)
    if getattr(backbone, "input_multiple", None):
        raise ExportError(
            "ONNX export does not support backbones that resize their input to a multiple of a "
            "patch size (ViTs): the traced graph would fix the patch grid. Use the safetensors "
            "bundle (pctkit.load_model) instead."
        )
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with a clear message first)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'pctkit[onnx]'") from None
    import warnings

    example = torch.rand(1, 3, *input_size, device=next(net.parameters()).device)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        # The tracer warns about shape comparisons it records as constants; the only
        # one (skipping an upsampling to the input size) is taken for every input size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (example,),
            str(temporary),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": dynamic, "logits": dynamic},
            opset_version=17,
        )
    temporary.replace(path)


# --------------------------------------------------------------------------- model card


def model_card(
    role: str, recipe: dict[str, Any], metadata: dict[str, Any], results: dict[str, Any] | None
) -> str:
    """The README of a bundle: what the net is, how to use it, how well it did."""
    name = recipe.get("experiment", {}).get("name", "pctkit model")
    class_names: list[str] = list(metadata["class_names"])
    model = metadata.get("model", {})
    backbone, head = model.get("backbone", {}), model.get("head", {})
    backbone_name = backbone.get("model_name", "")
    size = metadata.get("input_size")
    lines = [
        f"# {name}: {role} net",
        "",
        f"A semantic segmentation network trained with pctkit {metadata.get('trained_with') or __version__} "
        f"(progressive cross training, recipe `{name}`), exported as the **{role}** net.",
        "",
        f"- **Classes** ({len(class_names)}): {', '.join(class_names)}",
        f"- **Architecture**: backbone `{backbone.get('type', '?')}`"
        + (f" (`{backbone_name}`)" if backbone_name else "")
        + f", head `{head.get('type', '?')}`",
        "- **Input**: RGB images scaled to [0, 1], `(N, 3, H, W)` float; the normalisation "
        f"(mean {_rounded(metadata.get('mean'))}, std {_rounded(metadata.get('std'))}) is inside the net.",
        f"- **Trained at**: {size[0]} x {size[1]} pixels; any size works."
        if size
        else "- **Input size**: any.",
        "- **Output**: logits `(N, C, H, W)`; the mask is their argmax over classes.",
        f"- **Data**: `{recipe.get('data', {}).get('type', '?')}`",
        "",
        "## Use",
        "",
        "```python",
        "import pctkit",
        "",
        'net = pctkit.load_model("path/to/this/folder")  # nn.Module in eval mode',
        "logits = net(images)  # images: (N, 3, H, W) in [0, 1]",
        "mask = logits.argmax(1)",
        "```",
        "",
        "```",
        "pctkit predict path/to/this/folder images/ --out predictions/",
        "pctkit eval path/to/this/folder --data RECIPE_OR_RUN_DIR",
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if results is None or not results.get("nets"):
        lines.append("The run had not been evaluated when it was exported.")
    else:
        lines += [
            "mIoU on the validation split of the run, from its `results.json`. *Plain* is the "
            "argmax over all classes (the mode of a deployed model); *with image labels* restricts "
            "it to the classes each image contains (the mode in which the method reports its "
            "stage-1 nets).",
            "",
            "| net | mIoU plain | mIoU with image labels | pixel accuracy |",
            "|---|---|---|---|",
        ]
        for net_role, summary in results["nets"].items():
            marker = " (this bundle)" if net_role == role else ""
            lines.append(
                f"| {net_role}{marker} | {summary['miou']:.4f} | {summary['miou_with_labels']:.4f} "
                f"| {summary.get('pixel_accuracy', float('nan')):.4f} |"
            )
        own = results["nets"].get(role)
        if own is not None:
            lines += ["", f"Per-class IoU of the {role} net:", "", "| class | plain | with image labels |"]
            lines.append("|---|---|---|")
            for class_name in class_names:
                plain = own["iou"].get(class_name)
                labelled = own["iou_with_labels"].get(class_name)
                lines.append(f"| {class_name} | {_score(plain)} | {_score(labelled)} |")
    lines += ["", "## Files", "", f"- `{Bundle.WEIGHTS}`: weights; the header holds the metadata above."]
    lines.append(
        f"- `{Bundle.RECIPE}`: the `[model]` section that rebuilds the net, and its evaluation settings."
    )
    lines.append(f"- `{Bundle.ONNX}` (if exported): the same net as ONNX, input `images`, output `logits`.")
    return "\n".join(lines) + "\n"


def _rounded(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.3f}" for v in values or []) + "]"


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
