"""pctkit.engine.loop: one training loop for both stages, run here on a toy method with
the real hooks and checkpoints (no dataset, no recipe).

A stage that fits a linear map: NaN losses stop it at the next boundary with the last
good checkpoint kept, or are skipped; a stopped stage resumes to the very state of an
uninterrupted one; the loop syncs with the host per log interval, not per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from pctkit.artifacts import checkpoints
from pctkit.artifacts.checkpoints import Checkpoints
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.components.contracts import DataError
from pctkit.engine.errors import NonFiniteLossError, TrainingInterrupted
from pctkit.engine.hooks import Hooks, MetricsWindow, NonFiniteGuard, StopPolicy, Validation
from pctkit.engine.loop import TrainingJob, forward_backward, train, update
from pctkit.engine.state import job_state, load_job_state
from pctkit.methods.base import StatelessMethod, StepResult

CPU = torch.device("cpu")
STAGE = "fit"


class Fit(StatelessMethod):
    """Fits ``net(x) = 1``; the loss is NaN at ``bad_iteration`` (1-based). Its own
    state, a step counter, checks that method state is checkpointed."""

    labeller = "net"
    draws_weak_images = False
    predicts_with_image_labels = False

    def __init__(self, bad_iteration: int = 0) -> None:
        torch.manual_seed(0)
        self.nets = {"net": nn.Linear(3, 2)}
        self.counter = torch.zeros(1, dtype=torch.float64)
        self.bad_iteration = bad_iteration

    def step(self, batch: Any, micro_index: int) -> StepResult:
        iteration, inputs = batch
        self.counter += 1
        loss = (self.nets["net"](inputs) - 1).pow(2).mean()
        if iteration + 1 == self.bad_iteration:
            loss = loss * float("nan")
        return StepResult(loss, {"loss_fit": loss.detach()})

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counter = state["counter"].clone()


def fit_job(method: Fit, iterations: int = 6) -> TrainingJob:
    net = method.nets["net"]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    inputs = torch.randn(iterations, 4, 3, generator=torch.Generator().manual_seed(1))

    def batches(start: int) -> Iterator[list[Any]]:
        return ([(iteration, inputs[iteration])] for iteration in range(start, iterations))

    return TrainingJob(STAGE, method, {"net": optimizer}, {"net": scheduler}, batches, iterations, CPU)


def stage_hooks(
    job: TrainingJob,
    run_dir: Path,
    *,
    records: list[dict[str, Any]] | None = None,
    skip_nonfinite: bool = False,
    evaluate: Callable[[], dict[str, dict[str, float]]] | None = None,
    stop_after: int | None = None,
    checkpoint_interval: int = 2,
    log_interval: int = 50,
) -> Hooks:
    """Hooks wired as a training stage wires them: checkpoints of the job's state,
    pruned to the last 2, and the best one by validation."""
    store = Checkpoints(RunDirectory(run_dir))
    log = records.append if records is not None else (lambda record: None)

    def write(folder: Path, iteration: int, kind: str, score: float | None = None) -> None:
        metadata: dict[str, Any] = {"stage": STAGE, "iteration": iteration, "kind": kind}
        if score is not None:
            metadata["score"] = score
        checkpoints.write(folder, job_state(job, iteration), metadata)
        if kind == "periodic":
            store.prune(STAGE, 2)

    nets = list(job.method.nets.values())
    validation = None
    if evaluate is not None:
        validation = Validation(
            stage=STAGE,
            interval=1,
            evaluate=evaluate,
            selects="net.score",
            log=log,
            save_best=lambda iteration, score: write(store.best(STAGE), iteration, "best", score),
            best=store.best_score(STAGE),
            nets=nets,
        )
    return Hooks(
        guard=NonFiniteGuard(STAGE, skip_nonfinite, log, job.iterations + 1),
        metrics=MetricsWindow(STAGE, log_interval, log, lambda record: None, job.method.log_metrics, CPU),
        validation=validation,
        checkpoint_interval=checkpoint_interval,
        save_checkpoint=lambda iteration: write(store.periodic(STAGE, iteration), iteration, "periodic"),
        stop=StopPolicy(STAGE, run_dir, CPU, stop_after),
        progress=lambda count: None,
        nets=nets,
    )


def restore(job: TrainingJob, run_dir: Path) -> int:
    """What a training stage does on resume: the newest intact checkpoint back in."""
    newest = Checkpoints(RunDirectory(run_dir)).newest_intact(STAGE)
    assert newest is not None
    state, _ = checkpoints.read(newest)
    return load_job_state(job, state)


# --------------------------------------------------------------------------- non-finite losses


def test_a_nan_loss_stops_naming_the_term_and_iteration_keeping_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    job = fit_job(Fit(bad_iteration=3))
    with pytest.raises(NonFiniteLossError, match=r"loss_fit at iteration 3") as raised:
        train(job, stage_hooks(job, tmp_path))
    assert "skip_nonfinite" in str(raised.value)
    # Logged every 50 iterations, but checked before the checkpoint at 4: none was written.
    store = Checkpoints(RunDirectory(tmp_path))
    assert store.newest_intact(STAGE) == store.periodic(STAGE, 2)
    state, metadata = checkpoints.read(store.periodic(STAGE, 2))
    assert metadata == {"stage": STAGE, "iteration": 2, "kind": "periodic"}
    assert all(torch.isfinite(value).all() for value in state["nets"]["net"].values())


def test_skip_nonfinite_skips_the_step_and_still_checkpoints(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    job = fit_job(Fit(bad_iteration=4))
    train(job, stage_hooks(job, tmp_path, records=records, skip_nonfinite=True, log_interval=1))
    skipped = [r for r in records if r["kind"] == "skipped"]
    assert skipped == [{"kind": "skipped", "stage": STAGE, "iteration": 4}]
    store = Checkpoints(RunDirectory(tmp_path))
    assert store.newest_intact(STAGE) == store.periodic(STAGE, 6)
    assert all(torch.isfinite(value).all() for value in job.method.nets["net"].state_dict().values())
    trained = [r for r in records if r["kind"] == "train"]
    assert [r["iteration"] for r in trained] == [1, 2, 3, 5, 6]  # the skipped step logs nothing
    assert all(torch.isfinite(torch.tensor(r["terms"]["loss_fit"])) for r in trained)


# --------------------------------------------------------------------------- stop and resume


def test_stopped_stage_resumes_to_the_same_state_and_keeps_the_better_best(tmp_path: Path) -> None:
    scores = iter([0.5, 0.9, 0.1, 0.2, 0.3, 0.4])

    def evaluate() -> dict[str, dict[str, float]]:
        return {"net": {"score": next(scores)}}

    uninterrupted = fit_job(Fit())
    train(uninterrupted, stage_hooks(uninterrupted, tmp_path / "whole"))

    parts = tmp_path / "parts"
    first = fit_job(Fit())
    with pytest.raises(TrainingInterrupted, match="stopped after iteration 3, checkpoint written") as raised:
        train(first, stage_hooks(first, parts, evaluate=evaluate, stop_after=3))
    assert raised.value.run_dir == parts
    assert Checkpoints(RunDirectory(parts)).best_score(STAGE) == 0.9

    second = fit_job(Fit())
    start = restore(second, parts)
    assert start == 3
    train(second, stage_hooks(second, parts, evaluate=evaluate), start)
    expected = uninterrupted.method.nets["net"].state_dict()
    for key, value in second.method.nets["net"].state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert second.method.counter.item() == 6  # type: ignore[attr-defined]
    # Later scores (0.2 .. 0.4) are worse than 0.9 from before the stop.
    store = Checkpoints(RunDirectory(parts))
    _, metadata = checkpoints.read(store.best(STAGE))
    assert (metadata["iteration"], metadata["score"]) == (2, 0.9)
    # keep_last = 2 periodic checkpoints, the best, and no leftovers of the writes.
    assert sorted(p.name for p in store.folder.iterdir()) == ["fit-00000004", "fit-00000006", "fit-best"]


# --------------------------------------------------------------------------- data errors


def _unreadable_from(job: TrainingJob, iteration: int) -> None:
    """Make the batch of ``iteration`` (0-based) unreadable, as a broken file would."""
    batches = job.batches

    def failing(start: int) -> Iterator[list[Any]]:
        for index, batch in zip(range(start, job.iterations), batches(start), strict=False):
            if index == iteration:
                raise DataError("mask /data/broken.png is 4x4 but its image is 6x6")
            yield batch

    job.batches = failing


def test_a_data_error_checkpoints_what_was_trained_and_stops(tmp_path: Path) -> None:
    job = fit_job(Fit())
    _unreadable_from(job, 4)
    with pytest.raises(TrainingInterrupted) as raised:
        train(job, stage_hooks(job, tmp_path, checkpoint_interval=3))
    error = raised.value
    assert str(error) == (
        "data error in fit at iteration 5: mask /data/broken.png is 4x4 but its image is 6x6 "
        "(checkpoint written after iteration 4); fix or replace the file, then resume"
    )
    assert error.exit_code == 1 and error.run_dir == tmp_path
    store = Checkpoints(RunDirectory(tmp_path))
    assert store.newest_intact(STAGE) == store.periodic(STAGE, 4)
    # Resumed from there, the same file stops it again at once, with nothing new to save.
    again = fit_job(Fit())
    _unreadable_from(again, 4)
    start = restore(again, tmp_path)
    with pytest.raises(TrainingInterrupted, match=r"\(nothing trained since the last checkpoint\)"):
        train(again, stage_hooks(again, tmp_path, checkpoint_interval=3), start)
    assert [p.name for p in store.periodic_list(STAGE)] == ["fit-00000003", "fit-00000004"]


# --------------------------------------------------------------------------- one step


def test_micro_batches_of_one_iteration_average_their_terms_and_gradients() -> None:
    inputs = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    whole, split = fit_job(Fit()), fit_job(Fit())
    whole_terms = forward_backward(whole, [(0, inputs)])
    split_terms = forward_backward(split, [(0, inputs[:4]), (0, inputs[4:])])
    # Equal halves: the mean of the two halves' means is the whole batch's mean.
    assert split_terms["loss_fit"].item() == pytest.approx(whole_terms["loss_fit"].item(), rel=1e-6)
    assert split_terms["loss"].item() == pytest.approx(whole_terms["loss"].item(), rel=1e-6)
    for name, parameter in whole.method.nets["net"].named_parameters():
        split_parameter = dict(split.method.nets["net"].named_parameters())[name]
        torch.testing.assert_close(split_parameter.grad, parameter.grad)


# Skipping the very first update makes torch warn that the schedule stepped first.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_update_steps_every_optimizer_or_only_drops_a_skipped_steps_gradients() -> None:
    job = fit_job(Fit())
    net = job.method.nets["net"]
    before = {key: value.clone() for key, value in net.state_dict().items()}
    forward_backward(job, [(0, torch.randn(4, 3))])
    assert update(job, skip=True) == {"net": pytest.approx(0.1)}
    assert all(torch.equal(value, before[key]) for key, value in net.state_dict().items())
    assert all(parameter.grad is None for parameter in net.parameters())
    # The schedule moved on all the same: the next step uses 0.1 / 2.
    forward_backward(job, [(1, torch.randn(4, 3))])
    assert update(job, skip=False) == {"net": pytest.approx(0.05)}
    assert not all(torch.equal(value, before[key]) for key, value in net.state_dict().items())


# --------------------------------------------------------------------------- host syncs

HOST_SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def count_host_syncs(iterations: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Calls that would wait for the device in ``train`` over ``iterations`` steps,
    logged once (at the end) and checkpointed once (at the end)."""
    job = fit_job(Fit(), iterations)
    hooks = stage_hooks(job, tmp_path / f"run{iterations}", checkpoint_interval=0, log_interval=iterations)
    calls = 0

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return method(*args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for name in HOST_SYNCS:
            patch.setattr(Tensor, name, counting(getattr(Tensor, name)))
        train(job, hooks)
    return calls


def test_training_loop_syncs_with_the_host_per_log_interval_not_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice the steps between two logs, the same number of host syncs (the log, the
    guard's check and the final checkpoint account for all of them)."""
    three = count_host_syncs(3, tmp_path, monkeypatch)
    assert three > 0  # the counting works
    assert count_host_syncs(6, tmp_path, monkeypatch) == three
