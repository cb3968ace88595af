"""benchmarks/: each script runs at its smallest settings and writes its record.

The benchmarks' numbers are not checked (no test asserts a timing); what is checked is
that the scripts still run against pctkit's current APIs, that the two PCT steps of
``step_speed.py`` compute the same losses, and how ``cli_speed.py`` forms its ratios.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def _main(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> None:
    monkeypatch.setattr(sys, "argv", [module.__file__, *arguments])
    module.main()


def test_step_speed_runs_its_four_arms_and_the_pct_steps_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "step_speed.json"
    _main(
        _script("step_speed"),
        monkeypatch,
        *("--size", "32", "--rounds", "1", "--block", "2", "--threads", "0", "--profile", "2"),
        *("--loader-iterations", "2", "--loader-workers", "0", "--out", str(out)),
    )
    record = json.loads(out.read_text())
    assert record["same_math"]["agree"]
    assert len(record["same_math"]["pctkit_loss"]) == 3
    assert set(record["seconds_per_iteration"]) == {
        "pctkit_pct",
        "hand_written_pct",
        "pctkit_supervised",
        "two_supervised_nets",
    }
    assert record["pct_over_supervised"] > 0
    assert record["two_nets_over_supervised"] > 0
    # The ratios are per round: PCT / supervised is PCT / two nets times two nets / supervised.
    (pct_over_two,) = record["pct_over_two_nets_per_round"]
    (two_over_one,) = record["two_nets_over_supervised_per_round"]
    assert record["pct_over_supervised_per_round"][0] == pytest.approx(pct_over_two * two_over_one)
    assert record["profile"]["pct_top_ops_ms"]
    assert record["pipeline_images_per_second"]["0"] > 0


def test_data_pipeline_times_both_streams_and_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data_pipeline.json"
    _main(
        _script("data_pipeline"),
        monkeypatch,
        *("--images", "4", "--samples", "2", "--batches", "2", "--workers", "0", "--steps", "1"),
        *("--threads", "0", "--device", "cpu", "--out", str(out)),
        *("--set", "augmentation.strong.crop_size=64", "--set", "augmentation.weak.crop_size=64"),
    )
    record = json.loads(out.read_text())
    assert record["per_sample"]["strong"]["augmentation"] == "random_ops_crop"
    assert record["per_sample"]["weak"]["augmentation"] == "crop"
    assert record["per_sample"]["weak"]["crop_size"] == 64
    assert record["pipeline"][0]["images"] == 2 * record["batch_size"]
    assert record["train_step"]["method"] == "pct"


def test_cli_speed_ratios_are_per_round_medians_against_each_reference(tmp_path: Path) -> None:
    cli_speed = _script("cli_speed")
    names = [command.name for command in cli_speed.commands("recipes/quickstart.toml")]
    assert names[:2] == ["import torch", "import torch, timm"]
    assert {"pctkit --help", "pctkit list", "pctkit schema", "pctkit recipes"} < set(names)
    fast = cli_speed.Command("fast", [sys.executable, "-c", "pass"])
    timed = [fast, cli_speed.Command("same", [sys.executable, "-c", "pass"], "fast", 100.0)]
    seconds = cli_speed.measure(timed, rounds=1)
    assert all(len(values) == 1 and values[0] > 0 for values in seconds.values())
    rows = cli_speed.summarise(timed, {"fast": [1.0, 2.0, 4.0], "same": [0.5, 3.0, 2.0]})
    assert rows["same"]["ratio_per_round"] == [0.5, 1.5, 0.5]
    assert rows["same"]["ratio"] == 0.5 and rows["same"]["met"]
    assert "ratio" not in rows["fast"]
