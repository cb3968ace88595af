"""What a run did, from its files: a summary, and the plots that show whether cross
training is working.

Everything is read from the run directory (``recipe.json``, ``progress.json``,
``metrics.jsonl``, ``results.json``), so a report can be made of a finished run, of
one still training, or of one that crashed. The plots need matplotlib (the ``plots``
extra); it is imported only when they are drawn, and without the pyplot state
machine, so drawing changes nothing in the caller's matplotlib set-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pctkit.artifacts.checkpoints import Checkpoints
from pctkit.artifacts.io import ArtifactError
from pctkit.artifacts.models import WeightsFileError, read_tensors
from pctkit.artifacts.run_dir import TRAINING_STAGES, Progress, RunDirectory, RunDirectoryError

DIAGNOSTICS = ("mean_w",)
"""Logged terms that are not losses: plotted with the dynamic evaluation, not the losses."""


class ReportError(ArtifactError):
    """The folder is not a run directory, or its files cannot be read."""


class PlotError(RuntimeError):
    """The plots cannot be drawn (matplotlib is missing)."""


@dataclass
class StageSummary:
    """One stage of a run.

    Attributes:
        iterations: planned iterations (training stages), else ``None``.
        iterations_done: iterations trained so far (from the log and checkpoints).
        best_metric / best_value / best_iteration: the stage's best validation score.
        final_loss: the last logged total loss.
    """

    name: str
    iterations: int | None = None
    iterations_done: int = 0
    seconds: float | None = None
    best_metric: str = ""
    best_value: float = float("nan")
    best_iteration: int = 0
    final_loss: float | None = None


@dataclass
class RunSummary:
    """A run at a glance; ``records`` are its metrics, one per (stage, iteration, kind)."""

    run_dir: Path
    name: str
    mode: str
    """The stage-1 method."""
    completed: list[str]
    stages: list[StageSummary]
    results: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Files that could not be read, and what is unknown because of it."""


def _selected(record: dict[str, Any]) -> float | None:
    """The score a validation record picks the best checkpoint by."""
    net, _, metric = str(record.get("selects", "")).partition(".")
    value = record.get("nets", {}).get(net, {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def summarize_run(run_dir: Path) -> RunSummary:
    """Read a run directory into a :class:`RunSummary`."""
    run = RunDirectory(run_dir)
    try:
        recipe = run.read_recipe()
        results = run.read_results()
    except RunDirectoryError as error:
        raise ReportError(str(error)) from None
    problems = []
    try:
        progress = run.read_progress()
    except RunDirectoryError as error:  # which stages are complete, and their times
        problems.append(f"{error}: stage completion and times are unknown")
        progress = Progress()
    for role in run.finished_roles():  # read whole, checked against their checksums
        try:
            read_tensors(run.net_weights(role))
        except WeightsFileError as error:
            problems.append(
                f"{error}. `pctkit resume {run_dir}` writes it again from its stage's last checkpoint"
            )
    records = run.read_records()
    checkpoints = Checkpoints(run)
    method = str(recipe.get("method", {}).get("type", "?"))
    planned = {
        "cross_training": int(recipe["cross_training"]["iterations"]),
        "retraining": int(recipe["retrain"]["iterations"]),
    }
    stage_names = ["cross_training"]
    if recipe["retrain"].get("enabled", True):
        stage_names += ["pseudo_labels", "retraining"]
    stage_names.append("evaluation")

    stages = []
    for name in stage_names:
        summary = StageSummary(name, seconds=progress.seconds.get(name))
        if name in TRAINING_STAGES:
            summary.iterations = planned[name]
            trained = [r for r in records if r.get("stage") == name and r["kind"] == "train"]
            done = max((int(r["iteration"]) for r in trained), default=0)
            summary.iterations_done = (
                planned[name] if progress.done(name) else max(done, checkpoints.newest_iteration(name))
            )
            if trained:
                summary.final_loss = float(max(trained, key=lambda r: r["iteration"])["terms"]["loss"])
            scored = [
                (score, int(r["iteration"]), str(r["selects"]))
                for r in records
                if r.get("stage") == name
                and r["kind"] == "validation"
                and (score := _selected(r)) is not None
            ]
            if scored:
                # Highest score; the earliest iteration among equals, as the run keeps it.
                value, iteration, selects = max(scored, key=lambda item: (item[0], -item[1]))
                summary.best_metric, summary.best_value, summary.best_iteration = selects, value, iteration
        stages.append(summary)
    return RunSummary(
        run_dir=run_dir,
        name=str(recipe["experiment"]["name"]),
        mode=method,
        completed=list(progress.completed),
        stages=stages,
        results=results,
        records=records,
        problems=problems,
    )


# --------------------------------------------------------------------------- plots


def _figure(columns: int) -> Any:
    """A figure of ``columns`` side-by-side panels, drawn by the Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("the plots need matplotlib: pip install 'pctkit[plots]' (or --no-plots)") from None
    figure = Figure(figsize=(6.0 * columns, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _series(records: list[dict[str, Any]], stage: str, term: str) -> tuple[list[int], list[float]]:
    """A logged term of a stage's training records over iterations."""
    points = sorted(
        (int(r["iteration"]), float(r["terms"][term]))
        for r in records
        if r.get("stage") == stage and r["kind"] == "train" and term in r.get("terms", {})
    )
    return [p[0] for p in points], [p[1] for p in points]


def _terms(records: list[dict[str, Any]], stage: str) -> list[str]:
    """The loss terms a stage logged, in first-logged order, the total last."""
    names: dict[str, None] = {}
    for record in records:
        if record.get("stage") == stage and record["kind"] == "train":
            names.update(dict.fromkeys(t for t in record["terms"] if t not in DIAGNOSTICS and t != "loss"))
    return [*names, "loss"]


def _save(figure: Any, path: Path) -> Path:
    from io import BytesIO

    from pctkit.artifacts.io import atomic_write_bytes

    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_plots(run_dir: Path, out_dir: Path) -> list[Path]:
    """Draw the run's plots into ``out_dir``; returns the files written.

    - ``losses.png``: the loss terms of cross training, and retraining's loss;
    - ``dynamic_evaluation.png``: J per class and the mean weight w of weak images
      (PCT only): w near 0 means the pseudo-to-hybrid term has not engaged yet;
    - ``validation.png``: validation mIoU of each net over iterations.
    """
    summary = summarize_run(run_dir)
    records = summary.records
    class_names = (summary.results or {}).get("class_names") or _class_names(run_dir)
    written: list[Path] = []
    stages = [
        s for s in TRAINING_STAGES if any(r.get("stage") == s and r["kind"] == "train" for r in records)
    ]
    if not stages:
        raise ReportError(f"{run_dir} has no logged training iterations yet (metrics.jsonl)")

    figure = _figure(len(stages))
    for axes, stage in zip(figure.subplots(1, len(stages), squeeze=False)[0], stages, strict=True):
        terms = _terms(records, stage)
        if len(terms) == 2:  # a single term: the total would only hide it
            terms.remove("loss")
        for term in terms:
            iterations, values = _series(records, stage, term)
            if iterations:
                style = {"color": "black", "linewidth": 2.0} if term == "loss" else {"linewidth": 1.2}
                axes.plot(iterations, values, label=term, **style)
        axes.set(title=f"{stage.replace('_', ' ')}: loss terms", xlabel="iteration", ylabel="loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    written.append(_save(figure, out_dir / "losses.png"))

    with_scores = [r for r in records if r.get("stage") == "cross_training" and "J" in r.get("method", {})]
    if with_scores:
        figure = _figure(2)
        scores_axes, weight_axes = figure.subplots(1, 2)
        ordered = sorted(with_scores, key=lambda r: r["iteration"])
        iterations = [int(r["iteration"]) for r in ordered]
        count = len(ordered[0]["method"]["J"])
        # One colour per class: the default cycle repeats after ten (digits + background).
        from matplotlib import colormaps

        colours = (
            [colormaps["tab20"](i) for i in range(count)]
            if count <= 20
            else [colormaps["turbo"](i / (count - 1)) for i in range(count)]
        )
        for index in range(count):
            name = class_names[index] if index < len(class_names) else str(index)
            scores_axes.plot(
                iterations,
                [r["method"]["J"][index] for r in ordered],
                label=name,
                linewidth=1.2,
                color=colours[index],
            )
        scores_axes.set(
            title="dynamic evaluation: J per class (pseudo net)", xlabel="iteration", ylabel="J", ylim=(0, 1)
        )
        scores_axes.grid(alpha=0.3)
        scores_axes.legend(fontsize="x-small", ncol=2 if len(class_names) > 8 else 1)
        w_iterations, w_values = _series(records, "cross_training", "mean_w")
        weight_axes.plot(w_iterations, [max(v, 1e-30) for v in w_values], color="tab:purple")
        weight_axes.set_yscale("log")
        weight_axes.set(
            title="mean weight w = (min J)^γ of weak images", xlabel="iteration", ylabel="mean w (log)"
        )
        weight_axes.grid(alpha=0.3, which="both")
        written.append(_save(figure, out_dir / "dynamic_evaluation.png"))

    validated = [
        s for s in TRAINING_STAGES if any(r.get("stage") == s and r["kind"] == "validation" for r in records)
    ]
    if validated:
        figure = _figure(len(validated))
        for axes, stage in zip(figure.subplots(1, len(validated), squeeze=False)[0], validated, strict=True):
            evaluations = sorted(
                (r for r in records if r.get("stage") == stage and r["kind"] == "validation"),
                key=lambda r: r["iteration"],
            )
            nets = list(dict.fromkeys(net for r in evaluations for net in r["nets"]))
            for net in nets:
                for metric, line_style, label in (
                    ("miou", "-", "plain"),
                    ("miou_with_labels", "--", "with labels"),
                ):
                    points = [
                        (r["iteration"], r["nets"][net][metric]) for r in evaluations if net in r["nets"]
                    ]
                    # One colour per net; dashed: class-aware (with image labels).
                    axes.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        color=f"C{nets.index(net)}",
                        marker="o",
                        markersize=3,
                        linestyle=line_style,
                        label=f"{net} ({label})",
                    )
            axes.set(title=f"{stage.replace('_', ' ')}: validation mIoU", xlabel="iteration", ylabel="mIoU")
            axes.set_ylim(bottom=0)
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
        written.append(_save(figure, out_dir / "validation.png"))
    return written


def _class_names(run_dir: Path) -> list[str]:
    """Class names from a saved net's header, when the run has no results yet."""
    from pctkit.artifacts.models import read_metadata

    run = RunDirectory(run_dir)
    for role in run.roles():
        return list(read_metadata(run.net_weights(role)).get("class_names", []))
    return []
