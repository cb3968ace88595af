"""``pctkit predict``: masks and overlays for images, from a bundle or a run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from pctkit.cli.app import (
    DeviceOption,
    LogFormatOption,
    NetOption,
    QuietOption,
    UserError,
    console,
    errors,
    log_format,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pctkit.engine.inference import Predictor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def load_predictor(target: Path, net: str | None, device: str) -> Predictor:
    """A bundle, one net of a run directory, or a weights file, on ``device``."""
    from pctkit.artifacts.bundle import ExportError
    from pctkit.engine import inference
    from pctkit.engine.build import resolve_device

    try:
        resolved = resolve_device(device)
    except RuntimeError as error:
        raise UserError(str(error)) from None
    try:
        return inference.load_predictor(target, net, resolved)
    except ExportError as error:
        raise UserError(str(error)) from None


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


def predict(
    target: Annotated[
        Path, typer.Argument(help="A bundle (pctkit export), a run directory, or a weights file.")
    ],
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
    log_format_name: LogFormatOption = "auto",
) -> None:
    """Segment images: palette PNG masks (VOC format) in OUT/masks, colour overlays in
    OUT/overlays. An unreadable image is reported and skipped; the exit code is then 1."""
    from pctkit.engine.reporting import Reporter
    from pctkit.palette import save_palette_png

    predictor = load_predictor(target, net, device)
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
    reporter = Reporter(errors, enabled=not quiet, log_format=log_format(log_format_name))
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
                    soft_wrap=True,
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
