"""pctkit.engine.run: the run directory prepared (or checked on resume), refusals before
anything is written, and a stopped run resumed in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_run import finished_run, one_thread, write_recipe

from pctkit.artifacts.io import load_tensors
from pctkit.artifacts.lock import RunLock, RunLockedError
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.engine.errors import RunError, TrainingInterrupted
from pctkit.engine.reporting import Reporter
from pctkit.engine.run import prepare_run_dir, resume, run
from pctkit.recipe import load_recipe
from pctkit.recipe.resume_rules import moved_locations, recipe_differences
from pctkit.recipe.slots import location_keys

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn

QUIET = Reporter(enabled=False)


def test_a_new_run_directory_holds_the_resolved_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    run_dir = RunDirectory(tmp_path / "run")
    prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["recipe.json", "recipe.toml"]
    assert run_dir.read_recipe() == recipe.model_dump(mode="json")
    header = run_dir.recipe_toml.read_text().splitlines()[:2]
    assert header[1] == f"# Re-run it with: pctkit run {run_dir.recipe_toml}"
    assert load_recipe(run_dir.recipe_toml).model_dump() == recipe.model_dump()
    # Resuming with the same recipe is accepted and changes nothing.
    prepare_run_dir(recipe, run_dir, resume=True, overwrite=False)


def test_an_existing_directory_is_refused_unless_overwritten(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.path.mkdir()
    (run_dir.path / "notes.txt").write_text("mine")
    with pytest.raises(RunError) as raised:
        prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)
    message = str(raised.value)
    assert "already exists" in message and f"pctkit resume {run_dir.path}" in message
    assert "--out" in message and "--overwrite" in message
    assert (run_dir.path / "notes.txt").read_text() == "mine"
    prepare_run_dir(recipe, run_dir, resume=False, overwrite=True)
    assert not (run_dir.path / "notes.txt").exists() and run_dir.holds_run()


def test_resume_needs_a_run_and_the_same_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    with pytest.raises(RunError, match=r"cannot resume: .* holds no run"):
        prepare_run_dir(recipe, RunDirectory(tmp_path / "nothing"), resume=True, overwrite=False)
    run_dir = RunDirectory(tmp_path / "run")
    prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)
    changed = load_recipe(write_recipe(tmp_path), ["optimizer.lr=0.1", "cross_training.log_interval=2"])
    with pytest.raises(RunError) as raised:
        prepare_run_dir(changed, run_dir, resume=True, overwrite=False)
    message = str(raised.value)
    assert "optimizer.lr: 0.002 -> 0.1" in message and "retrain.optimizer.lr: 0.002 -> 0.1" in message
    assert "log_interval" not in message  # a reporting setting may change
    assert str(run_dir.recipe_toml) in message


def test_a_run_directory_in_use_is_refused_with_nothing_written(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    run_dir = RunDirectory(tmp_path / "run")
    with RunLock.acquire(run_dir.lock_file, "pctkit run of tiny"):
        with pytest.raises(RunLockedError, match="is in use by process"):
            run(recipe, run_dir.path, reporter=QUIET)
        assert [p.name for p in run_dir.path.iterdir()] == [".lock"]
    # The lock alone is no run: a run may start there once it is free.
    prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)
    assert run_dir.holds_run()


def test_recipe_differences_name_every_changed_key_but_reporting_ones() -> None:
    saved = {"optimizer": {"lr": 0.1}, "cross_training": {"log_interval": 5, "iterations": 4}, "gone": 1}
    current = {
        "optimizer": {"lr": 0.2},
        "cross_training": {"log_interval": 9, "iterations": 4},
        "new": {"a": 2},
    }
    assert recipe_differences(saved, current) == [
        "gone: 1 -> '<absent>'",
        "new.a: '<absent>' -> 2",
        "optimizer.lr: 0.1 -> 0.2",
    ]


def test_a_location_may_change_but_not_what_the_component_is() -> None:
    saved = {"data": {"type": "voc", "root": "/data/VOC2012", "num_strong": 1464}}
    moved = {"data": {"type": "voc", "root": "/scratch/VOC2012", "num_strong": 1464}}
    assert location_keys(moved) == ["data.root"]
    assert recipe_differences(saved, moved) == []
    assert moved_locations(saved, moved) == ["data.root: '/data/VOC2012' -> '/scratch/VOC2012'"]
    fewer = {"data": {"type": "voc", "root": "/scratch/VOC2012", "num_strong": 92}}
    assert recipe_differences(saved, fewer) == ["data.num_strong: 1464 -> 92"]
    # Another dataset has no such location: its keys are compared as any other.
    other = {"data": {"type": "digit_scenes", "root": "/scratch/VOC2012"}}
    assert "data.root: '/data/VOC2012' -> '/scratch/VOC2012'" in recipe_differences(saved, other)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ['experiment.precision="fp16"'],
            r"experiment\.precision: 'fp16' needs CUDA; use 'bf16' or 'fp32' on CPU",
        ),
        (["cross_training.accumulate=3"], r"cross_training\.strong_batch_size: 4 is not divisible .* 1 x 3"),
    ],
)
def test_a_recipe_the_run_cannot_train_is_refused_before_anything_is_written(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    recipe = load_recipe(write_recipe(tmp_path), ["cross_training.strong_batch_size=4", *overrides])
    with pytest.raises(RunError, match=expected):
        run(recipe, tmp_path / "run", reporter=QUIET)
    assert not (tmp_path / "run").exists()


def test_a_stopped_run_resumes_in_process_to_the_uninterrupted_result(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    reference = finished_run(tmp_path_factory)
    recipe = load_recipe(write_recipe(tmp_path))
    with one_thread():
        with pytest.raises(TrainingInterrupted, match="stop requested during retraining") as raised:
            run(recipe, tmp_path / "run", reporter=QUIET, stop_after={"retraining": 4})
        assert raised.value.run_dir == tmp_path / "run"
        progress = json.loads((tmp_path / "run" / "progress.json").read_text())
        assert progress["completed"] == ["cross_training", "pseudo_labels"]
        outcome = resume(tmp_path / "run", reporter=QUIET)
    assert outcome.run_dir == tmp_path / "run" and outcome.world.world_size == 1
    expected = json.loads((reference / "results.json").read_text())
    assert outcome.results["nets"] == expected["nets"]
    for role in ("hybrid", "pseudo", "retrained"):
        resumed = load_tensors(tmp_path / "run" / f"{role}_net.safetensors")
        uninterrupted = load_tensors(reference / f"{role}_net.safetensors")
        assert all(torch.equal(resumed[key], value) for key, value in uninterrupted.items()), role
