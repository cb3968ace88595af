"""What happens around each training step, one small object per concern.

:class:`Hooks` calls them after every step, in this order: the metrics window takes the
step's terms; the stop policy decides whether to stop; at every boundary (a log,
validation or checkpoint is due, a stop, the last step) the non-finite guard checks
that no loss went NaN/inf, so no checkpoint ever holds weights a bad step touched; then
the metrics record, the validation (with the best checkpoint), the periodic checkpoint,
and the stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pctkit.components.contracts import DataError
from pctkit.engine.distributed import (
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    broadcast_buffers,
    current_world,
)
from pctkit.engine.errors import NonFiniteLossError, TrainingInterrupted
from pctkit.engine.signals import StopRequest


@dataclass
class Step:
    """One finished iteration, as the hooks see it."""

    iteration: int
    """Iterations done, this one included."""
    terms: dict[str, Tensor]
    """The iteration's loss terms, detached, averaged over its micro-batches."""
    skipped: bool
    """A non-finite step whose update was dropped (``experiment.skip_nonfinite``)."""
    learning_rates: dict[str, float]
    last: bool
    stop: str | None = None
    """Why the run stops after this step (a signal, or the testing aid), or ``None``."""


def stacked(terms: dict[str, Tensor]) -> Tensor:
    """A step's scalar terms as one fp32 vector, in the dict's order."""
    return torch.stack([value.float().reshape(()) for value in terms.values()])


@dataclass
class NonFiniteGuard:
    """Finds non-finite loss terms without a host sync per step.

    Each step's finiteness is folded into a per-term "first bad iteration" on the
    device; :meth:`check` reads it at boundaries. With ``skip`` the decision is needed
    at once (one sync per step) and a bad step's update is dropped instead.
    """

    stage: str
    skip: bool
    log: Callable[[dict[str, Any]], None]
    never: int
    names: list[str] = field(default_factory=list)
    first_bad: Tensor | None = None

    def observe(self, terms: dict[str, Tensor], iteration: int) -> bool:
        """Fold one step in; returns whether to skip its update."""
        self.names = list(terms)
        finite = torch.isfinite(stacked(terms))
        if self.skip:
            bad = all_reduce_sum((~finite).any().float().reshape(1))
            skipped = bool(bad.item() > 0)
            if skipped:
                self.log({"kind": "skipped", "stage": self.stage, "iteration": iteration})
            return skipped
        marker = torch.where(
            finite,
            torch.full_like(finite, -1, dtype=torch.long),
            torch.full_like(finite, iteration, dtype=torch.long),
        )
        self.first_bad = (
            marker if self.first_bad is None else torch.where(self.first_bad < 0, marker, self.first_bad)
        )
        return False

    def check(self) -> None:
        """Raise :class:`NonFiniteLossError` (on every worker together) if any term was
        non-finite, naming each term and the iteration it first was."""
        if self.first_bad is None:
            return
        # The earliest over workers; every rank must raise together, or the others
        # would wait forever in the next collective.
        earliest = torch.where(
            self.first_bad >= 0, self.first_bad, torch.full_like(self.first_bad, self.never)
        )
        earliest = -all_reduce_max(-earliest)
        self.first_bad = torch.where(earliest < self.never, earliest, torch.full_like(earliest, -1))
        if not bool((self.first_bad >= 0).any()):
            return
        problems = [
            f"{self.names[i]} at iteration {int(self.first_bad[i])}"
            for i in range(len(self.names))
            if self.first_bad[i] >= 0
        ]
        raise NonFiniteLossError(
            f"{self.stage}: non-finite loss ({'; '.join(problems)}). The last good "
            "checkpoint is kept. Lower the learning rate, use fp32 or bf16, or set "
            "experiment.skip_nonfinite = true to skip such steps."
        )


@dataclass
class MetricsWindow:
    """Means of the loss terms over each log interval, as one training record."""

    stage: str
    interval: int
    log: Callable[[dict[str, Any]], None]
    describe: Callable[[dict[str, Any]], None]
    method_metrics: Callable[[], dict[str, Any]]
    device: torch.device
    names: list[str] = field(default_factory=list)
    total: Tensor | None = None
    steps: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, step: Step) -> None:
        """Take one step's terms (a skipped step's NaN would spoil the means)."""
        if step.skipped:
            self.skipped += 1
            return
        values = stacked(step.terms)  # one vector: one add per step, whatever the terms
        self.names = list(step.terms)
        self.total = values if self.total is None else self.total + values
        self.steps += 1

    def due(self, step: Step) -> bool:
        """Whether a record is written after this step."""
        return step.iteration % self.interval == 0 or step.last

    def __call__(self, step: Step) -> None:
        if self.total is None:  # every step of the window was skipped: say so
            self.describe(
                {
                    "kind": "train",
                    "stage": self.stage,
                    "iteration": step.iteration,
                    "terms": {},
                    "lr": step.learning_rates,
                    "skipped_steps": self.skipped,
                }
            )
            self.skipped = 0
            self.started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self.started
        # One reduction and one host sync per log interval: the mean over workers.
        means = all_reduce_mean(self.total.clone())
        record: dict[str, Any] = {
            "kind": "train",
            "stage": self.stage,
            "iteration": step.iteration,
            "terms": {
                name: total / max(1, self.steps)
                for name, total in zip(self.names, means.tolist(), strict=True)
            },
            "lr": step.learning_rates,
            "seconds_per_iteration": elapsed / max(1, self.steps),
        }
        if self.device.type == "cuda":
            record["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        method = self.method_metrics()
        if method:
            record["method"] = method
        if self.skipped:
            record["skipped_steps"] = self.skipped
        self.log(record)
        self.describe(record)
        self.total, self.steps, self.skipped = None, 0, 0
        self.started = time.perf_counter()


@dataclass
class Validation:
    """Validates the stage's nets every ``interval`` iterations and at the end; keeps
    the best checkpoint by the score ``selects`` (``<net>.<metric>``)."""

    stage: str
    interval: int
    evaluate: Callable[[], dict[str, dict[str, float]]]
    selects: str
    log: Callable[[dict[str, Any]], None]
    save_best: Callable[[int, float], None]
    best: float
    nets: list[torch.nn.Module]
    report: Callable[[str], None] = field(default=lambda text: None)
    """Shows a one-line summary of each validation (the run's reporter)."""

    def due(self, step: Step) -> bool:
        """Whether the nets are validated after this step."""
        return bool(self.interval and step.iteration % self.interval == 0) or step.last

    def __call__(self, step: Step) -> None:
        scores = self.evaluate()
        self.log(
            {
                "kind": "validation",
                "stage": self.stage,
                "iteration": step.iteration,
                "nets": scores,
                "selects": self.selects,
            }
        )
        for net in self.nets:
            net.train()
        net_name, _, metric = self.selects.partition(".")
        score = float(scores[net_name][metric])
        improved = score > self.best
        if improved:
            self.best = score
            self.save_best(step.iteration, score)
        shown = ", ".join(
            f"{net} " + " ".join(f"{name}={value:.4f}" for name, value in values.items())
            for net, values in scores.items()
        )
        best = (
            f"new best {self.selects}, saved" if improved else f"best {self.selects} so far {self.best:.4f}"
        )
        stage = self.stage.replace("_", " ")
        self.report(f"{stage} validation at iteration {step.iteration}: {shown}; {best}")


@dataclass
class StopPolicy:
    """Whether to stop after a step: a SIGINT/SIGTERM (agreed by every worker), or the
    testing aid ``stop_after``."""

    stage: str
    run_dir: Path
    device: torch.device
    stop_after: int | None = None

    CHECK_INTERVAL = 10
    """Under DDP, iterations between the collective checks of a stop request."""

    def reason(self, step: Step, request: StopRequest) -> str | None:
        """Why to stop after ``step``, or ``None``."""
        if self._agreed(request.requested is not None, step.iteration):
            return request.requested or "stop requested"
        if self.stop_after is not None and step.iteration >= self.stop_after:
            return "stop requested"
        return None

    def _agreed(self, requested: bool, done: int) -> bool:
        # A signal reaches the ranks at slightly different steps, and a rank that stopped
        # alone would leave the others waiting in a collective forever.
        if not current_world().distributed:
            return requested
        if done % self.CHECK_INTERVAL:
            return False
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        return bool(all_reduce_max(flag).item() > 0)

    def interrupt(self, step: Step) -> TrainingInterrupted:
        """The error that ends the run after the checkpoint of ``step``."""
        return TrainingInterrupted(
            f"{step.stop} during {self.stage}: stopped after iteration {step.iteration}, checkpoint written",
            self.run_dir,
        )


@dataclass
class Hooks:
    """Every hook of one training stage, called by :func:`pctkit.engine.loop.train`."""

    guard: NonFiniteGuard
    metrics: MetricsWindow
    validation: Validation | None
    checkpoint_interval: int
    save_checkpoint: Callable[[int], None]
    stop: StopPolicy
    progress: Callable[[int], None]
    nets: list[torch.nn.Module]

    def data_error(self, done: int, start: int, error: Exception) -> TrainingInterrupted:
        """A sample could not be read before iteration ``done + 1``: checkpoint the
        iterations done so far (rank 0), and the error that stops the run."""
        if done > start:
            self.guard.check()  # a checkpoint never holds weights a non-finite step touched
            self.save_checkpoint(done)
        where = (
            f"checkpoint written after iteration {done}"
            if done > start
            else "nothing trained since the last checkpoint"
        )
        return TrainingInterrupted(
            f"data error in {self.stop.stage} at iteration {done + 1}: {error} ({where}); "
            "fix or replace the file, then resume",
            self.stop.run_dir,
            exit_code=1,
        )

    def stop_requests(self) -> StopRequest:
        """The signal handlers of the stage (a context manager)."""
        return StopRequest()

    def after_step(self, step: Step, request: StopRequest) -> None:
        """Everything that happens after one step, in order."""
        self.metrics.add(step)
        self.progress(1)
        step.stop = self.stop.reason(step, request)
        periodic = bool(self.checkpoint_interval and step.iteration % self.checkpoint_interval == 0)
        validating = self.validation is not None and self.validation.due(step)
        if self.metrics.due(step) or periodic or validating or step.stop or step.last:
            self.guard.check()
        if self.metrics.due(step):
            self.metrics(step)
        if validating or step.last:
            # Sharded evaluation and the final weights use rank 0's BatchNorm statistics.
            for net in self.nets:
                broadcast_buffers(net)
        if validating and self.validation is not None:
            try:
                self.validation(step)
            except DataError as error:  # a validation image: the step itself is done
                raise self.data_error(step.iteration, step.iteration - 1, error) from None
        if periodic or step.stop or step.last:
            self.save_checkpoint(step.iteration)
        if step.stop:
            raise self.stop.interrupt(step)
