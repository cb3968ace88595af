"""``pctkit run`` and ``pctkit resume`` (pctkit.cli.run): options, the torchrun launcher's
refusals, and the end-of-run table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from tiny_run import TINY_QUICKSTART, run_cli, set_options

from pctkit.cli import run as cli_run
from pctkit.cli.app import UserError


def test_under_torchrun_nproc_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="under torchrun already, leave it out"):
        cli_run.launch_workers(2, ["run", "quickstart"])


def test_an_unknown_log_format_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["run", "quickstart", "--log-format", "fancy"], monkeypatch) == 1
    assert "--log-format must be auto, rich or plain, got 'fancy'" in capsys.readouterr().err


def test_a_run_prints_the_results_table_and_plain_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn.datasets")
    run_dir = tmp_path / "run"
    arguments = ["run", "quickstart", "--out", str(run_dir), "--log-format", "plain"]
    assert run_cli([*arguments, *set_options([*TINY_QUICKSTART, "retrain.enabled=false"])], monkeypatch) == 0
    captured = capsys.readouterr()
    results = json.loads((run_dir / "results.json").read_text())
    for role in ("hybrid", "pseudo"):
        assert role in captured.out and f"{results['nets'][role]['miou']:.4f}" in captured.out
    assert f"outputs: {run_dir}" in captured.out and "recipe.toml, metrics.jsonl" in captured.out
    # The progress went to stderr as plain, timestamped lines.
    assert "cross training (pct) finished 2/2" in captured.err
    assert "Traceback" not in captured.err


def test_show_results_lists_each_net_pseudo_labels_time_and_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(record=True, width=200)
    monkeypatch.setattr(cli_run, "console", console)
    results = {
        "nets": {"hybrid": {"miou": 0.5, "miou_with_labels": 0.625}},
        "pseudo_labels": {"images": 8, "miou": 0.25},
        "seconds": {"cross_training": 90.0},
        "peak_memory_gib": {"cross_training": 1.5},
        "memory_kind": "resident memory (RSS)",
    }
    cli_run.show_results(results, tmp_path)
    text = console.export_text()
    assert "hybrid" in text and "0.5000" in text and "0.6250" in text
    assert "pseudo labels: 8 images, mIoU against hidden masks 0.2500" in text
    assert "time: cross_training 1.5 min" in text
    assert "peak resident memory (RSS): cross_training 1.50 GiB" in text
