"""The training loop both training stages share.

A :class:`TrainingJob` says what to train (a method with its nets, one optimizer and
schedule per net, the batches); :func:`train` runs it. Around each step the loop calls
its hooks (:mod:`pctkit.engine.hooks`) in a fixed order: the non-finite guard, the
metrics window, validation, checkpoints, and stop requests. The step keeps host
synchronisation to logging intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from pctkit.components.contracts import DataError
from pctkit.engine.distributed import no_gradient_sync
from pctkit.engine.evaluation import autocast_context
from pctkit.engine.hooks import Hooks, Step
from pctkit.methods.base import Batch, Method


@dataclass
class TrainingJob:
    """Everything a training stage trains, and how.

    Attributes:
        stage: ``"cross_training"`` or ``"retraining"``.
        method: the nets (``method.nets``) and how a micro-batch becomes a loss.
        optimizers / schedulers: one per net, by role.
        batches: ``start iteration -> iterator`` of each iteration's micro-batches.
        iterations: the stage's length.
    """

    stage: str
    method: Method
    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    batches: Callable[[int], Iterator[list[Batch]]]
    iterations: int
    device: torch.device
    precision: str = "fp32"
    scaler: torch.amp.GradScaler | None = None


def train(job: TrainingJob, hooks: Hooks, start: int = 0) -> None:
    """Train ``job`` from iteration ``start`` to its end."""
    for net in job.method.nets.values():
        net.train()
    batches = job.batches(start)
    with hooks.stop_requests() as stop:
        for iteration in range(start, job.iterations):
            try:
                micro_batches = next(batches)
            except DataError as error:
                raise hooks.data_error(iteration, start, error) from None
            terms = forward_backward(job, micro_batches)
            skipped = hooks.guard.observe(terms, iteration + 1)
            learning_rates = update(job, skipped)
            step = Step(iteration + 1, terms, skipped, learning_rates, last=iteration + 1 == job.iterations)
            hooks.after_step(step, stop)


def forward_backward(job: TrainingJob, micro_batches: list[Batch]) -> dict[str, Tensor]:
    """Forward and backward every micro-batch of one iteration; returns the iteration's
    loss terms (detached, averaged over micro-batches) and their total ``loss``."""
    terms: dict[str, Tensor] = {}
    count = len(micro_batches)
    nets = job.method.nets.values()
    for micro_index, micro_batch in enumerate(micro_batches):
        # DDP reduces gradients once per iteration, with the last micro-batch.
        last = micro_index == count - 1
        with no_gradient_sync([] if last else nets):
            with autocast_context(job.device, job.precision):
                result = job.method.step(micro_batch, micro_index)
            loss = result.loss / count
            if job.scaler is not None:
                job.scaler.scale(loss).backward()
            else:
                loss.backward()
        for name, value in result.terms.items():
            terms[name] = terms.get(name, 0) + value.float() / count
        terms["loss"] = terms.get("loss", 0) + loss.detach().float()
    return terms


def update(job: TrainingJob, skip: bool) -> dict[str, float]:
    """Step every optimizer (or only drop the gradients of a skipped step), then the
    schedules; returns the learning rates the step used."""
    for optimizer in job.optimizers.values():
        if not skip:
            if job.scaler is not None:
                job.scaler.step(optimizer)
            else:
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if job.scaler is not None and not skip:
        job.scaler.update()
    # The rate this step used, read before the schedule moves on.
    used = {role: float(opt.param_groups[0]["lr"]) for role, opt in job.optimizers.items()}
    for scheduler in job.schedulers.values():
        scheduler.step()
    return used
