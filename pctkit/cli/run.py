"""``pctkit run`` and ``pctkit resume``: train, on one process or under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pctkit.artifacts.run_dir import RunDirectory
from pctkit.cli.app import (
    LogFormatOption,
    NprocOption,
    QuietOption,
    SetOption,
    UserError,
    console,
    errors,
    log_format,
    read_recipe,
)


def run(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in recipe name.")],
    overrides: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: the recipe's experiment.output_dir / experiment.name)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    nproc: NprocOption = 1,
    quiet: QuietOption = False,
    log_format_name: LogFormatOption = "auto",
) -> None:
    """Train: cross training, pseudo labels, retraining, evaluation."""
    style = log_format(log_format_name)
    if nproc > 1:
        arguments = ["run", recipe, *_set_arguments(overrides)]
        arguments += ["--out", str(out)] if out is not None else []
        arguments += ["--overwrite"] if overwrite else []
        arguments += ["--resume", str(resume)] if resume is not None else []
        arguments += ["--quiet"] if quiet else []
        launch_workers(nproc, [*arguments, "--log-format", style])
    from pctkit.engine.reporting import Reporter
    from pctkit.engine.run import run as run_recipe

    _, parsed = read_recipe(recipe, overrides, show_notes=_is_main_process())
    run_dir = resume or out or Path(parsed.experiment.output_dir) / parsed.experiment.name
    outcome = run_recipe(
        parsed,
        run_dir,
        resume=resume is not None,
        overwrite=overwrite,
        reporter=Reporter(errors, enabled=not quiet, log_format=style),
    )
    if outcome.world.is_main:
        show_results(outcome.results, run_dir)


def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    overrides: SetOption = None,
    nproc: NprocOption = 1,
    quiet: QuietOption = False,
    log_format_name: LogFormatOption = "auto",
) -> None:
    """Continue an interrupted run from its newest intact checkpoint, with its own recipe.

    --set may change only what a resume may change: reporting keys, and locations such
    as data.root for data staged elsewhere (checked to be the run's own data)."""
    style = log_format(log_format_name)
    if nproc > 1:
        launch_workers(
            nproc,
            [
                "resume",
                str(run_dir),
                *_set_arguments(overrides),
                *(["--quiet"] if quiet else []),
                "--log-format",
                style,
            ],
        )
    from pctkit.engine.reporting import Reporter
    from pctkit.engine.run import resume as resume_run

    outcome = resume_run(
        run_dir, reporter=Reporter(errors, enabled=not quiet, log_format=style), overrides=overrides
    )
    if outcome.world.is_main:
        show_results(outcome.results, run_dir)


def _set_arguments(overrides: list[str] | None) -> list[str]:
    return [part for override in overrides or [] for part in ("--set", override)]


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def launch_workers(nproc: int, arguments: list[str]) -> None:
    """Run ``pctkit ARGUMENTS`` in ``nproc`` workers through ``torch.distributed.run``
    (torchrun); exits with its exit code.

    torchrun runs in a session of its own, and this process passes SIGINT and SIGTERM
    on to it: each worker then gets a signal exactly once (from torchrun), checkpoints
    and stops, instead of once from the terminal and again from torchrun.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise UserError("--nproc launches torchrun; under torchrun already, leave it out")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "pctkit",
        *arguments,
    ]
    errors.print(f"[dim]launching: {escape(' '.join(command))}[/]", soft_wrap=True)
    process = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
    forwarded: list[int] = []

    def forward(signal_number: int, frame: object) -> None:
        forwarded.append(signal_number)
        process.send_signal(signal_number)

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, forward)
    code = process.wait()
    # torchrun reports the signal as its own failure (exit 1); say "interrupted" as a
    # single-process run does.
    raise typer.Exit(130 if forwarded and code else code)


def show_results(results: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run table: mIoU of each net, plain and with image labels."""
    table = Table(title="Validation mIoU", title_justify="left")
    table.add_column("net", no_wrap=True)
    table.add_column("plain", justify="right")
    table.add_column("with image labels", justify="right")
    refined = any("miou_postprocessed" in summary for summary in results["nets"].values())
    if refined:
        table.add_column("plain, post-processed", justify="right")
    for role, summary in results["nets"].items():
        cells = [f"{summary['miou']:.4f}", f"{summary['miou_with_labels']:.4f}"]
        if refined:
            value = summary.get("miou_postprocessed")
            cells.append("-" if value is None else f"{value:.4f}")
        table.add_row(role, *cells)
    console.print(table)
    quality = results.get("pseudo_labels")
    if quality and quality.get("miou") is not None:
        console.print(
            f"pseudo labels: {quality['images']} images, mIoU against hidden masks {quality['miou']:.4f}"
        )
    seconds = results.get("seconds", {})
    if seconds:
        console.print(
            "time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()),
            highlight=False,
            soft_wrap=True,
        )
    peaks = results.get("peak_memory_gib", {})
    if peaks:
        kind = results.get("memory_kind") or "memory"
        console.print(
            f"peak {kind}: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in peaks.items()),
            highlight=False,
            soft_wrap=True,
        )
    files = (
        RunDirectory.RECIPE_TOML,
        RunDirectory.METRICS,
        f"*{RunDirectory.NET_SUFFIX}",
        RunDirectory.PREDICTIONS,
    )
    console.print(f"outputs: [cyan]{escape(str(run_dir))}[/] ({', '.join(files)})", soft_wrap=True)
