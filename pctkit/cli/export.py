"""``pctkit export``: a trained net as a self-contained bundle."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pctkit.cli.app import NetOption, console


class ExportFormat(str, Enum):
    """What ``pctkit export`` writes beside the safetensors weights."""

    safetensors = "safetensors"
    onnx = "onnx"


def export(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.")],
    out: Annotated[Path | None, typer.Option(help="Bundle folder (default: RUN_DIR/export/NET).")] = None,
    net: NetOption = None,
    export_format: Annotated[
        ExportFormat,
        typer.Option("--format", help="'onnx' adds model.onnx (needs the onnx extra)."),
    ] = ExportFormat.safetensors,
) -> None:
    """Write a self-contained bundle of a trained net: weights with metadata, the model
    recipe, a model card (README.md), optionally ONNX."""
    from pctkit.artifacts.bundle import Bundle, choose_role, export_bundle, export_onnx, input_size
    from pctkit.artifacts.run_dir import RunDirectory
    from pctkit.engine.inference import load_bundle, net_from_file

    role = choose_role(run_dir, net)
    target = out or RunDirectory(run_dir).export(role)
    # Rebuilt once before anything is written: weights that do not fit the network their
    # header describes are refused here, not when someone loads the bundle.
    net_from_file(RunDirectory(run_dir).net_weights(role))
    export_bundle(run_dir, target, role)
    if export_format is ExportFormat.onnx:
        # Traced from the bundle alone: the ONNX graph is what load_model rebuilds.
        predictor = load_bundle(target)
        export_onnx(predictor.net, Bundle(target).onnx, input_size(predictor.metadata))
    console.print(f"[bold green]exported[/] the {role} net to [cyan]{escape(str(target))}[/]")
    for path in sorted(target.iterdir()):
        if not path.name.startswith("."):
            console.print(f"  {escape(path.name)}", highlight=False)
    console.print(f'load it with: pctkit.load_model("{escape(str(target))}")', highlight=False)
