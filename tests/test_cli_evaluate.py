"""``pctkit eval`` (pctkit.cli.evaluate): a bundle or a run's net scored on a split,
reproducing the run's own results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_run import run_cli

from pctkit.engine import evaluation


def test_eval_of_bundle_and_run_reproduces_the_run_results(
    tiny_bundle: Path, tiny_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = json.loads((tiny_run_dir / "results.json").read_text())["nets"]
    capsys.readouterr()
    assert run_cli(["eval", str(tiny_bundle), "--data", str(tiny_run_dir), "--json"], monkeypatch) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["net"] == "retrained" and scores["images"] == 4
    assert scores["miou"] == pytest.approx(results["retrained"]["miou"])
    assert scores["miou_with_labels"] == pytest.approx(results["retrained"]["miou_with_labels"])
    assert scores["iou"] == results["retrained"]["iou"]

    assert (
        run_cli(
            ["eval", str(tiny_run_dir), "--net", "hybrid", "--json", "--log-format", "plain"], monkeypatch
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["miou_with_labels"] == pytest.approx(
        results["hybrid"]["miou_with_labels"]
    )
    assert (
        run_cli(["eval", str(tiny_run_dir), "--net", "pseudo", "--set", "data.num_val=2"], monkeypatch) == 0
    )
    table = capsys.readouterr().out
    assert "pseudo net on 2 images" in table and "mIoU" in table


def test_evaluation_settings_come_from_the_run_and_set_changes_them(
    tiny_run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = evaluation.evaluate
    used: list[dict[str, Any]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        used.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", recording)
    assert run_cli(["eval", str(tiny_run_dir), "--json"], monkeypatch) == 0
    arguments = ["eval", str(tiny_run_dir), "--json", "--set", "evaluation.scales=[0.75, 1.25]"]
    assert run_cli([*arguments, "--set", "evaluation.flip=true"], monkeypatch) == 0
    capsys.readouterr()
    assert [(call["scales"], call["flip"], call["batch_size"]) for call in used] == [
        ((1.0,), False, 4),  # the run's [evaluation]
        ((0.75, 1.25), True, 4),
    ]


def test_eval_of_a_bundle_needs_data(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["eval", str(tiny_bundle)], monkeypatch) == 1
    assert "--data" in capsys.readouterr().err


def test_eval_of_a_run_without_its_recipe_names_the_missing_file(
    tiny_run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("recipe.json", "retrained_net.safetensors"):
        (run_dir / name).write_bytes((tiny_run_dir / name).read_bytes())
    assert run_cli(["eval", str(run_dir)], monkeypatch) == 1
    error = capsys.readouterr().err
    assert f"{run_dir / 'recipe.toml'} is missing" in error and "bundle" not in error
    arguments = ["eval", str(run_dir), "--data", str(tiny_run_dir), "--json"]
    assert run_cli(arguments, monkeypatch) == 0


def test_eval_data_of_other_classes_is_refused(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["eval", str(tiny_bundle), "--data", "quickstart", "--set", "data.num_val=2"]
    assert run_cli(arguments, monkeypatch) == 1
    assert "are not the net's" in capsys.readouterr().err
