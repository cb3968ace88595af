"""Atomic files and pickle-free state: round trips, and crashes in the middle of writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import pctkit.artifacts.io as io
from pctkit.artifacts.io import (
    append_jsonl,
    atomic_write_text,
    flatten_state,
    load_state,
    read_state_metadata,
    save_state,
    save_tensors,
    unflatten_state,
)
from pctkit.engine.trainer import latest_checkpoint


def _optimizer_state() -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return net, optimizer.state_dict()


def test_nested_state_round_trips_with_key_types_tuples_and_tensors(tmp_path: Path) -> None:
    _, optimizer_state = _optimizer_state()
    state = {
        "optimizer": optimizer_state,  # keyed by int parameter ids
        "pair": (1, 2.5, "text", None, True),
        "counts": [torch.arange(3), {"nested": torch.ones(2, dtype=torch.float64)}],
    }
    save_state(tmp_path / "checkpoint", state, {"iteration": 7})
    loaded, metadata = load_state(tmp_path / "checkpoint")
    assert metadata == {"iteration": 7}
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
    # No pickle anywhere: the state is JSON beside safetensors.
    assert sorted(os.listdir(tmp_path / "checkpoint")) == ["state.json", "state.safetensors"]
    json.loads((tmp_path / "checkpoint" / "state.json").read_text())


def test_flatten_refuses_objects_that_would_need_pickle() -> None:
    with pytest.raises(TypeError, match=r"cannot store function at 'state.schedule.fn'"):
        flatten_state({"schedule": {"fn": lambda step: 1.0}}, "state")
    tree, tensors = flatten_state({"a": torch.zeros(1)}, "s")
    assert unflatten_state(tree, tensors)["a"] is tensors["s.a"]


def _half_written_save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
    with open(filename, "wb") as handle:
        handle.write(b"\x00" * 16)  # the first bytes of a file, then the "machine dies"
    raise OSError("simulated crash while writing tensors")


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "checkpoints"
    save_state(folder / "fit-00000002", {"weights": torch.ones(3)}, {"iteration": 2})
    monkeypatch.setattr(io, "save_file", _half_written_save_file)
    with pytest.raises(OSError, match="simulated crash"):
        save_state(folder / "fit-00000004", {"weights": torch.full((3,), 2.0)}, {"iteration": 4})
    monkeypatch.undo()

    assert not (folder / "fit-00000004").exists()
    assert (folder / ".fit-00000004.partial").is_dir()  # the torn write, under a hidden name
    assert latest_checkpoint(tmp_path, "fit") == folder / "fit-00000002"
    state, metadata = load_state(folder / "fit-00000002")
    assert metadata["iteration"] == 2 and torch.equal(state["weights"], torch.ones(3))
    # The next write clears the leftover and succeeds.
    save_state(folder / "fit-00000004", {"weights": torch.full((3,), 2.0)}, {"iteration": 4})
    assert latest_checkpoint(tmp_path, "fit") == folder / "fit-00000004"
    assert not (folder / ".fit-00000004.partial").exists()


def test_a_crash_while_replacing_a_checkpoint_keeps_the_old_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = tmp_path / "fit-best"
    save_state(best, {"weights": torch.ones(2)}, {"score": 0.5})
    real_replace = os.replace

    def crash_on_rename_into_place(source: Any, target: Any) -> None:
        if str(source).endswith(".partial"):
            raise OSError("simulated crash during the final rename")
        real_replace(source, target)

    monkeypatch.setattr(io.os, "replace", crash_on_rename_into_place)
    with pytest.raises(OSError, match="final rename"):
        save_state(best, {"weights": torch.zeros(2)}, {"score": 0.9})
    monkeypatch.undo()
    # The old folder was moved aside, not deleted; readers bring it back.
    assert read_state_metadata(best) == {"score": 0.5}
    state, _ = load_state(best)
    assert torch.equal(state["weights"], torch.ones(2))


def test_atomic_text_write_keeps_the_old_content_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "results.json"
    atomic_write_text(target, "old")

    def failing_replace(source: Any, target: Any) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"


def test_appending_after_a_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iteration": 1})
    with open(path, "a") as handle:
        handle.write('{"iteration": 2, "lo')  # a crash mid-line
    append_jsonl(path, {"iteration": 3})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"iteration": 1}
    assert json.loads(lines[-1]) == {"iteration": 3}


def test_saved_tensors_are_readable_by_others(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        save_tensors(tmp_path / "weights.safetensors", {"w": torch.ones(1)})
    finally:
        os.umask(previous)
    assert (tmp_path / "weights.safetensors").stat().st_mode & 0o777 == 0o644
