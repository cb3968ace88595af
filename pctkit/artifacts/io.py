"""Atomic files and pickle-free state: tensors in safetensors, the rest in JSON.

A write goes to a temporary name in the same folder, is flushed to disk, and is
renamed over the target: a crash at any moment leaves either the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


class ArtifactError(ValueError):
    """A file of a run directory or a bundle is missing, damaged or not what it should
    be. The message names the file and the problem; the CLI prints it without a
    traceback."""


def fsync_directory(directory: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the OS allows."""
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
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no half-written file
        raise
    os.replace(temporary, path)
    fsync_directory(path.parent)


def _os_error(error: BaseException, path: Path) -> BaseException:
    """safetensors reports a failed write as its own error, ``... (os error 28)``: the
    :class:`OSError` it stands for, naming ``path``; any other error as it is."""
    match = None if isinstance(error, OSError) else re.search(r"os error (\d+)\)", str(error))
    if match is None:
        return error
    number = int(match.group(1))
    return OSError(number, os.strerror(number), str(path))


NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file-size limit was reached",
}
"""The write errors that mean no room is left, and what each means."""


def no_room(error: BaseException) -> str | None:
    """Why a write found no room (a full disk, a quota, a file-size limit), else ``None``.
    safetensors' own errors reach callers as :class:`OSError` (see :func:`save_tensors`)."""
    return NO_ROOM.get(getattr(error, "errno", None) or 0)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    plain = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    try:
        save_file(plain, str(temporary), metadata=dict(metadata) if metadata else None)
        # safetensors creates its files private (0600); give them the usual permissions,
        # so that exported bundles and run outputs can be shared like any other file.
        os.chmod(temporary, _default_file_mode())
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        raised = _os_error(error, path)
        if raised is error:
            raise
        raise raised from error
    os.replace(temporary, path)
    fsync_directory(path.parent)


def load_tensors(path: Path, device: str = "cpu") -> dict[str, Tensor]:
    """Load a safetensors file."""
    from safetensors.torch import load_file

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
    from torch import Tensor

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
