"""The released code's training and evaluation rules, each computed here independently
(YudeWang/Learning-Pseudo-Label; docs/method.md lists file and line of each):

- the image weight: ``sample_weight = label * J; sample_weight[sample_weight == 0] = 1;
  w = min(sample_weight) ** power`` (train.py);
- the pseudo net's learning rate is constant while the hybrid net's follows the poly
  schedule (``adjust_lr`` on the hybrid optimizer only, train.py);
- the evaluation averages logits over scales and horizontal flips, each resized back
  (test.py), before the argmax (or the CRF of the retrained net, retest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_run import TINY_QUICKSTART, one_thread
from torch import nn

from pctkit.engine.model import multi_scale_logits
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import run
from pctkit.methods.dynamic_evaluation import DynamicEvaluation
from pctkit.recipe import load_recipe
from pctkit.recipe.builtin import builtin_recipes

pytest.importorskip("sklearn.datasets")


def released_weights(labels: torch.Tensor, scores: torch.Tensor, power: float) -> torch.Tensor:
    """train.py's sample weight, step by step."""
    sample_weight = labels * scores[None, :]
    sample_weight[sample_weight == 0] = 1
    return sample_weight.min(dim=1).values ** power


def test_the_released_weight_rule_is_the_released_codes_formula() -> None:
    evaluation = DynamicEvaluation(5)
    evaluation.true_positive_counts = torch.tensor([0.9, 0.0, 0.3, 0.6, 0.0], dtype=torch.float64)
    evaluation.predicted_counts = torch.tensor([0.1, 0.0, 0.4, 0.2, 0.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(64, 5, generator=generator) > 0.5).float()
    labels[:, 0] = 1
    labels[3] = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])  # every present foreground class unscored
    scores = evaluation.scores.float()
    expected = released_weights(labels, scores, 8.0)
    actual = evaluation.image_weights(labels, 8.0, "released")
    assert torch.allclose(actual, expected, rtol=1e-6, atol=0)
    # The strict rule differs exactly where a present class has J = 0.
    strict = evaluation.image_weights(labels, 8.0, "strict")
    unscored = ((labels > 0) & (scores == 0)[None, :]).any(dim=1)
    assert torch.equal(strict == 0, unscored)
    assert bool((actual[unscored] > 0).all())


@pytest.mark.usefixtures("one_torch_thread")
def test_voc_style_runs_keep_the_pseudo_nets_rate_constant(tmp_path: Path) -> None:
    overrides = [*TINY_QUICKSTART, 'model.backbone.pretrained=""', "cross_training.iterations=6"]
    overrides += ["cross_training.log_interval=1", "retrain.enabled=false", "experiment.device=cpu"]
    recipe = load_recipe(builtin_recipes()["quickstart"], overrides)
    assert recipe.net_scheduler("pseudo").type == "constant"
    with one_thread():
        run(recipe, tmp_path / "run", reporter=Reporter(enabled=False))
    rates = [
        record["lr"]
        for record in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if record["kind"] == "train"
    ]
    base = recipe.optimizer.parameters()["lr"]
    assert [rate["pseudo"] for rate in rates] == [pytest.approx(base)] * 6
    hybrid = [rate["hybrid"] for rate in rates]
    # poly 0.9 from the first iteration: lr * (1 - t / T) ** 0.9 for t = 0 .. T - 1.
    assert hybrid == pytest.approx([base * (1 - t / 6) ** 0.9 for t in range(6)])


class Probe(nn.Module):
    """A 'network' whose logits say which pixel they saw: x-ramp and the image itself."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, images.shape[-1]).expand(images.shape[0], 1, *images.shape[-2:])
        return torch.cat([images[:, :1] * 3, ramp], dim=1)


def test_evaluation_averages_logits_over_scales_and_flips_like_the_released_test() -> None:
    images = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    scales = (0.5, 0.75, 1.0, 1.25, 1.5)
    net = Probe()
    total = torch.zeros(2, 2, 12, 16)
    for scale in scales:
        size = (round(12 * scale), round(16 * scale))
        scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            inputs = scaled.flip(-1) if flipped else scaled
            logits = net(inputs)
            logits = logits.flip(-1) if flipped else logits
            total += F.interpolate(logits, size=(12, 16), mode="bilinear", align_corners=False)
    expected = total / (2 * len(scales))
    assert torch.allclose(multi_scale_logits(net, images, scales, flip=True), expected, atol=1e-6)
