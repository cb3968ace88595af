"""Checkpoints: resumable training state, written atomically and verified on reading.

A checkpoint is a folder ``checkpoints/<stage>-<iteration>`` (or ``<stage>-best``)
holding ``state.safetensors`` (every tensor), ``state.json`` (the structure and plain
values, no pickle) and ``manifest.json``, written last: the size and SHA-256 of each
file. A folder is first written beside its final name (``.<name>.partial``) and renamed
into place, so a crash, a full disk or a killed job leaves either the old checkpoint or
the new one, never a torn one; :func:`verify` finds what a partial copy between machines
or a failing disk damaged later.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pctkit.artifacts.io import (
    ArtifactError,
    atomic_write_json,
    file_sha256,
    flatten_state,
    fsync_directory,
    no_room,
    save_tensors,
    unflatten_state,
)
from pctkit.artifacts.run_dir import RunDirectory

STATE_TENSORS = "state.safetensors"
STATE_TREE = "state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pctkit.checkpoint.v2"
PARTIAL_SUFFIX = ".partial"
PREVIOUS_SUFFIX = ".previous"


class CheckpointError(ArtifactError):
    """A checkpoint cannot be written or read; the message names the folder and why."""


# --------------------------------------------------------------------------- one checkpoint


def write(folder: Path, state: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Save a nested training state into ``folder``, atomically, with its manifest.

    A folder of the same name is moved aside first and deleted only once the new one is
    in place. When the disk is full (or any other write fails) the partial folder is
    removed, the previous checkpoint stays, and :class:`CheckpointError` says so.
    """
    tree, tensors = flatten_state(dict(state), "state")
    _recover(folder)
    staging = folder.with_name(f".{folder.name}{PARTIAL_SUFFIX}")
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        save_tensors(staging / STATE_TENSORS, tensors)
        atomic_write_json(staging / STATE_TREE, {"metadata": dict(metadata), "tree": tree})
        files = {
            name: {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
            for name in (STATE_TENSORS, STATE_TREE)
        }
        atomic_write_json(staging / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})
        fsync_directory(staging)
    except Exception as error:  # OSError, or safetensors' own error for a failed write
        shutil.rmtree(staging, ignore_errors=True)
        reason = no_room(error) or f"{type(error).__name__}: {error}"
        raise CheckpointError(
            f"cannot write checkpoint {folder}: {reason}. {_what_is_kept(folder)}; "
            "free space (or fix the cause) and resume the run."
        ) from error
    previous = folder.with_name(f".{folder.name}{PREVIOUS_SUFFIX}")
    if folder.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(folder, previous)
    os.replace(staging, folder)
    fsync_directory(folder.parent)
    if previous.exists():
        shutil.rmtree(previous)


def _what_is_kept(folder: Path) -> str:
    """What a resume continues from when ``folder`` could not be written."""
    if folder.exists():
        return f"The previous {folder.name} is intact"
    stage = folder.name.rpartition("-")[0]
    earlier = sorted(
        path.name for path in folder.parent.glob(f"{stage}-0*") if path.is_dir() and path.name < folder.name
    )
    if earlier:
        return f"The previous checkpoint, {earlier[-1]}, is intact"
    return f"No earlier checkpoint of {stage} exists: a resume starts {stage} from its beginning"


def _recover(folder: Path) -> None:
    """Undo a replacement a crash interrupted: the moved-aside copy comes back."""
    previous = folder.with_name(f".{folder.name}{PREVIOUS_SUFFIX}")
    if previous.is_dir() and not folder.exists():
        os.replace(previous, folder)


def verify(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or ``None`` when it is intact."""
    _recover(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return f"no {MANIFEST}: the checkpoint was never completed"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        return f"{MANIFEST} cannot be read ({type(error).__name__})"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected.get("bytes"):
            return f"{name} has {size} bytes, {expected.get('bytes')} were written (truncated or changed)"
        if file_sha256(path) != expected.get("sha256"):
            return f"{name} does not match its checksum (damaged)"
    return None


def read(folder: Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, metadata)`` of a verified checkpoint.

    Raises:
        CheckpointError: the checkpoint is damaged or incomplete.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    problem = verify(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint {folder} is damaged: {problem}")
    try:
        document = json.loads((folder / STATE_TREE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS), device=device)
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"checkpoint {folder} cannot be read: {error}") from None
    return unflatten_state(document["tree"], tensors), dict(document["metadata"])


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """The metadata of an intact checkpoint, or ``None``."""
    if verify(folder) is not None:
        return None
    try:
        document = json.loads((folder / STATE_TREE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return dict(document["metadata"])


# --------------------------------------------------------------------------- a run's checkpoints


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.folder = run_dir.checkpoints

    def periodic(self, stage: str, iteration: int) -> Path:
        """``checkpoints/<stage>-<iteration>``."""
        return self.folder / f"{stage}-{iteration:08d}"

    def best(self, stage: str) -> Path:
        """``checkpoints/<stage>-best``: the state with the best validation score."""
        return self.folder / f"{stage}-best"

    def periodic_list(self, stage: str) -> list[Path]:
        """A stage's periodic checkpoint folders, oldest first (intact or not)."""
        for previous in self.folder.glob(f".{stage}-0*{PREVIOUS_SUFFIX}"):
            _recover(previous.with_name(previous.name[1:].removesuffix(PREVIOUS_SUFFIX)))
        return sorted(p for p in self.folder.glob(f"{stage}-0*") if p.is_dir())

    def newest_intact(self, stage: str, skipped: Callable[[Path, str], None] | None = None) -> Path | None:
        """The newest intact periodic checkpoint of a stage; each damaged newer one is
        reported to ``skipped(folder, problem)``."""
        for folder in reversed(self.periodic_list(stage)):
            problem = verify(folder)
            if problem is None:
                return folder
            if skipped is not None:
                skipped(folder, problem)
        return None

    def newest_iteration(self, stage: str) -> int:
        """The iteration of a stage's newest intact checkpoint (0 if none)."""
        newest = self.newest_intact(stage)
        return int(newest.name.rsplit("-", 1)[1]) if newest is not None else 0

    def prune(self, stage: str, keep_last: int) -> None:
        """Delete all but the newest ``keep_last`` periodic checkpoints of a stage."""
        for old in self.periodic_list(stage)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def best_score(self, stage: str) -> float:
        """The validation score of a stage's best checkpoint; -inf when there is none."""
        metadata = read_metadata(self.best(stage))
        score = metadata.get("score") if metadata is not None else None
        return float(score) if score is not None else float("-inf")

    def remove_partials(self) -> list[Path]:
        """Delete folders a crash left half-written; returns them."""
        removed = sorted(self.folder.glob(f".*{PARTIAL_SUFFIX}"))
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
        return removed
