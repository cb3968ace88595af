"""pctkit.engine.hooks: what happens around each training step, one concern at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pctkit.components.contracts import DataError
from pctkit.engine.errors import NonFiniteLossError, TrainingInterrupted
from pctkit.engine.hooks import Hooks, MetricsWindow, NonFiniteGuard, Step, StopPolicy, Validation
from pctkit.engine.signals import StopRequest

CPU = torch.device("cpu")
NAN = float("nan")


def step(iteration: int, last: bool = False, skipped: bool = False, **terms: float) -> Step:
    values = {name: torch.tensor(value) for name, value in (terms or {"loss": 1.0}).items()}
    return Step(iteration, values, skipped, {"hybrid": 0.1, "pseudo": 0.1}, last)


# --------------------------------------------------------------------------- the guard


def test_guard_names_each_non_finite_term_at_its_first_iteration() -> None:
    guard = NonFiniteGuard("cross_training", skip=False, log=lambda record: None, never=100)
    for iteration, (strong, p2h) in enumerate([(1.0, 1.0), (NAN, 1.0), (1.0, float("inf")), (NAN, NAN)], 1):
        terms = {"loss_strong": torch.tensor(strong), "loss_p2h": torch.tensor(p2h)}
        assert guard.observe(terms, iteration) is False
    with pytest.raises(NonFiniteLossError) as raised:
        guard.check()
    message = str(raised.value)
    assert "cross_training: non-finite loss (loss_strong at iteration 2; loss_p2h at iteration 3)" in message
    assert "last good checkpoint is kept" in message and "skip_nonfinite" in message


def test_guard_of_finite_steps_passes() -> None:
    guard = NonFiniteGuard("retraining", skip=False, log=lambda record: None, never=10)
    guard.check()  # nothing observed yet
    for iteration in range(1, 4):
        guard.observe({"loss_ce": torch.tensor(0.5)}, iteration)
    guard.check()


def test_guard_that_skips_logs_the_step_instead() -> None:
    records: list[dict[str, Any]] = []
    guard = NonFiniteGuard("retraining", skip=True, log=records.append, never=10)
    assert guard.observe({"loss_ce": torch.tensor(0.5)}, 1) is False
    assert guard.observe({"loss_ce": torch.tensor(NAN)}, 2) is True
    assert records == [{"kind": "skipped", "stage": "retraining", "iteration": 2}]
    guard.check()  # skipped steps never raise


# --------------------------------------------------------------------------- metrics


def test_metrics_window_writes_means_over_its_interval() -> None:
    records: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    window = MetricsWindow("cross_training", 2, records.append, shown.append, lambda: {"J": [0.5]}, CPU)
    first, second = step(1, loss=1.0, loss_h2p=4.0), step(2, loss=3.0, loss_h2p=2.0)
    window.add(first)
    assert not window.due(first)
    window.add(step(2, skipped=True, loss=NAN, loss_h2p=NAN))  # a skipped step adds nothing
    window.add(second)
    assert window.due(second)
    window(second)
    (record,) = records
    assert record["kind"] == "train" and record["stage"] == "cross_training" and record["iteration"] == 2
    assert record["terms"] == {"loss": pytest.approx(2.0), "loss_h2p": pytest.approx(3.0)}
    assert record["lr"] == {"hybrid": 0.1, "pseudo": 0.1}
    assert record["method"] == {"J": [0.5]} and record["seconds_per_iteration"] >= 0
    assert shown == records
    # The window starts afresh; the last step is always due; an all-skipped window writes nothing.
    assert window.due(step(3, last=True)) and not window.due(step(3))
    window.add(step(3, skipped=True))
    window(step(3, last=True))
    assert len(records) == 1


# --------------------------------------------------------------------------- validation


PSEUDO = {"miou": 1.0, "miou_with_labels": 1.0}


def test_validation_keeps_the_best_by_its_selected_score_and_puts_nets_back_to_training() -> None:
    records: list[dict[str, Any]] = []
    saved: list[tuple[int, float]] = []
    scores = iter([0.4, 0.3, 0.6])
    net = nn.Linear(1, 1)

    def evaluate() -> dict[str, dict[str, float]]:
        net.eval()  # as an evaluation does
        score = next(scores)
        return {"hybrid": {"miou": 0.0, "miou_with_labels": score}, "pseudo": PSEUDO}

    reports: list[str] = []
    validation = Validation(
        "cross_training", 2, evaluate, "hybrid.miou_with_labels", records.append,
        lambda iteration, score: saved.append((iteration, score)), best=0.35, nets=[net],
        report=reports.append,
    )  # fmt: skip
    assert [validation.due(step(i)) for i in (1, 2, 3)] == [False, True, False]
    assert validation.due(step(3, last=True))
    for iteration in (2, 4, 5):
        validation(step(iteration))
        assert net.training
    assert saved == [(2, 0.4), (5, 0.6)]  # 0.3 at 4 is worse than the best so far
    # One line per validation for the log: every net's scores and what became of the best.
    assert reports == [
        "cross training validation at iteration 2: hybrid miou=0.0000 miou_with_labels=0.4000, "
        "pseudo miou=1.0000 miou_with_labels=1.0000; new best hybrid.miou_with_labels, saved",
        "cross training validation at iteration 4: hybrid miou=0.0000 miou_with_labels=0.3000, "
        "pseudo miou=1.0000 miou_with_labels=1.0000; best hybrid.miou_with_labels so far 0.4000",
        "cross training validation at iteration 5: hybrid miou=0.0000 miou_with_labels=0.6000, "
        "pseudo miou=1.0000 miou_with_labels=1.0000; new best hybrid.miou_with_labels, saved",
    ]
    assert records[0] == {
        "kind": "validation",
        "stage": "cross_training",
        "iteration": 2,
        "nets": {"hybrid": {"miou": 0.0, "miou_with_labels": 0.4}, "pseudo": PSEUDO},
        "selects": "hybrid.miou_with_labels",
    }


# --------------------------------------------------------------------------- stops


def test_stop_policy_stops_on_a_signal_or_the_testing_aid(tmp_path: Path) -> None:
    policy = StopPolicy("retraining", tmp_path, CPU, stop_after=3)
    request = StopRequest()
    assert policy.reason(step(2), request) is None
    assert policy.reason(step(3), request) == "stop requested"
    request.requested = "SIGTERM"
    assert StopPolicy("retraining", tmp_path, CPU).reason(step(1), request) == "SIGTERM"
    interrupted = step(4)
    interrupted.stop = "SIGTERM"
    error = policy.interrupt(interrupted)
    assert isinstance(error, TrainingInterrupted) and error.run_dir == tmp_path
    assert str(error) == "SIGTERM during retraining: stopped after iteration 4, checkpoint written"


# --------------------------------------------------------------------------- the order


@dataclass
class Guard(NonFiniteGuard):
    """A guard that notes each check."""

    events: list[str] = field(default_factory=list)

    def check(self) -> None:
        self.events.append("guard")
        super().check()


class Recorder:
    """Hooks whose parts write what they do into one list."""

    def __init__(self, events: list[str], stop_after: int | None = None) -> None:
        records: list[dict[str, Any]] = []
        guard = Guard("fit", False, records.append, 100, events=events)
        self.hooks = Hooks(
            guard=guard,
            metrics=MetricsWindow("fit", 2, lambda r: events.append(f"log {r['iteration']}"), lambda r: None,
                                  dict, CPU),
            validation=Validation("fit", 3, lambda: events.append("validate") or {"net": {"m": 0.0}}, "net.m",
                                  records.append, lambda i, s: events.append(f"best {i}"), -1.0, []),
            checkpoint_interval=4,
            save_checkpoint=lambda iteration: events.append(f"checkpoint {iteration}"),
            stop=StopPolicy("fit", Path("run"), CPU, stop_after),
            progress=lambda count: events.append("progress"),
            nets=[],
        )  # fmt: skip


def test_after_step_runs_the_guard_before_anything_is_written() -> None:
    events: list[str] = []
    hooks = Recorder(events).hooks
    request = StopRequest()
    for iteration in range(1, 7):
        events.append(f"step {iteration}")
        hooks.after_step(step(iteration, last=iteration == 6), request)
    assert events == [
        "step 1", "progress",
        "step 2", "progress", "guard", "log 2",
        "step 3", "progress", "guard", "validate", "best 3",
        "step 4", "progress", "guard", "log 4", "checkpoint 4",
        "step 5", "progress",
        "step 6", "progress", "guard", "log 6", "validate", "checkpoint 6",
    ]  # fmt: skip


def test_a_stop_checkpoints_then_raises() -> None:
    events: list[str] = []
    hooks = Recorder(events, stop_after=1).hooks
    with pytest.raises(TrainingInterrupted, match="stop requested during fit: stopped after iteration 1"):
        hooks.after_step(step(1), StopRequest())
    assert events == ["progress", "guard", "checkpoint 1"]


def test_an_unreadable_validation_image_checkpoints_the_finished_step_and_stops() -> None:
    events: list[str] = []
    hooks = Recorder(events).hooks
    assert hooks.validation is not None

    def unreadable() -> dict[str, dict[str, float]]:
        raise DataError("image /data/val_3.jpg cannot be read")

    hooks.validation.evaluate = unreadable
    with pytest.raises(TrainingInterrupted) as raised:
        hooks.after_step(step(3), StopRequest())
    assert raised.value.exit_code == 1
    assert str(raised.value) == (
        "data error in fit at iteration 4: image /data/val_3.jpg cannot be read "
        "(checkpoint written after iteration 3); fix or replace the file, then resume"
    )
    assert events == ["progress", "guard", "guard", "checkpoint 3"]
