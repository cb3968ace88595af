"""Commands around a run: ``resume``, ``export``, ``predict``, ``eval`` and ``report``.

They register on the app of :mod:`pctkit.cli.main`, which imports this module last.
Heavy imports (torch, the engine) happen inside the commands, so ``pctkit --help``
stays quick.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pctkit.cli.main import SetOption, UserError, app, console, errors, resolve_recipe, run

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pctkit.artifacts.report import RunSummary
    from pctkit.engine.inference import Predictor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

NetOption = Annotated[
    str | None,
    typer.Option(
        "--net",
        help="Which net of a run: retrained, hybrid, pseudo or supervised "
        "(default: retrained where the run has one).",
    ),
]
DeviceOption = Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")]
QuietOption = Annotated[bool, typer.Option(help="No progress bar.")]


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    nproc: Annotated[int, typer.Option(help="Launch this many workers with torchrun (DDP).")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Continue an interrupted run from its latest checkpoint, with its own recipe."""
    recipe_file = run_dir / "recipe.toml"
    if not recipe_file.is_file():
        raise UserError(f"cannot resume: {run_dir} holds no run (no recipe.toml)")
    run(str(recipe_file), overrides=None, out=None, overwrite=False, resume=run_dir, nproc=nproc, quiet=quiet)


# --------------------------------------------------------------------------- export


class ExportFormat(str, Enum):
    """What ``pctkit export`` writes beside the safetensors weights."""

    safetensors = "safetensors"
    onnx = "onnx"


@app.command()
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
    from pctkit.artifacts.export import (
        ONNX_FILE,
        ExportError,
        choose_role,
        export_bundle,
        export_onnx,
        input_size,
    )
    from pctkit.engine.inference import load_bundle

    try:
        role = choose_role(run_dir, net)
        target = out or run_dir / "export" / role
        export_bundle(run_dir, target, role)
        if export_format is ExportFormat.onnx:
            # Traced from the bundle alone: the ONNX graph is what load_model rebuilds.
            predictor = load_bundle(target)
            export_onnx(predictor.net, target / ONNX_FILE, input_size(predictor.metadata))
    except ExportError as error:
        raise UserError(str(error)) from None
    console.print(f"[bold green]exported[/] the {role} net to [cyan]{escape(str(target))}[/]")
    for path in sorted(target.iterdir()):
        if not path.name.startswith("."):
            console.print(f"  {escape(path.name)}", highlight=False)
    console.print(f'load it with: pctkit.load_model("{escape(str(target))}")', highlight=False)


def _predictor(target: Path, net: str | None, device: str) -> Predictor:
    """A bundle, or one net of a run directory, on ``device``."""
    from pctkit.artifacts.export import ExportError, is_bundle
    from pctkit.engine.build import resolve_device
    from pctkit.engine.inference import load_bundle, load_run_net

    try:
        resolved = resolve_device(device)
    except RuntimeError as error:
        raise UserError(str(error)) from None
    try:
        if is_bundle(target):
            if net is not None:
                raise UserError(f"{target} is a bundle of one net; --net applies to run directories")
            return load_bundle(target, resolved)
        if (target / "recipe.json").is_file():
            return load_run_net(target, net, resolved)
    except (ExportError, ValueError) as error:  # not a bundle; a [model] that no longer builds
        raise UserError(str(error)) from None
    raise UserError(f"{target} is neither a bundle (model.safetensors + recipe.toml) nor a run directory")


# --------------------------------------------------------------------------- predict


def image_files(inputs: list[Path]) -> list[Path]:
    """The files named, and the images inside the folders named (sorted, not recursive)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            files.append(item)
        else:
            raise UserError(f"no such file or folder: {item}")
    return files


def label_lookup(spec: str | None, predictor: Predictor) -> Callable[[Path], list[int] | None]:
    """Image labels per image from ``--image-labels`` (see :func:`predict`)."""
    if spec is None:
        return lambda path: None

    def indices(labels: Any, where: str) -> list[int]:
        items = labels.split(",") if isinstance(labels, str) else labels
        if not isinstance(items, list):
            raise UserError(f"{where}: image labels must be a list of class names or indices")
        try:
            return sorted({predictor.class_index(item) for item in items if str(item).strip()})
        except ValueError as error:
            raise UserError(f"{where}: {error}") from None

    path = Path(spec)
    if not (path.suffix.lower() == ".json" or path.is_file()):
        shared = indices(spec, "--image-labels")
        return lambda image: shared
    if not path.is_file():
        raise UserError(f"--image-labels: no such file {path}")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"--image-labels: cannot read {path}: {error}") from None
    if not isinstance(table, dict):
        raise UserError(f"--image-labels: {path} must hold a JSON object: image name -> list of classes")
    parsed = {str(name): indices(labels, f"{path}: {name}") for name, labels in table.items()}
    return lambda image: parsed.get(image.name, parsed.get(image.stem))


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as RGB uint8 ``(H, W, 3)``."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def overlay(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8], colors: list[tuple[int, int, int]] | None
) -> npt.NDArray[np.uint8]:
    """The image with each non-background pixel blended half-way to its class colour."""
    import numpy as np

    from pctkit.palette import colorize

    blended = image.astype(np.float32)
    foreground = mask != 0
    blended[foreground] = 0.5 * blended[foreground] + 0.5 * colorize(mask, colors)[foreground]
    return blended.round().astype(np.uint8)


@app.command()
def predict(
    target: Annotated[Path, typer.Argument(help="A bundle (pctkit export), or a run directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    out: Annotated[Path, typer.Option(help="Output folder: masks/ and overlays/ go in it.")],
    image_labels: Annotated[
        str | None,
        typer.Option(
            "--image-labels",
            help="Predict class-aware, among the classes each image contains (background is always "
            "added). Either classes for every image, comma-separated names or indices "
            "('cat,dog' or '8,12'), or a JSON file mapping image file names (or stems) to lists "
            'of classes: {"a.jpg": ["cat"], "b": [8, 12]}; images it does not list are predicted '
            "plainly. Class names take precedence over indices.",
        ),
    ] = None,
    net: NetOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Segment images: palette PNG masks (VOC format) in OUT/masks, colour overlays in
    OUT/overlays. An unreadable image is reported and skipped; the exit code is then 1."""
    from pctkit.engine.reporting import Reporter
    from pctkit.palette import save_palette_png

    predictor = _predictor(target, net, device)
    files = image_files(inputs)
    if not files:
        raise UserError("no images found in " + ", ".join(str(i) for i in inputs))
    stems = [path.stem for path in files]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise UserError(f"several inputs would write the same mask: {', '.join(duplicates)}")
    labels_of = label_lookup(image_labels, predictor)
    failures: list[tuple[Path, str]] = []
    unlabelled = 0
    reporter = Reporter(errors, enabled=not quiet)
    from PIL import Image

    with reporter.task("predict", len(files)) as (advance, describe):
        for path in files:
            describe(path.name)
            try:
                image = read_rgb(path)
            except Exception as error:  # PIL raises many kinds for broken files
                failures.append((path, f"{type(error).__name__}: {error}"))
                errors.print(
                    f"[yellow]skipped[/] {escape(str(path))}: cannot read it ({escape(str(error))})",
                    highlight=False,
                )
                advance(1)
                continue
            labels = labels_of(path)
            unlabelled += image_labels is not None and labels is None
            mask = predictor.predict(image, labels)
            save_palette_png(mask, out / "masks" / f"{path.stem}.png", predictor.palette)
            (out / "overlays").mkdir(parents=True, exist_ok=True)
            Image.fromarray(overlay(image, mask, predictor.palette)).save(
                out / "overlays" / f"{path.stem}.png"
            )
            advance(1)
    written = len(files) - len(failures)
    console.print(f"wrote {written} mask(s) and overlay(s) to [cyan]{escape(str(out))}[/]", highlight=False)
    if unlabelled:
        console.print(
            f"{unlabelled} image(s) had no entry in {escape(str(image_labels))}: predicted without labels"
        )
    if failures:
        errors.print(f"[bold red]{len(failures)} of {len(files)} image(s) could not be read:[/]")
        for path, reason in failures:
            errors.print(f"  {escape(str(path))}: {escape(reason)}", highlight=False)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- eval


def _data_recipe(target: Path, data: str | None) -> Path:
    """The recipe whose ``[data]`` to evaluate on: ``--data``, else the run's own."""
    if data is not None:
        candidate = Path(data)
        if candidate.is_dir():
            if not (candidate / "recipe.toml").is_file():
                raise UserError(f"--data {data}: a folder must be a run directory (with recipe.toml)")
            return candidate / "recipe.toml"
        return resolve_recipe(data)
    if (target / "recipe.json").is_file() and (target / "recipe.toml").is_file():
        return target / "recipe.toml"
    raise UserError(
        f"{target} is a bundle: it holds no dataset. Name one with --data RECIPE (a recipe file, "
        "a built-in recipe or a run directory)."
    )


@app.command("eval")
def evaluate_command(
    target: Annotated[Path, typer.Argument(help="A run directory or a bundle.")],
    data: Annotated[
        str | None,
        typer.Option(
            help="Recipe file, built-in recipe or run directory whose \\[data] section to evaluate on "
            "(default: the run's own; required for a bundle)."
        ),
    ] = None,
    net: NetOption = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """mIoU (plain and with image labels) and per-class IoU on a validation split.

    --set changes the data recipe (data.num_val=100, data.root=/data/voc); evaluation.*
    keys change how masks are predicted (evaluation.scales=[0.75,1.0,1.25]).
    """
    from pctkit.engine.build import build_data
    from pctkit.engine.evaluation import evaluate
    from pctkit.engine.reporting import Reporter
    from pctkit.recipe import load_recipe
    from pctkit.recipe.loader import parse_override

    predictor = _predictor(target, net, device)
    recipe_path = _data_recipe(target, data)
    recipe = load_recipe(recipe_path, overrides or [])
    settings = dict(predictor.evaluation)
    for override in overrides or []:
        path, _ = parse_override(override)
        if path[0] == "evaluation":
            settings[path[-1]] = recipe.evaluation.model_dump(mode="json")[path[-1]]
    predictor.evaluation = settings
    dataset = build_data(recipe)
    if dataset.class_names != predictor.class_names:
        raise UserError(
            f"the data's classes ({', '.join(dataset.class_names)}) are not the net's "
            f"({', '.join(predictor.class_names)})"
        )
    reporter = Reporter(errors, enabled=not quiet and not as_json)
    with reporter.task("eval", len(dataset.val)) as (advance, _):
        result = evaluate(
            predictor.net,
            dataset.val,
            dataset.class_names,
            predictor.device,
            batch_size=int(settings.get("batch_size", 16)),
            scales=tuple(settings.get("scales", (1.0,))),
            flip=bool(settings.get("flip", False)),
            sliding_window=predictor.sliding_window(),
            progress=advance,
        )
    summary = result.summary()
    role = predictor.metadata.get("role", "?")
    if as_json:
        document = {"target": str(target), "net": role, "data": str(recipe_path), "images": len(dataset.val)}
        console.print_json(json.dumps({**document, **summary}))
        return
    table = Table(
        title=f"{role} net on {len(dataset.val)} images of {recipe.data.type}", title_justify="left"
    )
    table.add_column("class")
    table.add_column("IoU plain", justify="right")
    table.add_column("IoU with image labels", justify="right")
    for name in dataset.class_names:
        table.add_row(name, _cell(summary["iou"][name]), _cell(summary["iou_with_labels"][name]))
    table.add_section()
    table.add_row(
        "[bold]mIoU[/]", f"[bold]{summary['miou']:.4f}[/]", f"[bold]{summary['miou_with_labels']:.4f}[/]"
    )
    console.print(table)
    console.print(f"pixel accuracy {summary['pixel_accuracy']:.4f}", highlight=False)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------- report


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.")],
    out: Annotated[Path | None, typer.Option(help="Folder of the plots (default: RUN_DIR/report).")] = None,
    plots: Annotated[bool, typer.Option(help="Write PNG plots (needs matplotlib).")] = True,
) -> None:
    """Summarise a run: stages, iterations, best and final mIoU, per-class IoU, time;
    and plot loss terms, J per class, mean w and validation mIoU over iterations."""
    from pctkit.artifacts.report import PlotError, ReportError, summarize_run, write_plots

    try:
        summary = summarize_run(run_dir)
    except ReportError as error:
        raise UserError(str(error)) from None
    _print_summary(summary)
    if not plots:
        return
    try:
        written = write_plots(run_dir, out or run_dir / "report")
    except PlotError as error:
        raise UserError(str(error)) from None
    for path in written:
        console.print(f"  plot: [cyan]{escape(str(path))}[/]", highlight=False)


def _print_summary(summary: RunSummary) -> None:
    """The terminal part of ``pctkit report``."""
    console.print(
        f"[bold]{escape(summary.name)}[/] ({summary.mode}) in [cyan]{escape(str(summary.run_dir))}[/]: "
        + (", ".join(summary.completed) + " complete" if summary.completed else "no stage complete"),
        highlight=False,
    )
    stages = Table(title="Stages", title_justify="left")
    for column in ("stage", "iterations", "time", "best validation", "final training loss"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for stage in summary.stages:
        stages.add_row(
            stage.name,
            f"{stage.iterations_done}/{stage.iterations}" if stage.iterations else "-",
            _duration(stage.seconds),
            f"{stage.best_metric} {stage.best_value:.4f} @ {stage.best_iteration}"
            if stage.best_metric
            else "-",
            f"{stage.final_loss:.4f}" if stage.final_loss is not None else "-",
        )
    console.print(stages)
    if summary.results is None:
        console.print("no results.json yet: the run has not finished its evaluation")
        return
    nets = summary.results["nets"]
    final = Table(title="Final validation mIoU", title_justify="left")
    final.add_column("class")
    for role in nets:
        final.add_column(f"{role}", justify="right")
        final.add_column(f"{role} (labels)", justify="right")
    for name in summary.results["class_names"]:
        cells = []
        for role in nets:
            cells += [_cell(nets[role]["iou"].get(name)), _cell(nets[role]["iou_with_labels"].get(name))]
        final.add_row(name, *cells)
    final.add_section()
    cells = []
    for role in nets:
        cells += [f"[bold]{nets[role]['miou']:.4f}[/]", f"[bold]{nets[role]['miou_with_labels']:.4f}[/]"]
    final.add_row("[bold]mIoU[/]", *cells)
    console.print(final)
    quality = summary.results.get("pseudo_labels")
    if quality and quality.get("miou") is not None:
        console.print(
            f"pseudo labels: {quality['images']} images, mIoU against hidden masks {quality['miou']:.4f}"
        )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
