"""The redesign guard: short runs give the weights pctkit 0.1 gave, bit for bit.

``tests/data/bit_identical.json`` holds digests of the final weights of four tiny runs
(PCT, hybrid, supervised, PCT with gradient accumulation), recorded with pctkit 0.1
before the redesign into methods, one loop and the run-directory contract. The recipe
below is that run's recipe in today's spelling, with every behaviour that has changed
since spelled out as it was then (the strict weight rule, the P2H mean over valid
pixels, the pseudo net following the schedule, the ``scale_crop_flip`` augmentation).

Floating-point results depend on the CPU's vector instructions and on torch: on
another machine or torch version the test is skipped, saying why.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import subprocess_environment

pytest.importorskip("sklearn.datasets")
pytestmark = pytest.mark.slow

REFERENCE = json.loads((Path(__file__).parent / "data" / "bit_identical.json").read_text())

RECIPE = """
[experiment]
name = "tiny"
seed = 0
device = "cpu"

[method]
type = "pct"
weight_rule = "strict"
p2h_mean = "valid_pixels"

[data]
type = "digit_scenes"
num_strong = 4
num_weak = 8
num_val = 4
canvas_size = 32
min_digit_size = 8
max_digit_size = 16
digit_classes = [0, 1, 2]

[augmentation]
scale_range = [0.75, 1.25]
crop_size = 32
color_jitter = 0.2

[model.backbone]
type = "timm"
model_name = "test_resnet"
out_indices = [1, 3]
output_stride = 32

[model.head]
type = "fusion"
channels = 8

[cross_training]
iterations = 6
strong_batch_size = 2
weak_batch_size = 2
log_interval = 1
eval_interval = 3

[optimizer]
type = "adamw"
lr = 2e-3

[retrain]
iterations = 6
batch_size = 4
log_interval = 1
eval_interval = 3

[retrain.pseudo_labels]
scales = [1.0]
flip = false
batch_size = 4

[evaluation]
batch_size = 4
num_pictures = 2
"""

VARIANTS = {
    "pct": [],
    "hybrid": ["method.type=hybrid"],
    "supervised": ["method.type=supervised"],
    "pct_accumulate": ["cross_training.accumulate=2", "retrain.accumulate=2", "retrain.enabled=false"],
}


def weights_digest(path: Path) -> str:
    """The digest the reference was recorded with: every tensor's bytes, by sorted name."""
    tensors = load_file(str(path))
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _same_machine_kind() -> str | None:
    recorded = REFERENCE["recorded_with"]
    here = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    different = [
        f"{key} {recorded[key]} here {value}" for key, value in here.items() if recorded[key] != value
    ]
    return "; ".join(different) or None


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_short_runs_give_the_weights_of_pctkit_0_1(variant: str, tmp_path: Path) -> None:
    reason = _same_machine_kind()
    if reason:
        pytest.skip(f"reference recorded on another kind of machine: {reason}")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    run_dir = tmp_path / variant
    command = [sys.executable, "-m", "pctkit", "run", str(recipe), "--out", str(run_dir), "--quiet"]
    for override in VARIANTS[variant]:
        command += ["--set", override]
    result = subprocess.run(
        command, env=subprocess_environment(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    expected = REFERENCE["runs"][variant]
    digests = {path.name: weights_digest(path) for path in sorted(run_dir.glob("*_net.safetensors"))}
    assert digests == expected["weights"]
    results = json.loads((run_dir / "results.json").read_text())
    scores = {role: [s["miou"], s["miou_with_labels"]] for role, s in results["nets"].items()}
    assert scores == expected["miou"]
