"""pctkit.artifacts.report and ``pctkit report``: the summary of a run, and its plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_run import finished_run, run_cli

from pctkit.artifacts import checkpoints
from pctkit.artifacts.report import PlotError, ReportError, summarize_run, write_plots
from pctkit.artifacts.run_dir import RunDirectory

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory)


def test_summary_of_a_finished_run(run_dir: Path) -> None:
    summary = summarize_run(run_dir)
    assert (summary.name, summary.mode) == ("tiny", "pct")
    assert summary.completed == ["cross_training", "pseudo_labels", "retraining", "evaluation"]
    stages = {stage.name: stage for stage in summary.stages}
    assert list(stages) == ["cross_training", "pseudo_labels", "retraining", "evaluation"]
    assert (stages["cross_training"].iterations_done, stages["cross_training"].iterations) == (6, 6)
    assert all(stage.seconds is not None and stage.seconds > 0 for stage in summary.stages)
    validations = [
        r["nets"]["hybrid"]["miou_with_labels"]
        for r in summary.records
        if r.get("stage") == "cross_training" and r["kind"] == "validation"
    ]
    assert len(validations) == 2  # eval_interval 3 of 6 iterations
    assert stages["cross_training"].best_metric == "hybrid.miou_with_labels"
    assert stages["cross_training"].best_value == max(validations)
    assert stages["cross_training"].best_iteration == 3  # the earliest of equal scores
    assert stages["retraining"].best_metric == "retrained.miou"
    last = [r for r in summary.records if r.get("stage") == "retraining" and r["kind"] == "train"][-1]
    assert stages["retraining"].final_loss == last["terms"]["loss"]
    assert summary.results is not None and set(summary.results["nets"]) == {"hybrid", "pseudo", "retrained"}


def test_report_prints_the_summary_and_writes_readable_plots(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["report", str(run_dir), "--out", str(tmp_path)], monkeypatch) == 0
    output = capsys.readouterr().out
    results = json.loads((run_dir / "results.json").read_text())
    for stage in ("cross_training", "pseudo_labels", "retraining", "evaluation"):
        assert stage in output
    assert "6/6" in output
    assert f"{results['nets']['retrained']['miou']:.4f}" in output
    assert "background" in output  # the per-class table
    plots = sorted(p.name for p in tmp_path.iterdir())
    assert plots == ["dynamic_evaluation.png", "losses.png", "validation.png"]
    for name in plots:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"
            assert picture.width >= 600 and picture.height >= 300
            # Not a blank canvas: lines and text in several colours.
            assert len(picture.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 20


def test_report_of_a_crashed_run_reads_what_is_there(tmp_path: Path, run_dir: Path) -> None:
    """A run killed in cross training: no progress, no results, a torn metrics line."""
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "recipe.json").write_text((run_dir / "recipe.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["stage"] == "cross_training"][:3]
    # Iteration 2 logged twice (before a crash and after the resume): the later one wins.
    again = json.loads(kept[1])
    again["terms"]["loss"] = 123.0
    (crashed / "metrics.jsonl").write_text("\n".join([*kept, json.dumps(again), '{"stage": "cro']))
    # The newest intact checkpoint is at 4; a damaged one at 5 does not count.
    checkpoint_folder = crashed / "checkpoints"
    checkpoints.write(checkpoint_folder / "cross_training-00000004", {"x": torch.zeros(1)}, {})
    (checkpoint_folder / "cross_training-00000005").mkdir()
    (checkpoint_folder / "cross_training-00000005" / "state.json").write_text("{}")

    records = RunDirectory(crashed).read_records()
    assert [r["terms"]["loss"] for r in records if r.get("iteration") == 2] == [123.0]
    summary = summarize_run(crashed)
    stages = {stage.name: stage for stage in summary.stages}
    assert summary.completed == [] and summary.results is None
    assert stages["cross_training"].iterations_done == 4  # from the checkpoint
    assert stages["cross_training"].final_loss == json.loads(kept[2])["terms"]["loss"]
    written = write_plots(crashed, tmp_path / "plots")
    assert [path.name for path in written] == ["losses.png", "dynamic_evaluation.png"]


def test_report_without_matplotlib_says_how_to_get_it(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(PlotError, match=r"pctkit\[plots\]"):
        write_plots(run_dir, tmp_path)
    assert run_cli(["report", str(run_dir), "--out", str(tmp_path)], monkeypatch) == 1
    assert "pctkit[plots]" in capsys.readouterr().err
    assert run_cli(["report", str(run_dir), "--no-plots"], monkeypatch) == 0


def test_report_of_a_folder_without_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["report", str(tmp_path)], monkeypatch) == 1
    assert "no run" in capsys.readouterr().err
    with pytest.raises(ReportError, match="holds no run"):
        summarize_run(tmp_path)


def test_plots_need_logged_iterations(tmp_path: Path, run_dir: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    (started / "recipe.json").write_text((run_dir / "recipe.json").read_text())
    with pytest.raises(ReportError, match=r"no logged training iterations yet \(metrics\.jsonl\)"):
        write_plots(started, tmp_path / "plots")


def test_report_with_a_damaged_progress_file_says_what_is_unknown(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged"
    for name in ("recipe.json", "results.json", "metrics.jsonl"):
        (damaged / name).parent.mkdir(exist_ok=True)
        (damaged / name).write_text((run_dir / name).read_text())
    (damaged / "progress.json").write_text('{"completed": ["cross')  # torn by a full disk
    summary = summarize_run(damaged)
    assert summary.results is not None and summary.completed == []
    assert len(summary.problems) == 1 and "progress.json is damaged" in summary.problems[0]
    assert run_cli(["report", str(damaged), "--no-plots"], monkeypatch) == 0
    error = capsys.readouterr().err
    assert "progress.json is damaged: not JSON" in error and "Traceback" not in error
