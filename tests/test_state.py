"""pctkit.engine.state: training state as plain tensors and values, restorable exactly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pctkit.artifacts import checkpoints
from pctkit.artifacts.io import flatten_state
from pctkit.engine.loop import TrainingJob
from pctkit.engine.state import job_state, load_job_state, rng_state, set_rng_state
from pctkit.methods.base import StatelessMethod


def _draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_state_restores_every_generator_and_needs_no_pickle(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # numpy caches a second gaussian: part of its state
    state = rng_state()
    expected = _draws()
    checkpoints.write(tmp_path / "rng", {"rng": state}, {})  # plain tensors and values
    restored, _ = checkpoints.read(tmp_path / "rng")
    _draws()  # move every generator on
    set_rng_state(restored["rng"])
    assert _draws() == expected


class _Two(StatelessMethod):
    labeller = "a"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.nets = {"a": nn.Linear(2, 2), "b": nn.BatchNorm1d(2)}


def _job() -> TrainingJob:
    method = _Two()
    optimizers = {role: torch.optim.AdamW(net.parameters(), lr=0.1) for role, net in method.nets.items()}
    schedulers = {
        role: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
        for role, opt in optimizers.items()
    }
    return TrainingJob("fit", method, optimizers, schedulers, lambda start: iter([]), 4, torch.device("cpu"))


def test_job_state_round_trips_nets_optimizers_schedules_and_iteration(tmp_path: Path) -> None:
    job = _job()
    inputs = torch.randn(4, 2)
    job.method.nets["b"](job.method.nets["a"](inputs)).sum().backward()
    for role in ("a", "b"):
        job.optimizers[role].step()
        job.schedulers[role].step()
    state = job_state(job, 3)
    assert set(state) == {"nets", "optimizers", "schedulers", "method", "scaler", "rng", "iteration"}
    flatten_state(state)  # storable without pickle
    checkpoints.write(tmp_path / "job", state, {})
    loaded, _ = checkpoints.read(tmp_path / "job")
    fresh = _job()
    assert load_job_state(fresh, loaded) == 3
    for role in ("a", "b"):
        for key, value in job.method.nets[role].state_dict().items():
            assert torch.equal(fresh.method.nets[role].state_dict()[key], value)
        assert fresh.schedulers[role].get_last_lr() == job.schedulers[role].get_last_lr()
        moments = fresh.optimizers[role].state_dict()["state"]
        for index, entry in job.optimizers[role].state_dict()["state"].items():
            assert torch.equal(moments[index]["exp_avg"], entry["exp_avg"])
