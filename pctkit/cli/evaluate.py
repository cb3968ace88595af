"""``pctkit eval``: mIoU of a run's net or a bundle on a validation split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pctkit.artifacts.run_dir import RunDirectory
from pctkit.cli.app import (
    DeviceOption,
    LogFormatOption,
    NetOption,
    QuietOption,
    SetOption,
    UserError,
    console,
    errors,
    log_format,
    recipe_path,
)
from pctkit.cli.predict import load_predictor
from pctkit.recipe import load_recipe

_DATA_OPTION = "--data RECIPE (a recipe file, a built-in recipe or a run directory)"


def _data_recipe(target: Path, data: str | None) -> Path:
    """The recipe whose ``[data]`` to evaluate on: ``--data``, else the run's own."""
    if data is not None:
        candidate = Path(data)
        if candidate.is_dir():
            if not RunDirectory(candidate).recipe_toml.is_file():
                raise UserError(
                    f"--data {data}: a folder must be a run directory (with {RunDirectory.RECIPE_TOML})"
                )
            return RunDirectory(candidate).recipe_toml
        return recipe_path(data)
    run = RunDirectory(target.parent if target.is_file() else target)  # a run's weights file: its run
    if run.holds_run():
        if run.recipe_toml.is_file():
            return run.recipe_toml
        raise UserError(
            f"{run.recipe_toml} is missing: it is the run's recipe, which names the data to "
            f"evaluate on. Name the data with {_DATA_OPTION}."
        )
    kind = "a weights file" if target.is_file() else "a bundle"
    raise UserError(f"{target} is {kind}: it holds no dataset. Name one with {_DATA_OPTION}.")


def evaluate_command(
    target: Annotated[Path, typer.Argument(help="A run directory, a bundle, or a weights file.")],
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
    log_format_name: LogFormatOption = "auto",
) -> None:
    """mIoU (plain and with image labels) and per-class IoU on a validation split.

    --set changes the data recipe (data.num_val=100, data.root=/data/voc); evaluation.*
    keys change how masks are predicted (evaluation.scales=[0.75,1.0,1.25]).
    """
    from pctkit.engine.build import build_data
    from pctkit.engine.evaluation import evaluate
    from pctkit.engine.reporting import Reporter
    from pctkit.recipe.text import parse_override

    predictor = load_predictor(target, net, device)
    data_recipe = _data_recipe(target, data)
    recipe = load_recipe(data_recipe, overrides or [])
    settings = dict(predictor.evaluation)
    for override in overrides or []:
        path, _ = parse_override(override)
        if path[0] == "evaluation":
            settings[path[-1]] = recipe.evaluation.model_dump(mode="json")[path[-1]]
    predictor.evaluation = settings
    role = str(predictor.metadata.get("role", "?"))
    postprocess = _postprocess(settings, role)
    dataset = build_data(recipe)
    if dataset.class_names != predictor.class_names:
        raise UserError(
            f"the data's classes ({', '.join(dataset.class_names)}) are not the net's "
            f"({', '.join(predictor.class_names)})"
        )
    reporter = Reporter(errors, enabled=not quiet and not as_json, log_format=log_format(log_format_name))
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
            postprocess=postprocess,
            postprocess_workers=int(settings.get("postprocess_workers", 0)),
        )
    summary = result.summary()
    if as_json:
        document = {"target": str(target), "net": role, "data": str(data_recipe), "images": len(dataset.val)}
        console.print_json(json.dumps({**document, **summary}))
        return
    table = Table(
        title=f"{role} net on {len(dataset.val)} images of {recipe.data.type}", title_justify="left"
    )
    table.add_column("class", no_wrap=True)
    table.add_column("IoU plain", justify="right")
    table.add_column("IoU with image labels", justify="right")
    refined = "iou_postprocessed" in summary
    if refined:
        table.add_column(f"IoU plain + {postprocess_name(settings)}", justify="right")
    for name in dataset.class_names:
        cells = [_cell(summary["iou"][name]), _cell(summary["iou_with_labels"][name])]
        table.add_row(name, *cells, *([_cell(summary["iou_postprocessed"][name])] if refined else []))
    table.add_section()
    totals = [
        summary["miou"],
        summary["miou_with_labels"],
        *([summary["miou_postprocessed"]] if refined else []),
    ]
    table.add_row("[bold]mIoU[/]", *(f"[bold]{value:.4f}[/]" for value in totals))
    console.print(table)
    console.print(f"pixel accuracy {summary['pixel_accuracy']:.4f}", highlight=False)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _postprocess(settings: dict[str, Any], role: str) -> Any:
    """The post-processing the evaluation settings ask for this net (``None`` if none)."""
    spec = settings.get("postprocess")
    if not spec or role not in settings.get("postprocess_nets", ("retrained",)):
        return None
    from pctkit.engine.build import build_component
    from pctkit.recipe.schema import ComponentSpec

    return build_component("postprocess", ComponentSpec.model_validate(spec))


def postprocess_name(settings: dict[str, Any]) -> str:
    """The post-processing's component name, for column titles."""
    spec = settings.get("postprocess") or {}
    return str(spec.get("type", "postprocess"))
