"""pctkit.components.optim: the built-in optimizers and schedules, and the parameters
they refuse (by name, so that ``validate`` points at the recipe key)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pctkit.components.contracts import ParameterError
from pctkit.components.optim import adamw, constant, cosine, poly, sgd


def groups() -> list[dict[str, Any]]:
    return [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 10.0}]


def test_each_group_gets_the_base_rate_times_its_scale() -> None:
    assert sgd(groups(), lr=0.01).param_groups[0]["lr"] == pytest.approx(0.1)
    assert adamw(groups(), lr=0.002).param_groups[0]["lr"] == pytest.approx(0.02)


def test_schedules_follow_their_formulas() -> None:
    optimizer = sgd(groups(), lr=1.0)
    rates = []
    schedule = poly(optimizer, 10, power=1.0, warmup_iterations=2)
    for _ in range(5):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([5.0, 10.0, 8.0, 7.0, 6.0])  # warm-up, then 1 - t/T
    final = cosine(sgd(groups(), lr=1.0), 4, final_fraction=0.5)
    assert final.get_last_lr()[0] == pytest.approx(10.0)
    assert constant(sgd(groups(), lr=1.0), 4).get_last_lr()[0] == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: sgd(groups(), lr=-1.0), "lr"),
        (lambda: sgd(groups(), momentum=1.0), "momentum"),
        (lambda: adamw(groups(), betas=(0.9, 1.5)), "betas"),
        (lambda: adamw(groups(), weight_decay=-0.1), "weight_decay"),
        (lambda: poly(sgd(groups()), 10, power=-1.0), "power"),
        (lambda: poly(sgd(groups()), 10, warmup_iterations=10), "warmup_iterations"),
        (lambda: cosine(sgd(groups()), 10, final_fraction=2.0), "final_fraction"),
    ],
)
def test_out_of_range_parameters_are_refused_by_name(build: Any, parameter: str) -> None:
    with pytest.raises(ParameterError) as raised:
        build()
    assert raised.value.parameter == parameter
