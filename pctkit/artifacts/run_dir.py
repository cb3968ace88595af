"""The run directory: every path, file name and record type of a run, in one place.

No other module spells a run file's name: writers and readers go through
:class:`RunDirectory`. A run directory holds

============================  ===========================================================
``recipe.toml``               the resolved recipe, every default spelled out
``recipe.json``               the same, as validated JSON (what ``resume`` compares)
``progress.json``             completed stages, seconds and peak memory per stage
``environment.json``          versions of pctkit, torch, timm and each component's package
``metrics.jsonl``             one record per line (:data:`Record`)
``results.json``              final mIoU of every net, pseudo-label quality, time
``<role>_net.safetensors``    final weights of each net, with metadata
``pseudo_labels/``            palette PNGs of the weak images
``predictions.png``           validation pictures
``checkpoints/``              resumable training state (:mod:`pctkit.artifacts.checkpoints`)
``tensorboard/``              event files, where tensorboard is installed
``report/``                   ``pctkit report``'s plots
``export/``                   ``pctkit export``'s bundles
``.lock``                     held by the one process that writes the run
============================  ===========================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from pctkit.artifacts.io import ArtifactError, append_jsonl, atomic_write_json, atomic_write_text

RUN_STAGES = ("cross_training", "pseudo_labels", "retraining", "evaluation")
"""The stages of a run, in order."""
TRAINING_STAGES = ("cross_training", "retraining")
RETRAINED = "retrained"
"""The role of stage 2's net."""


class RunDirectoryError(ArtifactError):
    """A folder is not a run directory, or one of its files cannot be read; the message
    names the file and says what is wrong."""


# --------------------------------------------------------------------------- records


class NetScores(TypedDict):
    """mIoU of one net, plain and with image labels."""

    miou: float
    miou_with_labels: float


class TrainingRecord(TypedDict, total=False):
    """Means over one log interval of a training stage."""

    kind: Literal["train"]
    stage: str
    iteration: int
    time: float
    terms: dict[str, float]
    """Loss terms (``loss`` is their weighted sum) and diagnostics such as ``mean_w``."""
    lr: dict[str, float]
    """The learning rate (first parameter group) of each net's optimizer."""
    seconds_per_iteration: float
    peak_memory_gib: float
    method: dict[str, Any]
    """What the method logs beyond its terms (PCT: ``J`` per class)."""
    skipped_steps: int
    """Steps of the interval skipped for a non-finite loss (``experiment.skip_nonfinite``)."""


class ValidationRecord(TypedDict):
    """A validation during a training stage."""

    kind: Literal["validation"]
    stage: str
    iteration: int
    time: float
    nets: dict[str, NetScores]
    selects: str
    """``<net>.<metric>``: the score that picks the stage's best checkpoint."""


class SkippedRecord(TypedDict):
    """A step skipped for a non-finite loss (``experiment.skip_nonfinite``)."""

    kind: Literal["skipped"]
    stage: str
    iteration: int
    time: float


class PseudoLabelRecord(TypedDict):
    """The pseudo labels: how many, and their mIoU against hidden masks (if known)."""

    kind: Literal["pseudo_labels"]
    stage: str
    time: float
    images: int
    miou: float | None


class EvaluationRecord(TypedDict):
    """The final evaluation of every net."""

    kind: Literal["evaluation"]
    stage: str
    time: float
    nets: dict[str, NetScores]


Record = TrainingRecord | ValidationRecord | SkippedRecord | PseudoLabelRecord | EvaluationRecord
RECORD_KINDS = ("train", "validation", "skipped", "pseudo_labels", "evaluation")


@dataclass
class Progress:
    """Which stages of a run are complete, and what each cost (``progress.json``)."""

    completed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per stage, summed over the run and its resumptions."""
    peak_memory_gib: dict[str, float] = field(default_factory=dict)
    """Peak memory per stage: device memory on GPUs, resident memory on CPUs."""
    memory_kind: str = ""

    def done(self, stage: str) -> bool:
        """Whether ``stage`` is complete."""
        return stage in self.completed

    def to_json(self) -> dict[str, Any]:
        """The ``progress.json`` document."""
        return {
            "completed": self.completed,
            "seconds": self.seconds,
            "peak_memory_gib": self.peak_memory_gib,
            "memory_kind": self.memory_kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        """Read a ``progress.json`` document."""
        peaks = {
            k: float(v) for k, v in data.get("peak_memory_gib", {}).items() if isinstance(v, int | float)
        }
        return cls(
            completed=list(data.get("completed", [])),
            seconds={k: float(v) for k, v in data.get("seconds", {}).items()},
            peak_memory_gib=peaks,
            memory_kind=str(data.get("memory_kind", "")),
        )


# --------------------------------------------------------------------------- the directory


class RunDirectory:
    """The files of one run, by purpose."""

    RECIPE_TOML = "recipe.toml"
    RECIPE_JSON = "recipe.json"
    PROGRESS = "progress.json"
    ENVIRONMENT = "environment.json"
    METRICS = "metrics.jsonl"
    RESULTS = "results.json"
    PREDICTIONS = "predictions.png"
    PSEUDO_LABELS = "pseudo_labels"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "tensorboard"
    REPORT = "report"
    EXPORT = "export"
    LOCK = ".lock"
    NET_SUFFIX = "_net.safetensors"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ---------------------------------------------------------------- paths

    @property
    def recipe_toml(self) -> Path:
        """The resolved recipe, as TOML (re-run it with ``pctkit run``)."""
        return self.path / self.RECIPE_TOML

    @property
    def recipe_json(self) -> Path:
        """The resolved recipe, as JSON."""
        return self.path / self.RECIPE_JSON

    @property
    def progress_file(self) -> Path:
        return self.path / self.PROGRESS

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def results_file(self) -> Path:
        return self.path / self.RESULTS

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def pseudo_labels(self) -> Path:
        return self.path / self.PSEUDO_LABELS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def lock_file(self) -> Path:
        return self.path / self.LOCK

    def export(self, role: str) -> Path:
        """The default bundle folder of one net."""
        return self.path / self.EXPORT / role

    def net_weights(self, role: str) -> Path:
        """The final weights of the net of ``role``."""
        return self.path / f"{role}{self.NET_SUFFIX}"

    def roles(self) -> list[str]:
        """The nets whose final weights the run holds: the retrained net first, then
        the stage-1 nets in the order the method made them (the labeller first)."""
        found = {p.name.removesuffix(self.NET_SUFFIX) for p in self.path.glob(f"*{self.NET_SUFFIX}")}
        order = [RETRAINED, *self._stage_one_roles()]
        return [r for r in order if r in found] + sorted(found - set(order))

    def finished_roles(self) -> list[str]:
        """The nets whose stages ``progress.json`` marks complete, in the order of
        :meth:`roles`, whether or not their files are still there."""
        try:
            progress = self.read_progress_json()
        except RunDirectoryError:
            return []
        completed = progress.get("completed", [])
        finished = [RETRAINED] if "retraining" in completed else []
        return finished + (list(progress.get("nets", [])) if "cross_training" in completed else [])

    def _stage_one_roles(self) -> list[str]:
        try:
            return list(self.read_progress_json().get("nets", []))
        except RunDirectoryError:
            return []

    def holds_run(self) -> bool:
        """Whether the folder holds a run (its resolved recipe)."""
        return self.recipe_json.is_file()

    def recipe_json_problem(self) -> str | None:
        """Why ``recipe.json`` cannot be read (missing, damaged), or ``None``."""
        if not self.recipe_json.is_file():
            return f"{self.recipe_json} is missing"
        try:
            self._read_json(self.recipe_json)
        except RunDirectoryError as error:
            return str(error)
        return None

    def lost_recipe_json(self) -> bool:
        """Whether the folder is a run whose ``recipe.json`` is missing or damaged while
        its ``recipe.toml`` (the same resolved recipe) is there: ``resume`` writes the
        JSON again from it."""
        started = any(
            path.exists()
            for path in (self.progress_file, self.metrics_file, self.checkpoints, self.recipe_json)
        )
        return started and self.recipe_toml.is_file() and self.recipe_json_problem() is not None

    def write_recipe_json(self, data: dict[str, Any]) -> None:
        """Write ``recipe.json`` alone (restored from ``recipe.toml`` on resume)."""
        atomic_write_json(self.recipe_json, data)

    # ---------------------------------------------------------------- readers and writers

    def write_recipe(self, toml_text: str, data: dict[str, Any]) -> None:
        """Write the resolved recipe (TOML for people, JSON for ``resume``)."""
        atomic_write_text(self.recipe_toml, toml_text)
        atomic_write_json(self.recipe_json, data)

    def write_environment(self, data: dict[str, Any]) -> None:
        """Write ``environment.json`` (what the run was made with)."""
        atomic_write_json(self.path / self.ENVIRONMENT, data)

    def read_environment(self) -> dict[str, Any] | None:
        """``environment.json``, or ``None`` when absent or unreadable (runs of pctkit
        before 0.2 have none)."""
        try:
            return dict(self._read_json(self.path / self.ENVIRONMENT))
        except RunDirectoryError:
            return None

    def write_recipe_toml(self, toml_text: str) -> None:
        """Write ``recipe.toml`` alone (restored from ``recipe.json`` on resume)."""
        atomic_write_text(self.recipe_toml, toml_text)

    def read_recipe(self) -> dict[str, Any]:
        """The resolved recipe the run was started with."""
        try:
            return dict(self._read_json(self.recipe_json))
        except RunDirectoryError:  # what is wrong, and what to do, only when it fails
            if self.lost_recipe_json():
                raise RunDirectoryError(self.lost_recipe_message()) from None
            if not self.holds_run():
                raise RunDirectoryError(f"{self.path} holds no run (no {self.RECIPE_JSON})") from None
            raise

    def lost_recipe_message(self) -> str:
        """What is wrong with ``recipe.json``, and the command that writes it again."""
        return (
            f"{self.recipe_json_problem()}. `pctkit resume {self.path}` writes it again from "
            f"{self.recipe_toml} (and does nothing more when the run is complete)"
        )

    def read_progress_json(self) -> dict[str, Any]:
        if not self.progress_file.is_file():
            return {}
        return dict(self._read_json(self.progress_file))

    def read_progress(self) -> Progress:
        """The run's progress (empty when no stage has finished yet)."""
        return Progress.from_json(self.read_progress_json())

    def write_progress(self, progress: Progress, nets: list[str]) -> None:
        """Write ``progress.json``; ``nets`` are the stage-1 roles, the labeller first."""
        atomic_write_json(self.progress_file, {**progress.to_json(), "nets": nets})

    def append_record(self, record: Record) -> None:
        """Append one metrics record (flushed to disk: records survive a crash)."""
        append_jsonl(self.metrics_file, dict(record))

    def read_records(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``; when a resumed run logged an iteration again,
        the later record wins. A torn line (a crash mid-write) is skipped."""
        if not self.metrics_file.is_file():
            return []
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get("kind") not in RECORD_KINDS:
                continue
            latest[(record.get("stage"), record.get("iteration"), record["kind"])] = record
        return list(latest.values())

    def write_results(self, results: dict[str, Any]) -> None:
        """Write ``results.json``."""
        atomic_write_json(self.results_file, results)

    def read_results(self) -> dict[str, Any] | None:
        """``results.json``, or ``None`` before the final evaluation."""
        if not self.results_file.is_file():
            return None
        return dict(self._read_json(self.results_file))

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise RunDirectoryError(f"cannot read {path}: {error.strerror or error}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunDirectoryError(f"{path} is damaged: not JSON ({error})") from None
