"""Data parallelism through torch.distributed, as launched by ``torchrun``.

Nothing here is needed on one process: every helper degrades to the identity when no
process group exists.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class WorldInfo:
    """This process's place among the workers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one worker trains."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` is present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str) -> WorldInfo:
    """Join the process group ``torchrun`` prepared (NCCL on CUDA, gloo on CPU)."""
    if not launched_by_torchrun():
        return WorldInfo()
    world = WorldInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if world.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend)
    return world


def current_world() -> WorldInfo:
    """The world of an initialised process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return WorldInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return WorldInfo()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all workers in place (no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of a tensor over all workers, in place (no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all workers, in place (no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside the DDP and ``torch.compile`` wrappers (either order)."""
    inner = getattr(net, "module", net)
    inner = getattr(inner, "_orig_mod", inner)
    return getattr(inner, "module", inner)


def broadcast_buffers(module: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each training forward, so after the last
    step of a stage every other rank still holds statistics updated by its own slice
    of the batch. Evaluation and pseudo labelling are sharded over ranks and must use
    one model, the one rank 0 saves.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def no_gradient_sync(modules: Iterable[nn.Module]) -> contextlib.ExitStack:
    """Suspend DDP's gradient all-reduce for ``modules`` (those that are DDP-wrapped).

    For every micro-batch but the last of an accumulated iteration: gradients then
    accumulate locally and are reduced once, with the last backward. Forward and
    backward must both run inside the context.
    """
    stack = contextlib.ExitStack()
    for module in modules:
        no_sync = getattr(module, "no_sync", None)  # DDP, also behind torch.compile
        if no_sync is not None:
            stack.enter_context(no_sync())
    return stack


def barrier() -> None:
    """Wait for every worker (no-op on one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
