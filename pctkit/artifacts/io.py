"""Atomic files and pickle-free state: tensors in safetensors, the rest in JSON.

A write goes to a temporary name in the same folder, is flushed to disk, and is
renamed over the target: a crash at any moment leaves either the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening folders
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _default_file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_tensors(
    path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies; shared storage
    is duplicated, which safetensors requires)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    plain = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    save_file(plain, str(temporary), metadata=dict(metadata) if metadata else None)
    # safetensors creates its files private (0600); give them the usual permissions,
    # so that exported bundles and run outputs can be shared like any other file.
    os.chmod(temporary, _default_file_mode())
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def load_tensors(path: Path, device: str = "cpu") -> dict[str, Tensor]:
    """Load a safetensors file."""
    return load_file(str(path), device=device)


# --------------------------------------------------------------------------- nested state

_TENSOR = "__tensor__"
_DICT = "__dict__"
_TUPLE = "__tuple__"


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into a JSON tree
    and a flat dict of tensors, so it can be stored without pickle.

    Dict keys keep their type (optimizer states are keyed by int).
    """
    tensors: dict[str, Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            tensors[path] = value
            return {_TENSOR: path}
        if isinstance(value, Mapping):
            return {_DICT: [[key, walk(item, f"{path}.{key}")] for key, item in value.items()]}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(item, f"{path}.{index}") for index, item in enumerate(value)]}
        if isinstance(value, list):
            return [walk(item, f"{path}.{index}") for index, item in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path!r} without pickle")

    return walk(state, prefix), tensors


def unflatten_state(tree: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _DICT in tree:
            return {key: unflatten_state(item, tensors) for key, item in tree[_DICT]}
        if _TUPLE in tree:
            return tuple(unflatten_state(item, tensors) for item in tree[_TUPLE])
        return {key: unflatten_state(item, tensors) for key, item in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(item, tensors) for item in tree]
    return tree


def save_state(directory: Path, state: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Save a nested training state as ``state.safetensors`` + ``state.json`` in a new
    folder, atomically: it is written beside (``.<name>.partial``), then renamed into
    place. A folder of the same name is moved aside first and deleted only once the new
    one is in place, so a crash at any point leaves a complete copy on disk."""
    tree, tensors = flatten_state(dict(state), "state")
    _recover(directory)
    staging = directory.with_name(f".{directory.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_tensors(staging / "state.safetensors", tensors)
    atomic_write_json(staging / "state.json", {"metadata": dict(metadata), "tree": tree})
    _fsync_directory(staging)
    previous = _previous(directory)
    if directory.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(directory, previous)
    os.replace(staging, directory)
    _fsync_directory(directory.parent)
    if previous.exists():
        shutil.rmtree(previous)


def _previous(directory: Path) -> Path:
    """Where :func:`save_state` moves a folder it replaces until the new one is in place."""
    return directory.with_name(f".{directory.name}.previous")


def _recover(directory: Path) -> None:
    """Undo a replacement a crash interrupted: the moved-aside copy comes back."""
    previous = _previous(directory)
    if previous.is_dir() and not directory.exists():
        os.replace(previous, directory)


def read_state_metadata(directory: Path) -> dict[str, Any] | None:
    """The metadata of a state saved by :func:`save_state`, or ``None`` if there is none."""
    _recover(directory)
    path = directory / "state.json"
    if not path.is_file():
        return None
    metadata: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    return metadata


def load_state(directory: Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load what :func:`save_state` wrote: ``(state, metadata)``."""
    _recover(directory)
    document = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    tensors = load_tensors(directory / "state.safetensors", device)
    state = unflatten_state(document["tree"], tensors)
    return state, document["metadata"]


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and flush it to disk (metrics survive a crash).

    A line torn by a crash is ended first, so that it does not swallow the new record.
    """
    line = (json.dumps(record) + "\n").encode("utf-8")
    with open(path, "ab+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)  # append mode: always at the end, wherever the reads left off
        handle.flush()
        os.fsync(handle.fileno())
