"""What a run's inputs are, recorded when it starts and checked when it resumes.

A resume may move an input: a location parameter (``Annotated[str, LOCATION]``, such as
``data.root`` or a backbone's ``pretrained`` file) may change, for inputs staged to a
node-local disk or copied to another cluster. It must find the run's own inputs there:

- the data: the same classes, the same number of training and validation images, the
  same strong set and, where the dataset lists its image names without reading the
  images, the same names. Checked at every resume, so data changed in place under a
  run (a regenerated split file) is caught too;
- a file (pretrained weights): the same SHA-256, checked when its path changed.

The record is ``inputs.json`` in the run directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pctkit.artifacts.io import atomic_write_json, file_sha256
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.components.contracts import SampleSource, SegmentationData, package_file
from pctkit.engine.errors import RunError
from pctkit.engine.reporting import Reporter
from pctkit.recipe import Recipe
from pctkit.recipe.resume_rules import flat_items, moved_locations
from pctkit.recipe.slots import location_keys

INPUTS_FILE = "inputs.json"


def _names_digest(source: SampleSource) -> str | None:
    """SHA-256 of the sample names, for sources that list them without reading a sample
    (an optional ``names`` property, as the ``voc`` dataset's has); else ``None``."""
    names = getattr(source, "names", None)
    if not isinstance(names, list | tuple) or not all(isinstance(name, str) for name in names):
        return None
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def data_identity(data: SegmentationData) -> dict[str, Any]:
    """What identifies a dataset without reading all of it."""
    strong = hashlib.sha256(json.dumps(list(data.strong_indices)).encode()).hexdigest()[:16]
    return {
        "class_names": list(data.class_names),
        "train_images": len(data.train),
        "strong_images": len(data.strong_indices),
        "strong_set_sha256": strong,
        "val_images": len(data.val),
        "train_names_sha256": _names_digest(data.train),
        "val_names_sha256": _names_digest(data.val),
    }


def _location_files(recipe: dict[str, Any]) -> dict[str, Path]:
    """The recipe's location keys that name an existing file: ``key -> path``."""
    values = flat_items(recipe)
    found = {}
    for key in location_keys(recipe):
        value = values.get(key)
        if isinstance(value, str) and value and package_file(value).is_file():
            found[key] = package_file(value)
    return found


def _file_problems(
    recipe: dict[str, Any], saved: dict[str, Any], recorded: dict[str, str], digests: dict[str, str]
) -> list[str]:
    """Check the files the recipe's locations name against their recorded digests,
    filling ``digests``; a file whose path has not changed is not read again."""
    values, before = flat_items(recipe), flat_items(saved)
    files = _location_files(recipe)
    problems = [
        f"{key}: {values[key]} is missing (the run started with it); give its new location "
        f"with --set {key}=PATH"
        for key in sorted(set(recorded) - set(files))
        if values.get(key)
    ]
    for key, file in files.items():
        if key in recorded and before.get(key) == values.get(key):
            digests[key] = recorded[key]
            continue
        digests[key] = file_sha256(file)
        if key in recorded and recorded[key] != digests[key]:
            problems.append(f"{key}: {file} holds other bytes than the file the run started with (SHA-256)")
    return problems


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {recorded.get(key)!r} then, {current.get(key)!r} now"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]


def _read(path: Path, reporter: Reporter) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reporter.warning(f"{path} is damaged ({error}): recording the inputs found now")
        return None
    return recorded if isinstance(recorded, dict) else None


def check_inputs(
    directory: RunDirectory, recipe: Recipe, data: SegmentationData, reporter: Reporter, *, resume: bool
) -> None:
    """Record the run's inputs when it starts; on resume, refuse other inputs.

    Raises:
        RunError: the data found now, or a moved file, is not the run's.
    """
    path = directory.path / INPUTS_FILE
    current_recipe = recipe.model_dump(mode="json")
    saved = directory.read_recipe() if resume else current_recipe
    recorded = (_read(path, reporter) if resume else None) or {}
    current: dict[str, Any] = {"data": data_identity(data), "files": {}}
    problems = _differences(recorded["data"], current["data"]) if "data" in recorded else []
    problems += _file_problems(current_recipe, saved, recorded.get("files", {}), current["files"])
    moved = moved_locations(saved, current_recipe)
    where = f" at the new location ({'; '.join(moved)})" if moved else ""
    if problems:
        raise RunError(
            f"cannot resume: the inputs found{where} are not the ones the run started with:\n  "
            + "\n  ".join(problems)
            + f"\nPoint the recipe at the run's inputs, or start a new run. (Recorded in {path}.)"
        )
    if moved:
        reporter.message(f"inputs moved ({'; '.join(moved)}): they are the run's own ({path})")
    if recorded != current:
        atomic_write_json(path, current)
