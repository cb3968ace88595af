"""Runs that survive (``pctkit run --resume`` and ``pctkit resume``): exact resume after
crashes in every stage, SIGTERM, refused resumes.

The crash test runs the real CLI in subprocesses that kill themselves (SIGKILL: no
clean-up at all) at known points, resumes each time, and compares the final weights
with an uninterrupted run, tensor by tensor, for equality. The loop's own stop, resume
and non-finite handling are tested without a dataset in ``test_loop.py``.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import (
    finished_run,
    hooked_command,
    run_cli,
    subprocess_environment,
    write_recipe,
)

import pctkit.engine.pseudo_labels as pseudo_labels
from pctkit.artifacts.checkpoints import Checkpoints
from pctkit.artifacts.io import load_tensors
from pctkit.artifacts.run_dir import RunDirectory

pytest.importorskip("sklearn.datasets")  # the digit scenes need scikit-learn

NETS = ("hybrid", "pseudo", "retrained")


def latest_checkpoint(run_dir: Path, stage: str) -> Path | None:
    return Checkpoints(RunDirectory(run_dir)).newest_intact(stage)


def _assert_same_weights(run_dir: Path, reference_dir: Path, role: str) -> None:
    resumed = load_tensors(run_dir / f"{role}_net.safetensors")
    reference = load_tensors(reference_dir / f"{role}_net.safetensors")
    assert resumed.keys() == reference.keys()
    different = [key for key in reference if not torch.equal(resumed[key], reference[key])]
    assert not different, f"{role} net differs from the uninterrupted run in {different[:5]}"


@pytest.fixture
def run_dir(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's finished tiny run, free to change."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run(tmp_path_factory), copy)
    return copy


def _crash(
    stage: str, after: int, signal_name: str, arguments: list[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hooked_command(stage, after, signal_name, arguments),
        env=subprocess_environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _label_files(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Pseudo-label files by name: (inode, modification time), to tell a redone one."""
    return {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in (run_dir / "pseudo_labels").glob("*.png")
    }


@pytest.mark.slow
def test_resume_after_crashes_in_every_stage_is_bit_exact(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = finished_run(tmp_path_factory)
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "run"

    # 1. SIGKILL in cross training, mid-iteration 3 (checkpoint at 2).
    crashed = _crash(
        "cross_training",
        2,
        "SIGKILL",
        ["run", str(recipe), "--out", str(run_dir), "--set", "checkpoint.interval=2", "--quiet"],
        tmp_path,
    )
    assert crashed.returncode == -9, crashed.stderr
    assert latest_checkpoint(run_dir, "cross_training") == run_dir / "checkpoints/cross_training-00000002"
    assert not (run_dir / "hybrid_net.safetensors").exists()

    # 2. Resume with the recipe; SIGKILL in pseudo labels before the 6th label file.
    crashed = _crash(
        "pseudo_labels", 5, "SIGKILL", ["run", str(recipe), "--resume", str(run_dir), "--quiet"], tmp_path
    )
    assert crashed.returncode == -9, crashed.stderr
    for role in ("hybrid", "pseudo"):
        _assert_same_weights(run_dir, reference, role)
    written_before = _label_files(run_dir)
    assert len(written_before) == 5

    # 3. `pctkit resume` (the run's own recipe); SIGTERM in retraining iteration 3: the
    #    step finishes, a checkpoint is written, and the message says how to resume.
    stopped = _crash("retraining", 2, "SIGTERM", ["resume", str(run_dir), "--quiet"], tmp_path)
    assert stopped.returncode == 130, stopped.stderr
    assert f"pctkit resume {run_dir}" in stopped.stderr
    assert latest_checkpoint(run_dir, "retraining") == run_dir / "checkpoints/retraining-00000003"
    labels_now = _label_files(run_dir)
    assert {name: labels_now[name] for name in written_before} == written_before, "labels were redone"
    assert sorted(labels_now) == sorted(p.name for p in (reference / "pseudo_labels").glob("*.png"))
    for name in labels_now:
        assert (run_dir / "pseudo_labels" / name).read_bytes() == (
            reference / "pseudo_labels" / name
        ).read_bytes()

    # 4. SIGKILL in retraining, mid-iteration 5 (checkpoint at 4).
    crashed = _crash("retraining", 4, "SIGKILL", ["resume", str(run_dir), "--quiet"], tmp_path)
    assert crashed.returncode == -9, crashed.stderr

    # 5. Resume to the end, in this process.
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)
    results = json.loads((run_dir / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert results["nets"] == expected["nets"]
    # Each resume continued from its checkpoint: no iteration was trained (logged) twice.
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for stage in ("cross_training", "retraining"):
        trained = [r["iteration"] for r in records if r["stage"] == stage and r["kind"] == "train"]
        assert trained == [1, 2, 3, 4, 5, 6], (stage, trained)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["completed"] == ["cross_training", "pseudo_labels", "retraining", "evaluation"]


def test_sigterm_during_pseudo_labels_keeps_the_written_labels(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = sorted((run_dir / "pseudo_labels").glob("*.png"))
    for path in labels[4:]:
        path.unlink()
    progress = json.loads((run_dir / "progress.json").read_text())
    progress["completed"] = ["cross_training"]
    (run_dir / "progress.json").write_text(json.dumps(progress))

    save = pseudo_labels.save_palette_png
    saved: list[str] = []

    def save_then_terminate(mask: Any, path: Path, colors: Any = None) -> None:
        save(mask, path, colors)
        saved.append(path.name)
        if len(saved) == 1:  # SIGTERM while the first batch is written
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(pseudo_labels, "save_palette_png", save_then_terminate)
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 130
    error = capsys.readouterr().err
    assert "SIGTERM during pseudo labels" in error and f"pctkit resume {run_dir}" in error
    assert len(saved) == 4  # the batch under way was finished before stopping
    assert len(list((run_dir / "pseudo_labels").glob("*.png"))) == 8
    assert json.loads((run_dir / "progress.json").read_text())["completed"] == ["cross_training"]


def test_resume_with_a_changed_recipe_is_refused_with_the_keys(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference = finished_run(tmp_path_factory)
    recipe = write_recipe(reference.parent)
    arguments = ["run", str(recipe), "--resume", str(reference), "--quiet"]
    changed = [*arguments, "--set", "optimizer.lr=0.1", "--set", "cross_training.log_interval=2"]
    before = (reference / "progress.json").read_text()
    assert run_cli(changed, monkeypatch) == 1
    error = capsys.readouterr().err
    assert "cannot resume" in error
    assert "optimizer.lr: 0.002 -> 0.1" in error
    assert "retrain.optimizer.lr" in error
    assert "log_interval" not in error  # reporting settings may change
    assert (reference / "progress.json").read_text() == before


def test_resume_of_a_folder_without_a_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["resume", str(tmp_path)], monkeypatch) == 1
    assert "no run" in capsys.readouterr().err


def test_resume_restores_a_missing_recipe_toml_and_reads_past_a_damaged_progress_file(
    run_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both files are derived: the recipe is also in recipe.json, and every stage can
    continue from its newest checkpoint. The run ends as the uninterrupted one."""
    reference = finished_run(tmp_path_factory)
    (run_dir / "recipe.toml").unlink()
    (run_dir / "progress.json").write_text("\x00" * 16)  # zeros, as after a power loss
    (run_dir / "retrained_net.safetensors").unlink()  # so that retraining has work left
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = capsys.readouterr().err
    assert f"{run_dir / 'recipe.toml'} is missing: resuming with the same recipe" in error
    assert "progress.json is damaged" in error and "newest checkpoint" in error
    assert (run_dir / "recipe.toml").read_text() == (reference / "recipe.toml").read_text().replace(
        str(reference), str(run_dir)
    )
    assert (
        json.loads((run_dir / "progress.json").read_text())["completed"]
        == json.loads((reference / "progress.json").read_text())["completed"]
    )
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)


@pytest.mark.parametrize("damage", ["missing", "torn"])
def test_a_lost_recipe_json_is_named_by_every_reader_and_resume_writes_it_again(
    damage: str,
    run_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """recipe.toml holds the same resolved recipe: resume rewrites the JSON from it, and
    the run ends as the uninterrupted one."""
    reference = finished_run(tmp_path_factory)
    saved = run_dir / "recipe.json"
    if damage == "missing":
        saved.unlink()
    else:
        saved.write_text(saved.read_text()[:100])  # cut short by a full disk or a bad copy
    for arguments in (
        ["eval", str(run_dir)],
        ["export", str(run_dir)],
        ["report", str(run_dir), "--no-plots"],
    ):
        assert run_cli(arguments, monkeypatch) == 1, arguments
        error = " ".join(capsys.readouterr().err.split())
        assert f"{saved}" in error and f"`pctkit resume {run_dir}` writes it again" in error, error
        assert "Traceback" not in error
    (run_dir / "retrained_net.safetensors").unlink()  # so that the resume has work left
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = " ".join(capsys.readouterr().err.split())
    assert (
        f"resuming with the same recipe from {run_dir / 'recipe.toml'}, and writing recipe.json again"
        in error
    )
    assert json.loads(saved.read_text()) == json.loads((reference / "recipe.json").read_text())
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)
    assert run_cli(["eval", str(run_dir), "--json"], monkeypatch) == 0


def test_resume_labels_damaged_pseudo_labels_again(
    run_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Labels on disk are kept on resume; one cut short, of another size or with a class
    the data does not have is labelled again, and retraining ends as without damage."""
    reference = finished_run(tmp_path_factory)
    progress = json.loads((run_dir / "progress.json").read_text())
    progress["completed"] = ["cross_training", "pseudo_labels"]  # stopped before retraining
    (run_dir / "progress.json").write_text(json.dumps(progress))
    for folder in (run_dir / "checkpoints").glob("retraining*"):
        shutil.rmtree(folder)
    (run_dir / "retrained_net.safetensors").unlink()
    labels = sorted((run_dir / "pseudo_labels").glob("*.png"))
    labels[0].write_bytes(labels[0].read_bytes()[:50])
    Image.new("P", (3, 3)).save(labels[1])
    Image.fromarray(np.full((32, 32), 9, dtype=np.uint8), mode="L").save(labels[2])
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = " ".join(capsys.readouterr().err.split())
    assert f"pseudo label {labels[0]} cannot be read" in error
    assert f"pseudo label {labels[1]} is 3x3 pixels, its image 32x32" in error
    assert f"pseudo label {labels[2]} holds class 9; there are 4" in error
    assert error.count("labelling it again") == 3
    for label in labels[:3]:
        assert label.read_bytes() == (reference / "pseudo_labels" / label.name).read_bytes()
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)


@pytest.mark.slow
def test_a_file_size_limit_stops_the_run_with_a_message_and_resume_finishes_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operating system's own limit (RLIMIT_FSIZE, as ``ulimit -f`` or a batch
    system sets it): writes past 16 KiB fail, as on a full disk."""
    reference = finished_run(tmp_path_factory)
    run_dir = tmp_path / "limited"
    limit = 16 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "pctkit", "run", str(write_recipe(tmp_path)), "--out", str(run_dir)]
    result = subprocess.run(
        [*command, "--quiet"],
        env=subprocess_environment(),
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "a file-size limit was reached" in result.stderr or "File too large" in result.stderr
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)


def test_resuming_a_complete_run_does_nothing_and_shows_its_results(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    def written() -> dict[str, int]:  # the lock file records each holder; it does not count
        return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}

    before = written()
    assert run_cli(["resume", str(run_dir)], monkeypatch) == 0
    captured = capsys.readouterr()
    assert f"{run_dir} is complete: nothing to do" in captured.err
    assert "pctkit resume tiny ->" in captured.err
    assert "retrained" in captured.out  # the results table
    assert written() == before  # nothing rewritten


def test_resume_writes_damaged_or_missing_final_weights_again_from_the_last_checkpoint(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(run_dir, reference)
    hybrid = run_dir / "hybrid_net.safetensors"
    data = bytearray(hybrid.read_bytes())
    data[-3] ^= 0x01  # one flipped bit inside a tensor: the file still parses
    hybrid.write_bytes(bytes(data))
    (run_dir / "retrained_net.safetensors").unlink()
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = " ".join(capsys.readouterr().err.split())
    assert "hybrid_net.safetensors: its tensors do not match the checksum" in error
    assert "retrained_net.safetensors: the file is missing" in error
    assert error.count("writing it again from the stage's last checkpoint") == 2
    for role in NETS:
        _assert_same_weights(run_dir, reference, role)
    assert (
        json.loads((run_dir / "results.json").read_text())["nets"]
        == json.loads((reference / "results.json").read_text())["nets"]
    )
    # Without the checkpoint of the stage's last iteration, it cannot: it says so.
    (run_dir / "retrained_net.safetensors").unlink()
    for folder in Checkpoints(RunDirectory(run_dir)).periodic_list("retraining")[-1:]:
        shutil.rmtree(folder)
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 1
    error = " ".join(capsys.readouterr().err.split())
    assert "retrained_net.safetensors: the file is missing" in error and "Traceback" not in error
    assert "No intact checkpoint of retraining at its last iteration" in error


def test_a_run_records_its_software_and_resume_names_what_changed(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = json.loads((run_dir / "environment.json").read_text())
    assert recorded["packages"]["pctkit"] and recorded["packages"]["torch"]
    assert recorded["components"]["model.backbone"]["package"] == "pctkit"
    assert recorded["components"]["method"] == {
        "type": "pct",
        "package": "pctkit",
        "version": recorded["packages"]["pctkit"],
    }
    recorded_torch = recorded["packages"]["torch"]
    recorded["packages"]["torch"] = "1.0"
    (run_dir / "environment.json").write_text(json.dumps(recorded))
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = capsys.readouterr().err
    assert "resuming with other software than the run started with: torch 1.0 ->" in error
    assert json.loads((run_dir / "environment.json").read_text())["packages"]["torch"] == "1.0"
    recorded_inputs = (run_dir / "inputs.json").read_text()
    (run_dir / "inputs.json").write_text("{")  # torn too
    (run_dir / "retrained_net.safetensors").unlink()  # work left: the inputs are checked
    (run_dir / "environment.json").write_text('{"packages": {"tor')  # torn
    assert run_cli(["resume", str(run_dir), "--quiet"], monkeypatch) == 0
    error = capsys.readouterr().err
    assert "environment.json is damaged: writing it again" in error
    assert "inputs.json is damaged" in error and "recording the inputs found now" in error
    assert json.loads((run_dir / "inputs.json").read_text()) == json.loads(recorded_inputs)
    assert json.loads((run_dir / "environment.json").read_text())["packages"]["torch"] == recorded_torch
