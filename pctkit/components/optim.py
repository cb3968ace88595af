"""Built-in optimizers and learning-rate schedules.

An optimizer factory takes the parameter groups positionally (the engine builds them,
with each group's ``lr_scale``) and returns a ``torch.optim.Optimizer``. A scheduler
factory takes ``(optimizer, total_iterations)`` and returns an ``LRScheduler`` stepped
once per iteration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LambdaLR


def _require(name: str, ok: bool, requirement: str, value: Any) -> None:
    """Refuse a parameter out of range, naming it (``validate`` shows the recipe key)."""
    if not ok:
        from pctkit.components.contracts import ParameterError

        raise ParameterError(name, f"must be {requirement}, got {value}")


def _warmup(warmup_iterations: int, total_iterations: int) -> None:
    _require("warmup_iterations", warmup_iterations >= 0, ">= 0", warmup_iterations)
    _require(
        "warmup_iterations",
        warmup_iterations < max(total_iterations, 1),
        f"fewer than the stage's {total_iterations} iterations",
        warmup_iterations,
    )


def _scaled(param_groups: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """Give every group its learning rate: ``lr`` times the group's ``lr_scale``."""
    return [{**group, "lr": lr * float(group.get("lr_scale", 1.0))} for group in param_groups]


def sgd(
    param_groups: list[dict[str, Any]],
    /,
    *,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 4e-5,
    nesterov: bool = False,
) -> Optimizer:
    """Stochastic gradient descent with momentum (the paper's optimizer).

    Args:
        lr: base learning rate (the classifier may get a multiple, see the stage's
            ``classifier_lr_multiplier``).
        momentum: momentum factor.
        weight_decay: L2 penalty.
        nesterov: use Nesterov momentum.
    """
    _require("lr", lr > 0, "> 0", lr)
    _require("momentum", 0 <= momentum < 1, "in [0, 1)", momentum)
    _require("weight_decay", weight_decay >= 0, ">= 0", weight_decay)
    import torch

    return torch.optim.SGD(
        _scaled(param_groups, lr), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


def adamw(
    param_groups: list[dict[str, Any]],
    /,
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 1e-4,
) -> Optimizer:
    """AdamW: Adam with decoupled weight decay (fast from-scratch training on CPU).

    Args:
        lr: base learning rate.
        betas: coefficients of the running averages of the gradient and its square.
        weight_decay: decoupled weight decay.
    """
    _require("lr", lr > 0, "> 0", lr)
    _require("betas", all(0 <= beta < 1 for beta in betas), "two numbers in [0, 1)", list(betas))
    _require("weight_decay", weight_decay >= 0, ">= 0", weight_decay)
    import torch

    return torch.optim.AdamW(_scaled(param_groups, lr), lr=lr, betas=betas, weight_decay=weight_decay)


def poly(
    optimizer: Optimizer,
    total_iterations: int,
    /,
    *,
    power: float = 0.9,
    warmup_iterations: int = 0,
) -> LambdaLR:
    """Polynomial decay ``(1 - t/T) ** power``, after an optional linear warm-up.

    Args:
        power: the exponent (0.9 in DeepLab and the paper).
        warmup_iterations: iterations of linear warm-up from 0.
    """

    _require("power", power >= 0, ">= 0", power)
    _warmup(warmup_iterations, total_iterations)

    def factor(iteration: int) -> float:
        if iteration < warmup_iterations:
            return (iteration + 1) / warmup_iterations
        return max(0.0, 1.0 - iteration / max(1, total_iterations)) ** power

    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, factor)


def cosine(
    optimizer: Optimizer,
    total_iterations: int,
    /,
    *,
    final_fraction: float = 0.0,
    warmup_iterations: int = 0,
) -> LambdaLR:
    """Cosine decay to ``final_fraction`` of the base rate, after optional warm-up.

    Args:
        final_fraction: the learning rate at the end, as a fraction of the base rate.
        warmup_iterations: iterations of linear warm-up from 0.
    """

    _require("final_fraction", 0 <= final_fraction <= 1, "in [0, 1]", final_fraction)
    _warmup(warmup_iterations, total_iterations)

    def factor(iteration: int) -> float:
        if iteration < warmup_iterations:
            return (iteration + 1) / warmup_iterations
        progress = min(1.0, iteration / max(1, total_iterations))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_iterations: int, /) -> LambdaLR:
    """A constant learning rate."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda iteration: 1.0)
