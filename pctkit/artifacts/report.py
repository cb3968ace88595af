"""What a run did, from its files: a summary, and the plots that show whether cross
training is working.

Everything is read from the run directory (``recipe.json``, ``progress.json``,
``metrics.jsonl``, ``results.json``), so a report can be made of a finished run, of
one still training, or of one that crashed. The plots need matplotlib (the ``plots``
extra); it is imported only when they are drawn, and without the pyplot state
machine, so drawing changes nothing in the caller's matplotlib set-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINING_STAGES = ("cross_training", "retraining")
LOSS_TERMS = ("loss_strong", "loss_cls", "loss_h2p", "loss_p2h", "loss_ce", "loss")


class ReportError(ValueError):
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
    completed: list[str]
    stages: list[StageSummary]
    results: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; when a resumed run logged an iteration again,
    the later record wins. A torn last line (a crash mid-write) is skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = (
            "validation"
            if "validation" in record
            else "skipped"
            if "skipped_nonfinite" in record
            else "train"
        )
        latest[(record.get("stage"), record.get("iteration"), kind)] = record
    return list(latest.values())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"cannot read {path}: {error}") from None


def best_metric_of(stage: str, mode: str) -> str:
    """The validation metric a stage keeps its best checkpoint by (as the run does)."""
    if stage == "retraining":
        return "retrained_miou"
    return "supervised_miou" if mode == "supervised" else "hybrid_miou_with_labels"


def summarize_run(run_dir: Path) -> RunSummary:
    """Read a run directory into a :class:`RunSummary`."""
    if not (run_dir / "recipe.json").is_file():
        raise ReportError(f"{run_dir} holds no run (no recipe.json)")
    recipe = _read_json(run_dir / "recipe.json")
    progress = _read_json(run_dir / "progress.json") if (run_dir / "progress.json").is_file() else {}
    results = _read_json(run_dir / "results.json") if (run_dir / "results.json").is_file() else None
    records = read_metrics(run_dir)
    completed = list(progress.get("completed", []))
    seconds = progress.get("seconds", {})
    mode = recipe["cross_training"].get("mode", "pct")
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
        summary = StageSummary(name, seconds=seconds.get(name))
        if name in TRAINING_STAGES:
            summary.iterations = planned[name]
            trained = [r for r in records if r.get("stage") == name and "loss" in r]
            done = max((int(r["iteration"]) for r in trained), default=0)
            summary.iterations_done = (
                planned[name] if name in completed else max(done, _checkpointed(run_dir, name))
            )
            if trained:
                summary.final_loss = float(max(trained, key=lambda r: r["iteration"])["loss"])
            metric = best_metric_of(name, mode)
            scored = [
                (float(r["validation"][metric]), int(r["iteration"]))
                for r in records
                if r.get("stage") == name and metric in r.get("validation", {})
            ]
            if scored:
                # Highest score; the earliest iteration among equals, as the run keeps it.
                value, iteration = max(scored, key=lambda item: (item[0], -item[1]))
                summary.best_metric, summary.best_value, summary.best_iteration = metric, value, iteration
        stages.append(summary)
    return RunSummary(
        run_dir=run_dir,
        name=str(recipe["experiment"]["name"]),
        mode=mode,
        completed=completed,
        stages=stages,
        results=results,
        records=records,
    )


def _checkpointed(run_dir: Path, stage: str) -> int:
    """The iteration of a stage's newest complete checkpoint (0 if none)."""
    newest = 0
    for folder in (run_dir / "checkpoints").glob(f"{stage}-0*"):
        if (folder / "state.json").is_file():
            newest = max(newest, int(folder.name.rsplit("-", 1)[1]))
    return newest


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


def _series(records: list[dict[str, Any]], stage: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (int(r["iteration"]), float(r[key])) for r in records if r.get("stage") == stage and key in r
    )
    return [p[0] for p in points], [p[1] for p in points]


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
    stages = [s for s in TRAINING_STAGES if any(r.get("stage") == s and "loss" in r for r in records)]
    if not stages:
        raise ReportError(f"{run_dir} has no logged training iterations yet (metrics.jsonl)")

    figure = _figure(len(stages))
    for axes, stage in zip(figure.subplots(1, len(stages), squeeze=False)[0], stages, strict=True):
        terms = [term for term in LOSS_TERMS if _series(records, stage, term)[0]]
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

    with_scores = [r for r in records if r.get("stage") == "cross_training" and "J" in r]
    if with_scores:
        figure = _figure(2)
        scores_axes, weight_axes = figure.subplots(1, 2)
        ordered = sorted(with_scores, key=lambda r: r["iteration"])
        iterations = [int(r["iteration"]) for r in ordered]
        count = len(ordered[0]["J"])
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
                iterations, [r["J"][index] for r in ordered], label=name, linewidth=1.2, color=colours[index]
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
        s for s in TRAINING_STAGES if any(r.get("stage") == s and "validation" in r for r in records)
    ]
    if validated:
        figure = _figure(len(validated))
        for axes, stage in zip(figure.subplots(1, len(validated), squeeze=False)[0], validated, strict=True):
            evaluations = sorted(
                (r for r in records if r.get("stage") == stage and "validation" in r),
                key=lambda r: r["iteration"],
            )
            metrics = sorted({key for r in evaluations for key in r["validation"]})
            nets = sorted({metric.split("_miou")[0] for metric in metrics})
            for metric in metrics:
                points = [
                    (r["iteration"], r["validation"][metric])
                    for r in evaluations
                    if metric in r["validation"]
                ]
                net = metric.split("_miou")[0]
                with_labels = "with_labels" in metric
                # One colour per net; dashed: class-aware (with image labels).
                axes.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=f"C{nets.index(net)}",
                    marker="o",
                    markersize=3,
                    linestyle="--" if with_labels else "-",
                    label=f"{net} (with labels)" if with_labels else f"{net} (plain)",
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

    for path in sorted(run_dir.glob("*_net.safetensors")):
        return list(read_metadata(path).get("class_names", []))
    return []


# --------------------------------------------------------------------------- TensorBoard


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write event files) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_scalars(record: dict[str, Any], class_names: list[str] | None = None) -> dict[str, float]:
    """The scalars of one metrics record, by TensorBoard tag (``stage/name``)."""
    stage = str(record.get("stage", "run"))
    scalars: dict[str, float] = {}

    def add(tag: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[tag] = float(value)

    for key, value in record.items():
        if key in ("time", "stage", "iteration"):
            continue
        if key == "J" and isinstance(value, list):
            for index, score in enumerate(value):
                name = class_names[index] if class_names and index < len(class_names) else str(index)
                add(f"{stage}/J/{name}", score)
        elif isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, dict):  # final results: net -> metrics
                    for metric, score in inner.items():
                        add(f"{stage}/{key}/{name}/{metric}", score)
                else:
                    add(f"{stage}/{key}/{name}", inner)
        else:
            add(f"{stage}/{key}", value)
    return scalars


class TensorBoardLog:
    """Writes metrics records as TensorBoard event files (``tensorboard --logdir``).

    Create it with :meth:`open` only where :func:`tensorboard_available`; every record
    is flushed at once, so the event files are as current as ``metrics.jsonl``.
    """

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    @classmethod
    def open(cls, log_dir: Path) -> TensorBoardLog | None:
        """A log in ``log_dir``, or ``None`` without the tensorboard package."""
        return cls(log_dir) if tensorboard_available() else None

    def write(self, record: dict[str, Any], class_names: list[str] | None = None) -> None:
        """Add one record's scalars at its iteration (0 for records without one)."""
        step = int(record.get("iteration", 0))
        walltime = record.get("time")
        for tag, value in tensorboard_scalars(record, class_names).items():
            self.writer.add_scalar(tag, value, step, walltime=walltime)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
