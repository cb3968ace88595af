"""benchmarks/gpu_check.sh: the GPU check runs its phases on the CPU (``--smoke``),
records a phase that runs out of time and goes on, and its summary estimates a full run
from the phases' records. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _summary_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gpu_check_summary", ROOT / "benchmarks" / "gpu_check_summary.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _check(out: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), "--smoke", "--out", str(out), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )


def _arm(seconds: float, checkpoint: float | None = None) -> dict[str, Any]:
    arm: dict[str, Any] = {
        "seconds_per_iteration": seconds,
        "iterations_per_second": 1 / seconds,
        "images_per_second": 10 / seconds,
        "peak_memory_gib": 30.0,
        "warmup_seconds": 12.0,
    }
    if checkpoint is not None:
        arm["checkpoint"] = {"seconds": checkpoint, "gib": 0.9}
    return arm


def _phases(folder: Path) -> Path:
    """The records the phases of a GPU check would leave, with made-up numbers."""
    folder.mkdir()
    records = {
        "environment": {"gpus": [{"name": "Some GPU"}], "torch": "2.11.0", "cuda": "13.0", "cudnn": 91000},
        "precisions": {
            "arms": {"voc_fp32": {"error": "OutOfMemoryError: ..."}, "voc_bf16_cl": _arm(0.05, 2.0)}
        },
        "retraining": {"arms": {"voc_retraining_bf16_cl": _arm(0.04, 1.0)}},
        "inference": {
            "schedule": {
                "recipe": "voc_pct.toml",
                "cross_training": {"iterations": 20000, "eval_interval": 5000, "nets": 2},
                "retraining": {"iterations": 30000, "eval_interval": 5000, "batch_size": 16},
                "checkpoint_interval": 2000,
                "num_strong": 1464,
                "postprocess": "dense_crf",
                "postprocess_nets": ["retrained"],
                "loader_workers": 8,
            },
            "pseudo_labels": {"batch_size": 8, "seconds_per_image": 0.05, "seconds_per_image_batch_1": 0.1},
            "evaluation": {"seconds_per_image": 0.1},
            "postprocess": {
                "type": "dense_crf",
                "error": "ModuleNotFoundError: No module named 'pydensecrf'",
            },
        },
    }
    for name, record in records.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    statuses = [
        {"phase": "environment", "status": "run", "exit": 0, "seconds": 5, "limit": 45},
        {"phase": "precisions", "status": "run", "exit": 1, "seconds": 80, "limit": 150},
        {"phase": "retraining", "status": "run", "exit": 0, "seconds": 30, "limit": 60},
        {"phase": "inference", "status": "run", "exit": 0, "seconds": 40, "limit": 90},
        {"phase": "compile", "status": "run", "exit": 124, "seconds": 300, "limit": 300},
    ]
    (folder / "status.jsonl").write_text("".join(json.dumps(status) + "\n" for status in statuses))
    (folder / "precisions.log").write_text("voc_fp32: error: OutOfMemoryError\n")
    return folder


def test_the_summary_estimates_a_full_run_stage_by_stage(tmp_path: Path) -> None:
    summary = _summary_module()
    record = summary.collect(_phases(tmp_path / "phases"), tmp_path / "absent.json", None)
    estimate = record["full_run_estimate"]["seconds"]
    assert estimate["cross_training"] == [1000.0, 1000.0]  # 20,000 x 0.05 s
    assert estimate["retraining"] == [1200.0, 1200.0]  # 30,000 x 0.04 s
    # 4 validations of 2 nets, 6 of the retrained net, then the 3 nets: 1,449 images at 0.1 s.
    assert estimate["cross_training_validation"] == [round(4 * 2 * 1449 * 0.1, 1)] * 2
    assert estimate["retraining_validation"] == [round(6 * 1449 * 0.1, 1)] * 2
    assert estimate["final_evaluation"] == [round(3 * 1449 * 0.1, 1)] * 2
    # The 9,118 weak images at the recipe's batch (low) or one at a time (high).
    assert estimate["pseudo_labels"] == [round(9118 * 0.05, 1), round(9118 * 0.1, 1)]
    # 10 periodic checkpoints, and up to one best checkpoint per validation.
    assert estimate["cross_training_checkpoints"] == [20.0, 28.0]
    assert estimate["retraining_checkpoints"] == [15.0, 21.0]
    assert "final_evaluation_postprocess" not in estimate
    assert any("dense_crf not measured" in note for note in record["full_run_estimate"]["notes"])
    phases = record["phases"]
    assert phases["precisions"]["status"] == "failed"
    assert "OutOfMemoryError" in phases["precisions"]["log_tail"]
    assert phases["compile"]["status"] == "timed out"
    assert phases["environment"]["status"] == "ok"
    text = summary.table(record)
    assert "voc_fp32" in text and "error: OutOfMemoryError" in text
    assert "timed out" in text


def test_a_merged_summary_keeps_the_phases_that_were_not_rerun(tmp_path: Path) -> None:
    summary = _summary_module()
    earlier = summary.collect(_phases(tmp_path / "phases"), tmp_path / "absent.json", None)
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    (rerun / "compile.json").write_text(json.dumps({"arms": {"voc_bf16_cl_compile": _arm(0.03)}}))
    status = {"phase": "compile", "status": "run", "exit": 0, "seconds": 200, "limit": 540}
    (rerun / "status.jsonl").write_text(json.dumps(status) + "\n")
    record = summary.collect(rerun, tmp_path / "absent.json", json.loads(json.dumps(earlier)))
    assert record["phases"]["compile"]["status"] == "ok"
    assert record["phases"]["precisions"]["status"] == "failed"
    assert set(record["arms"]) == {"voc_fp32", "voc_bf16_cl", "voc_retraining_bf16_cl", "voc_bf16_cl_compile"}
    assert record["full_run_estimate"]["seconds"]["cross_training"] == [1000.0, 1000.0]


def test_a_phase_past_its_time_limit_is_recorded_and_the_check_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _check(out, "--only", "precisions,compile", "--limit", "precisions=1", "--limit", "compile=1")
    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads((out / "gpu_check_smoke.json").read_text())
    assert record["kind"] == "gpu_check_smoke"
    assert {name: phase["status"] for name, phase in record["phases"].items()} == {
        "precisions": "timed out",
        "compile": "timed out",
    }
    assert record["phases"]["precisions"]["limit"] == 1
    assert "== compile (limit 1 s)" in (out / "gpu_check_smoke.log").read_text()


@pytest.mark.slow
def test_the_smoke_check_runs_every_phase_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _check(out)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    record = json.loads((out / "gpu_check_smoke.json").read_text())
    assert {name for name, phase in record["phases"].items() if phase["status"] == "ok"} == {
        *("environment", "precisions", "ratios", "dinov2", "retraining", "inference", "ddp", "compile"),
    }
    arms = record["arms"]
    assert set(arms) == {
        *("voc_fp32", "voc_bf16", "voc_bf16_cl", "voc_bf16_cl_compile", "voc_retraining_bf16_cl"),
        *("dinov2_bf16_cl", "dinov2_bf16_cl_checkpointing"),
    }
    assert all(arm["iterations_per_second"] > 0 and arm["peak_memory_gib"] > 0 for arm in arms.values())
    assert arms["voc_fp32"]["precision"] == "fp32" and not arms["voc_fp32"]["channels_last"]
    assert arms["voc_bf16_cl_compile"]["compile"]
    assert arms["dinov2_bf16_cl_checkpointing"]["activation_checkpointing"]
    assert arms["dinov2_bf16_cl"]["backbone"] == "test_vit" and arms["dinov2_bf16_cl"]["head"] == "dpt"
    assert arms["voc_retraining_bf16_cl"]["method"] == "supervised"
    assert arms["voc_bf16_cl"]["checkpoint"]["gib"] > 0
    assert record["ddp"]["arms"]["voc_bf16_cl"]["workers"] == 2
    assert record["ratios"]["same_math_agree"]
    assert record["inference"]["pseudo_labels"]["seconds_per_image_batch_1"] > 0
    assert record["full_run_estimate"]["total_hours"][0] > 0
    assert (out / "gpu_check_smoke_step_speed.json").is_file()
