"""pctkit.artifacts.checkpoints: written atomically with a manifest, verified on reading.

Crashes and a full disk while writing leave the previous checkpoint intact; damage
found later (a truncated copy, a lost manifest, flipped bytes) is named, and resuming
skips to the newest intact checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from pctkit.artifacts import checkpoints
from pctkit.artifacts.checkpoints import CheckpointError, Checkpoints, read, read_metadata, verify, write
from pctkit.artifacts.run_dir import RunDirectory


def _optimizer_state() -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return net, optimizer.state_dict()


def _store(tmp_path: Path) -> Checkpoints:
    return Checkpoints(RunDirectory(tmp_path / "run"))


def _weights(folder: Path) -> torch.Tensor:
    state, _ = read(folder)
    return state["weights"]


# --------------------------------------------------------------------------- one checkpoint


def test_nested_state_round_trips_with_key_types_tuples_and_tensors(tmp_path: Path) -> None:
    _, optimizer_state = _optimizer_state()
    state = {
        "optimizer": optimizer_state,  # keyed by int parameter ids
        "pair": (1, 2.5, "text", None, True),
        "counts": [torch.arange(3), {"nested": torch.ones(2, dtype=torch.float64)}],
    }
    write(tmp_path / "checkpoint", state, {"stage": "fit", "iteration": 7})
    loaded, metadata = read(tmp_path / "checkpoint")
    assert metadata == {"stage": "fit", "iteration": 7}
    assert loaded["pair"] == (1, 2.5, "text", None, True)
    assert list(loaded["optimizer"]["state"]) == [0, 1]
    assert torch.equal(loaded["counts"][0], torch.arange(3))
    assert loaded["counts"][1]["nested"].dtype == torch.float64
    for key, value in optimizer_state["state"][0].items():
        assert torch.equal(loaded["optimizer"]["state"][0][key], value)
    # The restored state drives an optimizer exactly like the original.
    net, _ = _optimizer_state()
    restored = torch.optim.AdamW(net.parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizer"])
    assert restored.state_dict()["param_groups"] == optimizer_state["param_groups"]
    # No pickle anywhere: JSON beside safetensors, and the manifest of both.
    folder = tmp_path / "checkpoint"
    assert sorted(os.listdir(folder)) == ["manifest.json", "state.json", "state.safetensors"]
    json.loads((folder / "state.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"state.json", "state.safetensors"}
    assert manifest["files"]["state.safetensors"]["bytes"] == (folder / "state.safetensors").stat().st_size
    assert verify(folder) is None and read_metadata(folder) == metadata


def test_a_truncated_file_is_named_and_refused(tmp_path: Path) -> None:
    folder = tmp_path / "fit-00000002"
    write(folder, {"weights": torch.ones(100)}, {"iteration": 2})
    tensors = folder / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-40])  # a copy between machines cut short
    problem = verify(folder)
    assert problem is not None and "state.safetensors" in problem and "truncated" in problem
    with pytest.raises(CheckpointError, match=r"fit-00000002 is damaged: state\.safetensors has"):
        read(folder)
    assert read_metadata(folder) is None


def test_a_missing_manifest_means_a_checkpoint_never_completed(tmp_path: Path) -> None:
    folder = tmp_path / "fit-00000002"
    write(folder, {"weights": torch.ones(3)}, {"iteration": 2})
    (folder / "manifest.json").unlink()
    assert verify(folder) == "no manifest.json: the checkpoint was never completed"
    with pytest.raises(CheckpointError, match="never completed"):
        read(folder)


def test_a_checksum_mismatch_is_damage(tmp_path: Path) -> None:
    folder = tmp_path / "fit-00000002"
    write(folder, {"weights": torch.ones(100)}, {"iteration": 2})
    tensors = folder / "state.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF  # the same size, one byte of a weight flipped
    tensors.write_bytes(bytes(data))
    problem = verify(folder)
    assert problem == "state.safetensors does not match its checksum (damaged)"
    with pytest.raises(CheckpointError, match="checksum"):
        read(folder)
    # A file named in the manifest that is gone is named too.
    tensors.unlink()
    assert verify(folder) == "state.safetensors is missing"


def _half_written_save_file(error: OSError) -> Any:
    def save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 16)  # the first bytes of the file, then the failure
        raise error

    return save_file


def test_a_crash_while_writing_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    write(store.periodic("fit", 2), {"weights": torch.ones(3)}, {"iteration": 2})
    monkeypatch.setattr(safetensors.torch, "save_file", _half_written_save_file(OSError("simulated crash")))
    expected = (
        r"cannot write checkpoint .*fit-00000004: OSError: simulated crash\. "
        r"The previous checkpoint, fit-00000002, is intact"
    )
    with pytest.raises(CheckpointError, match=expected):
        write(store.periodic("fit", 4), {"weights": torch.full((3,), 2.0)}, {"iteration": 4})
    # With no earlier checkpoint of the stage, it says where a resume starts.
    with pytest.raises(
        CheckpointError, match="No earlier checkpoint of other exists: a resume starts other from"
    ):
        write(store.periodic("other", 4), {"weights": torch.ones(3)}, {"iteration": 4})
    monkeypatch.undo()
    assert not store.periodic("fit", 4).exists()
    assert [p.name for p in store.folder.iterdir()] == ["fit-00000002"]  # no partial folder left
    assert store.newest_intact("fit") == store.periodic("fit", 2)
    assert torch.equal(_weights(store.periodic("fit", 2)), torch.ones(3))
    # The next write succeeds.
    write(store.periodic("fit", 4), {"weights": torch.full((3,), 2.0)}, {"iteration": 4})
    assert store.newest_intact("fit") == store.periodic("fit", 4)


def test_a_full_disk_keeps_the_previous_checkpoint_of_the_same_name_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = _store(tmp_path).best("fit")
    write(best, {"weights": torch.ones(3)}, {"iteration": 2, "score": 0.5})
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", _half_written_save_file(full))
    with pytest.raises(CheckpointError) as raised:
        write(best, {"weights": torch.zeros(3)}, {"iteration": 4, "score": 0.9})
    monkeypatch.undo()
    message = str(raised.value)
    assert "the disk is full" in message and "The previous fit-best is intact" in message
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    assert read_metadata(best) == {"iteration": 2, "score": 0.5}
    assert torch.equal(_weights(best), torch.ones(3))
    assert sorted(p.name for p in best.parent.iterdir()) == ["fit-best"]


def test_a_full_disk_while_writing_the_manifest_is_caught_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fit-best"
    write(folder, {"weights": torch.ones(3)}, {"score": 0.5})
    real = checkpoints.atomic_write_json

    def manifest_fails(path: Path, data: Any) -> None:
        if path.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoints, "atomic_write_json", manifest_fails)
    with pytest.raises(CheckpointError, match="the disk is full"):
        write(folder, {"weights": torch.zeros(3)}, {"score": 0.9})
    monkeypatch.undo()
    assert torch.equal(_weights(folder), torch.ones(3))


def test_a_crash_while_replacing_a_checkpoint_keeps_the_old_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = tmp_path / "fit-best"
    write(best, {"weights": torch.ones(2)}, {"score": 0.5})
    real_replace = os.replace

    def crash_on_rename_into_place(source: Any, target: Any) -> None:
        if str(source).endswith(".partial"):
            raise OSError("simulated crash during the final rename")
        real_replace(source, target)

    monkeypatch.setattr(checkpoints.os, "replace", crash_on_rename_into_place)
    with pytest.raises(OSError, match="final rename"):
        write(best, {"weights": torch.zeros(2)}, {"score": 0.9})
    monkeypatch.undo()
    # The old folder was moved aside, not deleted; readers bring it back.
    assert not best.exists()
    assert read_metadata(best) == {"score": 0.5}
    assert torch.equal(_weights(best), torch.ones(2))


# --------------------------------------------------------------------------- a run's checkpoints


def test_newest_intact_skips_damaged_checkpoints_and_reports_them(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for iteration in (2, 4, 6):
        write(store.periodic("fit", iteration), {"weights": torch.full((3,), float(iteration))}, {})
    write(store.periodic("other", 8), {"weights": torch.ones(1)}, {})
    (store.periodic("fit", 6) / "manifest.json").unlink()
    tensors = store.periodic("fit", 4) / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:10])
    skipped: list[tuple[str, str]] = []
    newest = store.newest_intact("fit", lambda folder, problem: skipped.append((folder.name, problem)))
    assert newest == store.periodic("fit", 2)
    assert [name for name, _ in skipped] == ["fit-00000006", "fit-00000004"]
    assert "never completed" in skipped[0][1] and "truncated" in skipped[1][1]
    assert store.newest_iteration("fit") == 2
    assert store.newest_iteration("other") == 8
    assert store.newest_iteration("missing") == 0 and store.newest_intact("missing") is None


def test_names_prune_best_score_and_partials(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.periodic("cross_training", 12).name == "cross_training-00000012"
    assert store.best("cross_training").name == "cross_training-best"
    assert store.best_score("fit") == float("-inf")
    for iteration in (2, 4, 6):
        write(store.periodic("fit", iteration), {"weights": torch.ones(1)}, {"iteration": iteration})
    write(store.best("fit"), {"weights": torch.ones(1)}, {"iteration": 4, "score": 0.75})
    store.prune("fit", keep_last=2)
    assert sorted(p.name for p in store.folder.iterdir()) == ["fit-00000004", "fit-00000006", "fit-best"]
    assert store.best_score("fit") == 0.75
    # A folder a killed process left half-written under its hidden name.
    (store.folder / ".fit-00000008.partial").mkdir()
    assert [p.name for p in store.remove_partials()] == [".fit-00000008.partial"]
    assert not (store.folder / ".fit-00000008.partial").exists()
