"""``pctkit report``: what a run did, from its files, with plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pctkit.cli.app import UserError, console, errors

if TYPE_CHECKING:
    from pctkit.artifacts.report import RunSummary


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
        soft_wrap=True,
    )
    for problem in summary.problems:
        errors.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)
    stages = Table(title="Stages", title_justify="left")
    for column in ("stage", "iterations", "time", "best validation", "final training loss"):
        # Fold, never cut: a metric name such as hybrid.miou_with_labels stays whole.
        stages.add_column(column, justify="left" if column == "stage" else "right", overflow="fold")
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
    final.add_column("class", no_wrap=True)
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


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
