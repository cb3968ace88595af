"""The iteration loop shared by both training stages.

A :class:`Stage` says what to train (nets, optimizers, schedules, extra state such as
the dynamic evaluation) and how to compute one micro-batch's loss; :func:`run_stage`
does the rest the same way for every stage: mixed precision, gradient accumulation,
optimizer and schedule steps, non-finite checks, logging, validation and checkpoints.
The step keeps host synchronisation to logging intervals.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from pctkit.artifacts.io import load_state, read_state_metadata, save_state
from pctkit.engine.cross_training import StepResult
from pctkit.engine.distributed import (
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    current_world,
    no_gradient_sync,
    unwrap,
)
from pctkit.engine.evaluation import autocast_context


class Stateful(Protocol):
    """Anything with ``state_dict`` / ``load_state_dict``."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the current step finished and a checkpoint was written.

    ``run_dir`` names the run to resume, where known.
    """

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class Stage:
    """Everything one training stage needs beyond the shared loop.

    Attributes:
        name: ``"cross_training"`` or ``"retraining"``.
        nets: the networks trained, by name (``hybrid``, ``pseudo``, ``net``).
        optimizers / schedulers: one per net, same names.
        extra_state: further state to checkpoint (the dynamic evaluation).
        micro_batches: ``iteration -> list of micro-batches`` on the device.
        compute: ``(micro_batch, index_in_iteration) -> StepResult``.
        evaluate: ``iteration -> metrics`` (validation), or ``None``.
        log_extra: ``() -> metrics`` added to each log record (J, for instance).
    """

    name: str
    nets: dict[str, nn.Module]
    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    extra_state: dict[str, Stateful]
    micro_batches: Callable[[int], Iterator[list[Any]]]
    compute: Callable[[Any, int], StepResult]
    total_iterations: int
    accumulate: int = 1
    log_interval: int = 50
    eval_interval: int = 0
    checkpoint_interval: int = 0
    keep_last: int = 2
    skip_nonfinite: bool = False
    evaluate: Callable[[int], dict[str, Any]] | None = None
    log_extra: Callable[[], dict[str, Any]] | None = None
    best_metric: str = ""


@dataclass
class LoopContext:
    """Where a stage writes, and how it reports."""

    run_dir: Path
    device: torch.device
    precision: str = "fp32"
    log: Callable[[dict[str, Any]], None] = lambda record: None
    progress: Callable[[int], None] = lambda advance: None
    describe: Callable[[str], None] = lambda text: None
    stop_after: int | None = None
    """Testing aid: raise :class:`TrainingInterrupted` after this iteration."""
    state: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Every global random state (torch, CUDA, numpy, Python), storable without pickle."""
    numpy_state: Any = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(numpy_state[1], dtype=np.int64)),
            "position": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": {"version": python_version, "internal": list(python_internal), "gauss": python_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dir(run_dir: Path, stage: str, iteration: int) -> Path:
    """``checkpoints/<stage>-<iteration>``."""
    return run_dir / "checkpoints" / f"{stage}-{iteration:08d}"


def stage_state(stage: Stage, scaler: torch.amp.GradScaler | None, iteration: int) -> dict[str, Any]:
    """The complete training state of a stage at the end of ``iteration`` iterations."""
    return {
        "nets": {name: unwrap(net).state_dict() for name, net in stage.nets.items()},
        "optimizers": {name: opt.state_dict() for name, opt in stage.optimizers.items()},
        "schedulers": {name: sch.state_dict() for name, sch in stage.schedulers.items()},
        "extra": {name: obj.state_dict() for name, obj in stage.extra_state.items()},
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "iteration": iteration,
    }


def load_stage_state(stage: Stage, scaler: torch.amp.GradScaler | None, state: dict[str, Any]) -> int:
    """Restore a stage from :func:`stage_state`; returns the iteration to continue from."""
    for name, net in stage.nets.items():
        unwrap(net).load_state_dict(state["nets"][name])
    for name, optimizer in stage.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    for name, scheduler in stage.schedulers.items():
        scheduler.load_state_dict(state["schedulers"][name])
    for name, obj in stage.extra_state.items():
        obj.load_state_dict(state["extra"][name])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["iteration"])


def write_checkpoint(
    context: LoopContext,
    stage: Stage,
    scaler: torch.amp.GradScaler | None,
    iteration: int,
    kind: str,
    score: float | None = None,
) -> Path:
    """Save a checkpoint (rank 0) and prune old periodic ones; returns its folder.

    ``score`` (the best checkpoint's validation metric) is kept in its metadata, so a
    resumed run only replaces it with a better one.
    """
    directory = checkpoint_dir(context.run_dir, stage.name, iteration)
    if kind == "best":
        directory = best_checkpoint_dir(context.run_dir, stage.name)
    if current_world().is_main:
        metadata: dict[str, Any] = {
            "stage": stage.name,
            "iteration": iteration,
            "kind": kind,
            "time": time.time(),
        }
        if score is not None:
            metadata["score"] = score
        save_state(directory, stage_state(stage, scaler, iteration), metadata)
        if kind == "periodic":
            periodic = sorted((context.run_dir / "checkpoints").glob(f"{stage.name}-0*"))
            for old in periodic[: -stage.keep_last]:
                _remove_tree(old)
    barrier()
    return directory


def best_checkpoint_dir(run_dir: Path, stage: str) -> Path:
    """``checkpoints/<stage>-best``: the checkpoint with the best validation metric."""
    return run_dir / "checkpoints" / f"{stage}-best"


def best_score(run_dir: Path, stage: str) -> float:
    """The validation metric of a stage's best checkpoint; -inf when there is none."""
    metadata = read_state_metadata(best_checkpoint_dir(run_dir, stage))
    score = metadata.get("score") if metadata is not None else None
    return float(score) if score is not None else float("-inf")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(run_dir: Path, stage: str) -> Path | None:
    """The newest complete periodic checkpoint of a stage, if any."""
    candidates = sorted((run_dir / "checkpoints").glob(f"{stage}-0*"))
    complete = [c for c in candidates if (c / "state.json").is_file() and (c / "state.safetensors").is_file()]
    return complete[-1] if complete else None


# --------------------------------------------------------------------------- signals


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps.

    A second signal stops at once, unless it follows the first within
    :attr:`DUPLICATE_SECONDS`: under torchrun one Ctrl-C (or ``scancel``) reaches a
    worker twice, from the terminal or Slurm and again from torchrun, which forwards it.
    """

    DUPLICATE_SECONDS = 1.0

    def __init__(self) -> None:
        self.requested: str | None = None
        self._requested_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            if time.monotonic() - self._requested_at < self.DUPLICATE_SECONDS:
                return  # the same request, delivered twice
            raise KeyboardInterrupt  # a second request: stop at once
        self.requested = signal.Signals(signal_number).name
        self._requested_at = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)


# --------------------------------------------------------------------------- the loop


def run_stage(
    stage: Stage, context: LoopContext, start_iteration: int = 0, scaler: torch.amp.GradScaler | None = None
) -> dict[str, Any]:
    """Train ``stage`` from ``start_iteration`` to its end; returns the last metrics."""
    device = context.device
    for net in stage.nets.values():
        net.train()
    term_sums: dict[str, Tensor] = {}
    steps_in_window = 0
    first_bad: Tensor | None = None  # per term, first iteration with a non-finite value
    window_start = time.perf_counter()
    last_metrics: dict[str, Any] = {}
    best_value = best_score(context.run_dir, stage.name)
    batches = stage.micro_batches(start_iteration)
    with StopRequest() as stop:
        for iteration in range(start_iteration, stage.total_iterations):
            step_terms = _forward_backward(stage, next(batches), context, scaler)

            finite = torch.stack([torch.isfinite(v).all() for v in step_terms.values()])
            skip_step = False
            if stage.skip_nonfinite:
                # One host sync per step: the price of deciding now whether to step.
                bad = all_reduce_sum((~finite).any().float().reshape(1))
                skip_step = bool(bad.item() > 0)
                if skip_step:
                    context.log({"stage": stage.name, "iteration": iteration + 1, "skipped_nonfinite": True})
            else:
                marker = torch.where(
                    finite,
                    torch.full_like(finite, -1, dtype=torch.long),
                    torch.full_like(finite, iteration + 1, dtype=torch.long),
                )
                first_bad = marker if first_bad is None else torch.where(first_bad < 0, marker, first_bad)

            step_lr = _optimizer_step(stage, scaler, skip_step)

            if not skip_step:  # a skipped step's NaN would spoil the logged means
                for name, value in step_terms.items():
                    term_sums[name] = term_sums.get(name, 0) + value
                steps_in_window += 1
            done = iteration + 1
            context.progress(1)
            stop_now = _stop_agreed(stop.requested is not None, done, device)

            at_log = done % stage.log_interval == 0 or done == stage.total_iterations
            # A checkpoint must never hold weights that a non-finite step touched, so the
            # check also runs before every checkpoint, not only at log intervals.
            check_finite = (
                at_log
                or bool(stage.checkpoint_interval and done % stage.checkpoint_interval == 0)
                or bool(stage.eval_interval and done % stage.eval_interval == 0)
                or stop_now
                or (context.stop_after is not None and done >= context.stop_after)
            )
            if check_finite and first_bad is not None:
                # Every rank must raise together, or the others would wait forever.
                first_bad = _earliest_over_workers(first_bad, stage.total_iterations + 1)
            if check_finite and first_bad is not None and bool((first_bad >= 0).any()):
                raise _nonfinite_error(stage.name, list(step_terms), first_bad)
            if at_log and term_sums:  # empty when every step of the window was skipped
                elapsed = time.perf_counter() - window_start
                record: dict[str, Any] = {"stage": stage.name, "iteration": done}
                # One reduction and one host sync per log interval: the mean over ranks.
                means = all_reduce_mean(torch.stack([total.float() for total in term_sums.values()]))
                for name, total in zip(term_sums, means.tolist(), strict=True):
                    record[name] = total / max(1, steps_in_window)
                record["lr"] = step_lr
                record["seconds_per_iteration"] = elapsed / max(1, steps_in_window)
                if device.type == "cuda":
                    record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                if stage.log_extra is not None:
                    record.update(stage.log_extra())
                context.log(record)
                context.describe(
                    " ".join(
                        f"{k}={record[k]:.3f}"
                        for k in ("loss", "loss_p2h", "mean_w", "loss_ce")
                        if k in record
                    )
                )
                last_metrics = record
                term_sums, steps_in_window = {}, 0
                window_start = time.perf_counter()

            evaluating = stage.evaluate is not None and (
                (stage.eval_interval and done % stage.eval_interval == 0) or done == stage.total_iterations
            )
            if evaluating or done == stage.total_iterations:
                # Sharded evaluation and the final weights use rank 0's BatchNorm statistics.
                for net in stage.nets.values():
                    broadcast_buffers(net)
            if evaluating and stage.evaluate is not None:
                metrics = stage.evaluate(done)
                context.log({"stage": stage.name, "iteration": done, "validation": metrics})
                for net in stage.nets.values():
                    net.train()
                score = (
                    float(metrics.get(stage.best_metric, float("-inf")))
                    if stage.best_metric
                    else float("-inf")
                )
                if stage.best_metric and score > best_value:
                    best_value = score
                    write_checkpoint(context, stage, scaler, done, "best", score=score)

            periodic = stage.checkpoint_interval and done % stage.checkpoint_interval == 0
            interrupted = stop_now or (context.stop_after is not None and done >= context.stop_after)
            if periodic or interrupted or done == stage.total_iterations:
                write_checkpoint(context, stage, scaler, done, "periodic")
            if interrupted:
                raise TrainingInterrupted(
                    f"{stop.requested or 'stop requested'} during {stage.name}: stopped after iteration "
                    f"{done}, checkpoint written",
                    context.run_dir,
                )
    return last_metrics


def _forward_backward(
    stage: Stage, micro_batches: list[Any], context: LoopContext, scaler: torch.amp.GradScaler | None
) -> dict[str, Tensor]:
    """Forward and backward every micro-batch of one iteration; returns the iteration's
    loss terms (detached, averaged over micro-batches)."""
    step_terms: dict[str, Tensor] = {}
    count = len(micro_batches)
    for micro_index, micro_batch in enumerate(micro_batches):
        # DDP reduces gradients once per iteration, with the last micro-batch.
        last = micro_index == count - 1
        with no_gradient_sync([] if last else stage.nets.values()):
            with autocast_context(context.device, context.precision):
                result = stage.compute(micro_batch, micro_index)
            loss = result.loss / count
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
        for name, value in result.terms.items():
            step_terms[name] = step_terms.get(name, 0) + value.float() / count
        step_terms["loss"] = step_terms.get("loss", 0) + loss.detach().float()
    return step_terms


def _optimizer_step(stage: Stage, scaler: torch.amp.GradScaler | None, skip: bool) -> dict[str, float]:
    """Step every optimizer (or only drop the gradients of a skipped step), then the
    schedules; returns the learning rates the step used."""
    for optimizer in stage.optimizers.values():
        if not skip:
            if scaler is not None:
                scaler.step(optimizer)
            else:
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if scaler is not None and not skip:
        scaler.update()
    # The rate this step used, read before the schedule moves on.
    used = {name: float(opt.param_groups[0]["lr"]) for name, opt in stage.optimizers.items()}
    for scheduler in stage.schedulers.values():
        scheduler.step()
    return used


def _nonfinite_error(stage_name: str, names: list[str], first_bad: Tensor) -> NonFiniteLossError:
    """The error naming each non-finite term and the iteration it first appeared."""
    problems = [
        f"{names[i]} at iteration {int(first_bad[i])}" for i in range(len(names)) if first_bad[i] >= 0
    ]
    return NonFiniteLossError(
        f"{stage_name}: non-finite loss ({'; '.join(problems)}). The last good "
        "checkpoint is kept. Lower the learning rate, use fp32 or bf16, or set "
        "cross_training.skip_nonfinite = true to skip such steps (it applies to both "
        "training stages)."
    )


STOP_CHECK_INTERVAL = 10
"""Under DDP, iterations between the collective checks of a SIGINT/SIGTERM request."""


def _stop_agreed(requested: bool, done: int, device: torch.device) -> bool:
    """Whether to stop after iteration ``done``: at once on one process; under DDP only
    when all ranks agree, checked every :data:`STOP_CHECK_INTERVAL` iterations (a
    signal reaches the ranks at slightly different steps, and a rank that stopped alone
    would leave the others waiting in a collective forever)."""
    if not current_world().distributed:
        return requested
    if done % STOP_CHECK_INTERVAL:
        return False
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    return bool(all_reduce_max(flag).item() > 0)


def _earliest_over_workers(first_bad: Tensor, never: int) -> Tensor:
    """Per term, the earliest iteration any worker saw a non-finite value (-1: none)."""
    earliest = torch.where(first_bad >= 0, first_bad, torch.full_like(first_bad, never))
    earliest = -all_reduce_max(-earliest)
    return torch.where(earliest < never, earliest, torch.full_like(earliest, -1))


def restore_latest(stage: Stage, context: LoopContext, scaler: torch.amp.GradScaler | None) -> int:
    """Load a stage's newest checkpoint, if any; returns the iteration to start from."""
    latest = latest_checkpoint(context.run_dir, stage.name)
    if latest is None:
        return 0
    state, _ = load_state(latest, device="cpu")
    return load_stage_state(stage, scaler, state)
