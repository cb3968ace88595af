"""Which data a run trains on, recorded when it starts and checked when it resumes.

A resume may move the data (a location parameter such as ``data.root`` may change, for
data staged to a node-local disk or copied to another cluster), but it must find the
run's own data there: the same classes, the same number of training and validation
images, the same strong set and, where the dataset lists its image names without
reading the images, the same names. The same check catches data changed in place under
a running job (a regenerated split file).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pctkit.artifacts.io import atomic_write_json
from pctkit.artifacts.run_dir import RunDirectory
from pctkit.components.contracts import SampleSource, SegmentationData
from pctkit.engine.errors import RunError
from pctkit.engine.reporting import Reporter
from pctkit.recipe import Recipe
from pctkit.recipe.resume_rules import moved_locations

DATA_FILE = "data.json"


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


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"{key}: {recorded.get(key)!r} then, {current.get(key)!r} now"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]


def check_data_identity(
    directory: RunDirectory, recipe: Recipe, data: SegmentationData, reporter: Reporter, *, resume: bool
) -> None:
    """Record the data's identity in a new run; on resume, refuse other data.

    Raises:
        RunError: the data found now is not the data the run started with.
    """
    path = directory.path / DATA_FILE
    current = data_identity(data)
    recorded = None
    if resume and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            reporter.warning(f"{path} is damaged ({error}): recording the data found now")
    moved = moved_locations(directory.read_recipe(), recipe.model_dump(mode="json")) if resume else []
    if isinstance(recorded, dict):
        differences = _differences(recorded, current)
        if differences:
            where = f" at the new location ({'; '.join(moved)})" if moved else ""
            raise RunError(
                f"cannot resume: the data found{where} is not the data the run started with:\n  "
                + "\n  ".join(differences)
                + f"\nPoint the recipe at the run's data, or start a new run. (Recorded in {path}.)"
            )
    if moved:
        reporter.message(f"data moved ({'; '.join(moved)}): it is the run's own data ({path})")
    if recorded != current:
        atomic_write_json(path, current)
