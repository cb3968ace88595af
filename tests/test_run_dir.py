"""pctkit.artifacts.run_dir: every file of a run, by purpose, and its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pctkit.artifacts.run_dir import RECORD_KINDS, Progress, RunDirectory, RunDirectoryError


def test_paths_of_a_run(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.recipe_toml == tmp_path / "recipe.toml" and run.recipe_json == tmp_path / "recipe.json"
    assert run.progress_file == tmp_path / "progress.json"
    assert run.metrics_file == tmp_path / "metrics.jsonl"
    assert run.results_file == tmp_path / "results.json"
    assert run.predictions == tmp_path / "predictions.png"
    assert run.pseudo_labels == tmp_path / "pseudo_labels"
    assert run.checkpoints == tmp_path / "checkpoints"
    assert run.tensorboard == tmp_path / "tensorboard"
    assert run.export("hybrid") == tmp_path / "export" / "hybrid"
    assert run.net_weights("pseudo") == tmp_path / "pseudo_net.safetensors"
    assert str(run) == str(tmp_path)


def test_recipe_is_written_twice_and_read_back(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert not run.holds_run()
    with pytest.raises(RunDirectoryError, match="holds no run"):
        run.read_recipe()
    run.write_recipe('[experiment]\nname = "x"\n', {"experiment": {"name": "x"}})
    assert run.holds_run() and run.read_recipe() == {"experiment": {"name": "x"}}
    assert run.recipe_toml.read_text().startswith("[experiment]")
    run.recipe_json.write_text("{ torn")
    with pytest.raises(RunDirectoryError, match=r"recipe\.json is damaged: not JSON"):
        run.read_recipe()


def test_progress_round_trips_and_names_the_stage_one_nets(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.read_progress() == Progress()
    progress = Progress(["cross_training"], {"cross_training": 1.5}, {"cross_training": 0.25}, "RSS")
    assert progress.done("cross_training") and not progress.done("retraining")
    run.write_progress(progress, ["hybrid", "pseudo"])
    assert run.read_progress() == progress
    assert json.loads(run.progress_file.read_text())["nets"] == ["hybrid", "pseudo"]
    # Peaks written by an older pctkit as "n/a" are left out, not a crash.
    assert Progress.from_json({"peak_memory_gib": {"a": "n/a", "b": 1}}).peak_memory_gib == {"b": 1.0}


def test_roles_put_the_retrained_net_first_then_the_labeller(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.roles() == []
    for role in ("pseudo", "hybrid", "retrained", "extra"):
        run.net_weights(role).write_bytes(b"")
    # Without progress.json the method's order is unknown: retrained first, the rest sorted.
    assert run.roles() == ["retrained", "extra", "hybrid", "pseudo"]
    run.write_progress(Progress(), ["pseudo", "hybrid"])  # as a method whose labeller is pseudo
    assert run.roles() == ["retrained", "pseudo", "hybrid", "extra"]


def test_records_later_wins_torn_lines_and_unknown_kinds_skipped(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.read_records() == []
    first = {"kind": "train", "stage": "cross_training", "iteration": 2, "terms": {"loss": 1.0}}
    validation = {
        "kind": "validation",
        "stage": "cross_training",
        "iteration": 2,
        "nets": {},
        "selects": "h.m",
    }
    again = {**first, "terms": {"loss": 0.5}}  # logged again after a resume
    for record in (first, validation, again):
        run.append_record(record)  # type: ignore[arg-type]
    with open(run.metrics_file, "a") as handle:
        handle.write('{"kind": "unknown", "stage": "x"}\n[1, 2]\n{"kind": "tr')
    records = run.read_records()
    assert records == [again, validation]
    assert {"train", "validation", "skipped", "pseudo_labels", "evaluation"} == set(RECORD_KINDS)


def test_results_are_none_before_the_evaluation(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.read_results() is None
    run.write_results({"nets": {}})
    assert run.read_results() == {"nets": {}}
