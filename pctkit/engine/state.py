"""Training state as plain tensors and values: random generators and a training job.

Everything here is storable without pickle (see :mod:`pctkit.artifacts.checkpoints`):
restoring it and continuing computes the same floating-point operations as a run that
never stopped.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pctkit.engine.distributed import unwrap

if TYPE_CHECKING:
    from pctkit.engine.loop import TrainingJob


def seed_stage(seed: int, stage: str) -> None:
    """Seed the global generators (Python, numpy, torch and CUDA) for a stage that starts
    at its first iteration, from the run's seed and the stage's name alone.

    What draws from them during training (dropout) then does not depend on what ran
    before in the process: a stage restarted from its beginning after a crash (no
    checkpoint of it yet) trains as it would have in one uninterrupted run. A stage
    resumed from a checkpoint restores the generators saved in it instead.
    """
    seed_generators(int.from_bytes(hashlib.sha256(f"{seed}/{stage}".encode()).digest()[:8], "little"))


def seed_generators(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CUDA's too) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def job_state(job: TrainingJob, iteration: int) -> dict[str, Any]:
    """The complete state of a training job at the end of ``iteration`` iterations."""
    return {
        "nets": {role: unwrap(net).state_dict() for role, net in job.method.nets.items()},
        "optimizers": {role: opt.state_dict() for role, opt in job.optimizers.items()},
        "schedulers": {role: sch.state_dict() for role, sch in job.schedulers.items()},
        "method": job.method.state_dict(),
        "scaler": job.scaler.state_dict() if job.scaler is not None else {},
        "rng": rng_state(),
        "iteration": iteration,
    }


def load_job_state(job: TrainingJob, state: dict[str, Any]) -> int:
    """Restore a job from :func:`job_state`; returns the iteration to continue from."""
    for role, net in job.method.nets.items():
        unwrap(net).load_state_dict(state["nets"][role])
    for role, optimizer in job.optimizers.items():
        optimizer.load_state_dict(state["optimizers"][role])
    for role, scheduler in job.schedulers.items():
        scheduler.load_state_dict(state["schedulers"][role])
    job.method.load_state_dict(state["method"])
    if job.scaler is not None and state.get("scaler"):
        job.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["iteration"])
