"""pctkit.artifacts.io: atomic files, pickle-free nested state, appended records."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import pctkit.artifacts.io as io
from pctkit.artifacts.io import (
    ArtifactError,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    flatten_state,
    load_tensors,
    save_tensors,
    unflatten_state,
)


def test_nested_state_flattens_to_json_and_tensors_and_back() -> None:
    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}, 1: {}}},  # keyed by int
        "pair": (1, 2.5, "text", None, True),
        "counts": [torch.arange(3), {"nested": torch.ones(2, dtype=torch.float64)}],
    }
    tree, tensors = flatten_state(state, "state")
    json.dumps(tree)  # the structure is plain JSON
    assert set(tensors) == {"state.optimizer.state.0.step", "state.counts.0", "state.counts.1.nested"}
    loaded = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert list(loaded["optimizer"]["state"]) == [0, 1]
    assert loaded["pair"] == (1, 2.5, "text", None, True)
    assert loaded["counts"][1]["nested"].dtype == torch.float64


def test_flatten_refuses_objects_that_would_need_pickle() -> None:
    with pytest.raises(TypeError, match=r"cannot store function at 'state.schedule.fn'"):
        flatten_state({"schedule": {"fn": lambda step: 1.0}}, "state")
    tree, tensors = flatten_state({"a": torch.zeros(1)}, "s")
    assert unflatten_state(tree, tensors)["a"] is tensors["s.a"]


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


def test_atomic_json_write_creates_folders_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "progress.json"
    atomic_write_json(target, {"completed": ["cross_training"]})
    assert json.loads(target.read_text()) == {"completed": ["cross_training"]}
    assert os.listdir(target.parent) == ["progress.json"]


def test_appending_after_a_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iteration": 1})
    with open(path, "a") as handle:
        handle.write('{"iteration": 2, "lo')  # a crash mid-line
    append_jsonl(path, {"iteration": 3})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"iteration": 1}
    assert json.loads(lines[-1]) == {"iteration": 3}


def test_saved_tensors_are_readable_by_others_and_round_trip(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        save_tensors(tmp_path / "weights.safetensors", {"w": torch.ones(1)}, {"role": "hybrid"})
    finally:
        os.umask(previous)
    assert (tmp_path / "weights.safetensors").stat().st_mode & 0o777 == 0o644
    assert torch.equal(load_tensors(tmp_path / "weights.safetensors")["w"], torch.ones(1))


def test_artifact_errors_are_value_errors_for_the_cli() -> None:
    assert issubclass(ArtifactError, ValueError)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """This process's own file-size limit (``ulimit -f``), lowered for a moment: writes
    past ``limit`` bytes fail with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_writes_that_find_no_room_raise_os_errors_and_leave_no_partial_file(tmp_path: Path) -> None:
    weights = tmp_path / "net.safetensors"
    save_tensors(weights, {"w": torch.ones(4)})
    before = weights.read_bytes()
    with file_size_limit(4096), pytest.raises(OSError) as raised:
        save_tensors(weights, {"w": torch.zeros(4096)})  # 16 KiB of tensor data
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(weights)
    with file_size_limit(4096), pytest.raises(OSError) as raised_text:
        atomic_write_text(tmp_path / "big.txt", "x" * 8192)
    assert raised_text.value.errno == errno.EFBIG
    assert weights.read_bytes() == before  # the old file is untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["net.safetensors"]
